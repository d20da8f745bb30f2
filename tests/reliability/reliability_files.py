"""Files that break things, for the reliability suite: bad images, bombs, hostile pickles.

Everything is generated on the fly in a temporary folder; nothing is downloaded or read from
outside the repository.
"""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CLASS_NAMES = ["circle", "square", "triangle"]
INPUT_SHAPE = [3, 16, 16]


def files_under(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative POSIX paths), sorted; [] when it does not exist."""
    if not folder.exists():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# -- images ---------------------------------------------------------------------------------


def noise(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (height, width, channels) if channels > 1 else (height, width)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def write_image(path: Path, height: int = 20, width: int = 24, *, seed: int = 0) -> Path:
    """A good RGB image (PNG, JPEG, ... by the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noise(height, width, 3, seed)).save(path)
    return path


def write_mode_image(path: Path, mode: str, size: int = 20) -> Path:
    """An image in one of PIL's modes that is NOT bad input: L, LA, RGBA, P, P+transparency,
    I;16 (16-bit grey), 1 (bi-level)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        values = np.linspace(0, 65535, size * size, dtype=np.uint16).reshape(size, size)
        Image.fromarray(values).save(path)  # PIL stores uint16 arrays as mode I;16
        return path
    rgb = Image.fromarray(noise(size, size, 3, seed=3))
    if mode == "P-transparent":
        image = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        image.info["transparency"] = 0
        image.save(path, transparency=0)
        return path
    if mode == "P":
        image = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode in ("RGBA", "LA"):
        image = rgb.convert(mode)
        alpha = Image.fromarray(noise(size, size, 1, seed=4))
        image.putalpha(alpha)
    else:
        image = rgb.convert(mode)
    image.save(path)
    return path


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` RGB pixels but whose data is tiny: a
    decompression bomb's header (decoding it would allocate ``3 * width * height`` bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def truncated(path: Path, fmt: str) -> Path:
    """A real PNG or JPEG of noise, cut in half."""
    buffer = io.BytesIO()
    Image.fromarray(noise(64, 64, 3, seed=5)).save(buffer, format=fmt)
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2])
    return path


#: bad image files: case -> (what to write, a substring of the reason)
BAD_IMAGE_CASES = {
    "missing": "does not exist",
    "empty": "is empty",
    "text-named-png": "is not an image file",
    "truncated-png": "truncated or corrupt",
    "truncated-jpeg": "truncated or corrupt",
    "bomb-20000x20000": "refused before decoding",
}


def bad_image(folder: Path, case: str) -> Path:
    """Write the bad image ``case`` (see :data:`BAD_IMAGE_CASES`) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if case == "missing":
        return folder / "missing.png"
    if case == "empty":
        path = folder / "empty.png"
        path.write_bytes(b"")
    elif case == "text-named-png":
        path = folder / "text.png"
        path.write_text("these are not the pixels you are looking for\n")
    elif case == "truncated-png":
        path = truncated(folder / "cut.png", "PNG")
    elif case == "truncated-jpeg":
        path = truncated(folder / "cut.jpg", "JPEG")
    elif case == "bomb-20000x20000":
        path = folder / "bomb.png"
        path.write_bytes(png_with_header(20000, 20000))
    else:  # pragma: no cover - a typo in a test
        raise ValueError(case)
    return path


# -- checkpoints ----------------------------------------------------------------------------


def save_tiny(path: Path, *, seed: int = 0) -> Path:
    """The suite's tiny 3-class CNN for 3x16x16 inputs, saved at ``path`` (a stem)."""
    import xaikit

    torch.manual_seed(seed)
    model = xaikit.create_model("simple_cnn", num_classes=3, widths=(4, 8), input_size=16)
    xaikit.save_model(model.eval(), path, class_names=CLASS_NAMES, input_shape=INPUT_SHAPE)
    return path


class Payload:
    """Unpickling this object runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def hostile_bytes(marker: Path, form: str) -> bytes:
    """A file that runs code when unpickled (creates ``marker``), in one of the forms a
    checkpoint can take: ``pickle0`` .. ``pickle5`` (raw pickle protocols), ``torch-zip``
    (``torch.save``'s zip format), ``torch-legacy`` (``torch.save``'s old format), and
    ``after-fake-header`` (8 bytes that parse as a small safetensors header length, then the
    pickle)."""
    payload = {"state_dict": Payload(marker), "weight": torch.zeros(2)}
    if form.startswith("pickle"):
        return pickle.dumps(payload, protocol=int(form[len("pickle") :]))
    if form in ("torch-zip", "torch-legacy"):
        buffer = io.BytesIO()
        torch.save(payload, buffer, _use_new_zipfile_serialization=form == "torch-zip")
        return buffer.getvalue()
    if form == "after-fake-header":
        body = pickle.dumps(payload, protocol=2)
        return struct.pack("<Q", len(body) - 8) + body
    raise ValueError(form)  # pragma: no cover


HOSTILE_FORMS = [
    "pickle0",
    "pickle2",
    "pickle4",
    "pickle5",
    "torch-zip",
    "torch-legacy",
    "after-fake-header",
]
CHECKPOINT_NAMES = [
    "model.safetensors",
    "model.pt",
    "model.pth",
    "model.bin",
    "model.ckpt",
    "model",
    "folder/model.safetensors",
    "folder/model.pt",
]


def plant_hostile(root: Path, name: str, marker: Path, form: str = "pickle4") -> Path:
    """Write a hostile pickle at ``root/name`` with a model card beside it that would be
    valid for the suite's tiny CNN; return the path a user would pass as ``--model`` (the
    folder for ``folder/...`` names)."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(hostile_bytes(marker, form))
    card = {
        "format": "xaikit-model-card",
        "format_version": 1,
        "architecture": "simple_cnn",
        "config": {"num_classes": 3, "task": "multiclass", "in_channels": 3, "widths": [4, 8]},
        "task": "multiclass",
        "class_names": CLASS_NAMES,
        "input_shape": INPUT_SHAPE,
    }
    import json

    stem = path.name.split(".")[0]
    (path.parent / f"{stem}.json").write_text(json.dumps(card))
    return path.parent if name.startswith("folder/") else path
