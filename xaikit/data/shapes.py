"""Synthetic shapes with a ground-truth mask per shape: ``shapes`` and ``shapes-multilabel``.

Each RGB image shows one shape (``shapes``, multi-class) or 1-3 distinct shapes
(``shapes-multilabel``, target = 0/1 label vector) among :data:`SHAPE_CLASSES`, drawn with a
random colour, size, position and rotation on a textured, noisy background. Colours and
backgrounds are drawn independently of the labels, so only the shapes' geometry tells the
classes apart, and the mask of each shape says exactly which pixels carry the label, so heatmaps
can be scored (pointing game, energy inside the mask, deletion curves).

Geometry, in units of the shape's radius ``r`` (every shape fits inside its circle of radius
``r``, so shapes placed in different cells never overlap and every mask is fully visible):
circle (radius 1), square (half-side 0.7), triangle (equilateral, circumradius 1),
cross (arms 0.95 long, 0.3 half-wide), star (5 points, inner radius 0.45), ring (radii 0.55-1).

Sizes at 64x64 (scaled with ``size``): ``shapes`` radius 8-20 px anywhere in the image;
``shapes-multilabel`` radius 8-15 px, each shape inside its own quadrant of the image.

Everything is generated with tensor operations over a pixel grid, a few hundred images per
chunk, on one intra-op thread (10,000 64x64 images: about 2.2 s on a 2-core machine with a load
average of 4, see ``benchmarks/bench_shapes_generation.py``), and kept in memory compactly:
uint8 pixels and one uint8 bit field per pixel for the masks (bit ``k`` set where class ``k``
is drawn).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from xaikit.data._seed import make_generator
from xaikit.data.base import XaiDataset
from xaikit.errors import DataError

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star", "ring")
DEFAULT_N = {"train": 10_000, "test": 2_000}
MIN_SIZE = 16

_REFERENCE_SIZE = 64
_RADIUS = (8.0, 20.0)  # pixels at 64x64, one shape per image
_MULTI_RADIUS_MAX = 15.0  # pixels at 64x64; a quadrant is 32 px wide
_MIN_CONTRAST = 0.5  # Euclidean RGB distance between a shape's colour and its background
_TEXTURE_STD = 0.1  # amplitude of the smooth background texture
_TEXTURE_GRID = 6  # the texture is bilinear noise on a 6x6 grid
_NOISE = 0.06  # per-pixel uniform noise in [-0.06, 0.06] over the whole image
_CHUNK = 256  # images rendered at once


@dataclass(frozen=True)
class ShapeObjects:
    """The drawn shapes, one row per shape, sorted by image.

    ``image`` ``(M,)`` int64 index of the image; ``label`` ``(M,)`` int64 class;
    ``center`` ``(M, 2)`` float32 ``(x, y)`` in pixels (pixel ``(i, j)`` has its centre at
    ``(j + 0.5, i + 0.5)``); ``radius`` ``(M,)`` pixels; ``angle`` ``(M,)`` rotation in radians;
    ``colour`` ``(M, 3)`` RGB in ``[0, 1]``.
    """

    image: torch.Tensor
    label: torch.Tensor
    center: torch.Tensor
    radius: torch.Tensor
    angle: torch.Tensor
    colour: torch.Tensor

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def select(self, rows: slice) -> ShapeObjects:
        """The objects in ``rows``."""
        return ShapeObjects(
            self.image[rows], self.label[rows], self.center[rows], self.radius[rows],
            self.angle[rows], self.colour[rows],
        )  # fmt: skip


def _circle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u * u + v * v <= 1.0


def _square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.maximum(u.abs(), v.abs()) <= 0.7


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Vertices at 90, 210 and 330 degrees on the unit circle; each edge is at distance 0.5.
    inside = v >= -0.5
    for angle in (math.pi / 6, 5 * math.pi / 6):
        inside &= u * math.cos(angle) + v * math.sin(angle) <= 0.5
    return inside


def _cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    au, av = u.abs(), v.abs()
    return ((au <= 0.95) & (av <= 0.3)) | ((av <= 0.95) & (au <= 0.3))


def _star(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Fold the plane into the half-sector between a tip (angle 0, radius 1) and the next inner
    # vertex (angle pi/5, radius 0.45); inside = on the origin's side of the tip-inner edge.
    sector = 2 * math.pi / 5
    a = torch.remainder(torch.atan2(v, u), sector)
    a = torch.minimum(a, sector - a)
    rho = torch.sqrt(u * u + v * v)
    px, py = rho * torch.cos(a), rho * torch.sin(a)
    ex, ey = 0.45 * math.cos(math.pi / 5) - 1.0, 0.45 * math.sin(math.pi / 5)
    return ex * py - ey * (px - 1.0) >= 0


def _ring(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    rho2 = u * u + v * v
    return (rho2 <= 1.0) & (rho2 >= 0.55**2)


_SHAPE_FUNCTIONS = (_circle, _square, _triangle, _cross, _star, _ring)


def _masks_on_grid(objects: ShapeObjects, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Masks of ``objects`` sampled at pixel centres ``xs`` ``(M, W')`` and ``ys`` ``(M, H')``.

    ``(M,) objects -> (M, H', W')`` bool. Each class's rule runs only on that class's objects.
    """
    r = objects.radius[:, None, None]
    dx = (xs[:, None, :] - objects.center[:, 0, None, None]) / r  # (M, 1, W')
    dy = (ys[:, :, None] - objects.center[:, 1, None, None]) / r  # (M, H', 1)
    cos = torch.cos(objects.angle)[:, None, None]
    sin = torch.sin(objects.angle)[:, None, None]
    masks = torch.zeros((len(objects), ys.shape[1], xs.shape[1]), dtype=torch.bool)
    for label, shape_fn in enumerate(_SHAPE_FUNCTIONS):
        rows = (objects.label == label).nonzero().squeeze(1)
        if rows.numel():
            c, s, x, y = cos[rows], sin[rows], dx[rows], dy[rows]
            masks[rows] = shape_fn(c * x + s * y, c * y - s * x)
    return masks


def render_masks(objects: ShapeObjects, size: int) -> torch.Tensor:
    """Pixel masks of ``objects`` on the whole image: ``(M,) objects -> (M, size, size)`` bool.

    A pixel belongs to a shape when its centre does.
    """
    grid = (torch.arange(size, dtype=torch.float32) + 0.5).expand(len(objects), size)
    return _masks_on_grid(objects, grid, grid)


def _uniform(shape: tuple[int, ...], low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=g)


def _sample_objects(
    n: int, size: int, multilabel: bool, g: torch.Generator
) -> tuple[ShapeObjects, torch.Tensor]:
    """Draw the shapes' parameters and the background colours ``(n, 3)``."""
    k = len(SHAPE_CLASSES)
    scale = size / _REFERENCE_SIZE
    background = torch.rand((n, 3), generator=g)
    if not multilabel:
        label = (torch.arange(n) % k)[torch.randperm(n, generator=g)]  # balanced classes
        image = torch.arange(n)
        radius = _uniform((n,), _RADIUS[0] * scale, _RADIUS[1] * scale, g)
        center = radius[:, None] + torch.rand((n, 2), generator=g) * (size - 2 * radius[:, None])
    else:
        count = torch.randint(1, 4, (n,), generator=g)
        labels = torch.argsort(torch.rand((n, k), generator=g), dim=1)[:, :3]
        cells = torch.argsort(torch.rand((n, 4), generator=g), dim=1)[:, :3]
        keep = torch.arange(3)[None, :] < count[:, None]  # row-major order keeps images sorted
        image = torch.arange(n)[:, None].expand(n, 3)[keep]
        label, cell = labels[keep], cells[keep]
        m = image.shape[0]
        half = size / 2
        radius = _uniform((m,), _RADIUS[0] * scale, _MULTI_RADIUS_MAX * scale, g)
        offset = torch.stack([cell % 2, cell // 2], dim=1).to(torch.float32) * half
        span = half - 2 * radius[:, None]
        center = offset + radius[:, None] + torch.rand((m, 2), generator=g) * span
    m = image.shape[0]
    angle = _uniform((m,), 0.0, 2 * math.pi, g)
    # A colour far enough from the background: the first of 8 candidates that qualifies
    # (or the farthest one), so the contrast does not depend on the class.
    candidates = torch.rand((m, 8, 3), generator=g)
    distance = (candidates - background[image][:, None, :]).norm(dim=2)
    ok = distance >= _MIN_CONTRAST
    pick = torch.where(ok.any(dim=1), ok.to(torch.int8).argmax(dim=1), distance.argmax(dim=1))
    colour = candidates[torch.arange(m), pick]
    objects = ShapeObjects(image, label, center.to(torch.float32), radius, angle, colour)
    return objects, background


@functools.lru_cache(maxsize=8)
def _upsampling_matrix(source: int, size: int) -> torch.Tensor:
    """``(size, source)`` matrix of bilinear upsampling weights (``align_corners=False``)."""
    eye = torch.eye(source)[:, None, :]  # (source, 1, source): one signal per basis vector
    up = F.interpolate(eye, size=size, mode="linear", align_corners=False)  # (source, 1, size)
    return up[:, 0, :].T.contiguous()


def _render_chunk(
    objects: ShapeObjects, background: torch.Tensor, start: int, size: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(B, 3, H, W)`` uint8 and mask bits ``(B, H, W)`` uint8 for one chunk."""
    b = background.shape[0]
    # Each shape is rasterized on a square patch around it (a shape fits in its circle of
    # radius r, so a patch of side 2 r_max + 2 holds it), then pasted into the images.
    patch = min(size, math.ceil(2 * float(objects.radius.max())) + 2) if len(objects) else 1
    offsets = torch.arange(patch)
    corner = (objects.center.floor().long() - patch // 2).clamp_(0, size - patch)  # (m, 2)
    xs = corner[:, 0, None] + offsets + 0.5
    ys = corner[:, 1, None] + offsets + 0.5
    masks = _masks_on_grid(objects, xs, ys)  # (m, patch, patch)
    pixel = (
        (objects.image - start)[:, None, None] * (size * size)
        + (corner[:, 1, None, None] + offsets[None, :, None]) * size
        + (corner[:, 0, None, None] + offsets[None, None, :])
    )  # (m, patch, patch) flat index into (B, H, W)
    # Shapes never overlap, so each pixel is painted by at most one shape.
    painted = pixel[masks]  # flat (B, H, W) indices of shape pixels
    shape = torch.arange(len(objects))[:, None, None].expand_as(masks)[masks]
    bits = torch.zeros(b * size * size, dtype=torch.uint8)
    bits[painted] = (1 << objects.label[shape]).to(torch.uint8)

    # Background in 0-255 units (+0.5 so that the final truncation rounds): a colour plus a
    # smooth texture, bilinear upsampling of grid noise done as two small matrix products
    # (the weights sum to 1, so the colour can be added on the grid).
    up = _upsampling_matrix(_TEXTURE_GRID, size)
    grid = torch.randn((b, 3, _TEXTURE_GRID, _TEXTURE_GRID), generator=g) * (255 * _TEXTURE_STD)
    grid += (background * 255.0 + 0.5)[:, :, None, None]
    canvas = torch.matmul(torch.matmul(up, grid), up.T)  # (B, 3, H, W)
    image, place = painted // (size * size), painted % (size * size)
    canvas.view(b, 3, size * size)[image, :, place] = objects.colour[shape] * 255.0 + 0.5
    canvas += _uniform((b, 1, size, size), -255.0 * _NOISE, 255.0 * _NOISE, g)  # grey noise
    pixels = canvas.clamp_(0.0, 255.0).to(torch.uint8)
    return pixels, bits.view(b, size, size)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread, restoring the count afterwards.

    Generation is many small tensor ops; on a machine shared with other work, intra-op threads
    wait on each other at every op (measured: 2 threads took 13-30 s for 10,000 images under
    load, 1 thread 2-3.5 s; idle, 0.9 s versus 1.4 s). One thread also makes the pixels
    independent of the machine's core count.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=2)
def generate_shapes(
    n: int, size: int = 64, *, multilabel: bool = False, seed: int = 0, split: str = "train"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, ShapeObjects]:
    """Generate ``n`` images of shapes; deterministic in ``(n, size, multilabel, seed, split)``.

    Returns ``images`` ``(n, 3, size, size)`` uint8, ``mask_bits`` ``(n, size, size)`` uint8
    (bit ``k`` set where class ``k`` is drawn), ``targets`` (``(n,)`` int64 for one shape per
    image, ``(n, K)`` float32 0/1 for ``multilabel``) and the drawn :class:`ShapeObjects`.
    Results are cached (the last two calls); treat them as read-only.
    """
    if n < 1:
        raise DataError(f"the shapes data set needs n >= 1 images, got n={n}")
    if size < MIN_SIZE:
        raise DataError(f"the shapes data set needs size >= {MIN_SIZE} pixels, got size={size}")
    name = "shapes-multilabel" if multilabel else "shapes"
    g = make_generator(seed, name, split, str(size))
    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    bits = torch.empty((n, size, size), dtype=torch.uint8)
    with _one_thread():
        objects, background = _sample_objects(n, size, multilabel, g)
        starts = torch.arange(0, n + _CHUNK, _CHUNK).clamp(max=n)
        bounds = torch.searchsorted(objects.image, starts)
        for chunk, start in enumerate(range(0, n, _CHUNK)):
            stop = min(start + _CHUNK, n)
            rows = slice(int(bounds[chunk]), int(bounds[chunk + 1]))
            images[start:stop], bits[start:stop] = _render_chunk(
                objects.select(rows), background[start:stop], start, size, g
            )
    k = len(SHAPE_CLASSES)
    if multilabel:
        targets = torch.zeros((n, k), dtype=torch.float32)
        targets[objects.image, objects.label] = 1.0
    else:
        targets = objects.label.clone()
    return images, bits, targets, objects


def unpack_masks(bits: torch.Tensor, num_classes: int = len(SHAPE_CLASSES)) -> torch.Tensor:
    """Mask bit fields to per-class masks: ``(..., H, W)`` uint8 -> ``(..., K, H, W)`` float32."""
    shifts = torch.arange(num_classes, dtype=torch.uint8)[:, None, None]
    return ((bits.unsqueeze(-3) >> shifts) & 1).to(torch.float32)


class ShapesDataset(XaiDataset):
    """Items ``(image (3, H, W) float32 in [0, 1], target, masks (K, H, W) float32 0/1)``.

    ``masks[k]`` is non-zero exactly where shape class ``k`` is drawn, so only the present
    classes' channels are non-zero (exactly one channel for ``shapes``). Attributes beyond
    :class:`~xaikit.data.base.XaiDataset`: ``images`` uint8 ``(N, 3, H, W)``, ``mask_bits``
    ``(N, H, W)`` and ``objects`` (:class:`ShapeObjects`, each shape's parameters).
    """

    def __init__(
        self, split: str, *, multilabel: bool, n: int | None, size: int, seed: int
    ) -> None:
        n = DEFAULT_N.get(split, DEFAULT_N["test"]) if n is None else n
        images, bits, targets, objects = generate_shapes(
            int(n), int(size), multilabel=multilabel, seed=int(seed), split=split
        )
        super().__init__(
            name="shapes-multilabel" if multilabel else "shapes",
            split=split,
            classes=list(SHAPE_CLASSES),
            task="multilabel" if multilabel else "multiclass",
            input_kind="image",
            targets=targets,
            normalization=None,
            has_ground_truth=True,
        )
        self.images = images
        self.mask_bits = bits
        self.objects = objects
        self.size = int(size)

    def masks(self, index: int | slice | torch.Tensor) -> torch.Tensor:
        """Ground-truth masks of one or many items: ``(K, H, W)`` or ``(B, K, H, W)`` float32."""
        if isinstance(index, int):
            index = self._check_index(index)
        return unpack_masks(self.mask_bits[index], self.num_classes)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = self._check_index(index)
        image = self.images[index].to(torch.float32) / 255.0
        return image, self.targets[index], self.masks(index)


def load_shapes(
    split: str = "train", *, n: int | None = None, size: int = 64, seed: int = 0
) -> ShapesDataset:
    """``shapes``: one shape per image, multi-class, balanced classes.

    ``n`` defaults to 10,000 (train) / 2,000 (test); ``size`` is the image side in pixels;
    train and test are drawn from different random streams of ``seed``.
    """
    return ShapesDataset(split, multilabel=False, n=n, size=size, seed=seed)


def load_shapes_multilabel(
    split: str = "train", *, n: int | None = None, size: int = 64, seed: int = 0
) -> ShapesDataset:
    """``shapes-multilabel``: 1-3 distinct shapes per image, target = ``(K,)`` 0/1 vector.

    Options as for :func:`load_shapes`.
    """
    return ShapesDataset(split, multilabel=True, n=n, size=size, seed=seed)
