"""The method interface: an ``nn.Module`` that wraps a backbone and turns a batch into a loss.

    class MyMethod(Method):
        def collate(self, items) -> dict: ...             # dataset items → one batch for this method
        def forward(self, batch) -> dict: ...             # {"loss": scalar tensor, <metric>: float, ...}

``ssl3d.train.train`` / ``pretrain`` call ``method(batch)``, back-propagate ``out["loss"]`` and log every other
entry, so one loop pre-trains every method. Pretext heads, projections and frozen teachers are attributes of the
method; the backbone is ``method.backbone`` and is what a method hands on to fine-tuning.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ssl3d.models.base import Backbone

__all__ = ["Method"]


class Method(nn.Module):
    """Base class of the pre-training methods (see the module docstring)."""

    name: str = ""  # set by ssl3d.methods.register_method

    def __init__(self, backbone: Backbone):
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise TypeError(f"{type(self).__name__} wraps an ssl3d backbone (ssl3d.models.build_model), got "
                            f"{type(backbone).__name__}")
        self.backbone = backbone

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def collate(self, items: list[dict]) -> dict:
        """Dataset items → one batch (a dict of tensors) in the layout ``forward`` expects."""
        raise NotImplementedError

    def forward(self, batch: Mapping) -> dict[str, torch.Tensor]:
        raise NotImplementedError
