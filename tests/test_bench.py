"""The fast supernet kernels equal the plain modules (values, gradients, BN statistics); `diffnas bench` runs.

`diffnas bench`'s probe: phase times (arch, weight, other) and the tensors saved for backward per phase.
"""

import copy
import json
import os
import platform
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import FixedBatches, batch, tiny_method

from diffnas import bench
from diffnas.bench import LIVE_MEMORY_ENV
from diffnas.catalog import resolve
from diffnas.cli import main
from diffnas.methods import build_method
from diffnas.spaces import space_from_config
from diffnas.spaces.darts import fastops
from diffnas.spaces.darts.ops import OPS, DilConv, ReLUConvBN, SepConv


@pytest.fixture
def plain():
    """Run the block with the fast kernels switched off."""

    class Switch:
        def __enter__(self):
            fastops.ENABLED = False

        def __exit__(self, *exc):
            fastops.ENABLED = True

    return Switch()


def run(module, x, gy):
    x = x.detach().clone().requires_grad_(True)
    y = module(x)
    params = list(module.parameters())
    grads = torch.autograd.grad(y, [x, *params], gy)
    return y.detach(), grads


def bn_buffers(module):
    return [b.clone() for b in module.buffers()]


@pytest.mark.parametrize(
    "name", ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "conv_3x3", "conv_1x1"]
)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_conv_ops_match_autograd_on_the_plain_modules(plain, name, stride, channels_last):
    torch.manual_seed(0)
    op = OPS[name](4, stride, False)
    assert isinstance(op, (DilConv, SepConv, ReLUConvBN))
    x = torch.randn(3, 4, 9, 9, dtype=torch.float64)  # odd size: stride-2 padding edge cases
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    op = op.double()
    ref = copy.deepcopy(op)
    gy = torch.randn_like(ref(x.clone()))
    ref = copy.deepcopy(op)  # fresh statistics again
    with plain:
        y0, g0 = run(ref, x, gy)
    y1, g1 = run(op, x, gy)
    assert torch.allclose(y1, y0, atol=1e-10)
    for a, b in zip(g1, g0):
        assert torch.allclose(a, b, atol=1e-9), (a - b).abs().max()
    for a, b in zip(bn_buffers(op), bn_buffers(ref)):
        assert torch.allclose(a.double(), b.double(), atol=1e-12)
    # the input gradient alone (an architecture step: no weight gradients wanted) is the same
    x2 = x.detach().clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(op(x2), x2, gy)
    assert torch.allclose(gx, g0[0], atol=1e-9)


def test_fast_conv_second_order_gradient_is_exact():
    """create_graph through the fast block: Hessian-vector products equal those of the plain block."""
    torch.manual_seed(1)
    op = OPS["dil_conv_3x3"](3, 1, False).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)

    def hvp(module):
        w = module[1].weight
        (g,) = torch.autograd.grad(module(x).pow(2).sum(), [w], create_graph=True)
        return torch.autograd.grad(g.sum(), [x, w])

    fast = hvp(copy.deepcopy(op))
    fastops.ENABLED = False
    try:
        slow = hvp(copy.deepcopy(op))
    finally:
        fastops.ENABLED = True
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, atol=1e-9)


@pytest.mark.parametrize("name", ["max_pool_3x3", "avg_pool_3x3"])
def test_shared_pool_bn_equals_separate_ops_and_updates_every_bn(plain, name):
    torch.manual_seed(2)
    ops = [OPS[name](4, 1, False).double() for _ in range(3)]
    # different starting statistics: each edge's running stats must follow its own history
    for i, op in enumerate(ops):
        op[1].running_mean.fill_(0.1 * i)
        op[1].running_var.fill_(1.0 + i)
    refs = copy.deepcopy(ops)
    x = torch.randn(4, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    with fastops.shared_inputs():
        out = sum(wi * op(x) for wi, op in zip(w, ops))
    (g,) = torch.autograd.grad(out.square().sum(), x)
    with plain:
        ref_out = sum(wi * op(x) for wi, op in zip(w, refs))
    (g_ref,) = torch.autograd.grad(ref_out.square().sum(), x)
    assert torch.allclose(out, ref_out, atol=1e-12)
    assert torch.allclose(g, g_ref, atol=1e-10)
    for op, ref in zip(ops, refs):
        for a, b in zip(op[1].buffers(), ref[1].buffers()):
            assert torch.allclose(a.double(), b.double(), atol=1e-12)
    # and the sharing really happened: the pool ran once
    calls = []
    hook = ops[0][0].register_forward_hook(lambda *a: calls.append(1))
    ops[1][0] = ops[0][0]
    with fastops.shared_inputs():
        ops[0](x)
        ops[1](x)
    hook.remove()
    assert len(calls) == 1


@pytest.mark.parametrize("method", ["darts", "pc-darts"])
def test_supernet_step_equals_plain_modules(plain, method):
    """A whole search step (arch + weight) with the fast kernels equals the plain autograd one."""
    fast_m = tiny_method(method, search={"arch_start_epoch": 0})
    with plain:
        plain_m = tiny_method(method, search={"arch_start_epoch": 0})
    for m in (fast_m, plain_m):
        m.epoch_start(0, 10)
    train, val = batch(seed=5), FixedBatches(batch(seed=6))
    r_fast = fast_m.step(train, val)
    with plain:
        r_plain = plain_m.step(train, val)
    assert abs(r_fast["loss"] - r_plain["loss"]) < 1e-5
    for a, b in zip(fast_m.arch, plain_m.arch):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(fast_m.weights, plain_m.weights):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    for a, b in zip(fast_m.net.buffers(), plain_m.net.buffers()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_supernet_runs_channels_last_and_eval_uses_running_stats():
    m = tiny_method("darts")
    x = batch()[0]
    m.net.train()
    m.net(x)
    m.net.eval()
    with torch.no_grad():
        y1 = m.net(x)
        y2 = m.net(x[:4])  # eval: per-sample results do not depend on the batch
    assert torch.allclose(y1[:4], y2, atol=1e-5)
    assert F.softmax(y1, 1).sum(1).allclose(torch.ones(len(x)))


TINY = {"channels": 4, "layers": 3, "batch_size": 8, "image_size": 8, "in_channels": 1, "num_classes": 3}


def test_bench_command_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(
        [
            "bench",
            "--methods",
            "darts,no-such-method,darts[search.schedule=every:100]",
            "--channels",
            "4",
            "--layers",
            "3",
            "--batch-size",
            "4",
            "--image-size",
            "8",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--saved-steps",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    darts = report["results"]["darts"]
    assert darts["median_s"] > 0 and darts["peak_mb"] > 0
    assert darts["time_vs_darts"] == 1.0 and darts["memory_vs_darts"] == 1.0
    # step memory from the memory pass (a second process returning freed memory at once); glibc's defaults beside it
    assert darts["step_mb"] is not None and darts["rss_step_mb"] is not None
    assert darts["arch_s"] > 0 and darts["weight_s"] > 0 and darts["saved_mb"] > 0
    assert darts["arch_saved_mb"] > 0 and darts["weight_saved_mb"] > 0 and darts["saved_vs_darts"] == 1.0
    # an entry with its own overrides is measured under its label: one weight step, no architecture step
    every = report["results"]["darts[search.schedule=every:100]"]
    assert every["method"] == "darts" and every["sets"] == {"search": {"schedule": "every:100"}}
    assert every["arch_s"] == 0 and every["phases"]["arch"]["steps"] == 0 and every["saved_vs_darts"] < 1
    assert "no-such-method" in report["skipped"]
    assert report["config"]["channels"] == 4 and "cpu" in report["machine"]
    printed = capsys.readouterr().out
    assert "darts" in printed and "no-such-method" in printed
    for column in ("arch s", "weight s", "saved MB"):
        assert column in printed


def test_method_entries_with_overrides():
    text = "darts, nasp[nasp.arch_ops=selected,search.w_lr=0.1],pc-darts"
    assert bench.parse_methods(text) == ["darts", "nasp[nasp.arch_ops=selected,search.w_lr=0.1]", "pc-darts"]
    assert bench.split_entry("darts") == ("darts", {})
    name, sets = bench.split_entry("nasp[nasp.arch_ops=selected,search.w_lr=0.1]")
    assert name == "nasp" and sets == {"nasp": {"arch_ops": "selected"}, "search": {"w_lr": 0.1}}
    with pytest.raises(ValueError):
        bench.split_entry("nasp[nasp.arch_ops=selected")


def test_an_entry_may_time_its_own_number_of_steps_and_reports_the_mean():
    report = bench.run_bench(
        ["darts-cd[steps=3,relax.sample=network]"], channels=4, layers=3, batch_size=4, image_size=8,
        steps=1, warmup=0, saved_steps=0, live_memory=False,
    )  # fmt: skip
    cd, darts = report["results"]["darts-cd[steps=3,relax.sample=network]"], report["results"]["darts"]
    assert cd["timed_steps"] == 3 and darts["timed_steps"] == 1
    assert cd["sets"] == {"relax": {"sample": "network"}}  # steps is no config key
    assert cd["cpu_mean_s"] > 0 and cd["cpu_mean_vs_darts"] == pytest.approx(cd["cpu_mean_s"] / darts["cpu_mean_s"])


def test_interleaved_entries_take_their_steps_in_turn_and_memory_from_their_own_pass(monkeypatch):
    """``--interleave``: one process steps every entry in turn (the short entry's steps spread over the run);
    each entry's step memory still comes from its own memory pass."""
    order = []
    step = bench.DerivedStep.step

    def recorded(self, *a, **k):
        order.append("derived")
        return step(self, *a, **k)

    monkeypatch.setattr(bench.DerivedStep, "step", recorded)
    specs = [
        {"method": "derived", "steps": 2, "warmup": 0, **TINY},
        {"method": "darts", "steps": 4, "warmup": 0, **TINY},
    ]
    import diffnas.methods.darts as darts_module

    darts_step = darts_module.DARTS.step

    def recorded_darts(self, *a, **k):
        order.append("darts")
        return darts_step(self, *a, **k)

    monkeypatch.setattr(darts_module.DARTS, "step", recorded_darts)
    derived, darts = bench.measure_interleaved(specs)
    assert len(derived["cpu_times_s"]) == 2 and len(darts["cpu_times_s"]) == 4
    # cycles 0..3; derived is due in cycles 0 and 2, and each cycle starts one entry later
    assert order == ["derived", "darts", "darts", "derived", "darts", "darts"]
    assert derived["cpu_mean_s"] > 0 and darts["interleaved"]

    report = bench.run_bench(["derived"], interleave=True, steps=1, warmup=0, saved_steps=0, **TINY)
    for r in report["results"].values():
        assert r["step_mb"] is not None  # from the memory pass
        assert r["saved_mb"] is None and r["arch_s"] is None  # no probe in the interleaved process
    assert report["results"]["derived"]["cpu_time_vs_darts"] > 0


def test_probe_charges_time_and_distinct_saved_storages_to_the_open_phase():
    probe = bench.Probe("cpu", exclude=[w := torch.randn(1000, requires_grad=True)])
    x = torch.randn(1000, requires_grad=True)
    with probe.step():
        with probe.phase("arch"):
            y = x.exp()  # saves its output: 4000 bytes
            z = y.sin() * w  # sin saves y again (same storage: not counted twice); mul saves sin(y), not w (excluded)
            with probe.phase("weight"):  # nested: the inner phase gets its own time and tensors
                v = (x * 3).tanh()  # mul saves nothing it needs (a scalar), tanh saves its output
        u = x.sigmoid()  # outside every phase: "other"
        torch.autograd.grad((z.sum() + v.sum() + u.sum()), x)
    assert probe.live_bytes == 0 and not probe.live  # autograd dropped everything it saved: nothing leaks
    (step,) = probe.steps
    arch, weight, other = (step["phases"][n] for n in ("arch", "weight", "other"))
    assert arch["entered"] == 1 and weight["entered"] == 1
    assert arch["bytes"] == 2 * 4000 and arch["tensors"] == 3  # y (twice: exp, sin), sin(y)
    assert weight["bytes"] == 4000 and other["bytes"] == 4000
    assert step["peak_saved_bytes"] == 4 * 4000
    assert arch["s"] > 0 and weight["s"] > 0
    assert arch["s"] + weight["s"] + other["s"] == pytest.approx(step["s"])


@pytest.mark.parametrize("method", ["darts", "darts2", "rarts"])
def test_the_probe_leaves_the_step_unchanged(method):
    """With the probe counting, a step gives the same parameters as without it, and releases what it saved."""
    ms = [tiny_method(method, search={"arch_start_epoch": 0}) for _ in range(2)]
    train, val = batch(seed=5), FixedBatches(batch(seed=6))
    probe = bench.Probe("cpu", exclude=[*ms[0].weights, *ms[0].arch])
    for m in ms:
        m.epoch_start(0, 10)
    ms[0].probe = probe
    for _ in range(2):
        with probe.step():
            ms[0].step(train, val)
        ms[1].step(train, val)
    for a, b in zip([*ms[0].arch, *ms[0].weights], [*ms[1].arch, *ms[1].weights]):
        assert torch.equal(a, b)
    assert probe.live_bytes == 0
    assert all(st["peak_saved_bytes"] > 0 for st in probe.steps)


@pytest.fixture(scope="module")
def tiny_runs():
    """darts, darts-cd and max-alpha measured in this process at the tiny scale (one timed, one counted step)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # (two threads on a busy 2-core machine spin-wait)
    try:
        names = ("darts", "darts-cd", "max-alpha")
        return {m: bench.measure(m, steps=2, warmup=1, saved_steps=1, **TINY) for m in names}
    finally:
        torch.set_num_threads(threads)


def test_phase_times_are_positive_and_sum_to_at_most_the_step(tiny_runs):
    for name, r in tiny_runs.items():
        for p in ("arch", "weight"):
            assert r["phases"][p]["median_s"] > 0 and r["phases"][p]["steps"] == 2, name
        for st, wall in zip(r["steps_detail"], r["times_s"]):
            phases = st["phases_s"]
            assert phases["arch"] > 0 and phases["weight"] > 0 and phases["other"] >= 0
            assert phases["arch"] + phases["weight"] <= st["s"] * 1.001 + 1e-6
            assert st["s"] <= wall + 1e-6  # the probe's step lies inside the timed call
        assert r["phases"]["arch"]["median_s"] + r["phases"]["weight"]["median_s"] <= r["median_s"] * 1.05 + 1e-3


def test_darts_cd_and_max_alpha_save_less_for_backward_than_darts(tiny_runs):
    darts = tiny_runs["darts"]
    # darts: both phases run the whole supernet in training mode on a batch of the same size
    assert darts["phases"]["arch"]["saved_mb"] == pytest.approx(darts["phases"]["weight"]["saved_mb"], rel=0.05)
    assert darts["saved_mb"] > 0 and darts["peak_saved_mb"] <= darts["saved_mb"]
    for name in ("darts-cd", "max-alpha"):
        r = tiny_runs[name]
        assert 0 < r["saved_mb"] < 0.6 * darts["saved_mb"], name
        for p in ("arch", "weight"):
            assert 0 < r["phases"][p]["saved_mb"] < darts["phases"][p]["saved_mb"], (name, p)


def test_no_architecture_phase_in_steps_without_an_architecture_step():
    """every:100: the warm-up step has the architecture step, the measured ones have none."""
    r = bench.measure("darts", steps=2, warmup=1, saved_steps=1, sets={"search": {"schedule": "every:100"}}, **TINY)
    arch, weight = r["phases"]["arch"], r["phases"]["weight"]
    assert arch["steps"] == 0 and arch["median_s"] == 0 and arch["median_s_when_run"] is None
    assert arch["saved_mb"] == 0 and arch["saved_tensors"] == 0
    assert weight["steps"] == 2 and weight["saved_mb"] > 0
    assert all("arch" not in st["phases_s"] for st in r["steps_detail"])
    assert r["saved_mb"] == pytest.approx(weight["saved_mb"])


def test_bench_at_a_given_epoch_without_counting():
    r = bench.measure("darts", steps=1, warmup=0, saved_steps=0, epoch=3, **TINY)
    assert r["epoch"] == 3 and r["saved_mb"] is None and r["phases"]["weight"]["saved_mb"] is None
    assert r["phases"]["arch"]["steps"] == 1 and r["phases"]["arch"]["median_s"] > 0


def test_architecture_step_skips_the_weight_gradients_of_fast_blocks(monkeypatch):
    """autograd.grad(loss, alphas) makes the fused blocks skip their weight gradients; a weight step does not."""
    m = tiny_method("darts")
    seen = []
    will_run = fastops._will_run
    monkeypatch.setattr(fastops, "_will_run", lambda node: seen.append(will_run(node)) or seen[-1])
    loss, _ = m.loss(batch())
    g_arch = torch.autograd.grad(loss, m.arch, retain_graph=True)
    assert seen and not any(seen)
    assert all(g is not None and g.abs().sum() > 0 for g in g_arch)
    seen.clear()
    g_w = torch.autograd.grad(loss, m.weights, allow_unused=True)
    assert seen and all(seen)
    convs = [p for p, g in zip(m.weights, g_w) if p.dim() == 4]
    assert all(g is not None for p, g in zip(m.weights, g_w) if p.dim() == 4) and convs


def test_the_derived_entry_times_the_training_step_of_the_network_every_method_starts_from():
    r = bench.measure("derived", steps=1, warmup=1, saved_steps=1, **TINY)
    torch.manual_seed(0)  # as measure does: the relaxation's alphas are the first draws
    scale = {"channels": TINY["channels"], "layers": TINY["layers"]}
    cfg = resolve("max-alpha", overrides={"search": scale, "train": {**scale, "auxiliary": 0.0}})
    m = build_method(cfg, space_from_config(cfg), 3, 10, "cpu")
    assert r["genotype"] == m.genotype().to_dict()  # the kept edges of max-alpha's cells, with their ops
    assert r["phases"]["weight"]["steps"] == 1 and r["phases"]["arch"]["steps"] == 0
    assert r["phases"]["weight"]["saved_mb"] > 0 and r["saved_mb"] == r["phases"]["weight"]["saved_mb"]
    step = bench.DerivedStep(cfg, space_from_config(cfg), 3, 10, "cpu")
    before = [p.detach().clone() for p in step.weights]
    g = torch.Generator().manual_seed(0)
    step.epoch_start(0, 1)
    step.step((torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)), None)
    assert all(p.grad is not None for p in step.weights)
    assert any(not torch.equal(a, p) for a, p in zip(before, step.weights))  # an SGD step was taken


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the memory pass's allocator setting is glibc's")
def test_the_memory_pass_allocator_returns_freed_memory_at_once():
    """The premise of ``step_mb`` on CPU: under LIVE_MEMORY_ENV a freed tensor's memory leaves the RSS at once,
    so the peak RSS follows the memory in use (with glibc's defaults the heap may keep it)."""
    code = (
        "import torch, re\n"
        "rss = lambda: int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) / 1024\n"
        "xs = [torch.ones(2**20) for _ in range(64)]\n"  # 64 blocks of 4 MB, then all but the last freed
        "high = rss(); del xs[:-1]; print(high - rss())"
    )
    env = {**os.environ, **LIVE_MEMORY_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert float(out.stdout.split()[-1]) > 200  # 252 MB freed: (nearly) all of it left the process
