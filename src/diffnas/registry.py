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

