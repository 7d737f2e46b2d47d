"""RARTS and MiLeNAS: the update of eq. (7) against hand-written references, and the paper's solvable model."""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import FixedBatches, batch, tiny_method, write_fake_idx
from torch.func import functional_call

from diffnas.cli import main
from diffnas.methods.rarts import rarts_step, sgd

# -- section III-D: L_v = alpha * y - 2 alpha + 1 (on the primary network y), L_t = w^2 - 2 alpha w + alpha^2


def _scalars(*values):
    return [torch.tensor(float(v), dtype=torch.float64, requires_grad=True) for v in values]


def toy_losses(a, w, y):
    return (lambda: w**2 - 2 * a * w + a**2), (lambda: a * y - 2 * a + 1)


def run_toy(lam, beta, y0, steps, lr=0.01, tied=False):
    a, w, y = _scalars(2.0, -2.0, y0)
    if tied:
        y = w
    loss_t, loss_v = toy_losses(a, w, y)
    W, Y = [w], ([w] if tied else [y])
    for _ in range(steps):
        rarts_step(W, Y, [a], loss_t, loss_v, lam, beta, sgd(lr), sgd(lr), sgd(lr))
    return a.item(), w.item(), y.item()


def test_toy_rarts_reaches_the_papers_equilibrium():
    lam = beta = 15.0
    a, w, y = run_toy(lam, beta, y0=0.0, steps=3000)
    d = 4 * beta * lam - beta - 2 * lam
    exact = (4 * beta * lam / d, (4 * beta * lam - 2 * beta) / d, (4 * beta * lam - 2 * beta - 4 * lam) / d)
    assert (a, w, y) == pytest.approx(exact, abs=1e-6)
    assert (a, w, y) == pytest.approx((1.053, 1.018, 0.947), abs=6e-4)  # the printed numbers
    # another y0 of Fig. 1c ends at the same point
    assert run_toy(lam, beta, y0=2.0, steps=3000) == pytest.approx(exact, abs=1e-6)


def test_toy_rarts_step_worked_by_hand():
    """One step of eq. (7) from (alpha, w, y) = (2, -2, 0), lambda = beta = 15, lr = 0.01, worked by hand:
    w1 = -2 - 0.01 (15 (2w - 2alpha) + 15 (w - y))    = -2 - 0.01 (-120 - 30)      = -0.5
    y1 =  0 - 0.01 (alpha + 15 (y - w1))              = -0.01 (2 + 7.5)            = -0.095
    a1 =  2 - 0.01 (15 (2alpha - 2w1) + (y1 - 2))     = 2 - 0.01 (75 - 2.095)      = 1.27095
    (the Jacobi order, with the old w and y, would give y1 = -0.32 and a1 = 0.82)."""
    assert run_toy(15.0, 15.0, y0=0.0, steps=1) == pytest.approx((1.27095, -0.5, -0.095), abs=1e-12)


def test_toy_milenas_reaches_the_spurious_point():
    # MiLeNAS = RARTS with y tied to w: first-order DARTS's spurious (2, 2), not the equilibrium above
    a, w, y = run_toy(15.0, 15.0, y0=0.0, steps=3000, tied=True)
    assert (a, w) == pytest.approx((2.0, 2.0), abs=1e-4) and y == w


def test_rarts_step_matches_eq7_written_out_on_a_quadratic_model():
    """Vector variables and hand-derived gradients; learning rates differ per variable."""
    g = torch.Generator().manual_seed(0)
    A, B, c = torch.randn(3, 2, generator=g), torch.randn(2, 3, generator=g), torch.randn(2, generator=g)
    w0, y0, a0 = torch.randn(3, generator=g), torch.randn(3, generator=g), torch.randn(2, generator=g)
    lam, beta, lr_w, lr_y, lr_a = 0.7, 2.5, 0.05, 0.03, 0.02

    # by hand: L_t = ||w - A a||^2, L_v = a . (B y) + c . a
    w1 = w0 - lr_w * (lam * 2 * (w0 - A @ a0) + beta * (w0 - y0))
    y1 = y0 - lr_y * (B.T @ a0 + beta * (y0 - w1))
    a1 = a0 - lr_a * (lam * (-2 * A.T @ (w1 - A @ a0)) + (B @ y1 + c))

    w, y, a = (t.clone().requires_grad_(True) for t in (w0, y0, a0))

    def loss_t():
        return ((w - A @ a) ** 2).sum()

    def loss_v():
        return a @ (B @ y) + c @ a

    rarts_step([w], [y], [a], loss_t, loss_v, lam, beta, sgd(lr_w), sgd(lr_y), sgd(lr_a))
    for got, want in ((w, w1), (y, y1), (a, a1)):
        assert torch.allclose(got.detach(), want, atol=1e-6)
    # the Jacobi order (y pulled towards the old w) gives a different y: the order is checked
    assert not torch.allclose(y0 - lr_y * (B.T @ a0 + beta * (y0 - w0)), y1, atol=1e-4)


def test_rarts_step_adds_the_penalty_gradient_and_can_skip_the_arch_step():
    w, y, a = (torch.tensor([1.0, -1.0], requires_grad=True) for _ in range(3))
    lat = torch.tensor([3.0, 1.0])

    def zero():
        return (w * 0).sum() + (y * 0).sum() + (a * 0).sum()

    a_before = a.detach().clone()
    rarts_step([w], [y], [a], zero, zero, 1.0, 1.0, sgd(0.1), sgd(0.1), None, penalty=lambda: a @ lat)
    assert torch.equal(a.detach(), a_before)
    rarts_step([w], [y], [a], zero, zero, 1.0, 1.0, sgd(0.1), sgd(0.1), sgd(0.1), penalty=lambda: a @ lat)
    assert torch.allclose(a.detach(), a_before - 0.1 * lat)


# -- the CNN method -------------------------------------------------------------------------------


def _named(net, params):
    names = {id(p): n for n, p in net.named_parameters()}
    return {names[id(p)]: p.detach().clone().requires_grad_(True) for p in params}


def _ce(net, params, b):
    return F.cross_entropy(functional_call(net, params, (b[0],)), b[1])


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_rarts_method_step_is_eq7_with_sgd_and_weight_decay(float64):
    lam, beta = 2.0, 0.5
    m = tiny_method(
        "rarts",
        search={"grad_clip": 0.0, "rarts_lambda": lam, "rarts_beta": beta, "rarts_y_init": "independent"},
    )
    m.epoch_start(0, 10)
    s, lr = m.cfg.search, m.w_lr
    tb, vb = batch(seed=3, dtype=torch.float64), batch(seed=4, dtype=torch.float64)
    w, y = _named(m.net, m.weights), _named(m.net_y, m.weights_y)
    a = _named(m.net, m.arch)

    # eq. (7) by hand; SGD's first step with momentum is p - lr (g + wd p)
    gw = torch.autograd.grad(_ce(m.net, {**w, **a}, tb), list(w.values()))
    w_list, y_list = list(w.values()), list(y.values())
    w1 = [(p - lr * (lam * g + beta * (p - q) + s.w_wd * p)).detach() for p, q, g in zip(w_list, y_list, gw)]
    w1_named = dict(zip(w.keys(), w1))
    gy = torch.autograd.grad(_ce(m.net_y, {**y, **a}, vb), y_list)
    y1 = [(q - lr * (g + beta * (q - p1) + s.w_wd * q)).detach() for q, p1, g in zip(y_list, w1, gy)]
    y1_named = dict(zip(y.keys(), y1))
    ga_t = torch.autograd.grad(_ce(m.net, {**w1_named, **a}, tb), list(a.values()))
    ga_v = torch.autograd.grad(_ce(m.net_y, {**y1_named, **a}, vb), list(a.values()))
    ga = [lam * gt + gv for gt, gv in zip(ga_t, ga_v)]

    rec = m.step(tb, FixedBatches(vb))
    for p, want in zip(m.weights, w1):
        assert torch.allclose(p.detach(), want, atol=1e-10)
    for p, want in zip(m.weights_y, y1):
        assert torch.allclose(p.detach(), want, atol=1e-10)
    for p, want in zip(m.arch, ga):
        assert torch.allclose(p.grad, want, atol=1e-10)
    assert m.arch_steps == 1 and {"loss", "loss_y", "arch_loss", "arch_loss_t", "wy_dist"} <= rec.keys()


def test_milenas_is_rarts_with_y_tied_to_w(float64):
    """w <- w - lr (lam grad_w L_t + wd w); alpha's gradient lam grad_a L_t(w') + grad_a L_v(w') on one network."""
    lam = 3.0
    m = tiny_method("milenas", search={"grad_clip": 0.0, "rarts_lambda": lam})
    assert m.net_y is m.net and m.weights_y is m.weights
    m.epoch_start(0, 10)
    s, lr = m.cfg.search, m.w_lr
    tb, vb = batch(seed=5, dtype=torch.float64), batch(seed=6, dtype=torch.float64)
    w, a = _named(m.net, m.weights), _named(m.net, m.arch)
    gw = torch.autograd.grad(_ce(m.net, {**w, **a}, tb), list(w.values()))
    w1 = {n: (p - lr * (lam * g + s.w_wd * p)).detach() for (n, p), g in zip(w.items(), gw)}
    ga_t = torch.autograd.grad(_ce(m.net, {**w1, **a}, tb), list(a.values()))
    ga_v = torch.autograd.grad(_ce(m.net, {**w1, **a}, vb), list(a.values()))

    # the same step through rarts_step with y given as w's own tensors, on a twin method
    twin = tiny_method("rarts", search={"grad_clip": 0.0, "rarts_lambda": lam, "rarts_beta": 7.0})
    twin.net.load_state_dict(m.net.state_dict())
    twin.epoch_start(0, 10)
    rarts_step(
        twin.weights,
        list(twin.weights),
        twin.arch,
        lambda: twin.loss(tb)[0],
        lambda: twin.loss(vb)[0],
        lam,
        7.0,  # beta has no effect when y is w
        twin._optimizer_update(twin.w_opt),
        None,
        twin._arch_update,
    )

    m.step(tb, FixedBatches(vb))
    for p, q, want in zip(m.weights, twin.weights, w1.values()):
        assert torch.allclose(p.detach(), want, atol=1e-10) and torch.allclose(q.detach(), want, atol=1e-10)
    for p, q, gt, gv in zip(m.arch, twin.arch, ga_t, ga_v):
        assert torch.allclose(p.grad, lam * gt + gv, atol=1e-10)
        assert torch.allclose(q.detach(), p.detach(), atol=1e-12)
    # and not DARTS's gradient (L_v alone)
    assert not torch.allclose(m.arch[0].grad, ga_v[0], atol=1e-6)


def test_two_supernets_share_alpha_and_y_is_checkpointed():
    m = tiny_method("rarts")
    assert m.net_y.relax is m.relax and m.net_y.arch_parameters() == m.arch
    ids_w, ids_y = {id(p) for p in m.weights}, {id(p) for p in m.weights_y}
    assert not ids_w & ids_y and not ({id(a) for a in m.arch} & (ids_w | ids_y))
    assert all(torch.equal(p, q) for p, q in zip(m.weights, m.weights_y))  # default init: y is a copy of w
    ind = tiny_method("rarts", search={"rarts_y_init": "independent"})
    assert not all(torch.equal(p, q) for p, q in zip(ind.weights, ind.weights_y))

    m.epoch_start(0, 4)
    for i in range(2):
        m.step(batch(seed=i), FixedBatches(batch(seed=10 + i)))
    m.epoch_end()
    state = copy.deepcopy(m.state_dict())  # as if read back from disk: no tensor shared with m
    assert {"net_y", "y_opt", "y_lr_schedule"} <= state.keys()
    fresh = tiny_method("rarts", seed=1)
    fresh.load_state_dict(state)
    for mm in (m, fresh):
        mm.epoch_start(1, 4)
        torch.manual_seed(7)
        mm.step(batch(seed=20), FixedBatches(batch(seed=21)))
    for group in ("weights", "weights_y", "arch"):
        for p, q in zip(getattr(m, group), getattr(fresh, group)):
            assert torch.equal(p, q), group
    assert fresh.y_opt.param_groups[0]["lr"] == m.y_opt.param_groups[0]["lr"] < m.cfg.search.w_lr


def test_rarts_and_milenas_search_end_to_end(tmp_path):
    data = write_fake_idx(tmp_path / "data", n_train=64, n_test=16)
    tiny = ["--epochs", "1", "--channels", "4", "--layers", "3", "--batch-size", "16", "--no-progress"]
    for method in ("rarts", "milenas"):
        out = tmp_path / method
        args = ["search", "--method", method, "--data-dir", str(data), "--out", str(out), *tiny]
        assert main(args) == 0
        assert (out / "genotype.json").is_file()
