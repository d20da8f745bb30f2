"""Start-up time of the ``xaikit`` command line against Python's own start.

Every case is a fresh interpreter (``sys.executable``): ``python -c pass`` (the floor),
``python -m xaikit --version``, ``--help``, every command's ``--help``, and ``python -c
"import torch"`` for reference. The cases run interleaved, in a shuffled order each round,
so a noisy, shared machine slows them alike; each figure is the median over rounds, and the
cost over Python is the median of the per-round differences to ``python -c pass``.

    python benchmarks/bench_startup.py                  # this tree, 11 rounds
    python benchmarks/bench_startup.py --rounds 5
    git worktree add /tmp/xaikit-head HEAD              # "before": the last commit's tree
    python benchmarks/bench_startup.py --path /tmp/xaikit-head

Goals (newcomer issue, part 5): ``--version`` and ``--help`` within 0.5 s of ``python -c
pass``; every ``<command> --help`` under 1 s. Once per xaikit case the heavy libraries that
``-X importtime`` shows imported are listed too (there should be none).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Libraries whose import takes tenths of a second to seconds: none of them belongs in the
# start of `xaikit --version` or `xaikit <command> --help`.
HEAVY = (
    "torch",
    "torchvision",
    "captum",
    "matplotlib",
    "sklearn",
    "PIL",
    "numpy",
    "tqdm",
    "safetensors",
    "timm",
    "scipy",
)
# The commands of ``xaikit --help``, in its order. Listed here (not imported from
# xaikit.cli) so that the benchmark measures an older tree with --path the same way.
COMMANDS = ("zoo", "layers", "train", "convert", "explain", "filters", "evaluate", "report", "demo")
VERSION_GOAL_S = 0.5  # --version / --help: seconds over `python -c pass`
COMMAND_GOAL_S = 1.0  # <command> --help: seconds in all
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One command line to time, and the goal it is held to."""

    label: str
    argv: tuple[str, ...]
    goal: str = ""  # "over-python", "total" or "" (reference only)


def cases() -> list[Case]:
    """The floor, the reference and every xaikit start-up case."""
    python = sys.executable
    found = [
        Case("python -c pass", (python, "-c", "pass")),
        Case('python -c "import torch"', (python, "-c", "import torch")),
        Case("xaikit --version", (python, "-m", "xaikit", "--version"), "over-python"),
        Case("xaikit --help", (python, "-m", "xaikit", "--help"), "over-python"),
    ]
    for name in COMMANDS:
        argv = (python, "-m", "xaikit", name, "--help")
        found.append(Case(f"xaikit {name} --help", argv, "total"))
    return found


def run_once(case: Case, env: dict[str, str], cwd: str) -> float:
    """Seconds one run of the case takes, start of the process to its exit."""
    start = time.perf_counter()
    done = subprocess.run(
        case.argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{case.label} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return seconds


def heavy_imports(case: Case, env: dict[str, str], cwd: str) -> list[str]:
    """The libraries of :data:`HEAVY` that ``python -X importtime`` shows the case importing."""
    argv = (case.argv[0], "-X", "importtime", *case.argv[1:])
    done = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    imported = set()
    for line in done.stderr.decode(errors="replace").splitlines():
        # "import time: self [us] | cumulative | imported package" (nesting by indentation)
        if line.startswith("import time:") and "|" in line:
            imported.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return [name for name in HEAVY if name in imported]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11, help="interleaved rounds (11)")
    parser.add_argument(
        "--path",
        metavar="DIR",
        default=str(REPO),
        help="the tree whose xaikit is timed, put first on PYTHONPATH (default: this one)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled order (0)")
    args = parser.parse_args()
    # The children run in an empty folder: `python -m` and `-c` put the current folder first
    # on sys.path, so run from the repository root they would import its xaikit whatever
    # --path says.
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as cwd:
        return measure(args, cwd)


def measure(args: argparse.Namespace, cwd: str) -> int:
    """Run every case ``args.rounds`` times, print the table; 1 when a goal is missed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.path, env.get("PYTHONPATH")]))
    where = subprocess.run(
        [sys.executable, "-c", "import xaikit; print(xaikit.__file__)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"xaikit from {where}; {args.rounds} rounds; {sys.executable}")

    todo = cases()
    floor = todo[0]
    times: dict[str, list[float]] = {case.label: [] for case in todo}
    over: dict[str, list[float]] = {case.label: [] for case in todo}
    order = random.Random(args.seed)
    for case in todo:  # a warm-up round: file caches, .pyc files
        run_once(case, env, cwd)
    for _ in range(args.rounds):
        shuffled = todo[:]
        order.shuffle(shuffled)
        measured = {case.label: run_once(case, env, cwd) for case in shuffled}
        for label, seconds in measured.items():
            times[label].append(seconds)
            over[label].append(seconds - measured[floor.label])

    print(f"\n{'case':<28} {'median s':>9} {'over python':>12}  {'goal':<18} heavy imports")
    misses = 0
    for case in todo:
        median = statistics.median(times[case.label])
        extra = statistics.median(over[case.label])
        if case.goal == "over-python":
            ok = extra <= VERSION_GOAL_S
            goal = f"+{VERSION_GOAL_S:.1f} s {'ok' if ok else 'MISSED'}"
        elif case.goal == "total":
            ok = median <= COMMAND_GOAL_S
            goal = f"<{COMMAND_GOAL_S:.1f} s {'ok' if ok else 'MISSED'}"
        else:
            ok, goal = True, "(reference)"
        misses += not ok
        heavy = (", ".join(heavy_imports(case, env, cwd)) or "none") if case.goal else ""
        print(f"{case.label:<28} {median:>9.3f} {extra:>+12.3f}  {goal:<18} {heavy}")
    print(f"\n{misses} goal(s) missed" if misses else "\nevery goal met")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
