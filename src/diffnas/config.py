"""Run configuration: the mechanism (merging, validation, old-key migration) and the shared keys.

The config is a nested dict with attribute access. Sections: the shared keys below
(``DEFAULTS``: what every search and retraining has), ``train`` (the space's retraining
protocol), ``relax`` (the chosen relaxation's options), ``reg`` (regularizers) and one
section named after the method for the method's own options. Which parts own which keys
is resolved in ``diffnas.catalog``; an unknown key is an error, so a typo in ``--set``
never passes silently.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

from .errors import ConfigError, did_you_mean

# The DARTS paper's settings (see ../shared/docs/reference-notes.md).
DEFAULTS: dict = {
    "method": "darts",
    "space": "darts",
    "dataset": "fashion-mnist",
    "data_dir": None,
    "download": False,  # fetch a missing mnist / fashion-mnist / cifar10 / cifar100 (diffnas.data.download)
    "subset": None,  # use only this many training images
    "image_size": None,  # resize images once at load
    "seed": 0,
    "device": "auto",
    "precision": "auto",  # auto: bf16 autocast on CUDA, float32 elsewhere | fp32 | bf16
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
        "w_nesterov": False,
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
        # collapse monitor (engine/monitors.py): the dominant Hessian eigenvalue every K epochs (0: never);
        # each costs ``hessian_iters`` Hessian-vector products on one val batch, about 1% of an epoch at K=5
        "hessian_every": 5,
        "hessian_iters": 10,
        "bn_batches": 0,  # re-estimate BN statistics on this many batches before evaluating (0: the papers')
    },
    "reg": {},  # regularizer name -> weight or options, e.g. {"size": 0.01}
    # a table of trained accuracies to look architectures up in (``diffnas.data.benchmark``)
    "benchmark": {
        "file": None,  # CSV; None: no look-up
        "arch_column": "arch",  # the column of architecture strings
        "metrics": None,  # metric columns (list); None: every other column; the first is the one tables show
    },
}

PRECISIONS = ("auto", "fp32", "bf16")

# Keys of earlier versions -> where they live now ("{method}": the section of the run's method).
MOVED = {
    "search.pc_k": "relax.k",
    "search.cd_edges": "relax.edges",
    "search.cd_sample": "relax.sample",
    "search.cd_argmax_none": "relax.argmax_none",
    "search.cd_train_shared": "darts-cd.train_shared",
    "search.warmup_epochs": "{method}.warmup_epochs",
    "search.warmup_a_wd": "{method}.warmup_a_wd",
    "search.hvp_epsilon": "darts2.hvp_epsilon",
    "search.nasp_update": "nasp.update",
    "search.nasp_arch_ops": "nasp.arch_ops",
    **{
        f"search.idarts_{k}": f"idarts.{k}"
        for k in ("start_epoch", "eta2", "lambda", "zeta", "rank", "grad", "gamma", "fd", "fd_eps")
    },
    **{f"search.rarts_{k}": f"{{method}}.{k}" for k in ("lambda", "beta", "y_init", "y_lr")},
}

# Small settings for a first run on a laptop CPU: minutes, not days.
PRESETS: dict = {
    "quick": {
        "subset": 4000,
        "image_size": 16,
        "search": {"epochs": 3, "batch_size": 64, "channels": 8, "layers": 5, "bn_batches": 10},
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
            "bn_batches": 10,
        },
    },
    "tiny": {
        "subset": 400,
        "image_size": 12,
        "search": {"epochs": 2, "batch_size": 32, "channels": 4, "layers": 3, "bn_batches": 10},
        "train": {"epochs": 1, "batch_size": 32, "channels": 4, "layers": 3, "cutout": 0, "bn_batches": 10},
    },
}


def deep_merge(base: dict, update: dict) -> dict:
    """A copy of ``base`` with ``update`` merged in, nested dicts key by key; no validation (see ``merge``)."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else copy.deepcopy(v)
    return out


DROP = "<dropped by a subclass>"  # an inherited option a subclass does not have


def inherited(cls: type, attr: str) -> dict:
    """The dict ``attr`` merged along ``cls``'s class hierarchy, base first: a subclass states only what it changes.

    A subclass removes an inherited key by setting it to ``DROP``."""
    out: dict = {}
    for klass in reversed(cls.__mro__):
        own = klass.__dict__.get(attr)
        if isinstance(own, dict):
            out = deep_merge(out, own)
    return {k: v for k, v in out.items() if v is not DROP}


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
    """Deep-merge ``update`` into a copy of ``base``; unknown keys are errors unless ``allow_new``.

    A value must have its default's type (see ``_like``), so a wrong value is one line here,
    not a traceback deep in a run; ``reg`` is open-ended (each regularizer checks its options).
    """
    out = copy.deepcopy(base)
    for k, v in update.items():
        path = f"{where}{k}"
        if k not in out and not allow_new:
            raise ConfigError(f"unknown config key '{path}'{did_you_mean(path, [where + c for c in out])}")
        if isinstance(out.get(k), dict) and isinstance(v, dict):
            # regularizers are open-ended: a layer adds to the method's (weight 0 or false removes one)
            out[k] = merge(out[k], v, allow_new or path == "reg", path + ".")
        elif k in out and not path.startswith("reg."):
            out[k] = _like(out[k], copy.deepcopy(v), path)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _like(default, value, path: str):
    """``value`` checked against the default's type: a section takes a mapping, a bool a bool, a number a
    number (an int key an int), a list of numbers as many numbers, a string a string; None only where the
    default is None (the part's, or the shared one: ``_get``). A string of digits becomes the number:
    YAML 1.1 reads ``3e-4`` as a string."""
    if default is None or (value is None and _get(DEFAULTS, path) is None):
        return value
    if isinstance(default, dict):
        raise ConfigError(f"{path} is a section: set its keys ({path}.KEY=VALUE), got {value!r}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        return _number(value, isinstance(default, float), path)
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise ConfigError(f"{path} must be a list of {len(default)} values like {list(default)}, got {value!r}")
        return [_like(d, v, f"{path}[{i}]") for i, (d, v) in enumerate(zip(default, value))]
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{path} must be a string, got {value!r}")
    return value


def _get(d: dict, path: str):
    """The value at a dotted ``path`` of ``d`` (None if absent): a key the shared defaults leave unset is
    nullable, also after a preset set it (``--preset tiny --set subset=null``)."""
    for key in path.split("."):
        d = d.get(key) if isinstance(d, dict) else None
    return d


def _number(value, real: bool, path: str):
    what = "a number" if real else "an integer"
    if isinstance(value, str):
        try:
            value = float(value) if real or not value.lstrip("-").isdigit() else int(value)
        except ValueError:
            raise ConfigError(f"{path} must be {what}, got '{value}'") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (real or isinstance(value, int)):
        raise ConfigError(f"{path} must be {what}, got {value!r}")
    return float(value) if real else value


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


def migrate(layer: dict, method: str, warn: bool = True) -> dict:
    """``layer`` with keys of earlier versions moved to where they live now (see ``MOVED``), with a warning."""
    out = copy.deepcopy(layer)
    for old, new in MOVED.items():
        section, key = old.split(".")
        if not isinstance(out.get(section), dict) or key not in out[section]:
            continue
        value = out[section].pop(key)
        new = new.format(method=method)
        new_section, new_key = new.split(".")
        out.setdefault(new_section, {}).setdefault(new_key, value)
        if warn:
            print(f"diffnas: warning: config key {old} is now {new}", file=sys.stderr)
    return out


def validate(cfg: dict):
    """The shared keys' rules; each part checks its own options when it is built."""
    s, t = cfg["search"], cfg.get("train", {})
    for section, name in ((s, "search"), (t, "train")):
        for key in ("epochs", "batch_size", "channels", "layers"):
            if key in section and (not isinstance(section[key], int) or section[key] < 1):
                raise ConfigError(f"{name}.{key} must be a positive integer, got {section[key]!r}")
    if not 0.0 < s["train_portion"] < 1.0:
        raise ConfigError(f"search.train_portion must be in (0, 1), got {s['train_portion']}")
    if s["nodes"] < 1:
        raise ConfigError(f"search.nodes must be >= 1, got {s['nodes']}")
    for key, low in (("subset", 2), ("image_size", 1)):  # None by default: merge cannot check their type
        value = cfg.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise ConfigError(f"{key} must be an integer >= {low}, got {value!r}")
    if not isinstance(cfg["reg"], dict):
        raise ConfigError("reg must be a mapping of regularizer name to weight or options")
    if cfg.get("precision", "auto") not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg['precision']!r}")
