"""Every CAM method equals its defining formula, computed by hand on a tiny network.

The network is conv (set weights) -> ReLU -> flatten -> linear, so the gradient of class k's
score with respect to the ReLU output is the linear layer's weight row, reshaped to
``(C, 4, 4)``: it varies by position, which tells apart the methods that average gradients
(Grad-CAM, Grad-CAM++, XGrad-CAM) from those that do not (LayerCAM, HiResCAM).
"""

from __future__ import annotations

import math

import pytest
import torch
from explain_nets import ConvFlatNet, conv_by_hand

import xaikit.explain as X


def _grad(net: ConvFlatNet, k: int) -> torch.Tensor:
    """d score_k / d A as ``(C, 4, 4)``: the linear weights of class k (flatten order c, i, j)."""
    channels = net.conv.out_channels
    return net.fc.weight.detach()[k].reshape(channels, 4, 4)


def _expected(method: str, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """The raw map ``(4, 4)`` of one image and one target, by explicit loops."""
    channels = acts.shape[0]
    out = torch.zeros(4, 4)
    for c in range(channels):
        total_a = sum(float(acts[c, a, b]) for a in range(4) for b in range(4))
        if method == "gradcam":
            weight = sum(float(grads[c, i, j]) for i in range(4) for j in range(4)) / 16
        elif method == "gradcam++":
            weight = 0.0
            for i in range(4):
                for j in range(4):
                    g = float(grads[c, i, j])
                    if g != 0:
                        alpha = g**2 / (2 * g**2 + total_a * g**3 + 1e-6)
                        weight += alpha * max(g, 0.0)
        elif method == "xgradcam":
            weight = sum(
                float(acts[c, i, j]) / (total_a + 1e-7) * float(grads[c, i, j])
                for i in range(4)
                for j in range(4)
            )
        for i in range(4):
            for j in range(4):
                a, g = float(acts[c, i, j]), float(grads[c, i, j])
                if method == "layercam":
                    out[i, j] += max(g, 0.0) * a
                elif method == "hirescam":
                    out[i, j] += g * a
                else:
                    out[i, j] += weight * a
    return out


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam"])
def test_gradient_cam_raw_maps_equal_the_papers_formulas(method, conv_flat_net, tiny_images):
    result = X.explain(
        conv_flat_net, tiny_images, method=method, target="all", layer="act", return_result=True
    )
    assert result.raw.shape == (3, 3, 4, 4)
    for n in range(3):
        acts = conv_by_hand(conv_flat_net, tiny_images[n])
        for k in range(3):
            expected = _expected(method, acts, _grad(conv_flat_net, k))
            torch.testing.assert_close(result.raw[n, k], expected, atol=1e-5, rtol=1e-4)


def test_heatmap_is_minmax_of_the_relu_of_the_raw_map(conv_flat_net, tiny_images):
    result = X.explain(conv_flat_net, tiny_images, target=1, layer="act", return_result=True)
    for n in range(3):
        acts = conv_by_hand(conv_flat_net, tiny_images[n])
        raw = _expected("gradcam", acts, _grad(conv_flat_net, 1)).clamp_min(0)
        expected = (raw - raw.min()) / (raw.max() - raw.min())
        torch.testing.assert_close(result.heatmap[n], expected, atol=1e-5, rtol=1e-4)
    assert result.heatmap.shape == (3, 4, 4)


def test_methods_that_average_gradients_differ_from_those_that_do_not(conv_flat_net, tiny_images):
    maps = X.explain(
        conv_flat_net, tiny_images, method=["gradcam", "hirescam"], layer="act", normalize=None
    )
    assert not torch.allclose(maps["gradcam"], maps["hirescam"], atol=1e-3)


def test_eigencam_is_the_first_principal_component_with_the_documented_sign(
    conv_flat_net, tiny_images
):
    result = X.explain(
        conv_flat_net,
        tiny_images,
        method="eigencam",
        target=[[0, 2]] * 3,
        layer="act",
        return_result=True,
    )
    for n in range(3):
        acts = conv_by_hand(conv_flat_net, tiny_images[n]).double()
        rows = acts.reshape(acts.shape[0], 16).T  # (positions, channels)
        centred = rows - rows.mean(dim=0, keepdim=True)
        # PCA through the covariance's eigenvectors: independent of the SVD used inside.
        _values, vectors = torch.linalg.eigh(centred.T @ centred)
        projection = centred @ vectors[:, -1]
        if float((projection * rows.sum(dim=1)).sum()) < 0:
            projection = -projection
        for k in range(2):
            torch.testing.assert_close(
                result.raw[n, k].double(), projection.reshape(4, 4), atol=1e-4, rtol=1e-4
            )


def _score_cam_by_hand(
    net: ConvFlatNet,
    image: torch.Tensor,
    k: int,
    channels: list[int],
    fill: str | None = None,
    score: str = "logit",
) -> torch.Tensor:
    acts = conv_by_hand(net, image)
    scores = {}
    for c in channels:
        m = acts[c]
        span = float(m.max() - m.min())
        mask = (m - m.min()) / span if span > 0 else torch.zeros_like(m)
        with torch.no_grad():
            out = net((image * mask).unsqueeze(0))[0]
        scores[c] = float(out.softmax(0)[k] if score == "prob" else out[k])
    if fill == "mean":
        mean = sum(scores.values()) / len(scores)
        scores = {c: scores.get(c, mean) for c in range(acts.shape[0])}
    z = sum(math.exp(s) for s in scores.values())
    return sum(math.exp(s) / z * acts[c] for c, s in scores.items())


@pytest.mark.parametrize("score", ["logit", "prob"])
def test_scorecam_is_softmax_over_channels_of_masked_scores(conv_flat_net, tiny_images, score):
    result = X.explain(
        conv_flat_net,
        tiny_images,
        method="scorecam",
        target="all",
        layer="act",
        score=score,
        batch_size=4,
        return_result=True,
    )
    for n in range(3):
        for k in range(3):
            expected = _score_cam_by_hand(conv_flat_net, tiny_images[n], k, [0, 1, 2], score=score)
            torch.testing.assert_close(result.raw[n, k], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("fill", ["mean", "drop"])
def test_fast_scorecam_evaluates_the_most_active_channels_and_fills_the_rest(
    conv_flat_net, tiny_images, fill
):
    result = X.explain(
        conv_flat_net,
        tiny_images,
        method="scorecam-fast",
        target=2,
        layer="act",
        top_k=2,
        fill=fill,
        return_result=True,
    )
    for n in range(3):
        acts = conv_by_hand(conv_flat_net, tiny_images[n])
        top = acts.mean(dim=(1, 2)).topk(2).indices.tolist()
        expected = _score_cam_by_hand(conv_flat_net, tiny_images[n], 2, top, fill=fill)
        torch.testing.assert_close(result.raw[n, 0], expected, atol=1e-5, rtol=1e-4)


def test_fast_scorecam_with_every_channel_is_exact_scorecam(conv_flat_net, tiny_images):
    both = X.explain(
        conv_flat_net,
        tiny_images,
        method=["scorecam", "scorecam-fast"],
        layer="act",
        top_k=3,
        return_result=True,
    )
    torch.testing.assert_close(both["scorecam"].raw, both["scorecam-fast"].raw)


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_scorecam_does_not_depend_on_its_batch_size(conv_flat_net, tiny_images, batch_size):
    reference = X.explain(
        conv_flat_net, tiny_images, method="scorecam", layer="act", batch_size=2, normalize=None
    )
    other = X.explain(
        conv_flat_net,
        tiny_images,
        method="scorecam",
        layer="act",
        batch_size=batch_size,
        normalize=None,
    )
    torch.testing.assert_close(other, reference, atol=1e-6, rtol=1e-5)


def test_scorecam_constant_channel_gives_a_zero_mask_not_nan():
    acts = torch.zeros(2, 1, 3, 3)
    acts[1, 0, 1, 1] = 2.0
    masks = X.scorecam.channel_masks(acts[:, 0], (6, 6))
    assert torch.isfinite(masks).all()
    assert masks[0].abs().max() == 0
    assert masks[1].max() == pytest.approx(1.0) and masks[1].min() == 0
