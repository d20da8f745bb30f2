"""One trainer for every model of the zoo, CNN or recurrent: the task comes from the head.

``Trainer(model, optimizer="sgd", lr=0.1, momentum=0.9, scheduler="cosine").fit(train, val,
epochs=30)`` runs the usual loop (forward, the head's loss, backward, optional gradient
clipping, step, schedule step) and after each epoch evaluates, appends a record to the
history, saves ``best`` and ``last`` checkpoints and asks whether to stop early.

Every keyword of :class:`Trainer` but ``callbacks`` and ``card`` is a plain number, string
or bool, so a TOML recipe maps onto it directly: ``Trainer(model, **recipe).fit(train, val,
epochs=recipe_epochs)``; ``trainer.recipe`` gives the same dict back for the model card.

Interrupting: ``last`` is written (atomically, with Ctrl-C held back until all four files
are complete) after every epoch, so a command line only needs::

    try:
        trainer.fit(train, val, epochs, resume=previous)
    except KeyboardInterrupt:
        print(f"interrupted; resume from {trainer.last_checkpoint}")

or, for a clean return instead of an exception, a SIGINT handler that calls
:meth:`Trainer.stop`.

Randomness: shuffling draws from a private :class:`torch.Generator` seeded with ``seed``;
dropout draws from the global RNG, which ``fit`` forks (the caller's RNG state is restored
afterwards) and seeds. Both states go into the ``last`` checkpoint, so a resumed run is
bit-identical to one that was never interrupted (on CPU; CUDA kernels are not all
deterministic).

Several processes (``torchrun --nproc-per-node N``, after
:func:`xaikit.distributed.init_from_env`): the trainer of each rank wraps the model in
:class:`~torch.nn.parallel.DistributedDataParallel` (gloo on CPU, ``device_ids`` on CUDA,
each rank on ``cuda:<LOCAL_RANK>``) and feeds it a :class:`DistributedSampler` seeded with
``seed`` and told the epoch (``set_epoch``) before every epoch, so the shuffling changes
with the epoch and resumes exactly. ``batch_size`` stays the **global** batch: each rank
takes ``batch_size / N`` items per step (when the trainer builds the loader, from a Dataset
or a pair, a ``batch_size`` that ``N`` does not divide is refused; a DataLoader keeps its own
batch size) and the gradients are averaged over the ranks, so a step sees the gradient of the
mean loss over ``batch_size`` items, as one process would. Step ``t`` is made of the items
``[t * batch_size, (t + 1) * batch_size)`` of the epoch's permutation (see
:func:`~xaikit.train.loaders.make_distributed_loader`): a single process given a DataLoader
with ``DistributedSampler(data, num_replicas=1, rank=0, seed=seed)`` and the same batch size
trains on the same batches (tested to 1e-5 on the weights after 2 epochs; the difference is
float summation order). Caveats: when ``N`` does not divide the number of items, the
sampler repeats a few of them to even the shards; BatchNorm layers normalize each rank's
batch with that rank's own statistics (``SyncBatchNorm`` needs a GPU in torch 2.14; convert
the model with :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm` for GPU runs that must
match one process), so the equivalence holds exactly for models without BatchNorm.

Validation and :meth:`Trainer.evaluate` are collective: every rank evaluates its share of
whole batches, the logits are gathered (:func:`xaikit.distributed.gather_in_order`, in the
order of the items) and every rank computes the metrics over the whole set: the same
figures as one process, bit for bit, so early stopping and the best epoch agree on every
rank. The training loss and metric are reduced from sums and counts. Rank 0 alone prints
and writes checkpoints and histories; it gathers every rank's random state (shuffling
generator, torch CPU / CUDA, numpy, python ``random``) into ``last``, and on resume each
rank restores its own. A checkpoint records its ``world_size``; resuming it with another
number of processes is refused (the shuffling and the random states are per rank), in one
line that says how many to launch. :meth:`Trainer.stop` must be called on every rank at the
same step (a callback that decides on the epoch record does; a rank that stops alone leaves
the others waiting).

A failure inside the distributed part of ``fit`` (from the DistributedDataParallel wrapper's
construction to the last epoch) ends the process: the other ranks may be waiting in one of
PyTorch's own collectives (the gradient all-reduce, a buffer broadcast), which the
:meth:`~xaikit.distributed.Group.agree` of :func:`xaikit.distributed.guard` would not match,
so the run would hang. The failing rank writes ``xaikit: error: rank R: <message>`` (with
the traceback for an internal error) to its real stderr and exits (status 2 for a
:class:`~xaikit.errors.XaikitError`, 1 otherwise); ``torchrun`` then stops the other ranks.
Errors every rank raises together, after comparing notes (a loss that is not finite, a
monitor that is not logged), and Ctrl-C propagate as in one process.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import random
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from xaikit import distributed
from xaikit.errors import CheckpointError, DataError, XaikitConfigError, XaikitError
from xaikit.train.callbacks import Callback
from xaikit.train.history import HISTORY_FILES, History, json_safe
from xaikit.train.loaders import (
    TrainData,
    dataset_of,
    make_distributed_loader,
    make_loader,
    make_sharded_eval_loader,
    resolve_device,
    split_batch,
)
from xaikit.train.metrics import metrics_for, to_python
from xaikit.train.monitor import Monitor
from xaikit.train.optim import (
    LENGTH_DEPENDENT_SCHEDULERS,
    SCHEDULERS,
    make_optimizer,
    make_scheduler,
)
from xaikit.train.state import (
    checkpoint_stem,
    commit_staged,
    defer_keyboard_interrupt,
    get_rng_state,
    load_training_state,
    model_file,
    private_global_rng,
    private_host_rng,
    save_training_state,
    set_rng_state,
    staging_dir,
)
from xaikit.zoo.checkpoint import load_weights, save_model
from xaikit.zoo.heads import ClassifierHead, get_task

if TYPE_CHECKING:
    from xaikit.train.lr_find import LRFindResult


class TrainingDivergedError(XaikitError):
    """The loss became nan or infinite; training stopped and the last good checkpoint was kept."""


#: An attribute set on an exception that every rank raises at the same point of ``fit``
#: (after an agreement), so that it may propagate to :func:`xaikit.distributed.guard`.
_EVERY_RANK = "_xaikit_every_rank"


def _on_every_rank(error: BaseException) -> BaseException:
    """Mark ``error`` as raised by every rank together (see :func:`_exit_rank`)."""
    setattr(error, _EVERY_RANK, True)
    return error


def _exit_rank(rank: int, error: BaseException) -> None:
    """End this process after ``error`` left the distributed part of ``fit``.

    The other ranks may be waiting in a collective of DistributedDataParallel, which an
    :meth:`~xaikit.distributed.Group.agree` would not match: write the error to the real
    stderr (other ranks' ``sys.stderr`` goes to /dev/null) and exit at once, so that
    ``torchrun`` stops the other ranks.
    """
    if isinstance(error, XaikitError):
        text, code = f"xaikit: error: rank {rank}: {error}", 2
    else:
        trace = "".join(traceback.format_exception(error)).rstrip()
        text, code = f"xaikit: error: rank {rank}: an internal error:\n{trace}", 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    stream = sys.__stderr__
    try:
        if stream is None:
            raise OSError("no stderr")
        stream.write(text + "\n")
        stream.flush()
    except Exception:
        with contextlib.suppress(OSError):
            os.write(2, (text + "\n").encode("utf-8", "replace"))
    os._exit(code)


def check_batch_size(batch_size: int, world: int) -> None:
    """Refuse a global ``batch_size`` that the ``world`` processes of a run cannot share
    evenly (one :class:`~xaikit.errors.XaikitConfigError` line)."""
    if world > 1 and batch_size >= 1 and batch_size % world:
        lower = max(world, batch_size - batch_size % world)
        raise XaikitConfigError(
            f"batch_size {batch_size} cannot be split evenly over the {world} processes of "
            f"this run (each takes batch_size / {world} items per step); give a multiple of "
            f"{world}, e.g. {lower} or {lower + world}"
        )


class Trainer:
    """Fit and evaluate a classifier; the task (loss, predictions, metrics) is its head's.

    Args:
        model: a zoo model (its head gives the task) or any ``nn.Module`` classifier (taken
            as multi-class). Checkpoints need a model built by ``xaikit.create_model``.
        optimizer: ``"sgd"``, ``"adam"``, ``"adamw"`` (see :mod:`xaikit.train.optim`) or a
            ready ``torch.optim.Optimizer`` over the model's parameters.
        lr: learning rate (the peak of the ``onecycle`` schedule).
        momentum, nesterov: SGD momentum and Nesterov's variant.
        weight_decay: L2 penalty (SGD, Adam) or decoupled decay (AdamW).
        betas: Adam / AdamW moment coefficients.
        scheduler: ``None``, ``"step"``, ``"cosine"`` or ``"onecycle"``, stepped per batch.
        step_size, gamma: ``step`` multiplies the rate by ``gamma`` every ``step_size`` epochs.
        min_lr: the floor of ``cosine``.
        pct_start: the warm-up fraction of ``onecycle``.
        batch_size: batch size for data given as a Dataset (a DataLoader keeps its own);
            under torchrun the global batch, split evenly over the processes (``fit``
            refuses one they cannot share when it builds the loader).
        grad_clip: clip the global L2 norm of the gradients to this value.
        early_stopping: stop after this many epochs without improvement of ``monitor``.
        monitor: the history key that picks the best checkpoint and drives early stopping;
            ``"auto"`` is ``val_<main metric>`` (``val_accuracy``, ``val_map``) with
            validation data, else ``train_loss``. Keys ending in ``loss`` are minimized.
            A later epoch replaces the best only if strictly better; an exact tie of a
            metric goes to the lower loss of the same split (see
            :mod:`xaikit.train.monitor`), so a saturated ``val_accuracy`` does not pin the
            first epoch that reached it.
        min_delta: the smallest change of ``monitor`` that counts as an improvement.
        checkpoint_dir: where ``best`` and ``last`` checkpoints go (``None``: nowhere).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        amp: mixed precision (float16 autocast + gradient scaling) on CUDA; CPU stays fp32.
        seed: seeds shuffling and the (forked) global RNG used by dropout.
        num_workers: DataLoader worker processes for data given as a Dataset.
        train_metrics: also report the task's running metric on the training batches.
        log_every: refresh the progress bar's loss (and check it is finite) every so many
            steps; each refresh is one host sync.
        quiet: no progress bar and no epoch summaries (always quiet on ranks other than 0).
        callbacks: :class:`~xaikit.train.callbacks.Callback` objects.
        card: extra model-card fields for the checkpoints (``class_names``,
            ``normalization``, a data set name, ...).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: str | Optimizer = "adam",
        lr: float = 1e-3,
        *,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        betas: Sequence[float] = (0.9, 0.999),
        scheduler: str | None = None,
        step_size: int = 10,
        gamma: float = 0.1,
        min_lr: float = 0.0,
        pct_start: float = 0.3,
        batch_size: int = 64,
        grad_clip: float | None = None,
        early_stopping: int | None = None,
        monitor: str = "auto",
        min_delta: float = 0.0,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        device: str | torch.device = "auto",
        amp: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        train_metrics: bool = True,
        log_every: int = 20,
        quiet: bool = False,
        callbacks: Sequence[Callback] = (),
        card: dict[str, Any] | None = None,
    ) -> None:
        if grad_clip is not None and grad_clip <= 0:
            raise XaikitConfigError(f"grad_clip must be positive, got {grad_clip}")
        if early_stopping is not None and early_stopping < 1:
            raise XaikitConfigError(f"early_stopping (patience) must be >= 1, got {early_stopping}")
        if log_every < 1:
            raise XaikitConfigError(f"log_every must be >= 1, got {log_every}")
        if checkpoint_dir is not None and "name" not in (getattr(model, "spec", None) or {}):
            raise XaikitConfigError(
                "checkpoints need a model built by xaikit.create_model (it carries .spec); "
                "build it that way or pass checkpoint_dir=None"
            )
        if scheduler is not None and scheduler.lower() not in SCHEDULERS:
            raise XaikitConfigError(
                f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)} or none"
            )
        #: this process's rank among those of the run (a group of one without torchrun).
        self.group = distributed.current()
        self.device = resolve_device(
            self.group.device(str(device)) if self.group.distributed else device
        )
        self.model = model.to(self.device)
        self.task = get_task(model)
        self.metrics = metrics_for(self.task)
        if isinstance(optimizer, Optimizer):
            self.optimizer = optimizer
            optimizer_name = type(optimizer).__name__.lower()
        else:
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = make_optimizer(
                optimizer,
                params,
                lr,
                momentum=momentum,
                nesterov=nesterov,
                weight_decay=weight_decay,
                betas=(float(betas[0]), float(betas[1])),
            )
            optimizer_name = optimizer.lower()
        #: the options that reproduce this run; written into every checkpoint's model card.
        self.recipe: dict[str, Any] = {
            "optimizer": optimizer_name,
            "lr": lr,
            "momentum": momentum,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "betas": [float(b) for b in betas],
            "scheduler": scheduler.lower() if scheduler else None,
            "step_size": step_size,
            "gamma": gamma,
            "min_lr": min_lr,
            "pct_start": pct_start,
            "batch_size": batch_size,
            "grad_clip": grad_clip,
            "early_stopping": early_stopping,
            "monitor": monitor,
            "min_delta": min_delta,
            "amp": amp,
            "seed": seed,
        }
        self.batch_size = batch_size
        self.grad_clip = grad_clip
        self.seed = seed
        self.num_workers = num_workers
        self.train_metrics = train_metrics
        self.log_every = log_every
        self.quiet = quiet or not self.group.is_main
        self.callbacks = list(callbacks)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.card = dict(card or {})
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.monitor: Monitor | None = None
        self.history = History()
        #: completed epochs of this run.
        self.epoch = 0
        #: fit ended because ``monitor`` stopped improving.
        self.stopped_early = False
        #: fit ended with a KeyboardInterrupt (Ctrl-C).
        self.interrupted = False
        self._amp = amp and self.device.type == "cuda"
        self._scaler = torch.amp.GradScaler("cuda", enabled=self._amp)
        self._params = [p for group in self.optimizer.param_groups for p in group["params"]]
        # Shuffling (one process) or the loader's worker seeds (each rank its own stream).
        self._generator = torch.Generator().manual_seed(seed + self.group.rank)
        self._ddp: DistributedDataParallel | None = None
        self._rng_state: dict[str, torch.Tensor] | None = None
        self._plan: dict[str, int] | None = None
        self._input_shape: list[int] | None = None
        self._stop_requested = False

    # --- public API ---------------------------------------------------------------------

    def fit(
        self,
        train: TrainData,
        val: TrainData | None = None,
        epochs: int = 10,
        *,
        resume: str | os.PathLike[str] | None = None,
    ) -> History:
        """Train until ``epochs`` epochs of this run are complete; return the history.

        Args:
            train: a Dataset whose items are tuples ``(input, target, ...)``, a DataLoader of
                such batches, or a pair of tensors ``(inputs, targets)``. Under torchrun a
                Dataset or a pair is sharded by a DistributedSampler; a DataLoader must have
                a :class:`DistributedSampler` of its own (any other is refused). A
                DataLoader with a DistributedSampler gets ``set_epoch`` before every epoch,
                in one process too.
            val: validation data in the same forms, evaluated after every epoch (under
                torchrun a Dataset or a pair is shared out by whole batches and the metrics
                are those of the whole set; a DataLoader is evaluated whole on every rank).
            epochs: the total number of epochs of the run, counting those already done (by
                an earlier ``fit`` on this trainer or the resumed checkpoint).
            resume: a ``last`` checkpoint (its folder, its stem or one of its files) to
                continue from: weights, optimizer, schedule, RNG states, early-stopping
                counters and history are restored, so the run continues exactly.

        Raises:
            TrainingDivergedError: the loss became nan or infinite (the last good
                checkpoint is left untouched).
            KeyboardInterrupt: re-raised after Ctrl-C; ``last`` then holds the last completed
                epoch (never a half-written file) and ``trainer.interrupted`` is True.
        """
        if epochs < 1:
            raise XaikitConfigError(f"epochs must be at least 1, got {epochs}")
        group = self.group
        if group.distributed:
            if not isinstance(train, DataLoader):  # a DataLoader keeps its own batch size
                check_batch_size(self.batch_size, group.world)
            train_loader = make_distributed_loader(
                train,
                batch_size=self.batch_size // group.world,
                rank=group.rank,
                world=group.world,
                seed=self.seed,
                generator=self._generator,
                num_workers=self.num_workers,
                pin_memory=self.device.type == "cuda",
            )
        else:
            train_loader = make_loader(
                train,
                batch_size=self.batch_size,
                shuffle=True,
                generator=self._generator,
                num_workers=self.num_workers,
                pin_memory=self.device.type == "cuda",
            )
        val_loader = None if val is None else self._eval_loader(val)
        self._describe_data(train)
        steps = self._steps_per_epoch(train_loader)
        if self.monitor is None:
            self.monitor = Monitor.for_quantity(
                self._monitor_name(val is not None),
                self.recipe["early_stopping"],
                self.recipe["min_delta"],
            )
        self._schedule(epochs, steps)
        if resume is not None:
            self._restore(checkpoint_stem(resume), epochs, steps)
        if self.monitor.should_stop:
            self.stopped_early = True
            return self.history
        self._stop_requested = False
        self.interrupted = False
        # From here on the ranks also meet in DistributedDataParallel's own collectives: a
        # failure on one rank ends its process (see _exits_on_failure), never an `agree`.
        with self._exits_on_failure():
            if group.distributed:
                # Built after a resume loaded the weights (it checks every rank has the same),
                # and dropped when fit returns: a wrapper kept alive holds the process group
                # past its shutdown, and its threads then abort the process as it exits.
                ids = [self.device.index] if self.device.type == "cuda" else None
                self._ddp = DistributedDataParallel(self.model, device_ids=ids)
            host = private_host_rng() if group.distributed else contextlib.nullcontext()
            with private_global_rng(self.device), host:
                if self._rng_state is None:
                    # The global stream gets its own seed so dropout masks are not drawn from the
                    # same numbers as the shuffling order; each rank its own (rank 0: seed + 1).
                    rank_seed = self.seed + 1 + group.rank
                    torch.default_generator.manual_seed(rank_seed)
                    if self.device.type == "cuda":
                        torch.cuda.manual_seed(rank_seed)
                    if group.distributed:
                        np.random.seed(rank_seed % 2**32)
                        random.seed(rank_seed)
                else:
                    set_rng_state(self._rng_state, self.device)
                try:
                    self._run(train_loader, val_loader, epochs)
                except KeyboardInterrupt:
                    self.interrupted = True
                    raise
                finally:
                    self._rng_state = get_rng_state(self.device, host=group.distributed)
                    if self._ddp is not None:
                        self._ddp = None
                        gc.collect()  # the wrapper's reference cycles go now, not at exit
        return self.history

    def evaluate(self, data: TrainData) -> dict[str, Any]:
        """Loss and the task's metrics on ``data``, as JSON-ready numbers and lists.

        For a multi-class model: ``loss``, ``accuracy``, ``top5_accuracy`` (more than five
        classes), ``per_class_accuracy`` (C,) and ``confusion_matrix`` (C, C); multi-label:
        ``loss``, ``f1_micro``, ``f1_macro``, ``map``, ``subset_accuracy``, ``per_class_ap``;
        binary: ``loss``, ``accuracy``, ``f1``, ``auroc``. The model's train/eval mode is
        restored afterwards and the global RNG is left as it was.

        Under torchrun every rank must call it: each evaluates its share of the batches and
        every rank gets the figures over the whole of ``data`` (a DataLoader is evaluated
        whole on every rank).
        """
        loader, total = self._eval_loader(data)
        with private_global_rng(self.device):
            return to_python(self._evaluate(loader, total))

    def train_step(
        self, inputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a batch on the trainer's device: forward, the head's loss,
        backward, gradient clipping, step (with gradient scaling under mixed precision).

        ``(N, ...)`` inputs, targets -> ``(loss, logits)``, both detached, no host sync.
        Under torchrun, inside ``fit``, the step goes through the DistributedDataParallel
        wrapper (the gradients are averaged over the ranks); called outside ``fit`` it
        steps this rank's model alone.
        """
        net = self.model if self._ddp is None else self._ddp  # DDP averages the gradients
        with self._autocast():
            logits = net(inputs)
            loss = self._loss(logits, targets)
        self.optimizer.zero_grad(set_to_none=True)
        self._scaler.scale(loss).backward()
        if self.grad_clip is not None:
            self._scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self._params, self.grad_clip)
        self._scaler.step(self.optimizer)
        self._scaler.update()
        return loss.detach(), logits.detach()

    def stop(self) -> None:
        """Ask ``fit`` to stop after the current step (safe from a signal handler or a
        callback). A stop inside an epoch drops that epoch: ``last`` keeps the last completed
        one, from which a resume continues exactly. From ``on_epoch_end`` it stops cleanly
        after that epoch."""
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`stop` was called during the current ``fit``."""
        return self._stop_requested

    @property
    def last_checkpoint(self) -> Path | None:
        """The stem of the ``last`` checkpoint (``<checkpoint_dir>/last``) once one exists."""
        return self._existing("last")

    @property
    def best_checkpoint(self) -> Path | None:
        """The stem of the ``best`` checkpoint once one exists."""
        return self._existing("best")

    def selection(self) -> dict[str, Any] | None:
        """Which epoch the ``best`` checkpoint holds and why, or ``None`` before any epoch.

        ``{"epoch", "of" (epochs run), "monitor", "mode" ("min"/"max"), "value", "tiebreak",
        "tiebreak_value", "tied_with"}``: ``tied_with`` lists the earlier epochs whose
        monitored value was equal, which the tiebreak quantity beat (see
        :mod:`xaikit.train.monitor`).
        """
        monitor = self.monitor
        if monitor is None or monitor.best_epoch is None:
            return None
        tied = [
            int(r["epoch"])
            for r in self.history
            if r["epoch"] < monitor.best_epoch and r.get(monitor.name) == monitor.best
        ]
        return {
            "epoch": monitor.best_epoch,
            "of": self.epoch,
            "monitor": monitor.name,
            "mode": monitor.mode,
            "value": monitor.best,
            "tiebreak": monitor.tiebreak if tied else None,
            "tiebreak_value": monitor.best_tiebreak if tied else None,
            "tied_with": tied,
        }

    def save_history(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``history.csv``, ``history.json`` and ``curves.png`` into ``directory``
        (under torchrun, rank 0 writes them; every rank gets the paths)."""
        if self.group.is_main:
            return self.history.save(directory)
        folder = Path(directory)
        return {k: folder / n for k, n in HISTORY_FILES.items()}

    def lr_find(self, data: TrainData, **options: Any) -> LRFindResult:
        """:func:`xaikit.train.lr_find` with this trainer's optimizer settings; the model and
        optimizer are left as they were."""
        from xaikit.train.lr_find import lr_find

        recipe = self.recipe
        defaults = {
            "optimizer": recipe["optimizer"],
            "momentum": recipe["momentum"],
            "nesterov": recipe["nesterov"],
            "weight_decay": recipe["weight_decay"],
            "betas": recipe["betas"],
            "batch_size": self.batch_size,
            "grad_clip": self.grad_clip,
            "device": self.device,
            "amp": recipe["amp"],
            "seed": self.seed,
            "quiet": self.quiet,
        }
        return lr_find(self.model, data, **{**defaults, **options})

    # --- the loop -----------------------------------------------------------------------

    def _run(
        self,
        train_loader: DataLoader,
        val_loader: tuple[DataLoader, int | None] | None,
        epochs: int,
    ) -> None:
        assert self.monitor is not None
        for callback in self.callbacks:
            callback.on_fit_start(self)
        while self.epoch < epochs and not self._stop_requested:
            epoch = self.epoch + 1
            for callback in self.callbacks:
                callback.on_epoch_start(self, epoch)
            start = time.perf_counter()
            record: dict[str, Any] = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            train_logs = self._train_epoch(train_loader, epoch, epochs)
            if train_logs is None:
                break
            record.update(train_logs)
            if val_loader is not None:
                results = to_python(self._evaluate(*val_loader))
                self._check_value(results["loss"], epoch, "the validation loss")
                record.update(
                    {f"val_{k}": v for k, v in results.items() if isinstance(v, (int, float))}
                )
            record["seconds"] = time.perf_counter() - start
            self.epoch = epoch
            self.history.append(record)
            improved = self.monitor.update(
                self._monitored(record), epoch, self._tiebreak_value(record)
            )
            self._save_checkpoints(record, improved, epochs)
            self._report(record, epochs)
            for callback in self.callbacks:
                callback.on_epoch_end(self, epoch, record)
            if self.monitor.should_stop:
                self.stopped_early = True
                self._say(
                    f"early stop: {self.monitor.name} has not improved for "
                    f"{self.monitor.bad_epochs} epochs (best {self.monitor.best:.4g} at epoch "
                    f"{self.monitor.best_epoch})"
                )
                break
        for callback in self.callbacks:
            callback.on_fit_end(self)

    def _train_epoch(self, loader: DataLoader, epoch: int, epochs: int) -> dict[str, Any] | None:
        """Train one epoch; its ``train_*`` logs, or ``None`` if :meth:`stop` cut it short."""
        (self.model if self._ddp is None else self._ddp).train()
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch - 1)  # the epoch's permutation: seed + epochs done
        running = self.metrics.running() if self.train_metrics else None
        losses: list[torch.Tensor] = []
        sizes: list[int] = []
        checked = 0
        with tqdm(
            total=_length(loader),
            desc=f"epoch {epoch}/{epochs}",
            unit="batch",
            leave=False,
            disable=self.quiet,
            dynamic_ncols=True,
            file=sys.stderr,
        ) as bar:
            for step, batch in enumerate(loader, start=1):
                inputs, targets = split_batch(batch)
                inputs = inputs.to(self.device, non_blocking=True)
                targets = targets.to(self.device, non_blocking=True)
                if self._input_shape is None:
                    self._input_shape = list(inputs.shape[1:])
                loss, logits = self.train_step(inputs, targets)
                losses.append(loss)
                sizes.append(inputs.shape[0])
                if running is not None:
                    running.update(self._predict(logits), targets)
                if self.scheduler is not None:
                    self.scheduler.step()
                for callback in self.callbacks:
                    callback.on_batch_end(self, step, loss)
                bar.update()
                if step % self.log_every == 0:
                    recent = self._check_losses(losses, checked, epoch)
                    checked = len(losses)
                    bar.set_postfix(loss=f"{recent:.4g}", refresh=False)
                if self._stop_requested:
                    return None
        if not losses:
            raise DataError("the training data is empty (no batches)")
        if checked < len(losses):
            # Nothing left when the steps are a multiple of log_every. Every rank has the
            # same number of steps, so under torchrun each makes the same agree calls.
            self._check_losses(losses, checked, epoch)
        weights = torch.tensor(sizes, dtype=torch.float64, device=self.device)
        if self.group.distributed:
            # Sums and counts of every rank: the mean over every item of the epoch.
            shares = self.group.agree(
                (
                    float(torch.stack(losses).double() @ weights),
                    float(sum(sizes)),
                    None if running is None else running.totals(),
                )
            )
            train_loss = sum(s[0] for s in shares) / sum(s[1] for s in shares)
            if running is not None:
                running.merge([s[2] for s in shares])
        else:
            train_loss = float(torch.stack(losses).double() @ weights / weights.sum())
        logs: dict[str, Any] = {"train_loss": train_loss}
        if running is not None:
            logs[f"train_{running.name}"] = running.compute()
        return logs

    def _evaluate(self, loader: DataLoader, total: int | None = None) -> dict[str, Any]:
        """``{"loss": ..., metric: ...}`` as tensors over the whole of ``loader``.

        With ``total`` (under torchrun), ``loader`` holds this rank's batches of a set of
        ``total`` batches dealt round robin: the ``(B, C)`` logits and targets of every
        batch are gathered in order, so each rank computes the metrics of the whole set.
        """
        was_training = self.model.training
        self.model.eval()
        all_logits: list[torch.Tensor] = []
        all_targets: list[torch.Tensor] = []
        try:
            with (
                torch.no_grad(),
                self._autocast(),
                tqdm(
                    total=_length(loader),
                    desc="evaluate",
                    unit="batch",
                    leave=False,
                    disable=self.quiet,
                    dynamic_ncols=True,
                    file=sys.stderr,
                ) as bar,
            ):
                for batch in loader:
                    inputs, targets = split_batch(batch)
                    logits = self.model(inputs.to(self.device, non_blocking=True))
                    all_logits.append(logits.float())
                    all_targets.append(targets.to(self.device, non_blocking=True))
                    bar.update()
        finally:
            self.model.train(was_training)
        if total is not None and self.group.distributed:
            mine = [(lg.cpu(), tg.cpu()) for lg, tg in zip(all_logits, all_targets)]
            batches = distributed.gather_in_order(self.group, total, 1, mine)
            all_logits = [lg.to(self.device) for lg, _ in batches]
            all_targets = [tg.to(self.device) for _, tg in batches]
        if not all_logits:
            raise DataError("the evaluation data is empty (no batches)")
        logits, targets = torch.cat(all_logits), torch.cat(all_targets)
        loss = self._loss(logits, targets)
        scores = self.task.probabilities(logits)
        metrics = self.metrics.compute(scores, self._predict(logits), targets, logits.shape[-1])
        return {"loss": loss, **metrics}

    # --- pieces -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _exits_on_failure(self) -> Any:
        """Under torchrun, end the process (:func:`_exit_rank`) on an exception that only
        this rank raised; errors every rank raises together, ``RemoteRankError`` and
        Ctrl-C propagate. One process: nothing changes."""
        try:
            yield
        except Exception as err:
            if self.group.distributed and not (
                getattr(err, _EVERY_RANK, False) or isinstance(err, distributed.RemoteRankError)
            ):
                _exit_rank(self.group.rank, err)
            raise

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """float16 autocast under mixed precision; nothing (not even a disabled autocast,
        which costs a few microseconds per step) otherwise."""
        if self._amp:
            return torch.autocast(self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        try:
            return self.task.loss(logits, targets)
        except (RuntimeError, ValueError, IndexError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataError(
                f"the {self.task.name} head's loss cannot pair logits of shape "
                f"{tuple(logits.shape)} with targets of shape {tuple(targets.shape)} and dtype "
                f"{targets.dtype} ({reason}); check that the data's task and number of classes "
                "match the model"
            ) from None

    def _predict(self, logits: torch.Tensor) -> torch.Tensor:
        head = getattr(self.model, "head", None)
        if isinstance(head, ClassifierHead):
            return head.predict(logits)  # uses the head's own thresholds
        return self.task.predict(logits)

    def _check_losses(self, losses: list[torch.Tensor], start: int, epoch: int) -> float:
        """Mean of ``losses[start:]`` (one host sync); raise if any of them is not finite.

        Under torchrun the ranks compare notes (one :meth:`~xaikit.distributed.Group.agree`):
        the mean is over every rank's steps, and a loss that is not finite on any rank
        stops every rank with the same message.
        """
        recent = torch.stack(losses[start:])
        mean = float(recent.mean())
        bad: tuple[float, int] | None = None
        if not math.isfinite(mean):
            index = int(torch.nonzero(~torch.isfinite(recent))[0, 0])
            bad = (float(recent[index]), start + index + 1)
        if self.group.distributed:
            shares = self.group.agree((mean * len(recent), len(recent), bad))
            mean = sum(s[0] for s in shares) / max(sum(s[1] for s in shares), 1)
            bad = next((s[2] for s in shares if s[2] is not None), None)
        if bad is not None:  # every rank raises it: they compared notes above
            self._diverged(bad[0], epoch, f"step {bad[1]}")
        return mean

    def _check_value(self, value: float, epoch: int, what: str) -> None:
        if not math.isfinite(value):
            self._diverged(value, epoch, what=what)

    def _diverged(self, value: float, epoch: int, where: str = "", what: str = "the loss") -> None:
        last = self.last_checkpoint
        kept = (
            f"the last good checkpoint is {last} (epoch {self.epoch})"
            if last is not None
            else "no checkpoint was written"
        )
        at = f"epoch {epoch} {where}".strip()
        # Every rank raises it together: the losses are agreed on, the validation figures
        # are those of the whole set on every rank.
        raise _on_every_rank(
            TrainingDivergedError(
                f"{what} became {value} at {at}; {kept}; try a lower learning rate "
                f"(lr={self.optimizer.param_groups[0]['lr']:.3g}) or gradient clipping"
            )
        )

    def _monitored(self, record: dict[str, Any]) -> float:
        assert self.monitor is not None
        if self.monitor.name not in record:
            available = ", ".join(k for k in record if k.startswith(("train_", "val_")))
            # Every rank raises it together: the records are the same on every rank.
            raise _on_every_rank(
                XaikitConfigError(
                    f"monitor {self.monitor.name!r} is not logged; choose one of {available}"
                )
            )
        return float(record[self.monitor.name])

    def _tiebreak_value(self, record: dict[str, Any]) -> float | None:
        """The record's value of the monitor's tie-breaking quantity, if it logs one."""
        assert self.monitor is not None
        value = record.get(self.monitor.tiebreak) if self.monitor.tiebreak else None
        return float(value) if isinstance(value, (int, float)) else None

    def _monitor_name(self, has_val: bool) -> str:
        name = self.recipe["monitor"]
        if name != "auto":
            return name
        return f"val_{self.metrics.main}" if has_val else "train_loss"

    def _eval_loader(self, data: TrainData) -> tuple[DataLoader, int | None]:
        """The loader of ``data`` and, under torchrun, the number of batches of the whole
        set (``None``: the loader is the whole set)."""
        if self.group.distributed and not isinstance(data, DataLoader):
            return make_sharded_eval_loader(
                data,
                batch_size=self.batch_size,
                group=self.group,
                num_workers=self.num_workers,
                pin_memory=self.device.type == "cuda",
            )
        # A generator of its own: evaluation never moves the training or the global RNG.
        loader = make_loader(
            data,
            batch_size=self.batch_size,
            shuffle=False,
            generator=torch.Generator(),
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        return loader, None

    def _steps_per_epoch(self, loader: DataLoader) -> int | None:
        steps = _length(loader)
        if steps is None and self.recipe["scheduler"] is not None:
            raise XaikitConfigError(
                "a learning-rate schedule needs data of known length (a map-style Dataset)"
            )
        if steps == 0:
            raise DataError("the training data is empty (no batches)")
        return steps

    def _schedule(self, epochs: int, steps: int | None) -> None:
        """Build the schedule on the first ``fit``; later, check it still fits the run."""
        plan = {"epochs": epochs, "steps_per_epoch": steps or 0}
        if self.scheduler is None:
            self.scheduler = make_scheduler(
                self.recipe["scheduler"],
                self.optimizer,
                epochs=epochs,
                steps_per_epoch=steps or 1,
                step_size=self.recipe["step_size"],
                gamma=self.recipe["gamma"],
                min_lr=self.recipe["min_lr"],
                pct_start=self.recipe["pct_start"],
            )
        elif self._plan is not None:
            self._check_plan(self._plan, plan, "this trainer")
        self._plan = plan

    def _check_plan(self, planned: dict[str, int], current: dict[str, int], source: str) -> None:
        name = self.recipe["scheduler"]
        if name in LENGTH_DEPENDENT_SCHEDULERS and planned != current:
            raise XaikitConfigError(
                f"the {name} schedule of {source} was planned for {planned['epochs']} epochs of "
                f"{planned['steps_per_epoch']} batches, not {current['epochs']} of "
                f"{current['steps_per_epoch']}; keep epochs, the data and the batch size"
            )

    def _restore(self, stem: Path, epochs: int, steps: int | None) -> None:
        """Load the ``last`` checkpoint at ``stem`` into this trainer (see ``fit``)."""
        group = self.group
        if group.distributed:
            if group.is_main:
                commit_staged(stem.parent)  # rank 0 alone finishes a cut-short commit
            group.agree()
        state = load_training_state(stem)  # checked: its digest, types, epoch vs history
        saved_world = int(state.get("world_size") or 1)
        if saved_world != group.world:
            launch = (
                "run it as one process (without torchrun)"
                if saved_world == 1
                else f"launch it on {saved_world} processes (torchrun --nproc-per-node "
                f"{saved_world} on one machine)"
            )
            raise XaikitConfigError(
                f"cannot resume {stem}: it was trained by {saved_world} process"
                f"{'es' if saved_world > 1 else ''} and this run has {group.world} (the "
                f"shuffling and every process's random state depend on it); {launch}, or "
                "start a new run"
            )
        ranks = state.get("ranks")
        if group.distributed and (not isinstance(ranks, list) or len(ranks) != group.world):
            raise CheckpointError(
                f"cannot resume {stem}: it records world_size {saved_world} but not the random "
                "state of every process"
            )
        done = state["epoch"]
        if not 0 <= done <= epochs:
            # More epochs done than this run asks for cannot be undone; a state edited to
            # `epoch: 1e9` is refused by its digest before this.
            raise XaikitConfigError(
                f"cannot resume {stem}: it has {done} epochs done, more than the {epochs} this "
                f"run asks for (ask for {done} or more)"
            )
        for key in ("optimizer", "scheduler"):
            if state["recipe"].get(key) != self.recipe[key]:
                raise XaikitConfigError(
                    f"cannot resume {stem}: it was trained with {key}="
                    f"{state['recipe'].get(key)!r}, this trainer has {key}={self.recipe[key]!r}"
                )
        assert self.monitor is not None
        if state["monitor"]["name"] != self.monitor.name:
            raise XaikitConfigError(
                f"cannot resume {stem}: it monitored {state['monitor']['name']!r}, this run "
                f"monitors {self.monitor.name!r} (give the same validation data and monitor)"
            )
        self._check_plan(
            state["plan"], {"epochs": epochs, "steps_per_epoch": steps or 0}, str(stem)
        )
        try:
            self.model.load_state_dict(load_weights(model_file(stem)))
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(
                f"{stem} does not fit this model or optimizer ({str(err).splitlines()[0]})"
            ) from None
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self._scaler.is_enabled() and state["scaler"]:
            self._scaler.load_state_dict(state["scaler"])
        self.monitor.load_state_dict(state["monitor"])
        self.history = History(state["history"])
        self.epoch = int(state["epoch"])
        rng = ranks[group.rank] if group.distributed else state["rng"]
        self._generator.set_state(rng["sampler"])
        self._rng_state = {k: v for k, v in rng.items() if k != "sampler"}
        self._input_shape = state["input_shape"]

    def _training_state(self, ranks: list[Any] | None = None) -> dict[str, Any]:
        assert self.monitor is not None
        extra: dict[str, Any] = {"world_size": self.group.world}
        if ranks is not None:
            extra["ranks"] = ranks
        return {
            "epoch": self.epoch,
            "plan": self._plan,
            "recipe": self.recipe,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self._scaler.state_dict(),
            "monitor": self.monitor.state_dict(),
            "history": list(self.history),
            "rng": {"sampler": self._generator.get_state(), **get_rng_state(self.device)},
            "input_shape": self._input_shape,
            **extra,
        }

    def _rank_rng(self) -> dict[str, Any]:
        """This rank's random state: the loader's generator, torch, numpy and python."""
        return {"sampler": self._generator.get_state(), **get_rng_state(self.device, host=True)}

    def _save_checkpoints(self, record: dict[str, Any], improved: bool, epochs: int) -> None:
        if self.checkpoint_dir is None:
            return
        group = self.group
        ranks = group.agree(self._rank_rng()) if group.distributed else None
        if group.is_main:
            self._write_checkpoints(record, improved, epochs, ranks)
        if group.distributed:
            group.agree()  # no rank reads a checkpoint before rank 0 has written it

    def _write_checkpoints(
        self, record: dict[str, Any], improved: bool, epochs: int, ranks: list[Any] | None
    ) -> None:
        assert self.checkpoint_dir is not None
        card = {
            "input_shape": self._input_shape,
            "recipe": {**self.recipe, "epochs": epochs, "world_size": self.group.world},
            "world_size": self.group.world,
            "seed": self.seed,
            "epoch": self.epoch,
            "metrics": json_safe(
                {k: v for k, v in record.items() if k.startswith(("train_", "val_"))}
            ),
            **self.card,
        }
        # Staged, then moved into place: a crash between two files never leaves a `last`
        # whose weights and training state disagree (see xaikit.train.state).
        staging = staging_dir(self.checkpoint_dir)
        with defer_keyboard_interrupt():
            shutil.rmtree(staging, ignore_errors=True)  # an incomplete set from a crash
            if improved:
                save_model(self.model, staging / "best", **card)
            save_model(self.model, staging / "last", **card)
            save_training_state(staging / "last", self._training_state(ranks))
            commit_staged(self.checkpoint_dir)

    def _describe_data(self, data: TrainData) -> None:
        """Check the data set's task and classes against the head; note them for the card."""
        dataset = dataset_of(data)
        task = getattr(dataset, "task", None)
        if isinstance(task, str) and task != self.task.name:
            raise XaikitConfigError(
                f"the data set is {task} but the model's head is {self.task.name}; "
                f"build the model with task={task!r}"
            )
        classes = getattr(dataset, "classes", None)
        head = getattr(self.model, "head", None)
        if classes and isinstance(head, ClassifierHead):
            if self.task.num_outputs(len(classes)) != head.fc.out_features:
                raise XaikitConfigError(
                    f"the data set has {len(classes)} classes but the model's "
                    f"{self.task.name} head has {head.fc.out_features} outputs; build the "
                    f"model with num_classes={len(classes)}"
                )
            self.card.setdefault("class_names", list(classes))
        normalization = getattr(dataset, "normalization", None)
        if normalization is not None:
            self.card.setdefault("normalization", normalization)

    def _existing(self, name: str) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        stem = self.checkpoint_dir / name
        return stem if model_file(stem).is_file() else None

    def _report(self, record: dict[str, Any], epochs: int) -> None:
        parts = [f"epoch {record['epoch']}/{epochs}"]
        parts += [
            f"{k} {v:.4g}"
            for k, v in record.items()
            if k.startswith(("train_", "val_")) and isinstance(v, float)
        ]
        parts.append(f"({record['seconds']:.1f} s)")
        self._say("  ".join(parts))

    def _say(self, line: str) -> None:
        if not self.quiet:
            tqdm.write(line, file=sys.stderr)


def _length(loader: DataLoader) -> int | None:
    with contextlib.suppress(TypeError):
        return len(loader)
    return None
