"""torch Datasets and collate functions over the embedded (procedural) data, adapters for the real readers, and
the label budgets of the data-efficient protocols.

=======================  ===================================================  ===================================
dataset                  item (the schema of ``ssl3d.data``)                  collate
=======================  ===================================================  ===================================
ObjectDataset            object cloud: points, normals, part, label           :func:`collate_objects` (point nets)
FixedSizeClouds          the same from a real reader (ModelNet40, …)          :func:`collate_voxels` (sparse nets)
ClassSubset              the items of some classes, relabelled (class-held-out splits)
SceneDataset             voxelized room: coords, feats, labels, + points,     :func:`collate_scenes`
VoxelizedScenes          semantic, inverse (the same from S3DIS / ScanNet)
ViewPairDataset          two views + correspondences + relative transform     :func:`collate_pairs`
RGBDFrameDataset         RGB-D frame + its points + their pixel indices       :func:`collate_frames`
=======================  ===================================================  ===================================

Items are generated lazily from (seed, split, index) and cached, so a dataset is deterministic, cheap to
create, and the train and test splits never share an instance. Augmentations (``transform``) get a
generator seeded by (seed, epoch, index) — :class:`AugmentedDataset`, the base of every dataset here — so call
``set_epoch`` to draw new augmentations each epoch (``ssl3d.train.train`` does).

Label budgets (nested: a smaller budget is a subset of a larger one for the same seed):
    :func:`label_fraction_subset` / :func:`per_class_subset`   labelled shapes (classification, part segmentation)
    :func:`scene_subset`           limited reconstructions: a fraction of the training scenes, all their labels
    :func:`annotation_subset`      limited annotations: exactly N labelled points per scene
(Hou et al., CVPR 2021, "Exploring Data-Efficient 3D Scene Understanding with Contrastive Scene Contexts".)
"""

from __future__ import annotations

import copy
import functools
import zlib

import numpy as np
import torch
from torch.utils.data import Dataset

from ssl3d import geometry as G
from ssl3d.data import rgbd as R
from ssl3d.data import synthetic as S

__all__ = [
    "label_fraction_subset",
    "per_class_subset",
    "scene_subset",
    "annotation_subset",
    "AugmentedDataset",
    "ObjectDataset",
    "collate_objects",
    "collate_voxels",
    "collate_for",
    "FixedSizeClouds",
    "ClassSubset",
    "SceneDataset",
    "VoxelizedScenes",
    "collate_scenes",
    "PairDataset",
    "ViewPairDataset",
    "collate_pairs",
    "RGBDFrameDataset",
    "collate_frames",
]

_SPLITS = {"train": 0, "val": 1, "test": 2}


def _seed(*parts) -> int:
    """A stable 63-bit seed from a tuple of ints/strings (independent of PYTHONHASHSEED). NumPy scalars count as the
    Python numbers they hold: ``ds[np.int64(3)]`` (a ``Subset`` with array indices) is the same item as ``ds[3]``."""
    parts = tuple(p.item() if isinstance(p, np.generic) else p for p in parts)
    return zlib.crc32(repr(parts).encode()) * 2654435761 % (2**63)


def _class_permutations(labels, seed: int):
    labels = np.asarray(labels)
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        yield idx, np.random.default_rng(_seed("fraction", seed, int(c))).permutation(idx)


def label_fraction_subset(labels, fraction: float, seed: int = 0, min_per_class: int = 1) -> np.ndarray:
    """Indices of a class-stratified subset holding ``fraction`` of every class (at least ``min_per_class``).

    Deterministic given ``seed``, and nested: for one seed the 1 % subset ⊂ 5 % ⊂ 10 % ⊂ 100 %, because every
    fraction takes a prefix of the same per-class permutation. Returns sorted int64 indices. With few shapes per
    class the rounding and ``min_per_class`` dominate (1 % of 30 shapes is 1 shape, 3.3 %): report the number of
    labelled shapes, or ask for :func:`per_class_subset` directly.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    out = [perm[:min(len(idx), max(min_per_class, int(round(fraction * len(idx)))))]
           for idx, perm in _class_permutations(labels, seed)]
    return np.sort(np.concatenate(out)).astype(np.int64)


def per_class_subset(labels, n_per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n_per_class`` labelled shapes of every class (all of a class that has fewer); sorted int64.
    The same per-class permutations as :func:`label_fraction_subset`, so the two nest with each other."""
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be ≥ 1, got {n_per_class}")
    return np.sort(np.concatenate([perm[:n_per_class] for _, perm in _class_permutations(labels, seed)]))


def scene_subset(n_scenes: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Limited reconstructions: ``round(fraction · n_scenes)`` training scenes (at least one), sorted int64, nested
    across fractions for one seed (a prefix of one permutation)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if n_scenes < 1:
        raise ValueError("scene_subset: the training split has no scenes")
    perm = np.random.default_rng(_seed("scenes", seed)).permutation(n_scenes)
    return np.sort(perm[:max(1, int(round(fraction * n_scenes)))]).astype(np.int64)


def annotation_subset(labels, n_points: int, seed: int = 0, key=0, ignore_index: int = -100) -> np.ndarray:
    """Limited annotations: indices of exactly ``n_points`` labelled points of one scene (uniformly at random
    among the points whose label is not ``ignore_index``; all of them when the scene has fewer).

    Deterministic given (seed, key) — ``key`` names the scene, e.g. its index — and nested: the 20-point subset
    ⊂ 50 ⊂ 100 ⊂ 200 for one seed. Returns sorted int64 point indices.
    """
    if n_points < 1:
        raise ValueError(f"n_points must be ≥ 1, got {n_points}")
    labels = np.asarray(labels)
    valid = np.nonzero(labels != ignore_index)[0]
    perm = np.random.default_rng(_seed("annotations", seed, key)).permutation(valid)
    return np.sort(perm[:n_points]).astype(np.int64)


class AugmentedDataset(Dataset):
    """Base of every dataset here: a seed, an epoch, and the random generator of each item's augmentation.

    ``aug_rng(i, *extra)`` is seeded by (seed, epoch, i, *extra): augmentations differ per epoch and per item, and
    the same (seed, epoch) gives the same data whatever the worker or process that loads it.
    """

    def __init__(self, seed: int = 0, transform=None):
        self.seed, self.transform, self.epoch = seed, transform, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def aug_rng(self, i: int, *extra) -> np.random.Generator:
        return np.random.default_rng(_seed("aug", self.seed, self.epoch, i, *extra))

    def augment(self, sample: dict, i: int, *extra) -> dict:
        if self.transform is None:
            return sample
        return self.transform(dict(sample), self.aug_rng(i, *extra))


class _Lazy(AugmentedDataset):
    """Embedded data: lazily generated, cached items for one split."""

    def __init__(self, seed: int, split: str, transform=None):
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {list(_SPLITS)}, got {split!r}")
        super().__init__(seed, transform)
        self.split = split
        self._cache: dict[int, dict] = {}

    def _item(self, i: int) -> dict:
        raise NotImplementedError

    def raw(self, i: int) -> dict:
        """The item before augmentation (cached)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {type(self).__name__} of length {len(self)}")
        i = i % len(self)
        if i not in self._cache:
            self._cache[i] = self._item(i)
        return self._cache[i]


# ----------------------------------------------------------------------------------------------------------
class ObjectDataset(_Lazy):
    """Object clouds with class and part labels (ModelNet40 / ShapeNetPart / ScanObjectNN stand-in).

    ``variant``: ``"clean"`` (full surface samples) or a scan variant ``"OBJ_ONLY" | "OBJ_BG" | "PB_T50_RS"``.
    Items: ``points (N, 3) float32``, ``normals (N, 3)``, ``part (N,) int64`` (global part ids, −1 = background),
    ``label`` (int). Class c holds items ``c·n_per_class … (c+1)·n_per_class − 1``.
    """

    def __init__(self, n_per_class: int = 50, n_points: int = 1024, split: str = "train", seed: int = 0,
                 variant: str = "clean", classes=None, random_yaw: bool = False, stretch: float = 0.3,
                 transform=None):
        super().__init__(seed, split, transform)
        if variant not in ("clean", "OBJ_ONLY", "OBJ_BG", "PB_T50_RS"):
            raise ValueError(f"variant must be clean, OBJ_ONLY, OBJ_BG or PB_T50_RS, got {variant!r}")
        self.classes = list(classes) if classes is not None else list(S.OBJECT_CLASSES)
        self.class_ids = [S.OBJECT_CLASSES.index(c) for c in self.classes]
        self.n_per_class, self.n_points, self.variant, self.random_yaw = n_per_class, n_points, variant, random_yaw
        self.stretch = stretch
        self.class_names, self.num_classes = list(self.classes), len(self.classes)
        self.part_ranges, self.num_parts = [list(r) for r in S.PART_RANGES], S.NUM_PARTS  # global part ids

    def __len__(self):
        return len(self.classes) * self.n_per_class

    @property
    def labels(self) -> np.ndarray:
        """(len,) class label of every item (dataset-local ids 0..len(classes)−1), without generating them."""
        return np.repeat(np.arange(len(self.classes)), self.n_per_class)

    def _item(self, i):
        c = self.class_ids[i // self.n_per_class]
        s = _seed("object", self.seed, self.split, self.variant, c, i % self.n_per_class)
        if self.variant == "clean":
            d = S.sample_object(c, self.n_points, seed=s, random_yaw=self.random_yaw, stretch=self.stretch)
            d.pop("mesh")
        else:
            d = S.scan_object(c, self.n_points, seed=s, variant=self.variant)
        d["label"] = i // self.n_per_class
        return d

    def __getitem__(self, i):
        return self.augment(self.raw(i), i)


def collate_objects(batch: list[dict]) -> dict:
    """Stack fixed-size object clouds (point backbones): points (B, N, 3), and label (B,), normals (B, N, 3),
    part (B, N), feats (B, N, C) when every item has them."""
    out = {"points": torch.from_numpy(np.stack([b["points"] for b in batch])).float()}
    if all("label" in b for b in batch):
        out["label"] = torch.tensor([b["label"] for b in batch], dtype=torch.long)
    for k in ("normals", "part", "feats"):
        if all(k in b for b in batch):
            out[k] = torch.from_numpy(np.stack([b[k] for b in batch]))
    return out


def collate_voxels(batch: list[dict], voxel_size: float) -> dict:
    """Voxelize object clouds for a sparse backbone: ``coords (ΣM, 4)`` = (sample, x, y, z), ``feats (ΣM, C)``
    (per-voxel mean of the items' ``feats``; absent for geometry-only items), ``centers (ΣM, 3)`` voxel centres,
    ``labels (ΣM,)`` majority part per voxel when items have parts, ``inverse (ΣN,)`` point → row of ``coords``,
    and the :func:`collate_objects` keys (``label (B,)``, ``points (B, N, 3)``, ``part (B, N)``)."""
    out = collate_objects(batch)
    vox = [G.voxelize(torch.from_numpy(np.asarray(b["points"], np.float32)), voxel_size,
                      feats=None if "feats" not in b else torch.as_tensor(b["feats"]),
                      labels=None if "part" not in b else torch.as_tensor(b["part"]).long()) for b in batch]
    offsets = torch.tensor([0] + [len(v) for v in vox]).cumsum(0)
    out.update(coords=G.with_batch_index([v.coords for v in vox]), centers=torch.cat([v.centers() for v in vox]),
               inverse=torch.cat([v.inverse + offsets[i] for i, v in enumerate(vox)]), offsets=offsets)
    if all(v.feats is not None for v in vox):
        out["feats"] = torch.cat([v.feats for v in vox]).float()
    else:
        out.pop("feats", None)
    if all(v.labels is not None for v in vox):
        out["labels"] = torch.cat([v.labels for v in vox])  # (ΣM,) majority part per voxel: per-site targets
    return out


def collate_for(backbone, voxel_size: float = 0.05):
    """The collate function that batches object items for ``backbone``: :func:`collate_objects` for point
    backbones (``kind == "point"``), :func:`collate_voxels` at ``voxel_size`` for sparse ones."""
    kind = getattr(backbone, "kind", None)
    if kind == "point":
        return collate_objects
    if kind == "sparse":
        return functools.partial(collate_voxels, voxel_size=voxel_size)
    raise TypeError(f"collate_for: {type(backbone).__name__} is not an ssl3d backbone (kind {kind!r})")


class FixedSizeClouds(AugmentedDataset):
    """Adapt a reader of real object clouds (``ssl3d.data.real``: ModelNet40, ShapeNetPart, ScanObjectNN) to the
    :class:`ObjectDataset` interface: exactly ``n_points`` points per item (a random subset, deterministic per
    seed and index; drawn with replacement when a cloud is smaller), centred and scaled into the unit sphere
    (bounding-box centre), keys ``points``, ``label`` and — when the reader has them — ``normals`` and ``part``.
    Metadata (``class_names``, ``num_classes``, ``part_ranges``, ``num_parts``) is copied from the reader when
    it has it."""

    def __init__(self, base, n_points: int = 1024, seed: int = 0, normalize: bool = True, transform=None):
        super().__init__(seed, transform)
        self.base, self.n_points, self.normalize = base, n_points, normalize
        self._labels = None
        for k in ("class_names", "num_classes", "part_ranges", "num_parts"):
            if hasattr(base, k):
                setattr(self, k, getattr(base, k))

    def __len__(self):
        return len(self.base)

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            base_labels = getattr(self.base, "labels", None)
            self._labels = (np.asarray(base_labels).reshape(-1) if base_labels is not None else
                            np.array([int(np.asarray(self.base[i]["label"]).reshape(-1)[0]) for i in range(len(self))]))
        return self._labels

    def __getitem__(self, i):
        d = self.base[i]
        n = len(d["points"])
        rng = np.random.default_rng(_seed("subsample", self.seed, i))
        idx = rng.choice(n, self.n_points, replace=n < self.n_points)
        out = {"points": np.asarray(d["points"], np.float32)[idx], "label": int(np.asarray(d["label"]).reshape(-1)[0])}
        for k in ("normals", "part"):
            if k in d and d[k] is not None:
                out[k] = np.asarray(d[k])[idx]
        if self.normalize:
            out["points"] = G.normalize_unit_sphere(out["points"], center="bbox")[0]
        return self.augment(out, i)


class ClassSubset(Dataset):
    """The items of ``dataset`` whose class is one of ``classes`` (names), relabelled 0 … len(classes) − 1 in that
    order: one side of a class-held-out split (pre-train on some classes, probe on the others). ``labels``,
    ``class_names``, ``num_classes`` and ``part_ranges`` describe the subset; ``set_epoch`` reaches the dataset."""

    def __init__(self, dataset, classes):
        names, classes = list(dataset.class_names), list(classes)
        unknown = [c for c in classes if c not in names]
        if unknown or not classes or len(set(classes)) != len(classes):
            raise ValueError(f"ClassSubset: classes must be distinct names of the dataset's classes {names}; got "
                             f"{classes}" + (f" ({unknown} unknown)" if unknown else ""))
        ids = [names.index(c) for c in classes]
        old = np.asarray(dataset.labels)
        self.dataset, self.indices = dataset, np.flatnonzero(np.isin(old, ids))
        remap = np.full(len(names), -1)
        remap[ids] = np.arange(len(ids))
        self._labels = remap[old[self.indices]]
        self.class_names, self.num_classes = classes, len(classes)
        if hasattr(dataset, "part_ranges"):
            self.part_ranges, self.num_parts = [dataset.part_ranges[i] for i in ids], dataset.num_parts

    def __len__(self):
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    def set_epoch(self, epoch: int):
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, i):
        return {**self.dataset[int(self.indices[i])], "label": int(self._labels[i])}


# ----------------------------------------------------------------------------------------------------------
class _Scenes(AugmentedDataset):
    """Base of the scene datasets: point-level scene → (labels kept for limited annotations) → augmentation →
    voxelization. Subclasses provide ``_points(i)`` → dict with ``points (N, 3)``, ``colors (N, 3)`` in [0, 1],
    ``semantic (N,)`` (and ``normals`` for ``features="rgb+normal"``)."""

    FEATURES = ("rgb", "ones", "rgb+normal")

    def __init__(self, voxel_size: float, features: str, seed: int, transform, ignore_index: int):
        super().__init__(seed, transform)
        if features not in self.FEATURES:
            raise ValueError(f"features must be one of {self.FEATURES}, got {features!r}")
        if not voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0 (metres), got {voxel_size}")
        self.voxel_size, self.features, self.ignore_index = voxel_size, features, ignore_index
        self.annotated: dict[int, np.ndarray] | None = None  # scene → labelled point indices (limited annotations)

    @property
    def in_channels(self) -> int:
        """Width of ``feats`` for a backbone's ``in_channels`` (0 = geometry only)."""
        return {"rgb": 3, "ones": 0, "rgb+normal": 6}[self.features]

    def _points(self, i: int) -> dict:
        raise NotImplementedError

    def class_counts(self) -> np.ndarray:
        """(num_classes,) labelled points of each class over every scene, before voxelization (``ignore_index``
        and other labels outside [0, num_classes) are not counted). A test split should hold every class its
        training split holds: mIoU scores a class the test scenes lack but a model predicts as IoU 0."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for i in range(len(self)):
            s = np.asarray(self._points(i)["semantic"]).reshape(-1)
            counts += np.bincount(s[(s >= 0) & (s < self.num_classes)], minlength=self.num_classes)
        return counts

    def with_annotations(self, n_points: int, seed: int = 0):
        """A copy in which every scene keeps the labels of exactly ``n_points`` of its points (the limited-
        annotations regime; :func:`annotation_subset`, nested across ``n_points``). Evaluation data is untouched."""
        out = copy.copy(self)
        out.annotated = {i: annotation_subset(self._points(i)["semantic"], n_points, seed, key=i,
                                              ignore_index=self.ignore_index) for i in range(len(self))}
        return out

    def __getitem__(self, i):
        d = dict(self._points(i))
        if self.annotated is not None:  # limited annotations: only the chosen points keep their labels
            sem = np.full_like(d["semantic"], self.ignore_index)
            sem[self.annotated[i]] = d["semantic"][self.annotated[i]]
            d["semantic"] = sem
        d = self.augment(d, i)
        n = len(d["points"])
        if self.features == "rgb":
            f = d["colors"]
        elif self.features == "rgb+normal":
            f = np.concatenate([d["colors"], d["normals"]], 1)
        else:
            f = np.ones((n, 1), np.float32)
        pts = torch.from_numpy(np.ascontiguousarray(d["points"], np.float32))
        sem = torch.from_numpy(np.asarray(d["semantic"], np.int64))
        v = G.voxelize(pts, self.voxel_size, feats=torch.from_numpy(np.ascontiguousarray(f, np.float32)), labels=sem,
                       ignore_index=self.ignore_index)
        out = {"coords": v.coords, "labels": v.labels, "inverse": v.inverse, "points": pts, "semantic": sem}
        if self.features != "ones":  # geometry-only backbones get no feats (in_channels = 0)
            out["feats"] = v.feats.float()
        return out


class SceneDataset(_Scenes):
    """Voxelized rooms for semantic segmentation (ScanNet / S3DIS stand-in).

    Items: ``coords (M, 3) int64`` voxel coordinates, ``feats (M, C) float32`` (RGB, RGB + normals; absent for
    ``features="ones"``, geometry only), ``labels (M,)`` majority semantic label per voxel (``ignore_index`` where
    none), ``inverse (N,)`` point → voxel map, ``points (N, 3)`` and ``semantic (N,)`` for evaluation at the
    original points. Augmentation (``transform``) acts on the points before voxelization.
    """

    def __init__(self, n_rooms: int = 8, points_per_room: int = 60_000, voxel_size: float = 0.05,
                 split: str = "train", seed: int = 0, features: str = "rgb", transform=None,
                 ignore_index: int = -100):
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {list(_SPLITS)}, got {split!r}")
        super().__init__(voxel_size, features, seed, transform, ignore_index)
        self.n_rooms, self.points_per_room, self.split = n_rooms, points_per_room, split
        self.num_classes, self.class_names = len(S.ROOM_CLASSES), list(S.ROOM_CLASSES)
        self._cache: dict[int, dict] = {}

    def __len__(self):
        return self.n_rooms

    def room(self, i) -> S.Room:
        return S.make_room(_seed("room", self.seed, self.split, i))

    def _points(self, i):
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for SceneDataset of length {len(self)}")
        if i not in self._cache:
            self._cache[i] = S.sample_room(self.room(i), self.points_per_room,
                                           seed=_seed("roompts", self.seed, self.split, i))
        return self._cache[i]


class VoxelizedScenes(_Scenes):
    """Adapt a reader of real scenes (``ssl3d.data.real.S3DIS`` / ``ScanNetScenes``: items with ``points``,
    ``colors`` in [0, 1] and ``semantic``) to :class:`SceneDataset`'s items (voxelized, same keys). Each scene is
    shifted so that its minimum corner is the origin."""

    def __init__(self, base, voxel_size: float = 0.05, features: str = "rgb", transform=None, seed: int = 0,
                 num_classes: int | None = None, class_names=None, ignore_index: int = -100):
        super().__init__(voxel_size, features, seed, transform, ignore_index)
        self.base = base
        self.num_classes = num_classes or getattr(base, "num_classes", None)
        self.class_names = class_names or getattr(base, "class_names", None)

    def __len__(self):
        return len(self.base)

    def _points(self, i):
        d = {k: np.asarray(v) for k, v in self.base[i].items() if k in ("points", "colors", "semantic", "normals")}
        d["points"] = d["points"].astype(np.float32)
        d["points"] = d["points"] - d["points"].min(0)
        d["semantic"] = d["semantic"].astype(np.int64)
        return d


def collate_scenes(batch: list[dict]) -> dict:
    """Concatenate scenes into one sparse batch: ``coords (ΣM, 4)`` = (batch index, x, y, z), ``feats``,
    ``labels``, ``inverse`` shifted into the batch (ΣN,), ``semantic`` (ΣN,), ``points`` (ΣN, 3) and ``offsets``
    (B + 1,) voxel offsets per scene."""
    offsets = torch.tensor([0] + [len(b["coords"]) for b in batch]).cumsum(0)
    out = {"coords": G.with_batch_index([b["coords"] for b in batch]),
           "labels": torch.cat([b["labels"] for b in batch]),
           "inverse": torch.cat([b["inverse"] + offsets[i] for i, b in enumerate(batch)]),
           "semantic": torch.cat([b["semantic"] for b in batch]), "points": torch.cat([b["points"] for b in batch]),
           "offsets": offsets}
    if all("feats" in b for b in batch):
        out["feats"] = torch.cat([b["feats"] for b in batch])
    return out


# ----------------------------------------------------------------------------------------------------------
class PairDataset(AugmentedDataset):
    """Base of the view-pair datasets (embedded :class:`ViewPairDataset`, ``scannet_pairs.ScanNetPairs``).

    Subclasses provide ``raw(k)`` — the stored pair, with the fields of :func:`ssl3d.data.rgbd.make_view_pair` — and
    the attributes ``voxel_size``, ``features`` ("ones" or "rgb") and ``radius_factor``. ``__getitem__`` augments
    each view independently, quantizes it again and finds the correspondences among the kept points.
    """

    voxel_size: float
    features: str
    radius_factor: float = 1.5

    def __getitem__(self, k):
        d = dict(self.raw(k))
        T = d["T"].astype(np.float64)
        views = []
        for v in (0, 1):
            s = {"points": d[f"points{v}"], "colors": d[f"colors{v}"]}
            if self.transform is not None:
                s = self.transform(s, self.aug_rng(k, v))
            views.append(s)
        # x0' = R0 x0, x1' = R1 x1 and x0 = T x1  ⇒  x0' = R0 T R1ᵀ x1'
        R0, R1 = (np.eye(4), np.eye(4))
        R0[:3, :3] = views[0].get("rotation", np.eye(3))
        R1[:3, :3] = views[1].get("rotation", np.eye(3))
        T = R0 @ T @ np.linalg.inv(R1)
        out = {"T": torch.from_numpy(T).float(), "overlap": d["overlap"]}
        # quantize each augmented view again (a rotation can bring two points into one voxel) and find the
        # correspondences among the points kept — radius search at 1.5 × voxel after the ground-truth transform, as
        # PointContrast's loader does after its sparse_quantize
        for v, s in enumerate(views):
            pts = torch.from_numpy(np.asarray(s["points"], np.float32))
            vox = G.voxelize(pts, self.voxel_size)
            out[f"points{v}"] = pts[vox.index]
            out[f"coords{v}"] = vox.coords
            out[f"feats{v}"] = (torch.ones(len(vox), 1) if self.features == "ones"
                                else torch.from_numpy(np.asarray(s["colors"], np.float32))[vox.index])
        p1_in_0 = G.apply_transform(out["points1"], out["T"])
        out["correspondences"] = G.radius_pairs(out["points0"], p1_in_0, self.radius_factor * self.voxel_size)
        return out


class ViewPairDataset(PairDataset, _Lazy):
    """PointContrast's input: pairs of overlapping RGB-D views of rooms with point correspondences.

    For each of ``n_rooms`` rooms, ``frames_per_room`` frames are rendered along a trajectory and every pair
    with overlap ≥ ``min_overlap`` (within ``max_gap`` frames) is kept. An item holds both views voxel-
    subsampled at ``voxel_size`` in their own camera frames (``frame="world"``: rotated by the camera-to-world
    rotation, so gravity-aligned with z up like the fine-tuning scenes, still centred on the camera), then each
    view is independently augmented (``transform``, e.g. a random rotation) and quantized again (unique voxels);
    correspondences are then found among the kept points (radius ``radius_factor · voxel_size`` after the
    ground-truth transform). ``T`` maps view 1 into view 0 *after* augmentation, so
    ``‖points0[i] − T · points1[j]‖ ≤ 1.5 · voxel_size`` for every correspondence (i, j).
    Items: ``points0/points1 (N, 3)``, ``coords0/coords1 (N, 3) int64`` unique voxel coordinates, ``feats0/feats1``
    (ones, geometry only, as in PointContrast; or colours), ``correspondences (P, 2)``, ``T (4, 4)``, ``overlap``.
    """

    def __init__(self, n_rooms: int = 4, frames_per_room: int = 24, voxel_size: float = 0.05,
                 min_overlap: float = 0.3, max_gap: int = 4, split: str = "train", seed: int = 0,
                 width: int = 160, height: int = 120, features: str = "ones", transform=None,
                 radius_factor: float = 1.5, frame: str = "camera"):
        _Lazy.__init__(self, seed, split, transform)
        if frame not in ("camera", "world"):
            raise ValueError(f"frame must be 'camera' (each view in its camera frame) or 'world' (rotated by the "
                             f"camera-to-world rotation: gravity-aligned, z up), got {frame!r}")
        self.frame = frame
        self.n_rooms, self.frames_per_room, self.voxel_size = n_rooms, frames_per_room, voxel_size
        self.radius_factor = radius_factor
        self.min_overlap, self.max_gap, self.width, self.height, self.features = (min_overlap, max_gap, width,
                                                                                  height, features)
        self._frames: dict[int, list[dict]] = {}
        self.pairs: list[tuple[int, int, int, float]] = []  # (room, i, j, overlap)
        for r in range(n_rooms):
            self.pairs += [(r, i, j, ov) for i, j, ov in
                           R.find_view_pairs(self.frames(r), min_overlap, max(voxel_size, 0.1), max_gap)]
        if not self.pairs:
            raise ValueError("ViewPairDataset: no frame pair reaches min_overlap; render more frames per room")

    def frames(self, r: int) -> list[dict]:
        if r not in self._frames:
            room = S.make_room(_seed("room", self.seed, self.split, r))
            self._frames[r] = R.scan_room(room, self.frames_per_room, self.width, self.height,
                                          seed=_seed("traj", self.seed, self.split, r))
        return self._frames[r]

    def __len__(self):
        return len(self.pairs)

    def _item(self, k):
        r, i, j, _ = self.pairs[k]
        f = self.frames(r)
        d = R.make_view_pair(f[i], f[j], self.voxel_size)
        if self.frame == "world":  # x' = R_v x for each view: gravity-aligned (z up), still centred on its camera
            R0, R1 = np.eye(4), np.eye(4)
            R0[:3, :3], R1[:3, :3] = f[i]["pose"][:3, :3], f[j]["pose"][:3, :3]
            d["points0"] = (d["points0"] @ R0[:3, :3].T).astype(np.float32)
            d["points1"] = (d["points1"] @ R1[:3, :3].T).astype(np.float32)
            d["T"] = (R0 @ d["T"].astype(np.float64) @ R1.T).astype(np.float32)  # x0' = R0 T R1ᵀ x1'
        return d

def collate_pairs(batch: list[dict]) -> dict:
    """Batch view pairs: per view ``coords (ΣN, 4)`` with the batch index first and ``feats``; correspondences
    shifted into the concatenated index space (ΣP, 2); ``T (B, 4, 4)``; ``offsets0/offsets1`` (B + 1,)."""
    out = {"T": torch.stack([b["T"] for b in batch])}
    for v in (0, 1):
        out[f"coords{v}"] = G.with_batch_index([b[f"coords{v}"] for b in batch])
        out[f"feats{v}"] = torch.cat([b[f"feats{v}"] for b in batch])
        out[f"points{v}"] = torch.cat([b[f"points{v}"] for b in batch])
        out[f"offsets{v}"] = torch.tensor([0] + [len(b[f"points{v}"]) for b in batch]).cumsum(0)
    out["correspondences"] = torch.cat([b["correspondences"] + torch.stack([out["offsets0"][i], out["offsets1"][i]])
                                        for i, b in enumerate(batch)])
    return out


# ----------------------------------------------------------------------------------------------------------
class RGBDFrameDataset(_Lazy):
    """Single RGB-D frames with their back-projected points and the pixel each point came from
    (image-to-point pre-training). Items: ``image (3, H, W) float`` in [0, 1], ``depth (H, W)``, ``K``, ``pose (4, 4)``,
    ``points (M, 3)`` camera frame (one per ``voxel_size`` voxel), ``colors (M, 3)`` in [0, 1], ``coords (M, 3)``,
    ``pixels (M, 2)`` (row, column), ``semantic (M,)`` and ``semantic_image (H, W)``.

    ``transform`` moves the points *after* their pixels were recorded, so ``points`` no longer project onto
    ``pixels`` with ``K``; image-to-point pre-training therefore builds its frames with ``transform=None`` and
    augments on the 3D side after pairing (``ssl3d.methods.image_to_point``)."""

    def __init__(self, n_rooms: int = 4, frames_per_room: int = 8, voxel_size: float = 0.05, split: str = "train",
                 seed: int = 0, width: int = 160, height: int = 120, transform=None):
        super().__init__(seed, split, transform)
        self.n_rooms, self.frames_per_room, self.voxel_size = n_rooms, frames_per_room, voxel_size
        self.width, self.height = width, height
        self._rooms: dict[int, list[dict]] = {}

    def __len__(self):
        return self.n_rooms * self.frames_per_room

    def _item(self, k):
        r, i = divmod(k, self.frames_per_room)
        if r not in self._rooms:
            room = S.make_room(_seed("room", self.seed, self.split, r))
            self._rooms[r] = R.scan_room(room, self.frames_per_room, self.width, self.height,
                                         seed=_seed("traj", self.seed, self.split, r))
        return self._rooms[r][i]

    def __getitem__(self, k):
        f = self.raw(k)
        p = R.frame_points(f, self.voxel_size)
        p = self.augment(p, k)
        pts = torch.from_numpy(p["points"])
        return {"image": torch.from_numpy(f["color"]).permute(2, 0, 1).float() / 255,
                "depth": torch.from_numpy(f["depth"]), "K": torch.from_numpy(f["K"]).float(),
                "points": pts, "colors": torch.from_numpy(np.asarray(p["colors"], np.float32)),
                "coords": torch.floor(pts / self.voxel_size).long(),
                "pixels": torch.from_numpy(p["pixels"]), "semantic": torch.from_numpy(p["semantic"]),
                "semantic_image": torch.from_numpy(f["semantic"]), "pose": torch.from_numpy(f["pose"]).float()}


def collate_frames(batch: list[dict]) -> dict:
    """Images stacked (B, 3, H, W) with ``K`` (B, 3, 3) (and ``depth``, ``semantic_image`` when every item has
    them); points concatenated with ``coords (ΣM, 4)`` (batch index first), ``pixels (ΣM, 3)`` = (batch index, row,
    column), and ``colors`` / ``semantic`` when present (real frames carry no labels)."""
    out = {k: torch.stack([b[k] for b in batch]) for k in ("image", "K", "depth", "semantic_image")
           if all(k in b for b in batch)}
    out["coords"] = G.with_batch_index([b["coords"] for b in batch])
    out["pixels"] = G.with_batch_index([b["pixels"] for b in batch])
    for k in ("points", "colors", "semantic"):
        if all(k in b for b in batch):
            out[k] = torch.cat([b[k] for b in batch])
    return out
