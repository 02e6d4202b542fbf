"""Data: procedural (embedded) datasets, readers for the real datasets, torch Datasets, augmentations.

    ssl3d.data.load_dataset  the one entry point: a task's embedded or real dataset, chosen by ``data_root``
    ssl3d.data.class_held_out_split   which classes to pre-train on and which to probe on, never seen (ClassSubset)
    ssl3d.data.synthetic     objects with parts, scanned objects, rooms (deterministic)
    ssl3d.data.rgbd          ray-cast RGB-D frames and PointContrast view pairs
    ssl3d.data.real          readers for ModelNet40, ShapeNetPart, ScanObjectNN, ScanNet v2, S3DIS, Middlebury
    ssl3d.data.datasets      torch Datasets + collate functions + label budgets
    ssl3d.data.transforms    composable augmentations used by the papers

Item schema — every dataset's items use these keys (numpy or torch, as listed), and collate functions batch them:

=================  ==========================  ===========  ===================================================
key                shape                       dtype        meaning
=================  ==========================  ===========  ===================================================
points             (N, 3)                      float32      coordinates (objects: unit sphere; scenes: metres)
feats              (N, C) / (M, C) voxelized   float32      input features besides xyz (RGB in [0, 1], …);
                                                            absent for geometry-only data (``in_channels = 0``)
normals            (N, 3)                      float32      unit surface normals
label              ()                          int          class of a shape
part               (N,)                        int64        global part id per point (−1 / −100: none)
semantic           (N,)                        int64        semantic class per point (``ignore_index`` = −100)
coords             (M, 3)                      int64        voxel coordinates ⌊p / voxel_size⌋ (sparse data)
labels             (M,)                        int64        per-voxel target (majority of its points' labels)
inverse            (N,)                        int64        point → voxel row (``per_voxel[inverse]``)
colors             (N, 3)                      float32      RGB in [0, 1] (before it becomes ``feats``)
=================  ==========================  ===========  ===================================================

Batches add a leading batch dimension to fixed-size arrays (``points`` (B, N, 3), ``label`` (B,)) and a batch
column to variable-size ones (``coords`` (ΣM, 4) = (sample, x, y, z); ``ssl3d.geometry.with_batch_index``).
View pairs suffix keys with the view (``points0``, ``coords1``, …) and add ``correspondences`` (P, 2) and ``T``.
"""

from ssl3d.data.datasets import ClassSubset
from ssl3d.data.factory import TASKS, class_held_out_split, load_dataset

__all__ = ["TASKS", "ClassSubset", "class_held_out_split", "load_dataset"]
