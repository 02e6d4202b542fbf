"""Geometry on point clouds: voxelization, kNN, radius search, farthest-point sampling, surface sampling,
rigid transforms.

Everything here works on the CPU and the GPU, accepts a single cloud ``(N, 3)`` or a batch ``(B, N, 3)``
where it makes sense, and is tested against brute-force references (``tests/test_geometry.py``).
torch-geometric's ``knn_graph``/``fps`` need ``pyg-lib``, which is not on PyPI, so we write our own: plain
PyTorch, except the CPU neighbour searches, which call scipy's compiled KD-tree (see the notes below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ssl3d.utils import check_points

__all__ = [
    "as_tensor",
    "square_distance",
    "knn",
    "radius_pairs",
    "fps",
    "coverage_radius",
    "Voxels",
    "voxelize",
    "unique_rows",
    "sample_surface",
    "estimate_normals",
    "normalize_unit_sphere",
    "rotation_matrix",
    "random_rotation",
    "make_transform",
    "apply_transform",
    "invert_transform",
    "with_batch_index",
    "pad_batch",
]


def as_tensor(x, dtype=torch.float32) -> torch.Tensor:
    """numpy or torch → torch (no copy when possible)."""
    if isinstance(x, torch.Tensor):
        return x if dtype is None or x.dtype == dtype else x.to(dtype)
    a = np.asarray(x)
    if not a.flags.writeable:
        a = a.copy()
    return torch.as_tensor(a, dtype=dtype)


# ----------------------------------------------------------------------------------------------------------
# Nearest neighbours
# ----------------------------------------------------------------------------------------------------------
# Which trick buys what (benchmarks/neighbors.py prints the times against the pure-torch brute force):
# - knn on 3D CPU clouds with ≥ 4 M query–reference pairs: scipy's compiled KD-tree (cKDTree), one per cloud of
#   the batch, ``workers`` = torch's thread count. torch-cluster's CPU kNN is a KD-tree as well (nanoflann); a
#   tree visits ~50 candidates per query instead of all M (a 16 k × 16 k distance matrix is 1 GB and ~1.6 s).
#   A pure-torch voxel grid lived here before: 1.8-5.9× the tree's time, 2.8-5.9× on volumes and clusters.
#   The tree returns indices; the squared distances are recomputed from them by differences in float64, so
#   duplicates give exact zeros. No gradient flows through the distances (every caller detaches).
# - Other inputs (features of any dimension D, small clouds, GPUs) use one matmul + topk per chunk of queries.
# - radius_pairs: one dual-tree traversal (cKDTree.sparse_distance_matrix) returning all pairs at once as an
#   array, then one sort; not query_ball_point, whose per-point Python lists cost more than the search.
# - fps: a numpy loop on the CPU, coordinates stored planar (D, B, N): an iteration is ~10 tiny ops on contiguous
#   (B, N) rows, ~1 µs of overhead each in numpy against ~5-10 µs in torch, and no reduction over a trailing
#   axis of size 3 (≈ 4× less CPU time than the torch loop at 2,048 → 128, ≈ 8× on a batch of 32).
def square_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``‖a_i − b_j‖²``: (..., N, D), (..., M, D) → (..., N, M).

    Uses the expansion ``‖a‖² − 2 a·b + ‖b‖²`` (one matmul) and clamps the tiny negatives it can produce.
    """
    d = (a * a).sum(-1, keepdim=True) - 2 * a @ b.transpose(-1, -2) + (b * b).sum(-1).unsqueeze(-2)
    return d.clamp_min_(0)


_TREE_MIN_PAIRS = 1 << 22  # N·M from which 3D kNN on the CPU uses a KD-tree (below, one matmul per chunk is as fast)


def _knn_brute(query: torch.Tensor, ref: torch.Tensor, k: int, exclude_self: bool, chunk_size: int):
    """One matmul + topk per chunk of queries: (…, N, D), (…, M, D) → dist2, idx (…, N, k)."""
    d_out, i_out = [], []
    for s in range(0, query.shape[-2], chunk_size):
        q = query[..., s:s + chunk_size, :]
        d = square_distance(q, ref)  # (…, n, M)
        if exclude_self:
            rows = torch.arange(q.shape[-2], device=q.device)
            d[..., rows, rows + s] = float("inf")
        dd, ii = d.topk(k, dim=-1, largest=False, sorted=True)
        d_out.append(dd)
        i_out.append(ii)
    return torch.cat(d_out, -2), torch.cat(i_out, -2)


def _knn_tree(query: torch.Tensor, ref: torch.Tensor, k: int, exclude_self: bool):
    """Exact kNN through scipy's cKDTree: (B, N, 3), (B, M, 3) on the CPU → dist2, idx (B, N, k)."""
    from scipy.spatial import cKDTree

    kk = k + 1 if exclude_self else k
    dist, index = [], []
    for q, r in zip(query.detach().double().numpy(), ref.detach().double().numpy()):  # one tree per cloud
        _, i = cKDTree(r).query(q, k=kk, workers=torch.get_num_threads())
        i = i.reshape(len(q), kk)  # k = 1 returns (N,)
        if exclude_self:  # drop each point itself; with > k duplicates it may be missing: then drop the last
            drop = i == np.arange(len(q))[:, None]
            drop[~drop.any(1), -1] = True
            i = i[~drop].reshape(len(q), k)
        dist.append(((r[i] - q[:, None]) ** 2).sum(-1))  # (N, k) by differences, ascending as the tree's
        index.append(i)
    return (torch.from_numpy(np.stack(dist)).to(query.dtype), torch.from_numpy(np.stack(index).astype(np.int64)))


def knn(query, ref=None, k: int = 16, exclude_self: bool = False, chunk_size: int = 2048):
    """k nearest neighbours of every query point among ``ref`` (``ref=None``: the query cloud itself).

    Exact. 3D clouds on the CPU with N·M ≥ 4 M pairs go through a KD-tree (see the notes above), anything
    else through one matmul + topk per chunk of queries. Ties (equal distances) come in no particular order.

    Args:
        query: (N, D) or (B, N, D).  ref: (M, D) or (B, M, D), same batching as ``query``.
        k: number of neighbours (≤ M, or ≤ M − 1 with ``exclude_self``).
        exclude_self: drop each point itself (only meaningful when ``ref is None``).
        chunk_size: queries processed at once by the matmul path; bounds memory to chunk_size × M distances.
    Returns:
        dist2: (…, N, k) squared distances, ascending.  idx: (…, N, k) int64 indices into ``ref``.
    """
    query = as_tensor(query, None)
    same = ref is None
    ref = query if same else as_tensor(ref, None)
    if query.dim() != ref.dim() or query.dim() not in (2, 3) or query.shape[-1] != ref.shape[-1]:
        raise ValueError(f"knn: query {tuple(query.shape)} and ref {tuple(ref.shape)} must both be (N, D) or (B, N, D)")
    m = ref.shape[-2]
    kk = k + 1 if (exclude_self and same) else k
    if m == 0 or query.shape[-2] == 0:
        raise ValueError("knn: empty point cloud")
    if kk > m:
        raise ValueError(f"knn: k={k} neighbours requested but the reference cloud has only {m} points")
    for name, t in (("query", query), ("ref", ref)) if not same else (("points", query),):
        if t.is_floating_point() and not bool(torch.isfinite(torch.stack(t.aminmax())).all()):  # NaN propagates
            raise ValueError(f"knn: {name} contains NaN or Inf values — check the input cloud (or, for features, "
                             f"whether training diverged)")
    excl = exclude_self and same
    if (query.device.type == "cpu" and query.is_floating_point() and query.shape[-1] == 3
            and query.shape[-2] * m >= _TREE_MIN_PAIRS):
        batched = query.dim() == 3
        d, i = _knn_tree(query if batched else query[None], ref if batched else ref[None], k, excl)
        return (d, i) if batched else (d[0], i[0])
    return _knn_brute(query, ref, k, excl, chunk_size)


def radius_pairs(a, b, radius: float, nearest_only: bool = False) -> torch.Tensor:
    """All index pairs (i, j) with ‖a_i − b_j‖ ≤ radius, as a (P, 2) int64 tensor sorted by (i, j).

    Data preparation (PointContrast's correspondences): the points are read as float32 and compared in float64
    by scipy's KD-tree (one dual-tree traversal). ``nearest_only`` keeps, for each i, only its nearest j within
    the radius (the smallest j among exact ties).
    """
    from scipy.spatial import cKDTree

    a = check_points(np.asarray(as_tensor(a), dtype=np.float64), "a", batched=False)
    b = check_points(np.asarray(as_tensor(b), dtype=np.float64), "b", batched=False)
    if not radius >= 0:
        raise ValueError(f"radius_pairs: radius must be ≥ 0, got {radius}")
    found = cKDTree(a).sparse_distance_matrix(cKDTree(b), radius, output_type="ndarray")  # (P,) i, j, v
    i, j, v = found["i"].astype(np.int64), found["j"].astype(np.int64), found["v"]
    order = np.lexsort((j, v, i) if nearest_only else (j, i))  # by i, then (distance,) j
    i, j = i[order], j[order]
    if nearest_only:  # the first pair of every i: its nearest j, the smallest j among ties
        first = np.ones(len(i), dtype=bool)
        first[1:] = i[1:] != i[:-1]
        i, j = i[first], j[first]
    return torch.from_numpy(np.stack([i, j], 1))


# ----------------------------------------------------------------------------------------------------------
# Farthest-point sampling
# ----------------------------------------------------------------------------------------------------------
def fps(points, m: int, start: int | None = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Farthest-point sampling: greedily pick the point farthest from all points picked so far.

    Args:
        points: (N, D) or (B, N, D).  m: number of samples (≤ N).
        start: index of the first sample (0 like the PointNet++ CUDA kernel); ``None`` = random (``generator``).
    Returns:
        (m,) or (B, m) int64 indices. Ties go to the lowest index (argmax's first maximum).
    """
    x = as_tensor(points, None)
    single = x.dim() == 2
    if single:
        x = x.unsqueeze(0)
    if x.dim() != 3:
        raise ValueError(f"fps: points must be (N, D) or (B, N, D), got {tuple(as_tensor(points, None).shape)}")
    b, n, _ = x.shape
    if not 0 < m <= n:
        raise ValueError(f"fps: cannot pick m={m} samples from a cloud of {n} points")
    if start is None:
        cur = torch.randint(n, (b,), generator=generator).to(x.device)
    else:
        cur = torch.full((b,), int(start), dtype=torch.long, device=x.device)
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        idx = torch.from_numpy(_fps_numpy(x.detach().numpy(), m, cur.numpy()))
    else:
        idx = torch.empty(b, m, dtype=torch.long, device=x.device)
        mind = torch.full((b, n), float("inf"), device=x.device, dtype=x.dtype)
        ar = torch.arange(b, device=x.device)
        for t in range(m):
            idx[:, t] = cur
            d = ((x - x[ar, cur].unsqueeze(1)) ** 2).sum(-1)  # (B, N)
            mind = torch.minimum(mind, d)
            cur = mind.argmax(-1)
    return idx[0] if single else idx


def _fps_numpy(x: np.ndarray, m: int, cur: np.ndarray) -> np.ndarray:
    """The FPS loop in numpy: (B, N, D), start (B,) → (B, m) int64.

    Coordinates are stored planar (D, B, N), so that every op is on contiguous (B, N) rows: summing over a
    trailing axis of size 3 is the slow part of both the (B, N, D) numpy loop and the torch loop (5× here). Same
    arithmetic as the torch loop: Σ_d (x_d − c_d)² accumulated in the order d = 0, 1, 2…, running minimum, first
    argmax — identical indices.
    """
    b, n, dims = x.shape
    xp = np.ascontiguousarray(x.transpose(2, 0, 1))  # (D, B, N)
    idx = np.empty((b, m), dtype=np.int64)
    mind = np.full((b, n), np.inf, dtype=x.dtype)
    d, tmp = np.empty((b, n), dtype=x.dtype), np.empty((b, n), dtype=x.dtype)
    rows = np.arange(b)
    cur = cur.astype(np.int64)
    for t in range(m):
        idx[:, t] = cur
        c = xp[:, rows, cur]  # (D, B) the last pick
        np.subtract(xp[0], c[0][:, None], out=d)
        np.multiply(d, d, out=d)
        for a in range(1, dims):
            np.subtract(xp[a], c[a][:, None], out=tmp)
            np.multiply(tmp, tmp, out=tmp)
            np.add(d, tmp, out=d)
        np.minimum(mind, d, out=mind)
        cur = mind.argmax(1)
    return idx


def coverage_radius(points, samples) -> float:
    """Largest distance from any point of the cloud to its nearest sample (one-sided Hausdorff distance).

    Smaller is better: it is the radius of the balls around the samples needed to cover the whole cloud.
    """
    d, _ = knn(as_tensor(points), as_tensor(samples), k=1)
    return float(d.max().sqrt())


# ----------------------------------------------------------------------------------------------------------
# Voxelization
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Voxels:
    """Result of :func:`voxelize`. M voxels from N points.

    coords:  (M, 3) int64 integer voxel coordinates ``floor(x / voxel_size)``, sorted lexicographically.
    inverse: (N,) voxel index of every point — ``per_voxel[inverse]`` brings voxel values back to the points.
    index:   (M,) index of one representative point per voxel (the first one in input order).
    counts:  (M,) number of points per voxel.
    feats:   (M, C) mean of the point features per voxel, or None.
    labels:  (M,) majority label per voxel (``ignore_index`` votes are dropped), or None.
    """

    coords: torch.Tensor
    inverse: torch.Tensor
    index: torch.Tensor
    counts: torch.Tensor
    voxel_size: float
    feats: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.coords.shape[0]

    def centers(self) -> torch.Tensor:
        """(M, 3) voxel centres in the points' units."""
        return (self.coords.float() + 0.5) * self.voxel_size


def unique_rows(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.unique(coords, dim=0, return_inverse=True, return_counts=True)`` for integer (N, D) coordinates, through
    one int64 key per row: with the coordinates shifted to start at 0, ``key = ((c₀·R₁ + c₁)·R₂ + c₂)…`` orders rows
    lexicographically, so a 1-D unique of the keys gives the same rows, inverse and counts — about 10× faster on the
    CPU than ``unique(dim=0)``. Falls back to ``unique(dim=0)`` when the ranges would overflow int64."""
    if coords.dim() != 2 or coords.shape[0] == 0:
        return torch.unique(coords, dim=0, return_inverse=True, return_counts=True)
    lo = coords.min(0).values
    c = coords - lo  # (N, D) ≥ 0
    ranges = (c.max(0).values + 1).tolist()
    if math.prod(ranges) >= 2**62:
        return torch.unique(coords, dim=0, return_inverse=True, return_counts=True)
    key = c[:, 0].clone()
    for d in range(1, c.shape[1]):
        key = key * ranges[d] + c[:, d]
    ukey, inverse, counts = torch.unique(key, sorted=True, return_inverse=True, return_counts=True)
    uniq = torch.empty(len(ukey), c.shape[1], dtype=coords.dtype, device=coords.device)
    for d in range(c.shape[1] - 1, -1, -1):  # decode the keys back into rows
        uniq[:, d] = ukey % ranges[d] if d > 0 else ukey
        ukey = ukey // ranges[d] if d > 0 else ukey
    return uniq + lo, inverse, counts


def voxelize(points, voxel_size: float, feats=None, labels=None, ignore_index: int = -100) -> Voxels:
    """Quantize points to a grid of cubes of side ``voxel_size``; average features, vote labels."""
    x = check_points(as_tensor(points), "points", batched=False)
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    coords = torch.floor(x / voxel_size).long()
    uniq, inverse, counts = unique_rows(coords)
    m, n = uniq.shape[0], x.shape[0]
    # first point (in input order) of every voxel: scatter_reduce with 'amin' over point indices
    order = torch.arange(n, device=x.device)
    index = torch.full((m,), n, dtype=torch.long, device=x.device).scatter_reduce(0, inverse, order, "amin")
    out = Voxels(uniq, inverse, index, counts, float(voxel_size))
    if feats is not None:
        f = as_tensor(feats)
        if f.shape[0] != n:
            raise ValueError(f"feats has {f.shape[0]} rows but points has {n}")
        f2 = f.reshape(n, -1)
        s = torch.zeros(m, f2.shape[1], dtype=f2.dtype, device=f2.device).index_add_(0, inverse, f2)
        out.feats = (s / counts.unsqueeze(1).to(f2.dtype)).reshape(m, *f.shape[1:])
    if labels is not None:
        lab = as_tensor(labels, torch.long)
        if lab.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(lab.shape)}")
        valid = lab != ignore_index
        out.labels = torch.full((m,), ignore_index, dtype=torch.long, device=x.device)
        if valid.any():
            lv, iv = lab[valid], inverse[valid]
            if lv.min() < 0:
                raise ValueError(f"labels must be ≥ 0 or ignore_index={ignore_index}, found {int(lv.min())}")
            c = int(lv.max()) + 1
            votes = torch.zeros(m * c, dtype=torch.long, device=x.device).index_add_(
                0, iv * c + lv, torch.ones_like(lv)).view(m, c)
            has = votes.sum(1) > 0
            out.labels[has] = votes[has].argmax(1)  # ties → smallest label
    return out


# ----------------------------------------------------------------------------------------------------------
# Meshes → point clouds
# ----------------------------------------------------------------------------------------------------------
def sample_surface(vertices, faces, n: int, generator: torch.Generator | None = None):
    """Sample ``n`` points uniformly by area on a triangle mesh.

    A triangle is picked with probability ∝ its area, then a point uniformly inside it with the square-root
    trick: p = (1 − √r₁) a + √r₁ (1 − r₂) b + √r₁ r₂ c.

    Returns:
        points (n, 3) float32, normals (n, 3) unit face normals, face_index (n,) int64.
    """
    v = as_tensor(vertices, torch.float64)
    f = as_tensor(faces, torch.long)
    if v.dim() != 2 or v.shape[1] != 3 or f.dim() != 2 or f.shape[1] != 3:
        raise ValueError(f"need vertices (V, 3) and triangle faces (F, 3), got {tuple(v.shape)}, {tuple(f.shape)}")
    if f.numel() == 0:
        raise ValueError("mesh has no faces")
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cross = torch.linalg.cross(b - a, c - a)
    area2 = cross.norm(dim=1)
    if not area2.sum() > 0:
        raise ValueError("mesh has zero surface area")
    face = torch.multinomial(area2, n, replacement=True, generator=generator)
    r = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    s1 = r[:, :1].sqrt()
    p = (1 - s1) * a[face] + s1 * (1 - r[:, 1:]) * b[face] + s1 * r[:, 1:] * c[face]
    nrm = cross[face] / area2[face].clamp_min(1e-30).unsqueeze(1)
    return p.float(), nrm.float(), face


def estimate_normals(points, k: int = 16) -> torch.Tensor:
    """Unoriented normals by PCA: the eigenvector of the smallest eigenvalue of each kNN covariance."""
    x = check_points(as_tensor(points), batched=False)
    _, idx = knn(x, k=k)
    nb = x[idx]  # (N, k, 3)
    nb = nb - nb.mean(1, keepdim=True)
    cov = nb.transpose(1, 2) @ nb / k  # (N, 3, 3)
    _, vec = torch.linalg.eigh(cov)  # ascending eigenvalues
    return vec[:, :, 0]


def normalize_unit_sphere(points, center: str = "bbox"):
    """Centre a cloud and scale it into the unit sphere (max distance to the centre = 1).

    ``center="bbox"``: the bounding-box centre (ShapeNet/ModelNet h5 files, ScanObjectNN); ``"mean"``: the
    centroid (PointNet++/Point-BERT data loaders). Accepts numpy or torch (N, 3) and returns the same kind:
    (points, centre (3,), scale).
    """
    if center not in ("bbox", "mean"):
        raise ValueError(f"center must be 'bbox' or 'mean', got {center!r}")
    is_np = isinstance(points, np.ndarray)
    x = check_points(as_tensor(points, None if isinstance(points, torch.Tensor) else torch.float64), batched=False)
    c = (x.max(0).values + x.min(0).values) / 2 if center == "bbox" else x.mean(0)
    scale = (x - c).norm(dim=1).max().clamp_min(1e-12)
    out = (x - c) / scale
    if is_np:
        return out.numpy().astype(points.dtype), c.numpy(), float(scale)
    return out, c, scale


# ----------------------------------------------------------------------------------------------------------
# Rigid transforms (4 × 4 homogeneous matrices)
# ----------------------------------------------------------------------------------------------------------
def rotation_matrix(axis, angle: float) -> torch.Tensor:
    """Rodrigues' formula: rotation by ``angle`` (radians) about unit ``axis``. Returns (3, 3) float32."""
    k = as_tensor(axis, torch.float64)
    k = k / k.norm().clamp_min(1e-12)
    kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64)
    r = torch.eye(3, dtype=torch.float64) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx
    return r.float()


def random_rotation(generator: torch.Generator | None = None, axis=None, max_angle: float = 2 * math.pi):
    """A random rotation: about ``axis`` (e.g. ``(0, 0, 1)`` for the up-axis), or about a uniformly random
    axis when ``axis`` is None (PointContrast's augmentation), by an angle uniform in [−max/2, max/2] —
    full turn by default."""
    if axis is None:
        axis = torch.randn(3, generator=generator, dtype=torch.float64)
    angle = (torch.rand(1, generator=generator, dtype=torch.float64).item() - 0.5) * max_angle
    return rotation_matrix(axis, angle)


def make_transform(rotation=None, translation=None) -> torch.Tensor:
    """(4, 4) homogeneous transform from a (3, 3) rotation and a (3,) translation."""
    t = torch.eye(4)
    if rotation is not None:
        t[:3, :3] = as_tensor(rotation)
    if translation is not None:
        t[:3, 3] = as_tensor(translation)
    return t


def apply_transform(points, transform) -> torch.Tensor:
    """x ↦ R x + t for (…, N, 3) points and a (4, 4) transform (or (…, 4, 4) batched)."""
    x, t = as_tensor(points), as_tensor(transform)
    return x @ t[..., :3, :3].transpose(-1, -2) + t[..., :3, 3].unsqueeze(-2)


def invert_transform(transform) -> torch.Tensor:
    """Inverse of a rigid (4, 4) transform: [Rᵀ, −Rᵀ t]."""
    t = as_tensor(transform)
    out = torch.eye(4, dtype=t.dtype).expand_as(t).clone()
    rt = t[..., :3, :3].transpose(-1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -(rt @ t[..., :3, 3:4]).squeeze(-1)
    return out


# ----------------------------------------------------------------------------------------------------------
# Batches of clouds with different sizes
# ----------------------------------------------------------------------------------------------------------
def with_batch_index(parts) -> torch.Tensor:
    """Concatenate per-sample rows and prepend the sample index: [(M_b, D)] → (ΣM_b, 1 + D) int64.

    The (batch, x, y, z) coordinate layout of sparse tensors and the (batch, row, column) pixel layout both come
    from here.
    """
    parts = [as_tensor(p, torch.long) for p in parts]
    if not parts:
        raise ValueError("with_batch_index needs at least one sample")
    dev = parts[0].device
    return torch.cat([torch.cat([torch.full((len(p), 1), b, dtype=torch.long, device=dev), p.reshape(len(p), -1)], 1)
                      for b, p in enumerate(parts)])


def pad_batch(values: torch.Tensor, batch_index: torch.Tensor, batch_size: int | None = None):
    """Rows of several samples, concatenated → one padded tensor and a validity mask.

    values (ΣM, …), batch_index (ΣM,) sample of each row (any order) → padded (B, M_max, …) with zeros in the
    padding, mask (B, M_max) bool (True = a real row). Rows keep their relative order within a sample.
    Differentiable in ``values``; the inverse is ``padded[mask]`` when the rows were sorted by sample.
    """
    b = as_tensor(batch_index, torch.long).to(values.device)
    if b.dim() != 1 or len(b) != len(values):
        raise ValueError(f"batch_index must be ({len(values)},), got {tuple(b.shape)}")
    n = int(b.max()) + 1 if batch_size is None else batch_size
    counts = torch.bincount(b, minlength=n)  # (B,)
    order = torch.sort(b, stable=True).indices  # rows grouped by sample, original order kept within a sample
    starts = torch.cumsum(counts, 0) - counts  # (B,)
    slot = torch.arange(len(b), device=b.device) - starts[b[order]]  # position of each sorted row in its sample
    padded = values.new_zeros(n, int(counts.max()) if len(b) else 0, *values.shape[1:])
    padded[b[order], slot] = values[order]
    mask = torch.zeros(padded.shape[:2], dtype=torch.bool, device=values.device)
    mask[b[order], slot] = True
    return padded, mask

