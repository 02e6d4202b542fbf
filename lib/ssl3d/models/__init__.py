"""Backbones, chosen by name (timm/Pointcept style), and checkpoints that rebuild them.

    from ssl3d.models import build_model, list_models, save_backbone, load_backbone
    net = build_model("res16unet34c", in_channels=0, out_channels=32)
    save_backbone(net, "runs/pc.pt", method="pointcontrast")     # registry name + constructor arguments + weights
    net2 = load_backbone("runs/pc.pt")                            # rebuilt from the file alone

Every backbone follows the contract of :mod:`ssl3d.models.base` (``encode(batch)`` → per-site and global features);
heads live in :mod:`ssl3d.models.heads`. Each model module registers its classes with :func:`register`; this
package imports the modules on first use, so ``import ssl3d.models`` stays cheap.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["register", "build_model", "list_models", "model_name", "save_backbone", "load_backbone",
           "load_state_dict_checked"]

_REGISTRY: dict[str, Callable] = {}
# Modules that register models. Listed explicitly so that an import error in one of them is never hidden.
_MODULES = ("point", "sparse_unet", "transformer")
FORMAT = "ssl3d.backbone/1"


def register(name: str | None = None):
    """Decorator: ``@register("pointnet")`` on a backbone class makes it buildable by name."""

    def deco(cls):
        key = (name or cls.__name__).lower()
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"model name '{key}' is registered twice")
        _REGISTRY[key] = cls
        return cls

    return deco


def _load_all():
    for mod in _MODULES:
        importlib.import_module(f"{__name__}.{mod}")


def list_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def build_model(name: str, **kwargs):
    """Build a registered backbone by (case-insensitive) name; unknown names list the available ones."""
    _load_all()
    key = name.lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown model '{name}'; available: {', '.join(sorted(_REGISTRY)) or '(none)'}")
    return _REGISTRY[key](**kwargs)


def model_name(model) -> str:
    """The registry name of a backbone's class (raises if the class is not registered)."""
    _load_all()
    for key, cls in _REGISTRY.items():
        if type(model) is cls:
            return key
    raise KeyError(f"{type(model).__name__} is not a registered backbone: register it with @ssl3d.models.register")


def load_state_dict_checked(model: torch.nn.Module, state: dict, source: str = "checkpoint") -> None:
    """``model.load_state_dict(state)`` with an error that names every missing, unexpected and misshapen key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        def show(xs):
            return ", ".join(xs[:8]) + (f" … (+{len(xs) - 8} more)" if len(xs) > 8 else "") if xs else "none"

        raise ValueError(f"{source} does not match {type(model).__name__}: missing keys [{show(missing)}]; "
                         f"unexpected keys [{show(unexpected)}]; shape mismatches [{show(shapes)}]. Rebuild the "
                         f"model from the checkpoint (ssl3d.models.load_backbone) or pass a checkpoint of this "
                         f"architecture")
    model.load_state_dict(state)


def save_backbone(model, path: str | Path, **meta) -> Path:
    """Atomically write a backbone checkpoint: registry name, constructor arguments, weights, and ``meta``
    (plain Python values: method name, steps, profile, …). :func:`load_backbone` rebuilds the network from it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "name": model_name(model), "config": model.config,
             "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": meta}
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def _read_backbone_file(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"backbone checkpoint {path} does not exist: run the pre-training that writes it "
                                f"first, or pass the right path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a torch file, or objects weights_only refuses
        raise ValueError(f"backbone checkpoint {path} could not be read ({type(e).__name__}: {e}); it is truncated, "
                         f"not a torch file, or not written by ssl3d.models.save_backbone") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not an ssl3d backbone checkpoint (format {FORMAT!r}); write it with "
                         f"ssl3d.models.save_backbone")
    return state


def load_backbone(path: str | Path, device=None, into=None, return_meta: bool = False):
    """Rebuild a backbone from a :func:`save_backbone` file alone (``weights_only=True``), or load its weights
    ``into`` an existing network (an error names the mismatched keys). ``return_meta=True`` → (model, meta)."""
    path = Path(path)
    state = _read_backbone_file(path)
    model = build_model(state["name"], **state["config"]) if into is None else into
    load_state_dict_checked(model, state["state_dict"], f"backbone checkpoint {path} ({state['name']})")
    if device is not None:
        model = model.to(device)
    return (model, state["meta"]) if return_meta else model
