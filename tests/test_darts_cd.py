"""DARTS-CD (coordinate descent over edges), max-alpha and the warm-up sign inversion."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import FixedBatches, batch, tiny_method, write_fake_idx

import diffnas
from diffnas.relax.coordinate import CoordinateRelaxation
from diffnas.spaces import get_space
from diffnas.spaces.darts.network import DerivedNetwork
from diffnas.spaces.darts.space import CELL_TYPES


def params(m):
    return {n: p.detach().clone() for n, p in m.net.named_parameters()}


def relaxed_now(m):
    return {c.index: list(m.relax.relaxed_edges(c.cell_type, c.index)) for c in m.net.cells}


def fed_shared_parts(relaxed) -> set:
    """train_shared false: the shared parts a step trains (the names' first parts, with a cell's index)."""
    fed = {c for c, es in relaxed.items() if es}
    return {"classifier", *(("stem",) if fed & {0, 1} else ()), *(("cells", c) for c in fed)}


@pytest.mark.parametrize(
    "shared,edges,sample", [(True, 1, "cell"), (False, 1, "cell"), (True, 2, "cell"), (False, 1, "network"),
                            (True, 2, "network")]
)  # fmt: skip
def test_a_step_moves_only_the_relaxed_edges_alphas_and_op_weights(shared, edges, sample):
    m = tiny_method(
        "darts-cd",
        relax={"edges": edges, "sample": sample},
        **{"darts-cd": {"warmup_epochs": 0, "train_shared": shared}},
        search={"layers": 5},
    )
    assert m.cfg.search.a_wd == 0.0
    m.epoch_start(0, 10)
    val = FixedBatches(batch(seed=1))
    m.step(batch(), val)  # SGD momentum and Adam moments now exist for the first sample's edges
    first = relaxed_now(m)
    before = params(m)
    m.step(batch(seed=2), val)
    relaxed = relaxed_now(m)
    assert relaxed != first  # so leaking momentum of the first sample would show
    rows = {t: set() for t in CELL_TYPES}
    for c in m.net.cells:
        rows[c.cell_type].update(relaxed[c.index])
    moved_edges = set()
    fed = fed_shared_parts(relaxed)
    for name, p in m.net.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        parts = name.split(".")
        if name.startswith("relax.alphas."):
            t = parts[-1]
            for e in range(m.space.num_edges):
                assert torch.equal(before[name][e], p.detach()[e]) == (e not in rows[t]), (t, e)
        elif parts[0] == "cells" and parts[2] == "edges":
            cell, edge = int(parts[1]), int(parts[3])
            if edge in relaxed[cell]:
                assert changed, name  # every op of the relaxed edge is trained
                moved_edges.add((cell, edge))
            else:
                assert not changed, name  # max-alpha ops of the other edges: bitwise unchanged
        else:  # stem, preprocessing, classifier
            part = ("cells", int(parts[1])) if parts[0] == "cells" else parts[0]
            assert changed == (shared or part in fed), name
    assert moved_edges == {(c, e) for c, es in relaxed.items() for e in es}
    if sample == "cell":
        assert all(len(es) == edges for es in relaxed.values())
    else:  # M edges in the whole network
        assert sum(len(es) for es in relaxed.values()) == edges
        if not shared:
            assert len(fed) < 2 + len(relaxed)  # so some shared part stayed as it was


def test_argmax_without_none_and_wrong_relaxation():
    m = tiny_method("darts-cd", search={"cd_argmax_none": False})
    with torch.no_grad():
        m.relax.alphas["normal"][:, 0] = 5.0  # `none` is everyone's max
    top = m.relax.max_alpha_ops("normal")
    assert (top != 0).all() and torch.equal(top, m.relax.alphas["normal"][:, 1:].argmax(1) + 1)
    with pytest.raises(diffnas.errors.ConfigError):
        tiny_method("darts-cd", search={"relaxation": "max-alpha"})
    with pytest.raises(diffnas.errors.ConfigError):
        tiny_method("darts-cd", search={"relaxation": "softmax"})


@pytest.mark.parametrize("phase", ["arch", "weight"])
def test_a_phase_records_nothing_before_the_relaxed_edge_and_computes_only_the_updated_grads(phase):
    opts = {"darts-cd": {"warmup_epochs": 0, "train_shared": False}}
    m = tiny_method("darts-cd", relax={"sample": "network"}, **opts)
    m.epoch_start(0, 10)
    m.relax.step_start()
    m.relax._relaxed = {0: [], 1: [], 2: [5]}  # one edge, in the last of the 3 cells
    recorded = {}
    for c in m.net.cells:
        c.register_forward_hook(lambda mod, args, out: recorded.__setitem__(mod.index, out.requires_grad))
    stem_out = []
    m.net.stem.register_forward_hook(lambda mod, args, out: stem_out.append(out.requires_grad))
    if phase == "weight":
        m.weight_step(batch())
    else:
        m.arch_step(batch(seed=1), batch())
    assert recorded == {0: False, 1: False, 2: True} and stem_out == [False]  # as under no_grad
    assert all(p.requires_grad for p in [*m.weights, *m.arch])  # restored after the phase
    for c in m.net.cells:
        for e, edge in enumerate(c.edges):
            for p in edge.parameters():
                assert (p.grad is not None) == (phase == "weight" and (c.index, e) == (2, 5))
    trained = [*m.net.cells[2].pre0.parameters(), *m.net.cells[2].pre1.parameters(), *m.net.classifier.parameters()]
    for p in m.weights:
        assert (p.grad is not None) == (phase == "weight" and any(p is q for q in [*trained, *m.edge_params[(2, 5)]]))
    if phase == "arch":  # only the relaxed edge's alpha row, of its cell type
        t = m.net.cells[2].cell_type
        assert all(a.grad is None for u, a in m.relax.alphas.items() if u != t)
        g = m.relax.alphas[t].grad
        assert g[5].abs().sum() > 0 and g[torch.arange(14) != 5].abs().sum() == 0


def test_sampling_is_uniform_per_cell_and_reproducible():
    space = get_space("darts")
    r = CoordinateRelaxation(space, seed=3)
    draws = []
    for _ in range(1400):
        r.step_start()
        draws.append([r.relaxed_edges("normal", i)[0] for i in range(3)])
    counts = torch.bincount(torch.tensor([d[0] for d in draws]), minlength=14)
    assert counts.min() >= 60 and counts.max() <= 140  # 100 expected, sd ~ 9.6
    # Algorithm 1: every cell draws its own edge
    assert sum(d[0] != d[1] for d in draws) > 0.85 * len(draws)
    # a pure function of (seed, step counter): a restored counter replays the draws
    r2 = CoordinateRelaxation(space, seed=3)
    state = {k: v.clone() for k, v in r.state_dict().items()}
    state["steps"] = torch.tensor(700)
    r2.load_state_dict(state)
    replay = []
    for _ in range(700):
        r2.step_start()
        replay.append([r2.relaxed_edges("normal", i)[0] for i in range(3)])
    assert replay == draws[700:]
    r3 = CoordinateRelaxation(space, seed=4)
    other = []
    for _ in range(20):
        r3.step_start()
        other.append([r3.relaxed_edges("normal", i)[0] for i in range(3)])
    assert other != draws[:20]  # another seed, other draws


def test_per_cell_type_sampling_and_m_edges_mixing():
    space = get_space("darts")
    r = CoordinateRelaxation(space, seed=0, edges=3, sample="cell_type")
    differ = 0
    for _ in range(50):
        r.step_start()
        e0 = r.relaxed_edges("normal", 0)
        assert len(set(e0)) == 3 and e0 == r.relaxed_edges("normal", 5)
        differ += e0 != r.relaxed_edges("reduce", 2)
    assert differ > 40
    with torch.no_grad():
        r.alphas["normal"].copy_(torch.randn(14, 8))
    mix = r.mixing("normal", 0)
    top = r.alphas["normal"].argmax(1)
    soft = F.softmax(r.alphas["normal"], -1)
    for e in range(14):
        if e in e0:
            assert torch.equal(mix.weights[e], soft[e]) and mix.active[e] == list(range(1, 8))
        else:
            assert torch.equal(mix.weights[e], F.one_hot(top[e], 8).float())
            assert mix.active[e] == ([] if top[e] == 0 else [int(top[e])])
    # the gradient reaches only the relaxed rows
    (mix.weights * torch.randn(14, 8)).sum().backward()
    g = r.alphas["normal"].grad
    assert all((g[e].abs().sum() > 0) == (e in e0) for e in range(14))
    # eval mode: no edge relaxed
    r.eval()
    assert all(len(a) <= 1 for a in r.mixing("normal", 0).active)
    with pytest.raises(diffnas.errors.ConfigError):
        CoordinateRelaxation(space, edges=15)


# hand-set alphas: (the op with the largest alpha, the op with the second largest) on each of the 14 edges
TOP2 = [
    ("none", "sep_conv_3x3"),
    ("skip_connect", "none"),
    ("none", "dil_conv_5x5"),
    ("max_pool_3x3", "sep_conv_5x5"),
    ("sep_conv_3x3", "none"),
    ("none", "avg_pool_3x3"),
    ("dil_conv_3x3", "skip_connect"),
    ("avg_pool_3x3", "none"),
    ("none", "skip_connect"),
    ("sep_conv_5x5", "dil_conv_3x3"),
    ("dil_conv_5x5", "none"),
    ("none", "max_pool_3x3"),
    ("skip_connect", "sep_conv_3x3"),
    ("none", "sep_conv_5x5"),
]
# the op each edge runs outside the relaxed edges: darts-cd's max-alpha op may be `none` (runs nothing, Algorithm
# 1); max-alpha runs the derived architecture's op, the best one that is not `none`
SINGLE_PATH = {
    "darts-cd": [None if a == "none" else a for a, _ in TOP2],
    "max-alpha": [b if a == "none" else a for a, b in TOP2],
}


def set_top2(m):
    with torch.no_grad():
        for t in CELL_TYPES:
            a = m.relax.alphas[t]
            a.zero_()
            for e, (first, second) in enumerate(TOP2):
                a[e, m.space.ops[t].index(first)] = 2.0
                a[e, m.space.ops[t].index(second)] = 1.0


def ops_run(m):
    """Record the (cell, edge, op name) of every op module called."""
    ran = set()
    for c in m.net.cells:
        for e, edge in enumerate(c.edges):
            for name, op in zip(m.space.ops[c.cell_type], edge.ops):
                if name != "none":
                    op.register_forward_hook(lambda *_, key=(c.index, e, name): ran.add(key))
    return ran


@pytest.mark.parametrize("method", ["darts-cd", "max-alpha"])
def test_single_path_edges_run_one_op_only(method):
    m = tiny_method(method)
    set_top2(m)
    ran = ops_run(m)
    m.relax.step_start()
    m.net(batch()[0])
    all_ops = [o for o in m.space.ops["normal"] if o != "none"]
    expected = set()
    for c in m.net.cells:
        relaxed = m.relax.relaxed_edges(c.cell_type, c.index)
        assert len(relaxed) == (1 if method == "darts-cd" else 0)
        for e, op in enumerate(SINGLE_PATH[method]):
            ops = all_ops if e in relaxed else [op] if op else []  # a relaxed edge runs all 7 ops, as DARTS
            expected |= {(c.index, e, o) for o in ops}
    assert ran == expected


def test_max_alpha_edges_with_none_on_top_still_learn():
    """An edge whose `none` alpha is the largest runs its best real op, so its alphas get a gradient and move."""
    m = tiny_method("max-alpha")
    set_top2(m)
    none_rows = [e for e, (a, _) in enumerate(TOP2) if a == "none"]
    before = {t: m.relax.alphas[t].detach().clone() for t in CELL_TYPES}
    m.epoch_start(0, 10)
    loss, _ = m.loss(batch())
    g = torch.autograd.grad(loss, m.relax.alphas["normal"])[0]
    assert (g[none_rows].abs().sum(1) > 0).all()
    val = FixedBatches(batch(seed=1))
    for i in range(3):
        m.step(batch(seed=2 + i), val)
    for t in CELL_TYPES:
        moved = (m.relax.alphas[t].detach() - before[t]).abs().amax(1)
        assert (moved[none_rows] > 0).all(), t


def test_warmup_flips_signs_at_epoch_boundaries_then_stops():
    m = tiny_method("darts-cd", search={"warmup_epochs": 3})
    val = FixedBatches(batch(seed=1))
    for epoch in range(6):
        alphas = [a.detach().clone() for a in m.arch]
        moments = [m.a_opt.state[a]["exp_avg"].clone() if a in m.a_opt.state else None for a in m.arch]
        m.epoch_start(epoch, 2)
        flip = 1 <= epoch <= 3
        for a0, a, m0 in zip(alphas, m.arch, moments):
            assert torch.equal(a.detach(), -a0 if flip else a0)
            if m0 is not None:
                assert torch.equal(m.a_opt.state[a]["exp_avg"], -m0 if flip else m0)
        assert m.relax.sign.item() == (-1) ** min(epoch, 3)
        assert m.a_opt.param_groups[0]["weight_decay"] == (1e-3 if epoch < 3 else 0.0)
        before = {t: m.relax.alphas[t].detach().clone() for t in CELL_TYPES}
        rec = m.step(batch(), val)
        assert rec["alpha_sign"] == (-1) ** min(epoch, 3)
        assert rec["max_alpha"] == {t: before[t].argmax(1).tolist() for t in CELL_TYPES}
        rows = {t: set() for t in CELL_TYPES}
        for c in m.net.cells:
            rows[c.cell_type].update(m.relax.relaxed_edges(c.cell_type, c.index))
        others = [e for e in range(14) if e not in rows["normal"]]
        drift = (m.relax.alphas["normal"].detach()[others] - before["normal"][others]).abs().max()
        # in the warm-up the weight decay moves every alpha; after it the unselected rows stay put
        assert (drift > 0) == (epoch < 3)
        rec = m.step(batch(seed=3), val)
        assert "alpha_sign" not in rec  # the per-epoch snapshot is logged once, on the epoch's first step
        m.epoch_end()


def hand_made_alphas(space, seed=0):
    """Per node two kept edges with a random op as their max; `none` is the max elsewhere.

    Pooling is left out: the search network follows it with a non-affine BN (DARTS), the
    derived network does not.
    """
    g = torch.Generator().manual_seed(seed)
    out, kept = {}, {}
    for t in CELL_TYPES:
        a = torch.zeros(space.num_edges, len(space.ops[t]))
        kept[t] = []
        for node in range(space.nodes):
            edges = list(space.node_edges(node))
            choices = [o for o, name in enumerate(space.ops[t]) if name != "none" and "pool" not in name]
            for i in sorted(torch.randperm(len(edges), generator=g)[:2].tolist()):
                op = choices[int(torch.randint(len(choices), (1,), generator=g))]
                a[edges[i], op] = 1.0
                kept[t].append((space.ops[t][op], i))
            for e in edges:
                if a[e].max() == 0:
                    a[e, 0] = 1.0  # `none`
        out[t] = a
    return out, kept


def copy_into_derived(m, derived, genotype):
    derived.stem.load_state_dict(m.net.stem.state_dict())
    derived.classifier.load_state_dict(m.net.classifier.state_dict())
    for cs, cd in zip(m.net.cells, derived.cells):
        for src, dst in ((cs.pre0, cd.pre0), (cs.pre1, cd.pre1)):
            missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
            assert not unexpected and all(k.endswith(("weight", "bias")) for k in missing)
        space = m.space
        k = 0
        for node in range(space.nodes):
            for e in space.node_edges(node):
                o = int(m.relax.alphas[cs.cell_type][e].argmax())
                if o == 0:
                    continue
                missing, unexpected = cd.ops[k].load_state_dict(cs.edges[e].ops[o].state_dict(), strict=False)
                assert not unexpected
                k += 1
        assert k == len(cd.ops)


def test_max_alpha_network_of_coordinate_equals_the_derived_network_with_the_same_weights():
    """In eval mode darts-cd runs its max-alpha ops, `none` on the edges the genotype drops: the derived network.

    (max-alpha never runs `none`, so its forward runs every edge: see test_single_path_edges_run_one_op_only.)
    """
    m = tiny_method("darts-cd")
    alphas, kept = hand_made_alphas(m.space)
    with torch.no_grad():
        for t in CELL_TYPES:
            m.relax.alphas[t].copy_(alphas[t])
    genotype = m.genotype()
    assert all(genotype.cells[t] == kept[t] for t in CELL_TYPES)  # the DARTS rule keeps the hand-made edges
    s = m.cfg.search
    derived = DerivedNetwork(genotype, s.channels, s.layers, num_classes=3, in_channels=1)
    copy_into_derived(m, derived, genotype)
    x = batch()[0]
    m.net.eval()
    derived.eval()
    assert torch.allclose(m.net(x), derived(x), atol=1e-6)
    # the test can fail: switching one kept edge's max-alpha op in the supernet changes the output
    with torch.no_grad():
        a = m.relax.alphas["normal"]
        e = int((a.argmax(1) != 0).nonzero()[0])
        o = int(a[e].argmax())
        a[e] = 0.0
        a[e, 3 + (o - 2) % 5] = 1.0  # another op of skip/sep/dil
    assert not torch.allclose(m.net(x), derived(x), atol=1e-4)


def test_max_alpha_alphas_learn_through_the_straight_through_one_hot():
    m = tiny_method("max-alpha")
    m.epoch_start(0, 10)
    mix = m.relax.mixing("normal", 0)
    top = m.relax.max_alpha_ops("normal")
    assert torch.equal(mix.weights.detach(), F.one_hot(top, 8).float())  # exactly one in the forward pass
    loss, _ = m.loss(batch())
    g = torch.autograd.grad(loss, m.relax.alphas["normal"])[0]
    # d softmax(alpha)_m / d alpha_j = p_m (delta_mj - p_j): the max op's entry and the others' have opposite signs
    for e in range(14):
        if top[e] != 0:
            assert g[e].abs().sum() > 0
            others = torch.cat([g[e, : top[e]], g[e, top[e] + 1 :]])
            assert torch.all(torch.sign(others) == -torch.sign(g[e, top[e]]))


def test_search_logs_the_relaxed_edges_and_resumes_exactly(tmp_path):
    data = write_fake_idx(tmp_path / "data")
    common = dict(
        method="darts-cd",
        data_dir=str(data),
        progress=False,
        search={"epochs": 3, "channels": 4, "layers": 3, "batch_size": 16, "warmup_epochs": 2},
    )
    full = diffnas.search(out=tmp_path / "full", **common)
    steps = [json.loads(x) for x in Path(tmp_path / "full" / "steps.jsonl").read_text().splitlines()]
    assert all(len(s["relaxed"]) == 3 and len(s["relaxed"][0]) == 1 for s in steps)
    firsts = [s for s in steps if s["step"] == 0]
    assert [s["alpha_sign"] for s in firsts] == [1, -1, 1]
    assert all(len(s["max_alpha"]["normal"]) == 14 for s in firsts)
    assert sum("max_alpha" in s for s in steps) == 3
    metrics = [json.loads(x) for x in Path(tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["alpha_sign"] for r in metrics] == [1, -1, 1] and [r["warmup"] for r in metrics] == [True, True, False]
    for r in metrics:
        assert r["max_alpha"] == {t: torch.tensor(r["alphas"][t]).argmax(1).tolist() for t in CELL_TYPES}

    def kill_after_first_epoch(epoch, record):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        diffnas.search(out=tmp_path / "killed", callbacks=[kill_after_first_epoch], **common)
    resumed = diffnas.search(resume=tmp_path / "killed", progress=False)
    assert resumed.genotype == full.genotype
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["job"]["method"]["net"]
    b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["job"]["method"]["net"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    resumed_steps = (tmp_path / "killed" / "steps.jsonl").read_text().splitlines()
    assert [json.loads(x)["relaxed"] for x in resumed_steps] == [s["relaxed"] for s in steps]


@pytest.mark.parametrize(
    "method,overrides",
    [
        ("darts-cd", {}),
        ("darts-cd", {"relax": {"sample": "network"}, "darts-cd": {"train_shared": False}}),
        ("darts-cd", {"relax": {"sample": "network", "edges": 3}}),
        ("max-alpha", {}),
    ],
)
def test_the_lean_step_equals_the_full_autograd_step_bit_for_bit(method, overrides):
    """Within a phase only the updated tensors require grad (``lean``): the same numbers as with all of them."""
    runs = []
    for lean in (True, False):
        opts = {**overrides, method: {**overrides.get(method, {}), "warmup_epochs": 1}}
        m = tiny_method(method, search={"layers": 5}, **opts)
        m.lean = lean
        val = FixedBatches(batch(seed=9))
        for epoch in (0, 1):  # the warm-up epoch (every alpha decays), then a sign flip and row-sparse Adam
            m.epoch_start(epoch, 2)
            for i in range(2):
                m.step(batch(seed=10 * epoch + i), val)
            m.epoch_end()
        runs.append(m)
    lean, full = runs
    assert lean.arch_steps == full.arch_steps == 4
    for (name, a), (_, b) in zip(lean.net.state_dict().items(), full.net.state_dict().items()):
        assert torch.equal(a, b), name
    for opt in ("w_opt", "a_opt"):
        sa, sb = getattr(lean, opt).state_dict()["state"], getattr(full, opt).state_dict()["state"]
        assert sa.keys() == sb.keys() and sa
        for k in sa:
            for key, v in sa[k].items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb[k][key])), (opt, k, key)


@pytest.mark.parametrize("phase", ["arch", "weight"])
def test_recomputed_cells_and_edges_give_the_same_step_and_run_again_in_backward(phase):
    """With the relaxed edge in cell 0, cell 1 (frozen, large) is recomputed in backward and cell 0's single-path
    conv edges one by one; the gradients, the updated weights and the BN statistics are the same bit for bit."""
    runs = []
    for recompute in (True, False):
        opts = {"darts-cd": {"warmup_epochs": 0, "train_shared": False, "recompute": recompute}}
        m = tiny_method("darts-cd", search={"layers": 5}, relax={"sample": "network"}, **opts)
        m.epoch_start(0, 10)
        m.relax.step_start()
        m.relax._relaxed = {i: ([3] if i == 0 else []) for i in range(5)}
        calls = {"cell1": 0, "edges0": 0}

        def counted(module, key, calls=calls):
            run = module.forward
            module.forward = lambda *a, **k: calls.__setitem__(key, calls[key] + 1) or run(*a, **k)

        counted(m.net.cells[1], "cell1")
        for e, edge in enumerate(m.net.cells[0].edges):
            if e != 3:
                counted(edge, "edges0")
        if phase == "weight":
            m.weight_step(batch())
        else:
            m.arch_step(batch(seed=1), batch())
        runs.append((m, calls))
    (on, calls_on), (off, calls_off) = runs
    assert on.net.worth_recomputing[:2] == [True, True] and not on.net.worth_recomputing[-1]
    assert calls_off["cell1"] == 1 and calls_on["cell1"] == 2  # run again in backward
    assert calls_on["edges0"] > calls_off["edges0"]  # some single-path edges of cell 0 too
    for (name, a), (_, b) in zip(on.net.state_dict().items(), off.net.state_dict().items()):
        assert torch.equal(a, b), name
    for a, b in zip([*on.weights, *on.arch], [*off.weights, *off.arch]):
        assert (a.grad is None) == (b.grad is None) and (a.grad is None or torch.equal(a.grad, b.grad))


def test_recompute_share_picks_the_first_cells_holding_that_share_of_the_activations():
    """darts-cd.recompute_share: only the first cells holding that share of all cells' activations are recomputed
    (never the free tail), and the supernet uses that choice only inside the recomputing context."""
    m = tiny_method("darts-cd", search={"layers": 8}, **{"darts-cd": {"recompute_share": 0.5}})
    net = m.net
    sizes, total = net.cell_sizes, sum(net.cell_sizes)
    every = net._worth_recomputing(1.0)
    assert every == net.worth_recomputing  # outside the context: the full rule
    assert every[0] and not every[-1]  # the free tail is never recomputed
    assert not any(net._worth_recomputing(0.0))
    for share in (0.3, 0.5, 0.7):
        worth = net._worth_recomputing(share)
        first = worth.index(False)
        assert all(worth[:first]) and not any(worth[first:])  # a prefix of the network
        assert sum(sizes[: first - 1]) < share * total and all(every[:first])
        assert first == len(sizes) or not every[first] or sum(sizes[:first]) >= share * total
    with net.recomputing_frozen_cells(0.5):
        assert net.worth_recomputing == net._worth_recomputing(0.5)
    assert net.worth_recomputing == every
    with pytest.raises(diffnas.errors.ConfigError):
        tiny_method("darts-cd", **{"darts-cd": {"recompute_share": 1.5}})


def cell_inputs(m) -> dict:
    """{cell index: (s0, s1)} as the network's forward on a batch gives them."""
    seen = {}
    hooks = [c.register_forward_pre_hook(lambda c, a: seen.setdefault(c.index, a[:2]) and None) for c in m.net.cells]
    with torch.no_grad():
        m.net(batch()[0])
    for h in hooks:
        h.remove()
    return seen


def test_single_path_edges_add_their_op_output_unscaled_and_empty_nodes_are_zero():
    """DARTS-CD's max-alpha edges have weight exactly 1 (equation 2): the cell adds their ops' outputs as they
    are, with no multiply; a node all of whose edges run `none` is zero. Same output as the explicit weights."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from diffnas.spaces.base import Mixing

    m = tiny_method("darts-cd", **{"darts-cd": {"warmup_epochs": 0}})
    with torch.no_grad():
        a = m.relax.alphas["normal"]
        a.zero_()
        a[:, m.space.ops["normal"].index("sep_conv_3x3")] = 1.0
        a[:2, 0] = 2.0  # `none` on both edges into node 0
    m.net.train()
    cell = next(c for c in m.net.cells if c.cell_type == "normal")
    m.relax.step_start()
    mix = m.relax.mixing("normal", cell.index)
    assert mix.single_path.count(False) == 1  # one relaxed edge in the cell
    single = Mixing(mix.weights.detach(), mix.active, single_path=mix.single_path)
    weighted = Mixing(mix.weights.detach(), mix.active)  # the same edges with their one-hot rows multiplied in
    x = cell_inputs(m)[cell.index]

    class Muls(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Muls.n += func is torch.ops.aten.mul.Tensor and any(torch.is_tensor(t) and t.dim() == 4 for t in args)
            return func(*args, **(kwargs or {}))

    state = [b.clone() for b in cell.buffers()]
    with torch.no_grad(), Muls():
        out = cell(*x, single)
    torch._foreach_copy_(list(cell.buffers()), state)
    assert Muls.n == len(mix.active[mix.single_path.index(False)])  # only the relaxed edge's ops are weighted
    with torch.no_grad():
        ref = cell(*x, weighted)
    assert torch.equal(out, ref)
    C = out.shape[1] // m.space.nodes
    assert not out[:, :C].any()  # node 0: both edges `none`


def test_a_recomputed_cell_restores_exactly_the_buffers_its_forward_updates():
    """``SearchCell.buffers_of``: the buffers a forward under a mixing changes are the ones it names."""
    m = tiny_method("darts-cd", **{"darts-cd": {"warmup_epochs": 0}})
    inputs = cell_inputs(m)
    m.net.train()
    m.relax.step_start()
    for cell in m.net.cells:
        mix = m.relax.mixing(cell.cell_type, cell.index)
        before = {id(b): b.clone() for b in cell.buffers()}
        with torch.no_grad():
            cell(*inputs[cell.index], mix)
        changed = {id(b) for b in cell.buffers() if not torch.equal(b, before[id(b)])}
        named = {id(b) for b in cell.buffers_of(mix)}
        assert changed == named, cell.index
