"""Training: one :class:`Trainer` for CNNs and recurrent models, the task coming from the
model's head; optimizers and schedules by name; metrics by task; a learning-rate range test.
"""

from xaikit.train.callbacks import Callback, LambdaCallback
from xaikit.train.history import History
from xaikit.train.lr_find import LRFindResult, lr_find
from xaikit.train.optim import OPTIMIZERS, SCHEDULERS, make_optimizer, make_scheduler
from xaikit.train.trainer import Trainer, TrainingDivergedError

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "Callback",
    "History",
    "LRFindResult",
    "LambdaCallback",
    "Trainer",
    "TrainingDivergedError",
    "lr_find",
    "make_optimizer",
    "make_scheduler",
]
