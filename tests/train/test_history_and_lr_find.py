"""History files and curves; the learning-rate range test borrows the model and suggests a rate."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from xaikit.train import History, Trainer, lr_find
from xaikit.train.lr_find import _suggest
from xaikit.train.state import decode, encode

PNG = b"\x89PNG\r\n\x1a\n"


def test_save_history_writes_csv_json_and_curves(synth, tmp_path):
    x, y = synth.quadrant_images(64)
    trainer = Trainer(synth.small_cnn(4), batch_size=16, quiet=True)
    history = trainer.fit((x, y), (x, y), epochs=3)
    paths = trainer.save_history(tmp_path)
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"} <= set(
        rows[0]
    )
    assert float(rows[2]["val_loss"]) == pytest.approx(history[2]["val_loss"])
    assert json.loads(paths["json"].read_text()) == list(history)
    assert paths["curves"].read_bytes().startswith(PNG)


def test_history_csv_has_the_union_of_columns():
    history = History([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "val_loss": 0.5}])
    assert history.columns() == ["epoch", "train_loss", "val_loss"]
    assert history.to_csv().splitlines() == ["epoch,train_loss,val_loss", "1,1.0,", "2,,0.5"]


def test_lr_find_suggests_a_rate_and_returns_the_model_as_it_was(synth, tmp_path):
    x, y = synth.quadrant_images(256)
    model = synth.small_cnn(4, dropout=0.2).eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    torch.nn.functional.cross_entropy(model(x[:8]), y[:8]).backward()
    optimizer.step()  # the optimizer now holds momentum buffers
    optimizer.zero_grad()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    buffers = {k: v["momentum_buffer"].clone() for k, v in optimizer.state_dict()["state"].items()}
    rng = torch.get_rng_state()

    result = lr_find(
        model, (x, y), optimizer=optimizer, num_steps=60, batch_size=32, quiet=True,
        plot=tmp_path / "lr.png",
    )  # fmt: skip

    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert not model.training and not any(m.training for m in model.modules())
    assert optimizer.param_groups[0]["lr"] == 0.01
    for index, state in optimizer.state_dict()["state"].items():
        assert torch.equal(state["momentum_buffer"], buffers[index])
    assert torch.equal(torch.get_rng_state(), rng)

    n = len(result.lrs)
    assert 10 < n <= 60 and result.losses.shape == result.raw_losses.shape == (n,)
    ratios = result.lrs[1:] / result.lrs[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))  # exponential sweep
    assert float(result.lrs[0]) == pytest.approx(1e-7)
    # inside the sweep (after the skipped start), below the rates where the loss blew up
    assert float(result.lrs[5]) <= result.suggestion < float(result.lrs[-1])
    assert float(result.raw_losses[-1]) > 2 * float(result.raw_losses.min())
    assert result.suggestions["min/10"] == pytest.approx(
        float(result.lrs[int(result.losses.argmin())]) / 10
    )
    assert result.plot is not None and result.plot.read_bytes().startswith(PNG)


def test_the_steepest_rule_finds_the_steepest_fall_of_a_known_curve():
    lrs = [10 ** (-6 + 5 * i / 99) for i in range(100)]
    # a logistic fall centred at lr = 1e-3, then a rise after 1e-2
    losses = [
        2 - 1.5 / (1 + math.exp(-4 * (math.log10(lr) + 3))) + max(0, math.log10(lr) + 2) ** 2
        for lr in lrs
    ]
    suggestions = _suggest(lrs, losses, skip_start=5)
    assert suggestions["steepest"] == pytest.approx(1e-3, rel=0.15)
    lowest = min(range(100), key=losses.__getitem__)
    assert suggestions["min/10"] == pytest.approx(lrs[lowest] / 10)


def test_trainer_lr_find_uses_its_own_optimizer_settings(synth):
    x, y = synth.quadrant_images(128)
    model = synth.small_cnn(4)
    trainer = Trainer(model, "sgd", lr=0.1, momentum=0.9, batch_size=32, quiet=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = trainer.lr_find((x, y), num_steps=20, method="min/10")
    assert result.suggestion == result.suggestions["min/10"]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert trainer.optimizer.param_groups[0]["lr"] == 0.1 and not trainer.optimizer.state


def test_training_state_round_trips_through_json_and_tensors():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), betas=(0.8, 0.99))
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.loads(json.dumps(encode(optimizer.state_dict(), tensors)))
    restored = decode(skeleton, tensors)
    assert restored["param_groups"][0]["betas"] == (0.8, 0.99)
    assert set(restored["state"]) == {0, 1}  # integer keys survive JSON
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    fresh.load_state_dict(restored)
    for index in (0, 1):
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(fresh.state_dict()["state"][index][name],
                               optimizer.state_dict()["state"][index][name])  # fmt: skip
