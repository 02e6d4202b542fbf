"""Points ↔ voxels for sparse networks: quantise one cloud, batch several, and bring outputs back to the points.

    sparse_quantize(points (N, 3), voxel_size)      → Voxels: coords (M, 3), feats (M, C), inverse (N,)
    batch_sparse([Voxels or (coords, feats), …])    → SparseTensor with coords (ΣM, 4) = (b, x, y, z), offsets (B+1,)
    unbatch(x, offsets)                             → [(M_b, C)]
    voxels_to_points(x, [inverse_b], offsets)       → (ΣN_b, C)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ssl3d.geometry import Voxels, as_tensor, voxelize, with_batch_index
from ssl3d.sparse.tensor import SparseTensor, as_int_coords, check_feats

__all__ = ["sparse_quantize", "batch_sparse", "unbatch", "voxels_to_points"]


def sparse_quantize(points, voxel_size: float, feats=None, labels=None, ignore_index: int = -100) -> Voxels:
    """Voxelize one cloud for a sparse network (:func:`ssl3d.geometry.voxelize` + checks).

    Returns :class:`ssl3d.geometry.Voxels`: ``coords`` (M, 3) = ⌊p / voxel_size⌋, ``feats`` (M, C) per-voxel mean
    (``feats=None`` → ones (M, 1), PointContrast's geometry-only input), ``labels`` majority vote, ``inverse`` (N,)
    so that ``per_voxel[inverse]`` are per-point values.
    """
    if feats is not None:
        f = as_tensor(feats)
        n = as_tensor(points).shape[0]
        if f.shape[0] != n:
            raise ValueError(f"feats has {f.shape[0]} rows but points has {n}: pass one feature row per point")
        if not bool(torch.isfinite(f).all()):
            raise ValueError("point feats contain NaN or Inf values: clean the input features")
    v = voxelize(points, voxel_size, feats=feats, labels=labels, ignore_index=ignore_index)
    if v.feats is None:
        v.feats = torch.ones(len(v), 1)
    elif v.feats.dim() == 1:
        v.feats = v.feats.unsqueeze(1)
    return v


def batch_sparse(samples: Sequence, stride: int = 1, backend: str | None = None):
    """Stack per-sample voxels into one batched :class:`SparseTensor`.

    Args:
        samples: a list of :class:`~ssl3d.geometry.Voxels` or of ``(coords (M_b, 3) int, feats (M_b, C))`` pairs.
    Returns:
        (tensor, offsets): rows of sample b are ``offsets[b]:offsets[b + 1]`` (offsets (B + 1,) int64), in the
        samples' own order; ``coords`` = (b, x, y, z).
    """
    if not isinstance(samples, Sequence) or len(samples) == 0:
        raise ValueError("batch_sparse needs a non-empty list of (coords, feats) pairs or Voxels")
    cs, fs = [], []
    for b, s in enumerate(samples):
        c, f = (s.coords, s.feats) if isinstance(s, Voxels) else s
        if f is None:
            raise ValueError(f"sample {b} has no features: use sparse_quantize (ones by default) or pass feats")
        c = as_int_coords(c, f"coords of sample {b}")
        if c.dim() != 2 or c.shape[1] != 3:
            raise ValueError(f"coords of sample {b} must have shape (M, 3), got {tuple(c.shape)}")
        if c.shape[0] == 0:
            raise ValueError(f"sample {b} is empty (0 voxels): drop it or check its crop / voxel size")
        f = check_feats(f, c.shape[0], f"feats of sample {b}")
        if fs and f.shape[1] != fs[0].shape[1]:
            raise ValueError(f"sample {b} has {f.shape[1]} feature channels but sample 0 has {fs[0].shape[1]}")
        cs.append(c.cpu())
        fs.append(f)
    counts = torch.tensor([0] + [c.shape[0] for c in cs])
    coords = with_batch_index(cs)  # (ΣM_b, 4) = (b, x, y, z)
    x = SparseTensor(coords.to(fs[0].device), torch.cat(fs), stride=stride, backend=backend)
    return x, torch.cumsum(counts, 0)


def _feats_of(x) -> torch.Tensor:
    return x.feats if isinstance(x, SparseTensor) else as_tensor(x, None)


def unbatch(x, offsets) -> list[torch.Tensor]:
    """Split per-voxel rows (a SparseTensor in :func:`batch_sparse` row order, or its (M, C) features) per sample."""
    f, o = _feats_of(x), as_tensor(offsets, torch.long)
    if int(o[-1]) != f.shape[0]:
        raise ValueError(f"offsets end at {int(o[-1])} but there are {f.shape[0]} rows: pass the offsets "
                         "batch_sparse returned for this tensor (stride-1 outputs keep its row order)")
    return [f[int(o[b]):int(o[b + 1])] for b in range(len(o) - 1)]


def voxels_to_points(x, inverses: Sequence[torch.Tensor], offsets) -> torch.Tensor:
    """Per-voxel outputs → per-point outputs, all samples concatenated: out = f[offsets[b] + inverse_b].

    x: SparseTensor (stride 1, :func:`batch_sparse` row order) or (M, C) features; inverses: the ``Voxels.inverse``
    (N_b,) of each sample. Returns (Σ N_b, C).
    """
    f, o = _feats_of(x), as_tensor(offsets, torch.long)
    if len(inverses) != len(o) - 1:
        raise ValueError(f"got {len(inverses)} inverse maps for {len(o) - 1} samples")
    if int(o[-1]) != f.shape[0]:
        raise ValueError(f"offsets end at {int(o[-1])} but there are {f.shape[0]} voxels: use a stride-1 output of "
                         "the tensor that batch_sparse built with these offsets")
    idx = []
    for b, inv in enumerate(inverses):
        inv = as_tensor(inv, torch.long)
        m = int(o[b + 1] - o[b])
        if inv.numel() and (int(inv.min()) < 0 or int(inv.max()) >= m):
            raise ValueError(f"inverse map of sample {b} indexes outside its {m} voxels")
        idx.append(inv + o[b])
    return f[torch.cat(idx).to(f.device)]
