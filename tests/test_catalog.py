"""The catalogue: every method's paper defaults (one golden table), part-owned config keys, and misfits
reported in one line before anything runs."""

from __future__ import annotations

import pytest

from diffnas.catalog import misfits, resolve
from diffnas.cli import main
from diffnas.errors import ConfigError
from diffnas.schedules import build_schedule
from diffnas.spaces import SPACES, SearchSpace

# The papers' values (../shared/docs/reference-notes.md and each paper), written out by hand: a default
# that drifts from its paper fails here. Keys are dotted config paths.
DARTS_SEARCH = {
    "search.epochs": 50,
    "search.batch_size": 64,
    "search.channels": 16,
    "search.layers": 8,
    "search.nodes": 4,
    "search.train_portion": 0.5,
    "search.w_lr": 0.025,
    "search.w_lr_min": 0.001,
    "search.w_momentum": 0.9,
    "search.w_wd": 3e-4,
    "search.grad_clip": 5.0,
    "search.a_lr": 3e-4,
    "search.a_betas": [0.5, 0.999],
    "search.a_wd": 1e-3,
    "search.arch_start_epoch": 0,
    "search.schedule": "alternate",
    "search.relaxation": "softmax",
    "space": "darts",
}
DARTS_TRAIN = {
    "train.epochs": 600,
    "train.batch_size": 96,
    "train.channels": 36,
    "train.layers": 20,
    "train.lr": 0.025,
    "train.lr_min": 0.0,
    "train.momentum": 0.9,
    "train.wd": 3e-4,
    "train.grad_clip": 5.0,
    "train.cutout": 16,
    "train.drop_path": 0.2,
    "train.auxiliary": 0.4,
}
PC_DARTS = {
    "search.epochs": 50,
    "search.batch_size": 256,
    "search.w_lr": 0.1,
    "search.w_lr_min": 0.0,
    "search.a_lr": 6e-4,
    "search.a_wd": 1e-3,
    "search.arch_start_epoch": 15,
    "search.relaxation": "partial-channels",
    "relax.k": 4,
}
DARTS_CD = {
    "search.epochs": 25,
    "search.batch_size": 64,
    "search.layers": 20,
    "search.w_lr": 0.025,
    "search.w_lr_min": 0.001,
    "search.a_lr": 0.025,
    "search.a_betas": [0.5, 0.999],
    "search.a_wd": 0.0,
}
GOLDEN = {
    "darts": {**DARTS_SEARCH, **DARTS_TRAIN},
    "darts2": {**DARTS_SEARCH, **DARTS_TRAIN, "darts2.hvp_epsilon": 0.01},
    "darts-cd": {
        **DARTS_CD,
        "search.relaxation": "coordinate",
        "darts-cd.warmup_epochs": 10,
        "darts-cd.warmup_a_wd": 1e-3,
        "darts-cd.train_shared": True,
        "darts-cd.recompute": True,
        "relax.edges": 1,
        "relax.sample": "cell",
        "relax.argmax_none": True,
    },
    "max-alpha": {**DARTS_CD, "search.relaxation": "max-alpha", "max-alpha.warmup_epochs": 0},
    "nasp": {
        "space": "darts-nonone",
        "search.relaxation": "discrete",
        "search.a_lr": 3e-4,
        "search.a_betas": [0.5, 0.999],
        "search.a_wd": 1e-3,
        "nasp.update": "nasp",
        "nasp.arch_ops": "all",
    },
    "pc-darts": PC_DARTS,
    "idarts": {
        **PC_DARTS,
        "idarts.start_epoch": 25,
        "idarts.eta2": 0.04,
        "idarts.lambda": 0.015,
        "idarts.zeta": "growing",
    },
    "rarts": {**DARTS_SEARCH, "rarts.lambda": 1.0, "rarts.beta": 1.0, "rarts.y_init": "copy", "rarts.y_lr": None},
    "milenas": {"milenas.lambda": 1.0, "search.relaxation": "softmax"},
    "darts-prime": {
        "search.schedule": "fimt",
        "search.train_portion": 10 / 11,
        "search.relaxation": "softmax",
        "reg.proximity": 0.1,
        "search.a_lr": 3e-4,
        "search.w_lr": 0.025,
    },
    "random": {"search.relaxation": "single-path"},
    # Network Slimming's ResNet-164 protocol (its code): sparsity 1e-5, lr 0.1, wd 1e-4, 160 epochs, lr /10 at 50/75 %
    "slimming": {
        "space": "resnet164-width",
        "search.relaxation": "channel-scores",
        "slimming.sparsity": 1e-5,
        "search.epochs": 160,
        "search.batch_size": 64,
        "search.w_lr": 0.1,
        "search.w_wd": 1e-4,
        "train.epochs": 160,
        "train.batch_size": 64,
        "train.lr": 0.1,
        "train.wd": 1e-4,
        "train.lr_milestones": [0.5, 0.75],
    },
    "rsws": {**DARTS_SEARCH, "search.relaxation": "single-path", "rsws.samples": 100, "rsws.eval_batches": 1},
}


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("method", sorted(GOLDEN))
def test_paper_defaults(method):
    cfg = resolve(method)
    wrong = {k: (_get(cfg, k), v) for k, v in GOLDEN[method].items() if _get(cfg, k) != pytest.approx(v)}
    assert not wrong, f"{method}: (resolved, paper) = {wrong}"


def test_every_method_has_a_golden_row():
    from diffnas.methods import METHODS

    assert set(METHODS) == set(GOLDEN)


def test_paper_defaults_of_the_parts():
    fimt = build_schedule("fimt")  # DARTS-PRIME: r = 10, h0 = 1, h_i = 1.05, lambda = 0.2
    assert (fimt.r, fimt.h, fimt.hi, fimt.lam) == (10.0, 1.0, 1.05, 0.2)
    assert resolve("darts-prime", overrides={"search": {"relaxation": "crb"}}).relax == {"init_scale": 1e-4}
    assert resolve("darts").relax == {"init_scale": 1e-3}


def test_a_relaxation_brings_its_options_to_any_method():
    cfg = resolve("darts", overrides={"search": {"relaxation": "partial-channels"}, "relax": {"k": 2}})
    assert cfg.relax.k == 2 and cfg.search.relaxation == "partial-channels"
    with pytest.raises(ConfigError, match="unknown config key 'relax.kk'"):  # a typo is still an error
        resolve("darts", overrides={"search": {"relaxation": "partial-channels"}, "relax": {"kk": 2}})
    with pytest.raises(ConfigError, match="unknown config key 'relax.k'"):  # softmax has no K
        resolve("darts", overrides={"relax": {"k": 2}})


def test_old_keys_migrate(capsys):
    cfg = resolve(
        "darts", overrides={"search": {"relaxation": "partial-channels", "pc_k": 2}}
    )  # the example of the issue
    assert cfg.relax.k == 2 and "pc_k" not in cfg.search
    assert "search.pc_k is now relax.k" in capsys.readouterr().err
    cfg = resolve("milenas", overrides={"search": {"rarts_lambda": 3.0}})  # a RARTS key: the method's section
    assert cfg.milenas["lambda"] == 3.0
    with pytest.raises(ConfigError, match="unknown config key 'idarts'"):  # an IDARTS key under RARTS
        resolve("rarts", overrides={"search": {"idarts_eta2": 0.5}})


def test_method_options_inherit_along_the_class_hierarchy():
    from diffnas.methods import METHODS

    assert METHODS["idarts"].paper_defaults() == METHODS["pc-darts"].paper_defaults()  # stated once, inherited
    assert METHODS["max-alpha"].option_defaults() == {"warmup_epochs": 0, "warmup_a_wd": 1e-3}
    assert set(METHODS["milenas"].option_defaults()) == {"lambda"}  # no y network: RARTS's y options dropped


def test_method_relaxation_misfit_is_one_line_exit_2(capsys, tmp_path):
    code = main(["search", "--method", "idarts", "--relaxation", "softmax", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "method idarts needs a relaxation with edge-betas (partial-channels), not softmax" in err
    assert not (tmp_path / "r").exists()  # nothing ran


class _ToySpace(SearchSpace):
    """A space with one architecture score per channel: no op edges (as a width space)."""

    name = "toy"
    help = "toy"
    datasets = ("mnist",)
    provides = frozenset({"projection"})
    defaults = {"train": {"epochs": 1}}


def test_space_misfits_name_the_part(monkeypatch):
    monkeypatch.setitem(SPACES, "toy", _ToySpace)
    cfg = {"method": "darts", "space": "toy", "dataset": "mnist", "search": {"relaxation": "softmax"}, "reg": {}}
    assert misfits(cfg) == ["relaxation softmax does not work on space toy: it needs op-edges"]
    cfg = {**cfg, "dataset": "cifar10", "reg": {"latency": 0.002}}
    assert misfits(cfg)[1:] == [
        "regularizer latency does not work on space toy: it needs edge-shapes",
        "space toy takes the data sets mnist, not cifar10",
    ]


def test_spaces_and_methods_list_what_works_with_what(capsys):
    assert main(["spaces"]) == 0
    out = capsys.readouterr().out
    assert "nasp12" in out and "task classification (acc)" in out and "regularizers proximity" in out
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "relaxation coordinate (works with coordinate)" in out  # darts-cd
    assert "relaxation partial-channels (works with partial-channels)" in out  # idarts


def test_train_finds_the_space_from_the_genotype_file(tmp_path, capsys):
    import json

    import yaml
    from helpers import write_fake_idx

    data = write_fake_idx(tmp_path / "data")
    genotype = {
        "space": "nasp12",
        "nodes": 2,
        "normal": [["conv_3x3", 0], ["skip_connect", 1], ["sep_conv_3x3", 0], ["conv_1x1", 2]],
        "reduce": [["max_pool_5x5", 0], ["avg_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 0]],
    }
    (tmp_path / "g.json").write_text(json.dumps(genotype))
    args = ["train", "--genotype", str(tmp_path / "g.json"), "--data-dir", str(data), "--preset", "tiny"]
    assert main([*args, "--subset", "64", "--out", str(tmp_path / "t"), "--no-progress"]) == 0  # no --space
    assert yaml.safe_load((tmp_path / "t" / "config.yaml").read_text())["space"] == "nasp12"
    assert "test acc" in capsys.readouterr().out
