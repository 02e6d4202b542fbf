"""Supervised pre-training on class labels — the upper reference every self-supervised method is compared with.

    loss = cross_entropy(Linear(backbone.encode(batch)["global_feats"]), batch["label"])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ssl3d.data.datasets import collate_for
from ssl3d.methods import register_method
from ssl3d.methods.base import Method

__all__ = ["SupervisedPretraining"]


@register_method("supervised")
class SupervisedPretraining(Method):
    """Backbone + linear classifier on the global feature, trained with cross-entropy on ``batch["label"]``."""

    def __init__(self, backbone, num_classes: int, voxel_size: float = 0.05):
        super().__init__(backbone)
        if num_classes < 2:
            raise ValueError(f"num_classes must be ≥ 2, got {num_classes}")
        ref = next(backbone.parameters())
        self.fc = torch.nn.Linear(backbone.global_dim, num_classes).to(ref.device, ref.dtype)
        self._collate = collate_for(backbone, voxel_size)

    def collate(self, items: list[dict]) -> dict:
        return self._collate(items)

    def forward(self, batch: Mapping) -> dict[str, torch.Tensor]:
        logits = self.fc(self.backbone.encode(batch)["global_feats"])  # (B, K)
        label = batch["label"].to(logits.device)
        loss = torch.nn.functional.cross_entropy(logits, label)
        return {"loss": loss, "accuracy": (logits.argmax(1) == label).float().mean()}
