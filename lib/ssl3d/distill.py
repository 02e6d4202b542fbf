"""2D → 3D: project the points of an RGB-D scan into their image and read a 2D feature map there (image-to-point).

Stage 2 of Janda et al. pairs every 3D point with the feature that the frozen 2D network computed at the pixel the
point projects to. With the OpenCV convention of :mod:`ssl3d.data.rgbd` (camera x right, y down, z forward; the
centre of pixel (row v, column u) at image coordinates (u, v); ``pose`` = camera-to-world, x_w = R x_c + t):

    x_c = Rᵀ (x_w − t)                  world → camera (skipped for camera-frame points)
    (u, v) = (f_x x/z + c_x,  f_y y/z + c_y)    [u, v, 1]ᵀ ∝ K x_c,   depth z

A point is **visible** when z > 0 (in front of the camera) and its pixel lies inside the image,
−½ ≤ u < W − ½ and −½ ≤ v < H − ½ (the areas of the W × H pixels), and — optionally, for points that did not come
from this very depth map — when |z − D[round(v), round(u)]| ≤ ``occlusion_tol``. The feature at (u, v) is the
bilinear interpolation of the four surrounding pixel centres, with u0 = ⌊u⌋, a = u − u0 (v0, b likewise):

    f(u, v) = (1 − a)(1 − b) F[v0, u0] + a (1 − b) F[v0, u0 + 1] + (1 − a) b F[v0 + 1, u0] + a b F[v0 + 1, u0 + 1]

with (u, v) clamped to the pixel-centre grid [0, W − 1] × [0, H − 1] first (border pixels replicate), which equals
``grid_sample(align_corners=True, padding_mode="border")``. The released code (jandaa/masters-thesis
``CMEBackboneTrainerFull.bilinear_interpret``) does the same on its resized and centre-cropped image.

Also here: :func:`rgbd_item` turns any RGB-D frame (e.g. the real Middlebury scan of
:func:`ssl3d.data.real.motorcycle_rgbd`) into an item of :class:`~ssl3d.data.datasets.RGBDFrameDataset`'s schema;
:func:`crop_rgbd` takes a crop with the matching intrinsics; :func:`retrieval_accuracy` is the notebook's check
(does a point's 3D feature retrieve its own pixel's 2D feature among 1,024 candidates?).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ssl3d import geometry as G
from ssl3d.data import rgbd as R

__all__ = ["project_points", "visible_mask", "bilinear_sample", "resize_uv", "crop_rgbd", "rgbd_item",
           "retrieval_accuracy"]


def _as_K(K) -> torch.Tensor:
    K = torch.as_tensor(np.asarray(K) if not isinstance(K, torch.Tensor) else K, dtype=torch.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be the (3, 3) pinhole intrinsics in pixels, got shape {tuple(K.shape)}")
    if not (K[0, 0] > 0 and K[1, 1] > 0) or K[2].tolist() != [0.0, 0.0, 1.0]:
        raise ValueError(f"K must look like [[f_x, s, c_x], [0, f_y, c_y], [0, 0, 1]] with f_x, f_y > 0 in pixels, "
                         f"got {K.tolist()}: pass the intrinsics of this image (scaled if the image was resized)")
    return K


def _image_size(image_size) -> tuple[int, int]:
    try:
        H, W = (int(s) for s in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (H, W), got {image_size!r}") from None
    if H < 1 or W < 1:
        raise ValueError(f"image_size must be positive (H, W), got {(H, W)}")
    return H, W


def project_points(points, K, pose=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Points (N, 3) (world if ``pose`` — camera-to-world (4, 4) — is given, else camera frame) → pixel coordinates
    ``uv`` (N, 2) float64 (u = column, v = row; pixel centres at integers) and depth ``z`` (N,). Points with z ≤ 0
    get u = v = NaN (they have no image): use :func:`visible_mask`."""
    p = torch.as_tensor(np.asarray(points) if not isinstance(points, torch.Tensor) else points, dtype=torch.float64)
    if p.dim() != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {tuple(p.shape)}")
    K = _as_K(K).to(p.device)
    if pose is not None:
        T = torch.as_tensor(np.asarray(pose) if not isinstance(pose, torch.Tensor) else pose, dtype=torch.float64)
        if T.shape != (4, 4):
            raise ValueError(f"pose must be a (4, 4) camera-to-world transform, got {tuple(T.shape)}")
        T = T.to(p.device)
        p = (p - T[:3, 3]) @ T[:3, :3]  # x_c = Rᵀ (x_w − t), row-vector form
    z = p[:, 2]
    uvw = p @ K.T  # (N, 3)
    front = z > 0
    zs = torch.where(front, z, torch.ones_like(z))
    uv = torch.where(front[:, None], uvw[:, :2] / zs[:, None], torch.full_like(uvw[:, :2], math.nan))
    return uv, z


def visible_mask(uv: torch.Tensor, z: torch.Tensor, image_size, depth=None, occlusion_tol: float | None = None,
                 min_depth: float = 1e-6) -> torch.Tensor:
    """(N,) bool: in front of the camera (z > ``min_depth``), inside the H × W image (−½ ≤ u < W − ½, −½ ≤ v < H − ½)
    and, when ``depth`` (H, W) and ``occlusion_tol`` are given, not occluded: |z − depth[round(v), round(u)]| ≤ tol
    (pixels without depth, 0, count as occluded)."""
    H, W = _image_size(image_size)
    u, v = uv[:, 0], uv[:, 1]
    vis = (z > min_depth) & (u >= -0.5) & (u < W - 0.5) & (v >= -0.5) & (v < H - 0.5)  # NaN compares False
    if occlusion_tol is not None:
        if depth is None:
            raise ValueError("occlusion_tol needs the depth map (H, W) of the image to compare with")
        d = torch.as_tensor(np.asarray(depth) if not isinstance(depth, torch.Tensor) else depth, dtype=torch.float64)
        if tuple(d.shape) != (H, W):
            raise ValueError(f"depth must be ({H}, {W}) like the image, got {tuple(d.shape)}")
        d = d.to(uv.device)
        col = torch.floor(u + 0.5).clamp(0, W - 1).nan_to_num(0).long()
        row = torch.floor(v + 0.5).clamp(0, H - 1).nan_to_num(0).long()
        ref = d[row, col]
        vis = vis & (ref > 0) & ((z - ref).abs() <= occlusion_tol)
    return vis


def bilinear_sample(fmap: torch.Tensor, uv: torch.Tensor, batch_index: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear interpolation of a feature map at continuous pixel coordinates (module docstring).

    Args:
        fmap: (C, H, W) one map or (B, C, H, W) a batch of maps.
        uv: (N, 2) (u = column, v = row) in the map's pixel coordinates (pixel centres at integers); clamped to
            [0, W − 1] × [0, H − 1] (border replication). Use :func:`resize_uv` when the map is not at the
            resolution the coordinates refer to.
        batch_index: (N,) map of each point, required when B > 1.
    Returns: (N, C) in fmap's dtype, differentiable in ``fmap``.
    """
    if fmap.dim() == 3:
        fmap = fmap[None]
    if fmap.dim() != 4:
        raise ValueError(f"fmap must be (C, H, W) or (B, C, H, W), got {tuple(fmap.shape)}")
    B, C, H, W = fmap.shape
    if uv.dim() != 2 or uv.shape[1] != 2:
        raise ValueError(f"uv must be (N, 2) pixel coordinates (u = column, v = row), got {tuple(uv.shape)}")
    if not bool(torch.isfinite(uv).all()):
        raise ValueError("uv holds NaN/Inf (points behind the camera?): keep only visible points (visible_mask)")
    if batch_index is None:
        if B != 1:
            raise ValueError(f"fmap holds {B} maps: pass batch_index (N,) saying which map each point samples")
        batch_index = torch.zeros(uv.shape[0], dtype=torch.long, device=fmap.device)
    bi = torch.as_tensor(batch_index, dtype=torch.long, device=fmap.device)
    if bi.shape != (uv.shape[0],) or (bi.numel() and (int(bi.min()) < 0 or int(bi.max()) >= B)):
        raise ValueError(f"batch_index must be ({uv.shape[0]},) with values in [0, {B - 1}]")
    uv = uv.to(fmap.device, torch.float64)
    u = uv[:, 0].clamp(0, W - 1)
    v = uv[:, 1].clamp(0, H - 1)
    u0 = torch.floor(u).long().clamp(max=max(W - 2, 0))
    v0 = torch.floor(v).long().clamp(max=max(H - 2, 0))
    u1, v1 = (u0 + 1).clamp(max=W - 1), (v0 + 1).clamp(max=H - 1)
    a = (u - u0).to(fmap.dtype)[:, None]  # (N, 1) ∈ [0, 1]
    b = (v - v0).to(fmap.dtype)[:, None]
    f = fmap.permute(0, 2, 3, 1)  # (B, H, W, C)
    return ((1 - a) * (1 - b) * f[bi, v0, u0] + a * (1 - b) * f[bi, v0, u1]
            + (1 - a) * b * f[bi, v1, u0] + a * b * f[bi, v1, u1])  # (N, C)


def resize_uv(uv: torch.Tensor, from_size, to_size) -> torch.Tensor:
    """Pixel coordinates in an H × W image → the same scene point in an H' × W' resampling of it (pixel-centre
    convention): u' = (u + ½)·W'/W − ½, v' = (v + ½)·H'/H − ½."""
    (H, W), (H2, W2) = _image_size(from_size), _image_size(to_size)
    scale = uv.new_tensor([W2 / W, H2 / H])
    return (uv + 0.5) * scale - 0.5


def crop_rgbd(frame: dict, top: int, left: int, height: int, width: int) -> dict:
    """A crop of an RGB-D frame (``color`` (H, W, 3), ``depth`` (H, W), ``K``; other keys dropped) with its own
    intrinsics: the principal point moves by the crop corner, c_x' = c_x − left, c_y' = c_y − top."""
    H, W = np.asarray(frame["depth"]).shape
    if not (0 <= top and top + height <= H and 0 <= left and left + width <= W and height > 0 and width > 0):
        raise ValueError(f"crop rows {top}…{top + height - 1}, columns {left}…{left + width - 1} outside the "
                         f"{H} × {W} frame")
    K = np.array(frame["K"], dtype=np.float64)
    K[0, 2] -= left
    K[1, 2] -= top
    return {"color": np.asarray(frame["color"])[top:top + height, left:left + width],
            "depth": np.asarray(frame["depth"])[top:top + height, left:left + width], "K": K,
            "pose": np.asarray(frame.get("pose", np.eye(4)), dtype=np.float64)}


def rgbd_item(color, depth, K, voxel_size: float = 0.05) -> dict:
    """Any RGB-D frame → an item in :class:`~ssl3d.data.datasets.RGBDFrameDataset`'s schema: ``image`` (3, H, W)
    float in [0, 1], ``depth`` (H, W), ``K`` (3, 3) float32, ``points`` (M, 3) camera frame (the first valid pixel
    of every ``voxel_size`` voxel, row-major, as :func:`ssl3d.data.rgbd.frame_points`), ``coords`` (M, 3) and
    ``pixels`` (M, 2) (row, column). ``color`` (H, W, 3) uint8 or float in [0, 1]; ``depth`` in metres, 0 = none."""
    color, depth = np.asarray(color), np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2 or color.shape[:2] != depth.shape or color.ndim != 3 or color.shape[2] != 3:
        raise ValueError(f"need color (H, W, 3) and depth (H, W) of one size, got {color.shape} and {depth.shape}")
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0 (metres), got {voxel_size}")
    pts, pix = R.backproject(depth, np.asarray(K, dtype=np.float64))
    if len(pts) == 0:
        raise ValueError("the depth map has no valid pixel (all 0 or NaN): check the depth units and the crop")
    idx = np.sort(G.voxelize(torch.from_numpy(pts).float(), voxel_size).index.numpy())  # row-major order kept
    pts, pix = pts[idx], pix[idx]
    pts_t = torch.from_numpy(pts.astype(np.float32))
    image = torch.from_numpy(np.ascontiguousarray(color)).permute(2, 0, 1).float()
    if color.dtype == np.uint8:
        image = image / 255
    out = {"image": image, "depth": torch.from_numpy(depth), "K": torch.as_tensor(np.asarray(K), dtype=torch.float32),
           "points": pts_t, "pixels": torch.from_numpy(pix)}
    out["coords"] = torch.floor(pts_t / voxel_size).long()
    return out


@torch.no_grad()
def retrieval_accuracy(q: torch.Tensor, k: torch.Tensor, num_candidates: int = 1024, batch_index=None,
                       generator: torch.Generator | None = None) -> dict:
    """Top-1 retrieval of a point's own pixel feature: row i of ``q`` (3D features) should be most cosine-similar to
    row i of ``k`` (their pixels' 2D features) among ``num_candidates`` rows of ``k``.

    The pairs of each scan (``batch_index``; one scan if None) are shuffled and cut into groups of
    ``num_candidates`` (the last, smaller group is kept when the scan has fewer pairs than that, dropped otherwise);
    within a group every query is scored against all the group's keys. Returns ``{"top1": accuracy, "chance":
    mean 1 / group size over queries, "num_queries": n}``.
    """
    if q.shape != k.shape or q.dim() != 2:
        raise ValueError(f"q and k must be (N, C) paired row by row, got {tuple(q.shape)} and {tuple(k.shape)}")
    if num_candidates < 2:
        raise ValueError(f"num_candidates must be ≥ 2, got {num_candidates}")
    n = q.shape[0]
    bi = torch.zeros(n, dtype=torch.long) if batch_index is None else torch.as_tensor(batch_index).long().cpu()
    qn, kn = torch.nn.functional.normalize(q.float(), dim=1), torch.nn.functional.normalize(k.float(), dim=1)
    hits, count, chance = 0, 0, 0.0
    for b in torch.unique(bi).tolist():
        rows = torch.nonzero(bi == b).squeeze(1)
        rows = rows[torch.randperm(len(rows), generator=generator)]
        groups = [rows] if len(rows) <= num_candidates else list(rows.split(num_candidates))
        groups = [g for g in groups if len(g) == num_candidates] or groups[:1]
        for g in groups:
            if len(g) < 2:
                continue
            g = g.to(q.device)
            sim = qn[g] @ kn[g].T  # (n_g, n_g) cosine similarities
            hits += int((sim.argmax(1) == torch.arange(len(g), device=q.device)).sum())
            count += len(g)
            chance += 1.0  # len(g) queries, each with chance 1 / len(g)
    if count == 0:
        raise ValueError("retrieval_accuracy: no scan has 2 or more pairs to compare")
    return {"top1": hits / count, "chance": chance / count, "num_queries": count}
