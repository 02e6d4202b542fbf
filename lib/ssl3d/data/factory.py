"""One data entry point: the embedded or the real dataset of a task, chosen by ``data_root``.

    from ssl3d.data import load_dataset
    train = load_dataset("objects", "train", data_root=None, n_per_class=30, random_yaw=True)   # embedded
    train = load_dataset("objects", "train", data_root="/data")                                 # ModelNet40

``data_root=None`` generates the embedded data (``ssl3d.data.synthetic`` / ``rgbd``); a folder reads the real
dataset from its original layout under it (``ssl3d.data.real``; a missing folder raises an error that prints the
expected tree). Notebooks call this and never switch on ``data_root`` themselves. Every dataset returned carries
its metadata as attributes: ``num_classes``, ``class_names`` (and ``part_ranges``, ``num_parts`` for parts).

=================  ===================================  ===================================================
task               embedded                             real (under ``data_root``)
=================  ===================================  ===================================================
objects            ObjectDataset (clean)                ModelNet40, PointNet's h5 (modelnet40_ply_hdf5_2048/)
scanned_objects    ObjectDataset (a scan ``variant``)   ScanObjectNN h5 (h5_files/), ``variant``
parts              ObjectDataset (clean, with parts)    ShapeNetPart (train = trainval)
scenes             SceneDataset (rooms)                 S3DIS (test = Area ``test_area``), 13 classes
view_pairs         ViewPairDataset                      ScanNet pairs written by ``python -m ssl3d.data.scannet_pairs``
rgbd_frames        RGBDFrameDataset                     — (the Middlebury scan: ``real.motorcycle_rgbd``)
=================  ===================================  ===================================================

Options: the embedded datasets' constructor arguments (sizes such as ``n_per_class``, ``n_rooms``; ``seed``,
``transform``, …). For real data the size options of the embedded generator do not apply and are ignored;
``n_points``, ``seed``, ``transform``, ``variant``, ``voxel_size``, ``features``, ``test_area`` are honoured
(``test_area`` means nothing to the embedded data and is ignored there).
"""

from __future__ import annotations

import inspect
from pathlib import Path

from ssl3d.data import datasets as D

__all__ = ["TASKS", "class_held_out_split", "load_dataset"]

TASKS = ("objects", "scanned_objects", "parts", "scenes", "view_pairs", "rgbd_frames")
_EMBEDDED = {"objects": D.ObjectDataset, "scanned_objects": D.ObjectDataset, "parts": D.ObjectDataset,
             "scenes": D.SceneDataset, "view_pairs": D.ViewPairDataset, "rgbd_frames": D.RGBDFrameDataset}


_REAL_ONLY = {"test_area"}  # options that only select parts of a real dataset


def _embedded(task: str, split: str, options: dict):
    cls = _EMBEDDED[task]
    options = {k: v for k, v in options.items() if k not in _REAL_ONLY}
    if task == "scanned_objects":
        options.setdefault("variant", "PB_T50_RS")
    elif task in ("objects", "parts"):
        options.setdefault("variant", "clean")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(f"load_dataset({task!r}): unknown option(s) {unknown} for the embedded {cls.__name__}; "
                        f"accepted: {sorted(accepted)}")
    return cls(split=split, **options)


def _real(task: str, split: str, root: Path, options: dict):
    from ssl3d.data import real

    n_points, seed, transform = options.get("n_points", 1024), options.get("seed", 0), options.get("transform")
    if task == "objects":
        ds = D.FixedSizeClouds(real.ModelNet40H5(root / "modelnet40_ply_hdf5_2048", split), n_points, seed,
                               transform=transform)
        ds.class_names, ds.num_classes = list(real.MODELNET40_CLASSES), len(real.MODELNET40_CLASSES)
    elif task == "scanned_objects":
        base = real.ScanObjectNN(root, options.get("variant", "PB_T50_RS"), split)
        ds = D.FixedSizeClouds(base, n_points, seed, transform=transform)
        ds.class_names, ds.num_classes = list(real.SCANOBJECTNN_CLASSES), len(real.SCANOBJECTNN_CLASSES)
    elif task == "parts":
        snp = root / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
        base = real.ShapeNetPart(snp, "trainval" if split == "train" else split)
        ds = D.FixedSizeClouds(base, n_points, seed, transform=transform)
        ds.class_names = list(real.SHAPENETPART_CATEGORIES)
        ds.num_classes = len(ds.class_names)
        ds.part_ranges = [list(v) for v in real.SHAPENETPART_PARTS.values()]
        ds.num_parts = real.SHAPENETPART_NUM_PARTS
    elif task == "scenes":
        s3dis = root / "Stanford3dDataset_v1.2_Aligned_Version"
        base = real.S3DIS(s3dis, split, options.get("test_area", 5))
        ds = D.VoxelizedScenes(base, options.get("voxel_size", 0.05), options.get("features", "rgb"), transform, seed,
                               num_classes=len(real.S3DIS_CLASSES), class_names=list(real.S3DIS_CLASSES))
    elif task == "view_pairs":
        from ssl3d.data.scannet_pairs import ScanNetPairs

        ds = ScanNetPairs(root / "scannet_pairs", options.get("voxel_size", 0.025), transform=transform,
                          features=options.get("features", "ones"), seed=seed)
    else:
        raise ValueError(f"load_dataset({task!r}) has no real-data reader: run it with data_root=None (embedded "
                         f"frames) or use ssl3d.data.real.motorcycle_rgbd() for a real RGB-D scan")
    return ds


def load_dataset(task: str, split: str = "train", data_root: str | Path | None = None, **options):
    """The dataset of ``task`` for ``split``: embedded when ``data_root`` is None, else the real one (module
    docstring). Raises a clear error for an unknown task, split or option."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if data_root is None:
        return _embedded(task, split, dict(options))
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data_root {root} is not a folder: pass the folder that holds the datasets "
                                f"(README, 'Data'), or data_root=None for the embedded data")
    return _real(task, split, root, dict(options))


#: ModelNet40 classes that a ShapeNetPart category covers (ShapeNet's table synset holds desks; its mugs are cups)
SHAPENETPART_IN_MODELNET40 = ("airplane", "car", "chair", "cup", "desk", "guitar", "lamp", "laptop", "table")


def class_held_out_split(data_root: str | Path | None = None) -> tuple[list[str] | None, list[str]]:
    """(classes to pre-train on, classes to probe on) for a class-held-out test: the probe's classes are never seen
    in pre-training. Embedded: every other one of the 14 object classes each. Real: pre-training is ShapeNetPart
    with all its categories (``None``: the usual pre-training set) and the probe uses the ModelNet40 classes that
    no ShapeNetPart category covers (31 of 40)."""
    from ssl3d.data import real, synthetic

    if data_root is None:
        return list(synthetic.OBJECT_CLASSES[0::2]), list(synthetic.OBJECT_CLASSES[1::2])
    return None, [c for c in real.MODELNET40_CLASSES if c not in SHAPENETPART_IN_MODELNET40]
