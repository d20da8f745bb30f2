"""Attribution maps for vision transformers, read from their attention probabilities.

Two methods, both computed from the per-head attention probabilities ``A_b`` of every
self-attention block ``b = 1..L`` of one forward pass (``A_b`` shaped ``(N, heads, T, T)``,
rows sum to 1; ``T = P + gh * gw`` tokens: ``P`` prefix tokens - class, distillation,
register - then the patch tokens in row-major grid order):

``attention-rollout``
    Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020. Per block the
    heads are fused (``head_fusion``: ``"mean"`` by default, ``"max"`` or ``"min"``), the
    optional ``discard_ratio`` zeroes the lowest fused attentions, and the residual
    connection is accounted for by mixing in the identity::

        A_hat_b = (0.5 * A_b + 0.5 * I) / rowsum(0.5 * A_b + 0.5 * I)

    i.e. each row is renormalized to sum to 1 after the mixing (as in the widely used
    jacobgil/vit-explain implementation, with the row sum taken per row). With the default
    mean fusion and no discarding the rows of ``A_b`` already sum to 1, so this is exactly
    the paper's ``0.5 * A + 0.5 * I``. The rollout is ``A_hat_L @ ... @ A_hat_1`` (blocks
    from ``start_block`` on). It does not depend on the target: the same map is returned for
    each of the ``K`` targets.

``attention-gradients``
    Chefer, Gur & Wolf, "Generic Attention-model Explainability for Interpreting Bi-Modal
    and Encoder-Decoder Transformers", ICCV 2021, their update rule for self-attention::

        R = I;  for each block b:  A_bar_b = mean_heads( max(dy_t / dA_b * A_b, 0) )
                                   R = R + A_bar_b @ R

    where ``dy_t / dA_b`` is the gradient of the explained score of target ``t`` with
    respect to the block's attention probabilities (the total derivative: later blocks'
    dependence on ``A_b`` included). The ``K`` targets of an input share one forward pass;
    their gradients come from one batched ``torch.autograd.grad`` (``is_grads_batched``),
    or ``K`` backward passes over the retained graph when an operation has no batching rule.

Reading the map (both methods): for a model whose prediction reads the class token, the
row of the class token (token 0) over the patch columns, ``M[n, P:]``. For a model without
a class token, or whose pooling averages the tokens (timm ``global_pool`` other than
``"token"``, e.g. ``"avg"``), the mean of the patch-token rows over the patch columns,
``M[n, P:, P:].mean(rows)`` - the rows that average pooling averages. The ``gh * gw``
values are reshaped to the patch grid.

Capturing the probabilities:

* timm ViT-family attention modules (``fused_attn``, ``qkv``, ``num_heads`` and
  ``attn_drop``): ``fused_attn`` is set to ``False`` for the call only, so the module
  computes ``softmax(q k^T * scale)`` explicitly, and a forward hook on ``attn_drop`` takes
  its output - the probabilities that multiply ``v`` (in eval mode dropout returns its
  input unchanged).
* ``torch.nn.MultiheadAttention`` (torchvision's ``VisionTransformer`` calls it with
  ``need_weights=False``): the weights it returns are a reshaped *view* of the softmaxed
  matrix, not the tensor its output is computed from, so autograd cannot give a gradient
  with respect to them (and its fast path computes them apart from the output). For the
  call, the module's ``forward`` is replaced by an instance attribute that computes the
  self-attention itself from ``in_proj_weight``/``in_proj_bias`` and ``out_proj`` - the
  same operations as ``F.multi_head_attention_forward`` - and captures the very
  probabilities tensor the output is computed from; the attribute is removed afterwards.

Prefix tokens and grid: timm models give the grid by ``patch_embed.grid_size`` (or, with
``dynamic_img_size``, ``patch_embed.dynamic_feat_size`` of the input size) and ``P`` by
``num_prefix_tokens``; torchvision's ``VisionTransformer`` by ``H // patch_size`` x
``W // patch_size`` and ``P = T - gh * gw`` (its class token). Any other model: the
smallest ``P >= 0`` such that ``T - P`` is a perfect square gives a square grid, and token
0 counts as a class token when ``P >= 1``.

The model is borrowed for the call (:func:`~xaikit.explain.state.borrowed`: eval mode,
frozen parameters); afterwards no hook, wrapper or changed ``fused_attn`` remains.
Gradients are only ever taken with respect to the captured attention tensors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from xaikit._names import ATTENTION_METHODS
from xaikit.errors import XaikitConfigError
from xaikit.explain.layouts import model_hints, read_layout
from xaikit.explain.state import borrowed

HEAD_FUSIONS: tuple[str, ...] = ("mean", "max", "min")

_OPTIONS: dict[str, tuple[str, ...]] = {
    "attention-rollout": ("head_fusion", "discard_ratio", "start_block"),
    "attention-gradients": ("start_block",),
}
#: The softmax rows of a captured matrix must sum to 1 within this (checks the capture).
_ROW_SUM_TOLERANCE = 1e-2
_MISSING = object()


def options_of(method: str) -> tuple[str, ...]:
    """The option names ``method`` accepts (keyword arguments of :func:`attention_map`)."""
    try:
        return _OPTIONS[method]
    except KeyError:
        raise XaikitConfigError(
            f"unknown attention method {method!r}; choose from {', '.join(ATTENTION_METHODS)}"
        ) from None


# --------------------------------------------------------------------------- capture


def _is_timm_attention(module: nn.Module) -> bool:
    """A timm-style attention module whose explicit (non-fused) path calls ``attn_drop``."""
    return (
        hasattr(module, "fused_attn")
        and isinstance(getattr(module, "qkv", None), nn.Module)
        and isinstance(getattr(module, "num_heads", None), int)
        and isinstance(getattr(module, "attn_drop", None), nn.Module)
    )


def _mha_self_attention(
    mha: nn.MultiheadAttention,
    record: Callable[[torch.Tensor], None],
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    need_weights: bool = True,
    attn_mask: torch.Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``nn.MultiheadAttention.forward`` for unmasked self-attention, computed explicitly
    so that ``record`` gets the ``(N, heads, T, T)`` probabilities the output is made of."""
    unsupported = []
    if not (query is key and key is value):
        unsupported.append("query, key and value are not the same tensor")
    if query.dim() != 3:
        unsupported.append("the input is not batched")
    if not mha._qkv_same_embed_dim or mha.in_proj_weight is None:
        unsupported.append("separate q/k/v projection weights")
    if mha.bias_k is not None or mha.bias_v is not None or mha.add_zero_attn:
        unsupported.append("bias_k/bias_v/add_zero_attn")
    if key_padding_mask is not None or attn_mask is not None or is_causal:
        unsupported.append("attention masks")
    if unsupported:
        raise XaikitConfigError(
            "attention maps support nn.MultiheadAttention as plain self-attention only; this "
            f"call has {', '.join(unsupported)}"
        )
    x = query if mha.batch_first else query.transpose(0, 1)  # (N, T, E)
    n, t, e = x.shape
    heads = mha.num_heads
    head_dim = e // heads
    # in_proj_weight stacks W_q, W_k, W_v along dim 0; each splits into heads contiguously,
    # exactly as F.multi_head_attention_forward views q as (T, N * heads, head_dim).
    qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)  # (N, T, 3E)
    q, k, v = qkv.reshape(n, t, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    attn = torch.softmax((q * head_dim**-0.5) @ k.transpose(-2, -1), dim=-1)  # (N, H, T, T)
    attn = F.dropout(attn, mha.dropout, mha.training)
    record(attn)
    out = (attn @ v).transpose(1, 2).reshape(n, t, e)
    out = F.linear(out, mha.out_proj.weight, mha.out_proj.bias)
    if not mha.batch_first:
        out = out.transpose(0, 1)
    weights = None
    if need_weights:
        weights = attn.mean(dim=1) if average_attn_weights else attn
    return out, weights


class AttentionCapture:
    """Capture the attention probabilities of every supported module, in execution order.

    Inside the ``with`` block timm attention modules run their explicit path
    (``fused_attn=False``) with a forward hook on ``attn_drop``, and every
    ``nn.MultiheadAttention`` runs :func:`_mha_self_attention`. On exit, exception or not,
    the hooks and wrappers are removed and ``fused_attn`` restored. Each captured tensor is
    the one the block's output is computed from, so it carries the graph when grad is on.

    Raises:
        XaikitConfigError: on construction, when the model has no supported module.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.timm = [m for m in model.modules() if _is_timm_attention(m)]
        self.mha = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
        if not self.timm and not self.mha:
            raise XaikitConfigError(
                f"attention methods need a transformer; {type(model).__name__} has no timm "
                "attention module (with fused_attn, qkv, num_heads and attn_drop) and no "
                "torch.nn.MultiheadAttention"
            )
        self.attentions: list[torch.Tensor] = []
        self._handles: list[RemovableHandle] = []
        self._fused: list[tuple[nn.Module, Any]] = []
        self._forwards: list[tuple[nn.Module, Any]] = []

    def __enter__(self) -> AttentionCapture:
        try:
            hooked: set[int] = set()
            for module in self.timm:
                self._fused.append((module, module.fused_attn))
                module.fused_attn = False
                if id(module.attn_drop) not in hooked:  # a shared dropout is hooked once
                    hooked.add(id(module.attn_drop))
                    self._handles.append(module.attn_drop.register_forward_hook(self._hook))
            for module in self.mha:
                self._forwards.append((module, module.__dict__.get("forward", _MISSING)))
                module.forward = self._wrapper(module)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook and wrapper, restore ``fused_attn`` (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module, fused in self._fused:
            module.fused_attn = fused
        self._fused.clear()
        for module, forward in self._forwards:
            if forward is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.forward = forward
        self._forwards.clear()

    def _hook(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            self.attentions.append(output)

    def _wrapper(self, mha: nn.MultiheadAttention) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
            return _mha_self_attention(mha, self.attentions.append, *args, **kwargs)

        return forward

    def run(self, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Any:
        """Run ``forward(x)`` once, capturing afresh."""
        self.attentions.clear()
        return forward(x)

    def checked(self, batch: int) -> list[torch.Tensor]:
        """The captured ``(N, heads, T, T)`` probabilities, checked for shape and softmax."""
        if not self.attentions:
            raise XaikitConfigError(
                "the forward pass ran none of the model's attention modules; attention maps "
                "need the attention of the explained forward pass"
            )
        tokens = self.attentions[0].shape[-1]
        for i, attn in enumerate(self.attentions):
            shape = tuple(attn.shape)
            if attn.dim() != 4 or shape[0] != batch or shape[2:] != (tokens, tokens):
                raise XaikitConfigError(
                    f"attention block {i} gave probabilities shaped {shape}, not ({batch}, "
                    f"heads, {tokens}, {tokens}); windowed or token-pooling attention (Swin, "
                    "PiT, ...) is not supported"
                )
            rows = attn.detach().sum(dim=-1).float()
            if not torch.allclose(rows, torch.ones_like(rows), atol=_ROW_SUM_TOLERANCE):
                raise XaikitConfigError(
                    f"attention block {i}: the captured matrix is not softmax probabilities "
                    "(rows do not sum to 1); this attention module is not supported"
                )
        return list(self.attentions)


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class TokenLayout:
    """Where the patch tokens are: ``prefix`` tokens first, then a ``grid`` in row-major
    order; ``class_row``: read token 0's row (else the mean of the patch rows)."""

    prefix: int
    grid: tuple[int, int]
    class_row: bool


def token_layout(model: nn.Module, x: torch.Tensor, tokens: int) -> TokenLayout:
    """The token layout of ``model`` for input ``x`` of ``(N, C, H, W)`` and ``T`` tokens.

    The prefix count and patch grid are read as for a CAM at a token layer
    (:func:`xaikit.explain.layouts.model_hints`: timm's ``patch_embed`` and
    ``num_prefix_tokens``, torchvision's ``patch_size`` and class token; else the grid that
    fits the input)."""
    size = tuple(x.shape[-2:])
    layout = read_layout((x.shape[0], tokens, 1), size, model_hints(model, size), "tokens")
    if layout is None:
        raise XaikitConfigError(
            f"the attention has {tokens} tokens, which is no patch grid of a "
            f"{size[0]}x{size[1]} input with prefix tokens"
        )
    # timm says whether the head reads the class token; elsewhere a prefix token is one.
    class_row = layout.prefix >= 1
    if getattr(model, "patch_embed", None) is not None and hasattr(model, "global_pool"):
        has_class = getattr(model, "has_class_token", getattr(model, "cls_token", None) is not None)
        pool = model.global_pool
        class_row = bool(has_class) and (not isinstance(pool, str) or pool == "token")
    gh, gw = layout.grid
    return TokenLayout(prefix=layout.prefix, grid=(gh, gw), class_row=class_row)


def read_map(relevance: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """``(..., T, T)`` token-to-token relevance -> ``(..., gh, gw)`` map of the patches."""
    p = layout.prefix
    # The class token's row, or the mean of the patch rows (those average pooling averages).
    row = relevance[..., 0, p:] if layout.class_row else relevance[..., p:, p:].mean(dim=-2)
    return row.reshape(*row.shape[:-1], *layout.grid)


# --------------------------------------------------------------------------- methods


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    # Products over many blocks lose too much in half precision: at least float32.
    return torch.promote_types(t.dtype, torch.float32)


def fuse_heads(attention: torch.Tensor, head_fusion: str) -> torch.Tensor:
    """``(N, heads, T, T)`` -> ``(N, T, T)`` by the mean, max or min over heads."""
    if head_fusion == "mean":
        return attention.mean(dim=1)
    if head_fusion == "max":
        return attention.amax(dim=1)
    return attention.amin(dim=1)


def discard_lowest(fused: torch.Tensor, ratio: float, *, keep_first: bool) -> torch.Tensor:
    """Zero the ``int(T * T * ratio)`` lowest entries of each ``(T, T)`` fused matrix.

    As in jacobgil/vit-explain, entry ``(0, 0)`` (the class token's attention to itself) is
    never discarded when ``keep_first``; here the choice is made per input of the batch.
    """
    n, t, _ = fused.shape
    count = int(t * t * ratio)
    if count == 0:
        return fused
    flat = fused.reshape(n, t * t)
    lowest = flat.topk(count, dim=1, largest=False).indices
    drop = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, lowest, True)
    if keep_first:
        drop[:, 0] = False
    return flat.masked_fill(drop, 0.0).reshape(n, t, t)


def rollout(
    attentions: Sequence[torch.Tensor],
    *,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    keep_first: bool = True,
) -> torch.Tensor:
    """Attention rollout ``A_hat_L @ ... @ A_hat_1``: ``L x (N, heads, T, T)`` -> ``(N, T, T)``.

    ``A_hat = (0.5 * A + 0.5 * I) / rowsum`` per block after head fusion and discarding.
    """
    first = attentions[0]
    n, _, t, _ = first.shape
    eye = torch.eye(t, dtype=_work_dtype(first), device=first.device)
    result = eye.expand(n, t, t)
    for attention in attentions:
        fused = fuse_heads(attention.detach().to(eye.dtype), head_fusion)
        if discard_ratio > 0:
            fused = discard_lowest(fused, discard_ratio, keep_first=keep_first)
        mixed = 0.5 * fused + 0.5 * eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        result = mixed @ result
    return result


def gradient_relevance(
    attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Chefer et al.'s self-attention relevance: ``L x (N, heads, T, T)`` attentions and
    ``L x (K, N, heads, T, T)`` gradients -> ``(K, N, T, T)``.

    ``R = I``; per block ``R = R + mean_heads(max(grad * A, 0)) @ R``.
    """
    first = gradients[0]
    k, n, _, t, _ = first.shape
    dtype = _work_dtype(first)
    relevance = torch.eye(t, dtype=dtype, device=first.device).expand(k, n, t, t)
    for attention, grad in zip(attentions, gradients):
        cam = (grad.to(dtype) * attention.detach().to(dtype).unsqueeze(0)).clamp_min(0)
        relevance = relevance + cam.mean(dim=2) @ relevance
    return relevance


def target_gradients(
    selected: torch.Tensor, attentions: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """``d selected[:, k].sum() / d A_b`` for every target ``k`` and block ``b``:
    ``(N, K)`` scores, ``L x (N, heads, T, T)`` -> ``L x (K, N, heads, T, T)``.

    Inputs of a batch are independent (eval mode), so summing over the batch gives every
    input its own gradient. One batched vector-Jacobian product over ``K`` one-hot output
    gradients; ``K`` backward passes over the retained graph when an operation of the model
    has no batching rule. A block the scores do not depend on gets zeros.
    """
    n, k = selected.shape
    if not selected.requires_grad:
        raise XaikitConfigError(
            "the explained scores do not depend on the attention through differentiable "
            "operations (detached inside the model?); attention-gradients needs them to"
        )
    attentions = list(attentions)
    if k == 1:
        grads = torch.autograd.grad(
            selected, attentions, torch.ones_like(selected), allow_unused=True
        )
        return [_or_zeros(g, a).unsqueeze(0) for g, a in zip(grads, attentions)]
    one_hot = torch.eye(k, dtype=selected.dtype, device=selected.device)
    one_hot = one_hot.unsqueeze(1).expand(k, n, k)
    try:
        grads = torch.autograd.grad(
            selected,
            attentions,
            one_hot,
            retain_graph=True,
            is_grads_batched=True,
            allow_unused=True,
        )
        return [_or_zeros(g, a.expand(k, *a.shape)) for g, a in zip(grads, attentions)]
    except RuntimeError:
        pass
    parts = [
        torch.autograd.grad(
            selected[:, j].sum(), attentions, retain_graph=j < k - 1, allow_unused=True
        )
        for j in range(k)
    ]
    return [
        torch.stack([_or_zeros(part[b], a) for part in parts]) for b, a in enumerate(attentions)
    ]


def _or_zeros(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


# --------------------------------------------------------------------------- entry point


def _check_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    accepted = options_of(method)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise XaikitConfigError(
            f"method {method!r} got unknown option(s) {', '.join(unknown)}; it accepts "
            f"{', '.join(accepted)}"
        )
    checked = {"head_fusion": "mean", "discard_ratio": 0.0, "start_block": 0}
    checked.update(options)
    if checked["head_fusion"] not in HEAD_FUSIONS:
        raise XaikitConfigError(
            f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}; got {checked['head_fusion']!r}"
        )
    ratio = checked["discard_ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise XaikitConfigError(f"discard_ratio must be a number in [0, 1), got {ratio!r}")
    start = checked["start_block"]
    if isinstance(start, bool) or not isinstance(start, int):
        raise XaikitConfigError(f"start_block must be an integer, got {start!r}")
    return checked


def _start(start: int, blocks: int) -> int:
    if not -blocks <= start < blocks:
        raise XaikitConfigError(
            f"start_block {start} is out of range for a model with {blocks} attention blocks "
            f"(valid: {-blocks}..{blocks - 1})"
        )
    return start % blocks


def _check_index(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    index = torch.as_tensor(index, device=x.device)
    if index.dim() == 1:
        index = index.unsqueeze(1)
    if index.is_floating_point() or index.dtype == torch.bool:
        raise XaikitConfigError(f"target indices must be integers, got {index.dtype}")
    if index.dim() != 2 or index.shape[0] != x.shape[0]:
        raise XaikitConfigError(
            f"targets must be shaped (N, K) = ({x.shape[0]}, K), got {tuple(index.shape)}"
        )
    if index.numel() and bool((index < 0).any()):
        raise XaikitConfigError(f"target indices must be >= 0, got {int(index.min())}")
    return index.long()


@contextlib.contextmanager
def _no_inference_mode() -> Iterator[None]:
    # Autograd refuses inference tensors: leave a caller's inference_mode for the call.
    with torch.inference_mode(False):
        yield


def attention_map(
    model: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    index: torch.Tensor,
    method: str,
    **options: Any,
) -> torch.Tensor:
    """Attention rollout or Chefer et al.'s gradient-weighted relevance of each target.

    Args:
        model: the transformer (the module ``forward`` runs); its attention modules are
            found in it and it is borrowed for the call (eval mode, frozen parameters).
        forward: ``forward(x) -> (N, num_outputs)`` scores; it runs ``model`` once.
        x: ``(N, C, H, W)`` inputs (never modified).
        index: ``(N, K)`` integer target indices (``(N,)`` counts as ``K = 1``).
        method: ``"attention-rollout"`` or ``"attention-gradients"``.
        **options: ``head_fusion`` (``"mean"``, ``"max"``, ``"min"``; rollout),
            ``discard_ratio`` (fraction in ``[0, 1)`` of the lowest fused attentions zeroed
            per block; rollout), ``start_block`` (the first block used, negative counts from
            the end; both). See :func:`options_of`.

    Returns:
        ``(N, K, gh, gw)`` raw (unnormalized) maps on ``x``'s device, at least float32. The
        rollout repeats one map for each of the ``K`` targets.

    Raises:
        XaikitConfigError: no supported attention module (before any forward or backward
            pass), unknown or invalid options, targets out of range, attention that does not
            fit a patch grid.
    """
    if method not in ATTENTION_METHODS:
        raise XaikitConfigError(
            f"unknown attention method {method!r}; choose from {', '.join(ATTENTION_METHODS)}"
        )
    opts = _check_options(method, dict(options))
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 3:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise XaikitConfigError(f"inputs must be a floating point (N, C, H, W) tensor, got {got}")
    index = _check_index(x, index)
    n, k = index.shape
    capture = AttentionCapture(model)  # refuses models without attention, before any pass
    with _no_inference_mode(), borrowed(model), capture:
        gradients = method == "attention-gradients" and k > 0
        # Parameters are frozen, so the graph to the attention is built from the input.
        inputs = x.detach().clone().requires_grad_(gradients)
        with contextlib.nullcontext() if gradients else torch.no_grad():
            scores = capture.run(forward, inputs)
        attentions = capture.checked(n)
        layout = token_layout(model, x, attentions[0].shape[-1])
        start = _start(opts["start_block"], len(attentions))
        used = attentions[start:]
        if method == "attention-rollout" or k == 0:
            relevance = rollout(
                used,
                head_fusion=opts["head_fusion"],
                discard_ratio=float(opts["discard_ratio"]),
                keep_first=layout.class_row,
            )
            maps = read_map(relevance, layout).unsqueeze(1).expand(n, k, *layout.grid)
            return maps.contiguous().to(x.device)
        if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or scores.shape[0] != n:
            got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
            raise XaikitConfigError(
                f"forward must return scores shaped (N, num_outputs) = ({n}, ...), got {got}"
            )
        if int(index.max()) >= scores.shape[1]:
            raise XaikitConfigError(
                f"target index {int(index.max())} is out of range for a model with "
                f"{scores.shape[1]} outputs (valid: 0..{scores.shape[1] - 1})"
            )
        selected = scores.gather(1, index.to(scores.device))  # (N, K)
        grads = target_gradients(selected, used)
        del selected, scores
        relevance = gradient_relevance(used, grads)  # (K, N, T, T)
        return read_map(relevance, layout).movedim(0, 1).contiguous().to(x.device)
