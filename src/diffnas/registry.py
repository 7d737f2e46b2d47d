"""Plug-in discovery: a new method, relaxation or regularizer is a module dropped into its package.

Each package imports all of its modules once and collects the classes that declare a
``name``; nothing central lists them, so adding a part never edits a shared file.
"""

from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package: str) -> None:
    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        importlib.import_module(f"{package}.{info.name}")


def named_subclasses(base: type) -> dict[str, type]:
    """Every subclass of ``base`` (at any depth) that sets ``name`` in its own body, by that name."""
    found: dict[str, type] = {}
    stack = [base]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub.__dict__.get("name") and sub.__module__.startswith("diffnas."):
                found.setdefault(sub.name, sub)
            stack.append(sub)
    return found


DROP = "<dropped by a subclass>"  # an inherited option a subclass does not have


def inherited(cls: type, attr: str) -> dict:
    """The dict ``attr`` merged along ``cls``'s class hierarchy, base first: a subclass states only what it changes.

    A subclass removes an inherited key by setting it to ``DROP``."""
    out: dict = {}
    for klass in reversed(cls.__mro__):
        own = klass.__dict__.get(attr)
        if isinstance(own, dict):
            out = _deep_merge(out, own)
    return {k: v for k, v in out.items() if v is not DROP}


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out
