"""Dataset exemplars: streamed top-k equals brute force; crops are the receptive field."""

from __future__ import annotations

import pytest
import torch
from filters_toys import cross_detector, planted_crosses
from torch.utils.data import Dataset

import xaikit
from xaikit.errors import DataError, XaikitConfigError
from xaikit.explain.hooks import hook_count
from xaikit.filters import activations, exemplars
from xaikit.filters.exemplars import Exemplars


class _Counting(Dataset):
    """``(input, target, mask)`` items; counts every access."""

    def __init__(self, inputs: torch.Tensor) -> None:
        self.inputs = inputs
        self.reads: list[int] = []

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int):
        self.reads.append(int(index))
        return self.inputs[index], torch.tensor(0), torch.zeros(1)


def _model():
    torch.manual_seed(0)
    return xaikit.create_model("simple_cnn", num_classes=3, input_size=16, widths=(4, 6)).eval()


@pytest.mark.parametrize("reduce", ["max", "mean"])
@pytest.mark.parametrize("layer", ["features.block1", "features.block2.conv", "head.pool"])
def test_streamed_top_k_equals_brute_force(layer, reduce):
    model = _model()
    inputs = torch.rand(53, 3, 16, 16)
    found = exemplars(model, layer, inputs, k=5, reduce=reduce, batch_size=8, quiet=True)
    maps = activations(model, inputs, layer)[layer]
    flat = maps.reshape(*maps.shape[:2], -1)
    score = flat.amax(dim=2) if reduce == "max" else flat.mean(dim=2)
    values, indices = score.T.topk(5, dim=1)
    assert torch.equal(found.indices, indices)
    torch.testing.assert_close(found.values, values)
    if maps.dim() == 4:  # the stored position is where each chosen input's map peaks
        peak = flat.argmax(dim=2).T.gather(1, indices)
        width = maps.shape[-1]
        assert torch.equal(found.positions[..., 0] * width + found.positions[..., 1], peak)


def test_ties_go_to_the_lower_index_whatever_the_batching():
    model = _model()
    inputs = torch.rand(10, 3, 16, 16).repeat(3, 1, 1, 1)  # every input three times
    for batch in (4, 7, 30):
        found = exemplars(model, "features.block1", inputs, k=3, batch_size=batch, quiet=True)
        assert (found.indices[:, 0] < 10).all()
        assert torch.equal(found.indices % 10, found.indices[:, :1].expand(-1, 3))


def test_one_pass_then_only_the_top_inputs_are_read_again():
    model = _model()
    data = _Counting(torch.rand(40, 3, 16, 16))
    found = exemplars(model, "features.block2", data, k=3, channels=[1, 4], quiet=True)
    assert found.channels == [1, 4] and found.values.shape == (2, 3)
    streamed = data.reads[1 : 1 + 40]  # one probe read first, then one pass
    assert sorted(streamed) == list(range(40))
    refetched = data.reads[41:]
    assert sorted(refetched) == sorted(set(found.indices.flatten().tolist()))
    assert hook_count(model) == 0


def test_planted_crosses_fill_the_detector_channels_top_k_and_their_crops():
    images, planted, corners = planted_crosses()
    model = cross_detector()
    for layer, channel in [("features.block1", 0), ("features.block2", 1)]:
        found = exemplars(model, layer, images, k=len(planted), channels=[channel], quiet=True)
        assert sorted(found.indices[0].tolist()) == planted, layer
        for rank, index in enumerate(found.indices[0].tolist()):
            y, x = corners[planted.index(index)]
            (top, bottom), (left, right) = found.boxes[0, rank].tolist()
            # the crop window holds the whole 5x5 cross
            assert top <= y and y + 5 <= bottom and left <= x and x + 5 <= right, layer


def test_crops_are_the_analytic_receptive_field_windows():
    images, _, _ = planted_crosses()
    model = cross_detector()
    found = exemplars(model, "features.block2", images, k=4, quiet=True)
    # block1: conv k5 p2 -> pool 2; block2: conv k5 p2 -> size 5 + 1 + 4*2 = 14, jump 2,
    # start -2 - 2*2 = -6
    field = found.receptive_field
    assert field is not None
    assert (field.size, field.jump, field.start) == ((14, 14), (2, 2), (-6, -6))
    assert found.crops.shape == (4, 4, 1, 14, 14)
    for c in range(4):
        for r in range(4):
            index = int(found.indices[c, r])
            window = []
            for d in range(2):
                lo = -6 + 2 * int(found.positions[c, r, d])
                lo = min(max(lo, 0), 20 - 14)
                window.append(slice(lo, lo + 14))
            torch.testing.assert_close(found.crops[c, r, 0], images[index, 0][tuple(window)])


def test_layers_without_spatial_maps_give_whole_inputs():
    model = _model()
    inputs = torch.rand(12, 3, 16, 16)
    found = exemplars(model, "head.pool", inputs, k=2, quiet=True)
    assert found.receptive_field is None and found.positions.shape == (6, 2, 0)
    torch.testing.assert_close(found.crops, inputs[found.indices])
    assert found.boxes[0, 0].tolist() == [[0, 16], [0, 16]]


def test_result_figure_and_errors():
    model = _model()
    inputs = torch.rand(12, 3, 16, 16)
    found = exemplars(model, "features.block1", inputs, k=2, quiet=True)
    assert isinstance(found, Exemplars)
    assert len(found.figure.axes[0].texts) == 4 * 2
    with pytest.raises(XaikitConfigError, match="k must be"):
        exemplars(model, "features.block1", inputs, k=13, quiet=True)
    with pytest.raises(XaikitConfigError, match="out of range"):
        exemplars(model, "features.block1", inputs, k=2, channels=[4], quiet=True)
    with pytest.raises(XaikitConfigError, match="reduce"):
        exemplars(model, "features.block1", inputs, k=2, reduce="median", quiet=True)
    with pytest.raises(DataError, match="empty"):
        exemplars(model, "features.block1", inputs[:0], k=1, quiet=True)
