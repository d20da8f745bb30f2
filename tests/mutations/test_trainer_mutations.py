"""Trainer bugs that survived the mutation audit, each pinned by a number it would change.

Where a test needs the weights to stay put (so every epoch sees the same model and the
expected numbers can be computed by hand) it hands the trainer a ready ``SGD`` optimizer
with ``lr=0``: the loop, the loss bookkeeping, the metrics and the checkpoints all run as
usual, only the step changes nothing.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import xaikit
from xaikit.train import Trainer
from xaikit.train.monitor import Monitor


def _frozen_sgd(model: nn.Module) -> torch.optim.Optimizer:
    """An optimizer whose steps leave every parameter exactly as it is."""
    return torch.optim.SGD(model.parameters(), lr=0.0)


def _quadrant_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """4 classes of ``(1, 8, 8)`` noise images, class ``k`` brighter in quadrant ``k``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    for k in range(4):
        r, c = divmod(k, 2)
        x[y == k, :, r * 4 : r * 4 + 4, c * 4 : c * 4 + 4] += 1.5
    return x, y


def _zoo_cnn(num_classes: int, task: str = "multiclass", **options) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return xaikit.create_model(
            "simple_cnn",
            num_classes=num_classes,
            task=task,
            in_channels=1,
            widths=(4, 8),
            input_size=8,
            **options,
        )


# --- 3. the monitor: a tie is no improvement -----------------------------------------------


@pytest.mark.parametrize(("name", "value"), [("val_accuracy", 0.75), ("val_loss", 0.5)])
def test_a_tie_with_the_best_value_is_not_an_improvement(name, value):
    """Guards against ``>=`` / ``<=`` in the monitor (a tie counted as a new best): the rule
    is "strictly better", so on a plateau the best epoch stays the first one and the
    bad-epoch counter keeps counting. An equal tie-break value (the split's loss) does not
    break the tie either."""
    monitor = Monitor.for_quantity(name, patience=3)
    assert monitor.update(value, 1) is True
    assert monitor.update(value, 2) is False
    assert (monitor.best, monitor.best_epoch, monitor.bad_epochs) == (value, 1, 1)
    assert monitor.update(value, 3) is False
    assert (monitor.best_epoch, monitor.bad_epochs, monitor.should_stop) == (1, 2, False)
    assert monitor.update(value, 4) is False
    assert (monitor.best_epoch, monitor.bad_epochs, monitor.should_stop) == (1, 3, True)


def test_a_tie_with_an_equal_tiebreak_value_is_not_an_improvement():
    """Guards against the tie rule through the tie-break: an equal accuracy with an equal
    validation loss keeps the earlier epoch."""
    monitor = Monitor.for_quantity("val_accuracy", patience=None)
    assert monitor.update(0.75, 1, 0.4) is True
    assert monitor.update(0.75, 2, 0.4) is False
    assert monitor.update(0.5, 3, 0.1) is False  # a lower loss does not rescue a worse metric
    assert (monitor.best, monitor.best_epoch, monitor.bad_epochs) == (0.75, 1, 2)


@pytest.mark.parametrize("monitor", ["auto", "val_loss"])
def test_a_plateau_of_equal_validation_metrics_keeps_the_first_best_checkpoint(monitor, tmp_path):
    """Guards against the same bug through ``fit``: with frozen weights (``lr=0``, no
    batch norm) every epoch has bit-identical validation metrics, so ``best`` must stay the
    checkpoint of epoch 1 while ``last`` moves on to epoch 3."""
    x, y = _quadrant_images(48)
    model = _zoo_cnn(4, batchnorm=False)
    trainer = Trainer(
        model,
        _frozen_sgd(model),
        batch_size=16,
        monitor=monitor,
        checkpoint_dir=tmp_path,
        quiet=True,
    )
    history = trainer.fit((x[:32], y[:32]), (x[32:], y[32:]), epochs=3)
    key = "val_accuracy" if monitor == "auto" else monitor
    assert len({record[key] for record in history}) == 1  # a plateau, exactly
    assert trainer.monitor.best_epoch == 1
    assert trainer.monitor.bad_epochs == 2
    best = json.loads((tmp_path / "best.json").read_text())
    last = json.loads((tmp_path / "last.json").read_text())
    assert (best["epoch"], last["epoch"]) == (1, 3)


# --- 4. and 5. train / eval mode --------------------------------------------------------------


class ModeRecorder(nn.Module):
    """Dropout then a linear layer; each forward records ``(model.training, dropout.training,
    grad enabled)``. Training steps run with grad enabled, evaluation without."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 3)
        self.calls: list[tuple[bool, bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, self.drop.training, torch.is_grad_enabled()))
        return self.fc(self.drop(x))


def _vectors(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("start_training", [True, False])
def test_evaluate_restores_the_models_previous_mode(start_training):
    """Guards against ``Trainer.evaluate`` leaving the model in eval mode: it evaluates in
    eval mode and hands the model back in the mode it had (train stays train)."""
    model = ModeRecorder()
    model.train(start_training)
    trainer = Trainer(model, batch_size=4, quiet=True)
    trainer.evaluate(_vectors(10))
    assert [c[:2] for c in model.calls] == [(False, False)] * 3  # 3 batches, all in eval mode
    assert model.training is start_training
    assert all(m.training is start_training for m in model.modules())


def test_fit_trains_in_train_mode_even_when_handed_a_model_in_eval_mode():
    """Guards against ``fit`` not switching the model to train mode: a model given in eval
    mode must run every training step with dropout (and batch norm) in train mode, and the
    validation passes in eval mode."""
    model = ModeRecorder().eval()
    trainer = Trainer(model, "sgd", lr=0.1, batch_size=4, quiet=True)
    trainer.fit(_vectors(10), _vectors(6, seed=1), epochs=2)
    steps = [c[:2] for c in model.calls if c[2]]
    evaluations = [c[:2] for c in model.calls if not c[2]]
    assert steps == [(True, True)] * 6  # 2 epochs of 3 batches (4, 4, 2)
    assert evaluations == [(False, False)] * 4  # 2 epochs of 2 validation batches (4, 2)


# --- 6. the epoch's train loss is a per-sample mean ---------------------------------------


def test_train_loss_is_the_sample_weighted_mean_over_uneven_batches():
    """Guards against ``train_loss`` being the plain mean of the batch losses: 10 samples in
    batches of 4, 4 and 2, where the last two samples have a large loss. The epoch's loss
    must be the mean over the 10 samples, not the mean of the three batch means."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = _vectors(10)
    x[8:] *= 4.0  # large logits for the last two samples
    with torch.no_grad():
        logits = model(x)
    y[8:] = logits[8:].argmin(dim=1)  # the last batch is confidently wrong
    with torch.no_grad():
        per_sample = F.cross_entropy(model(x), y, reduction="none")
    weighted = float(per_sample.mean())
    batch_means = [float(per_sample[a:b].mean()) for a, b in ((0, 4), (4, 8), (8, 10))]
    unweighted = sum(batch_means) / 3
    assert abs(weighted - unweighted) > 0.05  # the two rules give different numbers here

    in_order = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False)
    trainer = Trainer(model, _frozen_sgd(model), quiet=True)
    history = trainer.fit(in_order, epochs=1)
    assert history[0]["train_loss"] == pytest.approx(weighted, rel=1e-6)

    # The trainer's own (shuffled) loader: the sample mean does not depend on the order.
    shuffled = Trainer(model, _frozen_sgd(model), batch_size=4, quiet=True)
    assert shuffled.fit((x, y), epochs=2)[-1]["train_loss"] == pytest.approx(weighted, rel=1e-6)


# --- 7. metrics use the head's thresholds -------------------------------------------------


LABELS = torch.tensor(
    [[1, 1, 0], [0, 1, 1], [0, 0, 1], [1, 1, 1], [0, 1, 0], [0, 0, 0], [1, 0, 1], [0, 1, 1]],
    dtype=torch.float32,
)


def _constant_head(task: str, num_classes: int, bias: list[float]) -> nn.Module:
    """A zoo CNN whose logits are ``bias`` for every input (zero head weights)."""
    model = _zoo_cnn(num_classes, task)
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.bias.copy_(torch.tensor(bias))
    return model


def test_multilabel_metrics_use_the_heads_per_label_thresholds():
    """Guards against the trainer's metrics predicting with 0.5 instead of the head's
    thresholds. Probabilities are (0.88, 0.62, 0.27) for every image; thresholds
    (0.9, 0.5, 0.2) make the prediction (0, 1, 1), where 0.5 would give (1, 1, 0). F1 and
    subset accuracy are checked against scikit-learn on that prediction, for ``evaluate``,
    the validation record and the running training metric."""
    model = _constant_head("multilabel", 3, [2.0, 0.5, -1.0])
    model.head.thresholds.copy_(torch.tensor([0.9, 0.5, 0.2]))
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    truth = LABELS.int().numpy()
    pred = torch.tensor([[0, 1, 1]] * 8).numpy()
    naive = torch.tensor([[1, 1, 0]] * 8).numpy()
    micro = f1_score(truth, pred, average="micro")
    macro = f1_score(truth, pred, average="macro", zero_division=0)
    subset = accuracy_score(truth, pred)
    # By hand: 10 true positives, 6 false positives, 3 false negatives; rows 2 and 8 exact.
    assert (micro, subset) == (pytest.approx(2 * 10 / (2 * 10 + 6 + 3)), 0.25)
    assert micro != pytest.approx(f1_score(truth, naive, average="micro"))

    trainer = Trainer(model, _frozen_sgd(model), batch_size=3, quiet=True)
    result = trainer.evaluate((x, LABELS))
    assert result["f1_micro"] == pytest.approx(micro, abs=1e-12)
    assert result["f1_macro"] == pytest.approx(macro, abs=1e-12)
    assert result["subset_accuracy"] == pytest.approx(subset, abs=1e-12)
    record = trainer.fit((x, LABELS), (x, LABELS), epochs=1)[0]
    assert record["train_f1_micro"] == pytest.approx(micro, abs=1e-12)
    assert record["val_f1_micro"] == pytest.approx(micro, abs=1e-12)
    assert record["val_subset_accuracy"] == pytest.approx(subset, abs=1e-12)


def test_binary_accuracy_uses_the_heads_threshold():
    """Guards against the same bug for a binary head: p = 0.62 for every image, threshold
    0.7, so every prediction is 0 and the accuracy is the share of negatives (3 of 8), not
    the share of positives that 0.5 would give (5 of 8)."""
    model = _constant_head("binary", 1, [0.5])
    model.head.thresholds.fill_(0.7)
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([1, 0, 0, 1, 0, 1, 1, 1])
    trainer = Trainer(model, _frozen_sgd(model), batch_size=3, quiet=True)
    result = trainer.evaluate((x, y))
    assert result["accuracy"] == 3 / 8
    assert result["f1"] == 0.0
    assert trainer.fit((x, y), epochs=1)[0]["train_accuracy"] == 3 / 8


# --- 9. the training data is shuffled, differently every epoch ----------------------------


class IndexRecorder(Dataset):
    """12 items; ``__getitem__`` records the index the loader asked for."""

    def __init__(self) -> None:
        self.x, self.y = _vectors(12)
        self.seen: list[int] = []

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append(int(index))
        return self.x[index], self.y[index]


def _epoch_orders(seed: int) -> tuple[list[int], list[int]]:
    data = IndexRecorder()
    torch.manual_seed(0)
    Trainer(nn.Linear(4, 3), batch_size=4, seed=seed, quiet=True).fit(data, epochs=2)
    assert len(data.seen) == 24
    return data.seen[:12], data.seen[12:]


def test_training_data_is_shuffled_differently_each_epoch_and_reproducibly():
    """Guards against the training loader not shuffling (or replaying one fixed order): each
    epoch visits every item once, not in index order, in an order that changes between
    epochs and is the same for the same seed."""
    first, second = _epoch_orders(seed=0)
    assert sorted(first) == sorted(second) == list(range(12))
    assert first != list(range(12)) and second != list(range(12))
    assert first != second
    assert _epoch_orders(seed=0) == (first, second)
    assert _epoch_orders(seed=1) != (first, second)
