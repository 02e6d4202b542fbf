"""Heads, in one place: what sits on a backbone for one task, and the two task models built from them.

    SegHead      per-site classifier: hidden SharedMLP layers → Linear (a bare Linear when there are none)
    Segmenter    backbone + SegHead: per-site logits (GMM pretext components, parts, semantic classes)
    Classifier   backbone + Linear on the global feature: one logit vector per sample

Both task models take a collated batch (``model(batch)``) and have :meth:`reset_head`, which swaps in a freshly
initialised head *on the backbone's device and dtype* — fine-tuning starts from a pre-trained backbone and a new
head. The default head of a backbone family is its ``head_spec`` (PointNet's 512-256-128 MLP, DGCNN's 256-256-128
with dropout, a linear layer on a sparse U-Net's last decoder block — in place of its output layer, which
pre-training shaped for its own loss; ``head_spec["input"]`` names the ``encode`` entry a head reads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ssl3d.models.base import Backbone, SharedMLP, factored_linear

__all__ = ["SegHead", "Segmenter", "Classifier", "head_features", "head_input"]


def _like(module: nn.Module, backbone: nn.Module) -> nn.Module:
    """``module`` moved to the device and floating dtype of ``backbone``'s parameters."""
    ref = next(backbone.parameters())
    return module.to(ref.device, ref.dtype)


class SegHead(nn.Module):
    """Per-site classifier: (..., C_in) → (..., num_outputs). Hidden SharedMLP layers (dropout after all but the
    last), then a Linear layer. With ``hidden=()`` it is a single Linear layer."""

    def __init__(self, c_in: int, num_outputs: int, hidden: Sequence[int] = (), dropout: float = 0.0,
                 act: str = "relu"):
        super().__init__()
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be ≥ 1, got {num_outputs}")
        layers: list[nn.Module] = []
        c = c_in
        for i, h in enumerate(hidden):
            layers.append(SharedMLP(c, h, act))
            if dropout > 0 and i < len(hidden) - 1:
                layers.append(nn.Dropout(dropout))
            c = h
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(c, num_outputs)
        self.num_outputs = num_outputs

    @classmethod
    def for_backbone(cls, backbone: Backbone, num_outputs: int, **overrides) -> SegHead:
        """The backbone family's default head (``backbone.head_spec``, keyword arguments overriding it), created on
        the backbone's device and dtype."""
        spec = {**backbone.head_spec, **overrides}
        c_in = backbone.feat_dim if spec.get("input", "feats") == "feats" else spec["input_dim"]
        head = cls(c_in, num_outputs, spec.get("hidden", ()), spec.get("dropout", 0.0), spec.get("act", "relu"))
        return _like(head, backbone)

    def forward(self, x) -> torch.Tensor:
        """x: (..., C_in), or a point backbone's ``feats_factored`` pair (local (B, N, C_l), global (B, C_g)), which
        the first layer reads without repeating the global part at every point (``factored_linear``)."""
        if isinstance(x, tuple) and len(self.hidden) == 0:
            return factored_linear(self.out, *x)
        return self.out(self.hidden(x))


def head_input(backbone: Backbone, **overrides) -> str:
    """The ``encode`` entry a per-site head reads: ``head_spec["input"]`` (overridable), ``"feats"`` by default."""
    return {**backbone.head_spec, **overrides}.get("input", "feats")


def head_features(encoded: Mapping, key: str):
    """``encoded[key]`` — for ``"feats"`` of a point backbone its factored form ``feats_factored`` instead, which a
    :class:`SegHead` turns into the same logits with fewer multiply-adds."""
    if key == "feats" and "feats_factored" in encoded:
        return encoded["feats_factored"]
    return encoded[key]


class Segmenter(nn.Module):
    """Backbone + per-site head. ``forward(batch)`` → logits (B, N, K) for point backbones, (ΣM, K) for sparse ones."""

    def __init__(self, backbone: Backbone, num_classes: int, **head_overrides):
        super().__init__()
        self.backbone = backbone
        self._head_overrides = head_overrides
        self.input = head_input(backbone, **head_overrides)
        self.head = SegHead.for_backbone(backbone, num_classes, **head_overrides)

    @property
    def num_classes(self) -> int:
        return self.head.num_outputs

    def forward(self, batch: Mapping) -> torch.Tensor:
        return self.head(head_features(self.backbone.encode(batch), self.input))

    def reset_head(self, num_classes: int | None = None) -> None:
        """A freshly initialised head (``num_classes`` outputs, default: unchanged) on the backbone's device."""
        self.head = SegHead.for_backbone(self.backbone, num_classes or self.num_classes, **self._head_overrides)


class Classifier(nn.Module):
    """Backbone + linear classifier on the global feature. ``forward(batch)`` → logits (B, num_classes)."""

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs num_classes ≥ 2, got {num_classes}")
        self.backbone, self.dropout = backbone, dropout
        self.head = self._new_head(num_classes)

    def _new_head(self, num_classes: int) -> nn.Module:
        return _like(nn.Sequential(nn.Dropout(self.dropout), nn.Linear(self.backbone.global_dim, num_classes)),
                     self.backbone)

    @property
    def num_classes(self) -> int:
        return self.head[-1].out_features

    def forward(self, batch: Mapping) -> torch.Tensor:
        return self.head(self.backbone.encode(batch)["global_feats"])

    def reset_head(self, num_classes: int | None = None) -> None:
        """A freshly initialised classifier (``num_classes`` outputs, default: unchanged) on the backbone's device."""
        self.head = self._new_head(num_classes or self.num_classes)
