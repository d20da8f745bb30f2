"""Checkpoints: best and last, a resume that continues bit for bit, Ctrl-C, stop()."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest
import torch

from xaikit.errors import CheckpointError, XaikitConfigError
from xaikit.train import LambdaCallback, Trainer
from xaikit.train.state import defer_keyboard_interrupt
from xaikit.zoo.checkpoint import load_model


def _recipe(checkpoint_dir, **extra):
    options = dict(
        optimizer="adamw",
        lr=1e-2,
        weight_decay=1e-3,
        scheduler="cosine",
        batch_size=32,
        seed=3,
        quiet=True,
        checkpoint_dir=checkpoint_dir,
    )
    options.update(extra)
    return options


def _interrupt_at(epoch: int, step: int) -> LambdaCallback:
    def on_batch_end(trainer, s, loss):
        if trainer.epoch + 1 == epoch and s == step:
            raise KeyboardInterrupt

    return LambdaCallback(on_batch_end=on_batch_end)


def _without_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def test_resume_after_ctrl_c_mid_epoch_is_bit_identical_to_an_uninterrupted_run(synth, tmp_path):
    x, y = synth.quadrant_images(200)
    train, val = (x[:160], y[:160]), (x[160:], y[160:])

    reference = synth.small_cnn(4, dropout=0.3)
    straight = Trainer(reference, **_recipe(tmp_path / "a"))
    straight.fit(train, val, epochs=4)

    # Ctrl-C in the middle of epoch 3: 'last' holds epoch 2.
    interrupted = Trainer(
        synth.small_cnn(4, dropout=0.3), **_recipe(tmp_path / "b"), callbacks=[_interrupt_at(3, 2)]
    )
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(train, val, epochs=4)
    assert interrupted.interrupted and interrupted.epoch == 2
    assert json.loads((tmp_path / "b" / "last.json").read_text())["epoch"] == 2

    # A new process: another model object (other initial weights), a new trainer.
    resumed_model = synth.small_cnn(4, dropout=0.3, init_seed=99)
    resumed = Trainer(resumed_model, **_recipe(tmp_path / "b"))
    history = resumed.fit(train, val, epochs=4, resume=tmp_path / "b")

    assert synth.state_equal(resumed_model, reference)
    assert _without_seconds(history) == _without_seconds(straight.history)
    state_a, state_b = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    for index, moments in state_a["state"].items():
        for name, value in moments.items():
            assert torch.equal(value, state_b["state"][index][name]), (index, name)
    assert resumed.scheduler.state_dict() == straight.scheduler.state_dict()


def test_two_fits_of_two_epochs_equal_one_fit_of_four_with_sgd_nesterov(synth, tmp_path):
    x, y = synth.quadrant_images(160)
    options = dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, batch_size=32, quiet=True)
    reference = synth.small_cnn(4)
    Trainer(reference, **options).fit((x, y), epochs=4)

    first = Trainer(synth.small_cnn(4), **options, checkpoint_dir=tmp_path)
    first.fit((x, y), epochs=2)
    model = synth.small_cnn(4, init_seed=5)
    Trainer(model, **options, checkpoint_dir=tmp_path).fit(
        (x, y), epochs=4, resume=tmp_path / "last.json"
    )
    assert synth.state_equal(model, reference)


def test_best_and_last_checkpoints_load_with_their_cards(synth, tmp_path):
    x, y = synth.quadrant_images(200)
    trainer = Trainer(synth.small_cnn(4), **_recipe(tmp_path, scheduler=None))
    history = trainer.fit((x[:160], y[:160]), (x[160:], y[160:]), epochs=3)
    assert trainer.last_checkpoint == tmp_path / "last"
    assert trainer.best_checkpoint == tmp_path / "best"

    last, card = load_model(tmp_path / "last")
    assert synth.state_equal(last, trainer.model)
    assert card["epoch"] == 3 and card["task"] == "multiclass"
    assert card["input_shape"] == [1, 8, 8]
    assert card["recipe"]["optimizer"] == "adamw" and card["recipe"]["epochs"] == 3
    assert card["seed"] == 3
    assert card["metrics"]["val_accuracy"] == history[-1]["val_accuracy"]

    best_epoch = max(history, key=lambda r: r["val_accuracy"])["epoch"]
    _, best_card = load_model(tmp_path / "best")
    assert best_card["epoch"] == best_epoch == trainer.monitor.best_epoch


def test_stop_from_a_batch_drops_the_partial_epoch_and_keeps_last(synth, tmp_path):
    x, y = synth.quadrant_images(128)

    def on_batch_end(trainer, step, loss):
        if trainer.epoch == 1 and step == 2:
            trainer.stop()

    trainer = Trainer(
        synth.small_cnn(4),
        **_recipe(tmp_path, scheduler=None),
        callbacks=[LambdaCallback(on_batch_end=on_batch_end)],
    )
    history = trainer.fit((x, y), epochs=5)
    assert len(history) == 1 and trainer.epoch == 1 and trainer.stop_requested
    assert not trainer.interrupted
    assert json.loads((tmp_path / "last.json").read_text())["epoch"] == 1


def test_stop_from_epoch_end_ends_cleanly_after_that_epoch(synth, tmp_path):
    x, y = synth.quadrant_images(128)
    stopper = LambdaCallback(on_epoch_end=lambda trainer, epoch, logs: trainer.stop())
    trainer = Trainer(synth.small_cnn(4), **_recipe(tmp_path, scheduler=None), callbacks=[stopper])
    assert len(trainer.fit((x, y), epochs=5)) == 1
    assert json.loads((tmp_path / "last.json").read_text())["epoch"] == 1


def test_training_state_that_does_not_match_the_weights_is_refused(synth, tmp_path):
    x, y = synth.quadrant_images(96)
    options = _recipe(tmp_path, scheduler=None)
    Trainer(synth.small_cnn(4), **options).fit((x, y), epochs=1)
    shutil.copy(tmp_path / "last.safetensors", tmp_path / "epoch1.safetensors")
    Trainer(synth.small_cnn(4), **options).fit((x, y), epochs=2, resume=tmp_path)
    shutil.copy(tmp_path / "epoch1.safetensors", tmp_path / "last.safetensors")
    with pytest.raises(CheckpointError, match="do not belong together"):
        Trainer(synth.small_cnn(4), **options).fit((x, y), epochs=3, resume=tmp_path)


def test_resume_refuses_another_optimizer_or_a_changed_cosine_length(synth, tmp_path):
    x, y = synth.quadrant_images(96)
    Trainer(synth.small_cnn(4), **_recipe(tmp_path)).fit((x, y), epochs=2)
    with pytest.raises(XaikitConfigError, match="optimizer='adamw'"):
        Trainer(synth.small_cnn(4), **_recipe(tmp_path, optimizer="sgd")).fit(
            (x, y), epochs=2, resume=tmp_path
        )
    with pytest.raises(XaikitConfigError, match="planned for 2 epochs"):
        Trainer(synth.small_cnn(4), **_recipe(tmp_path)).fit((x, y), epochs=5, resume=tmp_path)


def test_resume_without_a_checkpoint_names_the_missing_file(synth, tmp_path):
    x, y = synth.quadrant_images(32)
    with pytest.raises(CheckpointError, match="last.safetensors is missing"):
        Trainer(synth.small_cnn(4), quiet=True).fit((x, y), epochs=1, resume=tmp_path)


def test_checkpoints_need_a_model_from_create_model(tmp_path):
    with pytest.raises(XaikitConfigError, match="create_model"):
        Trainer(torch.nn.Linear(3, 2), checkpoint_dir=tmp_path)


def test_a_second_fit_on_the_same_trainer_continues_the_run(synth):
    x, y = synth.quadrant_images(96)
    options = dict(optimizer="adam", lr=1e-2, scheduler="step", step_size=1, gamma=0.7,
                   batch_size=32, quiet=True)  # fmt: skip
    reference = synth.small_cnn(4, dropout=0.3)
    Trainer(reference, **options).fit((x, y), epochs=3)
    model = synth.small_cnn(4, dropout=0.3)
    trainer = Trainer(model, **options)
    trainer.fit((x, y), epochs=1)
    history = trainer.fit((x, y), epochs=3)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert synth.state_equal(model, reference)


def test_resuming_a_run_that_stopped_early_trains_no_further(synth, tmp_path):
    x, y = synth.quadrant_images(64)
    options = _recipe(tmp_path, optimizer="sgd", lr=1e-9, momentum=0.0, scheduler=None,
                      early_stopping=1, monitor="train_loss", min_delta=1.0)  # fmt: skip
    first = Trainer(synth.small_cnn(4), **options)
    first.fit((x, y), epochs=5)
    assert first.stopped_early and first.epoch == 2
    model = synth.small_cnn(4, init_seed=4)
    again = Trainer(model, **options)
    history = again.fit((x, y), epochs=5, resume=tmp_path)
    assert again.stopped_early and again.epoch == 2 and len(history) == 2
    assert synth.state_equal(model, first.model)


def test_ctrl_c_while_files_are_written_waits_until_they_are_complete(tmp_path):
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("another SIGINT handler is installed")
    written = []
    with pytest.raises(KeyboardInterrupt), defer_keyboard_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        written.append("second file")
    assert written == ["second file"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
