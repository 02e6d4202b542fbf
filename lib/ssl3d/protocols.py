"""Evaluation protocols shared by every method: probe or fine-tune a backbone, return tidy records.

Each protocol takes a backbone (pre-trained or not — it is copied, never modified), training and test datasets
and a label budget, and returns a list of **records**, one dict per measured number::

    {"method": "gmm", "backbone": "pointnet", "task": "objects", "protocol": "linear_svm", "regime": "shapes",
     "budget": 2, "n_labeled": 28, "label_fraction": 0.067, "seed": 0, "metric": "accuracy", "value": 91.4, ...}

so that a notebook can run several methods × budgets × seeds, concatenate the lists, and print one table
(:func:`summarize`) or check one claim (:func:`compare`). Values are percentages.

=========================  ==================================================================================
protocol                   what it measures
=========================  ==================================================================================
linear_probe               linear SVM on frozen global features; C chosen by 5-fold cross-validation within the
                           training split (``evaluate.select_svm_C``), then refitted on all training features
finetune_classification    the whole network + a linear classifier fine-tuned on a labelled subset
finetune_partseg           part segmentation fine-tuned on labelled shapes; instance and class mIoU with the
                           category known (ShapeNetPart)
finetune_semseg            semantic segmentation with limited labels (Hou et al., CVPR 2021): ``"reconstructions"``
                           = a fraction of the training scenes with all their labels, ``"annotations"`` = N
                           labelled points per scene, ``"full"`` = everything; mIoU at the original points
=========================  ==================================================================================

Label budgets for objects: an int = labelled shapes *per class*, a float in (0, 1] = a class-stratified fraction
(records keep both the budget and the actual number of labelled shapes). Budgets nest for one seed.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ssl3d.data import datasets as D
from ssl3d.evaluate import (
    evaluate_semseg,
    extract_global_features,
    linear_svm_probe,
    masked_part_argmax,
    mean_std,
    part_miou,
    select_svm_C,
)
from ssl3d.models import model_name
from ssl3d.models.heads import Classifier, Segmenter
from ssl3d.train import make_optimizer, make_scheduler, train

__all__ = ["TrainSettings", "linear_probe", "finetune_classification", "finetune_partseg", "finetune_semseg",
           "summarize", "compare"]


@dataclass
class TrainSettings:
    """Optimisation settings of a fine-tuning run (the notebooks' parameters cells and the full YAMLs set them).

    ``steps`` is the number of optimiser steps, rounded to whole epochs over the labelled subset (at least one).
    """

    steps: int = 100
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: str | None = "cosine"
    warmup: int = 0
    voxel_size: float = 0.05  # for sparse backbones on object data

    def run(self, model, loader, step_fn, desc: str, checkpoint=None) -> dict:
        epochs = max(1, round(self.steps / len(loader)))
        opt = make_optimizer(model.parameters(), self.optimizer, lr=self.lr, weight_decay=self.weight_decay,
                             momentum=self.momentum)
        sched = make_scheduler(opt, self.scheduler, epochs * len(loader), warmup=self.warmup)
        return train(model, loader, opt, epochs, sched, step_fn=step_fn, desc=desc, checkpoint=checkpoint)


def _record(backbone, method: str, task: str, protocol: str, seed: int, metric: str, value: float,
            **extra) -> dict:
    return {"method": method, "backbone": model_name(backbone), "task": task, "protocol": protocol, **extra,
            "seed": seed, "metric": metric, "value": float(value)}


def _labelled_subset(dataset, budget, seed: int) -> np.ndarray:
    labels = np.asarray(dataset.labels)
    if isinstance(budget, bool) or not isinstance(budget, int | float):
        raise TypeError(f"budget must be an int (shapes per class) or a float fraction, got {budget!r}")
    if isinstance(budget, int):
        return D.per_class_subset(labels, budget, seed)
    return D.label_fraction_subset(labels, budget, seed)


def _budget_fields(budget, idx, n_total: int) -> dict:
    regime = "shapes_per_class" if isinstance(budget, int) else "fraction"
    return {"regime": regime, "budget": budget, "n_labeled": int(len(idx)), "label_fraction": len(idx) / n_total}


def _check_targets(target: torch.Tensor, num_classes: int, ignore_index: int, what: str) -> torch.Tensor:
    """Integer targets in [0, num_classes) or ``ignore_index`` — a clear error instead of cross-entropy's."""
    valid = target[target != ignore_index]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= num_classes):
        bad = int(valid[(valid < 0) | (valid >= num_classes)][0])
        raise ValueError(f"{what}: label {bad} is outside [0, {num_classes}) — the dataset's labels do not match its "
                         f"num_classes={num_classes}; map unknown classes to ignore_index={ignore_index}")
    return target


def _fresh_copy(backbone, seed: int):
    """A deep copy of the backbone (the caller's stays untouched); torch seeded for the head's initialisation."""
    torch.manual_seed(seed)
    return copy.deepcopy(backbone)


# ----------------------------------------------------------------------------------------------------------
# Objects
# ----------------------------------------------------------------------------------------------------------
def linear_probe(backbone, train_set, test_set, *, method: str = "", task: str = "objects", seed: int = 0,
                 Cs=(1e-3, 1e-2, 1e-1, 1.0), folds: int = 5, val_fraction: float = 0.2, budget=1.0,
                 batch_size: int = 64,
                 voxel_size: float = 0.05) -> list[dict]:
    """Linear SVM on frozen global features (ModelNet40 protocol), C chosen on a validation split of the training
    features. Records: ``accuracy`` and ``class_accuracy`` (mean per-class accuracy), each with the chosen ``C``."""
    idx = _labelled_subset(train_set, budget, seed)
    xtr, _ = extract_global_features(backbone, Subset(train_set, idx), batch_size, voxel_size=voxel_size)
    xte, _ = extract_global_features(backbone, test_set, batch_size, voxel_size=voxel_size)
    ytr, yte = np.asarray(train_set.labels)[idx], np.asarray(test_set.labels)
    # k-fold CV of C; with fewer labelled shapes per class than folds, as many folds as the rarest class allows
    # (one held-out split of val_fraction below 2)
    k = min(folds, int(np.unique(ytr, return_counts=True)[1].min()))
    C, val_scores = select_svm_C(xtr, ytr, Cs, val_fraction, seed, folds=k if k >= 2 else 1)
    res = linear_svm_probe(xtr, ytr, xte, yte, C=C, seed=seed)
    extra = {**_budget_fields(budget, idx, len(train_set)), "C": C}
    return [_record(backbone, method, task, "linear_svm", seed, "accuracy", 100 * res.accuracy, **extra),
            _record(backbone, method, task, "linear_svm", seed, "class_accuracy", 100 * res.mean_class_accuracy,
                    **extra)]


def _loader(dataset, batch_size: int, seed: int, collate, shuffle: bool = True) -> DataLoader:
    return DataLoader(dataset, min(batch_size, len(dataset)), shuffle=shuffle, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed))


def finetune_classification(backbone, train_set, test_set, *, budget=1.0, seed: int = 0, method: str = "",
                            task: str = "objects", settings: TrainSettings | None = None,
                            dropout: float = 0.0) -> list[dict]:
    """Fine-tune backbone + linear classifier on the labelled subset; record test ``accuracy``."""
    st = settings or TrainSettings()
    idx = _labelled_subset(train_set, budget, seed)
    collate = D.collate_for(backbone, st.voxel_size)
    model = Classifier(_fresh_copy(backbone, seed), train_set.num_classes, dropout=dropout)
    loader = _loader(Subset(train_set, idx), st.batch_size, seed, collate)

    def step(m, b):
        logits = m(b)  # (B, K)
        target = _check_targets(b["label"].to(logits.device), logits.shape[1], -100, "classification")
        return torch.nn.functional.cross_entropy(logits, target)

    st.run(model, loader, step, f"classification {method or 'scratch'} {budget}")
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for b in DataLoader(test_set, 64, collate_fn=collate):
            pred = model(b).argmax(1).cpu()
            correct += int((pred == b["label"]).sum())
            total += len(pred)
    return [_record(backbone, method, task, "finetune", seed, "accuracy", 100 * correct / total,
                    **_budget_fields(budget, idx, len(train_set)))]


def finetune_partseg(backbone, train_set, test_set, *, budget=1.0, seed: int = 0, method: str = "",
                     task: str = "parts", settings: TrainSettings | None = None) -> list[dict]:
    """Fine-tune backbone + part head on labelled shapes; ShapeNetPart mIoU (argmax over the parts of the shape's
    known category). Records ``instance_miou`` and ``class_miou``. Works on point and sparse backbones (the
    latter predict per voxel; predictions go back to the points through ``inverse``)."""
    st = settings or TrainSettings()
    part_ranges, num_parts = train_set.part_ranges, train_set.num_parts
    idx = _labelled_subset(train_set, budget, seed)
    collate = D.collate_for(backbone, st.voxel_size)
    model = Segmenter(_fresh_copy(backbone, seed), num_parts)
    sparse = backbone.kind == "sparse"

    def step(m, b):
        logits = m(b)  # (B, N, P) or (ΣM, P)
        target = _check_targets((b["labels"] if sparse else b["part"]).to(logits.device), num_parts, -100,
                                "part segmentation")
        return torch.nn.functional.cross_entropy(logits.reshape(-1, num_parts), target.reshape(-1), ignore_index=-100)

    st.run(model, _loader(Subset(train_set, idx), st.batch_size, seed, collate), step,
           f"part segmentation {method or 'scratch'} {budget}")
    model.eval()
    preds, targets, cats = [], [], []
    with torch.no_grad():
        for b in DataLoader(test_set, 32, collate_fn=collate):
            logits = model(b).cpu()
            if sparse:  # voxel logits → the points of each shape
                logits = logits[b["inverse"]].reshape(*b["part"].shape, num_parts)
            preds.append(masked_part_argmax(logits, b["label"], part_ranges))
            targets.append(b["part"])
            cats.append(b["label"])
    res = part_miou(torch.cat(preds), torch.cat(targets), part_ranges, torch.cat(cats))
    extra = _budget_fields(budget, idx, len(train_set))
    return [_record(backbone, method, task, "finetune_partseg", seed, "instance_miou", 100 * res.instance_miou,
                    **extra),
            _record(backbone, method, task, "finetune_partseg", seed, "class_miou", 100 * res.class_miou, **extra)]


def trivial_partseg_baselines(train_set, test_set, *, budget=1.0, seed: int = 0, task: str = "parts") -> list[dict]:
    """What part mIoU costs nothing: two predictors that never look at a point's position.

    ``majority part`` predicts, for every point of a shape, the part most frequent in the labelled training shapes
    of its (known) category; ``uniform random`` draws each point's part uniformly from its category's parts
    (seeded). Same metric and labelled subset as :func:`finetune_partseg`, so the rows sit beside its records."""
    part_ranges = train_set.part_ranges
    idx = _labelled_subset(train_set, budget, seed)
    counts = np.zeros((train_set.num_classes, train_set.num_parts), dtype=np.int64)
    for i in idx:
        item = train_set[int(i)]
        counts[int(item["label"])] += np.bincount(np.asarray(item["part"]).reshape(-1), minlength=counts.shape[1])
    rng = np.random.default_rng(seed)
    items = [test_set[i] for i in range(len(test_set))]
    cats = np.array([int(it["label"]) for it in items])
    targets = [np.asarray(it["part"]).reshape(-1) for it in items]
    preds = {"majority part": [np.full_like(t, counts[c].argmax()) for t, c in zip(targets, cats, strict=True)],
             "uniform random": [rng.choice(np.asarray(part_ranges[c]), size=t.shape) for t, c in
                                zip(targets, cats, strict=True)]}
    extra = _budget_fields(budget, idx, len(train_set))
    out = []
    for name, pred in preds.items():
        res = part_miou(pred, targets, part_ranges, cats)
        out += [{"method": name, "backbone": "none", "task": task, "protocol": "finetune_partseg", **extra,
                 "seed": seed, "metric": m, "value": 100 * v}
                for m, v in (("instance_miou", res.instance_miou), ("class_miou", res.class_miou))]
    return out


# ----------------------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------------------
def finetune_semseg(backbone, train_set, test_set, *, regime: str = "full", budget=None, seed: int = 0,
                    method: str = "", task: str = "scenes", settings: TrainSettings | None = None,
                    ignore_index: int = -100, checkpoint=None, return_model: bool = False):
    """Semantic segmentation fine-tuning with limited labels; records test ``miou`` (and ``accuracy``).
    ``return_model=True`` returns (records, the trained Segmenter, its training history); ``checkpoint`` makes the
    run resumable (``ssl3d.train.train``).

    regime ``"reconstructions"``: ``budget`` = fraction of the training scenes (:func:`~ssl3d.data.datasets.
    scene_subset`); ``"annotations"``: ``budget`` = labelled points per scene (:func:`~ssl3d.data.datasets.
    annotation_subset`); ``"full"``: every label (``budget`` ignored).
    """
    st = settings or TrainSettings(batch_size=2, optimizer="sgd", lr=0.1, scheduler="poly")
    if regime == "reconstructions":
        idx = D.scene_subset(len(train_set), float(budget), seed)
        labelled, extra = Subset(train_set, idx), {"n_scenes": int(len(idx))}
    elif regime == "annotations":
        if not isinstance(budget, int) or budget < 1:
            raise ValueError(f"regime 'annotations' needs budget = labelled points per scene (an int ≥ 1), "
                             f"got {budget!r}")
        labelled, extra = train_set.with_annotations(budget, seed), {"points_per_scene": budget}
    elif regime == "full":
        labelled, extra, budget = train_set, {}, 1.0
    else:
        raise ValueError(f"regime must be 'full', 'reconstructions' or 'annotations', got {regime!r}")
    num_classes = train_set.num_classes
    model = Segmenter(_fresh_copy(backbone, seed), num_classes)

    def step(m, b):
        logits = m(b)  # (ΣM, K)
        target = _check_targets(b["labels"].to(logits.device), num_classes, ignore_index, "semantic segmentation")
        return torch.nn.functional.cross_entropy(logits, target, ignore_index=ignore_index)

    loader = _loader(labelled, st.batch_size, seed, D.collate_scenes)
    history = st.run(model, loader, step, f"semseg {method or 'scratch'} {regime} {budget}", checkpoint)
    res = evaluate_semseg(model, test_set, num_classes, ignore_index)
    common = {"regime": regime, "budget": budget, **extra}
    records = [_record(backbone, method, task, "finetune_semseg", seed, "miou", 100 * res.miou, **common),
               _record(backbone, method, task, "finetune_semseg", seed, "accuracy", 100 * res.accuracy, **common)]
    return (records, model, history) if return_model else records


# ----------------------------------------------------------------------------------------------------------
# Tables and claims over seeds
# ----------------------------------------------------------------------------------------------------------
_GROUP = ("method", "backbone", "task", "protocol", "regime", "budget", "metric")


def summarize(records: list[dict], by=_GROUP) -> list[dict]:
    """Group records (every key of ``by`` except ``seed``) and reduce their values to mean ± sample std over
    seeds: rows with the group keys, ``mean``, ``std``, ``n`` and ``text`` ("m ± s"), in first-seen order."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        groups.setdefault(tuple(r.get(k) for k in by), []).append(r["value"])
    rows = []
    for key, vals in groups.items():
        m, s, text = mean_std(vals)
        rows.append({**dict(zip(by, key)), "mean": m, "std": s, "n": len(vals), "text": text})
    return rows


def compare(values_a, values_b, sigmas: float = 2.0) -> dict:
    """Does A beat B by more than ``sigmas`` standard deviations over seeds?

    gain = mean(A) − mean(B); spread = the larger of the two sample standard deviations (the conservative choice,
    used by every "beats scratch by > 2σ" check in the notebooks). Returns {gain, spread, threshold, passed,
    text}.
    """
    a, b = np.asarray(values_a, float), np.asarray(values_b, float)
    if a.size < 2 or b.size < 2:
        raise ValueError("compare needs at least two seeds per side (a standard deviation)")
    gain = float(a.mean() - b.mean())
    spread = float(max(a.std(ddof=1), b.std(ddof=1)))
    passed = bool(gain > sigmas * spread) and math.isfinite(gain)
    text = f"{gain:+.2f} points vs {sigmas:g}σ = {sigmas * spread:.2f} ({'passes' if passed else 'fails'})"
    return {"gain": gain, "spread": spread, "threshold": sigmas * spread, "passed": passed, "text": text}
