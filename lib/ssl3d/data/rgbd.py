"""RGB-D scans of procedural rooms by ray casting, and PointContrast-style view pairs.

Camera convention (OpenCV / ScanNet): camera frame x right, y down, z forward; the centre of pixel (u, v) = (column,
row) sits at integer image coordinates, so a pixel with depth z is the camera-frame point ``z · K⁻¹ [u, v, 1]ᵀ`` —
the convention of real calibrations (ScanNet, Middlebury), shared with :mod:`ssl3d.data.real`; ``pose`` is the 4 × 4
camera-to-world
transform, so ``x_world = R x_cam + t``.

Ray casting (Möller–Trumbore) is written as three matrix products. For a ray o + t·d and a triangle
(v₀, e₁ = v₁ − v₀, e₂ = v₂ − v₀), with s = o − v₀ and q = s × e₁:

    det = d · (e₂ × e₁),   u = d · (e₂ × s) / det,   v = d · q / det,   t = (e₂ · q) / det

All rays share the origin o (the camera centre), so s, q, e₂ × e₁ and e₂ × s are per-triangle vectors and the
four numerators are ``(R, 3) @ (3, F)`` products. A hit needs u ≥ 0, v ≥ 0, u + v ≤ 1, t > 0; the nearest hit
wins. Rays are first culled against every instance's bounding box (slab test), so each ray meets only the
triangles of the objects it can hit. Depth is exact up to float64 round-off, and every pixel knows the
triangle it hit — hence its semantic label and instance id — and its colour comes from the same procedural
texture as the room's point samples (:func:`ssl3d.data.synthetic.texture_color`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ssl3d import geometry as G
from ssl3d.data.synthetic import Room

__all__ = [
    "intrinsics",
    "look_at",
    "raycast",
    "render_frame",
    "camera_trajectory",
    "scan_room",
    "backproject",
    "project",
    "frame_points",
    "make_view_pair",
    "find_view_pairs",
]

IGNORE = -100


def intrinsics(width: int = 320, height: int = 240, fov_x_deg: float = 70.0) -> np.ndarray:
    """Pinhole K (3, 3) with square pixels and the principal point at the image centre ((W − 1)/2, (H − 1)/2)."""
    f = (width / 2) / math.tan(math.radians(fov_x_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world pose (4, 4) of a camera at ``eye`` looking at ``target`` (OpenCV axes, y down)."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to 'up'; choose another up vector")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, y, z], 1)
    pose[:3, 3] = eye
    return pose


def _pixel_rays(K: np.ndarray, width: int, height: int) -> torch.Tensor:
    """Camera-frame ray directions (H·W, 3) with z = 1, so that the ray parameter t is the depth."""
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    pix = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(height * width, dtype=torch.float64)], 1)
    return pix @ torch.from_numpy(np.linalg.inv(K)).T  # (R, 3)


def raycast(vertices, faces, tags, K, pose, width: int, height: int, chunk: int = 8192):
    """Cast one ray per pixel into a triangle mesh.

    Returns ``depth (H, W)`` float64 (0 where nothing is hit) and ``face (H, W)`` int64 (−1 where nothing is hit).
    Triangles are grouped by ``tags`` (instances) for bounding-box culling. Runs on one thread: the tensors are
    small, and measured here one thread is ~3× faster than two when another process shares the cores.
    """
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _raycast(vertices, faces, tags, K, pose, width, height, chunk)
    finally:
        torch.set_num_threads(prev)


def _raycast(vertices, faces, tags, K, pose, width, height, chunk):
    V = torch.as_tensor(np.asarray(vertices), dtype=torch.float64)
    F = torch.as_tensor(np.asarray(faces), dtype=torch.long)
    tags = np.asarray(tags)
    pose_t = torch.as_tensor(np.asarray(pose), dtype=torch.float64)
    d = _pixel_rays(np.asarray(K), width, height) @ pose_t[:3, :3].T  # (R, 3) world directions, t = depth
    o = pose_t[:3, 3]  # (3,)
    best_t = torch.full((d.shape[0],), math.inf, dtype=torch.float64)
    best_f = torch.full((d.shape[0],), -1, dtype=torch.long)
    v0 = V[F[:, 0]]
    e1, e2 = V[F[:, 1]] - v0, V[F[:, 2]] - v0
    s = o - v0  # (F, 3)
    q = torch.linalg.cross(s, e1)  # (F, 3)
    A = torch.linalg.cross(e2, e1)  # (F, 3): det = d·A
    B = torch.linalg.cross(e2, s)  # (F, 3): u·det = d·B
    t_num = (e2 * q).sum(1)  # (F,)
    inv_d = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    for tag in np.unique(tags):
        fidx = torch.from_numpy(np.nonzero(tags == tag)[0])
        tri = V[F[fidx].reshape(-1)]
        lo, hi = tri.min(0).values - 1e-6, tri.max(0).values + 1e-6
        # slab test: the ray enters the box before it leaves it, in front of the camera
        t1, t2 = (lo - o) * inv_d, (hi - o) * inv_d
        tmin = torch.minimum(t1, t2).max(1).values
        tmax = torch.maximum(t1, t2).min(1).values
        rays = torch.nonzero((tmax >= tmin) & (tmax > 0) & (tmin < best_t)).squeeze(1)
        for c in range(0, len(rays), chunk):
            r = rays[c:c + chunk]
            dr = d[r]  # (R, 3)
            det = dr @ A[fidx].T  # (R, F)
            ok = det.abs() > 1e-12
            inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
            u = (dr @ B[fidx].T) * inv
            v = (dr @ q[fidx].T) * inv
            t = t_num[fidx] * inv
            hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-6)
            t = torch.where(hit, t, torch.full_like(t, math.inf))
            tt, j = t.min(1)
            better = tt < best_t[r]
            best_t[r[better]] = tt[better]
            best_f[r[better]] = fidx[j[better]]
    hit = torch.isfinite(best_t)
    depth = torch.where(hit, best_t, torch.zeros_like(best_t))
    return depth.reshape(height, width).numpy(), best_f.reshape(height, width).numpy()


def render_frame(room: Room, K: np.ndarray, pose: np.ndarray, width: int = 320, height: int = 240,
                 ambient: float = 0.35) -> dict:
    """Render one RGB-D frame of a room: colour, metric depth, per-pixel semantic label and instance id.

    Colour = procedural texture at the hit point × (ambient + (1 − ambient)·|n · view|) — a head-light, so
    surfaces facing the camera are brighter. Missed pixels (none inside a closed room) get depth 0 and
    labels −100.
    """
    m = room.mesh
    depth, face = raycast(m.vertices, m.faces, m.tags, K, pose, width, height)
    hit = face >= 0
    inst = np.where(hit, m.tags[np.maximum(face, 0)], IGNORE)
    sem = np.where(hit, room.instance_semantic[np.maximum(inst, 0)], IGNORE)
    color = np.zeros((height, width, 3))
    if hit.any():
        cam_pts = backproject(depth, K)[0]  # (M, 3) in camera frame, pixels in row-major order of `hit`
        world = cam_pts @ pose[:3, :3].T + pose[:3, 3]
        tex = room.colors_at(world, inst[hit])
        v = m.vertices
        f = m.faces[face[hit]]
        n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        n /= np.linalg.norm(n, axis=1, keepdims=True).clip(1e-12)
        view = world - pose[:3, 3]
        view /= np.linalg.norm(view, axis=1, keepdims=True)
        shade = ambient + (1 - ambient) * np.abs((n * view).sum(1))
        color[hit] = tex * shade[:, None]
    return {"color": (np.clip(color, 0, 1) * 255).round().astype(np.uint8), "depth": depth.astype(np.float32),
            "semantic": sem.astype(np.int64), "instance": inst.astype(np.int64), "K": np.asarray(K, np.float64),
            "pose": np.asarray(pose, np.float64)}


def backproject(depth: np.ndarray, K: np.ndarray, pose: np.ndarray | None = None):
    """Valid depth pixels → 3D points. Returns ``points (M, 3)`` (camera frame, or world if ``pose`` given)
    and ``pixels (M, 2)`` int64 (row v, column u), in row-major order."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be an (H, W) image, got shape {depth.shape}")
    v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
    z = depth[v, u].astype(np.float64)
    Kinv = np.linalg.inv(np.asarray(K, dtype=np.float64))
    pix = np.stack([u, v, np.ones_like(z)], 1)
    pts = (pix @ Kinv.T) * z[:, None]
    if pose is not None:
        pts = pts @ pose[:3, :3].T + pose[:3, 3]
    return pts, np.stack([v, u], 1).astype(np.int64)


def project(points, K, pose=None):
    """World (or camera, if ``pose`` is None) points (N, 3) → pixel coordinates (N, 2) as (u, v) floats in
    the continuous image plane (the centre of pixel (row i, column j) is at (u, v) = (j, i)) and camera depth z (N,)."""
    p = np.asarray(points, dtype=np.float64)
    if pose is not None:
        R, t = pose[:3, :3], pose[:3, 3]
        p = (p - t) @ R
    z = p[:, 2]
    uvw = p @ np.asarray(K, dtype=np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = uvw[:, :2] / z[:, None]
    return uv, z


def camera_trajectory(room: Room, n_frames: int, seed: int = 0, height=(1.2, 1.7), pitch_deg=(-35, -15)):
    """Camera poses along a loop inside the room, looking across the room and slightly down.

    The camera centre follows an ellipse around the room centre (radii 30–40 % of the room size) and avoids
    furniture bounding boxes (a pose that would sit inside one is pushed towards the room centre).
    """
    rng = np.random.default_rng(seed)
    sx, sy, sz = room.size
    centre = np.array([sx / 2, sy / 2])
    rx, ry = sx * rng.uniform(0.3, 0.4), sy * rng.uniform(0.3, 0.4)
    phase = rng.uniform(0, 2 * np.pi)
    boxes = []
    for i in range(3, room.num_instances):
        vv = room.mesh.vertices[np.unique(room.mesh.faces[room.mesh.tags == i])]
        boxes.append((vv.min(0) - 0.25, vv.max(0) + 0.25))
    poses = []
    for k in range(n_frames):
        a = phase + 2 * np.pi * k / n_frames
        eye = np.array([centre[0] + rx * math.cos(a), centre[1] + ry * math.sin(a),
                        rng.uniform(*height)])
        for _ in range(20):  # step towards the centre until outside every furniture box
            if not any((eye >= lo).all() and (eye <= hi).all() for lo, hi in boxes):
                break
            eye[:2] = eye[:2] + 0.15 * (centre - eye[:2])
        yaw = a + math.pi + rng.uniform(-0.6, 0.6)  # look across the room, roughly towards the centre
        pitch = math.radians(rng.uniform(*pitch_deg))
        fwd = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
        poses.append(look_at(eye, eye + fwd))
    return poses


def scan_room(room: Room, n_frames: int = 20, width: int = 320, height: int = 240, fov_x_deg: float = 70.0,
              seed: int = 0) -> list[dict]:
    """Render ``n_frames`` RGB-D frames along :func:`camera_trajectory` (ScanNet-like frames)."""
    K = intrinsics(width, height, fov_x_deg)
    return [render_frame(room, K, pose, width, height) for pose in camera_trajectory(room, n_frames, seed)]


def frame_points(frame: dict, voxel_size: float | None = None, world: bool = False) -> dict:
    """A frame's valid depth pixels as a point cloud with colours, labels and pixel indices.

    ``voxel_size``: keep one point per voxel (the first in row-major order), as PointContrast does before
    matching. ``world``: express the points in world coordinates instead of the camera frame.
    """
    pts, pix = backproject(frame["depth"], frame["K"], frame["pose"] if world else None)
    if voxel_size is not None and len(pts):
        idx = G.voxelize(torch.from_numpy(pts).float(), voxel_size).index.numpy()
        pts, pix = pts[idx], pix[idx]
    v, u = pix[:, 0], pix[:, 1]
    return {"points": pts.astype(np.float32), "colors": frame["color"][v, u].astype(np.float32) / 255,
            "semantic": frame["semantic"][v, u], "instance": frame["instance"][v, u], "pixels": pix}


def make_view_pair(frame0: dict, frame1: dict, voxel_size: float = 0.05, radius_factor: float = 1.5) -> dict:
    """Two views of a scene with ground-truth point correspondences (PointContrast's input).

    Both clouds stay in their own camera frames. ``T`` (4, 4) maps view-1 camera coordinates into view 0's:
    T = pose₀⁻¹ · pose₁. Correspondences are all pairs (i, j) with ‖p⁰_i − T p¹_j‖ ≤ radius_factor · voxel_size
    (PointContrast's 1.5 × voxel). ``overlap`` = min over the two views of the fraction of points that have a
    correspondence.
    """
    a, b = frame_points(frame0, voxel_size), frame_points(frame1, voxel_size)
    if len(a["points"]) == 0 or len(b["points"]) == 0:
        raise ValueError("make_view_pair: a frame has no valid depth pixels")
    T = np.linalg.inv(frame0["pose"]) @ frame1["pose"]
    b_in_0 = b["points"] @ T[:3, :3].T + T[:3, 3]
    corr = G.radius_pairs(a["points"], b_in_0, radius_factor * voxel_size).numpy()
    f0 = len(np.unique(corr[:, 0])) / len(a["points"])
    f1 = len(np.unique(corr[:, 1])) / len(b["points"])
    return {"points0": a["points"], "points1": b["points"], "colors0": a["colors"], "colors1": b["colors"],
            "semantic0": a["semantic"], "semantic1": b["semantic"], "pixels0": a["pixels"], "pixels1": b["pixels"],
            "T": T.astype(np.float32),
            "correspondences": corr, "overlap": min(f0, f1)}


def find_view_pairs(frames: list[dict], min_overlap: float = 0.3, voxel_size: float = 0.1,
                    max_gap: int | None = None) -> list[tuple[int, int, float]]:
    """All frame pairs (i < j) whose overlap (as in :func:`make_view_pair`) is ≥ ``min_overlap``.

    Each frame is back-projected to world coordinates once at a coarse ``voxel_size``; ``max_gap`` limits
    j − i (frames along a trajectory).
    """
    from scipy.spatial import cKDTree

    clouds = [frame_points(f, voxel_size, world=True)["points"] for f in frames]
    trees = [cKDTree(c) for c in clouds]
    r = 1.5 * voxel_size
    out = []
    for i in range(len(frames)):
        for j in range(i + 1, len(frames)):
            if max_gap is not None and j - i > max_gap:
                break
            if len(clouds[i]) == 0 or len(clouds[j]) == 0:
                continue
            f0 = np.isfinite(trees[j].query(clouds[i], distance_upper_bound=r)[0]).mean()
            f1 = np.isfinite(trees[i].query(clouds[j], distance_upper_bound=r)[0]).mean()
            if min(f0, f1) >= min_overlap:
                out.append((i, j, float(min(f0, f1))))
    return out
