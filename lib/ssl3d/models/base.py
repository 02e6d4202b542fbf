"""The backbone contract: what every registered network gives to every method and every protocol.

A pre-training method (``ssl3d.methods``) and an evaluation protocol (``ssl3d.protocols``) never look inside a
backbone. They call one method on a collated batch and read two entries of the result::

    out = backbone.encode(batch)     # batch: a dict from a collate function of ssl3d.data.datasets
    out["feats"]          per-site features   point backbones (B, N, feat_dim)   sparse backbones (ΣM, feat_dim)
    out["global_feats"]   one vector per sample                (B, global_dim)

"Sites" are the points of a point backbone and the voxels of a sparse one; for a sparse backbone the rows of
``feats`` follow ``batch["coords"]`` (ΣM, 4) = (batch index, x, y, z). Attributes, the same for both families:

    kind         "point" (fixed-size clouds, ``batch["points"]`` (B, N, 3)) or "sparse" (voxels, ``batch["coords"]``)
    in_channels  input features per site *besides the coordinates* (``batch["feats"]``); 0 = geometry only
                 (a sparse network then sees a constant 1 per voxel, as PointContrast feeds it)
    feat_dim     width of ``feats``            global_dim   width of ``global_feats``
    head_spec    the family's default per-site head (hidden widths, dropout, activation) — ``ssl3d.models.heads``;
                 optionally ``input`` (the ``encode`` entry a fresh head reads, default ``"feats"``) and
                 ``input_dim`` (its width). A sparse U-Net's head reads ``"decoder_feats"``, the last decoder block:
                 a task head *replaces* the pre-training output layer, as the authors' fine-tuning code does
    config       the constructor's arguments, so ``ssl3d.models.load_backbone`` rebuilds a network from its
                 checkpoint alone (nanoGPT's habit)

``forward`` stays each family's natural call (``net(points, feats)`` for point networks, ``net(sparse_tensor)`` for
sparse ones); ``encode`` is the one entry point the rest of the library uses. Heads are never part of a backbone:
they live in :mod:`ssl3d.models.heads`, so one backbone serves a GMM pretext head, a contrastive projection, a
part-segmentation head and a classifier in turn.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["Backbone", "SharedMLP", "factored_linear", "model_device"]


def model_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module with neither)."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


class Backbone(nn.Module):
    """Base class of every registered backbone (see the module docstring for the contract)."""

    kind: ClassVar[str] = ""
    in_channels: int
    feat_dim: int
    global_dim: int
    head_spec: dict = {"hidden": (), "dropout": 0.0, "act": "relu"}

    def __new__(cls, *args, **kwargs):
        # Record the constructor's arguments (defaults filled in) before __init__ runs: a checkpoint stores them
        # so that the network can be rebuilt without the code that built it. (copy.deepcopy calls __new__ with
        # no arguments; the copied __dict__ then brings the original config back.)
        self = super().__new__(cls)
        try:
            bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
            bound.apply_defaults()
            config = {k: v for k, v in bound.arguments.items() if k != "self"}
        except TypeError:
            config = {}
        object.__setattr__(self, "_config", config)
        return self

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's arguments, defaults included (what ``load_backbone`` rebuilds from)."""
        return dict(self._config)

    def encode(self, batch: Mapping) -> dict[str, torch.Tensor]:
        """A collated batch → ``{"feats": per-site features, "global_feats": (B, global_dim)}`` (module docstring)."""
        raise NotImplementedError

    def _batch_feats(self, batch: Mapping, n_sites: int) -> torch.Tensor | None:
        """``batch["feats"]`` checked against ``in_channels`` (None for a geometry-only backbone)."""
        if self.in_channels == 0:
            return None
        f = batch.get("feats")
        name = type(self).__name__
        if f is None:
            raise KeyError(f"{name} was built with in_channels={self.in_channels} but the batch has no 'feats': "
                           f"build it with in_channels=0 (geometry only) or use a dataset that provides features")
        if f.shape[-1] != self.in_channels or f.shape[-2] != n_sites:
            raise ValueError(f"{name} was built with in_channels={self.in_channels}: batch['feats'] must be "
                             f"(…, {n_sites}, {self.in_channels}), got {tuple(f.shape)}")
        return f


def factored_linear(linear: nn.Linear, local: torch.Tensor, glob: torch.Tensor) -> torch.Tensor:
    """``linear([local ‖ glob repeated at every point])`` without repeating ``glob``: (B, N, C_l), (B, C_g) →
    (B, N, C_out). With W = [W_l | W_g] the product is W_l·local + W_g·glob, the same sum; the global half is
    computed once per cloud instead of once per point (PointNet's first segmentation layer: 544 → 32 + 512 inputs,
    so 94 % of its multiply-adds go)."""
    c_l = local.shape[-1]
    if linear.in_features != c_l + glob.shape[-1]:
        raise ValueError(f"factored_linear: {linear.in_features} inputs expected, got {c_l} local + "
                         f"{glob.shape[-1]} global channels")
    y = local @ linear.weight[:, :c_l].T + (glob @ linear.weight[:, c_l:].T).unsqueeze(-2)  # (B, N, C_out)
    return y if linear.bias is None else y + linear.bias


class SharedMLP(nn.Module):
    """The same Linear → BatchNorm → activation applied to every point (or edge): (..., C_in) → (..., C_out).

    BatchNorm statistics run over every point of the batch — the same as the papers' Conv1d/Conv2d + BatchNorm.
    """

    def __init__(self, c_in: int, c_out: int, act: str = "relu"):
        super().__init__()
        if act not in ("relu", "leaky"):
            raise ValueError(f"act must be 'relu' or 'leaky', got {act!r}")
        self.linear = nn.Linear(c_in, c_out, bias=False)  # bias is redundant before BatchNorm
        self.bn = nn.BatchNorm1d(c_out)
        self.act = nn.ReLU() if act == "relu" else nn.LeakyReLU(0.2)

    def forward(self, x) -> torch.Tensor:
        # x: (..., C_in), or a point backbone's factored features (local, global): factored_linear above
        y = factored_linear(self.linear, *x) if isinstance(x, tuple) else self.linear(x)  # (..., C_out)
        y = self.bn(y.reshape(-1, y.shape[-1])).reshape(y.shape)  # statistics over every point of the batch
        return self.act(y)
