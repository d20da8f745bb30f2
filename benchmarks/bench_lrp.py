"""Speed of LRP (xaikit.lrp) against Grad-CAM, against zennit, and K targets in one call.

Every figure is a ratio measured in one run: the cases are interleaved round by round and
each ratio is the median over rounds of (case time / baseline time of the same round), so a
noisy, shared machine slows both sides of a ratio alike (the house style of
``bench_explain.py``). Median times are printed too. The default batch is 1: on a shared
2-core CPU every case at batch 8 (vgg16_bn LRP and zennit take seconds per call, and the
K=10 case runs 11 explanations per round) does not finish in 15 minutes.

    python benchmarks/bench_lrp.py                       # CPU: 224 px, batch 1, 3 rounds
    python benchmarks/bench_lrp.py --batch 8 --rounds 5  # the full setting (GPU / fast CPU)
    python benchmarks/bench_lrp.py --quick               # 64 px, for a smoke run

Cases per model (torchvision vgg16_bn and resnet18, random weights, ``epsilon-plus`` with
BatchNorm merging, one target per input unless said):

* ``lrp / gradcam``: ``xaikit.explain(method="lrp")`` over ``method="gradcam"``;
* ``xaikit / zennit``: ``xaikit.lrp.lrp`` over zennit 0.5.1's ``Gradient`` attributor with
  ``EpsilonPlus`` and its canonizer (skipped without zennit);
* ``K=10 one call / 10 calls`` (``--k-models``, resnet18 by default): 10 targets per input
  from one forward and one batched backward, over 10 single-target calls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch
import torchvision

import xaikit.explain as X
from xaikit.lrp import lrp

warnings.simplefilter("ignore", X.ExplainWarning)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    cases: dict[str, Callable[[], object]], rounds: int, device: torch.device
) -> dict[str, list[float]]:
    """Run every case once per round, in turn (rotating the order); return the seconds."""
    for fn in cases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            sync(device)
            start = time.perf_counter()
            cases[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def ratio(times: dict[str, list[float]], case: str, base: str) -> float:
    """Median over rounds of ``case / base`` measured in the same round."""
    return statistics.median(a / b for a, b in zip(times[case], times[base]))


def median_s(times: dict[str, list[float]], case: str) -> float:
    return statistics.median(times[case])


def zennit_case(model: torch.nn.Module, x: torch.Tensor, name: str) -> Callable[[], object] | None:
    try:
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonPlus
        from zennit.torchvision import ResNetCanonizer, VGGCanonizer
    except ImportError:
        return None
    canonizer = ResNetCanonizer() if name.startswith("resnet") else VGGCanonizer()
    one_hot = torch.zeros(x.shape[0], 1000, device=x.device)
    one_hot[:, 0] = 1

    def run() -> object:
        composite = EpsilonPlus(canonizers=[canonizer])
        with Gradient(model=model, composite=composite) as attributor:
            return attributor(x, one_hot)[1]

    return run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", default="vgg16_bn,resnet18")
    parser.add_argument("--k-models", default="resnet18", help="models of the K=10 case")
    parser.add_argument("--quick", action="store_true", help="64 px, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.rounds = 64, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads, "
        f"{args.rounds} interleaved rounds, {args.size} px, batch {args.batch}"
    )
    rows: list[tuple[str, str, str]] = []
    for name in args.models.split(","):
        model = getattr(torchvision.models, name)().eval().to(device)
        x = torch.rand(args.batch, 3, args.size, args.size, device=device)
        target = torch.zeros(args.batch, 1, dtype=torch.long, device=device)
        cases: dict[str, Callable[[], object]] = {
            "lrp": lambda m=model, x=x, t=target: X.explain(m, x, method="lrp", target=t),
            "gradcam": lambda m=model, x=x, t=target: X.explain(m, x, method="gradcam", target=t),
            "xaikit.lrp": lambda m=model, x=x, t=target: lrp(m, x, t, composite="epsilon-plus"),
        }
        zennit = zennit_case(model, x, name)
        if zennit is not None:
            cases["zennit"] = zennit
        times = interleaved(cases, args.rounds, device)
        rows.append(
            (
                f"{name} lrp / gradcam",
                f"{ratio(times, 'lrp', 'gradcam'):.2f}",
                f"{median_s(times, 'lrp'):.2f} s / {median_s(times, 'gradcam'):.2f} s",
            )
        )
        if zennit is not None:
            rows.append(
                (
                    f"{name} xaikit / zennit",
                    f"{ratio(times, 'xaikit.lrp', 'zennit'):.2f}",
                    f"{median_s(times, 'xaikit.lrp'):.2f} s / {median_s(times, 'zennit'):.2f} s",
                )
            )
        if name in args.k_models.split(","):
            k = 10
            many = torch.arange(k, device=device).expand(args.batch, k)
            k_cases: dict[str, Callable[[], object]] = {
                "one call": lambda m=model, x=x, t=many: lrp(m, x, t),
                "10 calls": lambda m=model, x=x, t=many: [lrp(m, x, col) for col in t.unbind(1)],
            }
            k_times = interleaved(k_cases, args.rounds, device)
            rows.append(
                (
                    f"{name} K=10 one call / 10 calls",
                    f"{ratio(k_times, 'one call', '10 calls'):.2f}",
                    f"{median_s(k_times, 'one call'):.2f} s / "
                    f"{median_s(k_times, '10 calls'):.2f} s",
                )
            )
        print(*rows[-1], sep="  ", flush=True)
    width = max(len(r[0]) for r in rows)
    print()
    print(f"{'case':<{width}}  ratio  median times")
    for what, value, detail in rows:
        print(f"{what:<{width}}  {value:>5}  {detail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
