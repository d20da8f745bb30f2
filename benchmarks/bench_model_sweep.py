"""Grad-CAM with ``layer="auto"`` on every torchvision classifier and ~100 timm models.

Random weights (``torch.manual_seed(0)``), eval mode, ``x = torch.randn(2, 3, S, S)`` with
seed 1 (``S`` = 224; timm's ``pretrained_cfg["input_size"]`` when larger, 299 for
``inception_v3``, 256 for torchvision ``swin_v2_*``), targets ``[1, 2]`` (class 1 for image
0, class 2 for image 1), CPU, one thread. A classifier head that is zero-initialized (a
Linear producing the logits with an all-zero weight: torchvision ``vit_*``, timm Mixer,
ResMLP, ...) would give every map a zero gradient, so it is re-drawn from N(0, 0.02) and
the ``note`` column says so.

Per model the CSV records the chosen layer and its layout, the time of one warm
``explain`` over one no-grad forward (CPU process time; the fastest of two interleaved
rounds each), whether the maps are degenerate,
Pearson r against pytorch-grad-cam's ``GradCAM`` at the same layer with the equivalent
``reshape_transform``, and a **meaningful-layer verdict** computed here, independently of
xaikit's own rules:

* ``stem``: the layer is a patch embedding / stem (by name or type) while later blocks
  exist, or more than half of the network's parameterized leaf modules run after it;
* ``attention``: the layer is an attention module (a residual branch) or inside one (q, k,
  v, their norms, attention probabilities), by its ancestors' types and its own name;
* ``runs Nx``: the module runs more than once per forward (counted with a forward hook);
* ``off path``: the scores' gradient does not reach the captured map (prefix tokens
  excluded), checked with ``torch.autograd.grad`` on the explained targets.

Usage::

    python benchmarks/bench_model_sweep.py                  # everything (20-40 min)
    python benchmarks/bench_model_sweep.py --timm --limit 5 # a smoke run
    python benchmarks/bench_model_sweep.py --models timm:vit_tiny_patch16_224,tv:swin_t
    python benchmarks/bench_model_sweep.py --resume         # skip models already in --out
    python benchmarks/bench_model_sweep.py --replace --models timm:coat_tiny  # re-run rows

Writes ``benchmarks/results/model_sweep.csv`` (one row per model, written as it goes) and
``model_sweep.md`` beside it (the summary), and prints the summary counts.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import csv
import gc
import math
import re
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

import xaikit
from xaikit.explain.hooks import hook_count

RESULTS = Path(__file__).resolve().parent / "results"
#: torchvision models left out: too large for a 1-thread CPU sweep.
TV_SKIPPED = {
    "vit_h_14": "632 M parameters, 167 GFLOPs per image",
    "regnet_y_128gf": "645 M parameters, 128 GFLOPs per image",
}
#: One or two small variants per timm family.
TIMM_MODELS = [
    # plain ViTs and relatives (class / distillation / register tokens)
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_medium_patch16_reg4_gap_256",
    "vit_relpos_small_patch16_224",
    "vit_tiny_r_s16_p8_224",
    "flexivit_small",
    "deit_tiny_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "deit3_small_patch16_224",
    "beit_base_patch16_224",
    "eva02_tiny_patch14_224",
    "cait_xxs24_224",
    "xcit_nano_12_p16_224",
    "convit_tiny",
    "tnt_s_patch16_224",
    "crossvit_tiny_240",
    "volo_d1_224",
    "vitamin_small_224",
    # hierarchical transformers
    "pit_ti_224",
    "pit_ti_distilled_224",
    "levit_128s",
    "levit_conv_128s",
    "hiera_tiny_224",
    "hieradet_small",
    "mvitv2_tiny",
    "mvitv2_small_cls",
    "swin_tiny_patch4_window7_224",
    "swinv2_tiny_window8_256",
    "swinv2_cr_tiny_ns_224",
    "coat_lite_tiny",
    "coat_tiny",
    "twins_svt_small",
    "twins_pcpvt_small",
    "nest_tiny_jx",
    "pvt_v2_b0",
    "tiny_vit_5m_224",
    "davit_tiny",
    "gcvit_xxtiny",
    "focalnet_tiny_srf",
    "maxvit_tiny_tf_224",
    "maxvit_rmlp_nano_rw_256",
    "coatnet_nano_rw_224",
    "efficientformer_l1",
    "efficientformerv2_s0",
    "efficientvit_b0",
    "efficientvit_m0",
    "mobilevit_xs",
    "mobilevitv2_050",
    "edgenext_xx_small",
    "fastvit_t8",
    "fastvit_mci0",
    "nextvit_small",
    "visformer_tiny",
    "mobilenetv4_hybrid_medium",
    # MLPs, MetaFormers, recurrent and state-space mixers
    "mixer_s16_224",
    "mixer_b16_224",
    "resmlp_12_224",
    "gmlp_ti16_224",
    "sequencer2d_s",
    "mambaout_femto",
    "poolformer_s12",
    "poolformerv2_s12",
    "convformer_s18",
    "caformer_s18",
    "inception_next_tiny",
    "starnet_s1",
    # CNNs
    "convnext_atto",
    "convnextv2_atto",
    "rdnet_tiny",
    "efficientnet_b0",
    "efficientnetv2_rw_t",
    "tinynet_e",
    "mixnet_s",
    "mobilenetv3_small_100",
    "mobilenetv4_conv_small",
    "fbnetv3_b",
    "hardcorenas_a",
    "lcnet_050",
    "ghostnet_100",
    "ghostnetv2_100",
    "repghostnet_050",
    "rexnet_100",
    "repvit_m1",
    "mobileone_s0",
    "repvgg_a0",
    "resnet18",
    "resnetv2_50",
    "seresnext26d_32x4d",
    "skresnet18",
    "res2net50_26w_4s",
    "resnest14d",
    "regnety_002",
    "regnetz_b16",
    "densenet121",
    "dla34",
    "dpn68",
    "cspresnet50",
    "cspdarknet53",
    "cs3darknet_s",
    "hrnet_w18_small",
    "xception41",
    "inception_v3",
    "inception_v4",
    "hgnet_tiny",
    "hgnetv2_b0",
    "ese_vovnet19b_dw",
    "selecsls42b",
    "nf_resnet26",
    "dm_nfnet_f0",
    "eca_nfnet_l0",
    "tresnet_m",
    "vgg11",
    "botnet26t_256",
    "halonet26t",
    "lambda_resnet26t",
]
TARGETS = [1, 2]

# The verdict's own rules (not xaikit's): names and types of stems and attention.
_STEM_NAME = re.compile(
    r"(^|\.)(patch_embed\w*|stem\w*|conv_proj|patch_embedding|embeddings?|tokenizer|"
    r"conv_stem|pixel_embed)(\.|$)"
)
_STEM_TYPE = re.compile(r"(PatchEmbed|Stem)", re.IGNORECASE)
_ATTENTION_TYPE = re.compile(r"(Att(n|ention)|XCA)")
_CONTAINER_TYPE = re.compile(r"(Block|Layer|Stage|Partition)")
#: More later map layers on the score path than this: the choice passes over part of the net.
_MAX_LATER_MAPS = 3
_ATTENTION_LEAF = {
    "q",
    "k",
    "v",
    "qk",
    "qkv",
    "kv",
    "q_norm",
    "k_norm",
    "v_norm",
    "norm_q",
    "norm_k",
    "norm_v",
    "attn_drop",
    "softmax",
    "attn",
    "attention",
    "self_attn",
    "token_mixer_attn",
}


@dataclass
class Row:
    """One model's result (one CSV row)."""

    source: str
    model: str
    size: int = 0
    params_m: float = 0.0
    layer: str = ""
    layer_type: str = ""
    layout: str = ""
    output_shape: str = ""
    calls: int = 0
    after_frac: float = float("nan")  # share of parameterized leaf modules that run after it
    later_maps: int = 0  # later parameterized map layers the scores' gradient reaches
    gradient: str = ""
    meaningful: str = ""
    verdict: str = ""
    degenerate: str = ""
    t_forward_s: float = float("nan")
    t_explain_s: float = float("nan")
    ratio: float = float("nan")
    ratio_cold: float = float("nan")
    r_raw_min: float = float("nan")
    r_heat_min: float = float("nan")
    pgc: str = ""
    hooks_left: int = 0
    warnings: str = ""
    note: str = ""
    error: str = ""


# --------------------------------------------------------------------------- models


def torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def build(source: str, name: str) -> tuple[nn.Module, int]:
    """The model with random weights (seed 0) in eval mode, and its input size."""
    torch.manual_seed(0)
    if source == "tv":
        import torchvision

        model = torchvision.models.get_model(name, weights=None)
        size = 299 if name == "inception_v3" else 256 if name.startswith("swin_v2_") else 224
    else:
        import timm

        model = timm.create_model(name, pretrained=False)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        size = max(224, int(cfg.get("input_size", (3, 224, 224))[-1]))
    return model.eval(), size


def redraw_zero_heads(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Re-draw from N(0, 0.02) any Linear producing the logits (or a head with as many
    outputs, such as a distillation head) whose weight is all zero. Returns the logits of a
    no-grad forward and a note naming what was re-drawn."""
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for name, module in linears.items():

        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor):
                outputs[name] = out

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits = logits_of(model(x))
    finally:
        for handle in handles:
            handle.remove()
    classes = logits.shape[-1]
    redrawn = []
    generator = torch.Generator().manual_seed(0)
    for name, module in linears.items():
        out = outputs.get(name)
        is_head = out is not None and (out is logits or module.out_features == classes)
        if is_head and not module.weight.detach().any():
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.02)
            redrawn.append(name)
    if not redrawn:
        return logits, ""
    with torch.no_grad():
        logits = logits_of(model(x))
    return logits, f"zero-initialized head {', '.join(redrawn)} re-drawn from N(0, 0.02)"


def logits_of(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return output[0]
    return output.logits


# --------------------------------------------------------------------------- the verdict


def first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def parse_layout(layout: str) -> tuple[str, int, tuple[int, ...]]:
    """``"tokens 1+14x14"`` -> ``("tokens", 1, (14, 14))``; ``"nhwc 7x7"`` -> ``("nhwc", 0,
    (7, 7))``."""
    kind, _, rest = layout.partition(" ")
    prefix = 0
    if "+" in rest:
        head, rest = rest.split("+", 1)
        prefix = int(head)
    grid = tuple(int(g) for g in rest.split("x")) if rest else ()
    return kind, prefix, grid


def reshape_transform(layout: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """pytorch-grad-cam's documented ``reshape_transform`` for a layout (None for nchw):
    tokens drop the prefix, lay out on the grid, channels first; nhwc permutes."""
    kind, prefix, grid = parse_layout(layout)
    if kind == "nchw":
        return None
    if kind == "nhwc":
        return lambda t: t.permute(0, 3, 1, 2)
    if kind == "tokens":

        def tokens(t: torch.Tensor) -> torch.Tensor:
            t = t[:, prefix:, :].reshape(t.size(0), *grid, t.size(2))
            return t.permute(0, 3, 1, 2)

        return tokens
    raise ValueError(f"no reshape_transform for layout {layout!r}")


def _is_attention_type(module: nn.Module) -> bool:
    """An attention module by its type: timm's Attention, WindowAttention, ClassAttn, XCA,
    FactorAttnConvRelPosEnc, torch's MultiheadAttention; not blocks named after it."""
    kind = type(module).__name__
    if isinstance(module, nn.MultiheadAttention):
        return True
    return bool(_ATTENTION_TYPE.search(kind)) and not _CONTAINER_TYPE.search(kind)


def _is_map(tensor: torch.Tensor) -> bool:
    """A tensor with at least 4 positions per channel (``(N, C, H, W)``, ``(N, H, W, C)``,
    ``(N, T, C)``): not a pooled vector, nor a squeeze-excitation ``(N, C, 1, 1)``."""
    if tensor.dim() < 3 or not tensor.is_floating_point():
        return False
    per_sample = tensor[0].numel()
    return per_sample >= 4 * max(tensor.shape[1], tensor.shape[-1])


def verdict(
    model: nn.Module, x: torch.Tensor, layer: str, layout: str, classes: int, row: Row
) -> tuple[bool, list[str]]:
    """The meaningful-layer verdict (see the module docstring); fills the row's columns.

    One forward with grad, hooks on the chosen module (calls, last output) and on every
    parameterized leaf module (finish order, last output); one ``autograd.grad`` of the
    explained scores to all of them.
    """
    modules = dict(model.named_modules())
    module = modules[layer]
    row.layer_type = type(module).__name__
    problems: list[str] = []
    attention = {
        name
        for name, m in modules.items()
        if name and (_is_attention_type(m) or set(name.split(".")) & _ATTENTION_LEAF)
    }
    attention = {
        name for name in modules if any(name == a or name.startswith(a + ".") for a in attention)
    }

    captured: list[torch.Tensor] = []
    finished_before: list[int] = []  # leaves finished when the chosen module finished
    order: dict[str, int] = {}
    outputs: dict[str, torch.Tensor] = {}

    def chosen_hook(_m: nn.Module, _i: Any, out: Any) -> None:
        tensor = first_tensor(out)
        if tensor is not None:
            captured.append(tensor)
        finished_before.append(len(order))

    def leaf_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            order.pop(name, None)
            order[name] = len(order)
            tensor = first_tensor(out)
            if tensor is not None:
                outputs[name] = tensor

        return hook

    handles = [module.register_forward_hook(chosen_hook)]
    for name, m in modules.items():
        if name and not list(m.children()) and any(True for _ in m.parameters(recurse=False)):
            handles.append(m.register_forward_hook(leaf_hook(name)))
    try:
        with torch.enable_grad():
            logits = logits_of(model(x))
    finally:
        for handle in handles:
            handle.remove()

    # Runs once?
    row.calls = len(captured)
    if row.calls > 1:
        problems.append(f"runs {row.calls}x per forward")
    if not captured:
        return False, ["never ran"]

    # Which leaves finished after the chosen module (its last call); the last leaf is the head.
    leaves = list(order)  # in finish order
    body = leaves[:-1]
    position = finished_before[-1]  # leaves[:position] finished before it
    later = [n for n in body[position:] if not (n == layer or n.startswith(layer + "."))]
    row.after_frac = round(len(later) / max(1, len(body)), 3)

    # On the score path? And which later map layers does the gradient reach?
    _kind, prefix, _grid = parse_layout(layout)
    score = sum(logits[i, t] for i, t in enumerate(TARGETS[: x.shape[0]]))
    tensor = captured[-1]
    row.output_shape = "x".join(map(str, tensor.shape))
    later_maps = [
        n for n in later if n not in attention and outputs[n].requires_grad and _is_map(outputs[n])
    ]
    wanted = [tensor, *(outputs[n] for n in later_maps)]
    grads: tuple[torch.Tensor | None, ...] = (None,) * len(wanted)
    if tensor.requires_grad:
        grads = torch.autograd.grad(score, wanted, allow_unused=True)
    else:
        later_maps = []

    def reached(t: torch.Tensor, g: torch.Tensor | None) -> str:
        if g is None:
            return "none"
        # Prefix tokens reach a class-token head by design: only the grid counts. Every token
        # sequence of the model is taken to have as many (CoaT, CrossViT: one per branch).
        if prefix and t.dim() == 3 and t.shape[1] > prefix:
            g = g[:, prefix:]
        return "nonzero" if bool(g.abs().sum() > 0) else "zero"

    row.gradient = reached(tensor, grads[0])
    if row.gradient != "nonzero":
        problems.append(f"off the score path (gradient {row.gradient})")
    skipped = [
        n for n, t, g in zip(later_maps, wanted[1:], grads[1:]) if reached(t, g) == "nonzero"
    ]
    row.later_maps = len(skipped)
    if len(skipped) > _MAX_LATER_MAPS:
        problems.append(
            f"{len(skipped)} later map layers on the score path are passed over "
            f"(e.g. {skipped[-1]})"
        )
    captured.clear()
    outputs.clear()
    del grads, wanted, logits, score

    # Stem: by name or type, while later blocks exist; or early in the network.
    stem_like = bool(_STEM_NAME.search(layer)) or bool(_STEM_TYPE.search(row.layer_type))
    if stem_like and row.after_frac > 0.2:
        problems.append(f"stem / patch embedding ({row.after_frac:.0%} of the network after it)")
    elif row.after_frac > 0.5:
        problems.append(f"early layer ({row.after_frac:.0%} of the network after it)")

    # Attention: the module is an attention module or inside one.
    if layer in attention:
        parts = layer.split(".")
        owner = next(
            (
                ".".join(parts[:i])
                for i in range(1, len(parts) + 1)
                if _is_attention_type(modules[".".join(parts[:i])])
            ),
            layer,
        )
        problems.append(f"attention ({owner}: {type(modules[owner]).__name__})")

    # A map of class scores: a Linear / 1x1 conv with one output channel per class.
    out_channels = getattr(module, "out_features", getattr(module, "out_channels", None))
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) and out_channels == classes:
        problems.append(f"a map of class scores ({row.layer_type} with {classes} outputs)")
    return not problems, problems


# --------------------------------------------------------------------------- comparisons


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def pgc_compare(
    model: nn.Module, x: torch.Tensor, module: nn.Module, layout: str, result: Any, row: Row
) -> None:
    """Pearson r per image of xaikit's raw map vs pytorch-grad-cam's ``get_cam_image`` (the
    signed map at the layer grid, before its ReLU) and of the final heatmaps."""
    import numpy as np
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    class RawGradCAM(GradCAM):
        raw: np.ndarray | None = None

        def get_cam_image(self, *args: Any, **kwargs: Any) -> np.ndarray:
            cam = super().get_cam_image(*args, **kwargs)
            self.raw = cam
            return cam

    cam = RawGradCAM(model, target_layers=[module], reshape_transform=reshape_transform(layout))
    try:
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in TARGETS])
        raw = torch.from_numpy(np.asarray(cam.raw))
    finally:
        cam.activations_and_grads.release()
    model.eval()
    raws = [pearson(result.raw[i, 0], raw[i]) for i in range(x.shape[0])]
    heats = [pearson(result.maps[i, 0], torch.from_numpy(heat[i])) for i in range(x.shape[0])]
    finite = [r for r in raws if not math.isnan(r)]
    row.r_raw_min = round(min(finite), 6) if finite else float("nan")
    finite = [r for r in heats if not math.isnan(r)]
    row.r_heat_min = round(min(finite), 6) if finite else float("nan")
    row.pgc = "ok" if len(finite) == len(heats) else f"{len(heats) - len(finite)} constant"


# --------------------------------------------------------------------------- one model


def forward_time(model: nn.Module, x: torch.Tensor) -> float:
    """CPU seconds of one no-grad forward."""
    start = time.process_time()
    with torch.no_grad():
        model(x)
    return time.process_time() - start


def explain_time(model: nn.Module, x: torch.Tensor) -> tuple[float, Any]:
    """CPU seconds of one Grad-CAM ``explain`` (auto layer, targets ``TARGETS``), and its result."""
    start = time.process_time()
    result = xaikit.explain(model, x, method="gradcam", target=TARGETS, return_result=True)
    return time.process_time() - start, result


def run_one(source: str, name: str, use_pgc: bool = True) -> Row:
    """Everything measured for one model; an exception becomes the row's ``error``."""
    row = Row(source, name)
    model = None
    try:
        model, size = build(source, name)
        row.size = size
        row.params_m = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
        logits, row.note = redraw_zero_heads(model, x)

        forwards = [forward_time(model, x)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cold, result = explain_time(model, x)  # pays for the auto-layer trace
            # Interleaved rounds, the fastest of each: a shared machine slows both alike.
            warms = []
            for _ in range(2):
                forwards.append(forward_time(model, x))
                warm, result = explain_time(model, x)
                warms.append(warm)
        row.t_forward_s = round(min(forwards), 4)
        warm = min(warms)
        messages = sorted({str(w.message).split(" (")[0][:120] for w in caught})
        row.warnings = " | ".join(messages)
        row.t_explain_s = round(warm, 4)
        row.ratio = round(warm / row.t_forward_s, 3)
        row.ratio_cold = round(cold / row.t_forward_s, 3)
        row.hooks_left = hook_count(model)
        row.layer = result.layer or ""
        row.layout = result.layout or ""
        row.degenerate = f"{int(result.degenerate.sum())}/{result.degenerate.numel()}"

        ok, problems = verdict(model, x, row.layer, row.layout, logits.shape[-1], row)
        row.meaningful = "yes" if ok else "no"
        row.verdict = "; ".join(problems)
        if use_pgc:
            try:
                pgc_compare(model, x, model.get_submodule(row.layer), row.layout, result, row)
            except Exception as error:  # a layer pytorch-grad-cam cannot hook (tuples)
                row.pgc = f"n/a: {type(error).__name__}: {str(error)[:100]}"
    except Exception as error:
        row.error = f"{type(error).__name__}: {str(error)[:300]}"
        traceback.print_exc(limit=3)
    finally:
        del model
        gc.collect()
    return row


# --------------------------------------------------------------------------- summary


def _floats(rows: list[Row], attribute: str) -> list[float]:
    values = [getattr(r, attribute) for r in rows]
    return [float(v) for v in values if v != "" and not math.isnan(float(v))]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low, high = math.floor(k), math.ceil(k)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def summarize(rows: list[Row], skipped: dict[str, str]) -> list[str]:
    """The summary lines (Markdown), also printed."""
    lines = ["| source | models | errors | meaningless | degenerate maps | median ratio |"]
    lines[0] += " p90 ratio | max ratio | median r (raw) | min r (raw) | models r >= 0.999 |"
    lines.append("| --- " + "| ---: " * 10 + "|")
    for source in ("tv", "timm", "all"):
        part = [r for r in rows if source in ("all", r.source)]
        if not part:
            continue
        ran = [r for r in part if not r.error]
        ratios = _floats(ran, "ratio")
        rs = _floats(ran, "r_raw_min")
        degenerate = sum(int(r.degenerate.split("/")[0]) for r in ran if r.degenerate)
        maps = sum(int(r.degenerate.split("/")[1]) for r in ran if r.degenerate)
        worst = max(ran, key=lambda r: r.ratio if not math.isnan(r.ratio) else -1, default=None)
        lines.append(
            f"| {source} | {len(part)} | {len(part) - len(ran)} | "
            f"{sum(r.meaningful == 'no' for r in ran)} | {degenerate} of {maps} | "
            f"{statistics.median(ratios) if ratios else float('nan'):.2f}x | "
            f"{percentile(ratios, 0.9):.2f}x | "
            f"{worst.ratio if worst else float('nan'):.2f}x ({worst.model if worst else ''}) | "
            f"{statistics.median(rs) if rs else float('nan'):.6f} | "
            f"{min(rs) if rs else float('nan'):.6f} | {sum(r >= 0.999 for r in rs)} of {len(rs)} |"
        )
    lines.append("")
    lines.append(
        "ratio: one warm `explain` over one no-grad forward, CPU time. r: per model, the lower "
        "of its two images' Pearson r between xaikit's `Explanation.raw` and pytorch-grad-cam's "
        "`get_cam_image` (signed, at the layer grid); undefined where a map is constant."
    )
    lines.append("")
    if skipped:
        lines.append(
            "Skipped: " + "; ".join(f"`{name}` ({why})" for name, why in skipped.items()) + "."
        )
    problems = [r for r in rows if r.error or r.meaningful == "no" or r.hooks_left]
    lines.append("")
    lines.append(f"Errors, meaningless layers or hooks left: {len(problems)}")
    for r in problems:
        what = r.error or r.verdict or f"{r.hooks_left} hooks left"
        lines.append(f"* `{r.source}:{r.model}`: layer `{r.layer}` ({r.layout}): {what}")
    low = [r for r in rows if not r.error and not math.isnan(r.r_raw_min) and r.r_raw_min < 0.999]
    lines.append("")
    lines.append(f"Raw r below 0.999 against pytorch-grad-cam: {len(low)}")
    for r in low:
        lines.append(f"* `{r.source}:{r.model}` at `{r.layer}`: r = {r.r_raw_min:.4f}")
    pgc_na = [r for r in rows if r.pgc.startswith("n/a")]
    if pgc_na:
        lines.append("")
        lines.append("No pytorch-grad-cam comparison:")
        lines.extend(f"* `{r.source}:{r.model}`: {r.pgc}" for r in pgc_na)
    return lines


def write_markdown(path: Path, rows: list[Row], skipped: dict[str, str], command: str) -> None:
    lines = [
        "# Model sweep: Grad-CAM with layer='auto' on torchvision and timm (random weights)",
        "",
        f"Produced by `{command}` (CPU, 1 thread, CPU process time). Columns and the",
        "meaningful-layer verdict: see the docstring of `benchmarks/bench_model_sweep.py`.",
        "",
        *summarize(rows, skipped),
        "",
        "## Per model",
        "",
        "| model | layer | layout | degenerate | ratio | r raw | verdict / note |",
        "| --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        remark = "; ".join(x for x in (r.error, r.verdict, r.note) if x)
        lines.append(
            f"| {r.source}:{r.model} | `{r.layer}` | {r.layout} | {r.degenerate} | "
            f"{r.ratio:.2f} | {r.r_raw_min:.4f} | {remark} |"
        )
    path.write_text("\n".join(lines) + "\n")


def read_rows(path: Path) -> list[Row]:
    if not path.exists():
        return []
    types = {f.name: f.type for f in fields(Row)}
    rows = []
    with path.open() as handle:
        for record in csv.DictReader(handle):
            values: dict[str, Any] = {}
            for key, value in record.items():
                kind = types.get(key)
                if kind in ("int", int):
                    values[key] = int(value) if value else 0
                elif kind in ("float", float):
                    values[key] = float(value) if value else float("nan")
                elif kind is not None:
                    values[key] = value
            rows.append(Row(**values))
    return rows


def _progress(i: int, total: int, row: Row, seconds: float) -> None:
    status = row.error or f"{row.layer} [{row.layout}] {row.meaningful} {row.verdict}"
    print(
        f"[{i + 1}/{total}] {row.source}:{row.model} {seconds:.1f}s "
        f"ratio={row.ratio:.2f} r={row.r_raw_min:.4f} {status}",
        flush=True,
    )


def replace_rows(
    out: Path, jobs: list[tuple[str, str]], use_pgc: bool, skipped: dict[str, str], command: str
) -> int:
    """Re-run ``jobs`` and put their rows in place of the old ones in ``out`` (and its .md)."""
    rows = read_rows(out)
    index = {(r.source, r.model): i for i, r in enumerate(rows)}
    for i, (source, name) in enumerate(jobs):
        start = time.perf_counter()
        row = run_one(source, name, use_pgc=use_pgc)
        _progress(i, len(jobs), row, time.perf_counter() - start)
        if (source, name) in index:
            rows[index[(source, name)]] = row
        else:
            rows.append(row)
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(Row)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    full = "python benchmarks/bench_model_sweep.py"
    write_markdown(out.with_suffix(".md"), rows, skipped, f"{full}`, then `{command}")
    print("\n".join(summarize(rows, skipped)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torchvision", action="store_true", help="torchvision models only")
    parser.add_argument("--timm", action="store_true", help="timm models only")
    parser.add_argument("--limit", type=int, default=None, help="first N models per source")
    parser.add_argument(
        "--models", default="", help="comma-separated tv:NAME / timm:NAME (instead of the lists)"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS / "model_sweep.csv", help="CSV path (.md beside it)"
    )
    parser.add_argument("--resume", action="store_true", help="skip models already in --out")
    parser.add_argument(
        "--replace",
        action="store_true",
        help="re-run the --models and replace their rows in --out, keeping the others",
    )
    parser.add_argument("--no-pgc", action="store_true", help="skip pytorch-grad-cam")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning, module="timm")
    if args.models:
        jobs = [tuple(m.split(":", 1)) for m in args.models.split(",") if m]
    else:
        both = not args.torchvision and not args.timm
        jobs = []
        if args.torchvision or both:
            names = [n for n in torchvision_names() if n not in TV_SKIPPED]
            jobs += [("tv", n) for n in names[: args.limit]]
        if args.timm or both:
            jobs += [("timm", n) for n in TIMM_MODELS[: args.limit]]
    skipped = {} if (args.models and not args.replace) or args.timm else TV_SKIPPED
    command = "python benchmarks/bench_model_sweep.py " + " ".join(argv or sys.argv[1:])
    if args.replace:
        return replace_rows(args.out, jobs, not args.no_pgc, skipped, command.strip())

    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = read_rows(args.out) if args.resume else []
    done = {(r.source, r.model) for r in previous}
    rows = list(previous)
    names = [f.name for f in fields(Row)]
    mode = "a" if args.resume and args.out.exists() else "w"
    with args.out.open(mode, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        if mode == "w":
            writer.writeheader()
        for i, (source, name) in enumerate(jobs):
            if (source, name) in done:
                continue
            start = time.perf_counter()
            row = run_one(source, name, use_pgc=not args.no_pgc)
            rows.append(row)
            writer.writerow(asdict(row))
            handle.flush()
            _progress(i, len(jobs), row, time.perf_counter() - start)
    write_markdown(args.out.with_suffix(".md"), rows, skipped, command.strip())
    print("\n".join(summarize(rows, skipped)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
