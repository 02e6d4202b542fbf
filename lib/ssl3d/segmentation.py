"""Semantic segmentation with a sparse backbone: model wrapper, training step, evaluation at the points.

The same pieces serve the from-scratch baseline (02_sparse_convolution) and every fine-tuning experiment after
pre-training (PointContrast, image-to-point): a backbone that maps voxels to D-dimensional features, and a linear
head D → classes that fine-tuning re-initialises.

    model = SparseSegmenter(build_model("res16unet14a", in_channels=3, out_channels=32), num_classes=12)
    loss = segmentation_step(model, batch)                    # batch from datasets.collate_scenes
    result = evaluate_segmentation(model, test_dataset)       # mIoU at the original points
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ssl3d import sparse as sp
from ssl3d.evaluate import confusion_matrix, iou_from_confusion

__all__ = ["SparseSegmenter", "to_sparse", "segmentation_step", "SegResult", "evaluate_segmentation"]


class SparseSegmenter(nn.Module):
    """Sparse backbone (voxels → D features) + linear classifier (D → classes), applied per voxel."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.head = nn.Linear(backbone.out_channels, num_classes)

    def forward(self, x: sp.SparseTensor) -> torch.Tensor:
        return self.head(self.backbone(x).feats)  # (M, num_classes)

    def reset_head(self, num_classes: int | None = None) -> None:
        self.num_classes = num_classes or self.num_classes
        self.head = nn.Linear(self.backbone.out_channels, self.num_classes)


def to_sparse(batch: dict, device=None, backend: str | None = None) -> sp.SparseTensor:
    """A :func:`ssl3d.data.datasets.collate_scenes` batch → SparseTensor on ``device`` (rows in the batch's order)."""
    return sp.SparseTensor(batch["coords"].to(device or "cpu"), batch["feats"].to(device or "cpu"), backend=backend)


def _device(model: nn.Module):
    return next(model.parameters()).device


def segmentation_step(model: SparseSegmenter, batch: dict, ignore_index: int = -100) -> torch.Tensor:
    """Cross-entropy over the labelled voxels of a scene batch (``ignore_index`` voxels do not count)."""
    dev = _device(model)
    logits = model(to_sparse(batch, dev))  # (M, K)
    return nn.functional.cross_entropy(logits, batch["labels"].to(dev), ignore_index=ignore_index)


@dataclass
class SegResult:
    """mIoU over classes present in the evaluation set; per-class IoU (NaN = absent); point accuracy."""

    miou: float
    iou: np.ndarray
    accuracy: float
    confusion: np.ndarray
    predictions: list  # per scene: (N,) predicted labels at the original points


def evaluate_segmentation(model: SparseSegmenter, dataset, ignore_index: int = -100,
                          num_classes: int | None = None) -> SegResult:
    """Predict every scene of ``dataset`` (items as in :class:`~ssl3d.data.datasets.SceneDataset`), bring the
    per-voxel predictions back to the original points through ``inverse``, and score them there."""
    from ssl3d.data.datasets import collate_scenes

    k = num_classes or model.num_classes
    cm = torch.zeros(k, k, dtype=torch.long)
    preds = []
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(len(dataset)):
                b = collate_scenes([dataset[i]])
                pred = model(to_sparse(b, _device(model))).argmax(1).cpu()[b["inverse"]]  # (N,) at the points
                cm += confusion_matrix(pred, b["point_labels"], k, ignore_index)
                preds.append(pred.numpy())
    finally:
        model.train(was)
    iou, miou = iou_from_confusion(cm)
    acc = cm.diag().sum().item() / max(cm.sum().item(), 1)
    return SegResult(float(miou), np.asarray(iou), acc, cm.numpy(), preds)
