import torch
import torch.nn.functional as F
from helpers import FixedBatches, batch, count_forward_calls, tiny_method
from torch.func import functional_call

from diffnas.spaces.darts.ops import SepConv


def test_darts_first_order_arch_grad_is_grad_of_val_loss():
    m = tiny_method("darts")
    m.epoch_start(0, 10)
    val = batch(seed=1)
    before = [a.detach().clone() for a in m.arch]
    # expected Adam first step: lr * sign(g) (bias-corrected m/sqrt(v) = g/|g|) plus weight decay folded into g
    loss, _ = m.loss(val)
    g = torch.autograd.grad(loss, m.arch)
    m.first_order_arch_step(val)
    for a0, a1, gi in zip(before, m.arch, g):
        gi = gi + m.cfg.search.a_wd * a0
        expected = a0 - m.cfg.search.a_lr * gi / (gi.abs() + 1e-8)
        assert torch.allclose(a1.detach(), expected, atol=1e-6)


def test_weight_step_leaves_alphas_and_arch_step_leaves_weights():
    m = tiny_method("darts")
    m.epoch_start(0, 10)
    alphas = [a.detach().clone() for a in m.arch]
    m.weight_step(batch())
    assert all(torch.equal(a, b) for a, b in zip(alphas, m.arch))
    weights = [w.detach().clone() for w in m.weights]
    m.first_order_arch_step(batch(seed=2))
    assert all(torch.equal(a, b) for a, b in zip(weights, m.weights))


def test_darts2_unrolled_gradient_matches_exact_autograd():
    """With a small finite-difference step (float64) the unrolled gradient equals the exact one.

    The DARTS default step (R = 0.01 / ||v||) is coarse on a tiny net with batch-8 BN; the
    formula is what is checked here.
    """
    torch.set_default_dtype(torch.float64)
    try:
        m = tiny_method("darts2", search={"channels": 4, "layers": 3, "w_lr": 0.1, "hvp_epsilon": 1e-5})
        net = m.net.double()
        m.epoch_start(0, 10)
        train_b, val_b = batch(seed=3, dtype=torch.float64), batch(seed=4, dtype=torch.float64)
        m.weight_step(train_b)  # a real step, so the momentum buffer is non-zero
        s = m.cfg.search
        eta = m.w_lr
        names = {id(p): n for n, p in net.named_parameters()}
        w = {names[id(p)]: p.detach().clone().requires_grad_(True) for p in m.weights}
        a = {names[id(p)]: p.detach().clone().requires_grad_(True) for p in m.arch}

        def loss(params, b):
            return F.cross_entropy(functional_call(net, params, (b[0],)), b[1])

        lt = loss({**w, **a}, train_b)
        gw = torch.autograd.grad(lt, list(w.values()), create_graph=True, allow_unused=True)
        w_next = {}
        for (n, p), g, p_orig in zip(w.items(), gw, m.weights):
            buf = m.w_opt.state[p_orig]["momentum_buffer"]
            g = torch.zeros_like(p) if g is None else g
            w_next[n] = p - eta * (s.w_momentum * buf + g + s.w_wd * p)
        exact = torch.autograd.grad(loss({**w_next, **a}, val_b), list(a.values()))

        approx, _, _ = m.unrolled_arch_grads(train_b, val_b)
        for e, ap in zip(exact, approx):
            assert torch.allclose(ap, e, rtol=1e-4, atol=1e-7), (ap - e).abs().max()
        # and the first-order gradient alone is measurably different (the test can fail)
        first, _ = m.loss(val_b)
        g1 = torch.autograd.grad(first, m.arch)
        assert not torch.allclose(g1[0], exact[0], rtol=1e-3)
        # the weights are restored after the finite differences
        for p, p0 in zip(m.weights, w.values()):
            assert torch.equal(p.detach(), p0.detach())
    finally:
        torch.set_default_dtype(torch.float32)


def test_darts_step_runs_schedule_and_records():
    m = tiny_method("darts", search={"schedule": "every:2"})
    m.epoch_start(0, 4)
    recs = [m.step(batch(), FixedBatches(batch(seed=1))) for _ in range(4)]
    assert [("arch_loss" in r) for r in recs] == [True, False, True, False]
    assert m.arch_steps == 2


def test_arch_start_epoch_freezes_alphas():
    m = tiny_method("darts", search={"arch_start_epoch": 1})
    m.epoch_start(0, 2)
    alphas = [a.detach().clone() for a in m.arch]
    m.step(batch(), FixedBatches(batch(seed=1)))
    assert all(torch.equal(a, b) for a, b in zip(alphas, m.arch))
    m.epoch_start(1, 2)
    m.step(batch(), FixedBatches(batch(seed=1)))
    assert not torch.equal(alphas[0], m.arch[0].detach())


def test_none_op_is_never_computed_and_zero_weight_ops_skip(monkeypatch):
    calls = count_forward_calls(monkeypatch, SepConv)
    m = tiny_method("darts")
    m.net(batch()[0])
    n_cells, n_edges = len(m.net.cells), m.space.num_edges
    assert calls["n"] == n_cells * n_edges * 2  # two sep_conv ops per edge
    # a Mixing that activates only op 1 on every edge runs no sep_conv at all
    base = m.relax.mixing

    def single(cell_type, idx):
        mix = base(cell_type, idx)
        mix.active = [[1]] * n_edges
        return mix

    m.relax.mixing = single
    calls["n"] = 0
    m.net(batch()[0])
    assert calls["n"] == 0


def _darts2_arch_grads(precision: str, guard: bool = True, double: bool = False) -> torch.Tensor:
    """The architecture gradient of one darts2 step (captured before Adam), flattened."""
    import contextlib

    m = tiny_method("darts2", precision=precision, seed=0)
    if double:
        m.net.double()
    if not guard:  # what the unrolled step would see without its float32 guard
        m.net.full_precision = contextlib.nullcontext
    got = []
    m.arch_step_with = lambda g: got.append([x.clone() for x in g])
    dtype = torch.float64 if double else torch.float32
    (xt, yt), (xv, yv) = batch(8, seed=1), batch(8, seed=2)
    m.arch_step((xv.to(dtype), yv), (xt.to(dtype), yt))
    return torch.cat([g.flatten() for g in got[0]]).double()


def test_darts2_unrolled_step_runs_in_float32_under_bf16_autocast():
    """bf16 autocast (here on the CPU, as CUDA runs by default) leaves the finite-difference
    Hessian-vector product exact to float32; under autocast it would be mostly rounding noise."""
    exact = _darts2_arch_grads("fp32", double=True)
    guarded = _darts2_arch_grads("bf16")
    assert (guarded - exact).norm() / exact.norm() < 0.02
    unguarded = _darts2_arch_grads("bf16", guard=False)
    assert (unguarded - exact).norm() / exact.norm() > 0.2  # the test would catch a missing guard
