"""Backbones, chosen by name (timm/Pointcept style).

    from ssl3d.models import build_model, list_models
    net = build_model("res16unet34c", in_channels=1, out_channels=32)

Each model module registers its constructors with :func:`register`; this package imports the modules on first
use, so ``import ssl3d.models`` stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

__all__ = ["register", "build_model", "list_models"]

_REGISTRY: dict[str, Callable] = {}
# Modules that register models. Listed explicitly so that an import error in one of them is never hidden.
_MODULES = ("point", "sparse_unet", "transformer")


def register(name: str | None = None):
    """Decorator: ``@register("pointnet")`` on a class or factory function makes it buildable by name."""

    def deco(fn):
        key = (name or fn.__name__).lower()
        if key in _REGISTRY and _REGISTRY[key] is not fn:
            raise ValueError(f"model name '{key}' is registered twice")
        _REGISTRY[key] = fn
        return fn

    return deco


def _load_all():
    for mod in _MODULES:
        full = f"{__name__}.{mod}"
        if importlib.util.find_spec(full) is not None:
            importlib.import_module(full)


def list_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def build_model(name: str, **kwargs):
    """Build a registered model by (case-insensitive) name; unknown names list the available ones."""
    _load_all()
    key = name.lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown model '{name}'; available: {', '.join(sorted(_REGISTRY)) or '(none)'}")
    return _REGISTRY[key](**kwargs)
