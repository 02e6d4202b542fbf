"""Data: procedural (embedded) datasets, readers for the real datasets, torch Datasets, augmentations.

    ssl3d.data.synthetic   objects with parts, scanned objects, rooms, RGB-D scans, view pairs (deterministic)
    ssl3d.data.real        readers for ModelNet40, ShapeNetPart, ScanObjectNN, ScanNet v2, S3DIS, Middlebury
    ssl3d.data.datasets    torch Datasets + collate functions + label-fraction splits
    ssl3d.data.transforms  composable augmentations used by the papers
"""
