"""Readers for the real datasets the papers use: ModelNet40, ShapeNetPart, ScanObjectNN, ScanNet v2, S3DIS,
and the Middlebury "motorcycle" stereo pair that ships with scikit-image.

None of the big datasets is on this machine and nothing is ever downloaded: every reader takes the folder
you extracted the official archive into, checks the layout, and raises ONE :class:`DatasetNotFoundError`
that shows the expected tree and says where the dataset is published when the folder is missing or
incomplete. A truncated or corrupt file raises :class:`CorruptFileError` naming the file.

Every reader returns plain numpy data (a dict per item) with these standard keys:

    points    (N, 3) float32   xyz (metres for scans; unit-sphere-ish for CAD objects)
    normals   (N, 3) float32   unit normals (optional)
    colors    (N, 3) float32   RGB in [0, 1] (optional)
    label     int              object class index (classification datasets)
    part      (N,)   int64     part label (ShapeNetPart, 0..49 over all categories)
    semantic  (N,)   int64     semantic class per point, IGNORE_INDEX (-100) = unlabelled / not evaluated
    instance  (N,)   int64     instance id per point (0..K-1 within a scene/room)

and, for RGB-D frames:

    color     (H, W, 3) uint8     colour image
    depth     (H, W)    float32   depth along the optical axis in metres, 0 = invalid
    K         (3, 3)    float32   pinhole intrinsics [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    pose      (4, 4)    float32   camera-to-world transform (x_world = R x_cam + t)

Cameras follow the OpenCV convention: x right, y down, z forward; pixel (u, v) = (column, row) and
integer pixel coordinates are pixel centres. Some readers add a few documented extra keys (e.g. ``mask``
for ScanObjectNN, ``nyu40`` for ScanNet, ``uv`` pixel coordinates for back-projected frames) and string
keys (``scene``, ``room``, ``category``...).

The file formats (PLY, OFF, HDF5, numeric text tables, matrices) are parsed in :mod:`ssl3d.data.formats`;
:func:`read_ply`, :func:`read_off` and :class:`CorruptFileError` are re-exported here.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from ssl3d.data.formats import CorruptFileError, read_h5, read_matrix, read_off, read_ply, read_table

__all__ = [
    "DatasetNotFoundError",
    "CorruptFileError",
    "IGNORE_INDEX",
    # file formats
    "read_ply",
    "read_off",
    # ModelNet40
    "MODELNET40_CLASSES",
    "ModelNet40H5",
    "ModelNet40Mesh",
    "sample_mesh_points",
    # ShapeNetPart
    "SHAPENETPART_CATEGORIES",
    "SHAPENETPART_PARTS",
    "SHAPENETPART_NUM_PARTS",
    "SHAPENETPART_PART_TO_CATEGORY",
    "ShapeNetPart",
    # ScanObjectNN
    "SCANOBJECTNN_CLASSES",
    "SCANOBJECTNN_VARIANTS",
    "ScanObjectNN",
    # ScanNet v2
    "SCANNET_LAYOUT",
    "SCANNET_SUBSETS",
    "SCANNET_VALID_CLASS_IDS",
    "SCANNET20_CLASSES",
    "nyu40_to_scannet20",
    "read_scannet_scene",
    "ScanNetScenes",
    "ScanNetFrames",
    "backproject_depth",
    # S3DIS
    "S3DIS_LAYOUT",
    "S3DIS_CLASSES",
    "S3DIS_ALIASES",
    "read_s3dis_room",
    "S3DIS",
    # Middlebury (ships with scikit-image)
    "MOTORCYCLE_CALIBRATION",
    "disparity_to_depth",
    "motorcycle_rgbd",
    "motorcycle_pair",
]

IGNORE_INDEX = -100  # label of points that are not evaluated (same value as torch's cross_entropy default)


# ----------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------
class DatasetNotFoundError(FileNotFoundError):
    """The dataset folder is missing or incomplete. The message shows the expected tree and the source."""


# CorruptFileError (a file exists but cannot be read) is raised by the parsers, so it is defined next to them in
# ssl3d.data.formats and imported above: ``real.CorruptFileError is formats.CorruptFileError``.


def _not_found(dataset: str, root, missing: list[str], layout: str, source: str) -> DatasetNotFoundError:
    """Build the single error raised when a dataset root is missing or incomplete."""
    what = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
    return DatasetNotFoundError(
        f"{dataset} not found at '{root}': missing {what}.\n"
        f"Expected layout:\n{textwrap.indent(textwrap.dedent(layout).strip(), '    ')}\n"
        f"Where to get it: {source}. Nothing is downloaded automatically: extract the archive yourself and "
        f"pass the folder at the top of the tree above."
    )


def _check_layout(dataset: str, root, required: list[str], layout: str, source: str) -> Path:
    """Raise one DatasetNotFoundError listing every path of ``required`` (relative to root) that is absent."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _not_found(dataset, root, ["the folder itself"], layout, source)
    missing = [r for r in required if not (root / r).exists()]
    if missing:
        raise _not_found(dataset, root, missing, layout, source)
    return root


# ----------------------------------------------------------------------------------------------------------
# ModelNet40
# ----------------------------------------------------------------------------------------------------------
MODELNET40_CLASSES = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp",
    "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink",
    "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox",
)  # the order of shape_names.txt (alphabetical); label = index in this tuple


class ModelNet40H5:
    """PointNet's pre-sampled ModelNet40: 9,840 train / 2,468 test CAD models, 2,048 points each.

    Items: ``{"points": (2048, 3) float32, "label": int, "normals": (2048, 3) float32 if the file has them}``.
    All files of the split are loaded into memory at construction (about 240 MB for train).
    The file lists hold paths relative to the PointNet code repository (``data/modelnet40_ply_hdf5_2048/...``);
    only their base names are used, looked up in ``root``.
    """

    LAYOUT = """
        modelnet40_ply_hdf5_2048/
        ├── ply_data_train0.h5 ... ply_data_train4.h5   'data' (B, 2048, 3) float32, 'label' (B, 1) uint8,
        ├── ply_data_test0.h5, ply_data_test1.h5          optional 'normal' (B, 2048, 3)
        ├── train_files.txt        one .h5 path per line
        ├── test_files.txt
        └── shape_names.txt        the 40 class names, one per line, in label order
    """
    SOURCE = ("PointNet's 'modelnet40_ply_hdf5_2048' archive, published with the PointNet code release "
              "(Qi et al., Stanford); the CAD models come from the Princeton ModelNet project")

    def __init__(self, root, split: str = "train"):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        list_file = f"{split}_files.txt"
        self.root = _check_layout("ModelNet40 (HDF5, 2048 points)", root, [list_file], self.LAYOUT, self.SOURCE)
        names = [Path(ln.strip()).name for ln in (self.root / list_file).read_text().splitlines() if ln.strip()]
        missing = [n for n in names if not (self.root / n).is_file()]
        if not names or missing:
            raise _not_found("ModelNet40 (HDF5, 2048 points)", self.root, missing or [f"entries in {list_file}"],
                             self.LAYOUT, self.SOURCE)
        shape_names = self.root / "shape_names.txt"
        self.classes = (tuple(ln.strip() for ln in shape_names.read_text().splitlines() if ln.strip())
                        if shape_names.is_file() else MODELNET40_CLASSES)
        points, labels, normals = [], [], []
        for n in names:
            d = read_h5(self.root / n, ("data", "label"), ("normal",))
            if d["data"].ndim != 3 or d["data"].shape[2] != 3 or len(d["label"]) != len(d["data"]):
                raise CorruptFileError(self.root / n, f"'data' {d['data'].shape} and 'label' {d['label'].shape} "
                                                      f"are not (B, N, 3) and (B, 1)")
            points.append(d["data"].astype(np.float32))  # (B, 2048, 3)
            labels.append(d["label"].reshape(-1).astype(np.int64))  # (B,)
            normals.append(d["normal"].astype(np.float32) if "normal" in d else None)
        self.points = np.concatenate(points)  # (M, 2048, 3)
        self.labels = np.concatenate(labels)  # (M,)
        self.normals = None if any(x is None for x in normals) else np.concatenate(normals)  # (M, 2048, 3)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = {"points": self.points[i], "label": int(self.labels[i])}
        if self.normals is not None:
            item["normals"] = self.normals[i]
        return item


def sample_mesh_points(vertices, faces, n: int = 2048, seed: int = 0) -> dict[str, np.ndarray]:
    """Sample ``n`` points uniformly by area on a mesh (via :func:`ssl3d.geometry.sample_surface`).

    Returns ``{"points": (n, 3) float32, "normals": (n, 3) float32}`` (normals = face normals, unoriented).
    """
    import torch

    from ssl3d.geometry import sample_surface

    p, nrm, _ = sample_surface(vertices, faces, n, generator=torch.Generator().manual_seed(seed))
    return {"points": p.numpy(), "normals": nrm.numpy()}


class ModelNet40Mesh:
    """The original ModelNet40 CAD meshes (``.off``), 9,843 train / 2,468 test.

    Items: ``{"vertices": (V, 3) float32, "faces": (F, 3) int64, "label": int, "path": str}`` plus, when
    ``num_points`` is given, ``"points"`` and ``"normals"`` (num_points, 3) sampled on the surface with
    :func:`sample_mesh_points` (seed = ``seed + index``: deterministic per item). Labels index
    :data:`MODELNET40_CLASSES`; a class folder not in that list is an error. Meshes are not normalised.
    """

    LAYOUT = """
        ModelNet40/
        ├── airplane/
        │   ├── train/airplane_0001.off ... airplane_0626.off
        │   └── test/airplane_0627.off ...
        ├── bathtub/ ...
        └── xbox/                 40 class folders, each with train/ and test/
    """
    SOURCE = "the Princeton ModelNet project website (ModelNet40.zip)"

    def __init__(self, root, split: str = "train", num_points: int | None = None, seed: int = 0):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.root = _check_layout("ModelNet40 (meshes)", root, [], self.LAYOUT, self.SOURCE)
        class_dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and (d / split).is_dir())
        if not class_dirs:
            raise _not_found("ModelNet40 (meshes)", self.root, [f"<class>/{split}/ folders"], self.LAYOUT,
                             self.SOURCE)
        unknown = [d.name for d in class_dirs if d.name not in MODELNET40_CLASSES]
        if unknown:
            raise ValueError(f"{self.root}: folders {unknown} are not ModelNet40 classes (MODELNET40_CLASSES)")
        self.files = [(f, MODELNET40_CLASSES.index(d.name))  # (path, label)
                      for d in class_dirs for f in sorted((d / split).glob("*.off"))]
        self.num_points, self.seed = num_points, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        path, label = self.files[i]
        v, f = read_off(path)
        item = {"vertices": v, "faces": f, "label": label, "path": str(path)}
        if self.num_points is not None:
            item.update(sample_mesh_points(v, f, self.num_points, seed=self.seed + i))
        return item


# ----------------------------------------------------------------------------------------------------------
# ShapeNetPart
# ----------------------------------------------------------------------------------------------------------
SHAPENETPART_CATEGORIES = {  # name → synset id as in the release's synsetoffset2category.txt; label = position
    "Airplane": "02691156", "Bag": "02773838", "Cap": "02954340", "Car": "02958343",
    "Chair": "03001627", "Earphone": "03261776", "Guitar": "03467517", "Knife": "03624134",
    "Lamp": "03636649", "Laptop": "03642806", "Motorbike": "03790512", "Mug": "03797390",
    "Pistol": "03948459", "Rocket": "04099429", "Skateboard": "04225987", "Table": "04379243",
}
SHAPENETPART_PARTS = {  # category → its global part ids (50 parts in total, contiguous ranges)
    "Airplane": (0, 1, 2, 3), "Bag": (4, 5), "Cap": (6, 7), "Car": (8, 9, 10, 11),
    "Chair": (12, 13, 14, 15), "Earphone": (16, 17, 18), "Guitar": (19, 20, 21), "Knife": (22, 23),
    "Lamp": (24, 25, 26, 27), "Laptop": (28, 29), "Motorbike": (30, 31, 32, 33, 34, 35), "Mug": (36, 37),
    "Pistol": (38, 39, 40), "Rocket": (41, 42, 43), "Skateboard": (44, 45, 46), "Table": (47, 48, 49),
}
SHAPENETPART_NUM_PARTS = 50
SHAPENETPART_PART_TO_CATEGORY = np.array(  # (50,) part id → category label (index in SHAPENETPART_CATEGORIES)
    [c for c, name in enumerate(SHAPENETPART_CATEGORIES) for _ in SHAPENETPART_PARTS[name]], dtype=np.int64)


class ShapeNetPart:
    """ShapeNetPart with normals (the PointNet++ release): 16 categories, 50 parts, ~2,500 points per shape.

    Items: ``{"points": (N, 3) float32, "normals": (N, 3) float32, "part": (N,) int64 global part id 0..49,
    "label": int category index, "category": str, "shape_id": str}``. Splits come from the official
    ``shuffled_*_file_list.json``; ``split="trainval"`` concatenates train and val (the usual training set).
    ``categories`` keeps only some categories (names as in :data:`SHAPENETPART_CATEGORIES`); labels stay the
    global ones.
    """

    LAYOUT = """
        shapenetcore_partanno_segmentation_benchmark_v0_normal/
        ├── synsetoffset2category.txt     'Airplane<TAB>02691156', one category per line
        ├── 02691156/
        │   └── 1021a0914a7207aff927ed529ad90a11.txt   rows 'x y z nx ny nz part' (part = 0..49)
        ├── ... one folder per synset
        └── train_test_split/
            ├── shuffled_train_file_list.json   ["shape_data/02691156/1021a0914a7207aff927ed529ad90a11", ...]
            ├── shuffled_val_file_list.json
            └── shuffled_test_file_list.json
    """
    SOURCE = ("the ShapeNet part segmentation benchmark with normals "
              "('shapenetcore_partanno_segmentation_benchmark_v0_normal', distributed by the PointNet++ "
              "authors at Stanford; the shapes come from the ShapeNet project)")

    def __init__(self, root, split: str = "train", categories=None):
        splits = {"train": ("train",), "val": ("val",), "test": ("test",), "trainval": ("train", "val")}
        if split not in splits:
            raise ValueError(f"split must be one of {sorted(splits)}, got {split!r}")
        lists = [f"train_test_split/shuffled_{s}_file_list.json" for s in splits[split]]
        self.root = _check_layout("ShapeNetPart", root, ["synsetoffset2category.txt", *lists], self.LAYOUT,
                                  self.SOURCE)
        synset_to_name = {}
        for i, ln in enumerate((self.root / "synsetoffset2category.txt").read_text().splitlines(), start=1):
            if ln.strip():
                if len(ln.split()) != 2:
                    raise CorruptFileError(self.root / "synsetoffset2category.txt",
                                           f"line {i} is not 'Name<TAB>synset': {ln!r}")
                name, synset = ln.split()
                synset_to_name[synset] = name
        unknown = [n for n in synset_to_name.values() if n not in SHAPENETPART_CATEGORIES]
        if unknown:
            raise CorruptFileError(self.root / "synsetoffset2category.txt", f"unknown categories {unknown}")
        moved = [f"{n} {s} (the release: {SHAPENETPART_CATEGORIES[n]})" for s, n in synset_to_name.items()
                 if s != SHAPENETPART_CATEGORIES[n]]
        if moved:
            raise CorruptFileError(self.root / "synsetoffset2category.txt",
                                   f"maps {', '.join(moved)}: this is not the PointNet++ release the labels and "
                                   f"SHAPENETPART_CATEGORIES follow; use 'shapenetcore_partanno_segmentation_"
                                   f"benchmark_v0_normal' unmodified")
        if categories is not None:
            bad = [c for c in categories if c not in SHAPENETPART_CATEGORIES]
            if bad:
                raise ValueError(f"unknown categories {bad}; choose from {list(SHAPENETPART_CATEGORIES)}")
        self.items = []  # (path, category name, shape id)
        for lst in lists:
            try:
                entries = json.loads((self.root / lst).read_text())
            except json.JSONDecodeError as e:
                raise CorruptFileError(self.root / lst, f"is not valid JSON ({e})") from None
            for e in entries:  # "shape_data/<synset>/<shape id>"
                synset, shape_id = e.split("/")[-2:]
                name = synset_to_name.get(synset)
                if name is None:
                    raise CorruptFileError(self.root / lst, f"entry {e!r} has a synset not in synsetoffset2category")
                if categories is None or name in categories:
                    self.items.append((self.root / synset / f"{shape_id}.txt", name, shape_id))
        self.classes = tuple(SHAPENETPART_CATEGORIES)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        path, name, shape_id = self.items[i]
        if not path.is_file():
            raise _not_found("ShapeNetPart", self.root, [str(path.relative_to(self.root))], self.LAYOUT,
                             self.SOURCE)
        t = read_table(path, 7, "x y z nx ny nz part")  # (N, 7)
        return {
            "points": t[:, :3].astype(np.float32),
            "normals": t[:, 3:6].astype(np.float32),
            "part": t[:, 6].astype(np.int64),
            "label": self.classes.index(name),
            "category": name,
            "shape_id": shape_id,
        }


# ----------------------------------------------------------------------------------------------------------
# ScanObjectNN
# ----------------------------------------------------------------------------------------------------------
SCANOBJECTNN_CLASSES = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table",
    "bed", "pillow", "sink", "sofa", "toilet",
)
SCANOBJECTNN_VARIANTS = {  # variant → (folder, file name pattern; {split} is 'training' or 'test')
    "OBJ_BG": ("main_split", "{split}_objectdataset.h5"),
    "OBJ_ONLY": ("main_split_nobg", "{split}_objectdataset.h5"),
    "PB_T50_RS": ("main_split", "{split}_objectdataset_augmentedrot_scale75.h5"),
}


class ScanObjectNN:
    """ScanObjectNN: 15 classes of real scanned objects, 2,048 points each (the three standard variants).

    ``variant``: ``"OBJ_BG"`` (object + background), ``"OBJ_ONLY"`` (background removed), ``"PB_T50_RS"``
    (hardest: perturbed boxes with translation, rotation and scaling; 5 augmented copies per object).

    Items: ``{"points": (2048, 3) float32, "label": int, "mask": (2048,) int64, "foreground": (2048,) bool}``.
    ``mask`` is the per-point value stored in the file, unchanged. ``foreground = mask != -1`` follows
    ScanObjectNN's own code (``convert_to_binary_mask`` treats -1 as background and everything else as the
    object); in OBJ_ONLY the background was removed, so ``foreground`` should be all True there. Use ``mask``
    directly if your variant encodes background differently. A file without ``mask`` gives all-zero masks
    (every point foreground).
    """

    LAYOUT = """
        h5_files/
        ├── main_split/                      OBJ_BG and PB_T50_RS
        │   ├── training_objectdataset.h5    'data' (B, 2048, 3) float32, 'label' (B,) int, 'mask' (B, 2048)
        │   ├── test_objectdataset.h5
        │   ├── training_objectdataset_augmentedrot_scale75.h5
        │   └── test_objectdataset_augmentedrot_scale75.h5
        └── main_split_nobg/                 OBJ_ONLY
            ├── training_objectdataset.h5
            └── test_objectdataset.h5
    """
    SOURCE = ("the ScanObjectNN project website (HKUST; fill in the terms-of-use form to get the 'h5_files' "
              "archive)")

    def __init__(self, root, variant: str = "PB_T50_RS", split: str = "train"):
        if variant not in SCANOBJECTNN_VARIANTS:
            raise ValueError(f"variant must be one of {list(SCANOBJECTNN_VARIANTS)}, got {variant!r}")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        folder, pattern = SCANOBJECTNN_VARIANTS[variant]
        rel = f"{folder}/{pattern.format(split='training' if split == 'train' else 'test')}"
        self.root = _check_layout(f"ScanObjectNN ({variant})", root, [rel], self.LAYOUT, self.SOURCE)
        self.path = self.root / rel
        d = read_h5(self.path, ("data", "label"), ("mask",))
        b = len(d["data"])
        if d["data"].ndim != 3 or d["data"].shape[2] != 3 or d["label"].reshape(-1).shape != (b,):
            raise CorruptFileError(self.path, f"'data' {d['data'].shape} / 'label' {d['label'].shape} are not "
                                              f"(B, N, 3) / (B,)")
        self.variant = variant
        self.classes = SCANOBJECTNN_CLASSES
        self.points = d["data"].astype(np.float32)  # (B, 2048, 3)
        self.labels = d["label"].reshape(-1).astype(np.int64)  # (B,)
        if "mask" in d:
            self.mask = d["mask"].astype(np.int64).reshape(b, -1)  # (B, 2048)
        else:  # files without a mask: every point is the object
            self.mask = np.zeros(self.points.shape[:2], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"points": self.points[i], "label": int(self.labels[i]), "mask": self.mask[i],
                "foreground": self.mask[i] != -1}


# ----------------------------------------------------------------------------------------------------------
# ScanNet v2
# ----------------------------------------------------------------------------------------------------------
SCANNET_LAYOUT = """
    scannet/                                    (the folder you pass as root)
    ├── scans/                                  train + val scenes (1,513), with labels
    │   └── scene0000_00/
    │       ├── scene0000_00_vh_clean_2.ply          binary PLY: vertex x y z float, red green blue alpha uchar;
    │       │                                        face vertex_indices
    │       ├── scene0000_00_vh_clean_2.labels.ply   same vertices + 'label' ushort (NYU40 id)
    │       └── (exported RGB-D frames — the scene folder you pass to ScanNetFrames)
    │           ├── color/0.jpg 1.jpg ...       1296 x 968 colour: .jpg from ScanNet's SensReader,
    │           │                               .png from PointContrast's / Pointcept's SensorData.py
    │           ├── depth/0.png 1.png ...       640 x 480 uint16 millimetres, 0 = invalid
    │           ├── pose/0.txt 1.txt ...        4 x 4 camera-to-world (may be all -inf: lost tracking)
    │           └── intrinsic/intrinsic_depth.txt, intrinsic_color.txt   4 x 4
    └── scans_test/                             test scenes (100): the same files, no .labels.ply
        └── scene0707_00/ ...
"""
SCANNET_SUBSETS = ("scans", "scans_test")  # the folders of ScanNet v2's train + val scenes and of its test scenes
SCANNET_SOURCE = ("ScanNet v2 (request access at the ScanNet project website by signing the terms of use; "
                  "frames are exported from the .sens files with ScanNet's SensReader)")
SCANNET_VALID_CLASS_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)  # NYU40 ids
SCANNET20_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub",
    "otherfurniture",
)


def nyu40_to_scannet20(nyu40) -> np.ndarray:
    """NYU40 ids → the 20 ScanNet benchmark classes 0..19 (``SCANNET_VALID_CLASS_IDS[k]`` → k);
    every other id (0 = unannotated, 13, 15, ..., 40) → ``IGNORE_INDEX`` (-100). Returns int64."""
    ids = np.asarray(nyu40).astype(np.int64)
    table = np.full(41, IGNORE_INDEX, dtype=np.int64)  # (41,) lookup over NYU40 ids 0..40
    table[list(SCANNET_VALID_CLASS_IDS)] = np.arange(len(SCANNET_VALID_CLASS_IDS))
    inside = (ids >= 0) & (ids <= 40)
    return np.where(inside, table[np.clip(ids, 0, 40)], IGNORE_INDEX)


def read_scannet_scene(scene_dir, with_faces: bool = False) -> dict:
    """Read one ScanNet v2 scene mesh (its vertices are the points) and its labels if present.

    Returns ``{"points": (N, 3) float32 metres, "colors": (N, 3) float32 in [0, 1], "scene": str}`` plus, when
    ``<scene>_vh_clean_2.labels.ply`` exists, ``"nyu40": (N,) int64`` raw ids and ``"semantic": (N,) int64``
    (:func:`nyu40_to_scannet20`), and with ``with_faces`` ``"faces": (F, 3) int64``. Instances need the
    ``*.aggregation.json`` / ``*.segs.json`` files and are not read here. See :data:`SCANNET_LAYOUT`.
    """
    scene_dir = Path(scene_dir)
    name = scene_dir.name
    mesh = scene_dir / f"{name}_vh_clean_2.ply"
    if not mesh.is_file():
        raise _not_found("ScanNet v2 scene", scene_dir, [mesh.name], SCANNET_LAYOUT, SCANNET_SOURCE)
    ply = read_ply(mesh)
    v = ply.get("vertex", {})
    need = ["x", "y", "z", "red", "green", "blue"]
    if any(k not in v for k in need):
        raise CorruptFileError(mesh, f"vertex element lacks some of {need} (has {list(v)})")
    out = {
        "points": np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32),  # (N, 3)
        "colors": (np.stack([v["red"], v["green"], v["blue"]], 1) / 255.0).astype(np.float32),  # (N, 3)
        "scene": name,
    }
    if with_faces:
        f = ply.get("face", {}).get("vertex_indices")
        if f is None or f.dtype == object:
            raise CorruptFileError(mesh, "has no triangle faces ('vertex_indices' lists of length 3)")
        out["faces"] = f.astype(np.int64)
    labels = scene_dir / f"{name}_vh_clean_2.labels.ply"
    if labels.is_file():
        lv = read_ply(labels).get("vertex", {})
        if "label" not in lv:
            raise CorruptFileError(labels, f"vertex element has no 'label' property (has {list(lv)})")
        if len(lv["label"]) != len(out["points"]):
            raise CorruptFileError(labels, f"has {len(lv['label'])} vertices but {mesh.name} has "
                                           f"{len(out['points'])}: the two files do not belong together")
        out["nyu40"] = lv["label"].astype(np.int64)
        out["semantic"] = nyu40_to_scannet20(out["nyu40"])
    return out


class ScanNetScenes:
    """ScanNet v2 scenes: ``root/scans/`` (train + val, labelled) and ``root/scans_test/`` (test, no labels).

    Items are :func:`read_scannet_scene` dicts. ``scenes``: names to keep (e.g. the lines of the benchmark's
    ``scannetv2_val.txt`` or ``scannetv2_test.txt``), each looked up in ``scans/`` and then ``scans_test/``;
    default: every scene folder of ``subsets``, sorted by name. ``subsets`` (used when ``scenes`` is None):
    both folders by default, as Pointcept's preprocessing globs ``scans*/scene*`` (PointContrast's maps train →
    ``scans``, test → ``scans_test``); ``("scans",)`` lists the labelled scenes only. ``self.scene_dirs`` holds
    each scene's folder. See :data:`SCANNET_LAYOUT`.
    """

    def __init__(self, root, scenes=None, with_faces: bool = False, subsets=SCANNET_SUBSETS):
        bad = [s for s in subsets if s not in SCANNET_SUBSETS]
        if bad or not subsets:
            raise ValueError(f"subsets must be a non-empty selection of {SCANNET_SUBSETS}, got {subsets!r}")
        self.root = _check_layout("ScanNet v2", root, [], SCANNET_LAYOUT, SCANNET_SOURCE)
        if not any((self.root / s).is_dir() for s in subsets):
            raise _not_found("ScanNet v2", self.root, [f"{s}/" for s in subsets], SCANNET_LAYOUT, SCANNET_SOURCE)
        if scenes is None:
            self.scene_dirs = sorted((d for s in subsets if (self.root / s).is_dir()
                                      for d in (self.root / s).iterdir() if d.is_dir()), key=lambda d: d.name)
        else:
            found = {s: next((self.root / sub / s for sub in SCANNET_SUBSETS if (self.root / sub / s).is_dir()),
                             None) for s in scenes}
            absent = [f"scans/{s}/ (or scans_test/{s}/)" for s, d in found.items() if d is None]
            if absent:
                raise _not_found("ScanNet v2", self.root, absent, SCANNET_LAYOUT, SCANNET_SOURCE)
            self.scene_dirs = [found[s] for s in scenes]
        self.scenes = [d.name for d in self.scene_dirs]
        missing = [f"{d.parent.name}/{d.name}/{d.name}_vh_clean_2.ply" for d in self.scene_dirs
                   if not (d / f"{d.name}_vh_clean_2.ply").is_file()]
        if not self.scenes or missing:
            raise _not_found("ScanNet v2", self.root, missing or [f"{subsets[0]}/scene*/ folders"], SCANNET_LAYOUT,
                             SCANNET_SOURCE)
        self.with_faces = with_faces

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> dict:
        return read_scannet_scene(self.scene_dirs[i], with_faces=self.with_faces)


class ScanNetFrames:
    """RGB-D frames of one ScanNet scene, as exported from its ``.sens`` file.

    Items: ``{"color": (H, W, 3) uint8, "depth": (H, W) float32 metres (0 = invalid), "K": (3, 3) depth
    intrinsics, "K_offset": (2,) float32, "K_color": (3, 3) colour intrinsics for the returned colour image (if
    intrinsic_color.txt exists), "pose": (4, 4) camera-to-world, "pose_valid": bool, "frame": int}``.

    Colour frames are read as ``color/<i>.jpg`` (ScanNet's SensReader) or ``color/<i>.png`` (the
    ``SensorData.py`` of PointContrast's and Pointcept's pair preprocessing), whichever exists; a frame with
    neither raises :class:`DatasetNotFoundError` at construction. Colour is resized to the depth resolution
    (1296 x 968 → 640 x 480, bilinear) when ``resize_color=True`` (default), so that ``color[v, u]`` is the
    colour of the depth pixel ``(u, v)``. This is the common practice; the depth and colour sensors are
    registered but not identical, so the colour of a pixel is approximate (a few pixels off near edges).

    ``K`` is the depth camera's — use it to back-project ``depth`` (:func:`backproject_depth`). ``K_offset`` holds
    the entries ``K[0, 3], K[1, 3]`` of the 4 x 4 ``intrinsic_depth.txt``, which PointContrast's back-projection
    adds to X and Y (``point_cloud_extractor.py``: ``X = (u − cx) Z / fx + bx``); they are zero in the
    official files, not always in derived ones, so pass them on: ``backproject_depth(..., offset=K_offset)``.

    Some ScanNet poses are all ``-inf`` (tracking lost). With ``skip_invalid_poses=True`` (default) those
    frames are left out of the index and listed in ``self.invalid_frames``; otherwise they are returned with
    ``pose_valid=False``. ``frame_skip`` keeps every k-th frame id (PointContrast uses k = 25).
    ``depth_scale`` converts the stored integers to metres (SensReader writes millimetres: 1000).
    """

    COLOR_SUFFIXES = (".jpg", ".png")  # SensReader's, then PointContrast's / Pointcept's SensorData.py

    def __init__(self, scene_dir, skip_invalid_poses: bool = True, resize_color: bool = True,
                 frame_skip: int = 1, depth_scale: float = 1000.0):
        req = ["color", "depth", "pose", "intrinsic/intrinsic_depth.txt"]
        self.root = _check_layout("ScanNet v2 exported frames", scene_dir, req, SCANNET_LAYOUT, SCANNET_SOURCE)
        ids = sorted(int(p.stem) for p in (self.root / "depth").glob("*.png") if p.stem.isdigit())
        if not ids:
            raise _not_found("ScanNet v2 exported frames", self.root, ["depth/<i>.png"], SCANNET_LAYOUT,
                             SCANNET_SOURCE)
        ids = [i for i in ids if i % frame_skip == 0]
        k_depth = read_matrix(self.root / "intrinsic" / "intrinsic_depth.txt")  # (4, 4)
        self.K = k_depth[:3, :3].astype(np.float32)
        self.K_offset = k_depth[:2, 3].astype(np.float32)  # (bx, by), added to X, Y by PointContrast
        kc = self.root / "intrinsic" / "intrinsic_color.txt"
        self.K_color_full = read_matrix(kc)[:3, :3].astype(np.float32) if kc.is_file() else None
        self.poses, self.invalid_frames, self.color_files = {}, [], {}
        missing = []
        for i in ids:
            p = self.root / "pose" / f"{i}.txt"
            if not p.is_file():
                missing.append(f"pose/{i}.txt")
                continue
            c = next((self.root / "color" / f"{i}{s}" for s in self.COLOR_SUFFIXES
                      if (self.root / "color" / f"{i}{s}").is_file()), None)
            if c is None:
                missing.append(f"color/{i}.jpg (or color/{i}.png)")
                continue
            self.color_files[i] = c
            self.poses[i] = read_matrix(p).astype(np.float32)
            if not np.isfinite(self.poses[i]).all():
                self.invalid_frames.append(i)
        if missing:
            raise _not_found("ScanNet v2 exported frames", self.root, missing, SCANNET_LAYOUT, SCANNET_SOURCE)
        bad = set(self.invalid_frames)
        self.frames = [i for i in ids if not (skip_invalid_poses and i in bad)]
        self.resize_color, self.depth_scale = resize_color, depth_scale

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, k: int) -> dict:
        from PIL import Image

        i = self.frames[k]
        dpath, cpath = self.root / "depth" / f"{i}.png", self.color_files[i]
        try:
            raw = np.array(Image.open(dpath))  # (H, W) uint16 millimetres
        except OSError as e:
            raise CorruptFileError(dpath, f"cannot be read as an image ({e})") from e
        if raw.ndim != 2 or raw.dtype.kind not in "ui" or raw.dtype.itemsize < 2:
            raise CorruptFileError(dpath, f"is {raw.dtype} {raw.shape}, expected a 16-bit single-channel PNG")
        depth = raw.astype(np.float32) / self.depth_scale  # (H, W) metres, 0 stays 0 (invalid)
        h, w = depth.shape
        try:
            img = Image.open(cpath).convert("RGB")
            w0, h0 = img.size
            if self.resize_color and (w0, h0) != (w, h):
                img = img.resize((w, h), Image.BILINEAR)
            color = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
        except OSError as e:
            raise CorruptFileError(cpath, f"cannot be read as an image ({e})") from e
        item = {"color": color, "depth": depth, "K": self.K, "K_offset": self.K_offset, "pose": self.poses[i],
                "pose_valid": bool(np.isfinite(self.poses[i]).all()), "frame": i}
        if self.K_color_full is not None:
            kc = self.K_color_full.copy()
            kc[0] *= color.shape[1] / w0  # scale fx, cx to the returned width
            kc[1] *= color.shape[0] / h0  # scale fy, cy to the returned height
            item["K_color"] = kc
        return item


def backproject_depth(depth, K, pose=None, color=None, offset=None) -> dict[str, np.ndarray]:
    """Lift every valid depth pixel to 3D.

    Pixel (u, v) = (column, row) with depth Z > 0 (finite) goes to the camera-frame point
    ``X = (u − cx) Z / fx + bx, Y = (v − cy) Z / fy + by, Z``, where ``offset = (bx, by)`` (default 0; ScanNet's
    ``K_offset``, as PointContrast's ``point_cloud_extractor.py`` adds it); with ``pose`` (4, 4 camera-to-world)
    the point is then mapped to the world: ``x_w = R x_c + t``.

    Args:
        depth: (H, W) metres, 0 = invalid.  K: (3, 3).  pose: (4, 4) or None (camera frame).
        color: (H, W, 3) uint8 registered to ``depth`` or None.  offset: (2,) or None.
    Returns:
        ``{"points": (M, 3) float32, "uv": (M, 2) int64 pixel (u, v) of each point, "colors": (M, 3) float32
        in [0, 1] when color is given}``, pixels in row-major order.
    """
    from ssl3d.data.rgbd import backproject  # the one implementation, shared with the synthetic RGB-D scans

    depth = np.asarray(depth)
    K = np.asarray(K, dtype=np.float64)
    if depth.ndim != 2 or K.shape != (3, 3):
        raise ValueError(f"need depth (H, W) and K (3, 3), got {depth.shape} and {K.shape}")
    if pose is not None:
        pose = np.asarray(pose, dtype=np.float64)
        if not np.isfinite(pose).all():
            raise ValueError("pose contains inf/nan (ScanNet marks lost tracking with -inf): skip this frame")
    pts, pix = backproject(depth, K)  # (M, 3) camera frame, (M, 2) = (row v, column u), row-major
    if offset is not None:
        offset = np.asarray(offset, dtype=np.float64).reshape(-1)
        if offset.shape != (2,):
            raise ValueError(f"offset must be (bx, by), got shape {offset.shape}")
        pts[:, :2] += offset
    if pose is not None:
        pts = pts @ pose[:3, :3].T + pose[:3, 3]
    v, u = pix[:, 0], pix[:, 1]
    out = {"points": pts.astype(np.float32), "uv": np.stack([u, v], 1).astype(np.int64)}
    if color is not None:
        color = np.asarray(color)
        if color.shape[:2] != depth.shape:
            raise ValueError(f"color {color.shape} is not registered to depth {depth.shape}: resize it first")
        out["colors"] = (color[v, u, :3] / 255.0).astype(np.float32)
    return out


# ----------------------------------------------------------------------------------------------------------
# S3DIS
# ----------------------------------------------------------------------------------------------------------
S3DIS_LAYOUT = """
    Stanford3dDataset_v1.2_Aligned_Version/
    ├── Area_1/
    │   ├── conferenceRoom_1/
    │   │   ├── conferenceRoom_1.txt          the whole room (not used: it has no labels)
    │   │   └── Annotations/
    │   │       ├── ceiling_1.txt             rows 'x y z r g b' (metres, 0-255), one file per object instance
    │   │       ├── chair_1.txt ...
    │   └── office_1/ ...
    ├── Area_2/ ... Area_6/
"""
S3DIS_SOURCE = ("the Stanford Large-Scale 3D Indoor Spaces dataset (S3DIS), requested through the Stanford "
                "2D-3D-Semantics dataset form; use 'Stanford3dDataset_v1.2_Aligned_Version'")
S3DIS_CLASSES = ("ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa",
                 "bookcase", "board", "clutter")
S3DIS_ALIASES = {"stairs": "clutter"}  # the only extra annotation class; merged into clutter as is common


def _annotation_key(p: Path):
    """Sort Annotations files naturally: chair_2 before chair_10."""
    cls, _, k = p.stem.rpartition("_")
    return (cls, int(k) if k.isdigit() else 0, p.name)


def read_s3dis_room(room_dir) -> dict:
    """Read one S3DIS room from its ``Annotations/`` folder (one text file per object instance).

    Returns ``{"points": (N, 3) float32 metres, "colors": (N, 3) float32 in [0, 1], "semantic": (N,) int64
    index into S3DIS_CLASSES, "instance": (N,) int64 0..K-1 (one per annotation file, in natural file order),
    "room": "Area_5/office_1"}``. ``stairs_*.txt`` files count as ``clutter``.

    Tolerance: a few released files hold a control byte where a character lost its 0x20 bit — in the
    Aligned version ``Area_5/hallway_6/Annotations/ceiling_1.txt`` line 180389 reads ``185\\x00187`` (NUL for a
    space: the standard test area cannot be read without this), in the non-aligned v1.2
    ``Area_5/office_19/Annotations/ceiling_1.txt`` line 323474 reads ``103.0\\x100000`` (``\\x10`` for ``0``).
    Such bytes are read as the character they stand for (:func:`ssl3d.data.formats.read_table` explains the
    rule) and a warning names the file and line; a line that still does not hold 6 numbers raises
    :class:`CorruptFileError`.
    """
    room_dir = Path(room_dir)
    ann = room_dir / "Annotations"
    files = sorted(ann.glob("*.txt"), key=_annotation_key) if ann.is_dir() else []
    if not files:
        raise _not_found("S3DIS room", room_dir, ["Annotations/<class>_<k>.txt"], S3DIS_LAYOUT, S3DIS_SOURCE)
    pts, sem, inst = [], [], []
    for k, f in enumerate(files):
        cls = f.stem.rpartition("_")[0] or f.stem
        cls = S3DIS_ALIASES.get(cls, cls)
        if cls not in S3DIS_CLASSES:
            raise CorruptFileError(f, f"class {cls!r} from the file name is not one of S3DIS_CLASSES")
        t = read_table(f, 6, "x y z r g b", tolerant=True)  # (n, 6); repairs the known stray bytes
        pts.append(t)
        sem.append(np.full(len(t), S3DIS_CLASSES.index(cls), dtype=np.int64))
        inst.append(np.full(len(t), k, dtype=np.int64))
    t = np.concatenate(pts)  # (N, 6)
    return {
        "points": t[:, :3].astype(np.float32),
        "colors": (t[:, 3:6] / 255.0).astype(np.float32),
        "semantic": np.concatenate(sem),
        "instance": np.concatenate(inst),
        "room": f"{room_dir.parent.name}/{room_dir.name}",
    }


class S3DIS:
    """S3DIS rooms of some areas; items are :func:`read_s3dis_room` dicts.

    The standard protocol trains on Areas 1, 2, 3, 4, 6 and tests on Area 5: ``split="train"`` takes every
    area except ``test_area``, ``split="test"`` only ``test_area``, ``split="all"`` all six. ``areas`` (a list
    of area numbers) overrides ``split``.
    """

    def __init__(self, root, split: str = "train", test_area: int = 5, areas=None):
        if areas is None:
            if split not in ("train", "test", "all"):
                raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
            areas = {"train": [a for a in range(1, 7) if a != test_area], "test": [test_area],
                     "all": list(range(1, 7))}[split]
        self.areas = [int(a) for a in areas]
        self.root = _check_layout("S3DIS", root, [f"Area_{a}" for a in self.areas], S3DIS_LAYOUT, S3DIS_SOURCE)
        self.rooms = [d for a in self.areas for d in sorted((self.root / f"Area_{a}").iterdir())
                      if (d / "Annotations").is_dir()]
        if not self.rooms:
            raise _not_found("S3DIS", self.root, [f"Area_{self.areas[0]}/<room>/Annotations/"], S3DIS_LAYOUT,
                             S3DIS_SOURCE)
        self.classes = S3DIS_CLASSES

    def __len__(self) -> int:
        return len(self.rooms)

    def __getitem__(self, i: int) -> dict:
        return read_s3dis_room(self.rooms[i])


# ----------------------------------------------------------------------------------------------------------
# Middlebury 2014 "motorcycle" (ships with scikit-image: works offline)
# ----------------------------------------------------------------------------------------------------------
MOTORCYCLE_CALIBRATION = {  # from the docstring of skimage.data.stereo_motorcycle (images downsampled 4x)
    "f": 994.978,  # focal length, pixels (fx = fy)
    "cx": 311.193,  # principal point of the LEFT camera, pixels
    "cy": 254.877,
    "doffs": 31.086,  # x-difference of the principal points, cx_right − cx_left, pixels
    "baseline": 0.193001,  # metres (193.001 mm), the right camera sits at +baseline along the left camera's x
}


def disparity_to_depth(disparity, f: float, baseline: float, doffs: float = 0.0) -> np.ndarray:
    """Middlebury's formula ``Z = f · B / (d + doffs)`` (units of ``baseline``); invalid d (inf, nan, ≤ 0) → 0.

    Returns (H, W) float32.
    """
    d = np.asarray(disparity, dtype=np.float64)
    ok = np.isfinite(d) & (d > 0)
    z = np.zeros(d.shape, dtype=np.float64)
    z[ok] = f * baseline / (d[ok] + doffs)
    return z.astype(np.float32)


def _motorcycle():
    """(left (H, W, 3) uint8, right (H, W, 3) uint8, disparity (H, W) float32, K_left, K_right) from skimage."""
    from skimage.data import stereo_motorcycle

    left, right, disp = stereo_motorcycle()
    c = MOTORCYCLE_CALIBRATION
    k_left = np.array([[c["f"], 0, c["cx"]], [0, c["f"], c["cy"]], [0, 0, 1]], dtype=np.float64)
    k_right = k_left.copy()
    k_right[0, 2] += c["doffs"]
    return left, right, disp, k_left, k_right


def motorcycle_rgbd() -> dict:
    """The left view of Middlebury's motorcycle as one RGB-D frame and its coloured point cloud.

    Returns ``{"color": (500, 741, 3) uint8, "depth": (500, 741) float32 metres (0 where the disparity is
    invalid), "K": (3, 3) float32, "pose": (4, 4) identity, "points": (M, 3) float32 camera frame,
    "colors": (M, 3) float32, "uv": (M, 2) int64}`` with M ≈ 343k valid pixels. Depth uses
    :data:`MOTORCYCLE_CALIBRATION`: Z = f · B / (d + doffs), about 2–5 m for this scene.
    """
    left, _, disp, k_left, _ = _motorcycle()
    c = MOTORCYCLE_CALIBRATION
    depth = disparity_to_depth(disp, c["f"], c["baseline"], c["doffs"])  # (H, W) metres
    cloud = backproject_depth(depth, k_left, color=left)
    return {"color": left, "depth": depth, "K": k_left.astype(np.float32), "pose": np.eye(4, dtype=np.float32),
            **cloud}


def motorcycle_pair() -> dict:
    """Both views of Middlebury's motorcycle as point clouds in their own camera frames, with ground truth.

    The disparity map belongs to the LEFT image: left pixel (u, v) ↔ right pixel (u − d, v). (We checked this
    on the data: colours agree that way; the wording of skimage's docstring suggests the opposite.)
    Only the left disparity is available, so both clouds contain the points seen in the left image whose
    right pixel u − d lies inside the right image; row i of the left arrays corresponds to row i of the right
    arrays. The right points are back-projected from the right pixels with the right intrinsics (principal
    point cx + doffs) and the same depth Z.

    Returns::

        {"left":  {"color", "K", "pose" (identity), "points" (M, 3), "colors" (M, 3), "uv" (M, 2) float32},
         "right": {"color", "K", "pose" (4, 4) right camera in the left frame = translation (+B, 0, 0),
                   "points" (M, 3), "colors" (M, 3) linearly interpolated along the row, "uv" (M, 2) float32},
         "T_right_left": (4, 4) maps left-camera coordinates to right-camera ones: x_r = x_l − (B, 0, 0),
         "baseline": B in metres}
    """
    left, right, disp, k_left, k_right = _motorcycle()
    c = MOTORCYCLE_CALIBRATION
    h, w = disp.shape
    depth = disparity_to_depth(disp, c["f"], c["baseline"], c["doffs"])  # (H, W) metres
    v, u = np.nonzero(depth > 0)
    d = disp[v, u].astype(np.float64)
    ur = u - d  # right-image column, sub-pixel
    keep = (ur >= 0) & (ur <= w - 1)
    u, v, ur, z = u[keep], v[keep], ur[keep], depth[v[keep], u[keep]].astype(np.float64)

    def lift(uu, k):  # pixel columns uu on rows v with depth z → (M, 3) camera points
        return np.stack([(uu - k[0, 2]) * z / k[0, 0], (v - k[1, 2]) * z / k[1, 1], z], 1).astype(np.float32)

    u0 = np.floor(ur).astype(np.int64)
    u1 = np.minimum(u0 + 1, w - 1)
    a = (ur - u0)[:, None]
    colors_r = ((1 - a) * right[v, u0] + a * right[v, u1]) / 255.0  # (M, 3)
    pose_r = np.eye(4, dtype=np.float32)
    pose_r[0, 3] = c["baseline"]
    t_rl = np.eye(4, dtype=np.float32)
    t_rl[0, 3] = -c["baseline"]
    return {
        "left": {"color": left, "K": k_left.astype(np.float32), "pose": np.eye(4, dtype=np.float32),
                 "points": lift(u.astype(np.float64), k_left), "colors": (left[v, u] / 255.0).astype(np.float32),
                 "uv": np.stack([u, v], 1).astype(np.float32)},
        "right": {"color": right, "K": k_right.astype(np.float32), "pose": pose_r,
                  "points": lift(ur, k_right), "colors": colors_r.astype(np.float32),
                  "uv": np.stack([ur, v], 1).astype(np.float32)},
        "T_right_left": t_rl,
        "baseline": c["baseline"],
    }
