"""Evaluation shared by every notebook: linear-SVM probe, feature extraction, segmentation metrics, mean ± std.

Protocols, as the papers use them:

- **Linear SVM on frozen global features** (ModelNet40 / ScanObjectNN): extract one global feature per shape
  from the frozen pre-trained encoder, standardise the features (statistics of the training split), fit a
  linear SVM on the training split, report overall accuracy on the test split (and the mean class accuracy).
- **Semantic segmentation** (S3DIS, ScanNet): accumulate one confusion matrix over the whole test set, then
  per-class IoU = TP / (TP + FP + FN) and mIoU = their mean.
- **Part segmentation** (ShapeNetPart): for every shape, the IoU of each part of *its* category, averaged;
  "instance mIoU" averages over shapes, "class mIoU" over categories.
- Results over several seeds are reported as mean ± sample standard deviation (ddof = 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "ProbeResult",
    "linear_svm_probe",
    "extract_global_features",
    "confusion_matrix",
    "iou_from_confusion",
    "PartIoU",
    "masked_part_argmax",
    "part_miou",
    "mean_std",
]


def _np(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray | list | tuple):
        return np.asarray(x)
    raise TypeError(f"{name} must be a torch.Tensor, numpy array or list, got {type(x).__name__}")


# ----------------------------------------------------------------------------------------------------------
# Linear SVM probe
# ----------------------------------------------------------------------------------------------------------
@dataclass
class ProbeResult:
    """Result of :func:`linear_svm_probe`.

    accuracy:            overall accuracy on the test split (fraction in [0, 1]).
    class_accuracy:      (K,) accuracy of each class in ``classes``; NaN for a class absent from the test split.
    mean_class_accuracy: mean of ``class_accuracy`` over the classes present in the test split ("mAcc").
    classes:             (K,) sorted labels seen in the training or the test split.
    predictions:         (M_test,) predicted labels.
    """

    accuracy: float
    class_accuracy: np.ndarray
    mean_class_accuracy: float
    classes: np.ndarray
    predictions: np.ndarray


def linear_svm_probe(train_x, train_y, test_x, test_y, C: float = 0.01, seed: int = 0,
                     max_iter: int = 10_000) -> ProbeResult:
    """Fit a linear SVM (scikit-learn ``LinearSVC``, one-vs-rest, squared hinge) on standardised features.

    Features are standardised with the mean and standard deviation of the *training* split only. ``C`` is the
    inverse regularisation strength; 0.01 suits standardised high-dimensional (≥ 512-d) features — the field
    tunes it on a grid, do the same on a validation split for final numbers. ``seed`` fixes the solver's
    coordinate order.
    """
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    xtr, xte = _np(train_x, "train_x").astype(np.float64), _np(test_x, "test_x").astype(np.float64)
    ytr, yte = _np(train_y, "train_y").reshape(-1), _np(test_y, "test_y").reshape(-1)
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"features must be (M, D) with the same D for both splits, got train {xtr.shape} and "
                         f"test {xte.shape}")
    if len(ytr) != len(xtr) or len(yte) != len(xte):
        raise ValueError(f"one label per feature row needed: train {len(xtr)} rows / {len(ytr)} labels, "
                         f"test {len(xte)} rows / {len(yte)} labels")
    if len(xtr) == 0 or len(xte) == 0:
        raise ValueError("an empty split: the probe needs training and test features")
    if not (np.isfinite(xtr).all() and np.isfinite(xte).all()):
        raise ValueError("features contain NaN or Inf: check the encoder (did pre-training diverge?)")
    if len(np.unique(ytr)) < 2:
        raise ValueError("the training split has a single class: a classifier needs at least two")
    scaler = StandardScaler().fit(xtr)
    svm = LinearSVC(C=C, random_state=seed, max_iter=max_iter)
    svm.fit(scaler.transform(xtr), ytr)
    pred = svm.predict(scaler.transform(xte))
    classes = np.union1d(ytr, yte)
    class_acc = np.array([np.mean(pred[yte == c] == c) if np.any(yte == c) else np.nan for c in classes])
    return ProbeResult(accuracy=float(np.mean(pred == yte)), class_accuracy=class_acc,
                       mean_class_accuracy=float(np.nanmean(class_acc)), classes=classes, predictions=pred)


# ----------------------------------------------------------------------------------------------------------
# Frozen features
# ----------------------------------------------------------------------------------------------------------
_LABEL_KEYS = ("label", "labels", "y", "cls")


def _split_batch(batch):
    """A batch from a loader → (points, feats or None, labels or None)."""
    if isinstance(batch, torch.Tensor):
        return batch, None, None
    if isinstance(batch, Mapping):
        if "points" not in batch:
            raise KeyError(f"a dict batch needs a 'points' entry, got keys {sorted(batch)}")
        label = next((batch[k] for k in _LABEL_KEYS if k in batch), None)
        return batch["points"], batch.get("feats"), label
    if isinstance(batch, Sequence) and len(batch) >= 1:
        return batch[0], None, (batch[1] if len(batch) > 1 else None)
    raise TypeError(f"cannot read points from a batch of type {type(batch).__name__}: yield a tensor, "
                    f"(points, labels) or a dict with 'points'")


def _as_batches(data, batch_size: int):
    """Tensors (points, or (points, labels)) → an iterator of (points, labels) slices; a loader → itself."""
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if isinstance(data, torch.Tensor):
        data = (data,)
    # (points,) or (points, labels): points are (M, N, 3), labels (M,) or per point (M, N) — never 3-D, which
    # tells this apart from a list of two point batches
    if isinstance(data, tuple | list) and 1 <= len(data) <= 2 and isinstance(data[0], torch.Tensor | np.ndarray) \
            and np.ndim(data[0]) == 3 and (len(data) == 1 or np.ndim(data[1]) <= 2):
        pts = torch.as_tensor(data[0])
        lab = torch.as_tensor(data[1]) if len(data) == 2 else None
        if lab is not None and len(lab) != len(pts):
            raise ValueError(f"{len(pts)} clouds but {len(lab)} labels")
        return ((pts[s:s + batch_size], None if lab is None else lab[s:s + batch_size])
                for s in range(0, len(pts), batch_size))
    return data


def extract_global_features(model: torch.nn.Module, data, batch_size: int = 32, device=None):
    """Global features of frozen ``model`` (eval mode, no gradient) for a whole dataset.

    Args:
        model: a backbone whose forward returns a dict with "global_feats" (B, D), e.g. ``PointNetSeg``/``DGCNN``.
        data: a (M, N, 3) tensor/array, a tuple ``(points (M, N, 3), labels (M,))``, or an iterable of batches
            (a DataLoader) yielding tensors, ``(points, labels, ...)`` or dicts with "points" (and optionally
            "feats" and "label"/"labels").
        batch_size: clouds per forward pass when ``data`` is tensors (a loader keeps its own batch size).
        device: where to run; default the model's device.
    Returns:
        features (M, D) float32 on the CPU, labels (M, …) or None when the data carries none.
    The model's train/eval mode is restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    params = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (params.device if params is not None else "cpu")
    dtype = params.dtype if params is not None else torch.float32
    was_training = model.training
    model.eval()
    feats_out, labels_out = [], []
    try:
        with torch.no_grad():
            for batch in _as_batches(data, batch_size):
                pts, extra, lab = _split_batch(batch)
                pts = torch.as_tensor(pts).to(device, dtype)
                extra = None if extra is None else torch.as_tensor(extra).to(device, dtype)
                out = model(pts, extra) if extra is not None else model(pts)
                if not isinstance(out, Mapping) or "global_feats" not in out:
                    raise TypeError("the model must return a dict with 'global_feats' (see ssl3d.models.point)")
                feats_out.append(out["global_feats"].float().cpu())
                if lab is not None:
                    labels_out.append(torch.as_tensor(lab).cpu())
    finally:
        model.train(was_training)
    if not feats_out:
        raise ValueError("no data: the dataset or loader is empty")
    if labels_out and len(labels_out) != len(feats_out):
        raise ValueError("some batches carry labels and others do not")
    return torch.cat(feats_out), (torch.cat(labels_out) if labels_out else None)


# ----------------------------------------------------------------------------------------------------------
# Semantic segmentation: confusion matrix and IoU
# ----------------------------------------------------------------------------------------------------------
def confusion_matrix(pred, target, num_classes: int, ignore_index: int = -100) -> torch.Tensor:
    """(K, K) int64 counts: rows = ground truth, columns = prediction (scikit-learn's convention).

    Points whose target is ``ignore_index`` are dropped; any other label outside [0, K) is an error.
    One ``bincount`` of target · K + pred — sums over batches with ``+``.
    """
    p, t = torch.as_tensor(pred), torch.as_tensor(target)
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}")
    p, t = p.reshape(-1), t.reshape(-1)
    if p.is_floating_point() or t.is_floating_point():
        raise TypeError("pred and target must be integer labels (take logits.argmax(-1) first)")
    if num_classes < 1:
        raise ValueError(f"num_classes must be ≥ 1, got {num_classes}")
    keep = t != ignore_index
    p, t = p[keep].long(), t[keep].long()
    for name, v in (("target", t), ("pred", p)):
        if v.numel() and (v.min() < 0 or v.max() >= num_classes):
            bad = int(v[(v < 0) | (v >= num_classes)][0])
            raise ValueError(f"{name} holds label {bad} outside [0, {num_classes}) (ignore_index={ignore_index}): "
                             f"fix num_classes or map that label to ignore_index")
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(cm) -> tuple[torch.Tensor, float]:
    """Per-class IoU = TP / (TP + FP + FN) from a confusion matrix, and their mean (mIoU).

    A class absent from both prediction and ground truth has 0 / 0: its IoU is NaN and it is left out of the
    mean (it says nothing about the model). A class present in only one of them has IoU 0 and counts.
    Returns (iou (K,) float64, miou float; NaN when no class is present at all).
    """
    cm = torch.as_tensor(cm).to(torch.float64)
    if cm.dim() != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix is (K, K), got {tuple(cm.shape)}")
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp  # TP + FP + FN
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    present = ~iou.isnan()
    miou = float(iou[present].mean()) if present.any() else float("nan")
    return iou, miou


# ----------------------------------------------------------------------------------------------------------
# Part segmentation (ShapeNetPart)
# ----------------------------------------------------------------------------------------------------------
@dataclass
class PartIoU:
    """Result of :func:`part_miou`.

    instance_miou: mean of the shape IoUs over all shapes (ShapeNetPart's headline "instance mIoU").
    class_miou:    mean over categories of the mean shape IoU within the category ("class mIoU").
    per_category:  {category: mean shape IoU} for the categories present.
    shape_iou:     (S,) IoU of every shape.
    """

    instance_miou: float
    class_miou: float
    per_category: dict
    shape_iou: np.ndarray


def _part_table(part_ranges) -> tuple[list, dict]:
    """{name: parts} or [parts, …] → [(name, parts)], {part label: category index}."""
    items = list(part_ranges.items()) if isinstance(part_ranges, Mapping) else list(enumerate(part_ranges))
    cats, owner = [], {}
    for ci, (name, parts) in enumerate(items):
        parts = [int(p) for p in parts]
        if not parts:
            raise ValueError(f"category {name!r} has no parts in part_ranges")
        for p in parts:
            if p in owner:
                raise ValueError(f"part label {p} belongs to two categories in part_ranges")
            owner[p] = ci
        cats.append((name, parts))
    return cats, owner


def masked_part_argmax(logits, categories, part_ranges) -> torch.Tensor:
    """The standard ShapeNetPart prediction: argmax over the parts of the shape's own (known) category only.

    logits (S, N, P) over all P part labels, categories (S,) category index (position in ``part_ranges``)
    → (S, N) predicted part labels.
    """
    logits = torch.as_tensor(logits)
    cats, _ = _part_table(part_ranges)
    cat_idx = torch.as_tensor(categories).long().reshape(-1)
    if logits.dim() != 3 or len(cat_idx) != logits.shape[0]:
        raise ValueError(f"need logits (S, N, P) and one category per shape, got {tuple(logits.shape)} and "
                         f"{len(cat_idx)} categories")
    allowed = torch.zeros(len(cats), logits.shape[-1], dtype=torch.bool)  # (num categories, P)
    for ci, (_, parts) in enumerate(cats):
        allowed[ci, parts] = True
    mask = allowed[cat_idx].to(logits.device).unsqueeze(1)  # (S, 1, P)
    return logits.masked_fill(~mask, float("-inf")).argmax(-1)


def part_miou(pred, target, part_ranges, categories=None, ignore_index: int = -100) -> PartIoU:
    """ShapeNetPart mIoU.

    For every shape s of category c with parts P_c: IoU_s = mean_{l ∈ P_c} |pred = l ∩ target = l| /
    |pred = l ∪ target = l|, where a part absent from both prediction and ground truth counts as IoU 1 (the
    standard convention of the PointNet/PointNet++/DGCNN evaluation code). Predictions of labels outside P_c
    are simply wrong (use :func:`masked_part_argmax` to forbid them, as the standard protocol does).

    Args:
        pred, target: (S, N) part labels (global numbering), or lists of S one-dimensional arrays.
        part_ranges: {category name: part labels} (e.g. {"Airplane": [0, 1, 2, 3], …}) or a list of part lists.
        categories: (S,) category index per shape; default: the category owning the shape's target labels.
        ignore_index: target label of points to leave out.
    """
    cats, owner = _part_table(part_ranges)
    preds = [_np(p, "pred").reshape(-1) for p in pred]
    targets = [_np(t, "target").reshape(-1) for t in target]
    if len(preds) != len(targets) or len(preds) == 0:
        raise ValueError(f"need the same, non-zero number of shapes in pred and target, got {len(preds)} and "
                         f"{len(targets)}")
    if categories is not None:
        categories = _np(categories, "categories").reshape(-1)
        if len(categories) != len(preds):
            raise ValueError(f"{len(categories)} categories for {len(preds)} shapes")
    shape_iou = np.empty(len(preds))
    shape_cat = np.empty(len(preds), dtype=np.int64)
    for s, (p, t) in enumerate(zip(preds, targets, strict=True)):
        if p.shape != t.shape:
            raise ValueError(f"shape {s}: pred has {p.shape[0]} points, target {t.shape[0]}")
        keep = t != ignore_index
        p, t = p[keep], t[keep]
        if t.size == 0:
            raise ValueError(f"shape {s} has no labelled points")
        owners = {owner.get(int(label), -1) for label in np.unique(t)}
        if -1 in owners:
            bad = next(int(label) for label in np.unique(t) if int(label) not in owner)
            raise ValueError(f"shape {s}: target label {bad} is in no category of part_ranges")
        if categories is not None:
            ci = int(categories[s])
        elif len(owners) == 1:
            ci = owners.pop()
        else:
            raise ValueError(f"shape {s}: target labels span several categories; pass categories explicitly")
        ious = []
        for part in cats[ci][1]:
            inter = np.sum((p == part) & (t == part))
            union = np.sum((p == part) | (t == part))
            ious.append(1.0 if union == 0 else inter / union)
        shape_iou[s], shape_cat[s] = np.mean(ious), ci
    per_category = {cats[ci][0]: float(shape_iou[shape_cat == ci].mean()) for ci in np.unique(shape_cat)}
    return PartIoU(instance_miou=float(shape_iou.mean()), class_miou=float(np.mean(list(per_category.values()))),
                   per_category=per_category, shape_iou=shape_iou)


# ----------------------------------------------------------------------------------------------------------
# Seeds
# ----------------------------------------------------------------------------------------------------------
def mean_std(values, decimals: int = 2) -> tuple[float, float, str]:
    """Mean and sample standard deviation (ddof = 1) over seeds, and the string "m ± s".

    With a single value the standard deviation is undefined: NaN, and the string says "(n=1)".
    """
    v = _np(values, "values").astype(np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("mean_std: no values")
    if not np.isfinite(v).all():
        raise ValueError(f"mean_std: non-finite values {v.tolist()}: a run failed — rerun or drop it explicitly")
    m = float(v.mean())
    if v.size == 1:
        return m, float("nan"), f"{m:.{decimals}f} (n=1)"
    s = float(v.std(ddof=1))
    return m, s, f"{m:.{decimals}f} ± {s:.{decimals}f}"
