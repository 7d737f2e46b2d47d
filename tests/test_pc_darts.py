"""PC-DARTS (partial channels, edge normalization) and IDARTS (backtracking) on tiny models."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import FixedBatches, batch, tiny_method, write_fake_idx

from diffnas.cli import main
from diffnas.errors import ConfigError
from diffnas.spaces import CELL_TYPES
from diffnas.spaces.darts.supernet import MixedEdge, channel_shuffle

OPS = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


def unshuffle(y, groups):
    """Inverse of channel_shuffle(., groups): shuffling with C / groups groups undoes it."""
    return channel_shuffle(y, y.shape[1] // groups)


def test_channel_shuffle_order_by_hand():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert torch.equal(unshuffle(channel_shuffle(x, 4), 4), x)


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_channels_keep_shape_and_bypass_unchanged(stride):
    torch.manual_seed(0)
    C, K = 8, 4
    edge = MixedEdge(OPS, C, stride, partial_channels=K)
    # the ops are built for C/K channels
    convs = [mod for mod in edge.ops[3].modules() if isinstance(mod, torch.nn.Conv2d)]
    assert convs and all(conv.in_channels == C // K and conv.out_channels == C // K for conv in convs)
    x = torch.randn(2, C, 8, 8)
    w = torch.softmax(torch.randn(len(OPS)), 0)
    y = edge(x, w, [1, 2, 3])
    assert y.shape == (2, C, 8 // stride, 8 // stride)
    before = unshuffle(y, K)
    c = C // K
    bypass = x[:, c:] if stride == 1 else F.max_pool2d(x[:, c:], 2, 2, ceil_mode=True)
    assert torch.equal(before[:, c:], bypass)  # bypassed channels untouched
    mixed = sum(w[o] * edge.ops[o](x[:, :c]) for o in (1, 2, 3))
    assert torch.allclose(before[:, :c], mixed, atol=1e-6)
    # and the shuffle really moved channels: the output is not just the concatenation
    assert not torch.equal(y, before)


def test_pc_darts_supernet_uses_partial_channels_and_betas():
    m = tiny_method("pc-darts")
    assert m.cfg.search.batch_size == 8  # the tiny override wins over the paper's 256
    assert m.cfg.search.w_lr == 0.1 and m.cfg.search.a_lr == 6e-4 and m.cfg.search.arch_start_epoch == 15
    edges = [e for cell in m.net.cells for e in cell.edges]
    assert all(e.k == 4 for e in edges)
    # betas are architecture parameters (optimized by Adam, checkpointed with the supernet)
    ids = {id(p) for p in m.arch}
    assert all(id(m.relax.betas[t]) in ids for t in CELL_TYPES)
    assert not any(id(p) in ids for p in m.weights)
    assert {"relax.betas.normal", "relax.betas.reduce"} <= set(m.net.state_dict())
    x, y = batch()
    assert m.net(x).shape == (8, 3)
    loss = F.cross_entropy(m.net(x), y)
    g = torch.autograd.grad(loss, [m.relax.betas["normal"]])[0]
    assert g.abs().sum() > 0  # the node sums are weighted by the betas


def test_beta_softmax_is_per_node():
    m = tiny_method("pc-darts")
    relax, space = m.relax, m.space
    with torch.no_grad():
        relax.betas["normal"].copy_(torch.arange(14.0) * 0.3)
    w = relax.edge_weights("normal")
    for node in range(space.nodes):
        idx = list(space.node_edges(node))
        assert torch.allclose(w[idx], torch.softmax(torch.arange(14.0)[idx] * 0.3, 0))
        assert abs(w[idx].sum().item() - 1) < 1e-6
    # changing one beta of node 2 moves only node 2's edge weights
    with torch.no_grad():
        relax.betas["normal"][6] += 1.0
    w2 = relax.edge_weights("normal")
    changed = (w2 - w).abs() > 1e-9
    assert changed.nonzero().flatten().tolist() == list(space.node_edges(2))
    mix = relax.mixing("normal", 0)
    assert torch.equal(mix.edge_weights, w2)


def test_edge_normalization_weights_by_hand():
    """betas set to logs of hand-picked ratios: the per-node softmax gives those ratios, normalized by hand."""
    m = tiny_method("pc-darts")
    ln = math.log
    betas = [0.0, ln(3)]  # node 0 (edges 0, 1): 1 : 3
    betas += [ln(1), ln(2), ln(5)]  # node 1 (edges 2-4): 1 : 2 : 5
    betas += [ln(1), ln(1), ln(3), ln(5)]  # node 2 (edges 5-8): 1 : 1 : 3 : 5
    betas += [7.0] * 5  # node 3 (edges 9-13): equal betas, whatever their value
    with torch.no_grad():
        m.relax.betas["normal"].copy_(torch.tensor(betas))
    expected = [1 / 4, 3 / 4, 1 / 8, 2 / 8, 5 / 8, 0.1, 0.1, 0.3, 0.5, 0.2, 0.2, 0.2, 0.2, 0.2]
    assert m.relax.edge_weights("normal").tolist() == pytest.approx(expected, abs=1e-6)
    assert m.relax.mixing("normal", 0).edge_weights.tolist() == pytest.approx(expected, abs=1e-6)


def test_genotype_ranks_softmax_alpha_times_softmax_beta():
    m = tiny_method("pc-darts")
    relax, space = m.relax, m.space
    ops = space.ops["normal"]
    conv = ops.index("sep_conv_3x3")
    with torch.no_grad():
        for t in CELL_TYPES:
            relax.alphas[t].zero_()
            relax.betas[t].zero_()
        # node 1 (edges 2, 3, 4): edge 2 has the strongest op, but beta prefers edges 3 and 4
        relax.alphas["normal"][2, conv] = 2.0
        relax.alphas["normal"][3, conv] = 1.0
        relax.alphas["normal"][4, conv] = 1.0
        relax.betas["normal"][2] = -3.0
    gw = relax.genotype_weights()["normal"]
    expected = torch.softmax(relax.alphas["normal"], -1) * relax.edge_weights("normal")[:, None]
    assert torch.allclose(gw, expected)
    node1 = m.genotype().edges("normal", 1)
    assert sorted(j for _, j in node1) == [1, 2]  # edges 3 and 4 read inputs 1 and 2
    # without beta the alpha ranking alone would keep edge 2 (input 0)
    with torch.no_grad():
        relax.betas["normal"].zero_()
    assert 0 in [j for _, j in m.genotype().edges("normal", 1)]


def idarts(**search):
    base = {"arch_start_epoch": 0, "idarts_start_epoch": 1, "idarts_lambda": 3 / 14}
    return tiny_method("idarts", search={"channels": 4, "layers": 3, **base, **search})


def test_zeta_schedule_eq14():
    m = tiny_method("idarts", search={"epochs": 50})
    assert [m.zeta(k) for k in (0, 24, 25, 29, 30, 49)] == [0, 0, 0, 0, 1, 5]
    assert m.zeta(120) == 14  # floor(95 * 0.015 * 14) = 19, clamped to the 14 edges
    printed = tiny_method("idarts", search={"epochs": 50, "idarts_zeta": "printed"})
    assert [printed.zeta(k) for k in (24, 25, 49)] == [0, 5, 5]  # floor((50 - 25) * 0.015 * 14)


def test_rank_direction():
    m = idarts()
    beta = torch.tensor([0.5, -0.1, 0.3, 0.05, -0.9, 0.2])
    assert m.edges_below(beta, 2) == [1, 3]  # smallest |beta|
    m2 = idarts(idarts_rank="largest")
    assert m2.edges_below(beta, 2) == [0, 4]
    assert m.edges_below(beta, 0) == []


@pytest.mark.parametrize(
    "gamma,fd,grad",
    [
        ("eq6", "elementwise", "raw"),
        ("plain", "elementwise", "raw"),
        ("eq6", "secant", "raw"),
        ("eq6", "elementwise", "step"),
    ],
)
def test_backtracking_changes_only_low_rank_edges_by_the_formula(gamma, fd, grad):
    eta2 = 50.0  # large, so the correction stands far above float32 noise
    m = idarts(idarts_eta2=eta2, idarts_gamma=gamma, idarts_fd=fd, idarts_grad=grad)
    with torch.no_grad():  # hand-made alphas of order 1, so the alpha^t factor of `plain` is not tiny
        for t in CELL_TYPES:
            m.relax.alphas[t].copy_(torch.randn(m.relax.alphas[t].shape, generator=torch.Generator().manual_seed(7)))
    m.epoch_start(2, 10)
    zeta = m.zeta()
    assert zeta == 3  # floor((K - T) * lambda * L) = floor(1 * 3/14 * 14)
    val = batch(seed=5)
    reference = copy.deepcopy(m)  # same weights, alphas, Adam state: the plain PC-DARTS step
    a_t = {t: m.relax.alphas[t].detach().clone() for t in CELL_TYPES}
    b_t = {t: m.relax.betas[t].detach().clone() for t in CELL_TYPES}
    loss, _ = m.loss(val)
    g_beta = dict(zip(CELL_TYPES, torch.autograd.grad(loss, [m.relax.betas[t] for t in CELL_TYPES])))
    reference.first_order_arch_step(val)
    rec = m.arch_step(val, None)
    eta = m.cfg.search.a_lr * eta2
    for t in CELL_TYPES:
        a1, b1 = reference.relax.alphas[t].detach(), reference.relax.betas[t].detach()
        assert torch.allclose(m.relax.betas[t].detach(), b1)  # beta is not backtracked
        edges = sorted(torch.argsort(b1.abs())[:zeta].tolist())
        assert rec["backtracked"][t] == edges
        d_a, d_b = a1 - a_t[t], (b1 - b_t[t])[:, None]
        if fd == "elementwise":
            dbda = d_b / d_a
        else:
            dbda = d_b * d_a / (d_a**2).sum(1, keepdim=True)
            assert torch.allclose((dbda * d_a).sum(1, keepdim=True), d_b, rtol=1e-4, atol=1e-12)
        g = g_beta[t] if grad == "raw" else (b_t[t] - b1) / m.cfg.search.a_lr
        gamma_t = (g[:, None] / a_t[t]) * dbda if gamma == "eq6" else g[:, None] * dbda
        expected = a1 + eta * gamma_t * a_t[t]  # eq. (12): alpha^{t+1} + eta1 eta2 gamma (.) alpha^t
        got = m.relax.alphas[t].detach()
        others = [e for e in range(14) if e not in edges]
        assert torch.equal(got[others], a1[others])  # only the edges below zeta move
        assert torch.allclose(got[edges], expected[edges], rtol=1e-4, atol=1e-9)
        moved = (got[edges] - a1[edges]).abs().max()
        assert moved > 1e-6  # the backtracking is measurable here (the test can fail)


def test_idarts_equals_pc_darts_before_T():
    a = idarts(idarts_start_epoch=5)
    torch.manual_seed(0)
    b = tiny_method("pc-darts", search={"arch_start_epoch": 0})
    assert all(torch.equal(x, y) for x, y in zip(a.arch, b.arch))
    for m in (a, b):
        m.epoch_start(1, 4)
        for _ in range(2):
            m.step(batch(), FixedBatches(batch(seed=1)))
    assert all(torch.equal(x, y) for x, y in zip(a.arch, b.arch))
    assert a.epoch_record()["backtracked_edges"] == {"normal": [], "reduce": []}


def test_bad_choice_is_a_config_error():
    with pytest.raises(ConfigError):
        idarts(idarts_rank="middle")
    with pytest.raises(ConfigError):
        tiny_method("idarts", search={"relaxation": "softmax"})
    with pytest.raises(ConfigError):
        tiny_method("pc-darts", search={"pc_k": 3})  # 4 channels are not divisible by 3
    assert all(e.k == 2 for c in tiny_method("pc-darts", search={"pc_k": 2}).net.cells for e in c.edges)


def test_search_logs_backtracked_edges_per_epoch(tmp_path):
    data = write_fake_idx(tmp_path / "data")
    out = tmp_path / "run"
    args = ["search", "--method", "idarts", "--data-dir", str(data), "--out", str(out), "--no-progress"]
    args += ["--epochs", "3", "--channels", "4", "--layers", "3", "--batch-size", "16"]
    args += ["--set", "search.arch_start_epoch=1", "--set", "search.idarts_start_epoch=1"]
    args += ["--set", "search.idarts_lambda=0.1"]
    assert main(args) == 0
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["zeta"] for r in metrics] == [0, 0, 1]  # floor((K - 1) * 0.1 * 14)
    assert metrics[0]["backtracked_edges"] == {"normal": [], "reduce": []}
    last = metrics[2]
    assert all(len(last["backtracked_edges"][t]) >= 1 for t in CELL_TYPES)
    assert all(sum(last["backtrack_counts"][t]) == 3 for t in CELL_TYPES)  # 48 images / 16: 3 steps
    assert len(last["alphas"]["normal"]) == 14 and len(last["betas"]["normal"]) == 14
    steps = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    assert "backtracked" in steps[-1] and "backtracked" not in steps[0]
