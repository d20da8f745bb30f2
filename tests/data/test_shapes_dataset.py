"""The synthetic shapes data sets: items, determinism, geometry of the masks, class balance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xaikit.data import SHAPE_CLASSES, load
from xaikit.data.shapes import ShapeObjects, render_masks
from xaikit.errors import DataError

K = len(SHAPE_CLASSES)

# Area of each shape divided by r**2, from its definition (see xaikit.data.shapes).
AREA_OVER_R2 = {
    "circle": math.pi,
    "square": 1.4**2,
    "triangle": 3 * math.sqrt(3) / 4,
    "cross": 2 * (1.9 * 0.6) - 0.6**2,
    "star": 10 * 0.5 * 1.0 * 0.45 * math.sin(math.pi / 5),
    "ring": math.pi * (1 - 0.55**2),
}


@pytest.fixture(scope="module")
def multiclass():
    return load("shapes", "train", n=600, seed=3)


@pytest.fixture(scope="module")
def multilabel():
    return load("shapes-multilabel", "train", n=600, seed=3)


def test_multiclass_items_are_image_label_and_one_mask_channel(multiclass):
    assert len(multiclass) == 600
    assert multiclass.classes == list(SHAPE_CLASSES) and len(SHAPE_CLASSES) >= 6
    assert (multiclass.task, multiclass.input_kind) == ("multiclass", "image")
    image, target, masks = multiclass[5]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert target.dtype == torch.int64 and target.shape == ()
    assert masks.dtype == torch.float32 and masks.shape == (K, 64, 64)
    nonempty = masks.flatten(1).sum(1) > 0
    assert nonempty.tolist() == [k == int(target) for k in range(K)]


def test_multilabel_masks_are_non_empty_exactly_for_present_labels(multilabel):
    assert multilabel.task == "multilabel"
    masks = multilabel.masks(slice(None))  # (N, K, H, W)
    targets = multilabel.targets
    assert targets.dtype == torch.float32 and targets.shape == (600, K)
    assert torch.equal((masks.flatten(2).sum(2) > 0).float(), targets)
    counts = targets.sum(1)
    assert counts.min() == 1 and counts.max() == 3
    # Shapes never overlap: each pixel belongs to at most one shape.
    assert masks.sum(1).max() == 1
    _, target, item_masks = multilabel[7]
    assert target.shape == (K,) and torch.equal(item_masks, masks[7])


def test_same_seed_gives_identical_data_and_other_seeds_or_splits_differ():
    a = load("shapes-multilabel", "train", n=50, seed=11)
    b = load("shapes-multilabel", "train", n=50, seed=11)
    c = load("shapes-multilabel", "train", n=50, seed=12)
    test = load("shapes-multilabel", "test", n=50, seed=11)
    assert torch.equal(a.images, b.images) and torch.equal(a.mask_bits, b.mask_bits)
    assert torch.equal(a.targets, b.targets)
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.images, test.images)


def test_generation_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    load("shapes", "train", n=20, seed=99)
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("fixture", ["multiclass", "multilabel"])
def test_masks_lie_on_the_drawn_shapes(request, fixture):
    dataset = request.getfixturevalue(fixture)
    objects = dataset.objects
    images = dataset.images.float() / 255
    masks = dataset.masks(slice(None))
    for row in range(0, len(objects), 7):
        i, label = int(objects.image[row]), int(objects.label[row])
        inside = masks[i, label].bool()
        colour = objects.colour[row][:, None]
        # Inside: the shape's colour plus pixel noise (|noise| <= 0.06 and quantization).
        deviation = (images[i][:, inside] - colour).abs()
        assert deviation.max() <= 0.065, (row, deviation.max())
        # Outside every shape: the background, far from the shape's colour on average.
        background = masks[i].sum(0) == 0
        distance = (images[i][:, background] - colour).norm(dim=0).mean()
        assert distance > 0.3, (row, distance)


def test_circle_and_square_masks_match_a_hand_computation(multiclass):
    objects = multiclass.objects
    ys, xs = np.mgrid[0:64, 0:64] + 0.5
    checked = 0
    for row in range(len(objects)):
        label = SHAPE_CLASSES[int(objects.label[row])]
        if label not in ("circle", "square"):
            continue
        cx, cy = objects.center[row].tolist()
        r, angle = float(objects.radius[row]), float(objects.angle[row])
        dx, dy = (xs - cx) / r, (ys - cy) / r
        if label == "circle":
            expected = dx**2 + dy**2 <= 1.0
        else:
            u = math.cos(angle) * dx + math.sin(angle) * dy
            v = -math.sin(angle) * dx + math.cos(angle) * dy
            expected = np.maximum(np.abs(u), np.abs(v)) <= 0.7
        mask = multiclass.masks(int(objects.image[row]))[int(objects.label[row])].numpy()
        # Pixels whose centre lies within float rounding of the edge may go either way.
        assert (mask.astype(bool) != expected).sum() <= 2
        checked += 1
    assert checked > 100


def test_each_class_has_its_geometric_area():
    big = ShapeObjects(
        image=torch.zeros(K * 8, dtype=torch.int64),
        label=torch.arange(K).repeat_interleave(8),
        center=torch.full((K * 8, 2), 100.0),
        radius=torch.full((K * 8,), 60.0),
        angle=torch.linspace(0, 2 * math.pi, 8).repeat(K),
        colour=torch.zeros(K * 8, 3),
    )
    area = render_masks(big, 200).flatten(1).sum(1).float() / 60.0**2
    for k, name in enumerate(SHAPE_CLASSES):
        measured = area[k * 8 : (k + 1) * 8]
        assert torch.allclose(measured, torch.full_like(measured, AREA_OVER_R2[name]), rtol=0.03)


def test_shapes_stay_inside_the_image_with_the_documented_radii(multiclass, multilabel):
    for dataset, r_max in ((multiclass, 20.0), (multilabel, 15.0)):
        o = dataset.objects
        assert o.radius.min() >= 8.0 and o.radius.max() <= r_max
        assert (o.center - o.radius[:, None]).min() >= 0
        assert (o.center + o.radius[:, None]).max() <= 64


def test_classes_are_balanced_and_colours_carry_no_label(multiclass, multilabel):
    assert torch.bincount(multiclass.targets, minlength=K).tolist() == [100] * K
    frequency = multilabel.targets.mean(0)  # each class present in about 1/3 of the images
    assert torch.allclose(frequency, torch.full((K,), 1 / 3), atol=0.06)
    colour_by_class = torch.stack(
        [multiclass.objects.colour[multiclass.objects.label == k].mean(0) for k in range(K)]
    )
    assert (colour_by_class - colour_by_class.mean(0)).abs().max() < 0.1


def test_size_option_and_defaults():
    small = load("shapes", "test", n=12, size=32, seed=0)
    image, _, masks = small[0]
    assert image.shape == (3, 32, 32) and masks.shape == (K, 32, 32)
    assert small.objects.radius.min() >= 4.0 and small.objects.radius.max() <= 10.0
    assert len(load("shapes", "test", size=16)) == 2000


@pytest.mark.parametrize("options", [{"n": 0}, {"size": 8}])
def test_bad_options_raise_data_error(options):
    with pytest.raises(DataError):
        load("shapes", **options)
