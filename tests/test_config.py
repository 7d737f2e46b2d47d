"""Config layering and the CLI flags that swap a search's parts."""

import pytest

from diffnas.catalog import resolve
from diffnas.cli import _overrides, build_parser
from diffnas.errors import ConfigError
from diffnas.regularizers import REGULARIZERS, Regularizer, build_regularizers
from diffnas.schedules import EveryK, build_schedule


def parse(*argv):
    args = build_parser().parse_args(["search", *argv])
    return _overrides(args, "search")


def test_part_flags_reach_the_config():
    out = parse("--schedule", "every:3", "--relaxation", "softmax", "--reg", "a=0.5", "--reg", "b", "--epochs", "2")
    assert out["search"] == {"epochs": 2, "schedule": "every:3", "relaxation": "softmax"}
    assert out["reg"] == {"a": 0.5, "b": True}


def test_reg_layers_add_and_zero_removes(monkeypatch):
    monkeypatch.setitem(REGULARIZERS, "x", Regularizer)
    cfg = resolve("darts", overrides={"reg": {"x": 1.0, "size": 2.0}})
    assert cfg.reg == {"x": 1.0, "size": 2.0}
    with pytest.raises(ConfigError, match="unknown regularizer 'y'"):  # before anything runs
        resolve("darts", overrides={"reg": {"y": 1.0}})
    assert len(build_regularizers({"x": 1.0}, None)) == 1
    assert build_regularizers({"x": 0}, None) == []  # weight 0 turns a regularizer off
    with pytest.raises(ConfigError, match="unknown regularizer 'y'"):
        build_regularizers({"y": 0}, None)


def test_schedule_specs():
    assert isinstance(build_schedule("every:4"), EveryK) and build_schedule("every:4").k == 4
    with pytest.raises(ConfigError, match="bad argument"):
        build_schedule("every:x")
    with pytest.raises(ConfigError, match="bad argument"):
        build_schedule("alternate:3")
    with pytest.raises(ConfigError, match="unknown schedule"):
        build_schedule("sometimes")


def test_unknown_keys_are_errors():
    with pytest.raises(ConfigError, match="unknown config key 'search.epoch'"):
        resolve("darts", overrides={"search": {"epoch": 3}})
