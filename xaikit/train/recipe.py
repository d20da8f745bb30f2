"""Training recipes: one TOML file (or dict) that says data, model and optimizer, so a
reference model is reproduced by ``xaikit train --recipe xaikit/models/<name>.toml``.

A recipe has three tables::

    [data]                      # xaikit.data.load(name, split, **options)
    name = "shapes"
    options = { n = 10000, size = 64, seed = 0 }
    test_options = { n = 2000 } # extra options for the test split
    val_fraction = 0.1          # held out of the training split, picks the best epoch

    [model]                     # xaikit.create_model(arch, **options)
    arch = "simple_cnn"
    options = { widths = [16, 32, 64] }

    [train]                     # xaikit.Trainer(model, **options).fit(..., epochs=epochs)
    epochs = 10
    options = { optimizer = "adam", lr = 3e-3, scheduler = "onecycle", seed = 0 }

``num_classes``, ``task`` and ``in_channels`` of the model come from the data set unless
the model table sets them.

A data set with a validation split of its own (``imagefolder:<dir>``, see
:func:`xaikit.data.registry.dataset_splits`) is used as it is: ``val_fraction`` does not apply,
the split is seeded by the run's ``seed`` unless the data options set one, items are
normalized with the train split's statistics unless ``normalize = false``, and the files of
every split are listed in ``<out>/split.json``.
"""

from __future__ import annotations

import copy
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import random_split

from xaikit.errors import DataError, XaikitConfigError
from xaikit.io import atomic_write_json, read_document
from xaikit.schema import Bool, Int, List, Number, Str, Table, check, show
from xaikit.train.optim import OPTIMIZERS, SCHEDULERS
from xaikit.train.state import commit_staged
from xaikit.zoo.checkpoint import load_model, save_model
from xaikit.zoo.registry import arch_info, create_model

#: metrics reported for the test split, by task; the first is the headline.
FINAL_METRICS = {
    "multiclass": ("accuracy", "top5_accuracy"),
    "multilabel": ("map", "f1_micro", "f1_macro", "subset_accuracy"),
    "binary": ("accuracy", "f1", "auroc"),
}


#: Upper bounds that keep a recipe from asking for years of training or absurd batches.
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1 << 20
_UNIT = {"low": 0, "high": 1, "high_open": True}

#: Every option of ``[train] options``: the keywords of :class:`~xaikit.train.Trainer` that
#: are plain data (``callbacks``, ``card`` and ``checkpoint_dir`` are not recipe fields).
TRAIN_OPTIONS_SPEC = Table(
    {
        "optimizer": Str(OPTIMIZERS, casefold=True),
        "lr": Number(low=0, low_open=True),
        "momentum": Number(**_UNIT),
        "nesterov": Bool(),
        "weight_decay": Number(low=0),
        "betas": List(Number(**_UNIT), length=2, describe="a pair of numbers in [0, 1)"),
        "scheduler": Str((*SCHEDULERS, "none"), casefold=True, optional=True),
        "step_size": Int(1, MAX_EPOCHS),
        "gamma": Number(low=0, low_open=True),
        "min_lr": Number(low=0),
        "pct_start": Number(0, 1, low_open=True, high_open=True),
        "batch_size": Int(1, MAX_BATCH_SIZE),
        "grad_clip": Number(low=0, low_open=True, optional=True),
        "early_stopping": Int(1, MAX_EPOCHS, optional=True),
        "monitor": Str(max_len=200),
        "min_delta": Number(low=0),
        "device": Str(max_len=100),
        "amp": Bool(),
        "seed": Int(0, 2**63 - 2),  # torch seeds are 64-bit; the dropout stream uses seed + 1
        "num_workers": Int(0, 256),
        "train_metrics": Bool(),
        "log_every": Int(1, 1_000_000),
        "quiet": Bool(),
    }
)
#: The tables of a recipe (see the module docstring). The options of the data set and the
#: architecture are checked by their loader and by :mod:`xaikit.zoo.limits`.
RECIPE_SPEC = Table(
    {
        "name": Str(nonempty=False, max_len=1000),
        "description": Str(nonempty=False, max_len=100_000),
        "targets": Table(),
        "data": Table(
            {
                "name": Str(max_len=5000),
                "options": Table(),
                "test_options": Table(),
                "val_fraction": Number(**_UNIT),
            }
        ),
        "model": Table({"arch": Str(max_len=1000), "options": Table()}),
        "train": Table({"epochs": Int(1, MAX_EPOCHS), "options": TRAIN_OPTIONS_SPEC}),
    }
)


@dataclass
class Recipe:
    """What to train on, what to train and how (see the module docstring)."""

    data: str
    model: str
    epochs: int = 10
    data_options: dict[str, Any] = field(default_factory=dict)
    test_options: dict[str, Any] = field(default_factory=dict)
    val_fraction: float = 0.1
    model_options: dict[str, Any] = field(default_factory=dict)
    train_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "recipe") -> Recipe:
        """A recipe from its tables; every field is checked (:data:`RECIPE_SPEC`) and a
        wrong one is one :class:`~xaikit.errors.XaikitConfigError` line naming it."""
        if not isinstance(raw, dict):
            raise XaikitConfigError(f"{source}: a recipe is a table, got {show(raw)}")
        known = {"data", "model", "train", "name", "description", "targets"}
        unknown = sorted(set(raw) - known, key=str)
        if unknown:
            raise XaikitConfigError(
                f"{source}: unknown table(s) {', '.join(show(u) for u in unknown)}"
            )
        check(raw, RECIPE_SPEC, where=source, style="toml")
        data, model, train = raw.get("data", {}), raw.get("model", {}), raw.get("train", {})
        if "name" not in data or "arch" not in model:
            raise XaikitConfigError(f"{source}: needs [data] name = ... and [model] arch = ...")
        train_options = dict(train.get("options", {}))
        scheduler = train_options.get("scheduler")
        if isinstance(scheduler, str) and scheduler.lower() == "none":  # TOML has no null
            train_options["scheduler"] = None
        return cls(
            data=data["name"],
            model=model["arch"],
            epochs=int(train.get("epochs", 10)),
            data_options=dict(data.get("options", {})),
            test_options=dict(data.get("test_options", {})),
            val_fraction=float(data.get("val_fraction", 0.1)),
            model_options=dict(model.get("options", {})),
            train_options=train_options,
        )

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Recipe:
        """Read a TOML recipe: a regular file of at most 16 MiB, checked field by field."""
        raw = read_document(path, what="recipe", kind="toml", error=XaikitConfigError)
        return cls.from_dict(raw, str(path))

    def check(self, source: str = "recipe") -> None:
        """Check every field (after flags were laid over a recipe, or for one built in
        code); raises :class:`~xaikit.errors.XaikitConfigError` naming the field."""
        check(self.to_dict(), RECIPE_SPEC, where=source, style="toml")

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": {
                "name": self.data,
                "options": self.data_options,
                "test_options": self.test_options,
                "val_fraction": self.val_fraction,
            },
            "model": {"arch": self.model, "options": self.model_options},
            "train": {"epochs": self.epochs, "options": self.train_options},
        }


@dataclass
class TrainingRun:
    """What :func:`train_recipe` produced."""

    model: torch.nn.Module
    metrics: dict[str, Any]
    checkpoint: Path
    history_files: dict[str, Path]
    #: which epoch the saved model is and why (see :meth:`xaikit.train.Trainer.selection`;
    #: ``monitor`` is ``None`` when there was no validation data and the last epoch is kept).
    selection: dict[str, Any] | None = None
    #: ``<out>/split.json`` for a data set that lists its splits' files, else ``None``.
    split_file: Path | None = None
    #: ``"image"``, ``"signal"`` or ``"sequence"``: what the test samples are.
    input_kind: str | None = None


def _split(dataset: Any, fraction: float, seed: int) -> tuple[Any, Any | None]:
    if not 0.0 <= fraction < 1.0:
        raise XaikitConfigError(f"val_fraction must be in [0, 1), got {fraction}")
    n_val = round(len(dataset) * fraction)
    if n_val == 0:
        return dataset, None
    generator = torch.Generator().manual_seed(seed)
    train, val = random_split(dataset, [len(dataset) - n_val, n_val], generator=generator)
    return train, val


def data_options(recipe: Recipe, seed: int) -> dict[str, Any]:
    """The options the data set is loaded with: the recipe's, plus for a data set with its own
    validation split (an image folder) the run's ``seed`` for the split and ``normalize``."""
    from xaikit.data.registry import dataset_info, dataset_splits

    options = dict(recipe.data_options)
    if "val" in dataset_splits(recipe.data):
        accepted = inspect.signature(dataset_info(recipe.data).loader).parameters
        if "seed" in accepted:
            options.setdefault("seed", seed)
        if "normalize" in accepted:
            options.setdefault("normalize", True)
    return options


def _check_classes(name: str, dataset: Any) -> None:
    """A multi-class data set needs two classes or more; say which one there is, and how many
    images it has, before any training."""
    classes = list(getattr(dataset, "classes", []) or [])
    if getattr(dataset, "task", None) != "multiclass" or len(classes) >= 2:
        return
    layout = getattr(dataset, "layout", None)
    if layout is not None:  # an image folder: count every split's images
        counts = {c: sum(per[c] for per in layout.counts().values()) for c in classes}
    else:
        found = torch.bincount(dataset.targets, minlength=len(classes)).tolist()
        counts = dict(zip(classes, found))
    listed = ", ".join(f"{c!r}: {n} images" for c, n in counts.items()) or "none"
    raise DataError(
        f"data set {name!r} has {len(classes)} class{'' if len(classes) == 1 else 'es'} "
        f"({listed}); training a classifier needs at least 2 (an image folder needs one "
        "subfolder per class)"
    )


def _split_files(path: Path) -> Any:
    """The ``files`` of a ``split.json`` (``None`` if it cannot be read)."""
    try:
        return read_document(path, what="split list", error=DataError).get("files")
    except (DataError, AttributeError):
        return None


def build_model(recipe: Recipe, dataset: Any, seed: int = 0) -> torch.nn.Module:
    """The recipe's architecture, sized for ``dataset`` (classes, task, input channels), with
    initial weights drawn from ``seed`` (the global RNG is left as it was)."""
    options = dict(recipe.model_options)
    sample = dataset[0][0]
    kind = arch_info(recipe.model).input_kind if ":" not in recipe.model else "image"
    options.setdefault("num_classes", len(dataset.classes))
    options.setdefault("task", dataset.task)
    channels = sample.shape[-1] if kind == "sequence" else sample.shape[0]
    options.setdefault("in_channels", int(channels))
    if kind in ("image", "signal") and ":" not in recipe.model:
        options.setdefault("input_size", int(sample.shape[-1]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(recipe.model, **options)


def train_recipe(
    recipe: Recipe,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    device: str = "auto",
    quiet: bool = False,
) -> TrainingRun:
    """Train ``recipe`` into ``out``: ``best``/``last`` checkpoints during training, then the
    chosen model (the best validation epoch) as ``model`` with its test metrics in the card,
    ``history.csv``/``.json``, ``curves.png`` and ``metrics.json``.

    ``resume=True`` continues from ``out/last`` exactly where it stopped.

    Under torchrun every rank calls it: the ranks train together (see
    :class:`~xaikit.train.Trainer`) and evaluate the test split together; rank 0 alone
    writes into ``out``, and every rank returns once the files are there. The cards record
    ``world_size``, the number of processes.
    """
    from xaikit.data import load
    from xaikit.data.registry import dataset_splits
    from xaikit.distributed import current
    from xaikit.train.trainer import Trainer

    out = Path(out)
    group = current()
    recipe.check()  # flags laid over a recipe, or a recipe built in code, are checked too
    seed = int(recipe.train_options.get("seed", 0))
    options = data_options(recipe, seed)
    full_train = load(recipe.data, "train", **options)
    _check_classes(recipe.data, full_train)
    test = load(recipe.data, "test", **{**options, **recipe.test_options})
    if "val" in dataset_splits(recipe.data):
        # The data set's own validation split: disjoint from train and test by construction.
        train, val = full_train, load(recipe.data, "val", **options)
        val = val if len(val) else None
    else:
        train, val = _split(full_train, recipe.val_fraction, seed)
    model = build_model(recipe, full_train, seed)
    card: dict[str, Any] = {
        "data": {"name": recipe.data, "options": options},
        "recipe": recipe.to_dict(),
        "seed": seed,
        # Written here for every architecture: the Trainer can only tell a zoo head's width,
        # so a torchvision or timm model used to lose its class names.
        "normalization": getattr(full_train, "normalization", None),
        "world_size": group.world,
    }
    classes = list(getattr(full_train, "classes", []) or [])
    if classes and getattr(model, "spec", {}).get("num_classes") == len(classes):
        card["class_names"] = classes
    trainer = Trainer(
        model,
        **{"device": device, "quiet": quiet, **recipe.train_options},
        checkpoint_dir=out,
        card=card,
    )
    last = out / "last.safetensors"
    if resume and group.is_main:
        commit_staged(out)  # finish a checkpoint whose commit a crash cut short
    if resume and group.distributed:
        group.agree()  # the other ranks look for `last` once rank 0 has completed it
    if resume and not last.exists():
        raise XaikitConfigError(f"--resume: no checkpoint to resume from in {out}")
    split_file = None
    if hasattr(full_train, "split_manifest"):
        # Written once every setting is checked (nothing is left behind by a bad flag) and
        # before the first epoch, so the split can be looked at while training runs.
        split_file = out / "split.json"
        manifest = full_train.split_manifest()
        if resume and split_file.is_file() and _split_files(split_file) != manifest["files"]:
            # Going on with other files would train on images the first epochs held out.
            raise XaikitConfigError(
                f"--resume: the train/val/test files differ from those in {split_file} (the "
                "seed, fractions or the folder changed); resume with the settings the run "
                "started with"
            )
        if group.is_main:
            atomic_write_json(split_file, manifest)
    trainer.fit(train, val, epochs=recipe.epochs, resume=out / "last" if resume else None)
    history_files = trainer.save_history(out)
    chosen = trainer.best_checkpoint if val is not None else trainer.last_checkpoint
    selection = trainer.selection() if val is not None and chosen is not None else None
    if selection is None:  # no validation data (or no usable value): the last epoch
        selection = {"epoch": trainer.epoch, "of": trainer.epoch, "monitor": None}
    if chosen is not None:
        model, chosen_card = load_model(chosen, device=trainer.device)
        card = {**chosen_card, **card}
    trainer_eval = copy.copy(trainer)
    trainer_eval.model = model
    results = trainer_eval.evaluate(test)
    task = trainer.task.name
    metrics = {f"test_{k}": results[k] for k in FINAL_METRICS.get(task, ()) if k in results}
    metrics["test_loss"] = results.get("loss")
    metrics["test_samples"] = len(test)  # what every test_* figure was measured on
    metrics["epochs"] = trainer.epoch
    for key in ("confusion_matrix", "per_class_accuracy", "per_class_ap"):
        if key in results:
            metrics[f"test_{key}"] = results[key]
    keep = {
        k: v
        for k, v in card.items()
        if k not in ("format", "format_version", "architecture", "config", "task", "weights_file")
        and k not in ("weights_sha256", "xaikit_version", "torch_version", "created", "metrics")
    }
    checkpoint = out / "model.safetensors"
    if group.is_main:
        checkpoint = save_model(
            model, out / "model", **{**keep, "metrics": metrics, "selection": selection}
        )
        atomic_write_json(out / "metrics.json", metrics)
    if group.distributed:
        group.agree()  # every rank returns with the files written
    kind = getattr(test, "input_kind", None)
    return TrainingRun(model, metrics, checkpoint, history_files, selection, split_file, kind)
