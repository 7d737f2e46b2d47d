"""The HTML reports and the collapse monitors: figures against hand computations, pages in a real browser."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from helpers import batch, tiny_method, write_fake_idx

from diffnas import api
from diffnas.engine import monitors
from diffnas.report.html import SECTIONS, warnings_by_epoch
from diffnas.sweep.report import group_stats, mean_std

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# -- monitors -------------------------------------------------------------------------------------
def test_power_iteration_matches_the_exact_hessian():
    m = tiny_method(search={"nodes": 1, "channels": 2})  # 32 architecture weights: the exact Hessian in seconds
    b = batch(n=2, size=4)
    params = list(m.arch)

    def loss():
        return m.loss(b)[0]

    grads = torch.autograd.grad(loss(), params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    rows = [torch.cat([h.reshape(-1) for h in torch.autograd.grad(gi, params, retain_graph=True)]) for gi in flat]
    exact = torch.linalg.eigvalsh(torch.stack(rows).double())
    dominant = exact[exact.abs().argmax()].item()
    assert abs(dominant) > 1.5 * sorted(exact.abs().tolist())[-2]  # a clear gap: power iteration converges fast
    found = monitors.dominant_eigenvalue(loss, params, iters=200, tol=1e-7)
    assert found == pytest.approx(dominant, rel=1e-3)


def test_parameter_free_counts_and_entropy():
    ops = {"normal": ["skip_connect", "sep_conv_3x3", "max_pool_3x3", "none"], "reduce": ["dil_conv_3x3"]}
    assert monitors.param_free_counts(ops) == {"normal": 3, "reduce": 0}
    uniform, onehot = torch.full((2, 4), 0.25), torch.eye(4)[:2]
    h = monitors.alpha_entropy({"a": uniform, "b": onehot})
    assert h["a"] == pytest.approx(1.0) and h["b"] == pytest.approx(0.0, abs=1e-9)


def test_collapse_warnings_on_a_hand_made_history():
    edges = {"normal": 8, "reduce": 8}
    calm = [{"epoch": e, "param_free_normal": 2, "param_free_reduce": 1, "hessian_eigenvalue": 1.0} for e in range(10)]
    assert monitors.collapse_warnings(calm, edges) == {}
    skips = calm[:-1] + [{**calm[-1], "param_free_normal": 4}]
    signs = monitors.collapse_warnings(skips, edges)
    assert list(signs) == ["param_free_normal"] and "4 of 8" in signs["param_free_normal"]
    assert "threshold 0.5" in signs["param_free_normal"]
    # Zela et al.: 5-epoch means 1.0 (epochs 0-4) then 1.5 (5-9): 1.0 / 1.5 = 0.67 < 0.75
    growing = [{**r, "hessian_eigenvalue": 1.0 if r["epoch"] < 5 else 1.5} for r in calm]
    signs = monitors.collapse_warnings(growing, edges)
    assert list(signs) == ["hessian_eigenvalue"] and "0.67 < 0.75" in signs["hessian_eigenvalue"]
    mild = [{**r, "hessian_eigenvalue": 1.0 if r["epoch"] < 5 else 1.2} for r in calm]  # 0.83: no warning
    assert monitors.collapse_warnings(mild, edges) == {}
    # the report lists a sign once, at the epoch it appears
    lasting = [{**r, "param_free_normal": 5 if r["epoch"] >= 7 else 1} for r in calm]
    assert [e for e, _ in warnings_by_epoch(lasting, edges)] == [7]


# -- the sweep table ------------------------------------------------------------------------------
def test_sweep_stats_against_a_hand_computation():
    records = [
        {"name": "a", "status": "ok", "method": "darts", "seed": s, "overrides": {}, "val_acc": v, "params_m": p}
        for s, v, p in ((0, 0.5, 1.0), (1, 0.7, 2.0), (2, 0.9, 3.0))
    ]
    records.append({"name": "f", "status": "failed", "method": "darts", "seed": 3, "overrides": {}, "val_acc": 0.0})
    stats = group_stats(records)[("darts", "-")]
    assert stats["val_acc"]["mean"] == pytest.approx(0.7)
    assert stats["val_acc"]["std"] == pytest.approx(0.2)  # sqrt((0.2^2 + 0 + 0.2^2) / (3 - 1))
    assert (stats["val_acc"]["min"], stats["val_acc"]["max"], stats["val_acc"]["n"]) == (0.5, 0.9, 3)
    assert stats["params_m"]["std"] == pytest.approx(1.0)
    assert "seed" not in stats
    assert mean_std([0.4])["std"] == 0.0 and mean_std(["x", None]) is None


# -- a tiny run and a tiny sweep, shared by the page tests ------------------------------------------
@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    data = write_fake_idx(root / "data", n_train=64, n_test=16)
    common = dict(preset="tiny", data_dir=str(data), subset=48, image_size=8, device="cpu", progress=False)
    search = {"batch_size": 8, "epochs": 2, "hessian_every": 1, "hessian_iters": 3}
    api.run(out=root / "run", search=search, train={"batch_size": 8}, **common)
    sweep = root / "sweep"
    records = []
    for seed in (0, 1):
        shutil.copytree(root / "run", sweep / f"darts__s{seed}")
        summary = json.loads((sweep / f"darts__s{seed}" / "search" / "summary.json").read_text())
        records.append(
            {
                "name": f"darts__s{seed}",
                "status": "ok",
                "method": "darts",
                "seed": seed,
                "overrides": {"method": "darts", "seed": seed},
                "run_dir": str(sweep / f"darts__s{seed}"),
                "val_acc": summary["val_acc"],
            }
        )
    (sweep / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"run": root / "run" / "report.html", "sweep": api.report(sweep)}


def test_a_run_writes_its_report_with_the_monitors(reports):
    run = reports["run"].parent
    assert reports["run"].is_file()
    assert not (run / "search" / "report.html").exists()  # `run` writes one page for search and retraining
    last = json.loads((run / "search" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"param_free_normal", "alpha_entropy_reduce", "hessian_eigenvalue"} <= set(last)
    page = reports["run"].read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    assert "hessian_eigenvalue" in page and "test_acc" in page


class _Resources(HTMLParser):
    """Every URL an HTML tag would make a browser fetch (script text is data to this parser, not tags)."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            fetches = name in ("src", "href", "data", "xlink:href", "poster", "srcset")
            if fetches and value and not value.startswith("#"):
                self.urls.append(value)
            if name == "style" and value and "url(" in value:
                self.urls.append(value)


@pytest.mark.parametrize("kind", ["run", "sweep"])
def test_the_page_is_self_contained(reports, kind):
    text = reports[kind].read_text()
    parser = _Resources()
    parser.feed(text)
    assert parser.urls == []
    assert "<script src" not in text and "@import" not in text


def test_a_failing_report_only_warns(monkeypatch, tmp_path, capsys):
    def broken(target, out=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(api, "report", broken)
    api._auto_report(tmp_path)
    assert "warning: no report written" in capsys.readouterr().err


def test_report_of_a_non_run_is_one_line_error(tmp_path):
    from diffnas.errors import DiffnasError

    with pytest.raises(DiffnasError, match="not a run directory"):
        api.report(tmp_path)


# -- in a real browser ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        pytest.skip("no chromium installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.mark.parametrize("kind", ["run", "sweep"])
def test_the_page_in_a_browser(browser, reports, kind):
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors, fetched = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: fetched.append(r.url))
    page.goto(Path(reports[kind]).as_uri())
    page.wait_for_selector(".plotly .main-svg")
    sections = SECTIONS if kind == "run" else ("summary", "architecture", "curves")
    for sid in sections:
        assert page.locator(f"section#{sid} h2").count() == 1, sid
    # the architecture drawing: graphviz's SVG with its edges
    assert page.locator("#architecture .arch svg g.edge").count() > 0
    # a plot rendered: plotly's SVG with drawn points
    points = page.locator("#curves .scatterlayer .points path")
    assert points.count() > 0
    box = points.first.bounding_box()
    points.first.scroll_into_view_if_needed()
    box = points.first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    tip = page.locator("#curves .hoverlayer .hovertext")
    tip.first.wait_for(timeout=5000)
    assert "epoch" in tip.first.text_content()
    assert errors == []
    assert all(u.startswith(("file:", "data:", "blob:", "about:")) for u in fetched), fetched
    page.close()
