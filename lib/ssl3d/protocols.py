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
probe_semseg               the same labels and test scenes, the backbone frozen: logistic regression on the
                           per-point features of the labelled points — the features alone, without what a short
                           fine-tuning does to them
=========================  ==================================================================================

Label budgets for objects: an int = labelled shapes *per class*, a float in (0, 1] = a class-stratified fraction
(records keep both the budget and the actual number of labelled shapes). Budgets nest for one seed.

**A number is measured once per run.** Every record carries a ``key``: a digest of everything that determines its
value — the protocol, the backbone's weights (:func:`weights_digest`), the training settings, both datasets
(:func:`describe_dataset`), the budget, the seed and the protocol's other arguments — but not the method's display
name. Pass ``cache=RecordCache(records)`` (e.g. the CSVs notebooks 03–06 wrote) and a protocol whose key is already
there returns those records, relabelled, instead of training again; an unmatched key runs as usual. Notebook 07 uses
this to reuse the fine-tunings of 04–06 without copying numbers by hand.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ssl3d.data import datasets as D
from ssl3d.evaluate import (
    evaluate_semseg,
    extract_global_features,
    linear_head,
    linear_svm_probe,
    masked_part_argmax,
    mean_std,
    part_miou,
    select_svm_C,
)
from ssl3d.models import model_name
from ssl3d.models.heads import Classifier, Segmenter, head_input
from ssl3d.train import make_optimizer, make_scheduler, recompute_batchnorm, train

__all__ = ["TrainSettings", "linear_probe", "finetune_classification", "finetune_partseg", "finetune_semseg",
           "probe_semseg", "summarize", "compare", "RecordCache", "weights_digest", "describe_dataset",
           "trivial_partseg_baselines", "trivial_semseg_baselines"]


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
    # semantic segmentation only (finetune_semseg); the defaults are plain fine-tuning
    head_init: str = "random"  # "probe": LP-FT — the head starts as a logistic regression on the frozen features
    precise_bn: bool = False   # re-estimate BatchNorm statistics on the labelled scenes after fine-tuning

    def __post_init__(self):
        if self.head_init not in ("random", "probe"):
            raise ValueError(f"TrainSettings.head_init must be 'random' or 'probe', got {self.head_init!r}")

    def semseg_only(self, who: str) -> None:
        """Fail loudly where the two segmentation-only options would otherwise be ignored."""
        if self.head_init != "random" or self.precise_bn:
            raise ValueError(f"{who}: head_init={self.head_init!r} and precise_bn={self.precise_bn} are implemented "
                             f"by finetune_semseg only; use TrainSettings' defaults here")

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


# ----------------------------------------------------------------------------------------------------------
# Measured once per run: record keys and the cache
# ----------------------------------------------------------------------------------------------------------
def weights_digest(model: torch.nn.Module) -> str:
    """SHA-1 (12 hex digits) of a network's state: every parameter and buffer — names, dtypes, shapes and bytes."""
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:12]


_PLAIN = (int, float, str, bool, type(None))


def _digest(obj, n: int = 12) -> str:
    """SHA-1 (n hex digits) of a value: bytes as they are, anything else as sorted JSON (``repr`` for the rest)."""
    data = obj if isinstance(obj, bytes) else json.dumps(obj, sort_keys=True, default=repr).encode()
    return hashlib.sha1(data).hexdigest()[:n]


def describe_dataset(dataset) -> dict:
    """What a dataset is, as plain values: its class and public constructor state (sizes, seed, split, voxel size,
    variant, …), its transform's ``repr``, and — for wrappers such as ``Subset`` — the dataset it wraps and the
    indices it keeps. Caches (attributes starting with ``_``) and the augmentation epoch (which ``train`` sets at
    every epoch) are left out."""
    out = {"type": type(dataset).__name__}
    for k, v in sorted(vars(dataset).items()):
        if k.startswith("_") or k == "epoch":  # caches; the epoch is loop state that every training loop resets
            continue
        if isinstance(v, _PLAIN) or (isinstance(v, list | tuple) and all(isinstance(x, _PLAIN) for x in v)):
            out[k] = v
        elif isinstance(v, np.ndarray | torch.Tensor):
            out[k] = _digest(np.ascontiguousarray(np.asarray(v)).tobytes())
        elif isinstance(v, torch.utils.data.Dataset):
            out[k] = describe_dataset(v)
        elif k == "transform" or callable(v):
            out[k] = repr(v)
        elif isinstance(v, dict):
            out[k] = _digest(repr(sorted(v.items(), key=lambda kv: repr(kv[0]))).encode())
    return out


_LATER_FIELDS = {"head_init": "random", "precise_bn": False}  # TrainSettings fields added after records existed


def _settings_dict(settings) -> dict:
    """The settings as a key sees them: fields added later count only when set, so records measured before they
    existed keep their keys."""
    d = dataclasses.asdict(settings)
    return {k: v for k, v in d.items() if not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}


def _key(protocol: str, backbone, train_set, test_set, settings, **args) -> str:
    from ssl3d import sparse

    what = {"protocol": protocol, "weights": weights_digest(backbone), "backbone": model_name(backbone),
            "train": describe_dataset(train_set), "test": describe_dataset(test_set),
            "settings": _settings_dict(settings) if settings is not None else None,
            "sparse_backend": sparse.get_backend() if backbone.kind == "sparse" else None,
            "device": str(next(backbone.parameters()).device.type), **args}
    return _digest(what, 16)


class RecordCache:
    """Records already measured in this run, found by their ``key`` (module docstring).

        cache = RecordCache.from_csv(sorted(Path("results/smoke").glob("0[3-6]_*.csv")))
        recs = finetune_semseg(net, train, test, regime="annotations", budget=20, seed=0, method="nce", cache=cache)
        cache.hits, cache.misses          # how many protocol calls were reused / run

    Records without a ``key`` (older CSVs) are ignored. New records are added as they are measured.
    """

    def __init__(self, records: Iterable[dict] = ()):
        self._by_key: dict[str, list[dict]] = {}
        self.hits = self.misses = 0
        self.add(records)

    @classmethod
    def from_csv(cls, paths: Iterable) -> RecordCache:
        from ssl3d.report import read_records

        return cls(r for p in paths for r in read_records(p))

    def add(self, records: Iterable[dict]) -> None:
        """Add records; a key already present keeps its first measurement (a later file that reused it holds
        copies of the same numbers, which must not count twice)."""
        new: dict[str, dict[str, dict]] = {}  # key → metric → record
        for r in records:
            if r.get("key") and str(r["key"]) not in self._by_key:
                new.setdefault(str(r["key"]), {}).setdefault(r["metric"], dict(r))
        self._by_key.update({k: list(v.values()) for k, v in new.items()})

    def __len__(self) -> int:
        return len(self._by_key)

    def run(self, key: str, measure: Callable[[], list[dict]], **labels) -> list[dict]:
        """The records of ``key``: from the cache (relabelled with ``labels``: method, task) or by ``measure()``."""
        if key in self._by_key:
            self.hits += 1
            return [{**r, **labels} for r in self._by_key[key]]
        self.misses += 1
        records = measure()
        self.add(records)
        return records


def _measured(cache: RecordCache | None, key: str, measure: Callable[[], list[dict]], **labels) -> list[dict]:
    if cache is None:
        return measure()
    return cache.run(key, measure, **labels)


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
                 batch_size: int = 64, voxel_size: float = 0.05, cache: RecordCache | None = None) -> list[dict]:
    """Linear SVM on frozen global features (ModelNet40 protocol), C chosen on a validation split of the training
    features. Records: ``accuracy`` and ``class_accuracy`` (mean per-class accuracy), each with the chosen ``C``."""
    key = _key("linear_svm", backbone, train_set, test_set, None, Cs=list(Cs), folds=folds, val_fraction=val_fraction,
               budget=budget, seed=seed, voxel_size=voxel_size)
    return _measured(cache, key, lambda: _linear_probe(backbone, train_set, test_set, method, task, seed, Cs, folds,
                                                       val_fraction, budget, batch_size, voxel_size, key),
                     method=method, task=task)


_FEATURES: OrderedDict[str, torch.Tensor] = OrderedDict()  # the last frozen features extracted (an LRU of 16)


def _has_transform(desc: dict) -> bool:
    return any((k == "transform" and v not in (None, "None")) or (isinstance(v, dict) and _has_transform(v))
               for k, v in desc.items())


def _global_features(backbone, dataset, batch_size: int, voxel_size: float) -> torch.Tensor:
    """Frozen global features of ``dataset``, extracted once per (weights, dataset, settings): a probe at several
    budgets or C values extracts the test set's features once. Augmented datasets are never memoised."""
    desc = describe_dataset(dataset)
    key = _digest([weights_digest(backbone), desc, batch_size, voxel_size, str(next(backbone.parameters()).device)],
                  40)
    if key in _FEATURES:
        _FEATURES.move_to_end(key)
        return _FEATURES[key].clone()
    x, _ = extract_global_features(backbone, dataset, batch_size, voxel_size=voxel_size)
    if not _has_transform(desc):
        _FEATURES[key] = x
        while len(_FEATURES) > 16:
            _FEATURES.popitem(last=False)
        return x.clone()
    return x


def _linear_probe(backbone, train_set, test_set, method, task, seed, Cs, folds, val_fraction, budget, batch_size,
                  voxel_size, key) -> list[dict]:
    idx = _labelled_subset(train_set, budget, seed)
    xtr = _global_features(backbone, Subset(train_set, idx), batch_size, voxel_size)
    xte = _global_features(backbone, test_set, batch_size, voxel_size)
    ytr, yte = np.asarray(train_set.labels)[idx], np.asarray(test_set.labels)
    # k-fold CV of C; with fewer labelled shapes per class than folds, as many folds as the rarest class allows
    # (one held-out split of val_fraction below 2)
    k = min(folds, int(np.unique(ytr, return_counts=True)[1].min()))
    C, val_scores = select_svm_C(xtr, ytr, Cs, val_fraction, seed, folds=k if k >= 2 else 1)
    res = linear_svm_probe(xtr, ytr, xte, yte, C=C, seed=seed)
    extra = {**_budget_fields(budget, idx, len(train_set)), "C": C, "key": key}
    return [_record(backbone, method, task, "linear_svm", seed, "accuracy", 100 * res.accuracy, **extra),
            _record(backbone, method, task, "linear_svm", seed, "class_accuracy", 100 * res.mean_class_accuracy,
                    **extra)]


def _loader(dataset, batch_size: int, seed: int, collate, shuffle: bool = True) -> DataLoader:
    return DataLoader(dataset, min(batch_size, len(dataset)), shuffle=shuffle, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed))


def finetune_classification(backbone, train_set, test_set, *, budget=1.0, seed: int = 0, method: str = "",
                            task: str = "objects", settings: TrainSettings | None = None,
                            dropout: float = 0.0, cache: RecordCache | None = None) -> list[dict]:
    """Fine-tune backbone + linear classifier on the labelled subset; record test ``accuracy``."""
    st = settings or TrainSettings()
    st.semseg_only("finetune_classification")
    key = _key("finetune", backbone, train_set, test_set, st, budget=budget, seed=seed, dropout=dropout)
    return _measured(cache, key, lambda: _finetune_classification(backbone, train_set, test_set, budget, seed, method,
                                                                  task, st, dropout, key), method=method, task=task)


def _finetune_classification(backbone, train_set, test_set, budget, seed, method, task, st, dropout, key):
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
                    **_budget_fields(budget, idx, len(train_set)), key=key)]


def finetune_partseg(backbone, train_set, test_set, *, budget=1.0, seed: int = 0, method: str = "",
                     task: str = "parts", settings: TrainSettings | None = None,
                     cache: RecordCache | None = None) -> list[dict]:
    """Fine-tune backbone + part head on labelled shapes; ShapeNetPart mIoU (argmax over the parts of the shape's
    known category). Records ``instance_miou`` and ``class_miou``. Works on point and sparse backbones (the
    latter predict per voxel; predictions go back to the points through ``inverse``)."""
    st = settings or TrainSettings()
    st.semseg_only("finetune_partseg")
    key = _key("finetune_partseg", backbone, train_set, test_set, st, budget=budget, seed=seed,
               head=head_input(backbone))
    return _measured(cache, key, lambda: _finetune_partseg(backbone, train_set, test_set, budget, seed, method, task,
                                                           st, key), method=method, task=task)


def _finetune_partseg(backbone, train_set, test_set, budget, seed, method, task, st, key):
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
    extra = {**_budget_fields(budget, idx, len(train_set)), "key": key}
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
def trivial_semseg_baselines(train_set, test_set, *, seeds=(0,), task: str = "scenes",
                             ignore_index: int = -100) -> list[dict]:
    """What scene mIoU costs nothing: the most frequent class of the training points predicted at every test point
    (``majority class``), scored like :func:`finetune_semseg` (one confusion matrix over the test points). A
    fine-tuned network at this level predicts one class everywhere. Deterministic; one record pair per seed so that
    it sits in tables beside the seeded rows (regime ``"full"``: it reads every training label)."""
    from ssl3d.evaluate import confusion_matrix, iou_from_confusion

    k = train_set.num_classes
    counts = torch.zeros(k, dtype=torch.long)
    for i in range(len(train_set)):
        sem = torch.as_tensor(train_set[i]["semantic"]).reshape(-1)
        counts += torch.bincount(sem[sem != ignore_index], minlength=k)[:k]
    majority = int(counts.argmax())
    cm = torch.zeros(k, k, dtype=torch.long)
    for i in range(len(test_set)):
        sem = torch.as_tensor(test_set[i]["semantic"]).reshape(-1)
        cm += confusion_matrix(torch.full_like(sem, majority), sem, k, ignore_index)
    _, miou = iou_from_confusion(cm)
    acc = cm.diag().sum().item() / max(cm.sum().item(), 1)
    common = {"method": "majority class", "backbone": "none", "task": task, "protocol": "finetune_semseg",
              "regime": "full", "budget": 1.0, "class": train_set.class_names[majority]
              if hasattr(train_set, "class_names") else majority}
    return [{**common, "seed": s, "metric": m, "value": 100 * float(v)} for s in seeds
            for m, v in (("miou", miou), ("accuracy", acc))]


def finetune_semseg(backbone, train_set, test_set, *, regime: str = "full", budget=None, seed: int = 0,
                    method: str = "", task: str = "scenes", settings: TrainSettings | None = None,
                    ignore_index: int = -100, checkpoint=None, return_model: bool = False,
                    cache: RecordCache | None = None):
    """Semantic segmentation fine-tuning with limited labels; records test ``miou`` (and ``accuracy``).
    ``return_model=True`` returns (records, the trained Segmenter, its training history); ``checkpoint`` makes the
    run resumable (``ssl3d.train.train``); ``cache`` reuses records already measured (not with ``return_model``).

    The fresh head reads what the backbone's ``head_spec`` names: on a sparse U-Net the last decoder block, so the
    head *replaces* the pre-training output layer (the authors' fine-tuning loads every weight whose shape matches,
    which re-initialises the final 1×1 conv with one output per class).

    ``settings.head_init="probe"`` (LP-FT, Kumar et al. 2022): BatchNorm statistics re-estimated on the labelled
    scenes, then the head's layer starts as a logistic regression (C = ``PROBE_HEAD_C``) on the raw eval-mode
    features of at most ``PROBE_HEAD_MAX_POINTS`` labelled points, absent classes at bias ``ABSENT_BIAS``.
    ``settings.precise_bn=True``: after fine-tuning, one pass over the labelled scenes re-estimates BatchNorm's
    running statistics (:func:`~ssl3d.train.recompute_batchnorm`) before the test.

    regime ``"reconstructions"``: ``budget`` = fraction of the training scenes (:func:`~ssl3d.data.datasets.
    scene_subset`); ``"annotations"``: ``budget`` = labelled points per scene (:func:`~ssl3d.data.datasets.
    annotation_subset`); ``"full"``: every label (``budget`` ignored).
    """
    st = settings or TrainSettings(batch_size=2, optimizer="sgd", lr=0.1, scheduler="poly")
    if return_model and cache is not None:
        raise ValueError("finetune_semseg: a cached record has no model to return; pass cache=None with "
                         "return_model=True")
    key = _key("finetune_semseg", backbone, train_set, test_set, st, regime=regime,
               budget=None if regime == "full" else budget, seed=seed, ignore_index=ignore_index,
               head=head_input(backbone))  # which features the fresh head reads (models.heads)
    if return_model:
        return _finetune_semseg(backbone, train_set, test_set, regime, budget, seed, method, task, st, ignore_index,
                                checkpoint, True, key)
    return _measured(cache, key, lambda: _finetune_semseg(backbone, train_set, test_set, regime, budget, seed, method,
                                                          task, st, ignore_index, checkpoint, False, key),
                     method=method, task=task)


def _labelled_scenes(train_set, regime: str, budget, seed: int):
    """The labelled training scenes of a regime: (dataset, record fields, budget as recorded)."""
    if regime == "reconstructions":
        idx = D.scene_subset(len(train_set), float(budget), seed)
        return Subset(train_set, idx), {"n_scenes": int(len(idx))}, budget
    if regime == "annotations":
        if not isinstance(budget, int) or budget < 1:
            raise ValueError(f"regime 'annotations' needs budget = labelled points per scene (an int ≥ 1), "
                             f"got {budget!r}")
        return train_set.with_annotations(budget, seed), {"points_per_scene": budget}, budget
    if regime == "full":
        return train_set, {}, 1.0
    raise ValueError(f"regime must be 'full', 'reconstructions' or 'annotations', got {regime!r}")


def _finetune_semseg(backbone, train_set, test_set, regime, budget, seed, method, task, st, ignore_index, checkpoint,
                     return_model, key):
    labelled, extra, budget = _labelled_scenes(train_set, regime, budget, seed)
    num_classes = train_set.num_classes
    model = Segmenter(_fresh_copy(backbone, seed), num_classes)

    def step(m, b):
        logits = m(b)  # (ΣM, K)
        target = _check_targets(b["labels"].to(logits.device), num_classes, ignore_index, "semantic segmentation")
        return torch.nn.functional.cross_entropy(logits, target, ignore_index=ignore_index)

    loader = _loader(labelled, st.batch_size, seed, D.collate_scenes)
    if st.head_init == "probe" and not (checkpoint is not None and Path(checkpoint).is_file()):  # not on resume
        recompute_batchnorm(model.backbone, loader)  # the statistics of the labelled scenes, as the probe's
        x, y = _labelled_features(model, loader, ignore_index)
        if len(y) > PROBE_HEAD_MAX_POINTS:  # a seeded random subset: the fit's cost, not its result, grows with M
            keep = np.sort(np.random.default_rng(seed).choice(len(y), PROBE_HEAD_MAX_POINTS, replace=False))
            x, y = x[keep], y[keep]
        model.head.out = _head_like(linear_head(x, y, num_classes, "logistic", PROBE_HEAD_C, seed, standardize=False,
                                                absent_bias=ABSENT_BIAS), model.backbone)
    history = st.run(model, loader, step, f"semseg {method or 'scratch'} {regime} {budget}", checkpoint)
    if st.precise_bn:
        recompute_batchnorm(model, list(loader), forward=model)
    res = evaluate_semseg(model, test_set, num_classes, ignore_index)
    common = {"regime": regime, "budget": budget, **extra, "key": key}
    records = [_record(backbone, method, task, "finetune_semseg", seed, "miou", 100 * res.miou, **common),
               _record(backbone, method, task, "finetune_semseg", seed, "accuracy", 100 * res.accuracy, **common)]
    return (records, model, history) if return_model else records


def probe_semseg(backbone, train_set, test_set, *, regime: str = "annotations", budget=None, seed: int = 0,
                 method: str = "", task: str = "scenes", C: float = 1.0, batch_size: int = 2,
                 ignore_index: int = -100, cache: RecordCache | None = None) -> list[dict]:
    """Linear probe for semantic segmentation: the backbone frozen, a multinomial logistic regression (inverse
    regularisation ``C`` on standardised features; ``evaluate.linear_head``) fitted on the per-point features of the
    labelled points — the labels :func:`finetune_semseg` trains on for the same regime, budget and seed — and scored
    like the fine-tuning (test ``miou`` and ``accuracy`` at the original points, ``evaluate_semseg``).

    Why both: a fine-tuning's mIoU mixes how good the initial features are with what a short optimisation does to
    them; the probe measures the features alone. BatchNorm statistics are first re-estimated on the labelled
    training scenes (:func:`~ssl3d.train.recompute_batchnorm`; a pre-training's running averages describe its own
    data). The features are those a fine-tuning head reads (``head_spec["input"]``); the classifier becomes that
    head. C is fixed rather than cross-validated: 20 labelled points per room leave single examples of rare classes,
    and a C chosen on such folds changed from seed to seed (0.001 to 1) and added more spread than it removed.
    """
    key = _key("probe_semseg", backbone, train_set, test_set, None, regime=regime,
               budget=None if regime == "full" else budget, seed=seed, C=C, batch_size=batch_size,
               ignore_index=ignore_index, head=head_input(backbone))
    return _measured(cache, key, lambda: _probe_semseg(backbone, train_set, test_set, regime, budget, seed, method,
                                                       task, C, batch_size, ignore_index, key),
                     method=method, task=task)


def _probe_semseg(backbone, train_set, test_set, regime, budget, seed, method, task, C, batch_size, ignore_index,
                  key):
    labelled, extra, budget = _labelled_scenes(train_set, regime, budget, seed)
    num_classes = train_set.num_classes
    model = Segmenter(_fresh_copy(backbone, seed), num_classes, hidden=())  # one linear layer: the classifier
    loader = _loader(labelled, batch_size, seed, D.collate_scenes, shuffle=False)
    recompute_batchnorm(model.backbone, loader)
    x, y = _labelled_features(model, loader, ignore_index)
    model.head.out = _head_like(linear_head(x, y, num_classes, "logistic", C, seed), model.backbone)
    res = evaluate_semseg(model, test_set, num_classes, ignore_index)
    common = {"regime": regime, "budget": budget, **extra, "C": C, "key": key}
    return [_record(backbone, method, task, "probe_semseg", seed, "miou", 100 * res.miou, **common),
            _record(backbone, method, task, "probe_semseg", seed, "accuracy", 100 * res.accuracy, **common)]


PROBE_HEAD_C = 1.0    # LP-FT's logistic regression: inverse regularisation on the raw features
PROBE_HEAD_MAX_POINTS = 4096  # LP-FT: labelled points the logistic regression is fitted on, at most (24-d features)
ABSENT_BIAS = -30.0   # LP-FT: a class without labelled points starts far below the others (finite: it is trained)


def _labelled_features(model, loader, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """The features a Segmenter's head reads, at the labelled points of every batch, with the network in eval mode
    (BatchNorm's running statistics): (M, C) float64 and (M,) labels. The model comes back in the mode it had."""
    was_training = model.training
    model.eval()
    xs, ys = [], []
    with torch.no_grad():
        for b in loader:
            f = model.backbone.encode(b)[model.input]  # (ΣM, C)
            labels = b["labels"].to(f.device)
            keep = labels != ignore_index
            xs.append(f[keep].double().cpu())
            ys.append(labels[keep].cpu())
    model.train(was_training)
    x, y = torch.cat(xs).numpy(), torch.cat(ys).numpy()
    if len(np.unique(y)) < 2:
        raise ValueError(f"the labelled points hold {len(np.unique(y))} class(es); a linear head needs two or more — "
                         f"raise the budget")
    return x, y


def _head_like(layer: torch.nn.Linear, backbone) -> torch.nn.Linear:
    p = next(backbone.parameters())
    return layer.to(p.device, p.dtype)


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
