import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from diffnas.errors import GenotypeError
from diffnas.relax import SoftmaxRelaxation
from diffnas.spaces import DerivedNetwork, Genotype, derive_genotype, discrete_mask, get_space
from diffnas.spaces.darts import network
from diffnas.spaces.darts.genotype import DARTS_V2
from diffnas.spaces.darts.network import AuxiliaryHead, CellSpec, DerivedCell, cell_plan
from diffnas.spaces.darts.supernet import Supernet

OPS = get_space("darts").ops["normal"]


def hand_weights():
    """Edges of node 0: e0, e1; node 1: e2..e4; node 2: e5..e8; node 3: e9..e13."""
    w = torch.zeros(14, 8)
    w[:, 0] = 0.9  # `none` is largest everywhere and must be ignored
    w[0, OPS.index("sep_conv_3x3")] = 0.5
    w[1, OPS.index("max_pool_3x3")] = 0.4
    w[2, OPS.index("skip_connect")] = 0.2
    w[3, OPS.index("dil_conv_5x5")] = 0.6
    w[4, OPS.index("sep_conv_5x5")] = 0.7
    w[4, OPS.index("avg_pool_3x3")] = 0.65
    for e in range(5, 14):
        w[e, OPS.index("dil_conv_3x3")] = 0.1 + 0.01 * e
    return w


def test_darts_rule_on_hand_made_weights():
    space = get_space("darts")
    g = derive_genotype(space, {"normal": hand_weights(), "reduce": hand_weights()})
    assert g.edges("normal", 0) == [("sep_conv_3x3", 0), ("max_pool_3x3", 1)]
    # node 1: edge 4 (0.7) and edge 3 (0.6) beat edge 2 (0.2); listed in input order
    assert g.edges("normal", 1) == [("dil_conv_5x5", 1), ("sep_conv_5x5", 2)]
    # node 2: the two largest are edges 8 and 7 -> inputs 3 and 2
    assert g.edges("normal", 2) == [("dil_conv_3x3", 2), ("dil_conv_3x3", 3)]
    assert g.edges("normal", 3) == [("dil_conv_3x3", 3), ("dil_conv_3x3", 4)]
    assert all(op != "none" for op, _ in g.cells["normal"])


def test_edges_ranked_by_max_not_sum():
    space = get_space("darts", nodes=1)
    w = torch.zeros(2, 8)
    w[0, 4] = 0.5  # one strong op
    w[1, 1:] = 0.3  # many medium ops: larger sum, smaller max
    space1 = space.variant(nodes=1, edges_per_node=1)
    mask = discrete_mask(space1, "normal", w)
    assert mask[0, 4] == 1 and mask[1].sum() == 0


def test_discrete_mask_has_k_edges_per_node_and_one_op_per_edge():
    space = get_space("darts")
    torch.manual_seed(0)
    mask = discrete_mask(space, "normal", torch.rand(14, 8))
    assert mask[:, 0].sum() == 0
    assert set(mask.sum(1).tolist()) <= {0.0, 1.0}
    for node in range(4):
        assert mask[list(space.node_edges(node))].sum() == 2


def test_random_tie_breaking_with_generator():
    space = get_space("darts-nonone")
    w = torch.full((14, 7), 0.5)
    picks = {
        tuple(discrete_mask(space, "normal", w, torch.Generator().manual_seed(s)).nonzero().flatten().tolist())
        for s in range(6)
    }
    assert len(picks) > 1
    first = discrete_mask(space, "normal", w)  # no generator: deterministic, first op and first edges
    assert first[0, 0] == 1 and first[1, 0] == 1


def test_genotype_json_roundtrip_and_validation(tmp_path):
    space = get_space("darts")
    g = derive_genotype(space, {"normal": hand_weights(), "reduce": hand_weights()})
    g.save(tmp_path / "g.json")
    assert Genotype.load(tmp_path / "g.json") == g
    d = g.to_dict()
    d["normal"][0][0] = "conv_9x9"
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(GenotypeError, match="unknown op 'conv_9x9'"):
        Genotype.load(tmp_path / "bad.json")
    d = g.to_dict()
    d["reduce"][1][1] = 5  # node 0 can only read inputs 0, 1
    (tmp_path / "bad2.json").write_text(json.dumps(d))
    with pytest.raises(GenotypeError, match="reads input 5"):
        Genotype.load(tmp_path / "bad2.json")
    (tmp_path / "bad3.json").write_text("{not json")
    with pytest.raises(GenotypeError, match="not valid JSON"):
        Genotype.load(tmp_path / "bad3.json")


def test_reductions_at_thirds_and_channels_double():
    plan = cell_plan(8, 16, 3, lambda s: 4)
    assert [s.index for s in plan if s.reduction] == [2, 5]
    assert [s.c for s in plan] == [16, 16, 32, 32, 32, 64, 64, 64]


def count(net):
    return sum(p.numel() for p in net.parameters())


def test_golden_parameter_counts():
    """Parameter counts of the DARTS networks as in the original code's (BN affine=False in search)."""
    torch.manual_seed(0)
    sup = Supernet(SoftmaxRelaxation(get_space("darts")), channels=16, layers=8, num_classes=10, in_channels=3)
    # DARTS search network at C=16, L=8: 1.93 M weights + 2 * 14 * 8 alphas (quark0/darts model_search)
    assert count(sup) - 2 * 14 * 8 == 1_930_618
    darts_v2 = DARTS_V2.to_dict()
    net = DerivedNetwork(Genotype.from_dict(darts_v2), 36, 20, 10, 3, auxiliary=True)
    params = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("aux_head"))
    assert params == 3_349_342  # DARTS V2 on CIFAR-10: 3.3 M (paper), 3349342 in the reference code
    net.eval()
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_auxiliary_head_applies_relu_before_the_pool():
    """quark0/darts AuxiliaryHeadCIFAR: ReLU -> AvgPool2d(5, 3) -> conv 1x1 -> BN -> ReLU -> conv 2x2 -> BN -> ReLU."""
    torch.manual_seed(0)
    head = AuxiliaryHead(6, 10).eval()
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in head.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:  # non-trivial statistics, so eval-mode BN is not the identity
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)

    def tail(x):
        x = F.relu(bns[0](convs[0](x)))
        x = F.relu(bns[1](convs[1](x)))
        return head.classifier(x.flatten(1))

    x = torch.randn(2, 6, 8, 8)  # 8x8: CIFAR's size at the auxiliary head
    reference = tail(F.avg_pool2d(F.relu(x), 5, stride=3, padding=0, count_include_pad=False))
    assert torch.allclose(head(x), reference, atol=1e-6)
    # small inputs: pooled adaptively to 2x2, still after the ReLU
    x = torch.randn(2, 6, 4, 4)
    assert torch.allclose(head(x), tail(F.adaptive_avg_pool2d(F.relu(x), 2)), atol=1e-6)


def run_drop_path(cell, monkeypatch):
    """How many edge outputs of ``cell`` go through drop path in a training forward pass."""
    calls = {"n": 0}
    orig = network.drop_path

    def counting(x, p):
        calls["n"] += 1
        return orig(x, p)

    monkeypatch.setattr(network, "drop_path", counting)
    cell.train()
    cell(torch.randn(2, 8, 8, 8), torch.randn(2, 8, 8, 8), 0.5)
    return calls["n"]


def test_drop_path_exempts_only_identity_ops(monkeypatch):
    """DARTS drops every op but the identity: a stride-2 skip_connect (FactorizedReduce) is dropped."""
    skips = {
        "space": "darts",
        "nodes": 4,
        "normal": [["skip_connect", 0], ["skip_connect", 1]] * 4,
        # edges 0, 1, 4 read the cell inputs: stride 2, FactorizedReduce; 2, 5, 6 read node 0: identity
        "reduce": [["skip_connect", 0], ["skip_connect", 1], ["skip_connect", 2], ["max_pool_3x3", 1]]
        + [["skip_connect", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]],
    }
    g = Genotype.from_dict(skips)
    reduce = DerivedCell(g, CellSpec(1, True, False, 8, 8, 4))
    assert run_drop_path(reduce, monkeypatch) == 5  # 3 FactorizedReduce + 2 max pools
    normal = DerivedCell(g, CellSpec(0, False, False, 8, 8, 4))
    assert run_drop_path(normal, monkeypatch) == 0  # stride-1 skip_connect: all identities
