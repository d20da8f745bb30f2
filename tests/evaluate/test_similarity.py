"""Map similarity: Spearman and ranks against scipy, SSIM against a scipy-filter reference."""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xaikit.evaluate import average_ranks, l1_distance, spearman, ssim


def test_average_ranks_match_scipy_rankdata_with_ties():
    x = torch.tensor([[3.0, 1.0, 3.0, 2.0, 3.0, 1.0]], dtype=torch.float64)
    expected = scipy.stats.rankdata(x.numpy(), axis=1) - 1
    np.testing.assert_allclose(average_ranks(x).numpy(), expected)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=12, max_size=12),
    st.lists(st.integers(0, 4), min_size=12, max_size=12),
)
def test_spearman_matches_scipy_on_tied_maps(a, b):
    ta = torch.tensor(a, dtype=torch.float32).reshape(1, 3, 4)
    tb = torch.tensor(b, dtype=torch.float32).reshape(1, 3, 4)
    ours = float(spearman(ta, tb)[0])
    if len(set(a)) == 1 or len(set(b)) == 1:
        assert ours == (1.0 if len(set(a)) == len(set(b)) == 1 else 0.0)
    else:
        assert abs(ours - scipy.stats.spearmanr(a, b).statistic) < 1e-5


def test_spearman_is_batched_and_rank_based():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(5, 6, 6, generator=g)
    b = torch.rand(5, 6, 6, generator=g)
    batched = spearman(a, b)
    for i in range(5):
        ref = scipy.stats.spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert abs(float(batched[i]) - ref) < 1e-5
    torch.testing.assert_close(spearman(a, a.exp()), torch.ones(5))  # monotone: same ranks
    torch.testing.assert_close(spearman(a, -a), -torch.ones(5))


def test_constant_map_conventions():
    flat, other = torch.zeros(1, 4, 4), torch.ones(1, 4, 4)
    varying = torch.arange(16.0).reshape(1, 4, 4)
    assert spearman(flat, other).item() == 1.0
    assert spearman(flat, varying).item() == 0.0


def _reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. (2004) with a Gaussian window (sigma 1.5, 11 px), valid region only."""

    def norm(m):
        return (m - m.min()) / (m.max() - m.min())

    x, y = norm(x), norm(y)

    def filt(m):
        return scipy.ndimage.gaussian_filter(m, sigma=1.5, truncate=5 / 1.5, mode="reflect")

    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s[5:-5, 5:-5].mean())


def test_ssim_matches_a_scipy_reference_and_is_one_for_equal_maps():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 16, 18, generator=g, dtype=torch.float64)
    b = (a + 0.3 * torch.rand(3, 16, 18, generator=g, dtype=torch.float64)).float()
    a = a.float()
    ours = ssim(a, b)
    for i in range(3):
        ref = _reference_ssim(a[i].double().numpy(), b[i].double().numpy())
        assert abs(float(ours[i]) - ref) < 1e-4
    torch.testing.assert_close(ssim(a, a), torch.ones(3))
    assert ssim(a, 2 * a + 1).min() > 0.9999  # min-max normalized first
    small = ssim(a[:, :4, :4], b[:, :4, :4])  # the window shrinks to 3x3
    assert small.shape == (3,) and torch.isfinite(small).all()


def test_l1_distance_of_normalized_maps():
    a = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])
    b = torch.tensor([[[4.0, 2.0], [1.0, 0.0]]])
    # Normalized: [0, .25, .5, 1] vs [1, .5, .25, 0]: mean |diff| = (1 + .25 + .25 + 1) / 4.
    torch.testing.assert_close(l1_distance(a, b), torch.tensor([0.625]))
    torch.testing.assert_close(l1_distance(a, 3 * a + 2), torch.tensor([0.0]))
