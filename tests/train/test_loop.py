"""The loop's built-ins: schedules, clipping, early stopping, divergence, seeds, quiet, data."""

from __future__ import annotations

import hashlib
import itertools
import math
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, random_split

from xaikit.errors import DataError, XaikitConfigError
from xaikit.train import LambdaCallback, Trainer, TrainingDivergedError


def _lrs(synth, epochs: int, **options) -> list[float]:
    x, y = synth.quadrant_images(64)  # 4 batches of 16 per epoch
    trainer = Trainer(synth.small_cnn(4), "sgd", batch_size=16, quiet=True, **options)
    return [r["lr"] for r in trainer.fit((x, y), epochs=epochs)]


def test_step_schedule_multiplies_by_gamma_every_step_size_epochs(synth):
    lrs = _lrs(synth, 6, lr=0.1, scheduler="step", step_size=2, gamma=0.5)
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_cosine_schedule_follows_the_half_cosine(synth):
    epochs, lr, floor = 5, 0.1, 0.01
    lrs = _lrs(synth, epochs, lr=lr, scheduler="cosine", min_lr=floor)
    expected = [floor + (lr - floor) * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(5)]
    assert lrs == pytest.approx(expected, rel=1e-9)


def test_onecycle_warms_up_to_lr_then_anneals(synth):
    x, y = synth.quadrant_images(64)
    seen: list[float] = []
    record = LambdaCallback(
        on_batch_end=lambda t, step, loss: seen.append(t.optimizer.param_groups[0]["lr"])
    )
    trainer = Trainer(
        synth.small_cnn(4), "sgd", lr=0.2, scheduler="onecycle", pct_start=0.25,
        batch_size=16, quiet=True, callbacks=[record],
    )  # fmt: skip
    history = trainer.fit((x, y), epochs=6)  # 24 steps, the peak after step 5
    assert history[0]["lr"] == pytest.approx(0.2 / 25)
    peak = max(range(len(seen)), key=seen.__getitem__)
    assert peak == 4 and seen[peak] == pytest.approx(0.2)
    assert all(a < b for a, b in itertools.pairwise(seen[: peak + 1]))
    assert all(a > b for a, b in itertools.pairwise(seen[peak:-1]))
    assert seen[-2] < 0.2 / 25 / 1e3


def test_gradient_clipping_bounds_the_update_norm(synth):
    x, y = synth.quadrant_images(16)
    model = synth.small_cnn(4)
    params = [p for p in model.parameters()]
    before = [p.detach().clone() for p in params]
    loss = torch.nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params)
    grad_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    assert grad_norm > 0.05  # so clipping is active

    trainer = Trainer(model, "sgd", lr=1.0, momentum=0.0, grad_clip=0.05, batch_size=16, quiet=True)
    trainer.fit((x, y), epochs=1)
    steps = [b - p.detach() for b, p in zip(before, params)]
    step_norm = torch.linalg.vector_norm(torch.stack([s.norm() for s in steps]))
    assert float(step_norm) == pytest.approx(0.05, rel=1e-4)
    for step, grad in zip(steps, grads):  # same direction as the gradient
        torch.testing.assert_close(step, grad * (0.05 / grad_norm), rtol=1e-3, atol=1e-6)


def test_early_stopping_stops_after_patience_epochs_without_improvement(synth):
    x, y = synth.quadrant_images(96)
    trainer = Trainer(
        synth.small_cnn(4), "sgd", lr=1e-9, momentum=0.0, batch_size=32,
        early_stopping=2, monitor="val_loss", min_delta=1e-3, quiet=True,
    )  # fmt: skip
    history = trainer.fit((x[:64], y[:64]), (x[64:], y[64:]), epochs=10)
    assert len(history) == 3 and trainer.stopped_early
    assert trainer.monitor.best_epoch == 1 and trainer.monitor.bad_epochs == 2


def test_unknown_monitor_lists_the_logged_keys(synth):
    x, y = synth.quadrant_images(32)
    trainer = Trainer(synth.small_cnn(4), monitor="val_f1", quiet=True)
    with pytest.raises(XaikitConfigError, match="val_accuracy"):
        trainer.fit((x, y), (x, y), epochs=1)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(synth, tmp_path):
    x, y = synth.quadrant_images(96)
    digests: dict[str, str] = {}

    def poison(trainer, epoch):
        if epoch == 3:
            for path in sorted(tmp_path.iterdir()):
                digests[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
            with torch.no_grad():
                trainer.model.head.fc.weight.fill_(float("nan"))

    trainer = Trainer(
        synth.small_cnn(4), "adam", lr=1e-2, batch_size=16, checkpoint_dir=tmp_path,
        quiet=True, callbacks=[LambdaCallback(on_epoch_start=poison)],
    )  # fmt: skip
    with pytest.raises(TrainingDivergedError) as caught:
        trainer.fit((x[:64], y[:64]), (x[64:], y[64:]), epochs=5)
    message = str(caught.value)
    assert "loss became nan at epoch 3 step 1" in message
    assert str(tmp_path / "last") in message and "(epoch 2)" in message
    assert "lower learning rate" in message
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    assert after == digests and "last.train.json" in after and "best.safetensors" in after
    assert len(trainer.history) == 2


def test_an_epoch_of_a_multiple_of_log_every_steps_ends_cleanly(synth):
    x, y = synth.quadrant_images(40)
    # 20 steps of 2 = log_every (20): the last check of the epoch has no loss left to check.
    trainer = Trainer(synth.small_cnn(4), batch_size=2, quiet=True)
    history = trainer.fit((x, y), epochs=1)
    assert len(history) == 1 and math.isfinite(history[-1]["train_loss"])

    # log_every 5 divides the 20 steps: every loss is still checked (a nan at the last step).
    def poison(trainer, step, loss):
        if step == 19:
            with torch.no_grad():
                trainer.model.head.fc.weight.fill_(float("nan"))

    poisoned = Trainer(
        synth.small_cnn(4), batch_size=2, log_every=5, quiet=True,
        callbacks=[LambdaCallback(on_batch_end=poison)],
    )  # fmt: skip
    with pytest.raises(TrainingDivergedError, match="at epoch 1 step 20"):
        poisoned.fit((x, y), epochs=1)


def test_same_seed_same_weights_other_seed_other_weights(synth):
    x, y = synth.quadrant_images(96)

    def train(seed: int):
        model = synth.small_cnn(4, dropout=0.3)
        Trainer(model, "adam", lr=1e-2, batch_size=16, seed=seed, quiet=True).fit((x, y), epochs=2)
        return model

    first, second, other = train(7), train(7), train(8)
    assert synth.state_equal(first, second)
    assert not synth.state_equal(first, other)


def test_fit_and_evaluate_leave_the_global_rng_untouched(synth):
    x, y = synth.quadrant_images(64)
    trainer = Trainer(synth.small_cnn(4, dropout=0.3), batch_size=16, quiet=True)
    state = torch.get_rng_state()
    trainer.fit((x, y), (x, y), epochs=1)
    trainer.evaluate((x, y))
    assert torch.equal(torch.get_rng_state(), state)


def test_quiet_prints_nothing_and_the_default_shows_progress(synth, capfd):
    x, y = synth.quadrant_images(64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(synth.small_cnn(4), batch_size=16, quiet=True).fit((x, y), (x, y), epochs=2)
    assert capfd.readouterr() == ("", "")
    Trainer(synth.small_cnn(4), batch_size=16).fit((x, y), (x, y), epochs=2)
    err = capfd.readouterr().err
    assert "epoch 2/2" in err and "val_accuracy" in err


class _MaskedItems(Dataset):
    """Items ``(input, target, mask)`` with the attributes of an xaikit data set."""

    def __init__(self, x, y, task="multiclass", classes=4):
        self.x, self.y = x, y
        self.task = task
        self.classes = [f"c{i}" for i in range(classes)]
        self.normalization = {"mean": [0.0], "std": [1.0]}

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i], torch.zeros(8, 8)


def test_datasets_with_masks_dataloaders_and_tensor_pairs_train_the_same(synth, tmp_path):
    x, y = synth.quadrant_images(64)
    masked = Trainer(synth.small_cnn(4), batch_size=16, seed=1, quiet=True)
    masked.fit(_MaskedItems(x, y), epochs=1)
    pair = Trainer(synth.small_cnn(4), batch_size=16, seed=1, quiet=True)
    pair.fit((x, y), epochs=1)
    assert synth.state_equal(masked.model, pair.model)

    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    steps: list[int] = []
    counter = LambdaCallback(on_batch_end=lambda t, step, loss: steps.append(step))
    from_loader = Trainer(synth.small_cnn(4), batch_size=64, quiet=True, callbacks=[counter])
    history = from_loader.fit(loader, loader, epochs=1)
    assert steps == [1, 2, 3, 4]  # the loader's own batch size of 16
    assert history[0]["val_accuracy"] == pytest.approx(from_loader.evaluate(loader)["accuracy"])

    carded = Trainer(synth.small_cnn(4), batch_size=16, quiet=True, checkpoint_dir=tmp_path)
    train_part, _ = random_split(_MaskedItems(x, y), [48, 16])
    carded.fit(train_part, epochs=1)  # the card looks through the Subset
    card = (tmp_path / "last.json").read_text()
    assert '"c3"' in card and '"std"' in card


def test_data_that_does_not_fit_the_head_is_refused_clearly(synth):
    x, y = synth.quadrant_images(32)
    with pytest.raises(XaikitConfigError, match="multilabel but the model's head is multiclass"):
        Trainer(synth.small_cnn(4), quiet=True).fit(_MaskedItems(x, y, task="multilabel"))
    with pytest.raises(XaikitConfigError, match="6 classes but"):
        Trainer(synth.small_cnn(4), quiet=True).fit(_MaskedItems(x, y, classes=6))
    with pytest.raises(DataError, match=r"targets of shape \(16, 4, 4\)"):
        Trainer(synth.small_cnn(4), batch_size=16, quiet=True).fit((x, torch.rand(32, 4, 4)))


def test_cpu_stays_fp32_and_a_missing_cuda_is_a_config_error(synth):
    trainer = Trainer(synth.small_cnn(4), device="cpu", amp=True, quiet=True)
    assert trainer.device.type == "cpu" and not trainer._scaler.is_enabled()
    if not torch.cuda.is_available():
        with pytest.raises(XaikitConfigError, match="CUDA is not available"):
            Trainer(synth.small_cnn(4), device="cuda")


def test_unknown_optimizer_and_scheduler_names_list_the_choices(synth):
    with pytest.raises(XaikitConfigError, match="sgd, adam, adamw"):
        Trainer(synth.small_cnn(4), optimizer="rmsprop")
    with pytest.raises(XaikitConfigError, match="step, cosine, onecycle"):
        Trainer(synth.small_cnn(4), scheduler="linear")
