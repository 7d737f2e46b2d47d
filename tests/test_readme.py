"""The README's examples run: every fenced Python block and every `diffnas ...` shell command, on tiny
data (``DIFFNAS_FORCE_CONFIG`` lays the tiny preset over each run's config, in subprocesses too), so
the README cannot drift from the code."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import sys
import types
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


def _forced(tmp_path: Path, command: str) -> dict:
    """What every run of ``command`` is forced to: tiny fake data of the kind its space reads."""
    if "--dataset ptb" in command:  # the recurrent space: a toy corpus at its own tiny preset
        from test_rnn import toy_corpus

        from diffnas.spaces import get_space_class

        tiny = get_space_class("darts-rnn").presets["tiny"]
        corpus = str(toy_corpus(tmp_path / "text"))
        return deep_merge(tiny, {"dataset": "text", "data_dir": corpus, "subset": None, "device": "cpu"})
    data = write_fake_idx(tmp_path / "data", n_train=96, n_test=32)
    return deep_merge(
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


def _fake_benchmark_packages(monkeypatch, tmp_path: Path) -> None:
    """``benchmark-convert``: the official API packages replaced by a three-architecture fake."""
    from test_baselines import FakeAPI

    api = FakeAPI()
    monkeypatch.setitem(sys.modules, "nats_bench", types.SimpleNamespace(create=lambda *a, **k: api))
    monkeypatch.setitem(sys.modules, "nas_201_api", types.SimpleNamespace(NASBench201API=lambda *a, **k: api))
    for name in ("NATS-tss-v1_0-3ffb9-simple", "NAS-Bench-201-v1_1-096897.pth"):
        (tmp_path / name).touch()


def _prerequisites(command: str) -> list[str]:
    """The earlier README commands whose ``--out`` this one reads (``--genotype runs/x``), in order."""
    argv = shlex.split(command, comments=True)
    wanted = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--genotype", "--resume")}
    before = COMMANDS[: COMMANDS.index(command)]
    return [c for c in before if any(f"--out {w}" in c for w in wanted)]


def _run(command: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        argv = _shrunk(shlex.split(command, comments=True)[1:])
        quiet = ["--no-progress"] if argv[0] in ("search", "train", "run", "sweep") else []
        code = main([*argv, *quiet])
    assert code == 0, f"{command}: {err.getvalue()}"


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv(FORCED, yaml.safe_dump(_forced(tmp_path, "")))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_has_examples():
    assert PYTHON and any(c.startswith("diffnas run") for c in COMMANDS)
    assert any(c.startswith("diffnas sweep") for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(tmp_path, monkeypatch, command):
    monkeypatch.setenv(FORCED, yaml.safe_dump(_forced(tmp_path, command)))
    monkeypatch.chdir(tmp_path)
    if command.startswith("diffnas benchmark-convert"):
        _fake_benchmark_packages(monkeypatch, tmp_path)
    for earlier in _prerequisites(command):
        _run(earlier)
    _run(command)


@pytest.mark.parametrize("code", PYTHON)
def test_readme_python_runs(tiny, code):
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(README), "exec"), {})
