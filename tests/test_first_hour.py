"""What a new user meets in the first hour (issue 21): per-epoch lines and log.txt, the duration
estimate, run directories accepted as architectures, --out refusal, global options anywhere,
--version, defaults in --help, presets, did-you-mean, one node numbering, BN re-estimation,
the thread policy and --download against a local HTTP server."""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import http.server
import io
import os
import re
import tarfile
import threading
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from helpers import write_fake_idx

from diffnas.catalog import resolve
from diffnas.cli import build_parser, main
from diffnas.data import download as download_mod
from diffnas.data import load_dataset
from diffnas.engine import loop
from diffnas.errors import ConfigError, DataError, DiffnasError
from diffnas.runtime.rundir import RunDir
from diffnas.spaces import Genotype, load_architecture
from diffnas.spaces.darts.drawing import cell_graph

TINY = ["--preset", "tiny", "--subset", "64", "--image-size", "8", "--device", "cpu", "--no-progress"]
SETS = ["--set", "search.batch_size=8", "--set", "train.batch_size=8"]


def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_idx(tmp_path_factory.mktemp("data"), n_train=96, n_test=32)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    """One tiny `diffnas run`: its directory and what it printed."""
    out = tmp_path_factory.mktemp("runs") / "quick"
    code, stdout, stderr = cli("run", "--out", out, "--data-dir", data, *TINY, *SETS)
    assert code == 0, stderr
    return out, stdout


def test_one_line_per_epoch_on_console_and_in_log_txt(run):
    out, stdout = run
    for line in ("search epoch 1/2 |", "search epoch 2/2 |", "retrain epoch 1/1 |"):
        assert line in stdout
    search_line = next(x for x in stdout.splitlines() if x.startswith("search epoch 2/2"))
    assert re.search(r"train loss \d\.\d{4} acc \d\.\d{4}", search_line)
    assert "val loss" in search_line and "lr " in search_line and " N " in search_line and "  R " in search_line
    assert "test loss" in next(x for x in stdout.splitlines() if x.startswith("retrain epoch"))
    assert stdout.index("search: darts on fashion-mnist") < stdout.index("search epoch 1/2")
    assert "retrain estimate:" in stdout and "s/step" in stdout
    for kind, sub in (("search", "search"), ("retrain", "train")):
        log = (out / sub / "log.txt").read_text().splitlines()
        assert log[0].startswith(f"{kind}: ") and sum(x.startswith(f"{kind} epoch") for x in log) >= 1
        assert all(line in stdout for line in log)


def test_summary_ends_with_next_steps_that_exist(run):
    out, stdout = run
    tail = stdout[stdout.index("next:") :]
    assert f"diffnas train --genotype {out}" in tail and f"tensorboard --logdir {out}" in tail
    assert "search/genotype_normal.png" in tail
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert ("diffnas report" in tail) == ("report" in commands)


def test_show_and_train_accept_a_run_directory(run, data):
    out, _ = run
    searched = load_architecture(out / "search" / "genotype.json")
    assert load_architecture(out).to_dict() == searched.to_dict()
    code, stdout, _ = cli("show", out)
    assert code == 0 and str(searched) in stdout
    code, _, stderr = cli("train", "--genotype", out, "--out", out.parent / "again", "--data-dir", data, *TINY, *SETS)
    assert code == 0, stderr
    assert load_architecture(out.parent / "again").to_dict() == searched.to_dict()
    code, _, stderr = cli("show", out.parent)
    assert code == 2 and "no genotype.json or search/genotype.json" in stderr


def test_out_holding_a_run_is_refused_unless_forced(run, data, tmp_path):
    out, _ = run
    before = (out / "train" / "result.json").read_bytes()
    code, _, stderr = cli("run", "--out", out, "--data-dir", data, *TINY, *SETS)
    assert code == 2 and "holds a finished run" in stderr and "--force" in stderr
    assert (out / "train" / "result.json").read_bytes() == before
    started = tmp_path / "started"
    started.mkdir()
    (started / "config.yaml").write_text("method: darts\n")
    code, _, stderr = cli("search", "--out", started, "--data-dir", data, *TINY, *SETS)
    assert code == 2 and f"--resume {started}" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = cli("search", "--out", started, "--force", "--data-dir", data, *TINY, *SETS, "--epochs", "1")
    assert code == 0, stderr
    assert (started / "summary.json").is_file()


def test_a_failed_start_leaves_no_directory(data, tmp_path):
    for bad in (["--data-dir", tmp_path / "missing"], ["--data-dir", data, "--subset", "5000"]):
        out = tmp_path / "new" / "run"
        code, _, stderr = cli("search", "--out", out, *TINY, *SETS, *bad)
        assert code == 2 and stderr.count("\n") == 1
        assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_global_options_work_before_or_after_the_command(tmp_path, where):
    args = ["search", "--data-dir", tmp_path / "missing", "--out", tmp_path / "o", *TINY]
    argv = ["--debug", *args] if where == "before" else [*args, "--debug"]
    with pytest.raises(DataError):
        main([str(a) for a in argv])
    assert cli(*args)[0] == 2  # without it: the one-line error


def test_version_help_defaults_and_presets(capsys):
    from diffnas import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"diffnas {__version__}"
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "search.epochs (default: 50" in text and "(default: 0)" in text and "diffnas presets" in text
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "quick" in out and "search.epochs=3" in out and "tiny" in out


@pytest.mark.parametrize(
    "kwargs, hint",
    [
        ({"method": "dart"}, "did you mean 'darts'?"),
        ({"overrides": {"search": {"epoch": 3}}}, "did you mean 'search.epochs'?"),
        ({"overrides": {"space": "dart"}}, "did you mean 'darts'?"),
        ({"preset": "quik"}, "did you mean 'quick'?"),
    ],
)
def test_did_you_mean(kwargs, hint):
    with pytest.raises(ConfigError, match=re.escape(hint)):
        resolve(**kwargs)
    with pytest.raises(DataError, match="did you mean 'fashion-mnist'"):
        load_dataset("fashion-mnst")


def test_drawing_numbers_states_as_the_genotype_text():
    g = Genotype(
        "darts",
        2,
        {
            "normal": [("sep_conv_3x3", 0), ("dil_conv_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1)],
            "reduce": [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("dil_conv_3x3", 2), ("skip_connect", 0)],
        },
        {"normal": [2, 3], "reduce": [2, 3]},
    )
    source = cell_graph(g, "normal").source
    labels = {m[0]: m[1] for m in re.findall(r'^\s*(\w+) \[label="?([^"\s\]]+)', source, re.M)}
    edges = re.findall(r"^\s*(\w+) -> (\w+) \[.*label=(\w+)", source, re.M)
    drawn = [(op, labels[src].split(":")[0], labels[dst]) for src, dst, op in edges]
    k = 2
    assert drawn == [(op, str(j), str(2 + i // k)) for i, (op, j) in enumerate(g.cells["normal"])]
    assert "skip_connect(2)" in str(g) and g.short().startswith("N sep3(0) dil3(1) | skip(2) max3(1)")


def test_bn_reestimation_averages_the_batches_and_restores_the_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Dropout(0.5))
    net.train()
    batches = [(torch.randn(4, 1, 6, 6) + i, None) for i in range(3)]
    loop.reestimate_bn([net], batches)
    with torch.no_grad():
        feats = [net[0](x) for x, _ in batches]
    expected_mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    expected_var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    bn = net[1]
    assert torch.allclose(bn.running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(bn.running_var, expected_var, atol=1e-5)
    assert bn.momentum == 0.1 and net.training and bn.num_batches_tracked == 3


def test_below_chance_is_explained_where_printed():
    note = loop.below_chance_note(0.04, 10, "search", 0)
    assert "BatchNorm running statistics" in note and "search.bn_batches" in note
    assert loop.below_chance_note(0.04, 10, "search", 10) == ""  # re-estimated: the number stands
    assert loop.below_chance_note(0.5, 10, "train", 0) == ""
    assert resolve(preset="quick").train.bn_batches > 0 and resolve().train.bn_batches == 0


def test_epoch_line_and_long_run_warning(monkeypatch, tmp_path):
    record = {"epoch": 2, "train_loss": 1.5, "train_acc": 0.5, "test_acc": 0.25, "lr": 0.01, "time": 125.0}
    assert loop.epoch_line("retrain", 8, record, "x") == (
        "retrain epoch 3/8 | train loss 1.5000 acc 0.5000 | test acc 0.2500 | lr 0.01 | 2.1 min | x"
    )
    said = []

    class Run:
        def say(self, line, warning=False):
            said.append((line, warning))

    clock = iter([0.0, 10.0])  # the 5 steps after the first take 10 s: 2 s a step
    monkeypatch.setattr(loop.time, "perf_counter", lambda: next(clock))
    pace = loop.Pace(Run(), "search", steps=5000)
    for _ in range(10):
        pace()
    assert len(said) == 1 and said[0][1] and "2.8 h for 5000 steps" in said[0][0] and "--preset quick" in said[0][0]


def test_log_txt_is_appended_by_a_resumed_writer(tmp_path, capsys):
    RunDir(tmp_path).say("first")
    RunDir(tmp_path).say("second", warning=True)
    assert (tmp_path / "log.txt").read_text() == "first\nwarning: second\n"
    captured = capsys.readouterr()
    assert captured.out == "first\n" and captured.err == "diffnas: warning: second\n"


# -- --download against a local server ----------------------------------------------------------
class _Files(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (path -> bytes) with HTTP Range support; records the Range headers it got."""

    files: dict = {}
    ranges: list = []

    def do_GET(self):
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start, asked = 0, self.headers.get("Range")
        if asked:
            self.ranges.append(asked)
            start = int(asked.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    for key in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    _Files.files, _Files.ranges = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield _Files, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def _publish(handler, base, name, files: dict, monkeypatch, extract=False):
    handler.files.update({f"/{name}/{f}": data for f, data in files.items()})
    md5 = {f: hashlib.md5(data).hexdigest() for f, data in files.items()}
    source = download_mod.Source((f"{base}gone/", f"{base}{name}/"), md5, extract)  # a dead mirror first
    monkeypatch.setitem(download_mod.SOURCES, name, source)


def test_download_idx_resumes_and_checks(server, tmp_path, monkeypatch):
    handler, base = server
    src = write_fake_idx(tmp_path / "src", n_train=40, n_test=10)
    files = {p.name: p.read_bytes() for p in src.iterdir()}
    _publish(handler, base, "fashion-mnist", files, monkeypatch)
    monkeypatch.setenv("DIFFNAS_DATA", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "fashion-mnist"
    folder.mkdir(parents=True)
    big = "train-images-idx3-ubyte.gz"
    (folder / f"{big}.part").write_bytes(files[big][:100])  # an earlier download, cut short
    cfg = resolve(overrides={"download": True, "device": "cpu"})
    data = loop.load_data(cfg)
    assert handler.ranges == ["bytes=100-"]
    assert data.train_x.shape == (40, 1, 8, 8) and len(data.test_y) == 10
    assert all((folder / f).read_bytes() == b for f, b in files.items()) and not list(folder.glob("*.part"))
    handler.ranges.clear()
    assert download_mod.download_dataset("fashion-mnist", progress=False) == folder  # intact files: not fetched again
    assert handler.ranges == []
    assert gzip.decompress(files[big])  # the fixture is what the readers read


def test_download_checksum_mismatch_is_one_line_and_keeps_nothing(server, tmp_path, monkeypatch):
    handler, base = server
    _publish(handler, base, "mnist", {"train-images-idx3-ubyte.gz": b"abc"}, monkeypatch)
    download_mod.SOURCES["mnist"].files["train-images-idx3-ubyte.gz"] = "0" * 32
    with pytest.raises(DiffnasError, match="checksum mismatch") as e:
        download_mod.download_dataset("mnist", tmp_path / "m", progress=False)
    assert "\n" not in str(e.value) and not list((tmp_path / "m").iterdir())
    with pytest.raises(DataError, match="cannot download x .*run again"):
        download_mod._fetch_any([f"{base}nothing"], tmp_path / "x", "0" * 32, False)


def test_download_cifar_archive_is_unpacked(server, tmp_path, monkeypatch):
    from test_data import write_cifar10

    handler, base = server
    write_cifar10(tmp_path / "src" / "cifar-10-batches-py")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    _publish(handler, base, "cifar10", {"cifar-10-python.tar.gz": buf.getvalue()}, monkeypatch, extract=True)
    folder = download_mod.download_dataset("cifar10", tmp_path / "c10", progress=False)
    ds = load_dataset("cifar10", folder)
    assert ds.train_x.shape == (20, 3, 32, 32) and Path(folder, "cifar-10-python.tar.gz").is_file()


def test_a_run_takes_the_cores_free_when_it_starts(monkeypatch):
    from diffnas.runtime import system

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("DIFFNAS_THREADS", raising=False)
    monkeypatch.setattr(system, "DEFAULT_THREADS", 2)
    try:
        for free, expected in ((1.1, 1), (0.2, 1), (1.6, 2), (7.0, 2), (None, 2)):
            monkeypatch.setattr(system, "free_cores", lambda free=free: free)
            assert system.choose_threads() == expected == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice stays
        torch.set_num_threads(1)
        monkeypatch.setattr(system, "free_cores", lambda: 2.0)
        assert system.choose_threads() == 1
    finally:
        torch.set_num_threads(before)
        monkeypatch.undo()
    free = system.free_cores(0.05)
    assert free is None or 0.0 <= free <= (os.cpu_count() or 1) + 1e-6


def test_a_resumed_run_takes_the_thread_count_it_started_with(monkeypatch, data, tmp_path):
    from diffnas.runtime import system

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("DIFFNAS_THREADS", raising=False)
    monkeypatch.setattr(system, "DEFAULT_THREADS", 2)
    out = tmp_path / "s"
    try:
        monkeypatch.setattr(system, "free_cores", lambda: 0.9)  # busy when it starts: 1 thread
        assert cli("search", "--out", out, "--data-dir", data, "--epochs", "1", *TINY, *SETS)[0] == 0
        assert (out / loop.THREADS).read_text().strip() == "1"
        monkeypatch.setattr(system, "free_cores", lambda: 2.0)  # quiet when it resumes: still 1
        assert cli("search", "--resume", out, "--epochs", "2", "--no-progress")[0] == 0
        assert torch.get_num_threads() == 1
        (out / loop.THREADS).write_text("many\n")  # a doctored file: the cores free now
        assert cli("search", "--resume", out, "--epochs", "3", "--no-progress")[0] == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
