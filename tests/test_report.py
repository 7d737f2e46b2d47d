import json
import math
import shutil

import pytest
from PIL import Image

from diffnas.errors import DiffnasError
from diffnas.report import plot_arch_weights, plot_curves, read_metrics
from diffnas.spaces import get_space
from diffnas.spaces.darts.drawing import draw_genotype
from diffnas.spaces.darts.genotype import Genotype

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' executable not installed")

DARTS4 = {
    "space": "darts",
    "nodes": 4,
    "normal": [
        ["sep_conv_3x3", 0],
        ["sep_conv_3x3", 1],
        ["sep_conv_5x5", 0],
        ["skip_connect", 2],
        ["dil_conv_3x3", 1],
        ["avg_pool_3x3", 3],
        ["dil_conv_5x5", 0],
        ["sep_conv_3x3", 4],
    ],
    "reduce": [
        ["max_pool_3x3", 0],
        ["max_pool_3x3", 1],
        ["skip_connect", 2],
        ["max_pool_3x3", 1],
        ["max_pool_3x3", 0],
        ["skip_connect", 2],
        ["skip_connect", 2],
        ["avg_pool_3x3", 0],
    ],
}
DARTS3 = {
    "space": "darts",
    "nodes": 3,
    "normal": [
        ["sep_conv_3x3", 0],
        ["skip_connect", 1],
        ["dil_conv_3x3", 2],
        ["sep_conv_5x5", 0],
        ["max_pool_3x3", 3],
        ["skip_connect", 1],
    ],
    "reduce": [
        ["max_pool_3x3", 0],
        ["avg_pool_3x3", 1],
        ["skip_connect", 2],
        ["max_pool_3x3", 1],
        ["dil_conv_5x5", 3],
        ["max_pool_3x3", 2],
    ],
    "normal_concat": [2, 3, 4],
    "reduce_concat": [3, 4],
}
# different op lists per cell type, 3 nodes, 3 edges per node (node 0 uses input 0 twice)
NASP12 = {
    "space": "nasp12",
    "nodes": 3,
    "normal": [
        ["conv_3x3", 0],
        ["conv_1x1", 1],
        ["sep_conv_7x7", 0],
        ["conv_3x1_1x3", 2],
        ["dil_conv_3x3", 0],
        ["sep_conv_3x3", 1],
        ["sep_conv_5x5", 3],
        ["skip_connect", 2],
        ["conv_3x3", 1],
    ],
    "reduce": [
        ["max_pool_5x5", 0],
        ["max_pool_7x7", 1],
        ["avg_pool_3x3", 1],
        ["max_pool_3x3", 2],
        ["skip_connect", 0],
        ["max_pool_5x5", 1],
        ["max_pool_7x7", 3],
        ["avg_pool_3x3", 2],
        ["max_pool_5x5", 0],
    ],
}


def _is_png(path, min_size=(200, 150)):
    assert path.is_file() and path.stat().st_size > 2000, path
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1], im.size
        # not a blank canvas
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 50


@needs_dot
@pytest.mark.parametrize("spec", [DARTS4, DARTS3, NASP12], ids=["darts4", "darts3", "nasp12"])
def test_draw_genotype(tmp_path, spec):
    g = Genotype.from_dict(spec)
    paths = draw_genotype(g, tmp_path, stem="best")
    for cell in ("normal", "reduce"):
        png, svg = tmp_path / f"best_{cell}.png", tmp_path / f"best_{cell}.svg"
        assert png in paths and svg in paths and (tmp_path / f"best_{cell}.dot") in paths
        _is_png(png, min_size=(100, 50))
        text = svg.read_text()
        for op, _ in g.cells[cell]:
            assert f">{op}</text>" in text, op
        # the op edges plus one edge per concatenated state into c_{k}
        assert text.count('class="edge"') == len(g.cells[cell]) + len(g.concat[cell])
        # every intermediate node is drawn
        assert text.count('class="node"') == 2 + g.nodes + 1
    assert all(p.stat().st_size > 0 for p in paths)


@needs_dot
def test_draw_genotype_from_run_dir(tmp_path):
    Genotype.from_dict(DARTS4).save(tmp_path / "genotype.json")
    paths = draw_genotype(tmp_path, tmp_path / "pics")
    assert {p.name for p in paths if p.suffix != ".dot"} == {
        "genotype_normal.png",
        "genotype_normal.svg",
        "genotype_reduce.png",
        "genotype_reduce.svg",
    }


def test_draw_genotype_without_dot(tmp_path, monkeypatch):
    empty = tmp_path / "empty_path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(DiffnasError, match="apt-get install graphviz") as exc:
        draw_genotype(Genotype.from_dict(DARTS4), tmp_path / "out")
    assert "\n" not in str(exc.value)
    for cell in ("normal", "reduce"):
        src = tmp_path / "out" / f"genotype_{cell}.dot"
        assert src.is_file()
        assert all(op in src.read_text() for op, _ in DARTS4[cell])
        assert not (tmp_path / "out" / f"genotype_{cell}.png").exists()


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def _write_metrics(run_dir, epochs=8, extra_lines=(), nodes=4):
    space = get_space("darts", nodes)
    ops = {"normal": list(space.ops["normal"]), "reduce": list(get_space("nasp12").ops["reduce"])}
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for ep in range(epochs):
        aw = {
            cell: [
                _softmax([0.1 * ep * ((e + o) % 3 - 1) + 0.01 * o for o in range(len(ops[cell]))])
                for e in range(space.num_edges)
            ]
            for cell in ops
        }
        rec = {
            "epoch": ep,
            "arch_weights": aw,
            "ops": ops,
            "train_loss": 2.3 - 0.2 * ep,
            "train_acc": 0.1 + 0.08 * ep,
            "val_loss": 2.4 - 0.15 * ep,
            "val_acc": 0.1 + 0.07 * ep,
            "w_lr": 0.025,
            "time": 1.0 + ep,
            "genotype": {"whatever": [1, 2]},
        }
        lines.append(json.dumps(rec))
    lines.extend(extra_lines)
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return ops


def test_plot_arch_weights(tmp_path):
    run = tmp_path / "run_a"
    _write_metrics(run)
    paths = plot_arch_weights(run)
    assert [p.name for p in paths] == ["arch_weights_normal.png", "arch_weights_reduce.png"]
    assert all(p.parent == run for p in paths)
    for p in paths:
        _is_png(p, min_size=(800, 500))


def test_plot_arch_weights_small_cell_to_out_dir(tmp_path):
    run = tmp_path / "run_2nodes"
    _write_metrics(run, epochs=1, nodes=2)  # 5 edges, a single epoch
    paths = plot_arch_weights(run, out=tmp_path / "figs")
    assert [p.name for p in paths] == ["arch_weights_normal.png", "arch_weights_reduce.png"]
    for p in paths:
        assert p.parent == tmp_path / "figs"
        _is_png(p, min_size=(500, 300))
    assert not (run / "arch_weights_normal.png").exists()


def test_plot_curves(tmp_path):
    runs = [tmp_path / "run_a", tmp_path / "run_b"]
    for i, run in enumerate(runs):
        _write_metrics(run, epochs=5 + 3 * i)
    out = plot_curves(runs, tmp_path / "curves.png")
    assert out == tmp_path / "curves.png"
    _is_png(out, min_size=(800, 300))
    # a single run with only some keys
    single = tmp_path / "partial"
    single.mkdir()
    (single / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": e, "train_loss": 1.0 / (e + 1)}) + "\n" for e in range(4))
    )
    _is_png(plot_curves([single], tmp_path / "partial.png"), min_size=(800, 300))


def test_read_metrics_errors(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(DiffnasError, match="metrics.jsonl"):
        read_metrics(run)
    _write_metrics(run, epochs=3, extra_lines=['{"epoch": 3, "train_loss": '])
    with pytest.raises(DiffnasError, match=r"metrics\.jsonl, line 4") as exc:
        read_metrics(run)
    assert "\n" not in str(exc.value)
    with pytest.raises(DiffnasError, match="line 4"):
        plot_arch_weights(run)
    _write_metrics(run, epochs=2)
    assert [r["epoch"] for r in read_metrics(run)] == [0, 1]
