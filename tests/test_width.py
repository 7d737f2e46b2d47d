"""Width search (RARTS section IV-B): backbones, channel bookkeeping of pruning, score gradients, the eq. 7 step on
scores, Network Slimming's subgradient, the pruning rules, the widths file, and a tiny CLI search -> train."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import batch, write_fake_idx

from diffnas.catalog import resolve
from diffnas.cli import main
from diffnas.engine.train import count_flops_m
from diffnas.errors import ConfigError, GenotypeError
from diffnas.methods import build_method
from diffnas.methods.rarts import rarts_step, sgd
from diffnas.relax import build_relaxation
from diffnas.spaces import get_space, load_architecture
from diffnas.spaces.width.networks import MobileNetV2, PreResNet
from diffnas.spaces.width.space import prune


def n_params(net) -> int:
    return sum(p.numel() for p in net.parameters())


def test_backbones_match_the_published_sizes():
    # ResNet-164 (pre-activation bottleneck) on CIFAR-10: "1.7 M" (RARTS Table 5; Network Slimming: 1.70 M)
    assert n_params(PreResNet(164, num_classes=10)) == pytest.approx(1.70e6, rel=0.005)
    # MobileNetV2 1.0 on ImageNet: 3,504,872 parameters (torchvision's mobilenet_v2)
    assert n_params(MobileNetV2(num_classes=1000)) == 3_504_872
    widths = PreResNet.layer_widths(depth=164)
    assert len(widths) == 3 * 18 * 2 and sum(widths.values()) == 2 * 18 * (16 + 32 + 64)
    mb = MobileNetV2.layer_widths()
    assert len(mb) == 16 and mb["b1_h"] == 96 and mb["b16_h"] == 960  # every expanded block, not the first


def random_bn_stats(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)


@pytest.mark.parametrize(
    "net",
    [PreResNet(20, 0.5, num_classes=5), MobileNetV2(0.25, small_input=True, num_classes=5)],
    ids=["preresnet20", "mobilenetv2"],
)
def test_pruned_network_equals_the_scored_full_network_with_zero_scores(net):
    """Channel bookkeeping across the residual additions, the bottleneck's expansion and the depthwise convs."""
    torch.manual_seed(0)
    random_bn_stats(net)
    net.eval()
    g = torch.Generator().manual_seed(1)
    kept, scores = {}, {}
    for layer, c in net.layer_widths(**net.backbone).items():
        keep = sorted(torch.randperm(c, generator=g)[: max(1, c // 2)].tolist())
        kept[layer] = keep
        s = torch.zeros(c)
        s[keep] = torch.rand(len(keep), generator=g) + 0.5  # kept channels' searched scores fold into the BN
        scores[layer] = s
    small = net.pruned(kept, scores).eval()
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(x), net(x, scores), rtol=1e-5, atol=1e-5)
    assert n_params(small) < n_params(net)
    assert {k: len(v) for k, v in kept.items()} == {k: v.weight.shape[0] for k, v in _score_bns(small).items()}


def _score_bns(net):
    modules = dict(net.named_modules())
    return {k: modules[p] for k, p in net.score_bn().items()}


def test_param_and_flop_counts_of_a_pruned_bottleneck_by_hand():
    """Depth 11 (one bottleneck per stage), planes 4/8/16, 8x8 images, 3 classes, some channels pruned."""
    net = PreResNet(11, 0.25, num_classes=3, in_channels=3)
    kept = {
        "s1_b0_c1": [0, 2],
        "s1_b0_c2": [1],
        "s2_b0_c1": [0, 1, 2, 3, 4],
        "s2_b0_c2": [7],
        "s3_b0_c1": list(range(16)),
        "s3_b0_c2": [3, 4, 5],
    }
    small = net.pruned(kept)
    k = {n: len(v) for n, v in kept.items()}
    params, macs, cin, size = 3 * 9 * 4, 3 * 9 * 4 * 64, 4, 8  # stem conv
    for s, p in enumerate((4, 8, 16)):
        k1, k2, cout = k[f"s{s + 1}_b0_c1"], k[f"s{s + 1}_b0_c2"], 4 * p
        out = size // (2 if s else 1)
        params += 2 * cin + cin * k1 + 2 * k1 + 9 * k1 * k2 + 2 * k2 + k2 * cout + cin * cout  # downsample conv too
        macs += cin * k1 * size * size + 9 * k1 * k2 * out * out + k2 * cout * out * out + cin * cout * out * out
        cin, size = cout, out
    params += 2 * cin + cin * 3 + 3  # last BN, classifier
    macs += cin * 3
    assert n_params(small) == params
    assert count_flops_m(small, 3, 8) * 1e6 == pytest.approx(macs)


def test_pruning_rules_on_hand_made_scores():
    scores = {"a": torch.tensor([0.1, 0.5, 0.05]), "b": torch.tensor([0.3, -0.01, 0.2, 0.9])}
    # global percentile of |score|: 3 of 7 go (0.01, 0.05, 0.1), whatever layer they sit in
    assert prune(scores, "ratio", 3 / 7, 0.0) == {"a": [1], "b": [0, 2, 3]}
    assert prune(scores, "threshold", 0.0, 0.2) == {"a": [1], "b": [0, 3]}
    # a layer keeps its best channel even when every score is gone
    assert prune({"a": torch.tensor([0.0, 0.02]), "b": torch.ones(2)}, "threshold", 0.0, 0.5) == {"a": [1], "b": [0, 1]}
    space = get_space("resnet20-width")
    arch = space.derive({k: torch.rand(c) for k, c in space.original.items()})
    assert arch.pruned_ratio == pytest.approx(0.4, abs=1 / sum(space.original.values()))
    import random

    r1, r2 = space.random_architecture(random.Random(3)), space.random_architecture(random.Random(3))
    assert r1.kept == r2.kept and r1.pruned_ratio == pytest.approx(0.4, abs=0.01)


def test_widths_file_round_trip_and_errors(tmp_path):
    space = get_space("resnet20-width")
    arch = space.derive({k: torch.rand(c) for k, c in space.original.items()})
    path = tmp_path / "widths.json"
    arch.save(path)
    back = load_architecture(path)
    assert back.to_dict() == arch.to_dict() and back.kept == arch.kept

    def broken(change) -> str:
        d = json.loads(path.read_text())
        change(d)
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(d))
        with pytest.raises(GenotypeError) as e:
            load_architecture(bad)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "unknown layer" in broken(lambda d: d["widths"].update(s9_b0_c1={"of": 4, "kept": [0]}))
    assert "missing" in broken(lambda d: d["widths"].pop("s1_b0_c1"))
    assert "outside 0..15" in broken(lambda d: d["widths"]["s1_b0_c1"].update(kept=[0, 16]))
    assert "at least one" in broken(lambda d: d["widths"]["s1_b0_c1"].update(kept=[]))
    assert "each once" in broken(lambda d: d["widths"]["s1_b0_c1"].update(kept=[1, 1]))
    assert "not 8" in broken(lambda d: d["widths"]["s1_b0_c1"].update(of=8))
    assert "9n + 2" in broken(lambda d: d["backbone"].update(depth=21))
    assert "unknown space" in broken(lambda d: d.update(space="nb201-width"))


def tiny_cfg(method, **over):
    search = {"batch_size": 4, "epochs": 2, "w_momentum": 0.0, "w_wd": 0.0, **over.pop("search", {})}
    return resolve(
        method,
        overrides={
            "space": "resnet20-width",
            "dataset": "cifar10",
            "width": {"multiplier": 0.25},
            "search": search,
            **over,
        },
    )


def test_score_gradients_match_finite_differences():
    cfg = tiny_cfg("darts")
    space = get_space("resnet20-width").from_config(cfg)
    torch.manual_seed(0)
    relax = build_relaxation("channel-scores", space, cfg).double()
    net = space.build_supernet(relax, cfg, 3, 3).double()
    with torch.no_grad():
        for a in relax.alphas.values():
            a.add_(0.3 * torch.randn_like(a))
    x, y = batch(4, channels=3, size=8)
    x = x.double()
    net.eval()  # fixed BN statistics: the loss is a smooth function of the scores

    def loss():
        return torch.nn.functional.cross_entropy(net(x), y)

    a = relax.alphas["s2_b1_c2"]
    (grad,) = torch.autograd.grad(loss(), [a])
    eps = 1e-6
    for j in range(a.numel()):
        with torch.no_grad():
            a[j] += eps
            up = loss().item()
            a[j] -= 2 * eps
            down = loss().item()
            a[j] += eps
        assert grad[j].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)


def test_rarts_eq7_step_on_scores_matches_the_hand_written_update():
    cfg = tiny_cfg("rarts")
    torch.manual_seed(0)
    m = build_method(cfg, get_space("resnet20-width").from_config(cfg), 3, 3, "cpu")
    for net in m.modules():
        net.eval()
    bt, bv = batch(4, channels=3, size=8, seed=1), batch(4, channels=3, size=8, seed=2)
    lam, beta, lr = 0.7, 2.0, 0.05

    def loss(net, b):
        return torch.nn.functional.cross_entropy(net(b[0]), b[1])

    w0 = [p.detach().clone() for p in m.weights]
    y0 = [p.detach().clone() for p in m.weights_y]
    a0 = [p.detach().clone() for p in m.arch]
    # by hand: w, then y with the new w, then the scores with both new networks
    gw = torch.autograd.grad(loss(m.net, bt), m.weights)
    w1 = [w - lr * (lam * g + beta * (w - y)) for w, g, y in zip(w0, gw, y0)]
    with torch.no_grad():
        for p, v in zip(m.weights, w1):
            p.copy_(v)
    gy = torch.autograd.grad(loss(m.net_y, bv), m.weights_y)
    y1 = [y - lr * (g + beta * (y - w)) for y, g, w in zip(y0, gy, w1)]
    with torch.no_grad():
        for p, v in zip(m.weights_y, y1):
            p.copy_(v)
    ga_t = torch.autograd.grad(loss(m.net, bt), m.arch)
    ga_v = torch.autograd.grad(loss(m.net_y, bv), m.arch)
    a1 = [a - lr * (lam * gt + gv) for a, gt, gv in zip(a0, ga_t, ga_v)]
    # the same from the library's sweep, from the same start
    with torch.no_grad():
        for ps, vs in ((m.weights, w0), (m.weights_y, y0), (m.arch, a0)):
            for p, v in zip(ps, vs):
                p.copy_(v)
    rarts_step(
        m.weights,
        m.weights_y,
        m.arch,
        lambda: loss(m.net, bt),
        lambda: loss(m.net_y, bv),
        lam,
        beta,
        sgd(lr),
        sgd(lr),
        sgd(lr),
    )
    for p, v in zip(m.arch, a1):
        torch.testing.assert_close(p.detach(), v, rtol=1e-5, atol=1e-7)
    assert any((p - q).abs().max() > 0 for p, q in zip(a1, a0))


def test_slimming_adds_the_l1_subgradient_to_the_bn_scales_only():
    cfg = tiny_cfg("slimming", search={"w_lr": 1.0, "grad_clip": 0.0}, slimming={"sparsity": 0.01})
    torch.manual_seed(0)
    m = build_method(cfg, get_space("resnet20-width").from_config(cfg), 3, 3, "cpu")
    b = batch(4, channels=3, size=8)
    before = [p.detach().clone() for p in m.weights]
    loss, _ = m.loss(b)
    grads = torch.autograd.grad(loss, m.weights)
    # recompute from the same state: BN running statistics moved in the forward above, not the weights
    m.weight_step(b)
    gammas = {id(g) for g in m.net.bn_scales().values()}
    assert len(gammas) == len(get_space("resnet20-width").original)
    for p, p0, g in zip(m.weights, before, grads):
        expected = p0 - (g + (0.01 * torch.sign(p0) if id(p) in gammas else 0.0))
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)
    arch = m.genotype()  # ranked by |gamma|
    assert arch.kept == prune(m.ranking(), "ratio", 0.4, 0.0)


def test_parts_that_do_not_fit_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="channel-scores"):
        resolve("slimming", overrides={"space": "darts", "dataset": "cifar10"})
    with pytest.raises(ConfigError, match="regularizer l1"):
        resolve("darts", overrides={"dataset": "cifar10", "reg": {"l1": 0.1}})
    with pytest.raises(ConfigError, match="width.score_at"):
        resolve("rarts", overrides={"space": "resnet20-width", "dataset": "cifar10", "width": {"score_at": "conv"}})


def test_search_prune_train_via_the_cli(tmp_path):
    """rarts search with l1 -> widths file -> the smaller network fine-tuned (inheriting weights) on the NS schedule."""
    write_fake_idx(tmp_path / "data", n_train=32, n_test=8, size=8)
    common = [
        "--data-dir",
        str(tmp_path / "data"),
        "--dataset",
        "fashion-mnist",
        "--no-progress",
        "--set",
        "width.multiplier=0.25",
        "--set",
        "width.depth=11",
    ]
    out = tmp_path / "search"
    assert (
        main(
            [
                "search",
                "--space",
                "resnet20-width",
                "--method",
                "rarts",
                "--out",
                str(out),
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--reg",
                "l1=0.001",
                *common,
            ]
        )
        == 0
    )
    arch = load_architecture(out / "genotype.json")
    assert arch.pruned_ratio == pytest.approx(0.4, abs=0.05)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert set(metrics[-1]["alphas"]) == set(arch.kept)  # the per-channel scores of every epoch
    assert main(["show", str(out)]) == 0 and (out / "widths.png").is_file()
    train = tmp_path / "train"
    assert (
        main(
            [
                "train",
                "--widths",
                str(out / "genotype.json"),
                "--out",
                str(train),
                "--epochs",
                "4",
                "--batch-size",
                "8",
                "--set",
                f"train.inherit={out}",
                *common,
            ]
        )
        == 0
    )
    result = json.loads((train / "result.json").read_text())
    full = PreResNet(11, 0.25, num_classes=10, in_channels=1)  # fashion-mnist: 10 classes
    assert result["params_m"] * 1e6 == n_params(full.pruned(arch.kept)) < n_params(full)
    assert result["pruned_ratio"] == pytest.approx(arch.pruned_ratio)
    assert set(result["pruned_ratio_per_layer"]) == set(arch.kept)
    lrs = [json.loads(line)["lr"] for line in (train / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.001])  # /10 at 50 % and 75 %
