"""Attention rollout and Chefer et al.'s relevance against computations by hand.

The toy transformers have seeded, explicit weights. The hand path re-implements each
model's forward pass with explicit matrix algebra (patch embedding as a matrix product,
layer norm, q/k/v from the qkv weights, softmax, GELU), checks that it gives the model's
scores, and computes the maps from *its own* attention tensors - gradients by
``torch.autograd.grad`` per input and per target, not batched - so the captured tensors,
the batched gradients and the token layout of :mod:`xaikit.explain.attention` are all
checked independently.
"""

from __future__ import annotations

import math

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import nn
from torchvision.models import VisionTransformer as TorchvisionViT

from xaikit.errors import XaikitConfigError
from xaikit.explain.attention import (
    ATTENTION_METHODS,
    AttentionCapture,
    attention_map,
    options_of,
)
from xaikit.explain.hooks import hook_count

ROLLOUT, GRADIENTS = ATTENTION_METHODS
TOL = {"atol": 1e-6, "rtol": 0.0}
TARGETS = torch.tensor([[0, 2, 1], [2, 1, 0]])


# --------------------------------------------------------------------------- toy models


def _set_weights(model: nn.Module, seed: int) -> nn.Module:
    """Every parameter drawn from N(0, 0.5^2) by a seeded generator, in a fixed order."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _name, param in sorted(model.named_parameters()):
            param.copy_(torch.randn(param.shape, generator=gen, dtype=param.dtype) * 0.5)
    return model.eval()


def timm_vit(dtype: torch.dtype = torch.float64, **kwargs) -> TimmViT:
    model = TimmViT(
        img_size=8, patch_size=4, embed_dim=8, depth=2, num_heads=2, num_classes=3, **kwargs
    )
    return _set_weights(model.to(dtype), seed=3)


def torchvision_vit(dtype: torch.dtype = torch.float64) -> TorchvisionViT:
    model = TorchvisionViT(
        image_size=8,
        patch_size=4,
        num_layers=2,
        num_heads=2,
        hidden_dim=8,
        mlp_dim=16,
        num_classes=3,
    )
    return _set_weights(model.to(dtype), seed=4)


def images(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    return torch.randn(2, 3, 8, 8, generator=gen).to(dtype)


# --------------------------------------------------------------------------- the hand path


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _softmax(s: torch.Tensor) -> torch.Tensor:
    e = torch.exp(s - s.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x @ weight.T + bias


def _patch_tokens(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """The stride-p convolution as a matrix product: ``(N, C, H, W) -> (N, gh * gw, D)``."""
    n, c, h, w = x.shape
    p = conv.kernel_size[0]
    cols = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    cols = cols.reshape(n, (h // p) * (w // p), c * p * p)
    return _linear(cols, conv.weight.reshape(conv.out_channels, -1), conv.bias)


def _self_attention(
    h: torch.Tensor, w_qkv: torch.Tensor, b_qkv: torch.Tensor, heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, T, D)`` -> the probabilities ``(N, heads, T, T)`` and ``(N, T, D)`` mixed values."""
    n, t, d = h.shape
    hd = d // heads
    qkv = _linear(h, w_qkv, b_qkv)
    q, k, v = (
        qkv[..., i * d : (i + 1) * d].reshape(n, t, heads, hd).transpose(1, 2) for i in (0, 1, 2)
    )
    attn = _softmax(q @ k.transpose(-1, -2) / math.sqrt(hd))
    return attn, (attn @ v).transpose(1, 2).reshape(n, t, d)


def timm_by_hand(model: TimmViT, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Scores ``(N, 3)`` and the attention of each block, in the graph of the scores."""
    tokens = _patch_tokens(x, model.patch_embed.proj)
    if model.cls_token is not None:
        tokens = torch.cat([model.cls_token.expand(len(x), -1, -1), tokens], dim=1)
    tokens = tokens + model.pos_embed
    attentions = []
    for block in model.blocks:
        attn, mixed = _self_attention(
            _layer_norm(tokens, block.norm1),
            block.attn.qkv.weight,
            block.attn.qkv.bias,
            block.attn.num_heads,
        )
        attentions.append(attn)
        tokens = tokens + _linear(mixed, block.attn.proj.weight, block.attn.proj.bias)
        hidden = _gelu(
            _linear(_layer_norm(tokens, block.norm2), block.mlp.fc1.weight, block.mlp.fc1.bias)
        )
        tokens = tokens + _linear(hidden, block.mlp.fc2.weight, block.mlp.fc2.bias)
    if isinstance(model.norm, nn.LayerNorm):
        tokens = _layer_norm(tokens, model.norm)
    pooled = (
        tokens[:, 0]
        if model.global_pool == "token"
        else tokens[:, model.num_prefix_tokens :].mean(1)
    )
    if isinstance(model.fc_norm, nn.LayerNorm):
        pooled = _layer_norm(pooled, model.fc_norm)
    return _linear(pooled, model.head.weight, model.head.bias), attentions


def torchvision_by_hand(
    model: TorchvisionViT, x: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    tokens = _patch_tokens(x, model.conv_proj)
    tokens = torch.cat([model.class_token.expand(len(x), -1, -1), tokens], dim=1)
    tokens = tokens + model.encoder.pos_embedding
    attentions = []
    for layer in model.encoder.layers:
        mha = layer.self_attention
        attn, mixed = _self_attention(
            _layer_norm(tokens, layer.ln_1), mha.in_proj_weight, mha.in_proj_bias, mha.num_heads
        )
        attentions.append(attn)
        tokens = tokens + _linear(mixed, mha.out_proj.weight, mha.out_proj.bias)
        fc1, fc2 = layer.mlp[0], layer.mlp[3]
        hidden = _gelu(_linear(_layer_norm(tokens, layer.ln_2), fc1.weight, fc1.bias))
        tokens = tokens + _linear(hidden, fc2.weight, fc2.bias)
    cls = _layer_norm(tokens, model.encoder.ln)[:, 0]
    return _linear(cls, model.heads.head.weight, model.heads.head.bias), attentions


def _read(m: torch.Tensor, prefix: int, class_row: bool) -> torch.Tensor:
    """``(T, T)`` -> ``(2, 2)``: the class row, or the mean of the patch rows."""
    row = m[0, prefix:] if class_row else m[prefix:, prefix:].mean(dim=0)
    return row.reshape(2, 2)


def _discard_by_hand(fused: torch.Tensor, ratio: float) -> torch.Tensor:
    """jacobgil/vit-explain: zero the int(T*T*ratio) lowest entries except flat index 0."""
    flat = fused.flatten().clone()
    count = int(flat.numel() * ratio)
    lowest = torch.argsort(flat)[:count]
    flat[lowest[lowest != 0]] = 0
    return flat.reshape(fused.shape)


def rollout_by_hand(
    attentions: list[torch.Tensor],
    prefix: int,
    class_row: bool,
    fusion: str = "mean",
    discard: float = 0.0,
    start: int = 0,
) -> torch.Tensor:
    """``(N, 2, 2)`` rollout maps, one input and one block at a time."""
    maps = []
    for n in range(attentions[0].shape[0]):
        t = attentions[0].shape[-1]
        eye = torch.eye(t, dtype=attentions[0].dtype)
        result = eye
        for attn in attentions[start:]:
            heads = attn[n].detach()
            fused = {"mean": heads.mean(0), "max": heads.max(0).values, "min": heads.min(0).values}
            a = fused[fusion]
            if discard:
                a = _discard_by_hand(a, discard)
            a = 0.5 * a + 0.5 * eye
            a = a / a.sum(dim=1, keepdim=True)
            result = a @ result
        maps.append(_read(result, prefix, class_row))
    return torch.stack(maps)


def chefer_by_hand(
    scores: torch.Tensor,
    attentions: list[torch.Tensor],
    targets: torch.Tensor,
    prefix: int,
    class_row: bool,
) -> torch.Tensor:
    """``(N, K, 2, 2)``: one autograd.grad per input and target, R = R + mean(relu(g*A)) @ R."""
    n_inputs, k_targets = targets.shape
    t = attentions[0].shape[-1]
    maps = torch.zeros(n_inputs, k_targets, 2, 2, dtype=scores.dtype)
    for n in range(n_inputs):
        for j in range(k_targets):
            grads = torch.autograd.grad(scores[n, targets[n, j]], attentions, retain_graph=True)
            relevance = torch.eye(t, dtype=scores.dtype)
            for attn, grad in zip(attentions, grads):
                cam = (grad[n] * attn[n].detach()).clamp(min=0).mean(dim=0)
                relevance = relevance + cam @ relevance
            maps[n, j] = _read(relevance, prefix, class_row)
    return maps


def _repeated(maps: torch.Tensor, k: int) -> torch.Tensor:
    return maps.unsqueeze(1).expand(-1, k, -1, -1)


# --------------------------------------------------------------------------- hand computations


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_timm_vit_matches_hand_computation(dtype: torch.dtype) -> None:
    model, x = timm_vit(dtype), images(dtype)
    scores, attentions = timm_by_hand(model, x)
    torch.testing.assert_close(scores, model(x), **TOL)  # the hand path is the model

    got = attention_map(model, model, x, TARGETS, ROLLOUT)
    assert got.shape == (2, 3, 2, 2) and got.dtype == dtype
    torch.testing.assert_close(got, _repeated(rollout_by_hand(attentions, 1, True), 3), **TOL)

    got = attention_map(model, model, x, TARGETS, GRADIENTS)
    want = chefer_by_hand(scores, attentions, TARGETS, 1, True)
    assert float(want.abs().max()) > 1e-2  # not vacuous: the relevance is not all zeros
    assert not torch.allclose(want[:, 0], want[:, 1])  # and it depends on the target
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torchvision_vit_matches_hand_computation(dtype: torch.dtype) -> None:
    model, x = torchvision_vit(dtype), images(dtype)
    scores, attentions = torchvision_by_hand(model, x)
    torch.testing.assert_close(scores, model(x), **TOL)

    got = attention_map(model, model, x, TARGETS, ROLLOUT)
    torch.testing.assert_close(got, _repeated(rollout_by_hand(attentions, 1, True), 3), **TOL)

    got = attention_map(model, model, x, TARGETS, GRADIENTS)
    want = chefer_by_hand(scores, attentions, TARGETS, 1, True)
    assert float(want.abs().max()) > 1e-2
    assert not torch.allclose(want[:, 0], want[:, 1])
    torch.testing.assert_close(got, want, **TOL)


def test_torchvision_output_unchanged_while_captured() -> None:
    """The replacement forward of nn.MultiheadAttention computes what the original does."""
    model, x = torchvision_vit(torch.float32), images(torch.float32)
    want = model(x)
    with AttentionCapture(model) as capture:
        got = model(x)
    assert len(capture.attentions) == 2
    assert capture.attentions[0].shape == (2, 2, 5, 5)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not any("forward" in vars(m) for m in model.modules())


def test_no_class_token_reads_mean_of_patch_rows() -> None:
    model = timm_vit(class_token=False, global_pool="avg")
    x = images()
    assert model.num_prefix_tokens == 0
    scores, attentions = timm_by_hand(model, x)
    torch.testing.assert_close(scores, model(x), **TOL)
    got = attention_map(model, model, x, TARGETS, ROLLOUT)
    torch.testing.assert_close(got, _repeated(rollout_by_hand(attentions, 0, False), 3), **TOL)
    got = attention_map(model, model, x, TARGETS, GRADIENTS)
    torch.testing.assert_close(got, chefer_by_hand(scores, attentions, TARGETS, 0, False), **TOL)


def test_class_token_with_average_pooling_reads_mean_of_patch_rows() -> None:
    model = timm_vit(global_pool="avg")
    x = images()
    assert model.num_prefix_tokens == 1
    scores, attentions = timm_by_hand(model, x)
    torch.testing.assert_close(scores, model(x), **TOL)
    got = attention_map(model, model, x, TARGETS[:, :1], ROLLOUT)
    torch.testing.assert_close(got, _repeated(rollout_by_hand(attentions, 1, False), 1), **TOL)
    got = attention_map(model, model, x, TARGETS[:, :1], GRADIENTS)
    want = chefer_by_hand(scores, attentions, TARGETS[:, :1], 1, False)
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize(
    ("fusion", "discard", "start"),
    [("max", 0.0, 0), ("min", 0.0, 0), ("mean", 0.3, 0), ("max", 0.5, 0), ("mean", 0.0, 1)],
)
def test_rollout_options_match_hand_computation(fusion: str, discard: float, start: int) -> None:
    model, x = timm_vit(), images()
    _scores, attentions = timm_by_hand(model, x)
    got = attention_map(
        model,
        model,
        x,
        TARGETS[:, :2],
        ROLLOUT,
        head_fusion=fusion,
        discard_ratio=discard,
        start_block=start,
    )
    want = rollout_by_hand(attentions, 1, True, fusion=fusion, discard=discard, start=start)
    torch.testing.assert_close(got, _repeated(want, 2), **TOL)


def test_gradients_start_block_uses_later_blocks_only() -> None:
    model, x = timm_vit(), images()
    scores, attentions = timm_by_hand(model, x)
    # Only block 1: R = I + mean(relu(g1 * A1)), read by hand.
    grads = [
        torch.autograd.grad(scores[n, TARGETS[n, 0]], attentions[1], retain_graph=True)[0][n]
        for n in range(2)
    ]
    want = torch.stack(
        [
            _read(
                torch.eye(5, dtype=x.dtype) + (g * attentions[1][n].detach()).clamp(min=0).mean(0),
                1,
                True,
            )
            for n, g in enumerate(grads)
        ]
    ).unsqueeze(1)
    got = attention_map(model, model, x, TARGETS[:, :1], GRADIENTS, start_block=-1)
    torch.testing.assert_close(got, want, **TOL)


# --------------------------------------------------------------------------- K targets


class _Counter:
    def __init__(self, model: nn.Module) -> None:
        self.calls = 0
        self.handle = model.register_forward_hook(self)

    def __call__(self, *_args: object) -> None:
        self.calls += 1


@pytest.mark.parametrize("make", [timm_vit, torchvision_vit], ids=["timm", "torchvision"])
@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_k_targets_share_one_forward(make, method: str) -> None:
    model, x = make(torch.float32), images(torch.float32)
    counter = _Counter(model)
    together = attention_map(model, model, x, TARGETS, method)
    assert counter.calls == 1
    counter.handle.remove()
    apart = torch.cat(
        [attention_map(model, model, x, TARGETS[:, j : j + 1], method) for j in range(3)], dim=1
    )
    torch.testing.assert_close(together, apart, atol=1e-6, rtol=1e-5)
    assert together.shape == (2, 3, 2, 2)


def test_k_targets_fall_back_to_one_backward_per_target(monkeypatch) -> None:
    """Without a batching rule, K backward passes over the one retained graph."""
    model, x = timm_vit(), images()
    want = attention_map(model, model, x, TARGETS, GRADIENTS)
    grad = torch.autograd.grad

    def no_batching(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("no batching rule")
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    counter = _Counter(model)
    got = attention_map(model, model, x, TARGETS, GRADIENTS)
    assert counter.calls == 1
    torch.testing.assert_close(got, want, **TOL)


def test_gradients_inside_no_grad_and_inference_mode_callers() -> None:
    model, x = timm_vit(), images()
    want = attention_map(model, model, x, TARGETS, GRADIENTS)
    with torch.no_grad():
        got = attention_map(model, model, x, TARGETS, GRADIENTS)
    torch.testing.assert_close(got, want, **TOL)
    with torch.inference_mode():
        got = attention_map(model, model, x, TARGETS, GRADIENTS)
    torch.testing.assert_close(got, want, **TOL)


# --------------------------------------------------------------------------- state and errors


def test_state_restored_and_no_hooks_left() -> None:
    model = timm_vit()
    model.train()
    model.blocks[0].attn.fused_attn = True
    model.blocks[1].attn.fused_attn = False
    model.head.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    x = images()
    for method in ATTENTION_METHODS:
        attention_map(model, model, x, TARGETS, method)
        assert hook_count(model) == 0
        assert [b.attn.fused_attn for b in model.blocks] == [True, False]
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(m.training for m in model.modules())
        assert all(p.grad is None for p in model.parameters())

    tv = torchvision_vit()
    attention_map(tv, tv, x, TARGETS, GRADIENTS)
    assert hook_count(tv) == 0
    assert not any("forward" in vars(m) for m in tv.modules())


def test_state_restored_after_an_exception() -> None:
    model, x = timm_vit(), images()

    def failing(batch: torch.Tensor) -> torch.Tensor:
        model(batch)
        raise RuntimeError("boom")

    model.blocks[0].attn.fused_attn = True
    model.blocks[1].attn.fused_attn = False
    with pytest.raises(RuntimeError, match="boom"):
        attention_map(model, failing, x, TARGETS, GRADIENTS)
    assert hook_count(model) == 0
    assert [b.attn.fused_attn for b in model.blocks] == [True, False]
    tv = torchvision_vit()
    with pytest.raises(XaikitConfigError, match="out of range"):
        attention_map(tv, tv, x, torch.tensor([[7], [0]]), GRADIENTS)
    assert not any("forward" in vars(m) for m in tv.modules())
    assert hook_count(tv) == 0


def test_cnn_is_refused_before_any_pass() -> None:
    cnn = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    counter = _Counter(cnn)
    for method in ATTENTION_METHODS:
        with pytest.raises(XaikitConfigError, match="no timm attention module") as info:
            attention_map(cnn, cnn, images(torch.float32), TARGETS, method)
        assert "\n" not in str(info.value)
    assert counter.calls == 0


def test_options() -> None:
    assert options_of(ROLLOUT) == ("head_fusion", "discard_ratio", "start_block")
    assert options_of(GRADIENTS) == ("start_block",)
    model, x = timm_vit(), images()
    with pytest.raises(XaikitConfigError, match="unknown option"):
        attention_map(model, model, x, TARGETS, GRADIENTS, head_fusion="max")
    with pytest.raises(XaikitConfigError, match="head_fusion"):
        attention_map(model, model, x, TARGETS, ROLLOUT, head_fusion="median")
    with pytest.raises(XaikitConfigError, match="discard_ratio"):
        attention_map(model, model, x, TARGETS, ROLLOUT, discard_ratio=1.0)
    with pytest.raises(XaikitConfigError, match="start_block"):
        attention_map(model, model, x, TARGETS, ROLLOUT, start_block=2)
    with pytest.raises(XaikitConfigError, match="unknown attention method"):
        attention_map(model, model, x, TARGETS, "rollout")
