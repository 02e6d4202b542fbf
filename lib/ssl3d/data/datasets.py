"""torch Datasets and collate functions over the embedded (procedural) data, and label-fraction splits.

=======================  ===================================================  ==========================
dataset                  item                                                 collate
=======================  ===================================================  ==========================
ObjectDataset            object cloud: points, normals, part labels, class    :func:`collate_objects`
SceneDataset             voxelized room: coords, feats, labels, point maps    :func:`collate_scenes`
ViewPairDataset          two views + correspondences + relative transform     :func:`collate_pairs`
RGBDFrameDataset         RGB-D frame + its points + their pixel indices       :func:`collate_frames`
=======================  ===================================================  ==========================

Items are generated lazily from (seed, split, index) and cached, so a dataset is deterministic, cheap to
create, and the train and test splits never share an instance. Augmentations (``transform``) get a
generator seeded by (seed, epoch, index): call ``set_epoch`` to draw new augmentations each epoch.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch.utils.data import Dataset

from ssl3d import geometry as G
from ssl3d.data import rgbd as R
from ssl3d.data import synthetic as S

__all__ = [
    "label_fraction_subset",
    "ObjectDataset",
    "collate_objects",
    "SceneDataset",
    "collate_scenes",
    "ViewPairDataset",
    "collate_pairs",
    "RGBDFrameDataset",
    "collate_frames",
    "FixedSizeClouds",
    "VoxelizedScenes",
]

_SPLITS = {"train": 0, "val": 1, "test": 2}


def _seed(*parts) -> int:
    """A stable 63-bit seed from a tuple of ints/strings (independent of PYTHONHASHSEED)."""
    return zlib.crc32(repr(parts).encode()) * 2654435761 % (2**63)


def label_fraction_subset(labels, fraction: float, seed: int = 0, min_per_class: int = 1) -> np.ndarray:
    """Indices of a class-stratified subset holding ``fraction`` of every class (at least ``min_per_class``).

    Deterministic given ``seed``, and nested: for one seed the 1 % subset ⊂ 5 % ⊂ 10 % ⊂ 100 %, because every
    fraction takes a prefix of the same per-class permutation. Returns sorted int64 indices.
    """
    labels = np.asarray(labels)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    out = []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        perm = np.random.default_rng(_seed("fraction", seed, int(c))).permutation(idx)
        k = min(len(idx), max(min_per_class, int(round(fraction * len(idx)))))
        out.append(perm[:k])
    return np.sort(np.concatenate(out)).astype(np.int64)


class _Lazy(Dataset):
    """Base: lazily generated, cached items + per-epoch augmentation."""

    def __init__(self, seed: int, split: str, transform=None):
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {list(_SPLITS)}, got {split!r}")
        self.seed, self.split, self.transform, self.epoch = seed, split, transform, 0
        self._cache: dict[int, dict] = {}

    def set_epoch(self, epoch: int):
        self.epoch = epoch

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

    def augment(self, sample: dict, i: int) -> dict:
        if self.transform is None:
            return sample
        return self.transform(dict(sample), np.random.default_rng(_seed("aug", self.seed, self.epoch, i)))


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
    """Stack fixed-size object clouds: points (B, N, 3), normals (B, N, 3), part (B, N), label (B,)."""
    out = {"points": torch.from_numpy(np.stack([b["points"] for b in batch])).float(),
           "label": torch.tensor([b["label"] for b in batch], dtype=torch.long)}
    for k in ("normals", "part"):
        if all(k in b for b in batch):
            out[k] = torch.from_numpy(np.stack([b[k] for b in batch]))
    return out


class FixedSizeClouds(Dataset):
    """Adapt a reader of real object clouds (``ssl3d.data.real``: ModelNet40, ShapeNetPart, ScanObjectNN) to the
    :class:`ObjectDataset` interface: exactly ``n_points`` points per item (a random subset, deterministic per
    seed and index; drawn with replacement when a cloud is smaller), centred and scaled into the unit sphere,
    keys ``points``, ``label`` and — when the reader has them — ``normals`` and ``part``."""

    def __init__(self, base, n_points: int = 1024, seed: int = 0, normalize: bool = True, transform=None):
        self.base, self.n_points, self.seed, self.normalize, self.transform, self.epoch = (base, n_points, seed,
                                                                                           normalize, transform, 0)
        self._labels = None

    def __len__(self):
        return len(self.base)

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            self._labels = np.array([int(np.asarray(self.base[i]["label"]).reshape(-1)[0]) for i in range(len(self))])
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
            c = (out["points"].max(0) + out["points"].min(0)) / 2
            out["points"] = (out["points"] - c) / max(np.linalg.norm(out["points"] - c, axis=1).max(), 1e-9)
        if self.transform is not None:
            out = self.transform(out, np.random.default_rng(_seed("aug", self.seed, self.epoch, i)))
        return out


# ----------------------------------------------------------------------------------------------------------
class SceneDataset(_Lazy):
    """Voxelized rooms for semantic segmentation (ScanNet / S3DIS stand-in).

    Items: ``coords (M, 3) int64`` voxel coordinates, ``feats (M, C) float32`` (RGB, or ones for geometry-only
    networks), ``labels (M,)`` majority semantic label per voxel (``ignore_index`` where none), ``inverse (N,)``
    point → voxel map, ``points (N, 3)`` and ``point_labels (N,)`` for evaluation at the original points.
    Augmentation (``transform``) acts on the points before voxelization.
    """

    def __init__(self, n_rooms: int = 8, points_per_room: int = 60_000, voxel_size: float = 0.05,
                 split: str = "train", seed: int = 0, features: str = "rgb", transform=None,
                 ignore_index: int = -100):
        super().__init__(seed, split, transform)
        if features not in ("rgb", "ones", "rgb+normal"):
            raise ValueError(f"features must be 'rgb', 'ones' or 'rgb+normal', got {features!r}")
        self.n_rooms, self.points_per_room, self.voxel_size = n_rooms, points_per_room, voxel_size
        self.features, self.ignore_index = features, ignore_index
        self.num_classes = len(S.ROOM_CLASSES)
        self.class_names = list(S.ROOM_CLASSES)

    def __len__(self):
        return self.n_rooms

    def room(self, i) -> S.Room:
        return S.make_room(_seed("room", self.seed, self.split, i))

    def _item(self, i):
        return S.sample_room(self.room(i), self.points_per_room, seed=_seed("roompts", self.seed, self.split, i))

    def __getitem__(self, i):
        d = self.augment(self.raw(i), i)
        pts = torch.from_numpy(d["points"])
        if self.features == "rgb":
            f = d["colors"]
        elif self.features == "rgb+normal":
            f = np.concatenate([d["colors"], d["normals"]], 1)
        else:
            f = np.ones((len(pts), 1), np.float32)
        v = G.voxelize(pts, self.voxel_size, feats=torch.from_numpy(np.ascontiguousarray(f)),
                       labels=torch.from_numpy(d["semantic"]), ignore_index=self.ignore_index)
        return {"coords": v.coords, "feats": v.feats.float(), "labels": v.labels, "inverse": v.inverse,
                "points": pts, "point_labels": torch.from_numpy(d["semantic"])}


class VoxelizedScenes(Dataset):
    """Adapt a reader of real scenes (``ssl3d.data.real.S3DIS`` / ``ScanNetScenes``: items with ``points``,
    ``colors`` in [0, 1] and ``semantic``) to :class:`SceneDataset`'s items (voxelized, same keys)."""

    def __init__(self, base, voxel_size: float = 0.05, features: str = "rgb", transform=None, seed: int = 0,
                 num_classes: int | None = None, class_names=None, ignore_index: int = -100):
        self.base, self.voxel_size, self.features, self.transform = base, voxel_size, features, transform
        self.seed = seed
        self.num_classes, self.class_names, self.ignore_index, self.epoch = num_classes, class_names, ignore_index, 0

    def __len__(self):
        return len(self.base)

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __getitem__(self, i):
        d = {k: np.asarray(v) for k, v in self.base[i].items() if k in ("points", "colors", "semantic")}
        d["points"] = d["points"].astype(np.float32)
        d["points"] = d["points"] - d["points"].min(0)
        if self.transform is not None:
            d = self.transform(d, np.random.default_rng(_seed("aug", self.seed, self.epoch, i)))
        f = d["colors"].astype(np.float32) if self.features == "rgb" else np.ones((len(d["points"]), 1), np.float32)
        pts = torch.from_numpy(np.ascontiguousarray(d["points"]))
        lab = torch.from_numpy(d["semantic"].astype(np.int64))
        v = G.voxelize(pts, self.voxel_size, feats=torch.from_numpy(np.ascontiguousarray(f)), labels=lab,
                       ignore_index=self.ignore_index)
        return {"coords": v.coords, "feats": v.feats.float(), "labels": v.labels, "inverse": v.inverse,
                "points": pts, "point_labels": lab}


def collate_scenes(batch: list[dict]) -> dict:
    """Concatenate scenes into one sparse batch: ``coords (ΣM, 4)`` = (batch index, x, y, z), ``feats``,
    ``labels``, ``inverse`` shifted into the batch (ΣN,), and ``offsets`` (B + 1,) voxel offsets per scene."""
    coords = torch.cat([torch.cat([torch.full((len(b["coords"]), 1), i, dtype=torch.long), b["coords"]], 1)
                        for i, b in enumerate(batch)])
    offsets = torch.tensor([0] + [len(b["coords"]) for b in batch]).cumsum(0)
    return {"coords": coords, "feats": torch.cat([b["feats"] for b in batch]),
            "labels": torch.cat([b["labels"] for b in batch]),
            "inverse": torch.cat([b["inverse"] + offsets[i] for i, b in enumerate(batch)]),
            "point_labels": torch.cat([b["point_labels"] for b in batch]), "offsets": offsets}


# ----------------------------------------------------------------------------------------------------------
class ViewPairDataset(_Lazy):
    """PointContrast's input: pairs of overlapping RGB-D views of rooms with point correspondences.

    For each of ``n_rooms`` rooms, ``frames_per_room`` frames are rendered along a trajectory and every pair
    with overlap ≥ ``min_overlap`` (within ``max_gap`` frames) is kept. An item holds both views voxel-
    subsampled at ``voxel_size`` in their own camera frames, then each view is independently augmented
    (``transform``, e.g. a random rotation); ``T`` maps view 1 into view 0 *after* augmentation, so
    ``points0[i] ≈ T · points1[j]`` for every correspondence (i, j).
    Items: ``points0/points1 (N, 3)``, ``coords0/coords1 (N, 3) int64`` voxel coordinates, ``feats0/feats1``
    (ones, geometry only, as in PointContrast; or colours), ``correspondences (P, 2)``, ``T (4, 4)``, ``overlap``.
    """

    def __init__(self, n_rooms: int = 4, frames_per_room: int = 24, voxel_size: float = 0.05,
                 min_overlap: float = 0.3, max_gap: int = 4, split: str = "train", seed: int = 0,
                 width: int = 160, height: int = 120, features: str = "ones", transform=None):
        super().__init__(seed, split, transform)
        self.n_rooms, self.frames_per_room, self.voxel_size = n_rooms, frames_per_room, voxel_size
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
        return R.make_view_pair(f[i], f[j], self.voxel_size)

    def __getitem__(self, k):
        d = dict(self.raw(k))
        T = d["T"].astype(np.float64)
        views = []
        for v in (0, 1):
            s = {"points": d[f"points{v}"], "colors": d[f"colors{v}"]}
            if self.transform is not None:
                s = self.transform(s, np.random.default_rng(_seed("aug", self.seed, self.epoch, k, v)))
            views.append(s)
        # x0' = R0 x0, x1' = R1 x1 and x0 = T x1  ⇒  x0' = R0 T R1ᵀ x1'
        R0, R1 = (np.eye(4), np.eye(4))
        R0[:3, :3] = views[0].get("rotation", np.eye(3))
        R1[:3, :3] = views[1].get("rotation", np.eye(3))
        T = R0 @ T @ np.linalg.inv(R1)
        out = {"T": torch.from_numpy(T).float(), "correspondences": torch.from_numpy(d["correspondences"]),
               "overlap": d["overlap"]}
        for v, s in enumerate(views):
            pts = torch.from_numpy(np.asarray(s["points"], np.float32))
            out[f"points{v}"] = pts
            out[f"coords{v}"] = torch.floor(pts / self.voxel_size).long()
            out[f"feats{v}"] = (torch.ones(len(pts), 1) if self.features == "ones"
                                else torch.from_numpy(np.asarray(s["colors"], np.float32)))
        return out


def collate_pairs(batch: list[dict]) -> dict:
    """Batch view pairs: per view ``coords (ΣN, 4)`` with the batch index first and ``feats``; correspondences
    shifted into the concatenated index space (ΣP, 2); ``T (B, 4, 4)``; ``offsets0/offsets1`` (B + 1,)."""
    out = {"T": torch.stack([b["T"] for b in batch])}
    for v in (0, 1):
        out[f"coords{v}"] = torch.cat([torch.cat([torch.full((len(b[f"coords{v}"]), 1), i, dtype=torch.long),
                                                  b[f"coords{v}"]], 1) for i, b in enumerate(batch)])
        out[f"feats{v}"] = torch.cat([b[f"feats{v}"] for b in batch])
        out[f"points{v}"] = torch.cat([b[f"points{v}"] for b in batch])
        out[f"offsets{v}"] = torch.tensor([0] + [len(b[f"points{v}"]) for b in batch]).cumsum(0)
    out["correspondences"] = torch.cat([b["correspondences"] + torch.stack([out["offsets0"][i], out["offsets1"][i]])
                                        for i, b in enumerate(batch)])
    return out


# ----------------------------------------------------------------------------------------------------------
class RGBDFrameDataset(_Lazy):
    """Single RGB-D frames with their back-projected points and the pixel each point came from
    (image-to-point pre-training). Items: ``image (3, H, W) float`` in [0, 1], ``depth (H, W)``, ``K``,
    ``points (M, 3)`` camera frame (one per ``voxel_size`` voxel), ``coords (M, 3)``, ``pixels (M, 2)`` (row,
    column), ``semantic (M,)`` and ``semantic_image (H, W)``."""

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
                "points": pts, "coords": torch.floor(pts / self.voxel_size).long(),
                "pixels": torch.from_numpy(p["pixels"]), "semantic": torch.from_numpy(p["semantic"]),
                "semantic_image": torch.from_numpy(f["semantic"])}


def collate_frames(batch: list[dict]) -> dict:
    """Images stacked (B, 3, H, W); points concatenated with ``coords (ΣM, 4)`` (batch index first) and
    ``pixels (ΣM, 3)`` = (batch index, row, column)."""
    out = {k: torch.stack([b[k] for b in batch]) for k in ("image", "depth", "K", "semantic_image")}
    bidx = [torch.full((len(b["points"]), 1), i, dtype=torch.long) for i, b in enumerate(batch)]
    out["coords"] = torch.cat([torch.cat([bi, b["coords"]], 1) for bi, b in zip(bidx, batch)])
    out["pixels"] = torch.cat([torch.cat([bi, b["pixels"]], 1) for bi, b in zip(bidx, batch)])
    out["points"] = torch.cat([b["points"] for b in batch])
    out["semantic"] = torch.cat([b["semantic"] for b in batch])
    return out
