"""Model sources: one resolver from the name a user gives to a model and its model card.

:func:`xaikit.load_model` (and so every command's ``--model``) reads a name as one of:

* a zoo architecture (``"simple_cnn"``, see :func:`xaikit.list_models`),
* ``"torchvision:<name>"`` (any torchvision classifier),
* ``"timm:<name>"`` (any timm model; timm is optional),
* otherwise a checkpoint or a shipped reference model (:mod:`xaikit.zoo.checkpoint`).

The first three get their weights from one of three places:

* random (the default), drawn under ``torch.random.fork_rng`` from ``seed``: two loads give
  the same weights and the caller's random stream is left untouched;
* a weights file (``weights=``): safetensors or a PyTorch state dict, read by
  :mod:`xaikit.zoo.state_dicts` without running code; ``num_classes`` is read off the file's
  classifier when not given;
* ``pretrained=True``: torchvision's published weights (from the torch hub cache, else
  downloaded by us and read with ``weights_only=True``; torchvision's own loader is never
  called) or timm's (from the Hugging Face cache, safetensors only; nothing is downloaded).

The model card that comes back records where the weights came from (``weights``:
``"random"``, ``"pretrained:<enum>"`` or ``"file:<path>"``, with ``weights_sha256``), the
class names, the normalization and the input shape.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xaikit.errors import CheckpointError, XaikitConfigError
from xaikit.zoo.checkpoint import CARD_FORMAT, list_shipped_models
from xaikit.zoo.heads import get_task
from xaikit.zoo.registry import (
    TIMM_PREFIX,
    TORCHVISION_PREFIX,
    arch_info,
    create_model,
    list_models,
    require_timm,
)
from xaikit.zoo.state_dicts import (
    WeightsFile,
    file_sha256,
    infer_num_classes,
    load_state_into,
    read_weights_file,
)

IMAGENET_NORMALIZATION: dict[str, list[float]] = {
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
#: What a torchvision classifier with random weights is fed (its pretrained siblings' input).
TORCHVISION_INPUT_SHAPE = [3, 224, 224]
#: The file timm publishes its weights as on the Hugging Face hub (the only one we read there).
TIMM_HUB_FILE = "model.safetensors"


def source_kind(name: str) -> str:
    """``"torchvision"``, ``"timm"``, ``"zoo"`` (an architecture that is not also a shipped
    reference model's name) or ``"checkpoint"`` (everything else)."""
    if name.startswith(TORCHVISION_PREFIX):
        return "torchvision"
    if name.startswith(TIMM_PREFIX):
        return "timm"
    if name in list_models() and name not in list_shipped_models():
        return "zoo"
    return "checkpoint"


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draw from ``seed`` inside, and give the caller's CPU random state back afterwards."""
    # Models are built on the CPU, so only the CPU generator needs forking (devices=[] also
    # keeps fork_rng from initializing CUDA).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names (``"tench"``, ``"goldfish"``, ...), from torchvision's
    weights metadata: available offline, nothing is downloaded."""
    import torchvision

    return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def load_source(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = False,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build a zoo architecture, a torchvision or a timm model with its weights and card.

    Args:
        name: ``"simple_cnn"``, ``"torchvision:resnet18"``, ``"timm:vit_tiny_patch16_224"``.
        weights: a weights file (safetensors or a PyTorch state dict).
        pretrained: the published weights of a torchvision or timm model.
        seed: the seed random weights are drawn from (a build that a file then overwrites
            is seeded too, so every build is reproducible and the caller's stream untouched).
        options: architecture options (``num_classes``, ``widths``, ...); for a weights file
            a missing ``num_classes`` is read off the file.

    Returns:
        ``(model, card)``: the model in train mode (``load_model`` moves it and sets eval).

    Raises:
        XaikitConfigError: an unknown name or option, or pretrained weights asked of a model
            that has none. CheckpointError: a weights file that is unsafe or does not fit,
            pretrained weights that cannot be found.
    """
    opts = dict(options or {})
    if weights is not None and (pretrained or opts.get("weights") is not None):
        raise XaikitConfigError("give a weights file or ask for pretrained weights, not both")
    kind = source_kind(name)
    file = read_weights_file(weights) if weights is not None else None
    if kind == "zoo":
        if pretrained:
            raise XaikitConfigError(
                f"{name} is an architecture of the zoo: it has no pretrained weights; pass a "
                "weights file, or use a reference model (see `xaikit zoo`)"
            )
        return _zoo(name, file, seed, opts)
    if kind == "torchvision":
        return _torchvision(name[len(TORCHVISION_PREFIX) :], file, pretrained, seed, opts)
    if kind == "timm":
        return _timm(name[len(TIMM_PREFIX) :], file, pretrained, seed, opts)
    raise XaikitConfigError(f"{name!r} is a checkpoint, not an architecture: use load_model")


# -- building, shared ---------------------------------------------------------------------


def _build(
    name: str, options: dict[str, Any], seed: int, file: WeightsFile | None, classes: int
) -> nn.Module:
    """``create_model(name, **options)`` under ``seed``, then the file's weights loaded
    strictly; without ``num_classes`` in ``options`` the file's classifier decides it."""
    kwargs = {"num_classes": classes, **options}
    with seeded(seed):
        model = create_model(name, **kwargs)
    if file is None:
        return model
    if "num_classes" not in options:
        found = infer_num_classes(model, file.state, kwargs["num_classes"])
        if found is not None:
            kwargs["num_classes"] = found
            with seeded(seed):
                model = create_model(name, **kwargs)
    load_state_into(model, file.state, str(file.path))
    return model


def _card(
    name: str,
    model: nn.Module,
    *,
    weights: str,
    sha256: str | None,
    seed: int | None,
    source: Path | None,
    input_shape: list[int] | None,
    normalization: Mapping[str, Any] | None,
    class_names: list[str] | None,
) -> dict[str, Any]:
    spec = dict(getattr(model, "spec", {}))
    spec.pop("name", None)
    num_classes = spec.get("num_classes")
    if class_names is not None and len(class_names) != num_classes:
        class_names = None  # names of another head (e.g. a re-headed pretrained model)
    return {
        "format": CARD_FORMAT,
        "architecture": name,
        "config": spec,
        "task": get_task(model).name,
        "num_classes": num_classes,
        "class_names": class_names,
        "input_shape": input_shape,
        "normalization": dict(normalization) if normalization is not None else None,
        "weights": weights,
        "weights_sha256": sha256,
        "seed": seed,
        # The file actually read (as load_model records for a checkpoint); None for random.
        "source": {"path": str(Path(source).resolve()), "sha256": sha256} if source else None,
    }


def _weights_fields(file: WeightsFile | None, seed: int) -> dict[str, Any]:
    if file is None:
        return {"weights": "random", "sha256": None, "seed": seed, "source": None}
    return {"weights": file.label, "sha256": file.sha256, "seed": None, "source": file.path}


# -- the zoo ------------------------------------------------------------------------------


def _zoo(
    name: str, file: WeightsFile | None, seed: int, options: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    info = arch_info(name)
    example = list(info.example_input)
    channel_axis = -1 if info.input_kind == "sequence" else 0
    options.setdefault("in_channels", example[channel_axis])
    model = _build(name, options, seed, file, classes=10)
    example[channel_axis] = int(options["in_channels"])
    if info.input_kind == "image" and "input_size" in options:
        example[1:] = [int(options["input_size"])] * 2
    card = _card(
        name,
        model,
        **_weights_fields(file, seed),
        input_shape=example,
        normalization=None,
        class_names=None,
    )
    return model, card


# -- torchvision --------------------------------------------------------------------------


def torchvision_weights(arch: str, which: Any = "DEFAULT") -> Any:
    """The ``WeightsEnum`` member of torchvision classifier ``arch``: ``"DEFAULT"``, a member
    name (``"IMAGENET1K_V1"`` or ``"ResNet18_Weights.IMAGENET1K_V1"``) or a member."""
    import torchvision
    from torchvision.models import WeightsEnum

    if isinstance(which, WeightsEnum):
        return which
    try:
        members = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        raise XaikitConfigError(f"torchvision:{arch} has no pretrained weights") from None
    key = "DEFAULT" if which in (None, True) else str(which).split(".")[-1]
    try:
        return members[key]
    except KeyError:
        raise XaikitConfigError(
            f"torchvision:{arch} has no weights {which!r}; choose one of "
            f"{', '.join(members.__members__)}"
        ) from None


def torchvision_weights_file(arch: str, enum: Any) -> Path:
    """The local file of pretrained weights ``enum``: the torch hub cache's copy
    (``torch.hub.get_dir()/checkpoints/<file name of the URL>``), else downloaded there.

    Raises:
        CheckpointError: not cached and the download failed (one line naming the path).
    """
    url = str(enum.url)
    cached = (
        Path(torch.hub.get_dir())
        / "checkpoints"
        / os.path.basename(urllib.parse.urlparse(url).path)
    )
    if cached.is_file():
        return cached
    found = torch.hub.HASH_REGEX.search(cached.name)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Writes to a temporary file beside the target and renames it when complete.
        torch.hub.download_url_to_file(
            url,
            str(cached),
            hash_prefix=found.group(1) if found else None,
            progress=os.environ.get("XAIKIT_QUIET") != "1",
        )
    except OSError as err:  # urllib's URLError is an OSError
        reason = getattr(err, "reason", None) or err
        raise CheckpointError(
            f"could not download pretrained weights for torchvision:{arch} ({reason}); no "
            f"network and not in the cache at {cached}"
        ) from None
    except RuntimeError as err:  # the hash in the file name does not match
        first = (str(err).strip().splitlines() or ["hash mismatch"])[0]
        raise CheckpointError(
            f"the pretrained weights downloaded for torchvision:{arch} failed their check "
            f"({first}); nothing was kept at {cached}"
        ) from None
    return cached


def _implied_options(arch: str, enum: Any, config: Mapping[str, Any]) -> tuple[dict, dict]:
    """The options torchvision's builders set when given weights: ``(recorded, build)``.

    ``recorded`` goes into ``model.spec`` (what rebuilds the network that was loaded),
    ``build`` is what the network is built with before the weights are loaded.
    """
    recorded: dict[str, Any] = {}
    if arch in ("inception_v3", "googlenet"):
        recorded["transform_input"] = config.get("transform_input", True)
        recorded["aux_logits"] = config.get("aux_logits", arch == "inception_v3")
        recorded["init_weights"] = False
        # The published files hold the auxiliary heads: load them, drop them after if unwanted.
        return recorded, {**recorded, "aux_logits": True}
    min_size = enum.meta.get("min_size")
    if arch.startswith("vit_") and min_size and "image_size" not in config:
        recorded["image_size"] = int(min_size[0])
    if arch.startswith("maxvit") and min_size and "input_size" not in config:
        recorded["input_size"] = [int(v) for v in min_size]
    return recorded, dict(recorded)


def pretrained_torchvision(arch: str, num_classes: int, config: dict[str, Any]) -> nn.Module:
    """Build torchvision classifier ``arch`` with the pretrained weights ``config["weights"]``.

    ``config`` is updated in place: ``weights`` becomes the enum's member name and the
    options those weights imply (``transform_input`` for Inception, the ViT image size) are
    added, so ``model.spec`` rebuilds the same network.
    """
    import torchvision

    enum = torchvision_weights(arch, config.get("weights"))
    classes = len(enum.meta["categories"])
    if num_classes != classes:
        raise XaikitConfigError(
            f"the pretrained weights {enum} have {classes} classes; pass num_classes={classes} "
            "(or omit it) and fine-tune a new head afterwards"
        )
    recorded, build = _implied_options(arch, enum, config)
    config["weights"] = enum.name
    config.update(recorded)
    options = {k: v for k, v in config.items() if k != "weights"}
    options.update(build)
    try:
        model = torchvision.models.get_model(arch, weights=None, num_classes=classes, **options)
    except TypeError as err:
        raise XaikitConfigError(f"torchvision:{arch}: {err}") from None
    file = read_weights_file(torchvision_weights_file(arch, enum))
    load_state_into(model, file.state, str(file.path))
    if "aux_logits" in recorded and not recorded["aux_logits"]:
        model.aux_logits = False
        for head in ("AuxLogits", "aux1", "aux2"):
            if hasattr(model, head):
                setattr(model, head, None)
    return model


def _official_enum(arch: str, path: Path) -> Any:
    """The torchvision weights whose published file name ``path`` has, if any: a user who
    downloaded ``resnet18-f37072fd.pth`` by hand gets its class names and normalization."""
    import torchvision

    try:
        members = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        return None
    for member in members:
        if os.path.basename(urllib.parse.urlparse(member.url).path) == path.name:
            return member
    return None


def _enum_meta(enum: Any) -> tuple[list[int], dict[str, list[float]], list[str]]:
    """``(input_shape, normalization, class_names)`` of torchvision weights, from their
    transforms and metadata alone (no download)."""
    transform = enum.transforms()
    size = int(transform.crop_size[0])
    normalization = {"mean": list(transform.mean), "std": list(transform.std)}
    return [3, size, size], normalization, list(enum.meta["categories"])


def _torchvision(
    arch: str, file: WeightsFile | None, pretrained: bool, seed: int, options: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    name = TORCHVISION_PREFIX + arch
    if pretrained or options.get("weights") is not None:
        enum = torchvision_weights(arch, options.pop("weights", None))
        shape, normalization, names = _enum_meta(enum)
        classes = len(names)
        with seeded(seed):  # the network is drawn before the weights replace it
            model = create_model(name, **{"num_classes": classes, **options, "weights": enum.name})
        cached = torchvision_weights_file(arch, enum)  # read just now: in the cache
        card = _card(
            name,
            model,
            weights=f"pretrained:{enum}",
            sha256=file_sha256(cached),
            seed=None,
            source=cached,
            input_shape=shape,
            normalization=normalization,
            class_names=names,
        )
        return model, card
    model = _build(name, options, seed, file, classes=1000)
    shape, normalization, names = list(TORCHVISION_INPUT_SHAPE), IMAGENET_NORMALIZATION, None
    official = _official_enum(arch, file.path) if file is not None else None
    if official is not None:
        shape, normalization, names = _enum_meta(official)
    card = _card(
        name,
        model,
        **_weights_fields(file, seed),
        input_shape=shape,
        normalization=normalization,
        class_names=names,
    )
    return model, card


# -- timm ---------------------------------------------------------------------------------


def _timm_cfg(arch: str) -> dict[str, Any]:
    """timm's pretrained config of ``arch`` (mean, std, input size, classes, hub id), without
    building the model; ``{}`` for a model without one."""
    require_timm(arch)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None:
        return {}
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))


def timm_class_names(cfg: Mapping[str, Any], num_classes: int) -> list[str] | None:
    """Label names for timm weights: the config's own, else ImageNet's for the subset timm
    infers from the class count (``timm.data.ImageNetInfo``); short names (``"tench"``)."""
    names = cfg.get("label_names")
    if names and len(names) == num_classes:
        return [str(n) for n in names]
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset
    except ImportError:  # timm before 0.9.8
        return None
    subset = infer_imagenet_subset({"num_classes": num_classes})
    if subset is None:
        return None
    descriptions = ImageNetInfo(subset).label_descriptions()
    return [str(d).split(",")[0].strip() for d in descriptions]


def timm_weights_file(arch: str, cfg: Mapping[str, Any]) -> Path:
    """The cached ``model.safetensors`` of timm weights on the Hugging Face hub.

    Only the local cache is looked at (nothing is downloaded, no pickle is opened).

    Raises:
        CheckpointError: the weights are not in the cache (one line saying how to get them).
    """
    hub_id = cfg.get("hf_hub_id")
    if not hub_id:
        raise CheckpointError(
            f"timm:{arch} publishes no weights on the Hugging Face hub; pass a weights file"
        )
    repo, _, revision = str(hub_id).partition("@")
    from huggingface_hub import constants, try_to_load_from_cache

    found = try_to_load_from_cache(repo, TIMM_HUB_FILE, revision=revision or None)
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found)
    raise CheckpointError(
        f"timm:{arch}: the pretrained weights ({repo}/{TIMM_HUB_FILE}) are not in the Hugging "
        f"Face cache at {constants.HF_HUB_CACHE}; xaikit downloads no timm weights: fetch "
        f"them with `hf download {repo} {TIMM_HUB_FILE}`, or pass the file as weights"
    )


def _timm(
    arch: str, file: WeightsFile | None, pretrained: bool, seed: int, options: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    name = TIMM_PREFIX + arch
    cfg = _timm_cfg(arch)
    classes = int(cfg.get("num_classes") or 1000)
    shape = [int(v) for v in cfg.get("input_size") or TORCHVISION_INPUT_SHAPE]
    mean, std = cfg.get("mean"), cfg.get("std")
    if pretrained:
        if int(options.get("num_classes", classes)) != classes:
            raise XaikitConfigError(
                f"the pretrained weights of timm:{arch} have {classes} classes; pass "
                f"num_classes={classes} (or omit it)"
            )
        if int(options.get("in_channels", shape[0])) != shape[0]:
            raise XaikitConfigError(
                f"the pretrained weights of timm:{arch} take {shape[0]} channels"
            )
        file = read_weights_file(timm_weights_file(arch, cfg))
    model = _build(name, options, seed, file, classes=classes)
    shape[0] = int(model.spec.get("in_channels", shape[0]))
    normalization = None
    if mean is not None and std is not None and len(mean) == shape[0]:
        normalization = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    fields = _weights_fields(file, seed)
    names = None
    if pretrained:
        fields["weights"] = f"pretrained:{cfg['hf_hub_id']}"  # timm_weights_file needs it
        names = timm_class_names(cfg, int(model.spec["num_classes"]))
    card = _card(
        name,
        model,
        **fields,
        input_shape=shape,
        normalization=normalization,
        class_names=names,
    )
    return model, card
