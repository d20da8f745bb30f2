"""The rest of the CAM family against pytorch-grad-cam and torchcam, on the same models,
layers and inputs: Eigen-Grad-CAM, element-wise Grad-CAM, KPCA-CAM, ShapleyCAM, FinerCAM,
Ablation-CAM, FullGrad (pytorch-grad-cam), SS-CAM, IS-CAM, Smooth Grad-CAM++ (torchcam).

Agreement is the Pearson correlation of the heatmaps, per image: >= 0.99 (the figures are
~0.9999; what remains is the order of normalization and resizing, cv2 against torch).
Stochastic methods share the noise: xaikit draws input ``i``'s noise from a generator seeded
``noise_seed(seed, i)``, and torchcam, run on that one input after
``torch.manual_seed(noise_seed(seed, i))``, draws the same numbers in the same order.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from pytorch_grad_cam import (
    KPCA_CAM,
    AblationCAM,
    EigenGradCAM,
    FinerCAM,
    FullGrad,
    GradCAMElementWise,
    GradCAMPlusPlus,
    ShapleyCAM,
)
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
)
from torch import nn
from torchcam.methods import ISCAM, SSCAM, SmoothGradCAMpp

import xaikit
import xaikit.explain as X
from xaikit.explain.gradients import noise_seed
from xaikit.explain.hooks import hook_count
from xaikit.explain.postprocess import to_heatmaps

pytestmark = pytest.mark.filterwarnings("ignore::xaikit.explain.ExplainWarning")
os.environ.setdefault("XAIKIT_QUIET", "1")

SIZE = 64
SEED = 5


def pearson(a, b) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    assert a.std() > 0 and b.std() > 0, "a constant map proves nothing"
    return float(np.corrcoef(a, b)[0, 1])


def _random_norms(model: nn.Module) -> nn.Module:
    """Batch norms with random statistics and affine terms, so that their effective biases
    (what FullGrad reads) are not the zeros of a freshly built network."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                module.weight.copy_(0.5 + torch.rand(c, generator=gen))
                module.bias.copy_(0.1 * torch.randn(c, generator=gen))
    return model


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return _random_norms(torchvision.models.resnet18(num_classes=10)).eval()


@pytest.fixture(scope="module")
def shapes_model() -> nn.Module:
    return xaikit.load_model("shapes-multiclass")[0].eval()


@pytest.fixture(scope="module")
def pictures() -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def shapes() -> torch.Tensor:
    """Three images of the zoo model's data set (a triangle, a circle, a square)."""
    from xaikit.data.shapes import generate_shapes

    return generate_shapes(3, size=SIZE, seed=1)[0].float() / 255


def _setup(request, arch: str) -> tuple[nn.Module, str, list[int], torch.Tensor]:
    if arch == "resnet18":
        return (
            request.getfixturevalue("resnet"),
            "layer3",
            [1, 4, 7],
            request.getfixturevalue("pictures"),
        )
    model = request.getfixturevalue("shapes_model")
    return model, "features.block3", [2, 0, 5], request.getfixturevalue("shapes")


def _explain(model, x, method, targets, layer, **options):
    return xaikit.explain(
        model, x, method=method, target=targets, layer=layer, return_result=True, **options
    )


# ------------------------------------------------------------ pytorch-grad-cam, exact ones

PGC = {
    "gradcam-elementwise": GradCAMElementWise,
    "kpcacam": KPCA_CAM,
    "ablationcam": AblationCAM,
    "fullgrad": FullGrad,
}


@pytest.mark.parametrize("arch", ["resnet18", "zoo"])
@pytest.mark.parametrize("method", list(PGC))
def test_agrees_with_pytorch_grad_cam(request, arch, method):
    model, layer, targets, pictures = _setup(request, arch)
    cls = PGC[method]
    with cls(model, [] if method == "fullgrad" else [model.get_submodule(layer)]) as cam:
        reference = cam(pictures, [ClassifierOutputTarget(t) for t in targets])
    result = _explain(model, pictures, method, targets, layer)
    for i in range(len(targets)):
        assert pearson(result.heatmap[i], reference[i]) >= 0.99, (method, arch, i)
    assert result.layer == (None if method == "fullgrad" else layer)
    assert hook_count(model) == 0


def test_eigengradcam_agrees_up_to_the_svd_sign_and_orients_it(resnet, pictures):
    targets = [1, 4, 7]
    with EigenGradCAM(resnet, [resnet.layer3]) as cam:
        reference = cam(pictures, [ClassifierOutputTarget(t) for t in targets])
    result = _explain(resnet, pictures, "eigengradcam", targets, "layer3")
    flipped, _ = to_heatmaps(-result.raw, (SIZE, SIZE), relu=True)
    hires = _explain(resnet, pictures, "hirescam", targets, "layer3").raw
    for i in range(3):
        # pytorch-grad-cam keeps the SVD's sign; xaikit orients the component along G*A.
        best = max(pearson(result.heatmap[i], reference[i]), pearson(flipped[i, 0], reference[i]))
        assert best >= 0.99, i
        assert float((result.raw[i, 0] * hires[i, 0]).sum()) > 0


def test_vgg16_bn_fullgrad_reads_every_batch_norm_bias():
    torch.manual_seed(0)
    model = _random_norms(torchvision.models.vgg16_bn(num_classes=4)).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with FullGrad(model, []) as cam:
        reference = cam(x, [ClassifierOutputTarget(2)])
    result = _explain(model, x, "fullgrad", 2, None)
    assert pearson(result.heatmap[0], reference[0]) >= 0.99


def test_fullgrad_layer_terms_matter(resnet, pictures):
    # The input term alone (|x * dy/dx|, per channel normalized) is another map.
    result = _explain(resnet, pictures[:1], "fullgrad", 3, None)
    x = pictures[:1].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(resnet(x)[0, 3], x)
    term = (grad * x).abs().detach()[0]
    flat = term.flatten(1)
    lo = flat.amin(1, keepdim=True)
    only_input = ((flat - lo) / ((flat - lo).amax(1, keepdim=True) + 1e-7)).sum(0)
    assert pearson(result.heatmap[0], only_input) < 0.95


# ------------------------------------------------------------ second order and contrast


def test_shapleycam_agrees_and_its_hessian_term_changes_the_map(resnet, pictures):
    # Logits of a ReLU network have no curvature; probabilities do (softmax).
    with torch.no_grad():
        targets = resnet(pictures).argmax(1).tolist()
    with ShapleyCAM(resnet, [resnet.layer3]) as cam:
        reference = cam(pictures, [ClassifierOutputSoftmaxTarget(t) for t in targets])
    result = _explain(resnet, pictures, "shapleycam", targets, "layer3", score="prob")
    gradcam = _explain(resnet, pictures, "gradcam", targets, "layer3", score="prob")
    differs = []
    for i in range(3):
        assert pearson(result.heatmap[i], reference[i]) >= 0.99, i
        differs.append(pearson(result.raw[i, 0], gradcam.raw[i, 0]))
    assert min(differs) < 0.99  # the -H A / 2 term is not a rescaling of Grad-CAM


@pytest.mark.parametrize("arch", ["resnet18", "zoo"])
@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_finercam_agrees_with_pytorch_grad_cam(request, arch, alpha):
    model, layer, _targets, pictures = _setup(request, arch)
    with FinerCAM(model, [model.get_submodule(layer)]) as cam:
        reference = cam(pictures, None, alpha=alpha)  # the predicted class vs its neighbours
    result = _explain(model, pictures, "finercam", "predicted", layer, alpha=alpha)
    gradcam = _explain(model, pictures, "gradcam", "predicted", layer)
    for i in range(3):
        assert pearson(result.heatmap[i], reference[i]) >= 0.99, i
    assert min(pearson(gradcam.heatmap[i], reference[i]) for i in range(3)) < 0.98


# ------------------------------------------------------------ torchcam, shared noise


def _torchcam(cls, model, layer, x, target, seed, **kwargs) -> torch.Tensor:
    with cls(model, target_layer=layer, input_shape=tuple(x.shape[1:]), **kwargs) as extractor:
        torch.manual_seed(seed)
        model(x)
        cam = extractor(class_idx=[target])[0]
    return F.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[
        0, 0
    ].detach()


@pytest.mark.parametrize(
    ("method", "cls", "options"),
    [
        ("sscam", SSCAM, dict(num_samples=3, std=2.0)),
        ("iscam", ISCAM, dict(num_samples=4)),
        ("smoothgradcam++", SmoothGradCAMpp, dict(num_samples=4, std=0.3)),
    ],
)
def test_agrees_with_torchcam_on_the_same_noise(shapes_model, shapes, method, cls, options):
    layer, targets, pictures = "features.block3", [2, 0, 5], shapes
    extra = {"variant": "torchcam"} if method == "smoothgradcam++" else {}
    result = _explain(shapes_model, pictures, method, targets, layer, seed=SEED, **options, **extra)
    for i, target in enumerate(targets):
        reference = _torchcam(
            cls, shapes_model, layer, pictures[i : i + 1], target, noise_seed(SEED, i), **options
        )
        assert pearson(result.heatmap[i], reference) >= 0.99, i


def test_smooth_gradcam_pp_without_noise_is_gradcam_pp(resnet, pictures):
    targets = [1, 4, 7]
    result = _explain(
        resnet, pictures, "smoothgradcam++", targets, "layer3", num_samples=2, std=0.0
    )
    ours = _explain(resnet, pictures, "gradcam++", targets, "layer3")
    torch.testing.assert_close(
        result.raw, ours.raw, rtol=1e-4, atol=1e-6 * float(ours.raw.abs().max())
    )
    with GradCAMPlusPlus(resnet, [resnet.layer3]) as cam:
        reference = cam(pictures, [ClassifierOutputTarget(t) for t in targets])
    for i in range(3):
        assert pearson(result.heatmap[i], reference[i]) >= 0.99


def test_smoothing_noise_follows_the_seed(shapes_model, shapes):
    pictures = shapes
    layer = "features.block3"
    a = _explain(shapes_model, pictures[:1], "sscam", 1, layer, seed=1, num_samples=2)
    b = _explain(shapes_model, pictures[:1], "sscam", 1, layer, seed=1, num_samples=2)
    c = _explain(shapes_model, pictures[:1], "sscam", 1, layer, seed=2, num_samples=2)
    torch.testing.assert_close(a.raw, b.raw)
    assert not torch.allclose(a.raw, c.raw)


# ------------------------------------------------------------ K targets in one call

NEW_METHODS = [
    "eigengradcam",
    "gradcam-elementwise",
    "kpcacam",
    "shapleycam",
    "finercam",
    "ablationcam",
    "iscam",
    "sscam",
    "smoothgradcam++",
    "fullgrad",
]


def test_k_targets_in_one_call_equal_k_single_calls(shapes_model, shapes):
    x = shapes[:2]
    layer = "features.block3"
    options = {"num_samples": 2}
    pairs = [[0, 3], [2, 5]]
    for method in NEW_METHODS:
        extra = options if method in ("iscam", "sscam", "smoothgradcam++") else {}
        both = _explain(shapes_model, x, method, pairs, layer, seed=SEED, **extra)
        for k in range(2):
            single = _explain(
                shapes_model, x, method, [p[k] for p in pairs], layer, seed=SEED, **extra
            )
            scale = float(single.raw.abs().max())
            torch.testing.assert_close(
                both.raw[:, k], single.raw[:, 0], rtol=1e-4, atol=1e-5 * scale, msg=method
            )


def test_every_new_method_is_registered_with_a_paper():
    from xaikit._names import CAM_NAMES
    from xaikit.explain.cam import CAM_METHODS

    for method in NEW_METHODS:
        assert method in CAM_NAMES and method in CAM_METHODS
        assert len(CAM_METHODS[method].paper) > 30


def test_ablation_cam_of_a_batch_equals_each_input_alone_on_a_residual_model():
    """A branch from before the layer is read after it (a residual add): with the layers
    before it run on one row per pass, a pass must never mix two inputs' ablations (chunks
    of 4 over 5 channels used to give inputs 2 and 3 input 1's skip branch: 0.1 off)."""

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 5, 3, padding=1)
            self.b = torch.nn.Conv2d(5, 5, 3, padding=1)
            self.skip = torch.nn.Conv2d(3, 5, 1)
            self.fc = torch.nn.Linear(5, 4)

        def forward(self, x):
            y = self.b(torch.relu(self.a(x))) + self.skip(x)
            return self.fc(torch.relu(y).mean((2, 3)))

    torch.manual_seed(0)
    model = Residual().eval()
    x = torch.randn(3, 3, 8, 8)
    options = {"method": "ablationcam", "layer": "a", "batch_size": 4, "normalize": None}
    batch = X.explain(model, x, return_result=True, **options).raw
    alone = torch.cat(
        [X.explain(model, x[i : i + 1], return_result=True, **options).raw for i in range(3)]
    )
    torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-5)
