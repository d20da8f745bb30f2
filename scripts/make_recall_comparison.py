"""Ship ``recall-lstm`` with the plain-RNN comparison written into its model card.

The reference LSTM and the RNN beside it are trained by the ordinary command line::

    xaikit train --recipe xaikit/models/recall-lstm.toml --out runs/recall-lstm
    xaikit train --recipe xaikit/models/recall-rnn.toml --out runs/recall-rnn
    python scripts/make_recall_comparison.py

This script loads the trained LSTM, re-saves it as ``xaikit/models/recall-lstm`` (the reference
models ship inside the package) with every field of its card kept and a ``comparison`` field
added (the RNN's test metrics and parameter count), and copies the LSTM's ``curves.png``.
:func:`xaikit.save_model` writes the same weights and records their SHA-256 afresh, so card and
weights still belong together.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import xaikit

ROOT = Path(__file__).resolve().parents[1]  # the repository (this file is scripts/<name>.py)
MODELS = ROOT / "xaikit" / "models"
# Fields that save_model derives from the model itself; everything else in the card is kept.
DERIVED = (
    "format",
    "format_version",
    "architecture",
    "config",
    "task",
    "weights_file",
    "weights_sha256",
)


def comparison_entry(run: Path, recipe: str) -> dict[str, object]:
    """Architecture, size and test metrics of a finished ``xaikit train`` run in ``run``."""
    model, card = xaikit.load_model(run / "model")
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    return {
        "architecture": card["architecture"],
        "config": card["config"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "recipe": recipe,
        "test_accuracy": metrics["test_accuracy"],
        "test_loss": metrics["test_loss"],
        "epochs": metrics["epochs"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lstm", type=Path, default=ROOT / "runs" / "recall-lstm")
    parser.add_argument("--rnn", type=Path, default=ROOT / "runs" / "recall-rnn")
    parser.add_argument("--out", type=Path, default=MODELS / "recall-lstm")
    args = parser.parse_args()

    model, card = xaikit.load_model(args.lstm / "model")
    fields = {k: v for k, v in card.items() if k not in DERIVED}
    fields["comparison"] = {"rnn": comparison_entry(args.rnn, "xaikit/models/recall-rnn.toml")}
    weights = xaikit.save_model(model, args.out, **fields)
    shutil.copyfile(args.lstm / "curves.png", args.out.with_name(args.out.name + ".curves.png"))
    rnn = fields["comparison"]["rnn"]
    print(
        f"{weights}: LSTM test accuracy {card['metrics']['test_accuracy']:.4f}, "
        f"plain RNN {rnn['test_accuracy']:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
