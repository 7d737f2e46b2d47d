"""The catalogue of parts: find spaces, methods, relaxations, schedules and regularizers by name,
resolve a run's config from their defaults, and say before anything runs what does not fit.

Each part owns its keys: a space its retraining protocol (``train``), the chosen
relaxation its options (``relax``), a method its paper's values of shared keys
(``defaults``) and its own options (the section named after it). Settings resolve in
this order, later wins: shared defaults, the space's, the method's, the preset, the
YAML file, the flags and ``--set``.
"""

from __future__ import annotations

import os

import yaml

from .config import DEFAULTS, PRESETS, Config, load_yaml, merge, migrate, validate
from .errors import ConfigError, did_you_mean
from .methods import METHODS, get_method
from .regularizers import REGULARIZERS, get_regularizer
from .relax import RELAXATIONS, get_relaxation
from .spaces import SPACES, get_space_class

# a YAML mapping of config keys laid over every new run's config, last (tests/test_readme.py runs the
# README's examples on tiny data with it); not for users: a flag or --set says the same visibly
FORCED = "DIFFNAS_FORCE_CONFIG"


def _last(layers: list[dict], section: str | None, key: str):
    for layer in reversed(layers):
        node = layer.get(section) if section else layer
        if isinstance(node, dict) and node.get(key) is not None:
            return node[key]
    return None


def resolve(
    method: str | None = None, preset: str | None = None, file=None, overrides: dict | None = None, forced=True
) -> Config:
    """Shared defaults <- space (and its named ``train.protocol``) <- method <- the space's word on the method <-
    preset (the space's own, if it has one) <- file <- overrides (flags, then --set); validated."""
    if preset and preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'{did_you_mean(preset, PRESETS)}; choose from {', '.join(PRESETS)}")
    layers = [{"method": method} if method else {}]
    if file:
        layers.append(load_yaml(file))
    layers.append(overrides or {})
    if forced and os.environ.get(FORCED):  # the README test: every example at a tiny scale, in its subprocesses too
        layers.append(yaml.safe_load(os.environ[FORCED]))
    method_cls = get_method(_last(layers, None, "method") or DEFAULTS["method"])
    layers = [migrate(layer, method_cls.name) for layer in layers]
    paper = method_cls.paper_defaults()
    space_cls = get_space_class(_last([paper, *layers], None, "space") or DEFAULTS["space"])
    if preset:  # a space's own preset of that name replaces the shared one (the shared ones are image-sized)
        layers.insert(1, space_cls.presets.get(preset, PRESETS[preset]))
    space_word = space_cls.defaults_for(method_cls.name)  # a space may name the relaxation (width: channel scores)
    relax_cls = get_relaxation(_last([paper, space_word, *layers], "search", "relaxation") or method_cls.relaxation)

    cfg = merge(DEFAULTS, space_cls.defaults, allow_new=True)
    protocol = _last(layers, "train", "protocol")
    if protocol:  # a named retraining protocol of the space replaces its default one, key by key
        cfg = merge(cfg, {"train": space_cls.protocol(protocol)})
    owned = {"relax": relax_cls.defaults()}
    if method_cls.option_defaults():
        owned[method_cls.name] = method_cls.option_defaults()
    cfg = merge(cfg, owned, allow_new=True)
    cfg = merge(cfg, paper, where="")  # a method's defaults may only set keys that exist
    cfg = merge(cfg, space_word, where="")  # the space's word on this method
    for layer in layers:
        cfg = merge(cfg, layer)
    cfg.update(method=method_cls.name, space=space_cls.name)
    cfg["search"]["relaxation"] = relax_cls.name
    return check(cfg)


# What a resumed run may change: more epochs (to extend it), the device, and the learning rates and
# their floors (after a NaN: lower the learning rate and --resume). The resumed job takes the new
# values after loading its checkpoint (``engine.resume.keep_config``). Any other key is the run itself.
RESUMABLE = (
    "search.epochs",
    "train.epochs",
    "device",
    "search.w_lr",
    "search.w_lr_min",
    "search.a_lr",
    "train.lr",
    "train.lr_min",
)


def reload(saved: dict, overrides: dict | None = None) -> Config:
    """A saved run's config (config.yaml), migrated, with ``overrides`` on top; validated.

    A resumed run stays the run it was: an override of a key outside ``RESUMABLE`` that changes
    its value is refused, naming the keys, rather than mixing two runs in one directory.
    """
    method = saved.get("method") or DEFAULTS["method"]
    cfg = migrate(saved, method)
    if "relax" not in saved:  # a run of an earlier version: its relaxation's options (and any moved there)
        name = cfg["search"].get("relaxation") or get_method(method).relaxation
        cfg["relax"] = {**get_relaxation(name).defaults(), **cfg.get("relax", {})}
    new = merge(cfg, migrate(overrides or {}, method))
    old, changed = _flat(cfg), _flat(new)
    refused = sorted(k for k in old.keys() | changed.keys() if old.get(k) != changed.get(k) and k not in RESUMABLE)
    if refused:
        raise ConfigError(
            f"--resume continues a run with its own config; cannot change {', '.join(refused)} "
            f"(a resume may change only {', '.join(RESUMABLE)})"
        )
    return check(new)


def _flat(d: dict, where: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{where}{k}.") if isinstance(v, dict) and v else {f"{where}{k}": v})
    return out


def check(cfg: dict) -> Config:
    """Validate the shared keys, the space's (``from_config``) and the fit of the parts; one line on the first
    problem."""
    validate(cfg)
    problems = misfits(cfg)
    if problems:
        raise ConfigError(problems[0])
    cfg = Config.wrap(cfg)
    get_space_class(cfg.space).from_config(cfg)
    return cfg


def misfits(cfg: dict) -> list[str]:
    """Why the chosen parts do not work together (empty when they do)."""
    method_cls = get_method(cfg["method"])
    space_cls = get_space_class(cfg["space"])
    relax_cls = get_relaxation(cfg["search"]["relaxation"] or method_cls.relaxation)
    out = []
    missing = relax_cls.requires - space_cls.provides
    if missing:
        out.append(f"relaxation {relax_cls.name} does not work on space {space_cls.name}: it needs {_list(missing)}")
    missing = method_cls.requires - relax_cls.provides
    if missing:
        fits = [r for r, cls in RELAXATIONS.items() if method_cls.requires <= cls.provides]
        out.append(
            f"method {method_cls.name} needs a relaxation with {_list(missing)} ({' or '.join(fits)}), "
            f"not {relax_cls.name}"
        )
    for name, options in (cfg.get("reg") or {}).items():
        reg_cls = get_regularizer(name)
        missing = reg_cls.requires - space_cls.provides
        if missing and options not in (None, False, 0):
            out.append(f"regularizer {name} does not work on space {space_cls.name}: it needs {_list(missing)}")
    if space_cls.datasets and cfg.get("dataset") not in space_cls.datasets:
        out.append(
            f"space {space_cls.name} takes the data sets {', '.join(space_cls.datasets)}, not {cfg.get('dataset')}"
        )
    return out


def _list(caps) -> str:
    return ", ".join(sorted(caps))


# -- what works with what (``diffnas methods``, ``diffnas spaces``) -----------------------------
def spaces_for_relaxation(relax_name: str) -> list[str]:
    need = get_relaxation(relax_name).requires
    return [name for name, cls in SPACES.items() if need <= cls.provides]


def relaxations_for_method(method_name: str) -> list[str]:
    need = get_method(method_name).requires
    return [name for name, cls in RELAXATIONS.items() if need <= cls.provides]


def method_table() -> list[dict]:
    rows = []
    for name, cls in METHODS.items():
        relaxations = relaxations_for_method(name)
        spaces = sorted({s for r in relaxations for s in spaces_for_relaxation(r)})
        rows.append(
            {
                "name": name,
                "help": cls.help,
                "relaxation": cls.relaxation,
                "relaxations": relaxations,
                "space": cls.paper_defaults().get("space", DEFAULTS["space"]),
                "spaces": spaces,
            }
        )
    return rows


def space_table() -> list[dict]:
    rows = []
    for name, cls in SPACES.items():
        relaxations = [r for r in RELAXATIONS if name in spaces_for_relaxation(r)]
        methods = [m for m in METHODS if set(relaxations_for_method(m)) & set(relaxations)]
        regs = [r for r, c in REGULARIZERS.items() if c.requires <= cls.provides]
        rows.append(
            {
                "name": name,
                "help": cls.help,
                "task": f"{cls.task.name} ({cls.task.metric})",
                "datasets": list(cls.datasets),
                "methods": methods,
                "relaxations": relaxations,
                "regularizers": regs,
            }
        )
    return rows


__all__ = ["check", "method_table", "misfits", "reload", "resolve", "space_table"]
