"""The model zoo: conv blocks, CNN and recurrent classifiers, task heads, one factory."""

from xaikit.zoo.base import ZooModel
from xaikit.zoo.blocks import ConvBlock, ResidualBlock
from xaikit.zoo.cnn import ResNetSmall, SimpleCNN, SimpleCNN1d, VGGSmall
from xaikit.zoo.heads import TASKS, ClassifierHead, Task, get_task
from xaikit.zoo.registry import arch_info, create_model, list_models, register_model
from xaikit.zoo.rnn import RecurrentClassifier, RecurrentEncoder, TimePool

__all__ = [
    "TASKS",
    "ClassifierHead",
    "ConvBlock",
    "RecurrentClassifier",
    "RecurrentEncoder",
    "ResNetSmall",
    "ResidualBlock",
    "SimpleCNN",
    "SimpleCNN1d",
    "Task",
    "TimePool",
    "VGGSmall",
    "ZooModel",
    "arch_info",
    "create_model",
    "get_task",
    "list_models",
    "register_model",
]
