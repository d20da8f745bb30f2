"""Real architectures, built small: the auto layer and its layout per family, agreement with
pytorch-grad-cam given its documented ``reshape_transform``, and token layers by hand.

Every model is a random, seeded, small configuration of the real timm / torchvision class
(64 or 128 pixels, one or two blocks per stage), so the whole file runs in well under a
minute on one CPU thread. Heads that timm / torchvision zero-initialize (torchvision ViT,
timm Mixer, ResMLP, Hiera) are re-drawn from N(0, 0.02): with a zero head every gradient,
and so every Grad-CAM, is zero. The full-size sweep is ``benchmarks/bench_model_sweep.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from timm.models import (
    cait,
    coat,
    deit,
    hiera,
    levit,
    mambaout,
    mlp_mixer,
    mvitv2,
    pit,
    swin_transformer,
    vision_transformer,
    xcit,
)
from torch import nn

import xaikit
from xaikit.explain.hooks import hook_count

pytestmark = pytest.mark.filterwarnings("ignore::xaikit.explain.ExplainWarning")

CLASSES = 10

Builder = Callable[[], nn.Module]


def timm_vit(**kwargs: object) -> nn.Module:
    """timm's ViT (a class token), 4x4 patches of 16 pixels, 2 blocks; ``kwargs`` override."""
    options: dict[str, object] = dict(
        img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=2, num_classes=CLASSES
    )
    options.update(kwargs)
    return vision_transformer.VisionTransformer(**options)


def timm_deit_distilled() -> nn.Module:
    return deit.VisionTransformerDistilled(
        img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=2, num_classes=CLASSES
    )


def timm_swin() -> nn.Module:
    return swin_transformer.SwinTransformer(
        img_size=64,
        patch_size=4,
        window_size=4,
        embed_dim=32,
        depths=(1, 1),
        num_heads=(2, 4),
        num_classes=CLASSES,
    )


def tv_swin() -> nn.Module:
    return torchvision.models.SwinTransformer(
        patch_size=[4, 4],
        embed_dim=32,
        depths=[1, 1],
        num_heads=[2, 4],
        window_size=[4, 4],
        num_classes=CLASSES,
    )


def tv_vit() -> nn.Module:
    return torchvision.models.VisionTransformer(
        image_size=64,
        patch_size=16,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=CLASSES,
    )


#: (family, builder, input size, expected auto layer, expected layout).
FAMILIES: list[tuple[str, Builder, int, str, str]] = [
    ("timm-vit", timm_vit, 64, "blocks.1.norm1", "tokens 1+4x4"),
    ("timm-deit-distilled", timm_deit_distilled, 64, "blocks.1.norm1", "tokens 2+4x4"),
    ("timm-swin", timm_swin, 64, "norm", "nhwc 8x8"),
    ("tv-swin", tv_swin, 64, "permute", "nchw 8x8"),
    ("tv-vit", tv_vit, 64, "encoder.layers.encoder_layer_1.ln_1", "tokens 1+4x4"),
    (
        "timm-mixer",
        lambda: mlp_mixer.MlpMixer(
            num_classes=CLASSES, img_size=64, patch_size=16, num_blocks=2, embed_dim=64
        ),
        64,
        "norm",
        "tokens 4x4",
    ),
    (
        "timm-resmlp",
        lambda: mlp_mixer.MlpMixer(
            num_classes=CLASSES,
            img_size=64,
            patch_size=16,
            num_blocks=2,
            embed_dim=64,
            mlp_ratio=4,
            block_layer=mlp_mixer.ResBlock,
            norm_layer=mlp_mixer.Affine,
        ),
        64,
        "norm",
        "tokens 4x4",
    ),
    (
        # The class token joins in the class-attention blocks: the first norm of the last.
        "timm-cait",
        lambda: cait.Cait(
            img_size=64,
            patch_size=16,
            embed_dim=64,
            depth=2,
            num_heads=2,
            depth_token_only=1,
            num_classes=CLASSES,
        ),
        64,
        "blocks_token_only.0.norm1",
        "tokens 1+4x4",
    ),
    (
        # Not the local-patch-interaction branch of the last XCA block.
        "timm-xcit",
        lambda: xcit.Xcit(
            img_size=64,
            patch_size=16,
            embed_dim=64,
            depth=2,
            num_heads=2,
            cls_attn_layers=1,
            num_classes=CLASSES,
        ),
        64,
        "cls_attn_blocks.0.norm1",
        "tokens 1+4x4",
    ),
    (
        # Its stages return (map, class tokens): not the tuple whose map misses the head.
        "timm-pit",
        lambda: pit.PoolingVisionTransformer(
            img_size=64,
            patch_size=8,
            stride=4,
            base_dims=(16, 16),
            depth=(1, 1),
            heads=(2, 4),
            mlp_ratio=2,
            num_classes=CLASSES,
        ),
        64,
        "transformers.1.blocks.0.norm1",
        "tokens 1+8x8",
    ),
    (
        "timm-levit",
        lambda: levit.Levit(
            img_size=128,
            embed_dim=(32, 48),
            key_dim=8,
            depth=(1, 1),
            num_heads=(2, 3),
            num_classes=CLASSES,
        ),
        128,
        "stages.1",
        "tokens 4x4",
    ),
    (
        "timm-mambaout",
        lambda: mambaout.MambaOut(depths=(1, 1, 1, 1), dims=(16, 24, 32, 48), num_classes=CLASSES),
        64,
        "stages.3",
        "nhwc 2x2",
    ),
    (
        # coat_lite: not the conv-relative-position module shared by a stage's blocks.
        "timm-coat-lite",
        lambda: coat.CoaT(
            img_size=128,
            patch_size=4,
            embed_dims=(16, 32, 48, 64),
            serial_depths=(1, 1, 1, 1),
            num_heads=8,
            mlp_ratios=(2, 2, 2, 2),
            num_classes=CLASSES,
        ),
        128,
        "serial_blocks4.0.norm1",
        "tokens 1+4x4",
    ),
    (
        "timm-mvitv2",
        lambda: mvitv2.MultiScaleVit(
            mvitv2.MultiScaleVitCfg(depths=(1, 1), embed_dim=32, num_heads=1),
            img_size=(64, 64),
            num_classes=CLASSES,
        ),
        64,
        "norm",
        "tokens 8x8",
    ),
    (
        "timm-hiera",
        lambda: hiera.Hiera(
            img_size=(128, 128), embed_dim=16, num_heads=1, stages=(1, 1, 1, 1), num_classes=CLASSES
        ),
        128,
        "blocks.3",
        "tokens 4x4",
    ),
    (
        "tv-resnet18",
        lambda: torchvision.models.resnet18(num_classes=CLASSES),
        64,
        "layer4",
        "nchw 2x2",
    ),
    (
        "tv-mobilenet_v3_small",
        lambda: torchvision.models.mobilenet_v3_small(num_classes=CLASSES),
        64,
        "features.12",
        "nchw 2x2",
    ),
    (
        "tv-densenet121",
        lambda: torchvision.models.densenet121(num_classes=CLASSES),
        64,
        "features.norm5",
        "nchw 2x2",
    ),
]


#: Builders by family name.
BUILDERS: dict[str, Builder] = {family[0]: family[1] for family in FAMILIES}
#: Input size by family name.
SIZES: dict[str, int] = {family[0]: family[2] for family in FAMILIES}


def build(builder: Builder) -> tuple[nn.Module, list[str]]:
    """The model (seed 0, eval mode), with zero-initialized heads re-drawn; their names."""
    torch.manual_seed(0)
    model = builder().eval()
    generator = torch.Generator().manual_seed(0)
    redrawn = []
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.Linear)
            and module.out_features == CLASSES
            and not module.weight.any()
        ):
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.02)
            redrawn.append(name)
    return model, redrawn


def random_images(size: int = 64, n: int = 2) -> torch.Tensor:
    """``(n, 3, size, size)`` standard normal images, seed 1."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def pearson(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    pair = torch.stack([torch.as_tensor(a).flatten(), torch.as_tensor(b).flatten()]).double()
    return float(torch.corrcoef(pair)[0, 1])


# --------------------------------------------------------------------------- (a) families


@pytest.mark.parametrize(
    ("builder", "size", "layer", "layout"),
    [pytest.param(*family[1:], id=family[0]) for family in FAMILIES],
)
def test_auto_layer_and_layout_per_family(builder, size, layer, layout):
    model, _redrawn = build(builder)
    x = random_images(size)
    result = xaikit.explain(model, x, target="all", return_result=True)
    assert (result.layer, result.layout) == (layer, layout)
    assert result.maps.shape == (2, CLASSES, size, size)
    assert torch.isfinite(result.maps).all()
    assert result.maps.min() >= 0 and result.maps.max() <= 1
    grid = tuple(int(g) for g in layout.split()[-1].split("+")[-1].split("x"))
    assert tuple(result.raw.shape[2:]) == grid
    # Random heads give some classes no positive evidence, but never every class.
    assert (~result.degenerate).any(dim=1).all(), result.degenerate
    assert hook_count(model) == 0 and not model.training


@pytest.mark.parametrize("family", ["tv-vit", "timm-mixer", "timm-resmlp", "timm-hiera"])
def test_zero_initialized_heads_are_flagged_then_explained_once_redrawn(family):
    builder = BUILDERS[family]
    torch.manual_seed(0)
    model = builder().eval()
    x = random_images(SIZES[family])
    zero = xaikit.explain(model, x, target=[1, 2], return_result=True)
    assert zero.degenerate.all()  # every gradient is 0 through an all-zero head
    model, redrawn = build(builder)
    assert len(redrawn) == 1
    result = xaikit.explain(model, x, target=[1, 2], return_result=True)
    assert result.layer == zero.layer  # the choice does not depend on the head's weights
    assert not result.degenerate.any()


# --------------------------------------------------------------------------- (b) pgc


def vit_reshape(prefix: int, height: int, width: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """pytorch-grad-cam's documented ViT ``reshape_transform`` (``prefix`` tokens dropped)."""

    def reshape_transform(tensor: torch.Tensor) -> torch.Tensor:
        result = tensor[:, prefix:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    return reshape_transform


def swin_reshape(height: int, width: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """pytorch-grad-cam's documented Swin ``reshape_transform``, channels taken from the last
    axis so that it reads both ``(N, H*W, C)`` (inside a block) and ``(N, H, W, C)``."""

    def reshape_transform(tensor: torch.Tensor) -> torch.Tensor:
        result = tensor.reshape(tensor.size(0), height, width, tensor.size(-1))
        return result.transpose(2, 3).transpose(1, 2)

    return reshape_transform


class RawGradCAM(GradCAM):
    """pytorch-grad-cam's Grad-CAM, keeping ``get_cam_image``'s signed map (before its ReLU
    and upsampling) for the comparison at the layer grid."""

    raw: np.ndarray | None = None

    def get_cam_image(self, *args: object, **kwargs: object) -> np.ndarray:
        cam = super().get_cam_image(*args, **kwargs)
        self.raw = cam
        return cam


def pgc_gradcam(
    model: nn.Module,
    layer: nn.Module,
    x: torch.Tensor,
    target: int,
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-grad-cam's heatmaps ``(N, H, W)`` and raw maps ``(N, h, w)`` for one class."""
    cam = RawGradCAM(model, target_layers=[layer], reshape_transform=reshape_transform)
    try:
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)] * x.shape[0])
        assert cam.raw is not None
        return heat, cam.raw
    finally:
        cam.activations_and_grads.release()


PGC_CASES = [
    pytest.param(timm_vit, "blocks.1.norm1", vit_reshape(1, 4, 4), "tokens 1+4x4", id="timm-vit"),
    pytest.param(
        timm_deit_distilled,
        "blocks.1.norm1",
        vit_reshape(2, 4, 4),
        "tokens 2+4x4",
        id="timm-deit-distilled",
    ),
    pytest.param(
        tv_vit,
        "encoder.layers.encoder_layer_1.ln_1",
        vit_reshape(1, 4, 4),
        "tokens 1+4x4",
        id="tv-vit",
    ),
    # The last block (pytorch-grad-cam's documented choice) and the final norm (auto).
    # timm's Swin block flattens to (N, H*W, C) around its MLP: norm2 reads as tokens.
    pytest.param(
        timm_swin, "layers.1.blocks.0.norm2", swin_reshape(8, 8), "tokens 8x8", id="timm-swin-block"
    ),
    pytest.param(timm_swin, "norm", swin_reshape(8, 8), "nhwc 8x8", id="timm-swin-norm"),
    pytest.param(tv_swin, "permute", None, "nchw 8x8", id="tv-swin"),
]


@pytest.mark.parametrize(("builder", "layer", "reshape_transform", "layout"), PGC_CASES)
def test_gradcam_agrees_with_pytorch_grad_cam_at_the_last_block(
    builder, layer, reshape_transform, layout
):
    model, _redrawn = build(builder)
    x = random_images(64)
    targets = [1, 2]
    result = xaikit.explain(
        model, x, target=[targets] * x.shape[0], layer=layer, return_result=True
    )
    assert result.layout == layout
    module = model.get_submodule(layer)
    for k, target in enumerate(targets):
        heat, raw = pgc_gradcam(model, module, x, target, reshape_transform)
        for i in range(x.shape[0]):
            ours = result.raw[i, k]
            assert ours.shape == raw[i].shape
            assert ours.std() > 0 and raw[i].std() > 0
            # The signed maps at the layer grid, then the heatmaps both upsample bilinearly.
            assert pearson(ours, raw[i]) >= 0.999, (k, i)
            assert not result.degenerate[i, k]
            assert pearson(result.maps[i, k], heat[i]) >= 0.999, (k, i)
    assert hook_count(model) == 0


# --------------------------------------------------------------------------- (c) by hand


class _Record(torch.autograd.Function):
    """Identity whose backward counts its calls (spliced onto the logits)."""

    backward_calls = 0

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        _Record.backward_calls += 1
        return grad


@pytest.fixture
def recorded_vit():
    """A timm ViT whose logits count backward passes."""
    model, _ = build(timm_vit)
    handle = model.head.register_forward_hook(lambda _m, _i, out: _Record.apply(out))
    _Record.backward_calls = 0
    yield model
    handle.remove()


def manual_gradcam(model: nn.Module, layer: str, x: torch.Tensor, target: int) -> torch.Tensor:
    """Grad-CAM of a class-token ViT's token layer written out: ``(N, 4, 4)``, signed."""
    store: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda _m, _i, out: store.append(out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logits[:, target].sum(), store[0])
    acts, grad = store[0][:, 1:].detach(), grad[:, 1:]  # (N, 16, C), class token dropped
    weights = grad.mean(dim=1, keepdim=True)
    return (weights * acts).sum(dim=-1).reshape(x.shape[0], 4, 4)


@pytest.mark.parametrize(
    ("pool", "layer"), [("avg", "blocks.1"), ("token", "blocks.0"), ("token", "blocks.1.norm1")]
)
def test_an_explicit_token_layer_by_hand_matches_the_formula(pool, layer):
    model, _ = build(lambda: timm_vit(global_pool=pool))
    x = random_images(64)
    result = xaikit.explain(
        model, x, target=[3, 5], layer=layer, reshape="tokens", return_result=True
    )
    assert result.layout == "tokens 1+4x4"
    assert result.raw.shape == (2, 1, 4, 4)
    expected = torch.cat(
        [manual_gradcam(model, layer, x[i : i + 1], t) for i, t in [(0, 3), (1, 5)]]
    )
    torch.testing.assert_close(result.raw[:, 0], expected, atol=1e-6, rtol=1e-4)
    assert not result.degenerate.any()
    assert hook_count(model) == 0


def test_the_last_block_of_a_class_token_vit_is_flagged_not_faked():
    """Its patch tokens reach the class-token head through nothing: all-zero, flagged."""
    model, _ = build(timm_vit)
    with pytest.warns(xaikit.explain.ExplainWarning, match="constant heatmaps"):
        result = xaikit.explain(
            model,
            random_images(64),
            target=[1, 2],
            layer="blocks.1",
            reshape="tokens",
            return_result=True,
        )
    assert result.layout == "tokens 1+4x4"
    assert result.degenerate.all() and not result.raw.any()


def _refused(model: nn.Module, x: torch.Tensor, match: str, **kwargs: object) -> str:
    with pytest.raises(xaikit.XaikitConfigError, match=match) as info:
        xaikit.explain(model, x, target=[1, 2], **kwargs)
    assert _Record.backward_calls == 0, "a backward pass ran before the error"
    return str(info.value)


def test_the_backward_counter_sees_a_normal_call(recorded_vit):
    xaikit.explain(recorded_vit, random_images(64), target=[1, 2], layer="blocks.1.norm1")
    assert _Record.backward_calls >= 1


def test_attention_keys_are_refused_before_any_backward_naming_the_shape(recorded_vit):
    message = _refused(
        recorded_vit, random_images(64), "not a map of the input", layer="blocks.1.attn.k_norm"
    )
    assert "(N, 2x17x32)" in message and "blocks.1.attn.k_norm" in message
    assert hook_count(recorded_vit) == 1  # the counter's own hook, none of xaikit's


def test_the_attention_matrix_is_refused_before_any_backward_naming_the_shape():
    # 14x14 patches: the attention probabilities are (N, heads, 197, 197).
    model, _ = build(lambda: timm_vit(img_size=224, embed_dim=32))
    model.blocks[1].attn.fused_attn = False  # so that attn_drop runs
    handle = model.head.register_forward_hook(lambda _m, _i, out: _Record.apply(out))
    _Record.backward_calls = 0
    try:
        message = _refused(
            model, random_images(224), "not a map of the input", layer="blocks.1.attn.attn_drop"
        )
    finally:
        handle.remove()
    assert "(N, 2x197x197)" in message


def test_reshape_nchw_on_a_channels_last_swin_layer_is_refused():
    model, _ = build(timm_swin)
    handle = model.head.fc.register_forward_hook(lambda _m, _i, out: _Record.apply(out))
    _Record.backward_calls = 0
    try:
        message = _refused(
            model, random_images(64), "does not read as nchw", layer="norm", reshape="nchw"
        )
    finally:
        handle.remove()
    assert "nhwc 8x8" in message  # what it does read as


def test_a_reshape_callable_equals_the_builtin_tokens_reading():
    model, _ = build(timm_vit)
    x = random_images(64)

    def reshape(tensor: torch.Tensor) -> torch.Tensor:
        return tensor[:, 1:].reshape(tensor.shape[0], 4, 4, tensor.shape[-1]).permute(0, 3, 1, 2)

    builtin = xaikit.explain(
        model, x, target=[[1, 2]] * 2, layer="blocks.1.norm1", reshape="tokens", return_result=True
    )
    custom = xaikit.explain(
        model, x, target=[[1, 2]] * 2, layer="blocks.1.norm1", reshape=reshape, return_result=True
    )
    assert custom.layout == "custom 4x4"
    torch.testing.assert_close(custom.raw, builtin.raw)
    torch.testing.assert_close(custom.maps, builtin.maps)


# --------------------------------------------------------------------------- (c) by name
#
# An explicit attention-internal layer whose shape passes for a map: refused by what it is.


def test_a_small_attention_matrix_is_refused_before_any_backward():
    """At 4x4 patches the attention probabilities (N, 2, 17, 17) fit a 16x16 grid's
    tolerance as nchw 17x17: the shape alone would not refuse them."""
    model, _ = build(timm_vit)
    model.blocks[1].attn.fused_attn = False  # so that attn_drop runs
    handle = model.head.register_forward_hook(lambda _m, _i, out: _Record.apply(out))
    _Record.backward_calls = 0
    try:
        message = _refused(
            model, random_images(64), "inside an attention module", layer="blocks.1.attn.attn_drop"
        )
    finally:
        handle.remove()
    assert "(N, 2x17x17)" in message


def test_the_qkv_projection_is_refused_before_any_backward(recorded_vit):
    """(N, 1+16, 3*C) reads as tokens 1+4x4 with q|k|v as channels."""
    message = _refused(
        recorded_vit, random_images(64), "inside an attention module", layer="blocks.1.attn.qkv"
    )
    assert "(N, 17x192)" in message


# --------------------------------------------------------------------------- sweep regressions
#
# Wrong auto choices the full-size sweep found (and xaikit since fixed), kept small here.


def test_a_vit_with_as_many_classes_as_its_width_keeps_its_last_block():
    """Its attention projections output embed_dim = num_classes channels per token: they are
    no map of class scores."""
    model, _ = build(lambda: timm_vit(num_classes=64))
    result = xaikit.explain(model, random_images(64), target=[1, 2], return_result=True)
    assert (result.layer, result.layout) == ("blocks.1.norm1", "tokens 1+4x4")


def test_coat_parallel_blocks_auto_layer_is_not_a_passed_through_tuple():
    """CoaT's ParallelBlock returns its x1 input unchanged as the first element of its tuple:
    a tensor consumed before the block, whose gradient flows through those earlier readers.
    The last block's first norm of the coarsest branch, what its class token attends to, wins."""
    torch.manual_seed(0)
    model = coat.CoaT(
        img_size=64,
        patch_size=4,
        embed_dims=(16, 32, 32, 32),
        serial_depths=(1, 1, 1, 1),
        parallel_depth=1,
        num_heads=8,
        mlp_ratios=(2, 2, 2, 2),
        num_classes=CLASSES,
    ).eval()
    result = xaikit.explain(model, random_images(64), target=[1, 2], return_result=True)
    assert result.layer == "parallel_blocks.0.norm14"


def test_a_resnet_with_as_many_outputs_as_its_width_keeps_its_last_stage():
    """Every layer4 map of resnet18 has 512 channels, so with 512 outputs its 1x1 downsample
    conv looks like a map of class scores; weighted layers follow it, so it is not one."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=512).eval()
    result = xaikit.explain(model, random_images(64), target=[1, 2], return_result=True)
    assert result.layer == "layer4"
