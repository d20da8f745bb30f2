"""Pieces every metric shares: input checks, targets, class probabilities, batched forwards."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from xaikit.data.normalization import normalize
from xaikit.errors import XaikitConfigError
from xaikit.evaluate.baselines import BASELINES
from xaikit.explain.adapter import select_output
from xaikit.explain.api import explain
from xaikit.explain.engine import METHODS
from xaikit.explain.state import borrowed, model_device
from xaikit.zoo.heads import Task, get_task

#: ``int``, ``"predicted"``, or per-input class indices ``(N,)`` (``(N, K)`` for K maps each).
TargetSpec = int | str | Sequence[int] | torch.Tensor
Normalization = Mapping[str, Sequence[float]]


def is_quiet(quiet: bool | None) -> bool:
    """``quiet`` if given, else whether ``$XAIKIT_QUIET`` is set to ``1``."""
    return bool(quiet) if quiet is not None else os.environ.get("XAIKIT_QUIET") == "1"


def check_inputs(inputs: torch.Tensor) -> None:
    """Inputs must be a floating batch ``(N, C, *S)`` with at least one spatial axis."""
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 3:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise XaikitConfigError(
            f"inputs must be a tensor batch shaped (N, C, H, W) or (N, C, L); got {shape}"
        )
    if not inputs.is_floating_point():
        raise XaikitConfigError(f"inputs must be floating point, got dtype {inputs.dtype}")
    if inputs.shape[0] == 0:
        raise XaikitConfigError("inputs is an empty batch (N = 0)")


def check_maps(maps: torch.Tensor, n: int, name: str = "heatmaps") -> None:
    """Maps must be ``(N, *S)`` or ``(N, K, *S)``-shaped finite tensors for ``n`` inputs."""
    if not isinstance(maps, torch.Tensor):
        raise XaikitConfigError(f"{name} must be a tensor, got {type(maps).__name__}")
    if maps.dim() < 2 or maps.shape[0] != n:
        raise XaikitConfigError(
            f"{name} must be shaped (N, H, W) or (N, K, H, W) with N = {n} (one per input); "
            f"got {tuple(maps.shape)}"
        )
    if not torch.isfinite(maps).all():
        raise XaikitConfigError(
            f"{name} contain NaN or infinite values; fix the explanation (e.g. "
            "torch.nan_to_num) before scoring it"
        )


def fit_maps(maps: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Resize ``(M, *s)`` maps to ``(M, *spatial)``: bilinear (linear for 1-D) upsampling.

    Maps already of the right size are returned unchanged (as float).
    """
    maps = maps.float()
    if tuple(maps.shape[1:]) == tuple(spatial):
        return maps
    if maps.dim() - 1 != len(spatial) or len(spatial) not in (1, 2):
        raise XaikitConfigError(
            f"heatmaps of shape {tuple(maps.shape[1:])} do not fit inputs with spatial shape "
            f"{tuple(spatial)}"
        )
    mode = "bilinear" if len(spatial) == 2 else "linear"
    return F.interpolate(maps[:, None], size=spatial, mode=mode, align_corners=False)[:, 0]


def model_inputs(x: torch.Tensor, normalization: Normalization | None) -> torch.Tensor:
    """What the model is fed: ``x`` normalized per channel when a normalization is given."""
    return x if normalization is None else normalize(x, normalization, channel_dim=1)


def num_outputs(model: nn.Module, example: torch.Tensor) -> int:
    """The width of the model's output ``(N, outputs)`` for ``example``."""
    head = getattr(model, "head", None)
    fc = getattr(head, "fc", None)
    if isinstance(fc, nn.Linear):
        return fc.out_features
    with borrowed(model), torch.no_grad():
        return int(model(example[:1]).shape[-1])


def class_probability(task: Task, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The probability of each row's target class: ``(B, C)`` logits, ``(B,)`` -> ``(B,)``.

    Softmax for multi-class heads, the label's sigmoid for multi-label heads; a binary head
    (one logit) gives ``p`` for target 1 and ``1 - p`` for target 0.
    """
    if logits.dim() != 2:
        raise XaikitConfigError(
            f"the model must output (N, classes) logits; got shape {tuple(logits.shape)}"
        )
    if task.name == "binary":
        p = logits[:, 0].sigmoid()
        return torch.where(target == 1, p, 1.0 - p)
    probs = task.probabilities(logits)
    return probs.gather(1, target[:, None].to(torch.long))[:, 0]


def iter_batches(total: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``batch_size`` covering ``range(total)``."""
    if batch_size < 1:
        raise XaikitConfigError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, total, batch_size):
        yield slice(start, min(start + batch_size, total))


def predict_logits(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    batch_size: int = 64,
    normalization: Normalization | None = None,
) -> torch.Tensor:
    """Logits ``(N, C)`` for raw ``inputs`` ``(N, C, *S)``, in eval mode, in batches."""
    device = model_device(model)
    outs = []
    with borrowed(model), torch.no_grad():
        for rows in iter_batches(inputs.shape[0], batch_size):
            outs.append(model(model_inputs(inputs[rows].to(device), normalization)))
    return torch.cat(outs)


def resolve_targets(
    model: nn.Module,
    inputs: torch.Tensor,
    target: TargetSpec,
    *,
    batch_size: int = 64,
    normalization: Normalization | None = None,
) -> torch.Tensor:
    """Turn a target spec into class indices on the model's device.

    ``int`` -> the same class for every input ``(N,)``; ``"predicted"`` -> the model's most
    probable class ``(N,)`` (for a multi-label head: its most confident label; for a binary
    head: the predicted 0/1); a sequence or tensor -> ``(N,)`` or ``(N, K)`` as given.

    Raises:
        XaikitConfigError: an unknown string, a wrong shape, or an index out of range.
    """
    n = inputs.shape[0]
    device = model_device(model)
    task = get_task(model)
    width = num_outputs(model, model_inputs(inputs[:1].to(device), normalization))
    classes = 2 if task.name == "binary" else width
    if isinstance(target, str):
        if target != "predicted":
            raise XaikitConfigError(
                f"target must be 'predicted', a class index or one index per input; got {target!r}"
            )
        logits = predict_logits(model, inputs, batch_size=batch_size, normalization=normalization)
        if task.name == "binary":
            return (logits[:, 0] >= 0).long()
        return logits.argmax(dim=1)
    if isinstance(target, bool):
        raise XaikitConfigError(f"target must be a class index, got {target!r}")
    if isinstance(target, int):
        out = torch.full((n,), target, dtype=torch.long, device=device)
    else:
        out = torch.as_tensor(target).to(device=device)
        if out.is_floating_point() or out.dtype == torch.bool:
            raise XaikitConfigError(f"target indices must be integers, got dtype {out.dtype}")
        out = out.long()
        if out.dim() not in (1, 2) or out.shape[0] != n:
            raise XaikitConfigError(
                f"target must hold one class index per input, (N,) or (N, K) with N = {n}; "
                f"got shape {tuple(out.shape)}"
            )
    if out.numel() and (out.min() < 0 or out.max() >= classes):
        raise XaikitConfigError(
            f"target class indices must lie in [0, {classes - 1}] for this model; got "
            f"{int(out.min())}..{int(out.max())}"
        )
    return out


#: ``explainer(model, inputs, target) -> maps``: inputs ``(N, C, H, W)`` as the model takes
#: them, ``target`` ``(N,)`` class indices, maps ``(N, H, W)``.
Explainer = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def make_explainer(
    method: str | Explainer, *, layer: str | nn.Module = "auto", **options: object
) -> Explainer:
    """A heatmap function for ``method``: a callable is returned as is; a name calls
    :func:`xaikit.explain.explain` (``method=``, ``target=``, ``layer=``, ``**options``), and
    ``"random"`` / ``"gaussian"`` give the model-independent baselines of
    :mod:`xaikit.evaluate.baselines`.
    """
    if callable(method):
        return method
    if not isinstance(method, str):
        raise XaikitConfigError(
            f"method must be a method name or a callable, got {type(method).__name__}"
        )
    if method in BASELINES:
        return BASELINES[method](**options)  # type: ignore[arg-type]
    if method not in METHODS:
        raise XaikitConfigError(
            f"unknown method {method!r}; choose from {', '.join([*METHODS, *BASELINES])} "
            "or pass a callable (model, inputs, target) -> maps"
        )

    def explainer(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kwargs = dict(options)
        if get_task(model).name == "binary":
            # The figures see a binary head as two classes (0: negative, 1: positive); its
            # one output z is explained as the scores (-z, z), so class 0 is explained too.
            kwargs["output"] = _two_class_output(kwargs.get("output"))
        return explain(model, inputs, method=method, target=target, layer=layer, **kwargs)

    explainer.__name__ = method
    return explainer


def _two_class_output(selector: object) -> Callable[[object], torch.Tensor]:
    """An ``output=`` selector giving a binary head's logit ``z`` as two scores ``(-z, z)``."""

    def two_class(output: object) -> torch.Tensor:
        z = select_output(output, selector)  # type: ignore[arg-type]
        z = z.reshape(z.shape[0], -1)[:, :1]
        return torch.cat([-z, z], dim=1)

    return two_class


def compute_maps(
    explainer: Explainer, model: nn.Module, x: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """``(N, *S)`` float maps from ``explainer(model, x, target)``, the model borrowed in eval
    mode meanwhile; NaN and infinities (0/0 normalization of a flat map) become 0."""
    with borrowed(model):
        maps = explainer(model, x, target)
    if not isinstance(maps, torch.Tensor) or maps.shape[0] != x.shape[0]:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise XaikitConfigError(
            f"the explainer must return one map per input, (N, H, W) with N = {x.shape[0]}; "
            f"got {shape}"
        )
    # A degenerate map (0/0 normalization of an all-zero map) counts as an all-zero map.
    return torch.nan_to_num(maps.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)


def layer_name(model: nn.Module, layer: str | nn.Module) -> str:
    """A layer given as a module of ``model`` becomes its dotted name, so that the same layer
    can be found in a deep copy of the model; names pass through."""
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name
        raise XaikitConfigError("the given layer module is not part of this model")
    return layer


def method_name(method: str | Explainer) -> str:
    """A display name for a method: the name itself, or the callable's ``__name__``."""
    return method if isinstance(method, str) else getattr(method, "__name__", "custom")
