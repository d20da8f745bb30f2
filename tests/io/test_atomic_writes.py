"""Atomic writes: the target appears whole or not at all, with ordinary permissions."""

import os
import stat

import pytest

from xaikit.io import atomic_path, atomic_write_json, atomic_write_text


def test_write_replaces_the_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_files_get_the_permissions_of_an_ordinary_write(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        (tmp_path / "b.txt").write_text("x")
    finally:
        os.umask(mask)
    mode_a = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    mode_b = stat.S_IMODE((tmp_path / "b.txt").stat().st_mode)
    assert mode_a == mode_b == 0o644
