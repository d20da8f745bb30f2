"""Reading a layer's output as a map of the input: nchw, channels-last nhwc, tokens.

The layout is decided from the shape, the input size and the model's own patch grid, before
any backward pass; :func:`to_map` turns activations and gradients alike into ``(N, C, H, W)``
so a CAM at an NHWC or token layer equals the CAM of the same tensor laid out by hand.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import xaikit
from xaikit.errors import XaikitConfigError
from xaikit.explain.layers import auto_layer, trace_layers
from xaikit.explain.layouts import (
    ModelHints,
    fits_input,
    layout_for,
    read_layout,
    to_map,
)


@pytest.mark.parametrize(
    ("shape", "size", "expected"),
    [
        ((2, 512, 7, 7), (224, 224), "nchw 7x7"),
        ((2, 7, 7, 768), (224, 224), "nhwc 7x7"),
        ((2, 56, 56, 96), (224, 224), "nhwc 56x56"),
        ((2, 64, 56, 56), (224, 224), "nchw 56x56"),
        ((2, 197, 192), (224, 224), "tokens 1+14x14"),
        ((2, 198, 192), (224, 224), "tokens 2+14x14"),
        ((2, 196, 768), (224, 224), "tokens 14x14"),
        ((2, 50, 256), (224, 224), "tokens 1+7x7"),
        ((2, 2048, 8, 8), (299, 299), "nchw 8x8"),
        ((2, 768, 17, 17), (299, 299), "nchw 17x17"),  # valid convolutions trim pixels
        ((2, 64, 14, 7), (224, 112), "nchw 14x7"),  # a non-square input
        ((2, 16, 10), (40,), "nchw 10"),  # a 1-D signal
    ],
)
def test_shapes_read_as_the_layout_they_are(shape, size, expected):
    layout = read_layout(shape, size)
    assert layout is not None and layout.describe() == expected


@pytest.mark.parametrize(
    "shape",
    [
        (2, 3, 197, 64),  # the keys of a timm ViT block, (N, heads, T, head_dim)
        (2, 4, 196, 196),  # an attention matrix
        (2, 1000),  # logits
        (2, 7, 768),  # 7 "tokens": no grid of the input
    ],
)
def test_attention_internals_and_vectors_read_as_no_map(shape):
    assert read_layout(shape, (224, 224)) is None


def test_the_model_stated_prefix_and_grid_win_over_a_guess():
    # 200 tokens with the model's word for it: 4 prefix tokens and a 14x14 patch grid. Told
    # that there is one prefix token, 199 tokens make no grid of the input: refused.
    hints = ModelHints(patch_grid=(14, 14), prefix=4)
    layout = read_layout((1, 200, 64), (224, 224), hints)
    assert layout is not None and (layout.prefix, layout.grid) == (4, (14, 14))
    assert read_layout((1, 200, 64), (224, 224), ModelHints(prefix=1)) is None


def test_fits_input_allows_rounding_but_not_a_different_stride_per_axis():
    assert fits_input((7, 7), (224, 224)) and fits_input((4, 4), (224, 224))  # ceil(3.5)
    assert fits_input((147, 147), (299, 299))  # stride 2 minus a few trimmed pixels
    assert not fits_input((7, 768), (224, 224))
    assert not fits_input((196, 196), (224, 224))
    assert not fits_input((64, 56), (224, 224))


def test_to_map_lays_out_tokens_and_channels_last_like_by_hand():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 1 + 3 * 4, 5, generator=generator)
    layout = read_layout(tuple(tokens.shape), (24, 32))
    assert layout is not None and (layout.prefix, layout.grid) == (1, (3, 4))
    by_hand = tokens[:, 1:].reshape(2, 3, 4, 5).permute(0, 3, 1, 2)
    assert torch.equal(to_map(tokens, layout), by_hand)
    # Per-target gradients (N, K, T, C) keep both leading axes.
    grads = torch.randn(2, 3, 13, 5, generator=generator)
    mapped = to_map(grads, layout, lead=2)
    assert mapped.shape == (2, 3, 5, 3, 4)
    assert torch.equal(mapped[1, 2], grads[1, 2, 1:].reshape(3, 4, 5).permute(2, 0, 1))
    nhwc = torch.randn(2, 7, 7, 96, generator=generator)
    layout = read_layout(tuple(nhwc.shape), (224, 224))
    assert torch.equal(to_map(nhwc, layout), nhwc.permute(0, 3, 1, 2))


def test_a_shape_that_is_no_map_is_refused_naming_what_was_seen():
    with pytest.raises(XaikitConfigError, match=r"outputs \(N, 3x197x64\) for 224x224") as info:
        layout_for("blocks.0.attn.k_norm", (2, 3, 197, 64), (224, 224), ModelHints())
    assert "reshape=" in str(info.value) and "nchw, nhwc, tokens" in str(info.value)
    with pytest.raises(XaikitConfigError, match="does not read as nchw"):
        layout_for("norm", (2, 7, 7, 768), (224, 224), ModelHints(), "nchw")


class ChannelsLastNet(nn.Module):
    """A conv stem, then a block that works channels-last (LayerNorm over C), a pooled head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 4, stride=4)
        self.norm = nn.LayerNorm(6)
        self.mix = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).permute(0, 2, 3, 1)  # (N, H, W, C)
        x = self.mix(self.norm(x)).relu()
        return self.head(x.mean(dim=(1, 2)))


class TokenNet(nn.Module):
    """Patch tokens with a class token; the head reads the class token after one mixing."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.norm = nn.LayerNorm(8)
        self.mix = nn.Linear(8, 8)
        self.last = nn.Identity()
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = self.norm(tokens)
        # The class token attends to every token (softmax weights), so patch tokens matter.
        weights = torch.softmax(tokens @ tokens[:, :1].transpose(1, 2), dim=1)
        mixed = tokens + (weights * self.mix(tokens)).sum(1, keepdim=True)
        return self.head(self.last(mixed)[:, 0])


def _gradcam_by_hand(model, x, layer_module, to_nchw, target):
    store = {}

    def hook(_m, _i, out):
        out.retain_grad()
        store["a"] = out

    handle = layer_module.register_forward_hook(hook)
    try:
        logits = model(x)
        logits[:, target].sum().backward()
    finally:
        handle.remove()
    acts, grads = to_nchw(store["a"].detach()), to_nchw(store["a"].grad)
    return (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1)


def test_gradcam_at_a_channels_last_layer_equals_the_permuted_computation():
    torch.manual_seed(0)
    model = ChannelsLastNet().eval()
    x = torch.randn(2, 3, 32, 32)
    result = xaikit.explain(model, x, target=1, layer="mix", return_result=True)
    assert result.layout == "nhwc 8x8"
    expected = _gradcam_by_hand(model, x, model.mix, lambda t: t.permute(0, 3, 1, 2), 1)
    torch.testing.assert_close(result.raw[:, 0], expected, atol=1e-6, rtol=1e-5)


def test_gradcam_at_a_token_layer_drops_the_class_token():
    torch.manual_seed(0)
    model = TokenNet().eval()
    x = torch.randn(2, 3, 16, 24)
    result = xaikit.explain(model, x, target=2, layer="norm", return_result=True)
    assert result.layout == "tokens 1+4x6"
    assert result.heatmap.shape == (2, 16, 24)

    def to_nchw(t):
        return t[:, 1:].reshape(t.shape[0], 4, 6, t.shape[-1]).permute(0, 3, 1, 2)

    expected = _gradcam_by_hand(model, x, model.norm, to_nchw, 2)
    torch.testing.assert_close(result.raw[:, 0], expected, atol=1e-6, rtol=1e-5)
    # The same through a reshape callable (pytorch-grad-cam's reshape_transform).
    custom = xaikit.explain(model, x, target=2, layer="norm", reshape=to_nchw, return_result=True)
    assert custom.layout == "custom 4x6"
    torch.testing.assert_close(custom.raw, result.raw)


def test_auto_takes_the_tokens_the_class_token_reads_not_the_last_output():
    # `last` outputs every token, but the head reads only the class token: its patch tokens
    # get no gradient, so "auto" takes `mix`, whose patch tokens are summed into it.
    torch.manual_seed(0)
    model = TokenNet().eval()
    x = torch.rand(1, 3, 16, 16)
    assert auto_layer(model, x) == "mix"
    rows = {r.name: r for r in trace_layers(model, x)}
    assert rows["last"].gradient == "zero" and rows["mix"].gradient == "nonzero"
    assert rows["last"].layout.describe() == "tokens 1+4x4"


def test_auto_reads_channels_last_blocks():
    model = ChannelsLastNet().eval()
    assert auto_layer(model, torch.rand(1, 3, 32, 32)) == "mix"


class SharedBlockNet(nn.Module):
    """One conv module called twice (a shared block), then a final block."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)
        self.final = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.final(self.shared(self.shared(x).relu()).relu())
        # A second use of `shared` after `final` would make it the last to finish.
        side = self.shared(x)
        return self.head((x + 0 * side).mean(dim=(2, 3)))


def test_auto_skips_a_module_that_runs_twice_and_explain_warns_when_chosen():
    model = SharedBlockNet().eval()
    x = torch.rand(2, 3, 8, 8)
    rows = {r.name: r for r in trace_layers(model, x[:1])}
    assert rows["shared"].calls == 3
    assert auto_layer(model, x) == "final"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xaikit.explain(model, x, layer="shared")
    # this untrained model may also get constant maps (a DegenerateMapsWarning beside it)
    said = [str(w.message) for w in caught if issubclass(w.category, xaikit.explain.ExplainWarning)]
    assert any("ran 3 times in one forward" in text for text in said), said


class TupleNet(nn.Module):
    """A stage that returns (map, summary) where the head reads the summary (PiT)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(Stage(self.body)(x)[1])


class Stage(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x):
        feature = self.body(x)
        return feature.detach(), feature.mean(dim=(2, 3))


def test_a_tuple_whose_first_tensor_is_unused_is_named_as_the_cause():
    model = TupleNet().eval()
    model.stage = Stage(model.body)  # registered, so the layer can be chosen by name
    model.forward = lambda x: model.head(model.stage(x)[1])  # type: ignore[method-assign]
    x = torch.rand(2, 3, 8, 8)
    assert auto_layer(model, x) == "body"
    with pytest.raises(XaikitConfigError, match="returns a tuple"):
        xaikit.explain(model, x, layer="stage")


def test_hugging_face_style_outputs_are_indexed_by_position():
    class Output(dict):
        """Like transformers' ModelOutput: a mapping with attributes and to_tuple()."""

        def __getattr__(self, key):
            return self[key]

        def to_tuple(self):
            return tuple(v for v in self.values() if v is not None)

    class Wrapped(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return Output(loss=None, logits=self.inner(x), hidden=x)

    torch.manual_seed(0)
    inner = xaikit.create_model("simple_cnn", num_classes=3, widths=(4, 8)).eval()
    x = torch.rand(2, 3, 16, 16)
    plain = xaikit.explain(inner, x, target=1)
    for output in (None, 0, "logits"):
        mapped = xaikit.explain(Wrapped(inner), x, target=1, output=output)
        torch.testing.assert_close(mapped, plain)


class ListBlock(nn.Module):
    """Takes and returns a list, and checks that it is one (timm's SelecSLS blocks do)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        assert isinstance(x, list), "a list in, a list out"
        return [self.conv(x[0]), x[0]]


class ListNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = ListBlock()
        self.after = ListBlockAfter()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.after(self.block([x]))[0].mean(dim=(2, 3)))


class ListBlockAfter(nn.Module):
    def forward(self, x):
        assert isinstance(x, list), "a list in, a list out"
        return [x[0].relu(), x[1]]


def test_a_list_output_stays_a_list_when_captured_or_traced():
    torch.manual_seed(0)
    model = ListNet().eval()
    x = torch.rand(2, 3, 8, 8)
    assert auto_layer(model, x) == "after"  # traced: the list reached `after` as a list
    result = xaikit.explain(model, x, target=1, layer="block", return_result=True)
    assert result.layout == "nchw 8x8" and result.raw.shape == (2, 1, 8, 8)
