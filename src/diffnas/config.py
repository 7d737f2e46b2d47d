"""Run configuration: paper defaults, then the method's defaults, then a YAML file, then flags.

The config is a nested dict with attribute access. Every key that exists is listed in
``DEFAULTS`` or in a method's ``defaults``; an unknown key is an error, so a typo in
``--set`` never passes silently.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from .errors import ConfigError

# The DARTS paper's settings (see ../shared/docs/reference-notes.md).
DEFAULTS: dict = {
    "method": "darts",
    "space": "darts",
    "dataset": "fashion-mnist",
    "data_dir": None,
    "subset": None,  # use only this many training images
    "image_size": None,  # resize images once at load
    "seed": 0,
    "device": "auto",
    "search": {
        "epochs": 50,
        "batch_size": 64,
        "channels": 16,
        "layers": 8,
        "nodes": 4,
        "train_portion": 0.5,  # of the training set; the rest is the architecture's val split
        "w_lr": 0.025,
        "w_lr_min": 0.001,
        "w_momentum": 0.9,
        "w_wd": 3e-4,
        "grad_clip": 5.0,
        "a_lr": 3e-4,
        "a_betas": [0.5, 0.999],
        "a_wd": 1e-3,
        "arch_start_epoch": 0,  # architecture frozen before this epoch (PC-DARTS: 15)
        "schedule": "alternate",  # when architecture steps happen: alternate | every:K
        "relaxation": None,  # None: the method's own; else a name from diffnas.relax
        "crop_padding": None,  # None: image_size // 8
        "cutout": 0,
    },
    "reg": {},  # regularizer name -> weight or options, e.g. {"size": 0.01}
    "train": {
        "epochs": 600,
        "batch_size": 96,
        "channels": 36,
        "layers": 20,
        "lr": 0.025,
        "lr_min": 0.0,
        "momentum": 0.9,
        "wd": 3e-4,
        "grad_clip": 5.0,
        "cutout": 16,
        "crop_padding": None,
        "drop_path": 0.2,
        "auxiliary": 0.4,  # weight of the auxiliary head's loss; 0 turns the head off
    },
}

# Small settings for a first run on a laptop CPU: minutes, not days.
PRESETS: dict = {
    "quick": {
        "subset": 4000,
        "image_size": 16,
        "search": {"epochs": 3, "batch_size": 64, "channels": 8, "layers": 5},
        # a few epochs learn more without cutout, drop path and the auxiliary head (measured: 0.80 vs 0.74)
        "train": {
            "epochs": 8,
            "batch_size": 96,
            "channels": 16,
            "layers": 8,
            "lr": 0.1,
            "cutout": 0,
            "drop_path": 0.0,
            "auxiliary": 0.0,
        },
    },
    "tiny": {
        "subset": 400,
        "image_size": 12,
        "search": {"epochs": 2, "batch_size": 32, "channels": 4, "layers": 3},
        "train": {"epochs": 1, "batch_size": 32, "channels": 4, "layers": 3, "cutout": 0},
    },
}


class Config(dict):
    """A nested dict whose keys read as attributes: ``cfg.search.epochs``."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    @classmethod
    def wrap(cls, d):
        return cls({k: cls.wrap(v) if isinstance(v, dict) and not isinstance(v, Config) else v for k, v in d.items()})

    def to_plain(self) -> dict:
        return {k: v.to_plain() if isinstance(v, Config) else v for k, v in self.items()}


def merge(base: dict, update: dict, allow_new: bool = False, where: str = "") -> dict:
    """Deep-merge ``update`` into a copy of ``base``; unknown keys are errors unless ``allow_new``."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        path = f"{where}{k}"
        if k not in out and not allow_new:
            raise ConfigError(f"unknown config key '{path}'")
        if isinstance(out.get(k), dict) and isinstance(v, dict):
            # regularizers are open-ended: a layer adds to the method's (weight 0 or false removes one)
            out[k] = merge(out[k], v, allow_new or path == "reg", path + ".")
        else:
            out[k] = _like(out.get(k), copy.deepcopy(v), path)
    return out


def _like(default, value, path: str):
    """Coerce a string to the default's number type: YAML 1.1 reads ``3e-4`` as a string."""
    if isinstance(default, bool) or not isinstance(default, (int, float)) or not isinstance(value, str):
        return value
    try:
        return float(value) if isinstance(default, float) or not value.lstrip("-").isdigit() else int(value)
    except ValueError:
        raise ConfigError(f"{path} must be a number, got '{value}'") from None


def parse_set(items) -> dict:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}``; values are read as YAML."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def load_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys")
    return data


def resolve(method: str | None = None, preset: str | None = None, file=None, overrides: dict | None = None) -> Config:
    """Paper defaults <- method defaults <- preset <- file <- overrides (flags, then --set)."""
    from .methods import get_method  # methods register their defaults

    layers = [({"method": method} if method else {})]
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset '{preset}'; choose from {', '.join(PRESETS)}")
        layers.append(PRESETS[preset])
    if file:
        layers.append(load_yaml(file))
    layers.append(overrides or {})
    name = next((d["method"] for d in reversed(layers) if d.get("method")), DEFAULTS["method"])
    cfg = merge(DEFAULTS, get_method(name).defaults, allow_new=True)
    for layer in layers:
        cfg = merge(cfg, layer)
    cfg["method"] = name
    validate(cfg)
    return Config.wrap(cfg)


def validate(cfg: dict):
    s, t = cfg["search"], cfg["train"]
    for section, name in ((s, "search"), (t, "train")):
        for key in ("epochs", "batch_size", "channels", "layers"):
            if not isinstance(section[key], int) or section[key] < 1:
                raise ConfigError(f"{name}.{key} must be a positive integer, got {section[key]!r}")
    if not 0.0 < s["train_portion"] < 1.0:
        raise ConfigError(f"search.train_portion must be in (0, 1), got {s['train_portion']}")
    if s["nodes"] < 1:
        raise ConfigError(f"search.nodes must be >= 1, got {s['nodes']}")
    if cfg["subset"] is not None and cfg["subset"] < 2:
        raise ConfigError(f"subset must be at least 2 images, got {cfg['subset']}")
    if not isinstance(cfg["reg"], dict):
        raise ConfigError("reg must be a mapping of regularizer name to weight or options")
