"""Time the batched metric catalogue against Quantus 0.6, metric by metric.

For each metric: one xaikit call (every perturbed input a row of ``--batch-size``-row forward
passes, re-explanations batched over draws) and one Quantus call (its default batch of 64
samples, one forward pass per perturbation step and draw) on the same model, images,
attributions (input-gradient maps, computed once and given to both) and settings; reported:
seconds of each and the ratio ``quantus / xaikit``. Deterministic metrics are also checked to
agree (max |difference|, float32 on both sides).

Models: ``--model zoo`` (``shapes-multiclass``, 64 px, 6 classes) or ``--model resnet18``
(torchvision, random weights, 224 px, 1000 classes). Settings are reduced from the papers'
(``C * --steps`` perturbation steps per image, ``--nr-samples`` draws) so Quantus finishes.

Each side's time in the model is also measured (forward passes, plus the explanations the
robustness and randomisation metrics ask for), and ``bound = quantus_s / quantus_model_s``:
the largest speed-up any implementation that runs the same forward passes and explanations
could reach on this device. On a CPU the model dominates both sides, so the bound is close
to 1; the batched pipeline's headroom is on a GPU, where Quantus's per-step host round
trips are the cost.

Run: ``python benchmarks/bench_evaluate_metrics.py [--model zoo|resnet18] [--n 64]
[--steps 32] [--nr-samples 8] [--metrics a,b] [--device cpu] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import numpy as np
import torch
from _timing import timed
from torch import nn

import xaikit
from xaikit.evaluate import faithfulness as F
from xaikit.evaluate import localisation as L
from xaikit.evaluate import randomisation_metrics as R
from xaikit.evaluate import robustness as RB

FAITHFULNESS = ["faithfulness_correlation", "faithfulness_estimate", "monotonicity_correlation",
                "pixel_flipping", "region_perturbation", "selectivity", "sensitivity_n",
                "infidelity"]  # fmt: skip
ROBUSTNESS = ["max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate",
              "relative_input_stability", "relative_output_stability"]  # fmt: skip
OTHER = ["localisation_auc", "relevance_rank_accuracy", "random_logit", "mprt"]
STOCHASTIC = {"faithfulness_correlation", "monotonicity_correlation", *ROBUSTNESS}


def gradient_maps(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        (grad,) = torch.autograd.grad(out.gather(1, targets[:, None].long()).sum(), x)
    return grad.abs().sum(1)


class ModelClock:
    """Seconds spent inside ``model``'s forward passes and inside explanation calls (a
    forward pass within an explanation is counted once, as part of it)."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.seconds = 0.0
        self.device = device
        self._depth = 0
        self._start = 0.0
        self._handles = [
            model.register_forward_pre_hook(lambda *_: self._enter()),
            model.register_forward_hook(lambda *_: self._leave()),
        ]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _enter(self) -> None:
        if self._depth == 0:
            self._sync()
            self._start = time.perf_counter()
        self._depth += 1

    def _leave(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._sync()
            self.seconds += time.perf_counter() - self._start

    def timed(self, fn):
        """``fn`` wrapped so that its whole call counts (an explanation)."""

        def wrapper(*args, **kwargs):
            self._enter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._leave()

        return wrapper

    def reset(self) -> None:
        self.seconds, self._depth = 0.0, 0

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("zoo", "resnet18"), default="zoo")
    parser.add_argument("--n", type=int, default=64, help="images")
    parser.add_argument("--steps", type=int, default=32, help="perturbation steps per image")
    parser.add_argument("--nr-samples", type=int, default=8, help="draws of stochastic metrics")
    parser.add_argument(
        "--batch-size", type=int, help="xaikit rows per forward (default: 64 on cpu, 1024 on cuda)"
    )
    parser.add_argument("--metrics", help="comma-separated subset (default: all benchmarked)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (1 is fastest on a busy machine)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import quantus

    np.trapz = getattr(np, "trapz", np.trapezoid)  # Quantus 0.6 calls np.trapz (numpy < 2)
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    if args.model == "zoo":
        model, _ = xaikit.load_model("shapes-multiclass")
        data = xaikit.data.load("shapes", "test", n=args.n, size=64, seed=0)
        x = torch.stack([data[i][0] for i in range(args.n)])
        masks = torch.stack([data[i][2][int(data[i][1])] for i in range(args.n)])
        classes = 6
    else:
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None)
        x = torch.rand(args.n, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        masks = torch.zeros(args.n, 224, 224)
        masks[:, 64:160, 64:160] = 1
        classes = 1000
    model = model.to(device).eval()
    x = x.to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    a = gradient_maps(model, x, y).detach()
    c, h, w = x.shape[1:]
    # Features per step: Quantus asserts that it divides H * W, so a run has C * steps steps.
    step = h * w // args.steps
    # Patches: the divisor of H closest to sqrt(H * W / steps) (Quantus's infidelity breaks on
    # padded images).
    target = math.sqrt(h * w / args.steps)
    patch = min((d for d in range(1, h + 1) if h % d == 0), key=lambda d: abs(d - target))
    s = args.nr_samples
    xn, yn, an, mn = (t.detach().cpu().numpy() for t in (x, y, a[:, None], masks[:, None]))
    q = {"disable_warnings": True, "normalise": False}
    dev = "cuda" if device.type == "cuda" else "cpu"
    rows = args.batch_size or (1024 if device.type == "cuda" else 64)
    with torch.no_grad():  # warm-up: kernels and allocator for both sides' batch shapes
        for size in (rows, min(args.n, 64)):
            model(x[torch.arange(size, device=device) % args.n])
    gradient_maps(model, x, y)

    clock = ModelClock(model, device)

    @clock.timed
    def qexplain(model, inputs, targets, **_):
        xx = torch.as_tensor(inputs, device=device)
        tt = torch.as_tensor(targets, device=device)
        return gradient_maps(model, xx, tt).detach().cpu().numpy()[:, None]

    @clock.timed
    def ex(xx, tt):
        return gradient_maps(model, xx, tt)

    @clock.timed
    def explain_model(m, xx, tt):
        return gradient_maps(m, xx, tt)

    bases = dict(normalise=False, batch_size=rows, quiet=True)
    nan = {"return_nan_when_prediction_changes": False}  # Quantus's check crashes (RIS, ROS)
    regions = args.steps
    cases = {
        "faithfulness_correlation": (
            lambda: F.faithfulness_correlation(model, x, a, y, nr_runs=s, subset_size=224, **bases),
            lambda: quantus.FaithfulnessCorrelation(
                nr_runs=s, subset_size=224, return_aggregate=False, **q
            ),
        ),
        "faithfulness_estimate": (
            lambda: F.faithfulness_estimate(model, x, a, y, features_in_step=step, **bases),
            lambda: quantus.FaithfulnessEstimate(features_in_step=step, **q),
        ),
        "monotonicity_correlation": (
            lambda: F.monotonicity_correlation(
                model, x, a, y, nr_samples=s, features_in_step=step, **bases
            ),
            lambda: quantus.MonotonicityCorrelation(nr_samples=s, features_in_step=step, **q),
        ),
        "pixel_flipping": (
            lambda: F.pixel_flipping(model, x, a, y, features_in_step=step, **bases),
            lambda: quantus.PixelFlipping(features_in_step=step, return_auc_per_sample=True, **q),
        ),
        "region_perturbation": (
            lambda: F.region_perturbation(
                model,
                x,
                a,
                y,
                patch_size=patch,
                regions_evaluation=regions,
                return_curve=True,
                **bases,
            ),
            lambda: quantus.RegionPerturbation(patch_size=patch, regions_evaluation=regions, **q),
        ),
        "selectivity": (
            lambda: F.selectivity(model, x, a, y, patch_size=patch, return_curve=True, **bases),
            lambda: quantus.Selectivity(patch_size=patch, **q),
        ),
        "sensitivity_n": (
            lambda: F.sensitivity_n(model, x, a, y, features_in_step=step, **bases),
            lambda: quantus.SensitivityN(features_in_step=step, return_aggregate=False, **q),
        ),
        "infidelity": (
            lambda: F.infidelity(model, x, a, y, perturb_patch_sizes=(patch,), **bases),
            lambda: quantus.Infidelity(perturb_patch_sizes=[patch], n_perturb_samples=1, **q),
        ),
        **{
            name: (
                lambda fn=fn: fn(model, x, a, y, ex, nr_samples=s, **bases, **nan),
                lambda cls=cls: cls(nr_samples=s, return_aggregate=False, **q, **nan),
            )
            for name, fn, cls in [
                ("max_sensitivity", RB.max_sensitivity, quantus.MaxSensitivity),
                ("avg_sensitivity", RB.avg_sensitivity, quantus.AvgSensitivity),
                (
                    "local_lipschitz_estimate",
                    RB.local_lipschitz_estimate,
                    quantus.LocalLipschitzEstimate,
                ),
                (
                    "relative_input_stability",
                    RB.relative_input_stability,
                    quantus.RelativeInputStability,
                ),
                (
                    "relative_output_stability",
                    RB.relative_output_stability,
                    quantus.RelativeOutputStability,
                ),
            ]
        },
        "localisation_auc": (
            lambda: L.auc(a, masks, normalise=False),
            lambda: quantus.AUC(**q),
        ),
        "relevance_rank_accuracy": (
            lambda: L.relevance_rank_accuracy(a, masks, normalise=False),
            lambda: quantus.RelevanceRankAccuracy(**q),
        ),
        "random_logit": (
            lambda: R.random_logit(
                model, x, a, y, explain_model, num_classes=classes, normalise=False
            ),
            lambda: quantus.RandomLogit(num_classes=classes, **q),
        ),
        "mprt": (
            lambda: R.model_parameter_randomisation(model, x, a, y, explain_model, normalise=False),
            lambda: quantus.MPRT(return_last_correlation=True, **q),
        ),
    }
    wanted = args.metrics.split(",") if args.metrics else [*FAITHFULNESS, *ROBUSTNESS, *OTHER]
    results = {}
    for name in wanted:
        ours_fn, theirs_fn = cases[name]
        clock.reset()
        seconds, ours = timed(ours_fn, device)
        ours_model = clock.seconds
        metric = theirs_fn()
        kwargs = {"a_batch": an, "device": dev}
        if name in OTHER[:2]:
            kwargs["s_batch"] = mn
        if name in ROBUSTNESS or name in ("random_logit", "mprt"):
            kwargs["explain_func"] = qexplain
        np.random.seed(0)
        clock.reset()
        q_seconds, theirs = timed(lambda m=metric, k=kwargs: m(model, xn, yn, **k), device)
        theirs_model = clock.seconds
        ours_np = ours.detach().double().cpu().numpy()
        theirs_np = np.asarray(theirs, dtype=float)
        entry = {"xaikit_s": round(seconds, 4), "quantus_s": round(q_seconds, 4),
                 "speedup": round(q_seconds / seconds, 2),
                 "xaikit_model_s": round(ours_model, 4), "quantus_model_s": round(theirs_model, 4),
                 "bound": round(q_seconds / max(theirs_model, 1e-9), 2)}  # fmt: skip
        if name in STOCHASTIC:
            entry["means"] = [float(np.nanmean(ours_np)), float(np.nanmean(theirs_np))]
        else:
            entry["max_abs_diff"] = float(np.nanmax(np.abs(ours_np - theirs_np)))
        results[name] = entry
        print(name, json.dumps(entry), flush=True)
    summary = {
        "model": args.model,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "n": args.n,
        "input": [c, h, w],
        "steps": args.steps,
        "features_in_step": step,
        "patch_size": patch,
        "nr_samples": s,
        "metrics": results,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
