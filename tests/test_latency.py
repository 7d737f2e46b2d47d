"""The latency regularizer of RARTS eq. (5)/(8): the table's shapes, the penalty and its gradient, the cache."""

import math

import pytest
import torch
from helpers import FixedBatches, batch, tiny_method

from diffnas.errors import ConfigError
from diffnas.regularizers.latency import Latency, time_op


def fake_timer(name, c, h, w, stride, batch, device, repeats, warmup):
    """A made-up, shape-dependent latency: distinct for every (op, shape)."""
    return len(name) + 0.01 * c + 0.1 * h + 0.001 * w + 10.0 * stride


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFNAS_CACHE", str(tmp_path))
    monkeypatch.setattr(Latency, "timer", staticmethod(fake_timer))


@pytest.mark.parametrize("size", [8, 7])
def test_edge_shapes_are_the_shapes_the_ops_see(size):
    m = tiny_method("darts")
    seen = {}

    def hook(mod, args):
        seen[id(mod)] = tuple(args[0].shape[1:])

    handles = [e.register_forward_pre_hook(hook) for cell in m.net.cells for e in cell.edges]
    m.net(torch.randn(2, 1, size, size))
    for h in handles:
        h.remove()
    shapes = m.net.edge_shapes((1, size, size))
    for cell, (cell_type, edges) in zip(m.net.cells, shapes):
        assert cell_type == cell.cell_type
        for edge, (c, h, w, stride) in zip(cell.edges, edges):
            assert seen[id(edge)] == (c, h, w) and edge.stride == stride


def test_table_sums_each_op_over_the_cells_of_a_type(fake):
    m = tiny_method("darts")  # 3 cells: normal C=4 at 8x8, reduce C=8 at 8x8, reduce C=16 at 4x4
    m.input_shape = tuple(batch()[0].shape[1:])  # what the step frame records from its first batch
    reg = Latency(1.0, m.space)
    table = reg.ensure_table(m)
    ops = m.space.ops
    inputs = [j for _, j in m.space.edge_inputs()]
    for o, name in enumerate(ops["normal"]):
        want = 0.0 if name == "none" else fake_timer(name, 4, 8, 8, 1, 1, None, 0, 0)
        assert torch.allclose(table["normal"][:, o], torch.full((14,), want))
    for e, j in enumerate(inputs):
        for o, name in enumerate(ops["reduce"]):
            if name == "none":
                want = 0.0
            elif j < 2:
                want = fake_timer(name, 8, 8, 8, 2, 1, 0, 0, 0) + fake_timer(name, 16, 4, 4, 2, 1, 0, 0, 0)
            else:
                want = fake_timer(name, 8, 4, 4, 1, 1, 0, 0, 0) + fake_timer(name, 16, 2, 2, 1, 1, 0, 0, 0)
            assert math.isclose(table["reduce"][e, o].item(), want, rel_tol=1e-6), (e, name)


def test_penalty_and_its_gradient_follow_the_softmax_jacobian(fake):
    m = tiny_method("darts")
    m.input_shape = tuple(batch()[0].shape[1:])  # what the step frame records from its first batch
    with torch.no_grad():
        for a in m.arch:
            a.copy_(torch.randn_like(a))
    reg = Latency(0.3, m.space)
    pen = reg.penalty(m)
    table = reg.table
    p = {t: torch.softmax(m.relax.alphas[t].detach(), -1) for t in ("normal", "reduce")}
    assert math.isclose(pen.item(), 0.3 * sum((p[t] * table[t]).sum().item() for t in p), rel_tol=1e-5)
    grads = torch.autograd.grad(pen, [m.relax.alphas["normal"], m.relax.alphas["reduce"]])
    for t, g in zip(("normal", "reduce"), grads):
        mean = (p[t] * table[t]).sum(-1, keepdim=True)
        assert torch.allclose(g, 0.3 * p[t] * (table[t] - mean), atol=1e-6)  # (diag(p) - p p^T) Lat
        # the cheapest op of an edge gains weight, the dearest loses it
        assert (g.gather(1, table[t].argmin(1, keepdim=True)) <= 0).all()


def test_table_is_cached_per_machine_and_measured_once(fake, tmp_path):
    m = tiny_method("darts")
    m.input_shape = tuple(batch()[0].shape[1:])  # what the step frame records from its first batch
    first = Latency(1.0, m.space)
    first.ensure_table(m)
    assert first.measured > 0 and list(tmp_path.glob("latency-*.json"))
    second = Latency({"weight": 1.0}, m.space)
    second.ensure_table(m)
    assert second.measured == 0
    assert all(torch.equal(first.table[t], second.table[t]) for t in first.table)
    other_batch = Latency({"weight": 1.0, "batch": 4}, m.space)  # another key: measured again
    other_batch.ensure_table(m)
    assert other_batch.measured > 0 and len(list(tmp_path.glob("latency-*.json"))) == 2
    # a resumed regularizer keeps its table without measuring
    third = Latency(1.0, m.space)
    third.load_state_dict(first.state_dict())
    third.ensure_table(m)
    assert third.measured == 0


def test_latency_gradient_reaches_rarts_alpha_step(fake):
    kw = {"search": {"grad_clip": 0.0}}
    plain = tiny_method("rarts", seed=3, **kw)
    lat = tiny_method("rarts", seed=3, reg={"latency": 0.05}, **kw)
    assert all(torch.equal(a, b) for a, b in zip(plain.arch, lat.arch))
    a0 = [a.detach().clone().requires_grad_(True) for a in lat.arch]
    for m in (plain, lat):
        m.epoch_start(0, 4)
        m.step(batch(seed=1), FixedBatches(batch(seed=2)))
    reg = lat.regularizers[0]
    # the penalty's gradient at the alphas the step started from
    p = {t: torch.softmax(a, -1) for t, a in zip(("normal", "reduce"), a0)}
    pen = 0.05 * sum((p[t] * reg.table[t]).sum() for t in p)
    g = torch.autograd.grad(pen, a0)
    # the installed gradients differ by exactly the penalty's
    for gp, gl, gi in zip(plain.arch, lat.arch, g):
        assert torch.allclose(gl.grad - gp.grad, gi, atol=1e-5)


def test_options_and_real_timer():
    from diffnas.spaces import get_space

    space = get_space("darts", 4)
    with pytest.raises(ConfigError):
        Latency({"weight": 1.0, "bogus": 2}, space)
    with pytest.raises(ConfigError):
        Latency("fast", space)
    assert Latency(True, space).weight == 0.002 and Latency(0.5, space).weight == 0.5
    t = time_op("sep_conv_3x3", 4, 8, 8, 1, batch=1, repeats=3, warmup=1)
    assert 0.0 < t < 1e4 and time_op("none", 4, 8, 8, 1) == 0.0
