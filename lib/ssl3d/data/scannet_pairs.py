"""ScanNet view pairs for PointContrast pre-training on real data: extraction to ``.npz`` files and a torch Dataset.

PointContrast (Xie et al., ECCV 2020) pre-trains on pairs of overlapping depth frames of one ScanNet scene. Its
released preprocessing (facebookresearch/PointContrast, ``pretrain/data_preprocess/scannet_pair/``):

1. ``reader.py`` exports every 25th frame of each ``.sens`` file (depth, pose, intrinsics);
2. ``point_cloud_extractor.py`` back-projects each depth frame, ``X = (u − cx) Z / fx + K[0,3]``,
   ``Y = (v − cy) Z / fy + K[1,3]``, and moves it to world coordinates with the frame's pose;
3. ``compute_full_overlapping.py`` voxel-downsamples every cloud and, for every pair of frames, counts the points
   of one cloud that have a neighbour within 1.5 voxel in the other; ``generate_list.py`` keeps the pairs whose
   overlap is ≥ 30 %;
4. at training time each cloud of a pair is voxelized (2.5 cm) and the positive matches are all pairs of points
   closer than 1.5 voxel once the ground-truth transform is applied.

:func:`extract_scannet_pairs` does these steps for one scene exported in ScanNet's layout (read with
:class:`ssl3d.data.real.ScanNetFrames`) and writes one ``.npz`` per kept pair with exactly the fields, dtypes and
meaning of the embedded pairs of :func:`ssl3d.data.rgbd.make_view_pair`::

    points0, points1   (N0, 3), (N1, 3) float32   each view in its own camera frame, one point per voxel
                                                  (the first pixel in row-major order, as frame_points keeps)
    colors0, colors1   (N0, 3), (N1, 3) float32   RGB in [0, 1]
    correspondences    (P, 2) int64               all (i, j) with ‖points0[i] − T·points1[j]‖ ≤ 1.5 · voxel_size
    T                  (4, 4) float32             view-1 camera → view-0 camera: pose0⁻¹ · pose1
    overlap            float                      min over the two views of the fraction of points that have a
                                                  correspondence

plus an index ``pairs.json`` per scene. :class:`ScanNetPairs` serves them with the items of
:class:`ssl3d.data.datasets.ViewPairDataset`, so :func:`~ssl3d.data.datasets.collate_pairs` and the training code
work unchanged. From the command line (a progress bar per scene)::

    python -m ssl3d.data.scannet_pairs --scannet DIR --out DIR [--scenes scene0000_00 ...] [--frame-skip 25]
                                       [--min-overlap 0.3] [--voxel-size 0.025] [--overlap-rule min|max]

Differences from the released scripts, on purpose (each is a parameter):

- ``overlap`` is the *minimum* of the two fractions, as in the embedded pairs; PointContrast keeps a pair when the
  *maximum* reaches 30 % — ``overlap_rule="max"`` selects pairs that way (the stored ``overlap`` keeps its meaning,
  the index records both fractions).
- the overlap is measured on the stored clouds (``voxel_size``, 2.5 cm by default), whereas
  ``compute_full_overlapping.py`` measures it on a 5 cm copy; and a voxel keeps its first point, not open3d's
  centroid, so that every stored point is a measured pixel.

Every file is written to a temporary name and moved into place with ``os.replace``; the index is written last, so
a scene with a ``pairs.json`` is complete, and an interrupted run is resumed by running the command again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from ssl3d import geometry as G
from ssl3d.data import real
from ssl3d.data.datasets import PairDataset
from ssl3d.utils import progress

__all__ = [
    "PAIR_FIELDS",
    "INDEX_NAME",
    "frame_cloud",
    "view_pair",
    "extract_scannet_pairs",
    "ScanNetPairs",
    "main",
]

PAIR_FIELDS = ("points0", "points1", "colors0", "colors1", "correspondences", "T", "overlap")
INDEX_NAME = "pairs.json"  # one per scene folder, written after all of its pairs
INDEX_FORMAT = "ssl3d.scannet_pairs/1"
_SCREEN_SLACK = 0.01  # the cheap world-frame screen may differ from the exact overlap by round-off only


# ----------------------------------------------------------------------------------------------------------
# One frame, one pair
# ----------------------------------------------------------------------------------------------------------
def frame_cloud(frame: dict, voxel_size: float) -> dict[str, np.ndarray]:
    """A ScanNet frame (an item of :class:`~ssl3d.data.real.ScanNetFrames`) as a voxel-downsampled cloud.

    Every valid depth pixel is back-projected in the camera frame with PointContrast's formula, ``K_offset``
    included (:func:`ssl3d.data.real.backproject_depth`), and one point is kept per voxel of side ``voxel_size``:
    the first in row-major pixel order, as :func:`ssl3d.data.rgbd.frame_points` does for the embedded frames.

    Returns ``{"points": (N, 3) float32 camera frame, "colors": (N, 3) float32 in [0, 1]}``.
    """
    cloud = real.backproject_depth(frame["depth"], frame["K"], color=frame["color"], offset=frame.get("K_offset"))
    pts, cols = cloud["points"], cloud["colors"]
    if len(pts):
        keep = G.voxelize(torch.from_numpy(pts), voxel_size).index.numpy()  # first point of every voxel
        pts, cols = pts[keep], cols[keep]
    return {"points": pts, "colors": cols}


def view_pair(cloud0: dict, cloud1: dict, pose0, pose1, voxel_size: float, radius_factor: float = 1.5) -> dict:
    """The pair of two :func:`frame_cloud` clouds with their camera-to-world poses, as ``rgbd.make_view_pair``.

    ``T = pose0⁻¹ · pose1`` maps view-1 camera coordinates into view 0's; the correspondences are all (i, j) with
    ``‖p0_i − T p1_j‖ ≤ radius_factor · voxel_size`` (:func:`ssl3d.geometry.radius_pairs`), and
    ``overlap = min(f0, f1)`` where f0 (f1) is the fraction of view-0 (view-1) points with a correspondence.
    Returns the :data:`PAIR_FIELDS` plus ``"overlap0"``, ``"overlap1"`` (f0, f1).
    """
    p0, p1 = cloud0["points"], cloud1["points"]
    if len(p0) == 0 or len(p1) == 0:
        raise ValueError("view_pair: a frame has no valid depth pixels")
    T = np.linalg.inv(np.asarray(pose0, np.float64)) @ np.asarray(pose1, np.float64)
    p1_in_0 = p1 @ T[:3, :3].T + T[:3, 3]
    corr = G.radius_pairs(p0, p1_in_0, radius_factor * voxel_size).numpy()  # (P, 2) int64
    f0 = len(np.unique(corr[:, 0])) / len(p0)
    f1 = len(np.unique(corr[:, 1])) / len(p1)
    return {"points0": p0, "points1": p1, "colors0": cloud0["colors"], "colors1": cloud1["colors"],
            "correspondences": corr, "T": T.astype(np.float32), "overlap": min(f0, f1),
            "overlap0": f0, "overlap1": f1}


# ----------------------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------------------
def _atomic_write(path: Path, write) -> None:
    """Call ``write(file object)`` on a temporary file next to ``path``, then move it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _select(f0: float, f1: float, rule: str) -> float:
    return min(f0, f1) if rule == "min" else max(f0, f1)


def extract_scannet_pairs(scene_dir, out_dir, frame_skip: int = 25, min_overlap: float = 0.3,
                          voxel_size: float = 0.025, overlap_rule: str = "min", radius_factor: float = 1.5,
                          show_progress: bool = True) -> dict:
    """Extract every overlapping pair of frames of one exported ScanNet scene into ``out_dir/<scene>/``.

    Args:
        scene_dir: a scene folder with ``color/ depth/ pose/ intrinsic/`` (see ``real.SCANNET_LAYOUT``).
        out_dir: the root of the extracted pairs; this scene goes to ``out_dir/<scene name>/``: one
            ``<frame0>_<frame1>.npz`` per pair (frame ids zero-padded to 6 digits) and ``pairs.json``.
        frame_skip: use frame ids divisible by this (PointContrast: 25); frames with an invalid pose are skipped.
        min_overlap: keep a pair when its overlap (``overlap_rule``) is at least this (PointContrast: 0.3).
        voxel_size: metres; each view keeps one point per voxel, correspondences within
            ``radius_factor · voxel_size`` (PointContrast: 2.5 cm and 1.5).
        overlap_rule: ``"min"`` (the meaning of the stored ``overlap``, as in the embedded pairs) or ``"max"``
            (PointContrast's pair list).
    Returns:
        the index written to ``pairs.json``: the parameters, the frame ids used and per pair ``file``,
        ``frames``, ``overlap`` (min), ``overlap0``, ``overlap1`` and ``correspondences`` (their number).

    A scene whose ``pairs.json`` exists with the same parameters is not extracted again (its index is returned);
    with other parameters it is an error (choose another ``out_dir``).
    """
    if overlap_rule not in ("min", "max"):
        raise ValueError(f"overlap_rule must be 'min' or 'max', got {overlap_rule!r}")
    if not voxel_size > 0 or not 0 <= min_overlap <= 1 or frame_skip < 1:
        raise ValueError(f"need voxel_size > 0, 0 ≤ min_overlap ≤ 1 and frame_skip ≥ 1, got {voxel_size}, "
                         f"{min_overlap}, {frame_skip}")
    frames = real.ScanNetFrames(scene_dir, frame_skip=frame_skip)  # DatasetNotFoundError names what is missing
    scene = frames.root.name
    out = Path(out_dir).expanduser() / scene
    params = {"format": INDEX_FORMAT, "scene": scene, "frame_skip": frame_skip, "min_overlap": min_overlap,
              "voxel_size": voxel_size, "overlap_rule": overlap_rule, "radius_factor": radius_factor}
    index_path = out / INDEX_NAME
    if index_path.is_file():
        done = json.loads(index_path.read_text())
        differ = {k: done.get(k) for k in params if done.get(k) != params[k]}
        if not differ:
            return done
        raise ValueError(f"{index_path} holds pairs extracted with other parameters ({differ}): write to another "
                         f"out_dir, or delete {out} to extract again")
    out.mkdir(parents=True, exist_ok=True)

    bar = progress if show_progress else (lambda it, desc: it)
    ids, clouds, poses = [], [], []
    for k in bar(range(len(frames)), desc=f"{scene}: frames"):
        f = frames[k]
        c = frame_cloud(f, voxel_size)
        if len(c["points"]):
            ids.append(f["frame"])
            clouds.append(c)
            poses.append(f["pose"].astype(np.float64))

    # cheap screen in world coordinates (one KD-tree per frame), then the exact pair for the candidates
    from scipy.spatial import cKDTree

    r = radius_factor * voxel_size
    world = [c["points"] @ p[:3, :3].T + p[:3, 3] for c, p in zip(clouds, poses)]
    boxes = [(w.min(0) - r, w.max(0) + r) for w in world]
    trees = [cKDTree(w) for w in world]
    pairs = []
    n = len(ids)
    todo = [(a, b) for a in range(n) for b in range(a + 1, n)]
    for a, b in bar(todo, desc=f"{scene}: pairs"):
        if np.any(boxes[a][1] < boxes[b][0]) or np.any(boxes[b][1] < boxes[a][0]):
            continue  # the clouds' bounding boxes are farther apart than the radius: no correspondence at all
        f0 = np.isfinite(trees[b].query(world[a], distance_upper_bound=r)[0]).mean()
        f1 = np.isfinite(trees[a].query(world[b], distance_upper_bound=r)[0]).mean()
        if _select(f0, f1, overlap_rule) < min_overlap - _SCREEN_SLACK:
            continue
        pair = view_pair(clouds[a], clouds[b], poses[a], poses[b], voxel_size, radius_factor)
        if _select(pair["overlap0"], pair["overlap1"], overlap_rule) < min_overlap:
            continue
        name = f"{ids[a]:06d}_{ids[b]:06d}.npz"
        arrays = {k: pair[k] for k in PAIR_FIELDS}
        _atomic_write(out / name, lambda fh, arrays=arrays: np.savez_compressed(fh, **arrays))
        pairs.append({"file": name, "frames": [ids[a], ids[b]], "overlap": pair["overlap"],
                      "overlap0": pair["overlap0"], "overlap1": pair["overlap1"],
                      "correspondences": len(pair["correspondences"])})
    index = {**params, "frames": ids, "invalid_pose_frames": frames.invalid_frames, "pairs": pairs}
    _atomic_write(index_path, lambda fh: fh.write(json.dumps(index, indent=1).encode()))
    return index


# ----------------------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------------------
class ScanNetPairs(PairDataset):
    """Extracted ScanNet pairs with the items of :class:`~ssl3d.data.datasets.ViewPairDataset`.

    ``pairs_dir``: the ``out_dir`` of :func:`extract_scannet_pairs` (every ``<scene>/pairs.json`` under it) or one
    scene's folder. ``voxel_size`` must be the one the pairs were extracted with (the clouds are already one point
    per voxel and the correspondences use its radius). Items — built by ``PairDataset.__getitem__``, so
    :func:`~ssl3d.data.datasets.collate_pairs` works unchanged: ``points0/points1 (N, 3)``, ``coords0/coords1
    (N, 3) int64``, ``feats0/feats1`` (ones, or colours with ``features="rgb"``), ``correspondences (P, 2)``,
    ``T (4, 4)``, ``overlap``; each view independently augmented by ``transform`` (seeded by seed, epoch, index,
    view; call ``set_epoch``), with ``T`` updated to match. ``self.pairs`` lists (scene, frame0, frame1, overlap).
    Pairs are read from disk at every access (no cache: a full extraction holds hundreds of thousands).
    """

    def __init__(self, pairs_dir, voxel_size: float, transform=None, features: str = "ones", seed: int = 0,
                 radius_factor: float = 1.5):
        if features not in ("ones", "rgb"):
            raise ValueError(f"features must be 'ones' or 'rgb', got {features!r}")
        super().__init__(seed, transform)
        self.voxel_size, self.features, self.radius_factor = voxel_size, features, radius_factor
        root = Path(pairs_dir).expanduser()
        indices = [root / INDEX_NAME] if (root / INDEX_NAME).is_file() else sorted(root.glob(f"*/{INDEX_NAME}"))
        if not indices:
            raise FileNotFoundError(f"no {INDEX_NAME} in '{root}' or its scene folders: extract pairs first with "
                                    f"python -m ssl3d.data.scannet_pairs --scannet <ScanNet root> --out {root}")
        self.files, self.pairs = [], []
        for path in indices:
            index = json.loads(path.read_text())
            if not np.isclose(index["voxel_size"], voxel_size):
                raise ValueError(f"{path} was extracted at voxel_size={index['voxel_size']}, not {voxel_size}: pass "
                                 f"voxel_size={index['voxel_size']} or extract again with --voxel-size {voxel_size}")
            for p in index["pairs"]:
                self.files.append(path.parent / p["file"])
                self.pairs.append((index["scene"], *p["frames"], p["overlap"]))
        if not self.pairs:
            raise ValueError(f"the indices under '{root}' list no pair: extract with a lower --min-overlap or "
                             f"--frame-skip")

    def __len__(self):
        return len(self.files)

    def raw(self, i: int) -> dict:
        """The pair as stored (the fields of ``rgbd.make_view_pair``), before augmentation."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for ScanNetPairs of length {len(self)}")
        path = self.files[i % len(self)]
        try:
            with np.load(path) as z:
                d = {k: z[k] for k in PAIR_FIELDS}
        except (OSError, KeyError, ValueError) as e:
            raise real.CorruptFileError(path, f"is not a complete pair file ({e}): extract the scene again") from e
        d["overlap"] = float(d["overlap"])
        return d


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------
def _scene_dirs(scannet: Path, scenes) -> list[Path]:
    """Scene folders with exported frames: ``scannet/scans/<scene>`` (or ``scans_test``, or ``scannet/<scene>``
    as PointContrast's reader.py writes them); default: every scene of ``scans/`` with a ``depth/`` folder."""
    if not scannet.is_dir():
        raise real.DatasetNotFoundError(f"ScanNet not found at '{scannet}': the folder does not exist. Pass the "
                                        f"folder that holds scans/ (see ssl3d.data.real.SCANNET_LAYOUT)")
    bases = [scannet / s for s in real.SCANNET_SUBSETS] + [scannet]
    if scenes:
        dirs = [next((b / s for b in bases if (b / s).is_dir()), None) for s in scenes]
        missing = [f"scans/{s}/" for s, d in zip(scenes, dirs) if d is None]
    else:
        base = scannet / "scans" if (scannet / "scans").is_dir() else scannet
        dirs = sorted(d for d in base.iterdir() if d.is_dir() and (d / "depth").is_dir())
        missing = [] if dirs else ["scans/<scene>/depth/ (exported frames)"]
    if missing:
        raise real.DatasetNotFoundError(
            f"ScanNet scenes not found under '{scannet}': missing {', '.join(missing)}. Expected layout:\n"
            f"{real.SCANNET_LAYOUT}")
    return dirs


def main(argv=None) -> int:
    """``python -m ssl3d.data.scannet_pairs``: extract the pairs of every scene (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m ssl3d.data.scannet_pairs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scannet", required=True, type=Path, help="ScanNet root (holds scans/<scene>/ with frames)")
    ap.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per scene)")
    ap.add_argument("--scenes", nargs="*", help="scene names (default: every scene of scans/ with frames)")
    ap.add_argument("--frame-skip", type=int, default=25)
    ap.add_argument("--min-overlap", type=float, default=0.3)
    ap.add_argument("--voxel-size", type=float, default=0.025)
    ap.add_argument("--overlap-rule", choices=("min", "max"), default="min")
    args = ap.parse_args(argv)
    try:
        dirs = _scene_dirs(args.scannet.expanduser(), args.scenes)
    except real.DatasetNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total = 0
    for d in progress(dirs, desc="scenes"):
        index = extract_scannet_pairs(d, args.out, args.frame_skip, args.min_overlap, args.voxel_size,
                                      args.overlap_rule, show_progress=False)
        total += len(index["pairs"])
    print(f"{total} pairs from {len(dirs)} scene(s) in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
