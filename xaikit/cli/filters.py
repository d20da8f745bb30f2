"""``xaikit filters``: inspect a model's learned filters and write PNG grids plus a JSON index.

Modes: ``weights`` (kernel grid), ``activations`` (feature maps of data set inputs),
``maximize`` (activation maximization; ``--param maco`` for MACO with ``--spectrum-from``),
``accentuate`` (feature accentuation of data set images), ``exemplars`` (top data set inputs
per channel, with receptive-field crops), ``atlas`` (all three per channel, PNG and a
standalone HTML page) and ``concepts`` (NMF concepts: DFF or CRAFT, with exemplars,
importance and a reloadable concept bank).
Every file is written atomically; ``index.json`` lists them with the numbers behind them.
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xaikit.cli._common import (
    add_data_option_argument,
    add_device_argument,
    add_model_argument,
    card_size,
    cli_device,
    data_options,
    load_cli_model,
)
from xaikit.errors import XaikitConfigError
from xaikit.io import atomic_write_bytes, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from torch.utils.data import Dataset

# torch, xaikit.data and xaikit.filters (matplotlib) are imported inside the functions that
# use them, so that building the parser and `xaikit filters --help` stay fast.

NAME = "filters"
HELP = "inspect learned filters: kernels, feature maps, maximization, exemplars, atlas"
MODES = ("weights", "activations", "maximize", "accentuate", "exemplars", "atlas", "concepts")
NEEDS_DATA = ("activations", "accentuate", "exemplars", "atlas", "concepts")
#: Modes whose data set pass is split over the ranks of ``torchrun`` (each rank streams its
#: shard, the per-channel top-k are merged); the others run on rank 0 alone.
SPLIT_MODES = ("exemplars", "atlas")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser, seed=False)  # --seed below seeds random weights too
    parser.add_argument(
        "--layer",
        "-l",
        default=None,
        metavar="L",
        help="layer name (see `xaikit layers`); default: the first convolution for weights, "
        "the default CAM layer ('auto') otherwise",
    )
    parser.add_argument("--mode", required=True, choices=MODES, help="what to inspect")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--data",
        "-d",
        metavar="D",
        help="data set name (test split) for activations, accentuate, exemplars, atlas, concepts",
    )
    add_data_option_argument(parser)
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help="data set inputs to use (default: all; 4 for activations)",
    )
    parser.add_argument(
        "--channels",
        metavar="LIST",
        help="channels, e.g. 0,3,8-11, or 'all' (default: all; for maximize and atlas the 8 "
        "most active on a probe batch of --data, or of seeded noise without --data)",
    )
    parser.add_argument("--steps", type=int, default=256, help="maximization steps (256)")
    parser.add_argument("--seed", type=int, default=0, help="maximization seed (0)")
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        metavar="PX",
        help="image size: --data images are resized to it and maximization images have it "
        "(default: the model card's input size)",
    )
    parser.add_argument(
        "--param",
        choices=("fourier", "pixel", "maco"),
        default="fourier",
        help="maximize: image parametrization; maco = phase-only under a fixed natural-image "
        "magnitude, with a transparency map (Fel et al. 2023) (fourier)",
    )
    parser.add_argument(
        "--spectrum-from",
        metavar="D",
        default=None,
        help="maco: estimate the magnitude spectrum from a folder of images or a data set "
        "name (cached in $XAIKIT_CACHE, else ~/.cache/xaikit); default: a spectrum of "
        "matplotlib's sample photograph",
    )
    parser.add_argument(
        "--canvas",
        type=int,
        default=None,
        metavar="PX",
        help="maco: side of the optimized image (default: 4 x the model input size)",
    )
    parser.add_argument(
        "--penalty",
        type=float,
        default=1.0,
        help="accentuate: weight of the distance to the original image (1.0)",
    )
    parser.add_argument(
        "--concept-method",
        choices=("dff", "craft"),
        default="craft",
        help="concepts: NMF over positions (dff) or over image crops (craft) (craft)",
    )
    parser.add_argument(
        "--concept-baseline",
        choices=("min", "median", "zero"),
        default=None,
        help="concepts: per-channel offset before the NMF; median keeps the background out "
        "of the concepts (default: min for dff, zero for craft)",
    )
    parser.add_argument("--n-concepts", type=int, default=8, help="concepts: how many concepts (8)")
    parser.add_argument("--k", type=int, default=9, help="exemplars per channel (9)")
    parser.add_argument(
        "--rank-by",
        choices=("max", "mean"),
        default="max",
        help="exemplar score: a channel map's max or mean (max)",
    )
    parser.add_argument(
        "--kernel-view",
        default="auto",
        choices=("auto", "rgb", "all", "l2", "strongest", "mean"),
        help="how input channels of a kernel are shown (auto)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="inputs per batch (64)")
    add_device_argument(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    parser.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="run even when the estimate is over the limits (see xaikit.estimates)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="maximize / accentuate: keep the renders the journal in --out records as "
        "finished; exemplars: continue an interrupted pass from its saved state; atlas: both; "
        "concepts: reuse the concept bank saved in --out when its settings match",
    )


def load(name: str, split: str = "train", **options: Any) -> Dataset:
    """:func:`xaikit.data.load`, imported on the first call.

    A name of this module (not a local import in :func:`_dataset`) so that a test can give
    the command a data set of its own.
    """
    from xaikit.data import load as load_dataset

    return load_dataset(name, split, **options)


def parse_channels(text: str | None) -> list[int] | None:
    """``"0,3,8-11"`` -> ``[0, 3, 8, 9, 10, 11]``; ``None`` -> ``None`` (all)."""
    if text is None:
        return None
    channels: list[int] = []
    try:
        for part in text.split(","):
            low, dash, high = part.strip().partition("-")
            if dash:
                channels.extend(range(int(low), int(high) + 1))
            else:
                channels.append(int(low))
    except ValueError:
        raise XaikitConfigError(
            f"--channels must be indices and ranges like 0,3,8-11; got {text!r}"
        ) from None
    if not channels or min(channels) < 0:
        raise XaikitConfigError(f"--channels must list non-negative indices; got {text!r}")
    return channels


def _dataset(
    name: str | None,
    mode: str,
    n: int | None,
    *,
    size: int | None = None,
    pairs: list[str] | None = None,
) -> Dataset | None:
    """The test split of ``--data`` with images at ``size`` (the model's input size) and the
    ``--data-option`` pairs, its first ``n`` items when ``n`` is given."""
    from torch.utils.data import Subset

    if name is None:
        if mode in NEEDS_DATA:
            raise XaikitConfigError(f"--mode {mode} needs --data (a data set name, e.g. shapes)")
        if pairs:
            raise XaikitConfigError("--data-option needs --data")
        return None
    dataset = load(name, split="test", **data_options(name, pairs or [], size=size))
    if n is not None:
        if n < 1:
            raise XaikitConfigError(f"--n must be positive, got {n}")
        dataset = Subset(dataset, range(min(n, len(dataset))))
    return dataset


def _normalization(card: dict[str, Any], dataset: Dataset | None) -> Any:
    """The model card's normalization; without one in the card, the data set's."""
    from torch.utils.data import Subset

    if "normalization" in card:
        return card["normalization"]
    source = dataset.dataset if isinstance(dataset, Subset) else dataset
    return getattr(source, "normalization", None)


def _size(card: dict[str, Any], override: int | None) -> int | None:
    if override is not None:
        return override
    shape = card.get("input_shape")
    return int(shape[-1]) if shape else None


def _refused(estimate: Any, yes: bool, hint: str) -> bool:
    """Print a long run's estimate (:mod:`xaikit.estimates`) and, past the limits without
    ``--yes``, the one-line refusal; whether the run is refused."""
    if estimate.notable() or estimate.over():
        print(estimate.line(), file=sys.stderr)
    refusal = estimate.refusal(yes, hint)
    if refusal is not None:
        print(refusal, file=sys.stderr)
    return refusal is not None


def _write_png(out: Path, name: str, data: bytes, files: list[str]) -> None:
    atomic_write_bytes(out / name, data)
    files.append(name)


def _maximize(
    args: argparse.Namespace,
    model: Any,
    card: dict[str, Any],
    layer: str,
    channels: list[int] | None,
    dataset: Dataset | None,
    normalization: Any,
    quiet: bool | None,
) -> tuple[Any, list[str]] | None:
    """``--mode maximize``: choose the channels (default: the most active), print the
    estimate (timed on a one-step probe), refuse past the limits without ``--yes`` (``None``),
    else render batch by batch into ``--out`` with a resumable journal."""
    import time

    import torch

    from xaikit.estimates import maximize_estimate
    from xaikit.filters._common import fetch_inputs, input_spec
    from xaikit.filters.activations import activations
    from xaikit.filters.maximize import (
        DEFAULT_CHANNELS,
        maximize,
        maximize_into,
        most_active_channels,
        probe_inputs,
    )

    size = _size(card, args.size)
    if args.channels is None:
        if dataset is not None:
            probe = fetch_inputs(dataset, range(min(16, len(dataset))))
        else:
            probe = probe_inputs(model, size, seed=args.seed)
        channels = most_active_channels(
            model, layer, probe, DEFAULT_CHANNELS, normalization=normalization
        )
        source = "the data" if dataset is not None else "seeded noise"
        print(
            f"maximize: the {len(channels)} most active channels on {source}: {channels} "
            "(--channels all for every channel)",
            file=sys.stderr,
        )
    elif channels is None:
        spec = input_spec(model, size=size)
        example = torch.zeros(1, spec.channels, *([spec.size or 1] * spec.dims))
        maps = activations(model, example, layer)
        channels = list(range(next(iter(maps.values())).shape[1]))
    spec = input_spec(model, size=size)
    options = {"steps": args.steps, "size": size, "seed": args.seed, "normalization": normalization}
    if args.param != "fourier":
        options["param"] = args.param
    if args.param == "maco":
        options["canvas"] = args.canvas
        if args.spectrum_from is not None:
            canvas = args.canvas or 4 * int(spec.size or 1)
            options["spectrum"] = _spectrum(args.spectrum_from, canvas, spec.channels, args)
    seconds = None
    if args.steps > 0 and channels:
        start = time.perf_counter()
        maximize(model, layer, channels[: args.batch_size], **{**options, "steps": 1}, quiet=True)
        # the probe is one step plus the initial and final scoring: about two steps' worth
        seconds = (time.perf_counter() - start) / 2
    estimate = maximize_estimate(
        len(channels),
        args.batch_size,
        args.steps,
        spec.size or 1,
        in_channels=spec.channels,
        seconds_per_step=seconds,
    )
    if _refused(estimate, args.yes, "or choose fewer --channels / --steps"):
        return None
    header = {
        "model": args.model,
        "layer": args.layer,
        "steps": args.steps,
        "seed": args.seed,
        "size": size,
        "normalization": normalization,
    }
    if args.param != "fourier":
        header.update(param=args.param, canvas=args.canvas, spectrum_from=args.spectrum_from)
    return maximize_into(
        Path(args.out),
        model,
        layer,
        channels,
        header=header,
        resume=args.resume,
        batch_size=args.batch_size,
        quiet=quiet,
        **options,
    )


def _spectrum(source: str, canvas: int, channels: int, args: argparse.Namespace) -> Any:
    """``--spectrum-from``: a folder of images, else a data set name (its train split,
    resized to the canvas); cached by :func:`xaikit.filters.spectrum.spectrum_from`."""
    from xaikit.filters.spectrum import spectrum_from

    if Path(source).is_dir():
        return spectrum_from(source, canvas, channels=channels, n=args.n)
    from torch.utils.data import Subset

    dataset = load(source, split="train", **data_options(source, [], size=canvas))
    if args.n is not None:
        dataset = Subset(dataset, range(min(args.n, len(dataset))))
    key = f"data:{source}:train:n={args.n}:size={canvas}"
    return spectrum_from(dataset, canvas, channels=channels, key=key)


def _accentuate(
    args: argparse.Namespace,
    model: Any,
    layer: str,
    channels: list[int] | None,
    dataset: Dataset,
    normalization: Any,
    size: int | None,
    quiet: bool | None,
) -> tuple[Any, list[str]] | None:
    """``--mode accentuate``: the first ``--n`` (4) data images, each accentuated towards
    each of ``--channels`` (default: its own most active channel). Prints the estimate (timed
    on a one-step probe) and refuses past the limits without ``--yes`` (``None``); else
    renders batch by batch into ``--out`` with a journal ``--resume`` continues."""
    import dataclasses
    import time

    from xaikit.estimates import maximize_estimate
    from xaikit.filters._common import fetch_inputs
    from xaikit.filters.accentuation_runs import accentuate_into
    from xaikit.filters.maximize import maximize, most_active_channels

    count = min(args.n or 4, len(dataset))
    images = fetch_inputs(dataset, range(count))
    if channels is None:
        units = [
            most_active_channels(model, layer, images[i : i + 1], 1, normalization=normalization)[0]
            for i in range(count)
        ]
        starts = images
    else:
        units = [c for _ in range(count) for c in channels]
        starts = images.repeat_interleave(len(channels), dim=0)
    options = {
        "steps": args.steps,
        "seed": args.seed,
        "size": size,
        "normalization": normalization,
        "penalty": args.penalty,
    }
    seconds = None
    if args.steps > 0 and units:
        probe = min(len(units), args.batch_size)
        start = time.perf_counter()
        maximize(model, layer, units[:probe], start=starts[:probe], **{**options, "steps": 1})
        seconds = (time.perf_counter() - start) / 2  # one step plus the two scorings
    side = int(starts.shape[-1])
    estimate = maximize_estimate(
        len(units),
        args.batch_size,
        args.steps,
        side,
        in_channels=int(starts.shape[1]),
        seconds_per_step=seconds,
    )
    estimate = dataclasses.replace(estimate, what="accentuate")
    if _refused(estimate, args.yes, "or choose fewer --n / --channels / --steps"):
        return None
    header = {
        "model": args.model,
        "layer": args.layer,
        "data": args.data,
        "images": count,
        "units": units,
        "steps": args.steps,
        "seed": args.seed,
        "size": size,
        "penalty": args.penalty,
        "normalization": normalization,
    }
    return accentuate_into(
        Path(args.out),
        model,
        layer,
        units,
        starts,
        header=header,
        resume=args.resume,
        batch_size=args.batch_size,
        quiet=quiet,
        **options,
    )


#: The settings of a concepts run, beside its bank: ``--resume`` reuses the bank only when
#: they match.
CONCEPTS_RUN = "concepts.run.json"


def _concepts(
    args: argparse.Namespace,
    model: Any,
    layer: str,
    dataset: Dataset,
    normalization: Any,
    size: int | None,
    quiet: bool | None,
    out: Path,
) -> Any:
    """``--mode concepts``: with ``--resume`` and a bank in ``--out`` saved with the same
    settings, that bank; else the estimate (timed on a probe batch and one maximization
    step), refused past the limits without ``--yes`` (``None``), then the concepts, the
    bank saved with its settings before anything else is drawn."""
    import json
    import time

    import torch

    from xaikit.errors import XaikitConfigError, XaikitError
    from xaikit.estimates import concepts_estimate
    from xaikit.filters._common import fetch_inputs
    from xaikit.filters.concepts import ConceptBank, concepts
    from xaikit.filters.maximize import maximize
    from xaikit.io import atomic_write_json, read_document

    settings = {
        "model": args.model,
        "layer": args.layer,
        "data": args.data,
        "images": len(dataset),
        "n_concepts": args.n_concepts,
        "method": args.concept_method,
        "baseline": args.concept_baseline,
        "k": min(args.k, len(dataset)),
        "steps": args.steps,
        "seed": args.seed,
        "size": size,
        "normalization": normalization,
        "batch_size": args.batch_size,
    }
    record = out / CONCEPTS_RUN
    if not args.resume:
        # The record vouches for the bank beside it: gone before a new bank is written, so a
        # run killed halfway never leaves another run's settings next to its bank.
        record.unlink(missing_ok=True)
    if args.resume and record.is_file():
        document = read_document(record, what="concepts run record")
        before = document.get("settings") if isinstance(document, dict) else None
        if before != json.loads(json.dumps(settings)):
            raise XaikitConfigError(
                f"cannot resume: {record} was written with other settings ({before}); "
                "rerun without --resume, or use another --out"
            )
        try:
            bank = ConceptBank.load(out)
        except (XaikitError, OSError, ValueError, KeyError, TypeError):
            bank = None  # a bank cut short by a kill, or edited: computed again
        if bank is not None:
            print(
                f"concepts: the bank in {out} was made with these settings; reusing it (--resume)",
                file=sys.stderr,
            )
            return bank
    probe = fetch_inputs(dataset, range(min(args.batch_size, len(dataset))))
    parameter = next(model.parameters())
    start = time.perf_counter()
    x = probe.to(parameter.device, parameter.dtype).requires_grad_(True)
    torch.autograd.grad(model(x).sum(), x)  # the input's gradient only: the model keeps .grad
    per_batch = time.perf_counter() - start
    per_step = None
    if args.steps > 0:
        start = time.perf_counter()
        maximize(
            model,
            layer,
            list(range(args.n_concepts)),
            steps=1,
            seed=args.seed,
            size=size,
            normalization=normalization,
            quiet=True,
        )
        per_step = (time.perf_counter() - start) / 2
    estimate = concepts_estimate(
        args.n_concepts,
        len(dataset),
        args.batch_size,
        args.steps,
        int(probe.shape[-1]),
        in_channels=int(probe.shape[1]),
        seconds_per_batch=per_batch,
        seconds_per_step=per_step,
    )
    if _refused(estimate, args.yes, "or choose fewer --n / --n-concepts / --steps"):
        return None
    del x, probe
    bank = concepts(
        model,
        layer,
        dataset,
        n_concepts=args.n_concepts,
        method=args.concept_method,
        baseline=args.concept_baseline,
        k=min(args.k, len(dataset)),
        steps=args.steps,
        seed=args.seed,
        normalization=normalization,
        batch_size=args.batch_size,
        quiet=quiet,
    )
    bank.save(out)  # the bank first: a kill while drawing keeps it for --resume
    atomic_write_json(record, {"settings": settings})
    return bank


def run(args: argparse.Namespace) -> int:
    """Refuse an unusable ``--out`` and hold its lock, before any work; then run."""
    from xaikit.io import check_out, lock_out

    check_out(args.out)
    with lock_out(args.out, "filters"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from xaikit.distributed import alone, current

    group = current()
    if group.distributed and args.mode not in SPLIT_MODES:
        if not group.is_main:
            return 0  # rank 0 runs this mode; the command line's last meeting waits for it
        with alone():  # rank 0 alone: no library call may wait for the other ranks
            return _run_mode(args)
    return _run_mode(args)


def _run_mode(args: argparse.Namespace) -> int:
    from xaikit.distributed import current
    from xaikit.filters import activations, atlas, exemplars, weights
    from xaikit.filters._common import fetch_inputs
    from xaikit.filters._plot import figure_png, image_png

    group = current()
    channels = None if args.channels == "all" else parse_channels(args.channels)
    model, card = load_cli_model(args, device=cli_device(args.device))
    size = card_size(card, args.size)
    dataset = _dataset(args.data, args.mode, args.n, size=size, pairs=args.data_option)
    normalization = _normalization(card, dataset)
    out = Path(args.out)
    files: list[str] = []
    index: dict[str, Any] = {
        "mode": args.mode,
        "model": args.model,
        "data": args.data,
        "size": size,
        "normalization": normalization,
    }
    layer = args.layer if args.layer is not None or args.mode == "weights" else "auto"
    quiet = True if args.quiet else None

    if args.mode == "weights":
        kernels = weights(model, layer, reduce=args.kernel_view)
        _write_png(out, "weights.png", figure_png(kernels.figure), files)
        _write_png(out, "weights_grid.png", image_png(kernels.grid, min_side=256), files)
        index.update(
            layer=kernels.layer,
            view=kernels.reduce,
            kernels=int(kernels.weight.shape[0]),
            kernel_shape=list(kernels.weight.shape[1:]),
            labels=kernels.labels,
        )
    elif args.mode == "activations":
        count = min(args.n or 4, len(dataset))
        inputs = fetch_inputs(dataset, range(count))
        maps = activations(model, inputs, layer, normalization=normalization)
        name = next(iter(maps))
        rows = []
        for i in range(count):
            _write_png(out, f"activations_{i:04d}.png", figure_png(maps.figure(name, i)), files)
            means = maps.channel_means(name, i)
            rows.append(
                {
                    "input": i,
                    "order": maps.order(name, i).tolist(),
                    "channel_means": [round(float(v), 6) for v in means],
                }
            )
        index.update(layer=name, shape=list(maps[name].shape[1:]), inputs=rows)
    elif args.mode == "maximize":
        result = _maximize(args, model, card, layer, channels, dataset, normalization, quiet)
        if result is None:
            return 2
        result, written = result
        files.extend(name for name in written if name.endswith(".png"))
        _write_png(out, "maximize.png", figure_png(result.figure), files)
        index["arrays"] = [name for name in written if name.endswith(".npy")]
        index.update(
            layer=result.layer, steps=args.steps, seed=args.seed, channels=result.summary()
        )
    elif args.mode == "accentuate":
        rendered = _accentuate(args, model, layer, channels, dataset, normalization, size, quiet)
        if rendered is None:
            return 2
        result, written = rendered
        files.extend(name for name in written if name.endswith(".png"))
        _write_png(out, "accentuate.png", figure_png(result.figure), files)
        index["arrays"] = [name for name in written if name.endswith(".npy")]
        index.update(
            layer=result.layer,
            steps=args.steps,
            seed=args.seed,
            penalty=args.penalty,
            regularizer="penalty * mean((x - x0)^2), normalized input space (horama)",
            channels=result.summary(),
        )
    elif args.mode == "concepts":
        from xaikit.filters.concepts import concepts_into

        bank = _concepts(args, model, layer, dataset, normalization, size, quiet, out)
        if bank is None:
            return 2
        written = concepts_into(out, bank, saved=True)
        files.append(CONCEPTS_RUN)
        files.extend(name for name in written if name.endswith(".png"))
        index["bank"] = [name for name in written if not name.endswith(".png")]
        index.update(bank.summary())
    elif args.mode == "exemplars":
        found = exemplars(
            model,
            layer,
            dataset,
            min(args.k, len(dataset)),
            channels=channels,
            reduce=args.rank_by,
            batch_size=args.batch_size,
            normalization=normalization,
            quiet=quiet,
            state_dir=out,  # an interrupted pass saves its running top-k: --resume goes on
            header={"model": args.model, "data": args.data, "n": args.n, "norm": normalization},
            resume=args.resume,
        )
        if not group.is_main:
            return 0  # the merged top-k is rank 0's to write
        _write_png(out, "exemplars.png", figure_png(found.figure), files)
        field = found.receptive_field
        index.update(
            layer=found.layer,
            rank_by=found.reduce,
            receptive_field=None
            if field is None
            else {"size": field.size, "jump": field.jump, "start": field.start},
            channels=[
                {
                    "channel": c,
                    "indices": found.indices[row].tolist(),
                    "values": [round(float(v), 6) for v in found.values[row]],
                    "boxes": found.boxes[row].tolist() if found.boxes is not None else None,
                }
                for row, c in enumerate(found.channels)
            ],
        )
    else:
        if args.channels is None:
            # An atlas maximizes every channel it shows: the same handful as maximize.
            from xaikit.filters._common import fetch_inputs
            from xaikit.filters.maximize import DEFAULT_CHANNELS, most_active_channels

            probe = fetch_inputs(dataset, range(min(16, len(dataset))))
            channels = most_active_channels(
                model, layer, probe, DEFAULT_CHANNELS, normalization=normalization
            )
            print(
                f"atlas: the {len(channels)} most active channels on the data: {channels} "
                "(--channels all for every channel)",
                file=sys.stderr,
            )
        result = atlas(
            model,
            layer,
            dataset,
            channels,
            k=min(args.k, len(dataset)),
            steps=args.steps,
            size=args.size,
            seed=args.seed,
            normalization=normalization,
            batch_size=args.batch_size,
            quiet=quiet,
            state_dir=out,  # exemplar state and maximize/ journal: --resume goes on
            header={"model": args.model, "data": args.data, "n": args.n},
            resume=args.resume,
        )
        if not group.is_main:
            return 0  # rank 0 maximized and writes
        _write_png(out, "atlas.png", figure_png(result.figure), files)
        title = html.escape(f"xaikit filters: {args.model} {result.layer}")
        page = (
            f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
            f"<title>{title}</title></head>\n<body>\n{result.html()}</body>\n</html>\n"
        )
        atomic_write_text(out / "atlas.html", page)
        files.append("atlas.html")
        index.update(
            layer=result.layer,
            channels=[
                {**row, "exemplars": result.exemplars.indices[i].tolist()}
                for i, row in enumerate(result.maximization.summary())
            ],
        )
    index["files"] = files
    atomic_write_json(out / "index.json", index)
    print(f"wrote {len(files) + 1} files to {out} (index.json lists them)")
    return 0
