"""DARTS-PRIME's parts: FIMT schedule, proximity regularization, CRB activation, ADMM, and the method."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from helpers import FixedBatches, batch, count_forward_calls, tiny_method, write_fake_idx

import diffnas
from diffnas.cli import _overrides, build_parser
from diffnas.errors import ConfigError
from diffnas.schedules import build_schedule
from diffnas.schedules.fimt import FIMT
from diffnas.spaces import CELL_TYPES
from diffnas.spaces.darts.genotype import discrete_mask
from diffnas.spaces.darts.ops import SepConv


class CountingBatches(FixedBatches):
    def __init__(self, b):
        super().__init__(b)
        self.calls = 0

    def next(self):
        self.calls += 1
        return self.b


# -- FIMT schedule --------------------------------------------------------------------------


def simulate(schedule, fisher, steps):
    """Drive the schedule as a method does: decide, (weight step) observe F."""
    m = SimpleNamespace(epoch=0)
    due = []
    for n in range(steps):
        due.append(schedule.arch_step_due(m))
        if hasattr(schedule, "observe"):
            schedule.observe(fisher(n) if callable(fisher) else fisher)
    return due


@pytest.mark.parametrize("r,fisher", [(10, 1.0), (10, 37.5), (10, 1e-3), (4, 250.0), (2.5, 3.0)])
def test_fimt_step_ratio_converges_to_r_under_constant_fisher(r, fisher):
    s = build_schedule(f"fimt:{r}")
    assert s.hd == pytest.approx(math.exp(-r * math.log(1.05)))
    due = simulate(s, fisher, 6000)
    tail = due[3000:]  # after the threshold has travelled to F
    arch = sum(tail)
    # r weight steps without an architecture step per weight step with one
    assert (len(tail) - arch) / arch == pytest.approx(r, rel=0.01)
    # and the threshold oscillates around F, within one cycle's factor
    assert s.hd <= s.h / fisher <= 1.05 ** math.ceil(r) / s.hd


def test_fimt_ewma_threshold_and_records():
    s = FIMT(r=10, h0=1.0, hi=1.05, lam=0.2)
    m = SimpleNamespace(epoch=0)
    assert s.arch_step_due(m) is False and s.h == 1.0  # no F yet: no decision, h untouched
    values = [5.0, 0.1, 0.1, 0.1, 0.1]
    expect_ewma, h = None, 1.0
    for f in values:
        s.observe(f)
        expect_ewma = f if expect_ewma is None else 0.2 * f + 0.8 * expect_ewma
        assert s.ewma == pytest.approx(expect_ewma)
        due = s.arch_step_due(m)
        rec = s.record()
        assert rec["fimt"] == pytest.approx(expect_ewma) and rec["fimt_threshold"] == pytest.approx(h)
        assert due == rec["arch_step"] == (expect_ewma < h)
        h = h * (math.exp(-10 * math.log(1.05)) if due else 1.05)
        assert s.h == pytest.approx(h)
    with pytest.raises(ConfigError):
        build_schedule("fimt:x=1")
    t = build_schedule("fimt:r=4,h0=2,hi=1.1,lambda=0.5")
    assert (t.r, t.h, t.hi, t.lam) == (4.0, 2.0, 1.1, 0.5)


def test_fimt_reads_the_unclipped_fisher_trace_of_the_weights():
    m = tiny_method("darts", search={"schedule": "fimt", "grad_clip": 1e-3})
    m.epoch_start(0, 10)
    b = batch()
    loss, _ = m.loss(b)
    grads = torch.autograd.grad(loss, m.weights, allow_unused=True)
    expected = sum(float((g**2).sum()) for g in grads if g is not None)
    m.step(b, FixedBatches(batch(seed=1)))
    assert m.schedule.fisher == pytest.approx(expected, rel=1e-4)
    assert expected > 1e-6  # the clip (norm 1e-3) really changed the installed gradients
    clipped = sum(float((p.grad**2).sum()) for p in m.weights if p.grad is not None)
    assert clipped == pytest.approx(1e-6, rel=1e-3)
    # without clipping the gradients are read directly
    m2 = tiny_method("darts", search={"schedule": "fimt", "grad_clip": 0})
    m2.epoch_start(0, 10)
    m2.step(b, FixedBatches(batch(seed=1)))
    assert m2.schedule.fisher == pytest.approx(expected, rel=1e-4)


def test_fimt_reads_the_unclipped_weight_gradient_under_other_methods():
    """The pre-clip norm is kept by the one weight update every method uses: FIMT composes with any."""
    b, v = batch(), FixedBatches(batch(seed=1))
    m = tiny_method("rarts", search={"schedule": "fimt", "grad_clip": 1e-3})
    m.epoch_start(0, 10)
    loss, _ = m.loss(b, m.net)  # y starts as a copy of w, so w's first gradient is lambda * grad L_t
    grads = torch.autograd.grad(loss, m.weights, allow_unused=True)
    expected = sum(float((g**2).sum()) for g in grads if g is not None)
    m.step(b, v)
    assert m.schedule.fisher == pytest.approx(expected, rel=1e-4)
    for name in ("darts-cd", "nasp"):
        m = tiny_method(
            name, space="darts-nonone" if name == "nasp" else "darts", search={"schedule": "fimt", "grad_clip": 1e-3}
        )
        m.epoch_start(0, 10)
        m.step(b, v)
        assert m.schedule.fisher == pytest.approx(float(m.last_grad_norm) ** 2, rel=1e-5)
        assert m.schedule.fisher > 1e-4  # the unclipped value, not the clipped 1e-6


def test_fimt_draws_val_batches_only_when_triggered():
    m = tiny_method("darts", search={"schedule": "fimt:r=2,h0=1e9"})  # huge threshold: step, then adapt
    m.epoch_start(0, 8)
    val = CountingBatches(batch(seed=1))
    recs = [m.step(batch(seed=i), val) for i in range(8)]
    flags = [r["arch_step"] for r in recs]
    assert flags[0] is False and flags[1] is True  # the first decision needs one weight step's F
    assert val.calls == sum(flags) == m.arch_steps
    assert all(("arch_loss" in r) == r["arch_step"] for r in recs)
    assert all(r["arch_step"] == (r["fimt"] is not None and r["fimt"] < r["fimt_threshold"]) for r in recs)


def test_cs10_is_exactly_ten_weight_steps_per_arch_step():
    s = build_schedule("every:10")
    due = simulate(s, 1.0, 100)
    assert sum(due) == 10 and all(due[i] == (i % 10 == 0) for i in range(100))


# -- proximity regularization ---------------------------------------------------------------


def test_proximity_is_zero_at_a_discrete_alpha():
    m = tiny_method("darts", search={"relaxation": "crb"}, reg={"proximity": 0.1})
    m.epoch_start(1, 10)  # progress 0.5
    with torch.no_grad():
        for t in CELL_TYPES:
            a = m.relax.alphas[t]
            a.copy_(discrete_mask(m.space, t, torch.rand_like(a)))
    pen = m.regularization()
    assert float(pen.detach()) == 0.0
    g = torch.autograd.grad(pen, m.arch, allow_unused=True)
    assert all(x is None or (torch.isfinite(x).all() and x.abs().max() == 0) for x in g)


def test_proximity_value_and_gradient_point_toward_the_projection():
    m = tiny_method("darts", search={"relaxation": "crb"}, reg={"proximity": 0.1})
    m.epoch_start(1, 10)
    m.step_in_epoch = 5  # progress = (1 + 0.5) / 2
    c = m.progress
    assert c == pytest.approx(0.75)
    torch.manual_seed(3)
    with torch.no_grad():
        for t in CELL_TYPES:
            m.relax.alphas[t].copy_(0.1 + 0.8 * torch.rand_like(m.relax.alphas[t]))  # clamp is the identity here
    pen = m.regularization()
    acts = {t: m.relax.weights(t).detach() for t in CELL_TYPES}
    masks = {t: discrete_mask(m.space, t, acts[t]) for t in CELL_TYPES}
    dist = {t: torch.linalg.vector_norm(acts[t] - masks[t]) for t in CELL_TYPES}
    assert float(pen.detach()) == pytest.approx(c * 0.1 / 2 * float(sum(dist.values())), rel=1e-6)
    grads = dict(zip(m.relax.alphas.keys(), torch.autograd.grad(pen, list(m.relax.alphas.values()))))
    for t in CELL_TYPES:
        toward = masks[t] - acts[t]
        # -grad is exactly (c rho / 2) times the unit vector from act(alpha) to Pi_S(act(alpha))
        assert torch.allclose(-grads[t], c * 0.1 / 2 * toward / dist[t], atol=1e-7)


def test_proximity_on_softmax_descends_toward_the_projection():
    m = tiny_method("darts", reg={"proximity": 0.1})
    m.epoch_start(1, 2)
    with torch.no_grad():
        for a in m.arch:
            a.copy_(torch.randn_like(a))
    masks = {t: discrete_mask(m.space, t, m.relax.weights(t).detach()) for t in CELL_TYPES}

    def distance():
        return sum(float(torch.linalg.vector_norm(m.relax.weights(t).detach() - masks[t])) for t in CELL_TYPES)

    before = distance()
    g = torch.autograd.grad(m.regularization(), m.arch)
    assert any(x.abs().max() > 0 for x in g)
    with torch.no_grad():
        for a, x in zip(m.arch, g):
            a.sub_(1e-2 * x / x.norm())
    assert distance() < before
    # c = 0 at the start of the search: no pull
    m.epoch_start(0, 2)
    assert float(m.regularization().detach()) == 0.0


# -- CRB activation -------------------------------------------------------------------------


def test_crb_setup():
    m = tiny_method("darts", search={"relaxation": "crb"})
    r = m.relax
    assert m.a_opt.param_groups[0]["weight_decay"] == 0.0
    assert all(c.node_norms is not None for c in m.net.cells)
    none = m.space.ops["normal"].index("none")
    for t in CELL_TYPES:
        a = r.alphas[t].detach()
        assert not r.keep(t)[:, none].any() and (a[:, none] == 0).all()  # `none` is out from the start
        real = torch.cat([a[:, :none], a[:, none + 1 :]], 1)
        assert (real - 1 / 7).abs().max() < 1e-3
        assert all(none not in act for act in r.mixing(t, 0).active)
    with torch.no_grad():
        r.alphas["normal"][0, 1] = 1.7
        r.alphas["normal"][0, 2] = -0.3
    w = r.weights("normal")
    assert w[0, 1] == 1.0 and w[0, 2] == 0.0  # clamp to [0, 1]


def test_crb_prunes_for_good_and_pruned_ops_are_not_computed(monkeypatch):
    calls = count_forward_calls(monkeypatch, SepConv)
    m = tiny_method("darts", space="darts-nonone", search={"relaxation": "crb"})
    r, ops = m.relax, list(m.space.ops["normal"])
    sep3, sep5 = ops.index("sep_conv_3x3"), ops.index("sep_conv_5x5")
    n_normal = sum(c.cell_type == "normal" for c in m.net.cells)
    m.net(batch()[0])
    full = calls["n"]
    assert full == len(m.net.cells) * m.space.num_edges * 2
    with torch.no_grad():
        r.alphas["normal"][:, sep3] = -0.01  # every normal edge's sep_conv_3x3 crosses 0
        r.alphas["normal"][0, sep5] = 0.0  # exactly 0 counts as pruned too
    m.step(batch(), FixedBatches(batch(seed=1)))  # step_start prunes, then a (zero-weighted) step
    keep = r.keep("normal")
    assert not keep[:, sep3].any() and not keep[0, sep5] and keep[1:, sep5].all()
    calls["n"] = 0
    m.net(batch()[0])
    assert calls["n"] == full - n_normal * (m.space.num_edges + 1)
    # the optimizer (or anything) pushing a pruned alpha back up revives nothing
    with torch.no_grad():
        r.alphas["normal"][:, sep3] = 0.9
    assert (r.weights("normal")[:, sep3] == 0).all()
    assert all(sep3 not in act for act in r.mixing("normal", 0).active)
    r.step_start()
    assert not r.keep("normal")[:, sep3].any() and (r.alphas["normal"][:, sep3] == 0).all()
    # the mask is part of the saved state: a fresh method loading it keeps the pruning
    fresh = tiny_method("darts", space="darts-nonone", search={"relaxation": "crb"})
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.relax.keep("normal"), r.keep("normal"))


def test_crb_prunes_during_a_search_and_never_revives():
    m = tiny_method("darts", space="darts-nonone", search={"relaxation": "crb", "a_lr": 0.05})
    m.epoch_start(0, 12)
    kept = []
    for i in range(12):
        m.step(batch(seed=i), FixedBatches(batch(seed=100 + i)))
        kept.append(torch.cat([m.relax.keep(t).flatten() for t in CELL_TYPES]).clone())
    assert not kept[-1].all()  # something was pruned by the gradient itself
    for a, b in zip(kept, kept[1:]):
        assert not (b & ~a).any()  # never revived


# -- ADMM -----------------------------------------------------------------------------------


def assert_valid_discrete(space, t, z):
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    assert (z.sum(1) <= 1).all()  # at most one op per edge
    for node in range(space.nodes):
        assert int(z[list(space.node_edges(node))].sum()) == space.edges_per_node
    for o, name in enumerate(space.ops[t]):
        if name == "none":
            assert not z[:, o].any()


@pytest.mark.parametrize("relaxation", ["softmax", "crb"])
def test_admm_z_is_always_a_valid_discrete_architecture(relaxation):
    m = tiny_method("darts", search={"relaxation": relaxation, "a_lr": 0.05}, reg={"admm": {"every": 2}})
    reg = m.regularizers[0]
    m.epoch_start(0, 12)
    prev_u = None
    for i in range(12):
        if reg.z is not None:
            prev_u = {t: reg.u[t].clone() for t in CELL_TYPES}
            prev_updates = reg.updates
        m.step(batch(seed=i), FixedBatches(batch(seed=50 + i)))
        for t in CELL_TYPES:
            assert_valid_discrete(m.space, t, reg.z[t])
        if prev_u is not None and reg.updates > prev_updates:
            for t in CELL_TYPES:  # S3 and S5 by hand
                a = m.relax.weights(t).detach()
                assert torch.equal(reg.z[t], discrete_mask(m.space, t, a + prev_u[t]))
                assert torch.allclose(reg.u[t], 0.8 * prev_u[t] + a - reg.z[t])
    assert reg.updates == 6 and m.arch_steps == 12
    assert any(reg.u[t].abs().max() > 0 for t in CELL_TYPES)


def test_admm_penalty_and_gradient():
    m = tiny_method("darts", search={"relaxation": "crb"}, reg={"admm": 0.1})
    reg = m.regularizers[0]
    torch.manual_seed(1)
    with torch.no_grad():
        for a in m.arch:
            a.copy_(0.1 + 0.8 * torch.rand_like(a))
    pen = m.regularization()
    reg.u = {t: 0.05 * torch.randn_like(reg.u[t]) for t in CELL_TYPES}
    pen = m.regularization()
    names = list(m.relax.alphas.keys())
    grads = dict(zip(names, torch.autograd.grad(pen, list(m.relax.alphas.values()))))
    total = 0.0
    for t in CELL_TYPES:
        d = m.relax.weights(t).detach() - reg.z[t] + reg.u[t]
        total += float((d**2).sum())
        # inside (0, 1) the clamp is the identity: grad = rho * (a - z + u) on kept ops
        assert torch.allclose(grads[t], 0.1 * d * m.relax.keep(t), atol=1e-7)
    assert float(pen.detach()) == pytest.approx(0.05 * total, rel=1e-6)


# -- the method, the flags, a run -----------------------------------------------------------


def test_darts_prime_defaults_and_ablation_flags():
    m = tiny_method("darts-prime")
    cfg = m.cfg
    assert cfg.search.schedule == "fimt" and cfg.search.train_portion == pytest.approx(10 / 11)
    assert [r.name for r in m.regularizers] == ["proximity"] and m.regularizers[0].rho == 0.1
    assert m.relax.name == "softmax" and isinstance(m.schedule, FIMT)

    def parse(*argv):
        return _overrides(build_parser().parse_args(["search", *argv]), "search")

    out = parse("--method", "darts-prime", "--activation", "crb", "--reg", "admm", "--reg", "proximity=0")
    assert out["search"]["relaxation"] == "crb" and out["reg"] == {"admm": True, "proximity": 0}
    m2 = tiny_method(
        "darts-prime", space="darts-nonone", search={"relaxation": "crb"}, reg={"admm": True, "proximity": 0}
    )
    assert [r.name for r in m2.regularizers] == ["admm"] and m2.relax.name == "crb"


def test_darts_prime_search_writes_the_figure_3_record_and_resumes(tmp_path):
    data = write_fake_idx(tmp_path / "data", n_train=88)  # a val split (1/11) of 8 images: one batch of 8
    common = dict(
        method="darts-prime",
        space="darts-nonone",
        data_dir=str(data),
        progress=False,
        search={
            "epochs": 2,
            "channels": 4,
            "layers": 3,
            "batch_size": 8,
            "relaxation": "crb",
            "schedule": "fimt:h0=1e4",
        },
        reg={"admm": {"every": 2}},
    )
    full = diffnas.search(out=tmp_path / "full", **common)
    steps = [json.loads(x) for x in (tmp_path / "full" / "steps.jsonl").read_text().splitlines()]
    assert all({"arch_step", "fimt", "fimt_threshold", "fisher"} <= set(s) for s in steps)
    assert all(s["arch_step"] == (s["fimt"] is not None and s["fimt"] < s["fimt_threshold"]) for s in steps)
    assert 2 <= sum(s["arch_step"] for s in steps) < len(steps)

    def kill(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        diffnas.search(out=tmp_path / "killed", callbacks=[kill], **common)
    resumed = diffnas.search(resume=tmp_path / "killed", progress=False)
    assert resumed.genotype == full.genotype
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["job"]["method"]
    b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["job"]["method"]
    assert all(torch.equal(a["net"][k], b["net"][k]) for k in a["net"])
    assert a["schedule"] == b["schedule"]
    ua, ub = (next(r["u"] for r in x["regularizers"] if "u" in r) for x in (a, b))
    assert all(torch.equal(ua[t], ub[t]) for t in CELL_TYPES)
