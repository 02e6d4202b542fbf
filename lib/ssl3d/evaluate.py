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

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "ProbeResult",
    "linear_svm_probe",
    "select_svm_C",
    "linear_head",
    "extract_global_features",
    "SegResult",
    "evaluate_semseg",
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


def _span_coordinates(xtr: np.ndarray, xte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Append liblinear's intercept feature (a constant 1, its weight regularised like the others — what
    ``LinearSVC(fit_intercept=True)`` does) and, when there are fewer training rows than features, express every row
    in an orthonormal basis Q of the span of the training rows.

    Exact, not an approximation: the optimal weights are a combination of training rows (representer theorem), so
    w = Q v with ‖w‖ = ‖v‖ and x·w = (x Q)·v for training and test rows alike. 336 shapes × 1,025 features become
    336 × 336: every solver pass is ~3× cheaper, which matters when C is chosen by cross-validation.
    """
    xtr = np.hstack([xtr, np.ones((len(xtr), 1))])
    xte = np.hstack([xte, np.ones((len(xte), 1))])
    if len(xtr) >= xtr.shape[1]:
        return xtr, xte
    _, sv, vt = np.linalg.svd(xtr, full_matrices=False)
    q = vt[: int((sv > sv[0] * 1e-10).sum())].T  # (D + 1, r), orthonormal columns spanning the training rows
    return xtr @ q, xte @ q


def _probe_inputs(train_x, train_y, test_x, test_y):
    """The probe's inputs as float64 / 1-D arrays, refused with the problem named when they cannot be a probe."""
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
    return xtr, ytr, xte, yte


def _standardised(xtr: np.ndarray, xte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both splits standardised with the *training* split's mean and std, in :func:`_span_coordinates`."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(xtr)
    return _span_coordinates(scaler.transform(xtr), scaler.transform(xte))


def _dual(C: float) -> bool:
    """Which liblinear solver fits this C (see :func:`_svm_predict`); dual fits must not run beside other fits."""
    return C >= 1.0


def _svm_predict(ztr: np.ndarray, ytr: np.ndarray, zte: np.ndarray, C: float, seed: int, max_iter: int) -> np.ndarray:
    """Fit ``LinearSVC`` on prepared training rows and predict the test rows."""
    from sklearn.svm import LinearSVC

    # Same problem, two liblinear solvers: the primal one converges in a few Newton steps when the problem is
    # strongly regularised (C < 1; 2–10× faster here), the dual one when it is not (C ≥ 1, where the primal one
    # needs hundreds of steps). The solution — and so the accuracy — does not depend on the choice.
    svm = LinearSVC(C=C, dual=_dual(C), fit_intercept=False, random_state=seed, max_iter=max_iter)
    return svm.fit(ztr, ytr).predict(zte)


def linear_svm_probe(train_x, train_y, test_x, test_y, C: float = 0.01, seed: int = 0,
                     max_iter: int = 10_000) -> ProbeResult:
    """Fit a linear SVM (scikit-learn ``LinearSVC``, one-vs-rest, squared hinge) on standardised features.

    Features are standardised with the mean and standard deviation of the *training* split only. ``C`` is the
    inverse regularisation strength; 0.01 suits standardised high-dimensional (≥ 512-d) features — the field
    tunes it on a grid, do the same on a validation split for final numbers. ``seed`` fixes the solver's
    coordinate order.
    """
    xtr, ytr, xte, yte = _probe_inputs(train_x, train_y, test_x, test_y)
    ztr, zte = _standardised(xtr, xte)
    pred = _svm_predict(ztr, ytr, zte, C, seed, max_iter)
    classes = np.union1d(ytr, yte)
    class_acc = np.array([np.mean(pred[yte == c] == c) if np.any(yte == c) else np.nan for c in classes])
    return ProbeResult(accuracy=float(np.mean(pred == yte)), class_accuracy=class_acc,
                       mean_class_accuracy=float(np.nanmean(class_acc)), classes=classes, predictions=pred)


def select_svm_C(train_x, train_y, Cs=(1e-3, 1e-2, 1e-1, 1.0), val_fraction: float = 0.2, seed: int = 0,
                 max_iter: int = 10_000, folds: int = 5, n_jobs: int | None = None) -> tuple[float, dict]:
    """Choose the SVM's C on validation splits drawn from the *training* split only (stratified, seeded).

    ``folds ≥ 2``: stratified k-fold cross-validation — every training feature is a validation feature once, and a
    C scores its mean validation accuracy over the folds. ``folds = 1``: one stratified split that holds out
    ``val_fraction`` of the training features. Each C is fitted on the fitting part and scored on the validation
    part; the C with the highest score wins (ties → the smaller C, the stronger regulariser). The test split is
    never seen. Returns (best C, {C: validation accuracy}). ``n_jobs`` threads fit the (C, fold) pairs (default:
    torch's thread count); the result does not depend on it.

    Why: a fixed C can favour one initialisation over another (features of different encoders have different
    scales and margins), which is why the field tunes it. Why folds: with 420 shapes one 20 % split has 84 shapes,
    a 1.2-point grain; on random-init features it tied all four Cs of the grid in one of three seeds we measured
    (picking the smallest, 6 points below the best test accuracy), where 5-fold CV did not.
    """
    from sklearn.model_selection import StratifiedKFold, train_test_split

    x, y = _np(train_x, "train_x"), _np(train_y, "train_y").reshape(-1)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not Cs:
        raise ValueError("select_svm_C needs at least one C")
    if folds < 1:
        raise ValueError(f"folds must be ≥ 1 (1 = one split of val_fraction), got {folds}")
    if len(Cs) == 1:  # nothing to choose
        return float(Cs[0]), {}
    counts = np.unique(y, return_counts=True)[1]
    if folds >= 2:
        if counts.min() < folds:
            raise ValueError(f"select_svm_C: {folds}-fold CV needs ≥ {folds} training shapes of every class (the "
                             f"smallest class has {counts.min()}); pass folds=1 or fewer folds")
        splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))
    else:
        stratify = y if counts.min() >= 2 and round(val_fraction * len(y)) >= len(counts) else None
        splits = [train_test_split(np.arange(len(y)), test_size=val_fraction, random_state=seed, stratify=stratify)]
    if any(len(np.unique(y[fit_idx])) < 2 for fit_idx, _ in splits):
        raise ValueError("select_svm_C: the fitting part of the split has a single class; use more training shapes")
    # Each fold is standardised (and put in span coordinates) once; then every (C, fold) fit is independent.
    # liblinear releases the GIL, so the primal fits (C < 1, no random numbers) run on a few threads. Every fit
    # reseeds liblinear's *process-wide* generator, which the dual solver (C ≥ 1) shuffles with: dual fits run one
    # at a time, after the others. The accuracies do not depend on n_jobs.
    folds_data = []
    for fit_idx, val_idx in splits:
        xf, yf, xv, yv = _probe_inputs(x[fit_idx], y[fit_idx], x[val_idx], y[val_idx])
        folds_data.append((*_standardised(xf, xv), yf, yv))

    def score(job):
        C, (zf, zv, yf, yv) = job
        return float(np.mean(_svm_predict(zf, yf, zv, C, seed, max_iter) == yv))

    jobs = [(float(C), fold) for C in sorted(Cs) for fold in folds_data]   # C-major: k * folds + fold
    primal = [k for k, (C, _) in enumerate(jobs) if not _dual(C)][::-1]  # the largest C first: the most solver steps
    accuracies = [None] * len(jobs)
    with ThreadPoolExecutor(max(1, min(len(primal), n_jobs or torch.get_num_threads()))) as pool:
        for k, acc in zip(primal, pool.map(score, [jobs[k] for k in primal])):
            accuracies[k] = acc
    accuracies = [score(job) if acc is None else acc for job, acc in zip(jobs, accuracies)]  # dual: one at a time
    scores = {C: float(np.mean(accuracies[k * len(splits):(k + 1) * len(splits)])) for k, C in
              enumerate(sorted(float(C) for C in Cs))}
    best = max(scores.values())
    return next(C for C in sorted(scores) if scores[C] == best), scores


def linear_head(train_x, train_y, num_classes: int, loss: str = "logistic", C: float = 1.0, seed: int = 0,
                max_iter: int = 10_000, standardize: bool = True, absent_bias: float = -1e30) -> torch.nn.Linear:
    """A linear classifier fitted by scikit-learn on standardised (M, D) features — ``"logistic"``: multinomial
    logistic regression (L-BFGS); ``"svm"``: the SVM of :func:`linear_svm_probe` (one-vs-rest, squared hinge,
    liblinear's regularised intercept) — written as one ``nn.Linear(D, num_classes)`` over the *raw* features, so
    that it can serve as a network's head. With the training mean μ and standard deviation σ the classifier scores
    s = W (x − μ)/σ + c, so the layer's weight is W/σ and its bias c − (W/σ) μ. Labels are integers in
    [0, num_classes); a class with no training example gets weight 0 and bias ``absent_bias`` (−1e30: never
    predicted). ``standardize=False`` fits on the raw features (μ = 0, σ = 1): the regularisation then acts on the
    layer's own weights, which keeps them at the scale a fine-tuning starts from (LP-FT, ``protocols.finetune_semseg``).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    x, y, _, _ = _probe_inputs(train_x, train_y, train_x, train_y)  # (M, D) float64, (M,): checked
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"linear_head: labels must lie in [0, {num_classes}), got {y.min()}..{y.max()}")
    if loss == "logistic":
        clf = LogisticRegression(C=C, max_iter=max_iter)
    elif loss == "svm":
        clf = LinearSVC(C=C, dual=_dual(C), random_state=seed, max_iter=max_iter)
    else:
        raise ValueError(f"linear_head: loss must be 'logistic' or 'svm', got {loss!r}")
    scaler = StandardScaler(with_mean=standardize, with_std=standardize).fit(x)
    clf.fit(scaler.transform(x), y)
    coef, icpt = clf.coef_, clf.intercept_                       # (K', D), (K',) over the classes seen
    if len(clf.classes_) == 2:                                   # one decision value d: scores (−d, d)
        coef, icpt = np.vstack([-coef, coef]), np.concatenate([-icpt, icpt])
    sigma = scaler.scale_ if standardize else 1.0
    mu = scaler.mean_ if standardize else np.zeros(x.shape[1])
    w = coef / sigma                                             # (K', D)
    weight, bias = np.zeros((num_classes, x.shape[1])), np.full(num_classes, float(absent_bias))
    weight[clf.classes_], bias[clf.classes_] = w, icpt - w @ mu
    layer = torch.nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        layer.bias.copy_(torch.from_numpy(bias))
    return layer


# ----------------------------------------------------------------------------------------------------------
# Frozen features
# ----------------------------------------------------------------------------------------------------------
def _batches(data, batch_size: int, collate):
    """Tensors → items batched by ``collate``; a Dataset → a DataLoader with ``collate``; an iterable of collated
    batches (a DataLoader, a list of dicts) → itself."""
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, np.ndarray | torch.Tensor):
        data = (data,)
    if isinstance(data, tuple | list) and 1 <= len(data) <= 2 and isinstance(data[0], torch.Tensor | np.ndarray) \
            and np.ndim(data[0]) == 3:  # (points (M, N, 3),) or (points, labels (M,))
        pts = _np(data[0], "points").astype(np.float32)
        lab = _np(data[1], "labels").reshape(-1) if len(data) == 2 else None
        if lab is not None and len(lab) != len(pts):
            raise ValueError(f"{len(pts)} clouds but {len(lab)} labels")
        items = [{"points": p} | ({} if lab is None else {"label": int(lab[i])}) for i, p in enumerate(pts)]
        return (collate(items[s:s + batch_size]) for s in range(0, len(items), batch_size))
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size, shuffle=False, collate_fn=collate)
    return data


def extract_global_features(backbone: torch.nn.Module, data, batch_size: int = 32, collate=None,
                            voxel_size: float = 0.05):
    """Global features of a frozen backbone (eval mode, no gradient) for a whole dataset — any ssl3d backbone,
    point or sparse, through its ``encode(batch)["global_feats"]``.

    Args:
        backbone: an ssl3d backbone (``ssl3d.models``).
        data: a Dataset of object items (batched with ``collate``, default :func:`~ssl3d.data.datasets.collate_for`
            the backbone at ``voxel_size``), a DataLoader of collated batches, or tensors ``points (M, N, 3)`` /
            ``(points, labels (M,))``.
    Returns:
        features (M, global_dim) float32 on the CPU, labels (M,) or None when the data carries none.
    The backbone's train/eval mode is restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    if not hasattr(backbone, "encode"):
        raise TypeError(f"{type(backbone).__name__} has no encode(batch): pass an ssl3d backbone (ssl3d.models)")
    if collate is None:
        from ssl3d.data.datasets import collate_for

        collate = collate_for(backbone, voxel_size)
    was_training = backbone.training
    backbone.eval()
    feats_out, labels_out = [], []
    try:
        with torch.no_grad():
            for batch in _batches(data, batch_size, collate):
                if not isinstance(batch, Mapping):
                    raise TypeError(f"batches must be dicts from an ssl3d collate function, got {type(batch).__name__}")
                feats_out.append(backbone.encode(batch)["global_feats"].float().cpu())
                lab = next((batch[k] for k in _LABEL_KEYS if k in batch), None)
                if lab is not None:
                    labels_out.append(torch.as_tensor(lab).cpu())
    finally:
        backbone.train(was_training)
    if not feats_out:
        raise ValueError("no data: the dataset or loader is empty")
    if labels_out and len(labels_out) != len(feats_out):
        raise ValueError("some batches carry labels and others do not")
    return torch.cat(feats_out), (torch.cat(labels_out) if labels_out else None)


_LABEL_KEYS = ("label", "y", "cls")


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


@dataclass
class SegResult:
    """mIoU over classes present in the evaluation set; per-class IoU (NaN = absent); point accuracy."""

    miou: float
    iou: np.ndarray
    accuracy: float
    confusion: np.ndarray
    predictions: list  # per scene: (N,) predicted labels at the original points


def evaluate_semseg(model: torch.nn.Module, dataset, num_classes: int | None = None,
                    ignore_index: int = -100) -> SegResult:
    """Semantic segmentation of every scene of ``dataset`` (voxelized items, :class:`~ssl3d.data.datasets.
    SceneDataset`) by ``model`` (``model(batch)`` → per-voxel logits, e.g. a :class:`~ssl3d.models.heads.Segmenter`):
    per-voxel predictions go back to the original points through ``inverse`` and are scored there, against
    ``semantic``. One confusion matrix over the whole test set (the S3DIS / ScanNet protocol)."""
    from ssl3d.data.datasets import collate_scenes

    k = num_classes or getattr(model, "num_classes", None) or getattr(dataset, "num_classes", None)
    if k is None:
        raise ValueError("evaluate_semseg: pass num_classes (neither the model nor the dataset has it)")
    cm = torch.zeros(k, k, dtype=torch.long)
    preds = []
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(len(dataset)):
                b = collate_scenes([dataset[i]])
                pred = model(b).argmax(1).cpu()[b["inverse"]]  # (N,) at the original points
                cm += confusion_matrix(pred, b["semantic"], k, ignore_index)
                preds.append(pred.numpy())
    finally:
        model.train(was)
    iou, miou = iou_from_confusion(cm)
    acc = cm.diag().sum().item() / max(cm.sum().item(), 1)
    return SegResult(float(miou), np.asarray(iou), acc, cm.numpy(), preds)


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
