"""CAM methods that run their own forward passes: Ablation-CAM and Smooth Grad-CAM++.

Both return channel weights ``(N, K, C)``; the engine turns them into maps
``sum_c w_c A_c`` (or, with ``eigen_smooth``, the first principal component of ``w_c A_c``).
SS-CAM and IS-CAM, Score-CAM variants, live in :mod:`xaikit.explain.scorecam`.

Ablation-CAM (Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional
Network via Gradient-free Localization", WACV 2020), as pytorch-grad-cam's ``AblationCAM``:
every channel ``c`` of the target layer is ablated in turn (set to 0, or, when the input's
activations are not all ``>= 0`` with minimum 0, to ``min(A) - 1e7`` as pytorch-grad-cam
does), the rest of the network is run on the ablated activations, and the weight is the
relative drop of the explained score ``w_c = (y - y_c) / y``. pytorch-grad-cam runs the whole
network once per ablated channel (in batches of 32 copies of the image); here the layer's
activations are computed once, and a forward hook on the layer replaces its output with a
batch of ``batch_size`` ablated copies (any mix of inputs and channels), so each forward
pass computes the layers before the target for one row only and every target's score is
read from the same passes.

Smooth Grad-CAM++ (Omeiza et al., "Smooth Grad-CAM++: An Enhanced Inference Level
Visualization Technique for Deep Convolutional Neural Network Models", arXiv:1908.01224,
2019): the gradients at the layer are averaged over ``num_samples`` noisy copies of the
input (Gaussian noise ``N(0, std^2)`` added to the input, as SmoothGrad and torchcam's
``SmoothGradCAMpp``); the mean first, second and third powers of the gradient give
Grad-CAM++'s coefficients ``alpha_ij = D2_ij / (2 D2_ij + sum_ab A_ab * D3_ij)`` (the paper's
eq., as xaikit's and pytorch-grad-cam's Grad-CAM++) and the weights
``w_c = sum_ij alpha_ij relu(D1_ij)``, with the clean input's activations ``A``.
``variant="torchcam"`` computes torchcam's ``SmoothGradCAMpp`` instead, which differs in
three places: the denominator's term is ``sum_ab A_ab * D3_ab`` (one number per channel),
the ReLU'd gradient is the last noisy sample's (not the mean), and the map weights the last
noisy sample's activations (not the clean ones).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from xaikit.errors import XaikitConfigError
from xaikit.explain.cam import GRADCAM_PP_EPS
from xaikit.explain.hooks import replace_first
from xaikit.explain.layouts import Layout

#: Ablations per forward pass (pytorch-grad-cam's default is 32).
ABLATION_BATCH_SIZE = 64
#: pytorch-grad-cam's ablation value below the minimum for layers with negative outputs.
ABLATION_VALUE = 1e7
#: Defaults of torchcam's ``SmoothGradCAMpp``.
SMOOTH_SAMPLES, SMOOTH_STD = 4, 0.3
#: torchcam's epsilon (``variant="torchcam"``).
SMOOTH_EPS = 1e-8
SMOOTH_VARIANTS = ("paper", "torchcam")


def _quiet(quiet: bool | None) -> bool:
    if quiet is None:
        return os.environ.get("XAIKIT_QUIET", "") not in ("", "0")
    return quiet


def channel_axis(layout: Layout, native: torch.Tensor) -> int:
    """The channel axis of the layer's native output ``(N, *native)``."""
    if layout.name == "nchw":
        return 1
    if layout.name in ("nhwc", "tokens"):
        return native.dim() - 1
    raise XaikitConfigError(
        "ablationcam cannot ablate channels of a layer read with a custom reshape; choose "
        "reshape='auto', 'nchw', 'nhwc' or 'tokens'"
    )


def ablation_weights(
    call: Callable[[torch.Tensor, torch.Tensor], Any],
    scores_of: Callable[[Any, int], torch.Tensor],
    module: nn.Module,
    x: torch.Tensor,
    native: torch.Tensor,
    layout: Layout,
    index: torch.Tensor,
    original: torch.Tensor,
    *,
    batch_size: int = ABLATION_BATCH_SIZE,
    one_row: bool = True,
    quiet: bool | None = None,
) -> torch.Tensor:
    """Ablation-CAM channel weights ``(N, K, C)``.

    Args:
        call: ``(x (M, ...), rows (M,)) -> model output`` (the adapter's ``call``).
        scores_of: ``(output, M) -> (M, num_outputs)`` explained scores.
        module: the target layer; a forward hook replaces its output during the passes.
        x: ``(N, C_in, *S)`` inputs.
        native: ``(N, *native)`` the layer's captured output (detached).
        layout: how ``native`` reads as a map (the channel axis).
        index: ``(N, K)`` target classes.
        original: ``(N, K)`` the unablated explained scores.
        batch_size: ablated copies per forward pass.
        one_row: run the layers before the target on one row per pass (the hook expands
            the batch); ``False`` runs them on every row (models whose other inputs carry
            the batch and are read after the layer).
        quiet: hide the progress bar (default ``$XAIKIT_QUIET``).
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise XaikitConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    axis = channel_axis(layout, native)
    n = native.shape[0]
    c = native.shape[axis]
    k = index.shape[1]
    flat_min = native.reshape(n, -1).amin(dim=1)
    value = torch.where(flat_min == 0, torch.zeros_like(flat_min), flat_min - ABLATION_VALUE)
    rows_all = torch.arange(n, device=x.device).repeat_interleave(c)
    chans_all = torch.arange(c, device=x.device).repeat(n)
    total = n * c
    ablated = torch.empty(total, k, device=x.device, dtype=torch.float32)
    state: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        return replace_first(output, state["batch"])

    # Chunks never span two inputs: with one row run before the layer, a tensor from before
    # it that is read after it (a residual branch) has batch 1 and broadcasts over the chunk,
    # which is right only when every row of the chunk is the same input.
    chunks = [
        (start, min(start + batch_size, (i + 1) * c))
        for i in range(n)
        for start in range(i * c, (i + 1) * c, batch_size)
    ]
    handle = module.register_forward_hook(hook)
    try:
        with (
            torch.no_grad(),
            tqdm(
                total=len(chunks),
                desc=f"ablation-cam ({total} ablations)",
                unit="batch",
                disable=True if _quiet(quiet) else None,
                leave=False,
            ) as bar,
        ):
            for start, stop in chunks:
                rows = rows_all[start:stop]
                chans = chans_all[start:stop]
                m = rows.shape[0]
                batch = native.index_select(0, rows).clone()
                moved = batch.movedim(axis, 1)  # a view: (M, C, ...)
                picked = torch.arange(m, device=x.device)
                moved[picked, chans] = (
                    value.index_select(0, rows)
                    .to(batch.dtype)
                    .reshape(m, *(1,) * (moved.dim() - 2))
                )
                state["batch"] = batch
                output = None
                if one_row:
                    first = rows[:1]
                    try:
                        output = call(x.index_select(0, first), first)
                    except torch.OutOfMemoryError:
                        raise  # running every row would need more memory, not less
                    except RuntimeError:
                        # The network after the layer reads the input's batch size (a
                        # reshape by x.shape[0]): run every row from now on.
                        one_row = False
                if output is None:
                    output = call(x.index_select(0, rows), rows)
                scores = scores_of(output, m)
                ablated[start : start + m] = scores.gather(1, index.index_select(0, rows)).float()
                bar.update(1)
    finally:
        handle.remove()
        state.clear()
    ablated = ablated.reshape(n, c, k).transpose(1, 2)  # (N, K, C)
    base = original.float().unsqueeze(2)
    drop = base - ablated
    return torch.where(base != 0, drop / torch.where(base != 0, base, 1.0), drop)


def smooth_gradcam_pp_weights(
    gradients_of: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x: torch.Tensor,
    activations: torch.Tensor,
    *,
    num_samples: int = SMOOTH_SAMPLES,
    std: float = SMOOTH_STD,
    seed: int,
    first_index: int = 0,
    rows_per_pass: int | None = None,
    variant: str = "paper",
    quiet: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth Grad-CAM++ channel weights ``(N, K, C)`` and the activations they weight
    (the clean ones, or for ``variant="torchcam"`` the last noisy sample's); see the module
    docstring.

    Args:
        gradients_of: ``(x_noisy (M, C_in, *S), rows (M,)) -> (G (M, K, C, *s), A (M, C,
            *s))``, the gradients of the targets of input ``rows[m]`` at the layer and the
            activations there, in the map layout.
        x: ``(N, C_in, *S)`` inputs.
        activations: ``(N, C, *s)`` the clean inputs' activations (map layout).
        num_samples: noisy copies per input.
        std: the noise's standard deviation.
        seed: input ``i``'s noise comes from a private generator seeded by
            ``(seed, first_index + i)``, one ``(C_in, *S)`` block per sample.
        rows_per_pass: noisy rows per forward pass (default: one copy of the batch).
        variant: ``"paper"`` or ``"torchcam"``.
    """
    from xaikit.explain.scorecam import noise_generator

    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise XaikitConfigError(f"num_samples must be a positive integer, got {num_samples!r}")
    if variant not in SMOOTH_VARIANTS:
        raise XaikitConfigError(
            f"variant must be one of {', '.join(SMOOTH_VARIANTS)}; got {variant!r}"
        )
    if not isinstance(std, (int, float)) or isinstance(std, bool) or std < 0:
        raise XaikitConfigError(f"std must be a non-negative number, got {std!r}")
    n = x.shape[0]
    generators = [noise_generator(seed, first_index + i) for i in range(n)]
    # Sample-major order: one noise block per input and sample, drawn in sample order.
    noise = torch.stack(
        [
            torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators])
            for _ in range(num_samples)
        ]
    )  # (S, N, C_in, *S)
    noisy = (x.unsqueeze(0) + (noise * std).to(device=x.device, dtype=x.dtype)).reshape(
        num_samples * n, *x.shape[1:]
    )
    rows_all = torch.arange(n, device=x.device).repeat(num_samples)
    per_pass = max(1, rows_per_pass or n)
    d1 = d2 = d3 = last_g = last_a = None
    with tqdm(
        total=-(-noisy.shape[0] // per_pass),
        desc=f"smooth grad-cam++ ({num_samples} samples)",
        unit="batch",
        disable=True if _quiet(quiet) else None,
        leave=False,
    ) as bar:
        for start in range(0, noisy.shape[0], per_pass):
            rows = rows_all[start : start + per_pass]
            grads, acts_noisy = gradients_of(noisy[start : start + per_pass], rows)
            grads = grads.detach().float()
            if d1 is None:
                shape = (n, *grads.shape[1:])
                d1 = grads.new_zeros(shape)
                d2 = grads.new_zeros(shape)
                d3 = grads.new_zeros(shape)
                last_g = grads.new_zeros(shape)
                last_a = acts_noisy.new_zeros((n, *acts_noisy.shape[1:]))
            # Rows come sample after sample: the last write of an input is its last sample.
            last_g.index_copy_(0, rows, grads)
            last_a.index_copy_(0, rows, acts_noisy.detach())
            g2 = grads * grads
            d1.index_add_(0, rows, grads)
            d2.index_add_(0, rows, g2)
            d3.index_add_(0, rows, g2 * grads)
            bar.update(1)
    assert d1 is not None and d2 is not None and d3 is not None
    assert last_g is not None and last_a is not None
    d1, d2, d3 = d1 / num_samples, d2 / num_samples, d3 / num_samples
    acts = activations.float()
    view = (acts.shape[0], 1, acts.shape[1]) + (1,) * (acts.dim() - 2)
    if variant == "torchcam":
        term = (d3 * acts.unsqueeze(1)).flatten(start_dim=3).sum(dim=3)
        alpha = d2 / (2 * d2 + term.reshape(*term.shape, *(1,) * (acts.dim() - 2)) + SMOOTH_EPS)
        weights = (alpha * last_g.clamp_min(0)).flatten(start_dim=3).sum(dim=3)
        return weights, last_a.to(activations.dtype)
    sum_a = acts.flatten(start_dim=2).sum(dim=2).reshape(view)
    eps = GRADCAM_PP_EPS  # as xaikit's (and pytorch-grad-cam's) Grad-CAM++
    alpha = torch.where(d2 != 0, d2 / (2 * d2 + sum_a * d3 + eps), torch.zeros_like(d2))
    return (alpha * d1.clamp_min(0)).flatten(start_dim=3).sum(dim=3), activations
