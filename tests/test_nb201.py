"""The NAS-Bench-201 space: networks against the public definitions, the architecture string, the rule,
every method on it, its data sets, and a retraining step."""

import pickle
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import FixedBatches, batch, tiny_method

from diffnas.catalog import resolve
from diffnas.cli import main
from diffnas.data import load_dataset
from diffnas.errors import ConfigError, DataError, GenotypeError
from diffnas.methods import METHODS
from diffnas.spaces import get_space, load_architecture
from diffnas.spaces.base import Mixing
from diffnas.spaces.darts import fastops
from diffnas.spaces.nb201 import Nb201Architecture
from diffnas.spaces.nb201.supernet import SearchCell

ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


def skeleton_params(C, classes, in_ch=3):
    """Stem, the two ResNet blocks, the head: the public TinyNetwork's parameters outside the cells."""
    stem = in_ch * C * 9 + 2 * C

    def block(ci, co):  # ReLUConvBN 3x3 s2 + ReLUConvBN 3x3 (affine BN, no bias) + AvgPool-Conv1x1 shortcut
        return 9 * ci * co + 2 * co + 9 * co * co + 2 * co + ci * co

    return stem + block(C, 2 * C) + block(2 * C, 4 * C) + 2 * 4 * C + 4 * C * classes + classes


def count(net):
    return sum(p.numel() for p in net.parameters())


def test_parameter_counts_match_the_public_definitions():
    space = get_space("nb201")
    cfg = resolve("darts", overrides={"space": "nb201", "dataset": "cifar10"})
    assert (cfg.train.channels, cfg.train.layers) == (16, 5)
    # the benchmark's published sizes on CIFAR-10: 1.531546 M (all 3x3 convs) and 0.073306 M (no conv in cells)
    assert count(space.build_network(Nb201Architecture.from_string(ALL_3X3), cfg, 3, 10)) == 1531546
    assert count(space.build_network(Nb201Architecture.from_string(ALL_SKIP), cfg, 3, 10)) == 73306
    assert skeleton_params(16, 10) == 73306
    # search cells: every edge holds a 1x1 and a 3x3 ReLUConvBN with a conv bias and a non-affine BN
    m = tiny_method("darts", space="nb201", in_channels=3, num_classes=10, search={"channels": 8, "layers": 2})
    cells = sum(2 * 6 * (c * c + 9 * c * c + 2 * c) for c in (8, 16, 32))
    assert count(m.net) - sum(a.numel() for a in m.arch) == skeleton_params(8, 10) + cells
    assert sum(a.numel() for a in m.arch) == 30
    assert space.op_params("nor_conv_3x3", 8) == 9 * 64 + 8 and space.op_params("avg_pool_3x3", 8) == 0


def test_shapes():
    m = tiny_method("darts", space="nb201", in_channels=3, num_classes=7, search={"channels": 4, "layers": 1})
    x, _ = batch(5, 3, 12, 7)
    assert m.net(x).shape == (5, 7)
    cfg = resolve("darts", overrides={"space": "nb201", "train": {"channels": 4, "layers": 1}})
    net = get_space("nb201").build_network(Nb201Architecture.from_string(ALL_3X3), cfg, 1, 7)
    assert net(torch.randn(2, 1, 9, 9)).shape == (2, 7)


def plain_forward(cell, x, mix):
    """The public NAS201SearchCell's forward on the same modules: every op of every edge, weighted sums."""
    nodes = [x]
    for i in range(1, 4):
        total = 0
        for e in range(sum(range(i)), sum(range(i)) + i):
            j = [0, 0, 1, 0, 1, 2][e]
            for o, name in enumerate(cell.names):
                if name != "none":
                    total = total + mix.weights[e, o] * cell.edges[e].ops[name](nodes[j])
        nodes.append(total)
    return nodes[-1]


def test_fused_cells_equal_the_plain_cells(monkeypatch):
    """Outputs, weight and architecture gradients and BN running statistics as the public cell computes them."""
    results = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(SearchCell, "forward", plain_forward)
        m = tiny_method("darts", space="nb201", in_channels=3, num_classes=5, search={"channels": 4, "layers": 1})
        x, y = batch(6, 3, 8, 5)
        loss = F.cross_entropy(m.net(x), y)
        grads = torch.autograd.grad(loss, m.weights + m.arch, allow_unused=True)
        stats = [b.clone() for n, b in m.net.named_buffers() if "running" in n]
        results.append((loss.detach(), grads, stats))
    (l1, g1, s1), (l2, g2, s2) = results
    assert torch.allclose(l1, l2, atol=1e-6)
    for a, b in zip(g1, g2):
        if a is None or b is None:  # the conv biases: zero under batch-statistics BN, left out by the fused path
            assert (a if a is not None else b).abs().max() < 1e-5
        else:
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(s1, s2))


def test_architecture_string_round_trip_and_errors(tmp_path):
    arch = Nb201Architecture.from_string(
        "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"
    )
    assert arch.ops == ("nor_conv_3x3", "none", "skip_connect", "skip_connect", "nor_conv_1x1", "avg_pool_3x3")
    assert Nb201Architecture.from_string(str(arch)) == arch
    arch.save(tmp_path / "g.json")
    assert load_architecture(tmp_path / "g.json") == arch
    for bad in (
        "|nor_conv_3x3~0|+|none~0|skip_connect~1|",  # two nodes
        "|nor_conv_3x3~1|+|none~0|skip_connect~1|+|none~0|none~1|none~2|",  # wrong input
        "|conv~0|+|none~0|skip_connect~1|+|none~0|none~1|none~2|",  # unknown op
        "|none~0|+|none~0|+|none~0|none~1|none~2|",  # missing input
        "none~0+|none~0|none~1|+|none~0|none~1|none~2|",  # no bars
    ):
        with pytest.raises(GenotypeError) as e:
            Nb201Architecture.from_string(bad)
        assert "\n" not in str(e.value)
    (tmp_path / "bad.json").write_text('{"space": "nb201", "arch": "|x~0|"}')
    with pytest.raises(GenotypeError):
        load_architecture(tmp_path / "bad.json")


def test_argmax_rule_includes_none_unless_excluded():
    w = torch.tensor(
        [
            [0.5, 0.1, 0.1, 0.2, 0.1],  # none wins
            [0.1, 0.5, 0.1, 0.2, 0.1],
            [0.1, 0.1, 0.5, 0.2, 0.1],
            [0.1, 0.1, 0.1, 0.6, 0.1],
            [0.1, 0.1, 0.1, 0.2, 0.5],
            [0.9, 0.0, 0.0, 0.0, 0.1],  # none wins, then the pool
        ]
    )
    arch = get_space("nb201").derive({"normal": w})
    assert str(arch) == "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"
    cfg = resolve("darts", overrides={"space": "nb201", "nb201": {"exclude_none": True}})
    space = get_space("nb201").from_config(cfg)
    assert space.derive({"normal": w}).ops[0] == "nor_conv_3x3" and space.derive({"normal": w}).ops[5] == "avg_pool_3x3"
    mask = space.projection("normal", w)
    assert mask.sum(1).tolist() == [1.0] * 6 and mask[:, 0].sum() == 0


def test_random_architecture_is_seeded_and_uniform():
    space = get_space("nb201")
    a = [space.random_architecture(random.Random(3)) for _ in range(2)]
    assert a[0] == a[1]
    draws = [op for s in range(300) for op in space.random_architecture(random.Random(s)).ops]
    assert set(draws) == {"none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"}
    no_none = get_space("nb201").from_config(
        resolve("darts", overrides={"space": "nb201", "nb201": {"exclude_none": True}})
    )
    assert all(op != "none" for s in range(50) for op in no_none.random_architecture(random.Random(s)).ops)


def cell_and_mix(active, double=True):
    m = tiny_method("darts", space="nb201", in_channels=3, num_classes=5, search={"channels": 3, "layers": 1})
    cell = m.net.cells[0].double() if double else m.net.cells[0]
    g = torch.Generator().manual_seed(3)
    alphas = torch.randn(6, 5, generator=g, dtype=torch.float64 if double else torch.float32).requires_grad_()
    return cell, alphas, lambda w: Mixing(weights=w.softmax(-1), active=active)


@pytest.mark.parametrize(
    "active",
    [[list(range(5))] * 6, [[0], [1, 4], [2], [3, 4], [4], [0, 1]], [[0]] * 3 + [[1, 2]] * 3],
    ids=["all", "some", "none-into-node-1"],
)
def test_source_node_function_equals_autograd_of_the_plain_ops(monkeypatch, active):
    """The hand-written backward of one node's edges (_SourceNode) against autograd through the same
    ops (fastops off): outputs, gradients of input, conv weights and alphas, second order, running stats."""
    results = []
    for fast in (True, False):
        monkeypatch.setattr(fastops, "ENABLED", fast)
        cell, alphas, mix = cell_and_mix(active)
        x = torch.randn(4, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        x.requires_grad_()
        out = cell(x, mix(alphas))
        weights = [p for p in cell.parameters() if p.requires_grad]
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum()
        grads = torch.autograd.grad(loss, [x, alphas, *weights], create_graph=True, allow_unused=True)
        # second order: the alphas' gradient of the input gradient's squared norm (a Hessian-vector product)
        hvp = torch.autograd.grad((grads[0] ** 2).sum(), alphas)[0]
        stats = [b.clone() for n, b in cell.named_buffers() if "running" in n]
        results.append((out.detach(), [None if g is None else g.detach() for g in grads], hvp, stats))
    (o1, g1, h1, s1), (o2, g2, h2, s2) = results
    assert torch.allclose(o1, o2, atol=1e-12)
    for a, b in zip(g1, g2):
        if a is None or b is None:  # inactive ops; conv biases: zero under batch statistics, left out when fused
            assert all(t is None or t.abs().max() < 1e-10 for t in (a, b))
        else:
            assert torch.allclose(a, b, atol=1e-10)
    assert torch.allclose(h1, h2, atol=1e-10)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(s1, s2))


@pytest.mark.parametrize("method,extra", [("pc-darts", {}), ("darts", {"relaxation": "crb"})])
def test_fused_nodes_equal_autograd_with_partial_channels_and_node_norms(monkeypatch, method, extra):
    """PC-DARTS's channel slices (a strided node input) and DARTS-PRIME's node norms through _SourceNode."""
    results = []
    for fast in (True, False):
        monkeypatch.setattr(fastops, "ENABLED", fast)
        search = {"channels": 8, "layers": 1, **extra}
        m = tiny_method(method, space="nb201", in_channels=3, num_classes=5, search=search)
        assert m.net.cells[0].k == 4 or m.net.cells[0].node_norms is not None
        x, y = batch(4, 3, 8, 5)
        loss = F.cross_entropy(m.net(x), y)
        grads = torch.autograd.grad(loss, m.weights + m.arch, allow_unused=True)
        results.append((loss.detach(), grads))
    (l1, g1), (l2, g2) = results
    assert torch.allclose(l1, l2, atol=1e-6)
    for a, b in zip(g1, g2):
        if a is not None and b is not None:
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
        else:  # conv biases (zero under batch statistics) and unused parameters
            assert all(t is None or t.abs().max() < 1e-5 for t in (a, b))


def test_source_node_function_passes_gradcheck():
    """Finite differences of the whole cell (through _SourceNode), in float64."""
    cell, alphas, mix = cell_and_mix([list(range(5))] * 6)
    x = torch.randn(3, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_()
    w = cell.edges[0].ops["nor_conv_3x3"].op[1].weight
    assert torch.autograd.gradcheck(lambda x, a, w: cell(x, mix(a)), (x, alphas, w), eps=1e-6, atol=1e-5)


SETUPS = [(m, {}) for m in METHODS if m not in ("random", "rsws", "slimming")] + [
    ("darts", {"search": {"relaxation": "crb", "channels": 4, "layers": 1}}),
    ("darts", {"reg": {"admm": 0.1}}),
    ("darts", {"reg": {"size": 0.1}}),
    ("darts-cd", {"relax": {"argmax_none": False}}),
    ("darts-cd", {"relax": {"sample": "network"}, "darts-cd": {"train_shared": False}}),
]


@pytest.mark.parametrize("method,extra", SETUPS, ids=[f"{m}{'+' + str(e) if e else ''}" for m, e in SETUPS])
def test_every_method_steps_on_nb201(method, extra):
    extra = {"search": {"channels": 4, "layers": 1}, **extra}
    m = tiny_method(method, space="nb201", in_channels=3, num_classes=4, **extra)
    m.epoch_start(m.steady_state_epoch(), 3)
    before = [a.detach().clone() for a in m.arch]
    x, y = batch(8, 3, 8, 4)
    for _ in range(2):
        rec = m.step((x, y), FixedBatches(batch(8, 3, 8, 4, seed=1)))
    assert np.isfinite(rec["loss"])
    if m.arch_steps:  # (a schedule may not have called for one yet: DARTS-PRIME's FIMT)
        assert any(not torch.equal(a, b) for a, b in zip(before, m.arch)), f"{method}: the architecture never moved"
    assert isinstance(m.genotype(), Nb201Architecture)


def test_darts_cd_steps_when_none_cuts_every_relaxed_edge_off():
    """`none` max-alpha ops into the output node zero a cell whose relaxed edge feeds another node: the loss
    then depends on no alpha, and the architecture step is skipped rather than failing."""
    extra = {"search": {"channels": 4, "layers": 1}, "relax": {"sample": "cell_type"}}
    m = tiny_method("darts-cd", space="nb201", in_channels=3, num_classes=4, **extra)
    m.epoch_start(m.steady_state_epoch(), 3)
    with torch.no_grad():  # edges 0..2 (into nodes 1 and 2) nor_conv_3x3, edges 3..5 (into node 3) none
        m.relax.alphas["normal"].copy_(torch.eye(5)[[3, 3, 3, 0, 0, 0]])
    cut = 0
    for _ in range(6):
        before = m.relax.alphas["normal"].detach().clone()
        rec = m.step(batch(8, 3, 8, 4), FixedBatches(batch(8, 3, 8, 4, seed=1)))
        assert np.isfinite(rec["loss"])
        if rec["relaxed"]["normal"][0] < 3:
            cut += 1
            assert torch.equal(m.relax.alphas["normal"], before)
    assert cut  # (the seed's draws include such a step)


def test_slimming_refuses_in_one_line():
    with pytest.raises(ConfigError, match="channel-scores"):
        resolve("slimming", overrides={"space": "nb201"})


def test_latency_refuses_in_one_line():
    with pytest.raises(ConfigError, match="latency does not work on space nb201"):
        resolve("darts", overrides={"space": "nb201", "reg": {"latency": 0.1}})


def test_nasp_projects_one_op_per_edge_and_keeps_every_edge():
    m = tiny_method("nasp", space="nb201", in_channels=3, num_classes=4, search={"channels": 4, "layers": 1})
    with torch.no_grad():
        m.relax.alphas["normal"].copy_(torch.rand(6, 5))
    mask = m.relax.mask("normal")
    assert mask.sum(1).tolist() == [1.0] * 6  # one op on each of the 6 edges, none dropped
    assert mask.argmax(1).tolist() == m.relax.alphas["normal"].argmax(1).tolist()
    m.epoch_start(0, 2)
    m.step(batch(8, 3, 8, 4), FixedBatches(batch(8, 3, 8, 4, seed=1)))
    assert m.relax.alphas["normal"].min() >= 0 and m.relax.alphas["normal"].max() <= 1


def test_space_defaults_per_method():
    darts = resolve("darts", overrides={"space": "nb201"})
    s = darts.search
    assert (s.epochs, s.batch_size, s.w_lr, s.w_lr_min, s.w_wd, s.w_nesterov) == (50, 64, 0.025, 0.001, 5e-4, True)
    assert resolve("rarts", overrides={"space": "nb201"}).search.epochs == 100
    assert resolve("darts-cd", overrides={"space": "nb201"}).search.layers == 5  # the space's scale, not 20
    assert resolve("darts-cd").search.layers == 20
    assert resolve("darts", overrides={"space": "nb201", "search": {"epochs": 3}}).search.epochs == 3
    with pytest.raises(ConfigError, match="nodes"):
        resolve("darts", overrides={"space": "nb201", "search": {"nodes": 5}})


# -- data --------------------------------------------------------------------------------------
def write_imagenet16(root, n=40, classes=200, corrupt=False):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"train_data_batch_{i}" for i in range(1, 11)] + ["val_data"]:
        labels = [int(v) for v in rng.integers(1, classes + 1, n)]
        data = rng.integers(0, 256, (n, 768)).astype(np.uint8)
        (root / name).write_bytes(pickle.dumps({"data": data, "labels": labels}))
    if corrupt:
        (root / "val_data").write_bytes(b"\x80\x04garbage")
    return root


def test_imagenet16_keeps_classes_1_to_120(tmp_path):
    root = write_imagenet16(tmp_path / "ImageNet16")
    d = load_dataset("imagenet16-120", tmp_path)
    assert d.train_x.shape[1:] == (3, 16, 16) and d.num_classes == 120
    assert int(d.train_y.min()) >= 0 and int(d.train_y.max()) <= 119
    raw = pickle.loads((root / "val_data").read_bytes())
    assert len(d.test_y) == sum(1 <= v <= 120 for v in raw["labels"])
    write_imagenet16(tmp_path / "bad", corrupt=True)
    with pytest.raises(DataError, match="val_data"):
        load_dataset("imagenet16-120", tmp_path / "bad")
    (tmp_path / "ImageNet16" / "train_data_batch_3").unlink()
    with pytest.raises(DataError, match="train_data_batch_3"):
        load_dataset("imagenet16-120", tmp_path)


def test_cifar10_valid_uses_the_split_file(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, 4)]
        (root / name).write_bytes(
            pickle.dumps({b"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8), b"labels": labels})
        )
    with pytest.raises(DataError, match="cifar-split.txt"):
        load_dataset("cifar10-valid", tmp_path)
    (tmp_path / "cifar-split.txt").write_text('{"train": ["int", ["0", "2", "5"]], "valid": ["int", ["1", "19"]]}')
    d = load_dataset("cifar10-valid", tmp_path)
    assert len(d.train_y) == 3 and len(d.test_y) == 2
    (tmp_path / "cifar-split.txt").write_text('{"train": ["int", ["0", "99"]], "valid": ["int", ["1"]]}')
    with pytest.raises(DataError, match="99"):
        load_dataset("cifar10-valid", tmp_path)


def test_search_then_train_on_imagenet16_via_the_cli(tmp_path):
    write_imagenet16(tmp_path / "ImageNet16", n=8)
    common = ["--data-dir", str(tmp_path), "--dataset", "imagenet16-120", "--no-progress", "--set", "subset=48"]
    out = tmp_path / "search"
    scale = ["--epochs", "1", "--channels", "4", "--layers", "1", "--batch-size", "8"]
    assert main(["search", "--space", "nb201", "--method", "darts", "--out", str(out), *scale, *common]) == 0
    arch = load_architecture(out / "genotype.json")
    assert isinstance(arch, Nb201Architecture)
    assert main(["show", str(out)]) == 0
    train = tmp_path / "train"
    assert main(["train", "--genotype", str(out), "--out", str(train), *scale, *common]) == 0
    import json

    result = json.loads((train / "result.json").read_text())
    assert result["space"] == "nb201" and result["genotype"]["arch"] == str(arch)
    cfg = __import__("yaml").safe_load((train / "config.yaml").read_text())
    assert cfg["train"]["nesterov"] is True and cfg["train"]["lr"] == 0.1


@pytest.mark.parametrize("method", ["random", "rsws"])
def test_random_baselines_search_nb201(tmp_path, method):
    """Single-path baselines run on the space's masks: the mask of an architecture gives it back."""
    space = get_space("nb201")
    arch = space.random_architecture(random.Random(0))
    assert space.from_masks(space.to_masks(arch)) == arch
    m = tiny_method(method, space="nb201", in_channels=3, num_classes=4, search={"channels": 4, "layers": 1})
    m.epoch_start(0, 1)
    m.step(batch(8, 3, 8, 4), FixedBatches(batch(8, 3, 8, 4, seed=1)))
    assert isinstance(m.genotype(), Nb201Architecture)
