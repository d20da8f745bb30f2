"""Explanation bugs that survived the mutation audit: Score-CAM masks and ``target="positive"``.

Each test is built so the bug changes a number it asserts: activation maps whose minimum is
not 0 (a ReLU layer hides a missing min subtraction) and head thresholds that are not 0.5
(the default hides a resolver that ignores them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import xaikit
from xaikit.explain.scorecam import channel_masks


class SigmoidConvNet(nn.Module):
    """``(N, 1, 4, 4)`` -> strided conv -> sigmoid ``act`` ``(N, 3, 2, 2)`` -> linear -> 2 logits.

    The CAM layer ``act`` is a sigmoid, so every activation map has a minimum well above 0 and
    it is smaller than the input, so Score-CAM upsamples it.
    """

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.conv = nn.Conv2d(1, 3, 2, stride=2)
        self.act = nn.Sigmoid()
        self.fc = nn.Linear(12, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
            self.conv.bias.copy_(torch.randn(3, generator=gen))
            self.fc.weight.copy_(3.0 * torch.randn(self.fc.weight.shape, generator=gen))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


def test_score_cam_masks_are_min_max_normalized_not_just_divided_by_the_span():
    """Guards against Score-CAM masks skipping the min subtraction of min-max normalization
    (``mask = A / (max - min)`` instead of ``(A - min) / (max - min)``): a map whose minimum is
    2 must become exactly ``(A - 2) / 4``, with minimum 0 and maximum 1."""
    maps = torch.tensor([[[2.0, 3.0], [4.0, 6.0]], [[-1.0, 1.0], [0.0, 3.0]]])  # (B=2, 2, 2)
    masks = channel_masks(maps, (2, 2))
    assert masks.shape == (2, 1, 2, 2)
    expected = torch.tensor([[[[0.0, 0.25], [0.5, 1.0]]], [[[0.0, 0.5], [0.25, 1.0]]]])
    torch.testing.assert_close(masks, expected, rtol=0, atol=1e-7)
    flat = masks.flatten(1)
    assert flat.amin(dim=1).tolist() == [0.0, 0.0]
    assert flat.amax(dim=1).tolist() == [1.0, 1.0]
    # Upsampled to 4x4 the masks still span exactly [0, 1].
    up = channel_masks(maps, (4, 4)).flatten(1)
    torch.testing.assert_close(up.amin(dim=1), torch.zeros(2), rtol=0, atol=1e-7)
    torch.testing.assert_close(up.amax(dim=1), torch.ones(2), rtol=0, atol=1e-7)


def _score_cam_by_hand(net: SigmoidConvNet, x: torch.Tensor, target: int) -> torch.Tensor:
    """Algorithm 1 of Wang et al. (2020), one image and one channel at a time: ``(N, 2, 2)``."""
    with torch.no_grad():
        acts = net.act(net.conv(x))  # (N, C, 2, 2)
        out = torch.zeros(x.shape[0], 2, 2)
        for n in range(x.shape[0]):
            scores = []
            for c in range(acts.shape[1]):
                up = F.interpolate(
                    acts[n, c][None, None], size=(4, 4), mode="bilinear", align_corners=False
                )[0, 0]
                mask = (up - up.min()) / (up.max() - up.min())
                scores.append(net(x[n : n + 1] * mask)[0, target])
            weights = torch.stack(scores).softmax(dim=0)
            out[n] = (weights[:, None, None] * acts[n]).sum(dim=0)
    return out


def test_score_cam_matches_a_hand_computation_on_maps_whose_minimum_is_not_zero():
    """Guards against the same bug end to end: with un-subtracted masks the masked inputs, the
    channel scores, their softmax weights and so the raw map all change."""
    net = SigmoidConvNet().eval()
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(4)) * 2.0 - 0.5
    acts = net.act(net.conv(x)).detach()
    assert float(acts.flatten(2).amin(dim=2).min()) > 0.05  # no map starts at 0
    result = xaikit.explain(
        net, x, method="scorecam", layer="act", target=0, normalize=None, return_result=True
    )
    assert result.raw.shape == (3, 1, 2, 2)
    torch.testing.assert_close(result.raw[:, 0], _score_cam_by_hand(net, x, 0), atol=1e-5, rtol=0)


def _multilabel_model() -> nn.Module:
    """A 4-label head whose probabilities hardly depend on the input: about
    ``(0.88, 0.12, 0.62, 0.38)`` for every image (tiny weights, set biases)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = xaikit.create_model(
            "simple_cnn", num_classes=4, task="multilabel", in_channels=3, widths=(4, 8)
        ).eval()
    with torch.no_grad():
        model.head.fc.weight.mul_(0.01)
        model.head.fc.bias.copy_(torch.tensor([2.0, -2.0, 0.5, -0.5]))
    return model


def test_positive_targets_use_the_heads_own_thresholds():
    """Guards against ``target="positive"`` taking the labels over 0.5 instead of the labels
    over the head's per-label thresholds: a threshold of 0.999 removes label 0 (p = 0.88,
    which passes 0.5) and one of 0.05 adds label 1 (p = 0.12, which does not)."""
    model = _multilabel_model()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        probs = model(images).sigmoid()
    thresholds = torch.tensor([0.999, 0.05, 0.5, 0.5])
    assert bool((probs[:, 0] > 0.5).all()) and bool((probs[:, 0] < 0.999).all())
    assert bool((probs[:, 1] < 0.5).all()) and bool((probs[:, 1] > 0.05).all())
    default = xaikit.explain(model, images, target="positive", return_result=True)
    assert default.targets.tolist() == [[0, 2], [0, 2]]  # 0.5 thresholds: p >= 0.5

    model.head.thresholds.copy_(thresholds)
    expected = (probs >= thresholds).nonzero()[:, 1].reshape(2, -1).tolist()
    assert expected == [[1, 2], [1, 2]]
    result = xaikit.explain(model, images, target="positive", return_result=True)
    assert result.targets.tolist() == expected
    assert result.valid.all()
    torch.testing.assert_close(result.probabilities, probs[:, [1, 2]])
