"""Models as people have them: odd outputs, several inputs, wrappers, 1-D, in-place ReLU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xaikit
import xaikit.explain as X
from xaikit.errors import XaikitConfigError
from xaikit.explain import ExplainWarning

pytestmark = pytest.mark.filterwarnings("ignore::xaikit.explain.ExplainWarning")
METHODS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam"]


class Wrapped(nn.Module):
    """A zoo model whose forward returns something other than a tensor."""

    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        self.model = model
        self.kind = kind

    def forward(self, x: torch.Tensor):
        features = self.model.features(x)
        logits = self.model.head(features)
        embedding = features.mean(dim=(2, 3))
        if self.kind == "tuple":
            return logits, embedding
        if self.kind == "tuple-last":
            return embedding, logits
        if self.kind == "dict":
            return {"embedding": embedding, "logits": logits}
        if self.kind == "dict-scores":
            return {"embedding": embedding, "scores": logits}
        return SimpleNamespace(logits=logits, embedding=embedding)


@pytest.mark.parametrize(
    ("kind", "output"),
    [
        ("tuple", None),
        ("tuple-last", 1),
        ("dict", None),
        ("dict-scores", "scores"),
        ("object", None),
        ("object", "logits"),
        ("tuple", lambda out: out[0]),
    ],
)
def test_tuple_dict_and_object_outputs_give_the_plain_models_maps(
    zoo_multiclass, images, kind, output
):
    expected = X.explain(zoo_multiclass, images, method=METHODS, target="all", layer="features")
    wrapped = Wrapped(zoo_multiclass, kind).eval()
    got = X.explain(
        wrapped, images, method=METHODS, target="all", layer="model.features", output=output
    )
    for name in METHODS:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4)


def test_an_unselectable_output_names_the_keys(zoo_multiclass, images):
    with pytest.raises(XaikitConfigError, match=r"keys \['embedding', 'scores'\]"):
        X.explain(Wrapped(zoo_multiclass, "dict-scores"), images, layer="model.features")
    with pytest.raises(XaikitConfigError, match="out of range"):
        X.explain(Wrapped(zoo_multiclass, "tuple"), images, output=5, layer="model.features")


class TwoInputs(nn.Module):
    """An image and a tabular vector (one per image) -> 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.tab = nn.Linear(4, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, image: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        features = self.act(self.conv(image)) * torch.sigmoid(self.tab(table))[:, :, None, None]
        return self.fc(features.mean(dim=(2, 3)))


def test_two_input_model_equals_a_hand_wrapped_single_input_model(images):
    model = TwoInputs().eval()
    table = torch.randn(4, 4)

    class FixedRow(nn.Module):
        """The image-only model a user would write for sample ``n``'s table row."""

        def __init__(self, n: int) -> None:
            super().__init__()
            self.inner = model
            self.n = n

        def forward(self, x):
            return self.inner(x, table[self.n].expand(x.shape[0], -1))

    per_sample = [
        X.explain(
            FixedRow(n).eval(), images[n : n + 1], method=METHODS, target="all", layer="inner.act"
        )
        for n in range(4)
    ]
    expected = {name: torch.cat([p[name] for p in per_sample]) for name in METHODS}
    by_tuple = X.explain(model, (images, table), method=METHODS, target="all", layer="act")
    by_dict = X.explain(
        model,
        {"image": images, "table": table},
        method=METHODS,
        target="all",
        layer="act",
        attribute_to="image",
    )
    for name in METHODS:
        torch.testing.assert_close(by_tuple[name], expected[name], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(by_dict[name], expected[name], atol=1e-5, rtol=1e-4)
    auto = X.explain(model, (images, table), target=1, return_result=True)
    assert auto.layer == "act" and auto.maps.shape == (4, 1, 16, 16)


def test_attribute_to_the_second_input_and_its_errors(images):
    model = TwoInputs().eval()
    swapped = lambda table, image: model(image, table)  # noqa: E731

    class Swapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, table, image):
            return swapped(table, image)

    table = torch.randn(4, 4)
    got = X.explain(Swapped().eval(), (table, images), attribute_to=1, layer="inner.act")
    want = X.explain(model, (images, table), layer="act")
    torch.testing.assert_close(got, want)
    with pytest.raises(XaikitConfigError, match="attribute_to=2"):
        X.explain(model, (images, table), attribute_to=2)
    with pytest.raises(XaikitConfigError, match="not one of the input keys"):
        X.explain(model, {"image": images, "table": table}, attribute_to="img")


def test_dataparallel_is_unwrapped(zoo_multiclass, images):
    wrapped = nn.DataParallel(zoo_multiclass)
    torch.testing.assert_close(
        X.explain(wrapped, images, method=METHODS, layer="module.features.block2")["gradcam"],
        X.explain(zoo_multiclass, images, method=METHODS, layer="features.block2")["gradcam"],
    )
    torch.testing.assert_close(X.explain(wrapped, images), X.explain(zoo_multiclass, images))


class InPlace(nn.Module):
    """conv -> ReLU (module or functional, in place or not) around the target layer."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.mode = mode
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=mode == "module")
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        h = self.relu(h) if self.mode != "functional" else F.relu(h, inplace=True)
        h = self.conv2(h)
        h = self.relu(h) if self.mode != "functional" else F.relu(h, inplace=True)
        return self.fc(h.mean(dim=(2, 3)))


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_in_place_relu_models_give_the_out_of_place_result(images, layer):
    reference = X.explain(InPlace("none").eval(), images, method=METHODS, target="all", layer=layer)
    for mode in ("module", "functional"):
        got = X.explain(InPlace(mode).eval(), images, method=METHODS, target="all", layer=layer)
        for name in METHODS:
            torch.testing.assert_close(got[name], reference[name])


def test_one_dimensional_conv_models_give_n_by_l_maps():
    torch.manual_seed(0)
    model = xaikit.create_model("simple_cnn1d", num_classes=4, in_channels=2, widths=(8, 16))
    signals = torch.randn(3, 2, 40)
    results = X.explain(model.eval(), signals, method=METHODS, return_result=True)
    for result in results.values():
        assert result.heatmap.shape == (3, 40)
        assert result.raw.dim() == 3 and result.raw.shape[0] == 3
        assert torch.isfinite(result.maps).all()
    assert results["gradcam"].layer == "features.block2"


def test_a_final_softmax_is_warned_about(zoo_multiclass, images):
    model = nn.Sequential(zoo_multiclass, nn.Softmax(dim=1)).eval()
    with pytest.warns(ExplainWarning, match="ends in nn.Softmax"):
        X.explain(model, images, layer="0.features")
    with pytest.warns(ExplainWarning, match="score='prob' applies"):
        X.explain(model, images, layer="0.features", score="prob")


def test_wrong_layer_names_list_close_valid_ones(zoo_multiclass, images):
    with pytest.raises(
        XaikitConfigError, match=r"no layer named 'features.blok2'.*features.block2"
    ):
        X.explain(zoo_multiclass, images, layer="features.blok2")
    with pytest.raises(XaikitConfigError, match="not part of this model"):
        X.explain(zoo_multiclass, images, layer=nn.Conv2d(1, 1, 1))


def test_a_layer_that_never_runs_fails_before_any_backward(images, monkeypatch):
    model = xaikit.create_model("simple_cnn", num_classes=5, widths=(8, 16)).eval()
    model.unused = nn.Conv2d(3, 3, 1)
    calls = []
    real_grad = torch.autograd.grad
    monkeypatch.setattr(
        torch.autograd, "grad", lambda *a, **k: calls.append(1) or real_grad(*a, **k)
    )
    with pytest.raises(XaikitConfigError, match="never ran in the forward pass"):
        X.explain(model, images, layer="unused")
    assert calls == []


def test_a_layer_after_the_scores_is_a_config_error(images):
    model = InPlace("none").eval()
    model.extra = nn.Identity()
    original = model.forward

    def forward(x):
        out = original(x)
        model.extra(torch.zeros(1, 1, 2, 2))  # runs, but the scores do not depend on it
        return out

    model.forward = forward
    with pytest.raises(XaikitConfigError, match="do not depend on layer 'extra'"):
        X.explain(model, images, layer="extra")
