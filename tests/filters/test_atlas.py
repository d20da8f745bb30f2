"""The atlas joins kernels, maximization and exemplars per channel; its HTML is self-contained."""

from __future__ import annotations

import base64
import io
import re

import torch
from filters_toys import cross_detector, planted_crosses
from PIL import Image

from xaikit.filters import atlas, exemplars, maximize, weights


def test_atlas_rows_hold_the_same_data_as_the_separate_tools():
    images, planted, _ = planted_crosses(n=60, planted=4)
    model = cross_detector()
    result = atlas(model, "features.block1", images, [0, 2], k=4, steps=12, quiet=True)
    assert result.layer == "features.block1" and result.channels == [0, 2]
    alone = exemplars(model, "features.block1", images, 4, channels=[0, 2], quiet=True)
    assert torch.equal(result.exemplars.indices, alone.indices)
    assert sorted(result.exemplars.indices[0].tolist()) == planted
    images_alone = maximize(model, "features.block1", [0, 2], steps=12, size=20, quiet=True)
    torch.testing.assert_close(result.maximization.images, images_alone.images)
    kernels = weights(model, "features.block1.conv")
    assert result.kernels is not None
    torch.testing.assert_close(result.kernels.images, kernels.images)
    # one row per channel: kernel, maximization, k exemplars
    assert len(result.figure.axes[0].texts) == 2 * (2 + 4)


def test_atlas_html_inlines_every_image_and_references_nothing_outside():
    images, _, _ = planted_crosses(n=40, planted=3)
    result = atlas(cross_detector(), "features.block2", images, [1, 3], k=3, steps=8, quiet=True)
    page = result.html()
    assert page.startswith('<section class="xaikit-filters">')
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    sources = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(sources) == 2 * (1 + 1 + 3)  # kernel, maximization, 3 exemplars per channel
    for encoded in sources:
        picture = Image.open(io.BytesIO(base64.b64decode(encoded)))
        picture.load()
        assert picture.format == "PNG" and min(picture.size) >= 64
    assert page.count("<tr>") == 1 + 2
    assert "features.block2" in page


def test_layers_without_a_single_convolution_have_no_kernel_column():
    images, _, _ = planted_crosses(n=30, planted=2)
    result = atlas(cross_detector(), "features", images, [0], k=2, steps=4, quiet=True)
    assert result.kernels is None
    assert "&ndash;" in result.html()
