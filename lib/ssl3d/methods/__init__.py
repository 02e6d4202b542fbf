"""Pre-training methods, chosen by name (the Pointcept pattern).

    from ssl3d.methods import build_method, list_methods
    method = build_method("gmm", backbone, J=16, cov="full")      # an nn.Module that wraps the backbone
    out = method(method.collate(items))                           # {"loss": scalar, <metrics>: floats …}
    ssl3d.train.pretrain(method, dataset, epochs=12, ...)         # the same loop for every method
    ssl3d.models.save_backbone(method.backbone, "gmm.pt")         # what fine-tuning and probes start from

A method is one file here: a :class:`~ssl3d.methods.base.Method` subclass registered with
:func:`register_method`. The maths it needs lives in its own library module (``ssl3d.gmm``, ``ssl3d.contrastive``,
…); the method only connects a backbone, its pretext head and that maths.
"""

from __future__ import annotations

import importlib

from ssl3d.methods.base import Method

__all__ = ["Method", "register_method", "build_method", "list_methods"]

_REGISTRY: dict[str, type[Method]] = {}
# Modules that register methods, imported on first use (an import error in one of them is never hidden).
_MODULES = ("gmm", "supervised", "pointcontrast", "image_to_point", "act")


def register_method(name: str):
    """Decorator: ``@register_method("gmm")`` on a :class:`Method` subclass makes it buildable by name."""

    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"register_method: {cls!r} is not a subclass of ssl3d.methods.Method")
        key = name.lower()
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"method name '{key}' is registered twice")
        cls.name = key
        _REGISTRY[key] = cls
        return cls

    return deco


def _load_all():
    for mod in _MODULES:
        importlib.import_module(f"{__name__}.{mod}")


def list_methods() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def build_method(name: str, backbone, **cfg) -> Method:
    """Wrap ``backbone`` in the registered method ``name`` with its settings ``cfg``."""
    _load_all()
    key = name.lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown method '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key](backbone, **cfg)
