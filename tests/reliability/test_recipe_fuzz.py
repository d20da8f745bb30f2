"""Hostile training recipes: every field, every wrong type and range.

Each example puts one drawn value into one field of a good recipe, writes it as TOML and
reads it with :meth:`Recipe.from_toml`. It must either succeed with a value that the oracle
below (written independently of :mod:`xaikit.recipe`'s spec) calls valid, or raise
:class:`XaikitConfigError` with one line naming the field; any other exception is a bug.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xaikit.cli import main
from xaikit.errors import XaikitConfigError
from xaikit.train.recipe import Recipe

GOOD: dict[str, Any] = {
    "name": "tiny",
    "data": {"name": "shapes", "options": {"n": 60, "size": 16}, "val_fraction": 0.1},
    "model": {"arch": "simple_cnn", "options": {"widths": [4, 8]}},
    "train": {"epochs": 1, "options": {"optimizer": "adam", "lr": 0.003, "seed": 0}},
}


def _int(v: Any) -> bool:
    return type(v) is int


def _num(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _unit(v: Any) -> bool:
    return _num(v) and 0 <= v < 1


def _text(v: Any, most: int = 1000) -> bool:
    return isinstance(v, str) and bool(v.strip()) and len(v) <= most


def _any_text(v: Any) -> bool:
    return isinstance(v, str)


def _choice(*names: str):
    return lambda v: isinstance(v, str) and v.lower() in names


#: field -> what a valid value is, by the documented rules (Trainer's keywords and ranges).
ORACLE = {
    ("name",): _any_text,
    ("description",): _any_text,
    ("targets",): lambda v: isinstance(v, dict),
    ("data", "name"): lambda v: _text(v, 5000),
    ("data", "options"): lambda v: isinstance(v, dict),
    ("data", "test_options"): lambda v: isinstance(v, dict),
    ("data", "val_fraction"): _unit,
    ("model", "arch"): _text,
    ("model", "options"): lambda v: isinstance(v, dict),
    ("train", "epochs"): lambda v: _int(v) and 1 <= v <= 100_000,
    ("train", "options", "optimizer"): _choice("sgd", "adam", "adamw"),
    ("train", "options", "lr"): lambda v: _num(v) and v > 0,
    ("train", "options", "momentum"): _unit,
    ("train", "options", "nesterov"): lambda v: isinstance(v, bool),
    ("train", "options", "weight_decay"): lambda v: _num(v) and v >= 0,
    ("train", "options", "betas"): lambda v: (
        isinstance(v, list) and len(v) == 2 and all(_unit(b) for b in v)
    ),
    ("train", "options", "scheduler"): _choice("step", "cosine", "onecycle", "none"),
    ("train", "options", "step_size"): lambda v: _int(v) and 1 <= v <= 100_000,
    ("train", "options", "gamma"): lambda v: _num(v) and v > 0,
    ("train", "options", "min_lr"): lambda v: _num(v) and v >= 0,
    ("train", "options", "pct_start"): lambda v: _num(v) and 0 < v < 1,
    ("train", "options", "batch_size"): lambda v: _int(v) and 1 <= v <= 2**20,
    ("train", "options", "grad_clip"): lambda v: _num(v) and v > 0,
    ("train", "options", "early_stopping"): lambda v: _int(v) and 1 <= v <= 100_000,
    ("train", "options", "monitor"): lambda v: _text(v, 200),
    ("train", "options", "min_delta"): lambda v: _num(v) and v >= 0,
    ("train", "options", "device"): lambda v: _text(v, 100),
    ("train", "options", "amp"): lambda v: isinstance(v, bool),
    ("train", "options", "seed"): lambda v: _int(v) and 0 <= v <= 2**63 - 2,
    ("train", "options", "num_workers"): lambda v: _int(v) and 0 <= v <= 256,
    ("train", "options", "train_metrics"): lambda v: isinstance(v, bool),
    ("train", "options", "log_every"): lambda v: _int(v) and 1 <= v <= 1_000_000,
    ("train", "options", "quiet"): lambda v: isinstance(v, bool),
}


# -- a small TOML writer (values inline, one table per top-level key) ------------------------


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        # JSON's escapes are TOML's; TOML also wants DEL escaped.
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_value(str(k))} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))  # pragma: no cover


def to_toml(document: dict[str, Any]) -> str:
    lines = [f"{k} = {_value(v)}" for k, v in document.items() if not isinstance(v, dict)]
    for table, body in document.items():
        if isinstance(body, dict):
            lines.append(f"[{table}]")
            lines += [f"{_value(k)} = {_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def _with(field: tuple[str, ...], value: Any) -> dict[str, Any]:
    document = json.loads(json.dumps(GOOD))
    target = document
    for key in field[:-1]:
        target = target.setdefault(key, {})
    target[field[-1]] = value
    if len(field) == 1 and isinstance(value, dict):
        # A top-level dict is a table; keep it in the table section of the writer.
        document[field[0]] = value
    return document


def _read(field: tuple[str, ...], recipe: Recipe) -> Any:
    """The value of ``field`` as the parsed recipe holds it."""
    tables = recipe.to_dict()
    if field[0] in ("name", "description", "targets"):
        return None  # kept only in the file
    value: Any = tables
    for key in field:
        value = value[key]
    return value


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
SCALARS = st.one_of(
    st.text(max_size=12),
    st.floats(allow_nan=True, allow_infinity=True),
    INT64,
    st.booleans(),
)
BOUNDARY = st.sampled_from(
    [
        *(0, 1, -1, 2, 0.0, 0.5, 1.0, 2.5, 1e-9, 1e308, -0.0, 2**20, 2**20 + 1, 100_000),
        *(100_001, 2**63 - 2, 2**63 - 1, "", " ", "abc", "adam", "SGD", "none", "cosine"),
        *("auto", "cpu", [0.9, 0.999], [0.5, 1.0], [0.9], [[0.9, 0.9]], {}, {"n": 1}, True),
    ]
)
HOSTILE = st.one_of(
    BOUNDARY,
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=5), SCALARS, max_size=3),
    st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=2), max_leaves=6),
)
FIELDS = sorted(ORACLE)


def _table_name(field: tuple[str, ...]) -> str:
    """How the message names the field: ``[train.options] lr``, ``[data] name``, ``name``."""
    if len(field) == 1:
        return field[0]
    return f"[{'.'.join(field[:-1])}] {field[-1]}"


@settings(
    max_examples=600,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(field=st.sampled_from(FIELDS), value=HOSTILE)
def test_every_recipe_field_takes_valid_values_and_refuses_the_rest_in_one_line(
    tmp_path_factory, field, value
):
    path = tmp_path_factory.getbasetemp() / "fuzz-recipe.toml"
    path.write_text(to_toml(_with(field, value)), encoding="utf-8")
    valid = ORACLE[field](value)
    try:
        recipe = Recipe.from_toml(path)
    except XaikitConfigError as err:
        line = str(err)
        assert "\n" not in line, line
        assert line.startswith(f"{path}: {_table_name(field)}"), (field, value, line)
        assert not valid, f"{field} = {value!r} is valid but was refused: {line}"
        return
    assert valid, f"{field} = {value!r} was accepted"
    shown = _read(field, recipe)
    if field == ("train", "options", "scheduler") and value.lower() == "none":
        assert shown is None
    elif shown is not None:
        assert shown == value or (isinstance(value, float) and float(shown) == value)


@settings(max_examples=150, derandomize=True, deadline=None)
@given(text=st.text(max_size=80))
def test_any_text_as_a_recipe_is_one_config_error_line_or_a_recipe(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "fuzz-text.toml"
    path.write_text(text, encoding="utf-8")
    try:
        Recipe.from_toml(path)
    except XaikitConfigError as err:
        assert "\n" not in str(err) and str(err).startswith(f"{path}: "), str(err)


@pytest.mark.parametrize(
    "field, value, reason",
    [
        (
            ("train", "options", "lr"),
            "abc",
            "[train.options] lr must be a positive number, got 'abc'",
        ),
        (("train", "options", "batch_size"), 2.5, "[train.options] batch_size must be an int in"),
        (("train", "options", "batch_size"), True, "[train.options] batch_size must be an int in"),
        (("train", "epochs"), 0, "[train] epochs must be an int in [1, 100000], got 0"),
        (("train", "options", "betas"), [0.9, 1.0], "[train.options] betas[1] must be a number"),
        (("train", "options", "momentum"), -0.5, "[train.options] momentum must be a number in"),
        (("train", "options", "weight_decay"), -1, "weight_decay must be a number >= 0, got -1"),
        (("train", "options", "scheduler"), "linear", "scheduler must be one of 'step', 'cosine'"),
        (("train", "options", "lrate"), 0.1, "[train.options] lrate is not a known field"),
        (("data", "val_fraction"), float("nan"), "[data] val_fraction must be a number in [0, 1)"),
    ],
)
def test_named_hostile_recipes_are_refused_with_the_field(tmp_path, field, value, reason):
    path = tmp_path / "r.toml"
    path.write_text(to_toml(_with(field, value)))
    with pytest.raises(XaikitConfigError) as caught:
        Recipe.from_toml(path)
    line = str(caught.value)
    assert line.startswith(f"{path}: ") and reason in line and "\n" not in line, line


def test_scheduler_none_in_toml_means_no_schedule(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(to_toml(_with(("train", "options", "scheduler"), "none")))
    assert Recipe.from_toml(path).train_options["scheduler"] is None


@pytest.mark.parametrize(
    "field, value, reason",
    [
        (("train", "options", "batch_size"), 2.5, "batch_size must be an int"),
        (("train", "options", "lr"), float("inf"), "lr must be a positive number, got inf"),
        (("train", "options", "checkpoint_dir"), "x", "checkpoint_dir is not a known field"),
        (("model", "options"), [1, 2], "[model] options must be a table, got [1, 2]"),
    ],
)
def test_hostile_recipes_through_the_command_line_exit_2_in_one_line(
    tmp_path, capsys, field, value, reason
):
    path = tmp_path / "r.toml"
    path.write_text(to_toml(_with(field, value)))
    out = tmp_path / "out"
    assert main(["train", "--recipe", str(path), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0] and "Traceback" not in err[0], err
    assert not out.exists()


def test_flags_laid_over_a_recipe_are_checked_too(tmp_path, capsys):
    path = tmp_path / "r.toml"
    path.write_text(to_toml(GOOD))
    out = tmp_path / "out"
    assert main(["train", "--recipe", str(path), "--lr", "-1", "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[train.options] lr must be a positive number, got -1.0" in err[0]


def test_a_fifo_as_recipe_is_refused(tmp_path):
    import os

    path = tmp_path / "r.toml"
    os.mkfifo(path)
    with pytest.raises(XaikitConfigError, match="the recipe is not a regular file but a FIFO"):
        Recipe.from_toml(path)
