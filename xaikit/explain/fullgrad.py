"""FullGrad (Srinivas & Fleuret, "Full-Gradient Representation for Neural Network
Visualization", NeurIPS 2019), as pytorch-grad-cam's ``FullGrad``.

The score's full-gradient decomposition is its input gradient times the input plus, for
every layer with a bias, the gradient at the layer's output times the bias. The saliency
map sums their post-processed magnitudes:

* the input term ``|dy/dx * x|``, each colour channel min-max normalized (``(m - min) /
  (max - min + 1e-7)``, pytorch-grad-cam's ``scale_cam_image``);
* for every ``nn.Conv2d`` with a bias and every ``nn.BatchNorm2d`` (pytorch-grad-cam's
  choice of layers; a batch norm in eval mode has the effective bias
  ``beta - mu * gamma / sqrt(var + eps)``), ``|b_c * dy/dz_c|`` for each channel ``c`` of
  the layer's output ``z``, each channel normalized alike, upsampled (bilinear) to the
  input and summed over the channels.

The normalization is affine per channel and upsampling is linear and keeps constants, so
each layer's normalized channels are summed at the layer's resolution and upsampled once
(the same map as upsampling every channel). All gradients, for the ``K`` targets of every
input, come from one batched backward pass; the outputs of the biased layers are passed on
as copies so that in-place operations after them (``ReLU(inplace=True)``) leave the tensor
whose gradient is read intact (the gradient before the ReLU, as pytorch-grad-cam's tensor
hooks read it). FullGrad uses no target layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from xaikit.errors import XaikitConfigError
from xaikit.explain.postprocess import upsample

#: pytorch-grad-cam's ``scale_cam_image`` epsilon.
SCALE_EPS = 1e-7
BIASED_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.BatchNorm2d)


def biased_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose bias FullGrad reads: ``nn.Conv2d`` with a bias and every
    ``nn.BatchNorm2d`` with an affine bias (pytorch-grad-cam's rule)."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, BIASED_TYPES) and getattr(module, "bias", None) is not None
    ]


def effective_bias(module: nn.Module) -> torch.Tensor:
    """The bias a layer adds: a convolution's, or a batch norm's in eval mode."""
    if isinstance(module, nn.BatchNorm2d):
        channels = module.num_features
        ref = module.running_mean if module.running_mean is not None else module.bias
        assert ref is not None
        weight = module.weight if module.weight is not None else torch.ones_like(ref)
        bias = module.bias if module.bias is not None else torch.zeros_like(ref)
        if module.running_mean is None or module.running_var is None:
            return bias.detach().reshape(channels)
        scale = weight / torch.sqrt(module.running_var + module.eps)
        return (bias - module.running_mean * scale).detach()
    assert module.bias is not None
    return module.bias.detach()


def _normalized_sum(maps: torch.Tensor) -> torch.Tensor:
    """``(N, K, C, *s)`` -> ``(N, K, *s)``: each channel min-max normalized, then summed."""
    flat = maps.flatten(start_dim=3)
    lo = flat.amin(dim=3, keepdim=True)
    shifted = flat - lo
    normed = shifted / (shifted.amax(dim=3, keepdim=True) + SCALE_EPS)
    return normed.sum(dim=2).reshape(*maps.shape[:2], *maps.shape[3:])


def fullgrad_maps(
    call: Callable[[torch.Tensor], Any],
    scores_of: Callable[[Any], torch.Tensor],
    model: nn.Module,
    x: torch.Tensor,
    index: torch.Tensor,
) -> torch.Tensor:
    """FullGrad maps ``(N, K, *S)`` at the input resolution (non-negative, unnormalized).

    Args:
        call: ``x -> model output``.
        scores_of: ``output -> (N, num_outputs)`` explained scores.
        model: the network (its biased layers are hooked for the pass).
        x: ``(N, C_in, H, W)`` inputs.
        index: ``(N, K)`` target classes.
    """
    if x.dim() != 4:
        raise XaikitConfigError(
            f"fullgrad explains images (N, C, H, W) with Conv2d / BatchNorm2d biases; got "
            f"inputs shaped {tuple(x.shape)}"
        )
    n, k = index.shape
    size = tuple(x.shape[2:])
    layers = biased_layers(model)
    outputs: list[torch.Tensor] = []
    modules: list[nn.Module] = []

    def hook(module: nn.Module, _inputs: Any, output: Any) -> Any:
        if not isinstance(output, torch.Tensor) or not output.requires_grad:
            return None
        outputs.append(output)
        modules.append(module)
        return output.clone()  # in-place ops after the layer modify the copy

    handles = [module.register_forward_hook(hook) for _name, module in layers]
    leaf = x.detach().requires_grad_(True)
    try:
        with torch.enable_grad():
            selected = scores_of(call(leaf)).gather(1, index)
    finally:
        for handle in handles:
            handle.remove()
    inputs = [leaf, *outputs]
    if k == 1:
        grads = torch.autograd.grad(selected, inputs, torch.ones_like(selected), allow_unused=True)
        grads = [None if g is None else g.unsqueeze(1) for g in grads]
    else:
        eye = torch.eye(k, dtype=selected.dtype, device=selected.device)
        one_hot = eye.unsqueeze(1).expand(k, n, k)
        try:
            batched = torch.autograd.grad(
                selected, inputs, one_hot, is_grads_batched=True, allow_unused=True
            )
            grads = [None if g is None else g.movedim(0, 1) for g in batched]
        except RuntimeError:
            per = [
                torch.autograd.grad(
                    selected[:, j].sum(), inputs, retain_graph=True, allow_unused=True
                )
                for j in range(k)
            ]
            grads = [
                None if per[0][i] is None else torch.stack([p[i] for p in per], dim=1)
                for i in range(len(inputs))
            ]
    del selected
    if grads[0] is None:
        raise XaikitConfigError("fullgrad: the explained scores do not depend on the input")
    total = _normalized_sum((grads[0] * leaf.detach().unsqueeze(1)).abs())  # (N, K, H, W)
    for module, grad in zip(modules, grads[1:]):
        if grad is None or grad.dim() != 5:
            continue
        bias = effective_bias(module).to(grad.dtype).reshape(1, 1, -1, 1, 1)
        total = total + upsample(_normalized_sum((bias * grad).abs()), size)
    return total.detach()
