"""NASP: prox operators, the discrete forward, the gradient at the discrete point, the size regularizer."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import FixedBatches, batch, tiny_method, write_fake_idx

from diffnas.cli import main
from diffnas.relax.base import Mixing
from diffnas.relax.proximal import DiscreteRelaxation
from diffnas.spaces import DerivedNetwork, Genotype, get_space
from diffnas.spaces.darts.genotype import genotype_from_masks

SMALL = get_space("darts-nonone", 2)  # 2 nodes: edges 0-1 enter node 0, edges 2-4 enter node 1


def test_prox_c1_on_a_hand_made_matrix():
    relax = DiscreteRelaxation(SMALL, seed=0)
    a = torch.tensor(
        [
            [0.1, 0.9, 0.2, 0.0, 0.0, 0.0, 0.0],  # node 0: best op 1 (0.9)
            [0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.4],  # node 0: best op 6 (0.4)
            [0.0, 0.0, 0.0, 0.8, 0.7, 0.0, 0.0],  # node 1: best op 3 (0.8), kept
            [0.6, 0.0, 0.0, 0.0, 0.0, 0.65, 0.0],  # node 1: best op 5 (0.65), dropped (lowest of the three)
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.75],  # node 1: op 6 (0.75), kept
        ]
    )
    m = relax.prox_c1(a, "normal")
    expected = torch.zeros_like(a)
    for e, o in ((0, 1), (1, 6), (2, 3), (4, 6)):
        expected[e, o] = 1.0
    assert torch.equal(m, expected)
    # exactly one op per kept edge, two kept edges per node
    assert m.sum(1).tolist() == [1, 1, 1, 0, 1]
    assert [int(m[list(SMALL.node_edges(n))].sum()) for n in range(SMALL.nodes)] == [2, 2]


def test_ties_break_randomly_with_the_seed_and_stay_fixed():
    space = get_space("darts-nonone")
    masks = {}
    for seed in range(6):
        relax = DiscreteRelaxation(space, seed=seed)
        assert torch.all(relax.alphas["normal"] == 0.5)
        m = relax.mask("normal")
        assert m.sum(1).max() == 1 and all(m[list(space.node_edges(n))].sum() == 2 for n in range(space.nodes))
        # the same order at every call: the discretization is a function of the alphas
        assert torch.equal(relax.prox_c1(relax.alphas["normal"], "normal"), m)
        assert torch.equal(DiscreteRelaxation(space, seed=seed).mask("normal"), m)
        masks[seed] = m
    chosen_ops = Counter(int(o) for m in masks.values() for o in torch.nonzero(m)[:, 1])
    assert len(chosen_ops) >= 4, chosen_ops  # not always the first op
    assert not all(torch.equal(masks[0], m) for m in masks.values())  # the seed decides
    # the first edges of node 3 are not always the ones kept
    kept = {tuple(torch.nonzero(m[list(space.node_edges(3))].sum(1)).flatten().tolist()) for m in masks.values()}
    assert len(kept) > 1


def test_prox_c2_clips_and_the_baselines_project_differently():
    def projected(update):
        m = tiny_method("nasp", space="darts-nonone", search={"nasp_update": update, "nodes": 2})
        with torch.no_grad():
            m.relax.alphas["normal"].copy_(
                torch.tensor(
                    [
                        [-0.3, 1.4, 0.2, 0.5, 0.0, 0.0, 0.0],
                        [0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.4],
                        [0.0, 0.0, 0.0, 0.8, 0.7, 0.0, 0.0],
                        [0.6, 0.0, 0.0, 0.0, 0.0, 0.65, 0.0],
                        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.75],
                    ]
                )
            )
        before = m.relax.alphas["normal"].detach().clone()
        m.project()
        return before, m.relax.alphas["normal"].detach()

    before, nasp = projected("nasp")
    assert torch.equal(nasp, before.clamp(0, 1))  # prox_C2: elementwise clip to [0, 1]
    before, lazy = projected("lazy")
    assert torch.equal(lazy, before)  # eq. 11 keeps the unconstrained alphas
    before, prox = projected("proximal")  # eq. 10: prox_C1(prox_C2(.)), values kept
    expected = torch.zeros_like(before)
    for e, o, v in ((0, 1, 1.0), (1, 6, 0.4), (2, 3, 0.8), (4, 6, 0.75)):
        expected[e, o] = v
    assert torch.equal(prox, expected)


def count_op_calls(m):
    """Forward hooks on every candidate op of the supernet: (cell, edge, op) -> calls."""
    calls = Counter()
    for c, cell in enumerate(m.net.cells):
        for e, edge in enumerate(cell.edges):
            for o, op in enumerate(edge.ops):
                op.register_forward_hook(lambda mod, inp, out, key=(c, e, o): calls.update([key]))
    return calls


@pytest.mark.parametrize("space", ["darts-nonone", "nasp12"])
def test_weight_step_runs_only_the_selected_ops(space):
    m = tiny_method("nasp", space=space)
    m.epoch_start(0, 10)
    calls = count_op_calls(m)
    before = {t: m.relax.mask(t).clone() for t in ("normal", "reduce")}
    rec = m.step(batch(), FixedBatches(batch(seed=1)))  # an architecture step, then a weight step
    changed = sum(int((m.relax.mask(t) != before[t]).any(1).sum()) for t in before)
    assert rec["changed_edges"] == changed
    arch_calls = Counter()
    # the architecture step computes every op once (the authors' code), the weight step only the selected ones
    selected = {
        (c, e, o)
        for c, cell in enumerate(m.net.cells)
        for e, ops in enumerate(m.relax.selected_ops(cell.cell_type))
        for o in ops
    }
    for c, cell in enumerate(m.net.cells):
        for e in range(m.space.num_edges):
            for o in range(len(m.space.ops[cell.cell_type])):
                arch_calls[(c, e, o)] = 1 + ((c, e, o) in selected)
    assert calls == arch_calls
    # a weight step alone: exactly the selected op of each kept edge, once
    calls.clear()
    alphas = [a.detach().clone() for a in m.arch]
    m.weight_step(batch(seed=5))
    assert set(calls) == selected and set(calls.values()) == {1}
    assert len(selected) == len(m.net.cells) * m.space.nodes * 2
    assert all(torch.equal(a, b) for a, b in zip(alphas, m.arch))  # the weight step leaves A alone
    # with nasp_arch_ops: selected, the architecture step runs only the selected ops too
    m2 = tiny_method("nasp", space=space, search={"nasp_arch_ops": "selected"})
    m2.epoch_start(0, 10)
    calls2 = count_op_calls(m2)
    with m2.relax.computing("arch_selected"):
        m2.loss(batch(seed=1))
    sel2 = {
        (c, e, o)
        for c, cell in enumerate(m2.net.cells)
        for e, ops in enumerate(m2.relax.selected_ops(cell.cell_type))
        for o in ops
    }
    assert set(calls2) == sel2


def discrete_point_grads(m, val_batch):
    """Autograd's gradient of L_val at the discrete architecture, with A_bar as the leaf (all ops run)."""
    abar = {t: m.relax.mask(t).detach().clone().requires_grad_(True) for t in ("normal", "reduce")}
    all_ops = {t: [list(range(len(m.space.ops[t])))] * m.space.num_edges for t in abar}
    original = m.relax.mixing
    m.relax.mixing = lambda t, i: Mixing(abar[t], all_ops[t])
    try:
        loss = F.cross_entropy(m.net(val_batch[0]), val_batch[1])
        return loss, torch.autograd.grad(loss, [abar["normal"], abar["reduce"]])
    finally:
        m.relax.mixing = original


def test_arch_gradient_is_autograds_at_the_discrete_point_applied_to_the_continuous_alphas():
    torch.set_default_dtype(torch.float64)
    try:
        m = tiny_method("nasp", space="nasp12")
        m.net.double()
        m.epoch_start(0, 10)
        m.weight_step(batch(seed=2, dtype=torch.float64))
        with torch.no_grad():  # a continuous A that is not itself discrete
            for a in m.arch:
                a.copy_(torch.rand(a.shape, generator=torch.Generator().manual_seed(7), dtype=a.dtype))
        val = batch(seed=3, dtype=torch.float64)
        m.net.eval()  # BN with running statistics: the loss is a fixed function of the architecture
        loss_ref, expected = discrete_point_grads(m, val)

        captured = {}
        m.arch_step_with = lambda grads: captured.setdefault("g", grads)
        m.arch_step(val)
        for g, e in zip(captured["g"], expected):
            assert torch.allclose(g, e, rtol=1e-10, atol=1e-12)
        # every entry has a gradient (all ops computed), dropped edges included
        assert (captured["g"][0].abs() > 0).float().mean() > 0.9

        # finite differences of L_val in A_bar on a few entries (selected and not)
        abar = m.relax.mask("normal").clone()
        mixing = m.relax.mixing
        for e, o in [(0, 0), (3, 5), tuple(torch.nonzero(abar)[0].tolist())]:
            vals = []
            for h in (1e-5, -1e-5):
                pt = abar.clone()
                pt[e, o] += h
                m.relax.mixing = lambda t, i, pt=pt: (
                    Mixing(pt, [list(range(8))] * 14)
                    if t == "normal"
                    else Mixing(m.relax.mask("reduce"), [list(range(5))] * 14)
                )
                with torch.no_grad():
                    vals.append(F.cross_entropy(m.net(val[0]), val[1]).item())
            m.relax.mixing = mixing
            fd = (vals[0] - vals[1]) / 2e-5
            assert abs(fd - expected[0][e, o].item()) < 1e-6 * max(1.0, abs(fd))

        # and it is not the gradient at the continuous point (the test can fail)
        cont = {t: m.relax.alphas[t].detach().clone().requires_grad_(True) for t in ("normal", "reduce")}
        m.relax.mixing = lambda t, i: Mixing(cont[t], [list(range(len(m.space.ops[t])))] * 14)
        loss_c = F.cross_entropy(m.net(val[0]), val[1])
        g_cont = torch.autograd.grad(loss_c, cont["normal"])[0]
        assert not torch.allclose(g_cont, expected[0], rtol=1e-2)
    finally:
        torch.set_default_dtype(torch.float32)


def test_nasp_step_is_adam_on_the_discrete_gradient_then_clip():
    m = tiny_method("nasp", space="darts-nonone")
    m.epoch_start(0, 10)
    with torch.no_grad():
        m.relax.alphas["normal"][0, 0] = 1.0  # at the upper bound: a clip can be seen
    val = batch(seed=1)
    before = [a.detach().clone() for a in m.arch]
    m.net.eval()
    _, g = discrete_point_grads(m, val)
    m.arch_step(val)
    s = m.cfg.search
    for a0, a1, gi in zip(before, m.arch, g):
        gi = gi + s.a_wd * a0
        expected = (a0 - s.a_lr * gi / (gi.abs() + 1e-8)).clamp(0, 1)
        assert torch.allclose(a1.detach(), expected, atol=1e-6)
    assert m.arch[0].max() <= 1.0 and m.arch[0].min() >= 0.0


def test_proximal_baseline_keeps_alphas_on_the_constraint_set_and_lazy_leaves_the_box():
    m = tiny_method("nasp", space="darts-nonone", search={"nasp_update": "proximal"})
    m.epoch_start(0, 10)
    for i in range(3):
        m.step(batch(seed=i), FixedBatches(batch(seed=10 + i)))
        for t, a in m.relax.alphas.items():
            nz = (a.detach() != 0).float()
            assert nz.sum(1).max() <= 1 and a.min() >= 0 and a.max() <= 1
            assert all(nz[list(m.space.node_edges(n))].sum() == 2 for n in range(m.space.nodes))
            assert torch.equal(nz, m.relax.mask(t))

    lazy = tiny_method("nasp", space="darts-nonone", search={"nasp_update": "lazy"})
    lazy.epoch_start(0, 10)
    with torch.no_grad():
        lazy.relax.alphas["normal"].fill_(1.3)
    lazy.step(batch(), FixedBatches(batch(seed=1)))
    assert lazy.relax.alphas["normal"].min() > 1.0  # no clip


def test_size_regularizer_matches_eq8_at_the_discrete_point():
    m = tiny_method("nasp", space="nasp12", reg={"size": 0.5})
    (reg,) = m.regularizers
    C = m.cfg.search.channels
    ops = m.space.ops["normal"]
    p = torch.tensor([float(sum(q.numel() for q in m.net.cells[0].edges[0].ops[k].parameters())) for k in range(8)])
    assert p[ops.index("skip_connect")] == 0 and p[ops.index("conv_1x1")] == C * C
    assert torch.allclose(reg.costs("normal", C), p / p.sum())
    abar = m.relax.mask("normal")
    expected = 0.5 * ((p / p.sum()) * (abar * abar).sum(0)).sum()
    pen = m.regularization()
    assert torch.allclose(pen, expected)
    g = torch.autograd.grad(pen, m.arch, allow_unused=True)
    assert torch.allclose(g[0], 2 * 0.5 * (p / p.sum()) * abar)  # only the selected entries, 2 eta p_k / p_bar
    assert g[1] is None  # normal cells only by default
    both = tiny_method("nasp", space="darts-nonone", reg={"size": {"weight": 1.0, "cells": ["normal", "reduce"]}})
    gb = torch.autograd.grad(both.regularization(), both.arch)
    assert gb[1].abs().sum() > 0
    # under DARTS the regularizer reads softmax(alpha)
    d = tiny_method("darts", space="nasp12", reg={"size": 2.0})
    w = F.softmax(d.relax.alphas["normal"], -1)
    pd = torch.tensor([float(sum(q.numel() for q in d.net.cells[0].edges[0].ops[k].parameters())) for k in range(8)])
    assert torch.allclose(d.regularization(), 2.0 * ((pd / pd.sum()) * (w * w).sum(0)).sum())


def test_strong_size_penalty_moves_normal_cells_to_cheap_ops():
    m = tiny_method("nasp", space="nasp12", reg={"size": 100.0}, search={"a_lr": 0.05})
    m.epoch_start(0, 100)
    cost = m.regularizers[0].costs("normal", m.cfg.search.channels)

    def size():
        return float((m.relax.mask("normal") * cost).sum())

    start = size()
    for i in range(15):
        m.arch_step(batch(seed=i))
    assert size() < 0.5 * start


def test_genotype_uses_the_search_rule_and_nasp12_derives(tmp_path):
    m = tiny_method("nasp", space="nasp12", seed=3)
    g = m.genotype()
    assert g == genotype_from_masks(m.space, {t: m.relax.mask(t) for t in ("normal", "reduce")})
    assert {op for op, _ in g.cells["reduce"]} <= set(m.space.ops["reduce"])
    assert {op for op, _ in g.cells["normal"]} <= set(m.space.ops["normal"])
    # the discrete architecture the supernet evaluates is the genotype
    for t in ("normal", "reduce"):
        for node in range(m.space.nodes):
            pairs = [
                (m.space.ops[t][o], e - m.space.node_edges(node).start)
                for e in m.space.node_edges(node)
                for o in m.relax.selected_ops(t)[e]
            ]
            assert pairs == g.edges(t, node)
    g.save(tmp_path / "g.json")
    g2 = Genotype.load(tmp_path / "g.json")
    assert g2 == g
    net = DerivedNetwork(g2, channels=4, layers=3, num_classes=3, in_channels=1)
    assert net(batch()[0]).shape == (8, 3)


def test_resume_restores_the_discrete_architecture():
    m = tiny_method("nasp", space="nasp12", seed=1)
    m.epoch_start(0, 10)
    for i in range(2):
        m.step(batch(seed=i), FixedBatches(batch(seed=5 + i)))
    state = m.state_dict()
    fresh = tiny_method("nasp", space="nasp12", seed=1)
    fresh.load_state_dict(state)
    for t in ("normal", "reduce"):
        assert torch.equal(fresh.relax.mask(t), m.relax.mask(t))
    assert fresh.genotype() == m.genotype()


def test_cli_nasp12_search_and_show(tmp_path):
    data = write_fake_idx(tmp_path / "data")
    out = tmp_path / "run"
    args = ["search", "--method", "nasp", "--space", "nasp12", "--data-dir", str(data), "--out", str(out)]
    args += ["--epochs", "1", "--channels", "4", "--layers", "3", "--batch-size", "16", "--no-progress"]
    assert main([*args, "--reg", "size=0.1"]) == 0
    metrics = [json.loads(x) for x in Path(out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics[0]["arch_weights"]["normal"][0]) == 8 and len(metrics[0]["arch_weights"]["reduce"][0]) == 5
    g = Genotype.load(out)
    assert g.space == "nasp12"
    assert main(["show", str(out)]) == 0
    bad = [a if a != str(out) else str(tmp_path / "bad") for a in args]
    assert main([*bad, "--set", "search.nasp_update=nope"]) == 2
