"""The README's examples run: every fenced Python block and every `diffnas ...` shell command, on tiny
data (``DIFFNAS_FORCE_CONFIG`` lays the tiny preset over each run's config, in subprocesses too), so
the README cannot drift from the code."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
import yaml
from helpers import write_fake_idx

from diffnas.catalog import FORCED
from diffnas.cli import main
from diffnas.config import PRESETS, deep_merge

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README.read_text(), re.S)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
COMMANDS = [
    part.strip()
    for lang, code in BLOCKS
    if lang in ("bash", "sh", "")
    for line in code.splitlines()
    if not line.lstrip().startswith("#")
    for part in line.split("&&")
    if part.strip().startswith("diffnas ")
]


def _shrunk(argv: list[str]) -> list[str]:
    """A sweep keeps the first method, seed and grid value: its flags are checked in one trial, not eight."""
    out = list(argv)
    for i, flag in enumerate(out[:-1]):
        if argv[0] == "sweep" and flag in ("--method", "--seeds", "--grid"):
            out[i + 1] = out[i + 1].split(",")[0]
    return out


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    data = write_fake_idx(tmp_path / "data", n_train=96, n_test=32)
    forced = deep_merge(
        PRESETS["tiny"],
        {
            "dataset": "fashion-mnist",
            "data_dir": str(data),
            "subset": 64,
            "image_size": 8,
            "device": "cpu",
            "search": {"batch_size": 8},
            "train": {"batch_size": 8},
        },
    )
    monkeypatch.setenv(FORCED, yaml.safe_dump(forced))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_has_examples():
    assert PYTHON and any(c.startswith("diffnas run") for c in COMMANDS)
    assert any(c.startswith("diffnas sweep") for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(tiny, command):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([*_shrunk(shlex.split(command)[1:]), "--no-progress"])
    assert code == 0, err.getvalue()


@pytest.mark.parametrize("code", PYTHON)
def test_readme_python_runs(tiny, code):
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(README), "exec"), {})
