"""Benchmark look-up tables, the converter, and the random-search baselines (random, rsws)."""

import csv
import json
import random
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
import torch
from helpers import FixedBatches, batch, tiny_config, tiny_method, write_fake_idx

from diffnas.cli import main
from diffnas.data.benchmark import NB201_COLUMNS, BenchmarkTable, convert
from diffnas.engine.search import search
from diffnas.errors import DataError
from diffnas.methods import build_method
from diffnas.spaces import get_space, load_architecture
from diffnas.sweep.report import format_table, write_records

TINY = ["--epochs", "2", "--channels", "4", "--layers", "3", "--batch-size", "16", "--no-progress"]


def write_table(path, rows, header=("arch", "cifar10_test", "cifar100_test")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


# -- look-up ---------------------------------------------------------------------------------
def test_lookup_hit_and_miss(tmp_path):
    arch = get_space("darts").random_architecture(random.Random(0))
    path = write_table(tmp_path / "t.csv", [[str(arch), "93.5", "70.25"], ["|x~0|", "10", "1"]])
    table = BenchmarkTable.load(path)
    assert table.metrics == ["cifar10_test", "cifar100_test"] and table.primary == "cifar10_test"
    assert table.lookup(arch) == {"cifar10_test": 93.5, "cifar100_test": 70.25}  # multi-line strings round trip
    assert table.record(arch) == {"lookup_cifar10_test": 93.5, "lookup_cifar100_test": 70.25}
    other = get_space("darts").random_architecture(random.Random(1))
    assert table.record(other) == {"lookup_cifar10_test": None, "lookup_cifar100_test": None}
    with pytest.raises(DataError, match=r"t\.csv: architecture .* is not in the table") as e:
        table.lookup(other)
    assert "\n" not in str(e.value)
    chosen = BenchmarkTable.load(path, metrics="cifar100_test")  # a metric chosen by name
    assert chosen.lookup("|x~0|") == {"cifar100_test": 1.0}


@pytest.mark.parametrize(
    "content, kwargs, message",
    [
        ("", {}, "empty"),
        ("arch,acc\n", {}, "no architectures"),
        ("arch,acc\na,1\nb\n", {}, "line 3: 1 fields, the header has 2"),
        ("arch,acc\na,high\n", {}, "line 2: column 'acc' holds 'high', not a number"),
        ("arch,acc\na,1\na,2\n", {}, "line 3: architecture 'a' appears twice"),
        ("name,acc\na,1\n", {}, "no architecture column 'arch'.*the header has name, acc"),
        ("arch,acc\na,1\n", {"metrics": ["test_acc"]}, "no metric column 'test_acc'"),
        ("arch\na\n", {}, "no metric column at all"),
        (b"arch,acc\n\xff\xfe,1\n", {}, "not a CSV table"),
    ],
)
def test_malformed_tables_are_one_line_errors_naming_the_file(tmp_path, content, kwargs, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=message) as e:
        BenchmarkTable.load(path, **kwargs)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_missing_table_file(tmp_path):
    with pytest.raises(DataError, match="no such benchmark table"):
        BenchmarkTable.load(tmp_path / "none.csv")


# -- the converter -----------------------------------------------------------------------------
class FakeAPI:
    """The part of the NATS-Bench / NAS-Bench-201 API the converter uses: three architectures."""

    archs = ["|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|", "|a~0|+|b~0|b~1|+|c~0|c~1|c~2|", "|x~0|"]

    def __init__(self):
        self.calls = []

    def __len__(self):
        return len(self.archs)

    def arch(self, i):
        return self.archs[i]

    def get_more_info(self, index, dataset, iepoch=None, hp="12", is_random=True):
        self.calls.append((index, dataset, hp, is_random))
        base = 10 * index + {"cifar10": 1, "cifar10-valid": 2, "cifar100": 3, "ImageNet16-120": 5}[dataset]
        return {"test-accuracy": base + 0.5, "valid-accuracy": base + 0.25}


def test_converter_writes_a_table_the_lookup_reads(tmp_path, monkeypatch):
    api = FakeAPI()
    created = {}

    def create(path, space, fast_mode=False, verbose=True):
        created.update(path=path, space=space)
        return api

    monkeypatch.setitem(sys.modules, "nats_bench", types.SimpleNamespace(create=create))
    source = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
    source.mkdir()
    out = tmp_path / "nb201.csv"
    assert main(["benchmark-convert", str(source), "--out", str(out)]) == 0
    assert created == {"path": str(source), "space": "tss"}
    assert {(hp, r) for _, _, hp, r in api.calls} == {("200", False)}  # 200-epoch results, averaged over seeds
    table = BenchmarkTable.load(out)
    assert table.metrics == [c for c, _, _ in NB201_COLUMNS]
    assert table.lookup(FakeAPI.archs[1]) == {
        "cifar10_test": 11.5,
        "cifar10_valid": 12.25,
        "cifar100_test": 13.5,
        "cifar100_valid": 13.25,
        "imagenet16_test": 15.5,
        "imagenet16_valid": 15.25,
    }
    # the NAS-Bench-201 package, the same way
    monkeypatch.setitem(sys.modules, "nas_201_api", types.SimpleNamespace(NASBench201API=lambda p, verbose: api))
    assert convert(source, tmp_path / "b.csv", api="nb201") == 3


def test_converter_without_the_package_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nats_bench", None)  # import fails
    assert main(["benchmark-convert", str(tmp_path), "--out", str(tmp_path / "t.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffnas: error: converting needs the package nats_bench") and "\n" not in err
    assert not (tmp_path / "t.csv").exists()


# -- random architectures ----------------------------------------------------------------------
@pytest.mark.parametrize("space", ["darts", "nasp12"])
def test_random_architecture_is_seeded_and_valid(space):
    sp = get_space(space)
    a, b, c = (sp.random_architecture(random.Random(s)) for s in (3, 3, 4))
    assert a.to_dict() == b.to_dict() and a.to_dict() != c.to_dict()
    a.validate(sp)
    assert sp.from_masks(sp.to_masks(a)).to_dict() == a.to_dict()  # masks round trip


def test_random_architecture_is_uniform():
    """Each op (none excluded) and each pair of a node's inputs about equally often over many draws."""
    sp = get_space("darts")
    rng = random.Random(0)
    n = 2000
    ops, pairs = Counter(), Counter()
    for _ in range(n):
        g = sp.random_architecture(rng)
        ops.update(op for op, _ in g.cells["normal"])
        pairs[tuple(j for _, j in g.edges("normal", 3))] += 1  # node 3: 5 inputs, 10 pairs
    assert "none" not in ops and len(ops) == 7
    expected = 8 * n / 7
    assert all(abs(c - expected) < 0.1 * expected for c in ops.values()), ops
    assert len(pairs) == 10 and all(abs(c - n / 10) < 0.25 * n / 10 for c in pairs.values()), pairs


def test_random_method_draws_the_seeds_architecture():
    drawn = []
    for seed in (0, 0, 5):
        cfg = tiny_config("random", seed=seed)  # the run's seed
        m = build_method(cfg, get_space("darts"), 1, 3, "cpu")
        assert m.genotype().to_dict() == m.space.random_architecture(random.Random(seed)).to_dict()
        drawn.append(m.genotype().to_dict())
    assert drawn[0] == drawn[1] != drawn[2]


# -- rsws ---------------------------------------------------------------------------------------
def test_rsws_weight_step_trains_only_the_sampled_path():
    m = tiny_method("rsws")
    before = {n: p.detach().clone() for n, p in m.net.named_parameters()}
    m.epoch_start(0, 10)
    m.step(batch(), FixedBatches(batch(seed=1)))
    masks = m.relax._masks
    after = dict(m.net.named_parameters())
    name = {id(p): n for n, p in after.items()}
    for cell in m.net.cells:
        for e, edge in enumerate(cell.edges):
            for o, op in enumerate(edge.ops):
                params = [name[id(p)] for p in op.parameters()]
                if params:  # the sampled ops moved, no other op did
                    moved = any(not torch.equal(before[n], after[n]) for n in params)
                    assert moved == bool(masks[cell.cell_type][e, o]), (cell.index, e, o)


def test_rsws_ranks_by_shared_weight_accuracy_and_returns_the_best(monkeypatch):
    """A toy task whose val accuracy is the number of skip connections in the normal cell: the best is known."""
    m = tiny_method("rsws", rsws={"samples": 12, "eval_batches": 2})

    def evaluate(net, batches):
        assert len(batches) == 2  # every architecture judged on the same eval batches
        skips = sum(op == "skip_connect" for op, _ in m.relax.architecture.cells["normal"])
        return {"loss": 0.0, "acc": float(skips), "n": 1}

    monkeypatch.setattr(m.space.task, "evaluate", evaluate)
    ranked = m.rank([batch(), batch(seed=2)])
    assert len(ranked) == 12
    best = max(ranked, key=lambda r: r["val_acc"])  # the first of equals
    assert str(m.genotype()) == best["architecture"]
    assert best["val_acc"] == sum(op == "skip_connect" for op, _ in m.genotype().cells["normal"])


def test_rsws_end_of_epoch_ranking_in_the_step_frame(monkeypatch):
    m = tiny_method("rsws", rsws={"samples": 3})
    m.epoch_start(0, 2)
    val = FixedBatches(batch(seed=1))
    m.step(batch(), val)
    assert m.ranked == []
    m.step(batch(seed=3), val)  # the epoch's last step ranks
    rec = m.epoch_record()
    assert len(rec["ranked"]) == 3 and rec["ranked_best_val_acc"] == max(r["val_acc"] for r in rec["ranked"])
    assert str(m.genotype()) in [r["architecture"] for r in rec["ranked"]]


# -- end to end --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_idx(tmp_path_factory.mktemp("fmnist"))


def test_search_logs_every_epochs_lookup(data, tmp_path, capsys):
    """A search, then the same search with a table of the architectures it went through: every epoch looked up."""
    args = ["search", "--method", "darts", "--data-dir", str(data), *TINY]
    first = search(tiny_config("darts", data_dir=str(data), search={"batch_size": 16}), tmp_path / "a", progress=False)
    archs = [r["genotype"] for r in first.records]
    rows = {a: [a, str(90.0 + i), str(60.0 + i)] for i, a in enumerate(archs)}
    table = write_table(tmp_path / "t.csv", list(rows.values()))
    assert main([*args, "--out", str(tmp_path / "b"), "--benchmark", str(table)]) == 0
    metrics = lines(tmp_path / "b" / "metrics.jsonl")
    for m in metrics:
        assert [m["lookup_cifar10_test"], m["lookup_cifar100_test"]] == [float(x) for x in rows[m["genotype"]][1:]]
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["benchmark"] == str(table)
    assert summary["lookup"] == {k[len("lookup_") :]: v for k, v in metrics[-1].items() if k.startswith("lookup_")}
    assert "benchmark look-up: cifar10_test" in capsys.readouterr().out


def test_a_found_architecture_missing_from_the_table(data, tmp_path, capsys):
    """Epochs the table lacks are logged as None with a warning; the final one is a one-line error, run saved."""
    table = write_table(tmp_path / "t.csv", [["|not~0|", "1", "2"]])
    out = tmp_path / "run"
    args = ["search", "--method", "darts", "--data-dir", str(data), *TINY, "--out", str(out)]
    assert main([*args, "--benchmark", str(table)]) == 2
    err = capsys.readouterr().err
    assert "epoch 0's architecture is not in it" in err
    assert err.strip().splitlines()[-1].startswith(f"diffnas: error: {table}: architecture ")
    assert [m["lookup_cifar10_test"] for m in lines(out / "metrics.jsonl")] == [None, None]
    assert json.loads((out / "summary.json").read_text())["lookup"] == {"cifar10_test": None, "cifar100_test": None}
    # a bad table or column stops the search before anything is written
    assert main([*args[:-1], str(tmp_path / "r2"), "--benchmark", str(table), "--set", "benchmark.metrics=[x]"]) == 2
    assert "no metric column 'x'" in capsys.readouterr().err and not (tmp_path / "r2").exists()


def test_random_method_run_train_show_with_a_table(data, tmp_path, capsys):
    arch = get_space("darts").random_architecture(random.Random(7))
    table = write_table(tmp_path / "t.csv", [[str(arch), "88.5", "61"]])
    out = tmp_path / "random"
    common = ["--data-dir", str(data), "--benchmark", str(table), "--seed", "7"]
    assert main(["search", "--method", "random", *common, *TINY, "--out", str(out)]) == 0
    assert load_architecture(out).to_dict() == arch.to_dict()
    assert [m["lookup_cifar10_test"] for m in lines(out / "metrics.jsonl")] == [88.5]  # one epoch: no training
    assert not (out / "steps.jsonl").is_file()  # no steps
    assert json.loads((out / "summary.json").read_text())["lookup"] == {"cifar10_test": 88.5, "cifar100_test": 61.0}
    train_out = tmp_path / "train"
    train = ["train", "--genotype", str(out), *common, "--epochs", "1", "--channels", "4", "--layers", "3"]
    assert main([*train, "--batch-size", "16", "--no-progress", "--out", str(train_out)]) == 0
    assert json.loads((train_out / "result.json").read_text())["lookup"]["cifar10_test"] == 88.5
    capsys.readouterr()
    assert main(["show", str(out), "--benchmark", str(table), "--metrics", "cifar100_test"]) == 0
    assert f"benchmark look-up ({table}): cifar100_test 61" in capsys.readouterr().out
    assert main(["show", str(out), "--benchmark", str(write_table(tmp_path / "o.csv", [["z", "1", "2"]]))]) == 2
    assert "is not in the table" in capsys.readouterr().err


def test_rsws_search_end_to_end(data, tmp_path):
    out = tmp_path / "rsws"
    args = ["search", "--method", "rsws", "--data-dir", str(data), *TINY, "--set", "rsws.samples=4"]
    # the collapse monitor's epochs pass over it: no architecture parameters, no Hessian
    assert main([*args, "--out", str(out), "--set", "search.hessian_every=1"]) == 0
    metrics = lines(out / "metrics.jsonl")
    assert [len(m["ranked"]) for m in metrics] == [4, 4]
    assert not any("hessian_eigenvalue" in m for m in metrics)
    for m in metrics:  # the epoch's architecture is the best ranked one
        best = max(m["ranked"], key=lambda r: r["val_acc"])
        assert m["genotype"] == best["architecture"]
    assert str(load_architecture(out)) == metrics[-1]["genotype"]


def test_sweep_tables_show_the_lookup(tmp_path):
    records = [
        {"name": f"t{s}", "status": "ok", "method": "rsws", "seed": s, "overrides": {}, "lookup": {"c10": 90.0 + s}}
        for s in range(3)
    ]
    write_records(tmp_path, records)
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert [r["lookup_c10"] for r in rows] == ["90.0", "91.0", "92.0"]
    table = format_table(records)
    assert "lookup c10" in table.splitlines()[0] and "91.00 (90.00-92.00)" in table
