"""ImageNet: the mobile-setting network and protocols, the streaming image-folder pipeline, direct search."""

from __future__ import annotations

import math

import pytest
import torch

from diffnas.catalog import resolve
from diffnas.errors import ConfigError
from diffnas.schedules.lr import lr_factor
from diffnas.spaces import Genotype
from diffnas.spaces.darts.network import DerivedNetwork

DARTS_V2 = {
    "space": "darts",
    "nodes": 4,
    "normal": [
        ["sep_conv_3x3", 0],
        ["sep_conv_3x3", 1],
        ["sep_conv_3x3", 0],
        ["sep_conv_3x3", 1],
        ["sep_conv_3x3", 1],
        ["skip_connect", 0],
        ["skip_connect", 0],
        ["dil_conv_3x3", 2],
    ],
    "reduce": [
        ["max_pool_3x3", 0],
        ["max_pool_3x3", 1],
        ["skip_connect", 2],
        ["max_pool_3x3", 1],
        ["max_pool_3x3", 0],
        ["skip_connect", 2],
        ["skip_connect", 2],
        ["max_pool_3x3", 1],
    ],
}


def test_darts_v2_imagenet_network_has_the_reference_size():
    """quark0/darts NetworkImageNet(48, 1000, 14, auxiliary, DARTS_V2): 4,718,752 parameters without the
    auxiliary head (its count_parameters_in_MB), 529.9 M multiply-adds by torch's counter (papers: 574 M)."""
    from diffnas.engine.train import count_flops_m, count_params_m

    torch.manual_seed(0)
    net = DerivedNetwork(Genotype.from_dict(DARTS_V2), 48, 14, 1000, 3, auxiliary=True, stem="imagenet")
    assert round(count_params_m(net) * 1e6) == 4_718_752
    flops = count_flops_m(net, 3, 224)
    assert flops < 600 and flops == pytest.approx(529.911552, abs=1e-3)
    net.train()
    logits, aux = net(torch.zeros(2, 3, 64, 64))
    assert logits.shape == aux.shape == (2, 1000)


def test_imagenet_protocols_resolve_over_the_space_default():
    t = resolve(overrides={"train": {"protocol": "imagenet"}}).train
    assert (t.layers, t.channels, t.batch_size, t.epochs, t.lr) == (14, 48, 128, 250, 0.1)
    assert (t.label_smoothing, t.auxiliary, t.lr_schedule, t.lr_gamma, t.stem) == (0.1, 0.4, "exponential", 0.97, "imagenet")
    pc = resolve(overrides={"train": {"protocol": "imagenet-pc", "epochs": 9}}).train
    assert (pc.batch_size, pc.lr, pc.warmup_epochs, pc.lr_schedule, pc.epochs) == (1024, 0.5, 5, "linear", 9)
    assert resolve().train.protocol == "cifar"
    with pytest.raises(ConfigError, match="no retraining protocol 'imagenett'"):
        resolve(overrides={"train": {"protocol": "imagenett"}})


def test_lr_schedules_follow_the_reference_formulas():
    # DARTS ImageNet: StepLR(1, 0.97); PC-DARTS: warm-up (e + 1) / 5 then linear with a gentler last 5 epochs
    assert lr_factor("exponential", 3, 250) == pytest.approx(0.97**3)
    assert [lr_factor("linear", e, 250, warmup=5) for e in (0, 4)] == [0.2, 1.0]
    assert lr_factor("linear", 5, 250, warmup=5) == pytest.approx((250 - 5 - 5) / 245)
    assert lr_factor("linear", 247, 250, warmup=5) == pytest.approx(3 / (245 * 5))
    assert lr_factor("cosine", 5, 10, floor=0.1) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 2)) / 2)
