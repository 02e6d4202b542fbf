"""Geometry on point clouds in plain PyTorch: voxelization, kNN, farthest-point sampling, surface sampling,
rigid transforms.

Everything here works on the CPU and the GPU, accepts a single cloud ``(N, 3)`` or a batch ``(B, N, 3)``
where it makes sense, and is tested against brute-force references (``tests/test_geometry.py``).
torch-geometric's ``knn_graph``/``fps`` need ``pyg-lib``, which is not on PyPI, so we write our own.
"""

from __future__ import annotations

import contextlib
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
# Which trick buys what (benchmarks/neighbors.py prints the times against scipy's cKDTree):
# - knn on 3D CPU clouds with ≥ 4 M query–reference pairs uses a voxel grid (_CellGrid): the reference points are
#   sorted by cell, and a query only looks at the 4 × 4 × 4 cells around its nearest cell corner — a block that
#   holds the ball of radius 1.5 cells around it (as a 3 × 3 × 3 block of cells 1.5× larger would, with 30 % more
#   points). Cells hold ≈ 3.5 points, so a query sees ~100-250 candidates instead of all M: ~2-4 M candidate
#   distances instead of a 16 k × 16 k matrix (1 GB, ~1.6 s). Cells along z have consecutive keys, so a block is
#   16 contiguous ranges of the sorted points (two prefix-count lookups each), not 64 cell lookups. The queries
#   near one corner share one candidate list, so the distances of a group of similar blocks are ONE batched
#   matmul, in coordinates local to the block (no cancellation); the k winners' distances are then recomputed by
#   differences (exact for duplicates). torch.topk on the short candidate rows is the largest cost. Exact: a query
#   keeps its k neighbours only if the k-th lies strictly closer than the boundary of the searched block; the
#   others (< 1 % on surfaces) search 6 × 6 × 6 cells, then the blocks of a grid 2, 4, 8… times coarser that hold
#   the ball through their k-th candidate (sparse regions), then (almost never) every point. On GPUs the
#   chunked matmul below is already fast: the grid is used on the CPU only, on one thread (see _one_thread).
# - Other inputs (features of any dimension D, small clouds) keep one matmul + topk per chunk of queries.
# - radius_pairs: the same grid with cells of side ≥ radius / 1.5 (the 4 × 4 × 4 block then holds every
#   candidate: no fallback), distances by one float64 matmul in local coordinates and again by differences for
#   the rare pairs within rounding distance of the radius (so the decisions are a KD-tree's), one sort of the
#   pairs — instead of a KD-tree and a Python loop over its neighbour lists.
# - fps: a numpy loop on the CPU, coordinates stored planar (D, B, N): an iteration is ~10 tiny ops on contiguous
#   (B, N) rows, ~1 µs of overhead each in numpy against ~5-10 µs in torch, and no reduction over a trailing
#   axis of size 3 (≈ 4× less CPU time than the torch loop at 2,048 → 128, ≈ 8× on a batch of 32).
def square_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``‖a_i − b_j‖²``: (..., N, D), (..., M, D) → (..., N, M).

    Uses the expansion ``‖a‖² − 2 a·b + ‖b‖²`` (one matmul) and clamps the tiny negatives it can produce.
    """
    d = (a * a).sum(-1, keepdim=True) - 2 * a @ b.transpose(-1, -2) + (b * b).sum(-1).unsqueeze(-2)
    return d.clamp_min_(0)


_GRID_MIN_PAIRS = 1 << 22  # N·M from which 3D kNN uses the grid (below, one matmul per chunk is as fast)
_GRID_PER_CELL = 3.5  # target points per cell (count-weighted mean): 64 × 3.5 candidates cover k = 16 for most queries
_GRID_BLOCK = 1 << 22  # distances per batched matmul (cells × queries × candidates): 16 MB in float32
_GRID_TILE = 8  # at most this many queries of a cell share a row block
_RADIUS_PER_CELL = 1.5  # radius search: cells not much smaller (a block per point costs more than distances)


@contextlib.contextmanager
def _one_thread():
    """Run the grid searches on one intra-op thread, then restore the setting. They are chains of ~100 mid-sized
    ops: with 2 OpenMP threads on a shared 2-core machine every op's second thread spin-waits for a busy core
    (measured 5-8× slower than one thread at load 8), and on an idle machine the ops are too small to gain much."""
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


class _CellGrid:
    """Reference points (B, M, 3) bucketed into cubic cells of side h (B,), sorted by cell.

    cell(x) = ⌊(x − lo_b) / h_b⌋ + 3 (a margin of three empty cells, so that the blocks of up to 6 × 6 × 6 cells
    around any lattice point of the box exist and never alias another cloud's), key = ((b·D₀ + c₀)·D₁ + c₁)·D₂
    + c₂. ``keys`` (U,) are the occupied cells, sorted, with ``starts`` and ``counts`` into ``order`` (B·M,): the
    flat reference indices b·M + j sorted by cell; ``flat`` (B·M, 3) their coordinates. ``ok`` is False when the
    keys would not fit in int64 (extreme outliers).
    """

    margin = 3

    def __init__(self, ref: torch.Tensor, h: torch.Tensor):
        self.ref, self.h = ref, h
        b, m, _ = ref.shape
        self.lo = ref.amin(1)  # (B, 3)
        span = torch.div(ref.amax(1) - self.lo, h.unsqueeze(1), rounding_mode="floor").amax(0)  # (3,)
        self.ok = bool(torch.isfinite(span).all()) and float(b) * float((span + 1 + 2 * self.margin).prod()) < 2**62
        if not self.ok:
            return
        self.dims = (span + 1 + 2 * self.margin).long()  # (3,)
        key = self.keys_of(self.cells_of(ref.reshape(-1, 3), torch.arange(b, device=ref.device).repeat_interleave(m)),
                           torch.arange(b, device=ref.device).repeat_interleave(m))  # (B·M,)
        skey, self.order = key.sort()
        self.keys, self.counts = torch.unique_consecutive(skey, return_counts=True)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.flat = ref.reshape(-1, 3)[self.order]
        self._prefix, self._dense, self.m = None, False, m

    @property
    def prefix(self) -> torch.Tensor:
        """(cells + 1,) number of reference points in the cells of smaller key, for every cell key when that table
        is small (built on first use), else (U + 1,) for the occupied cells only (then searched)."""
        if self._prefix is None:
            n_cells = self.ref.shape[0] * int(self.dims.prod())
            self._dense = n_cells <= 8 * self.ref.shape[0] * self.m + (1 << 20)
            if self._dense:
                per_cell = torch.zeros(n_cells + 1, dtype=torch.long, device=self.ref.device)
                per_cell[self.keys + 1] = self.counts
                self._prefix = torch.cumsum(per_cell, 0)
            else:
                self._prefix = torch.cat([self.starts, self.starts.new_full((1,), len(self.order))])
        return self._prefix

    def points_before(self, key: torch.Tensor) -> torch.Tensor:
        """Position in ``order`` of the first point of cell ``key`` or of any later cell (any shape)."""
        pre = self.prefix
        return pre.take(key) if self._dense else pre.take(torch.searchsorted(self.keys, key))

    def block_ranges(self, key: torch.Tensor, half: int):
        """The points of the block of cells [L − half, L + half)³ around lattice points of keys (U,), as
        (2 half)² index ranges into ``order``: (start, count) (U, (2 half)²). Cells along z have consecutive keys,
        so each row of 2·half cells along z is one contiguous range, found with two prefix-count lookups."""
        s = torch.arange(-half, half, device=key.device)
        ox, oy = torch.meshgrid(s, s, indexing="ij")
        first = key.unsqueeze(1) + ((ox.flatten() * self.dims[1] + oy.flatten()) * self.dims[2] - half)  # (U, S)
        start = self.points_before(first)
        return start, self.points_before(first + 2 * half) - start

    def cells_of(self, x: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Integer cells (R, 3) of points x (R, 3) of clouds ``batch`` (R,); points outside the reference box are
        clamped to the nearest cell of the box (the exactness checks then reject them)."""
        c = ((x - self.lo[batch]) / self.h[batch].unsqueeze(1)).floor_()
        c = torch.minimum(c.clamp_min_(0), (self.dims - 1 - 2 * self.margin).to(c.dtype))  # inside the box
        return c.long() + self.margin

    def lattice_of(self, x: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """The lattice point (cell corner) nearest to each point x (R, 3), in cell coordinates (R, 3): the block
        of cells [L − half, L + half)³ around it holds the ball of radius (half − ½)·h around x."""
        c = ((x - self.lo[batch]) / self.h[batch].unsqueeze(1) + 0.5).floor_()
        c = torch.minimum(c.clamp_min_(0), (self.dims - 2 * self.margin).to(c.dtype))  # the box's lattice
        return c.long() + self.margin

    def keys_of(self, cells: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        return ((batch * self.dims[0] + cells[..., 0]) * self.dims[1] + cells[..., 1]) * self.dims[2] + cells[..., 2]

    def corner(self, cells: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Lower corner (R, 3) of integer cells (R, 3) (= the lattice point of the same coordinates)."""
        return self.lo[batch] + (cells - self.margin).to(self.lo.dtype) * self.h[batch].unsqueeze(1)

    @classmethod
    def fit(cls, ref: torch.Tensor, per_cell: float) -> _CellGrid:
        """A grid whose occupied cells hold ≈ ``per_cell`` points (count-weighted mean, i.e. as seen from a point).

        First guess: a filled cube of the cloud's largest extent; then up to 3 corrections from the measured
        occupancy (points on surfaces fill ∝ h², not h³, so the exponent 1/2 when growing).
        """
        b, m, _ = ref.shape
        size = (ref.amax(1) - ref.amin(1)).amax(1)  # (B,)
        h = (size * (per_cell / m) ** (1 / 3)).clamp_min(torch.finfo(ref.dtype).tiny ** 0.5)
        for _ in range(4):
            grid = cls(ref, h)
            if not grid.ok:
                return grid
            seen = float((grid.counts.to(torch.float64) ** 2).sum()) / (b * m)  # mean occupancy around a point
            if per_cell / 2 <= seen <= per_cell * 2:
                break
            h = h * (per_cell / seen) ** (0.5 if seen < per_cell else 1 / 3)
        return grid


def _cell_blocks(grid: _CellGrid, qpts: torch.Tensor, qb: torch.Tensor, min_width: int, budget: int = _GRID_BLOCK,
                 half: int = 2):
    """Queries (R, 3) of clouds qb (R,) grouped by nearest lattice point, for one batched matmul per group.

    A query near lattice point L searches the (2 half)³ cells [L − half, L + half)³: at least (half − ½)·h from
    it in every direction (1.5 h for the default 4 × 4 × 4 block: 64 cells hold the same guaranteed ball as a
    3 × 3 × 3 block of cells 1.5× larger, with 30 % fewer points). The queries of one lattice point share the
    block; they are cut into tiles of ≤ _GRID_TILE (bounds the padding when many queries share one), tiles are
    sorted by their number of candidates and grouped while G tiles × Q queries × C candidates ≤ ``budget``.
    Returns a list of (qrows (G, Q) query rows, qval (G, Q), cand (G, C) positions in ``grid.order``, cval
    (G, C), corner (G, 3) = the lattice point, origin of local coordinates), and every query's lattice point.
    """
    dev, t = qpts.device, _GRID_TILE
    cells = grid.lattice_of(qpts, qb)  # (R, 3)
    skey, qorder = grid.keys_of(cells, qb).sort()
    _, qcount = torch.unique_consecutive(skey, return_counts=True)  # (U,) queries per occupied query cell
    qstart = torch.cumsum(qcount, 0) - qcount
    first = qorder[qstart]  # one query of each cell
    st, cnt = grid.block_ranges(skey[qstart], half)  # (U, (2 half)²) index ranges of each block
    total = cnt.sum(1)  # (U,) candidates of each lattice point: the points of its block
    ntile = (qcount + t - 1) // t
    tcell = torch.repeat_interleave(torch.arange(len(qcount), device=dev), ntile)  # (V,) cell of each tile
    trank = torch.arange(len(tcell), device=dev) - torch.repeat_interleave(torch.cumsum(ntile, 0) - ntile, ntile)
    tq = torch.clamp_max(qcount[tcell] - trank * t, t)  # (V,) queries in each tile
    order = torch.argsort(total[tcell] * (t + 1) + tq)  # similar tiles together: little padding
    tot = total[tcell[order]].clamp_min_(min_width)  # ascending
    tot_l, qmax = tot.tolist(), int(tq.max())  # group sizes from the largest tile: ≤ budget
    blocks, v, i0 = [], len(order), 0
    while i0 < v:  # a group: as many tiles as fit the budget at the group's largest candidate count
        i1 = min(v, i0 + max(1, budget // (qmax * tot_l[i0])))
        i1 = min(i1, i0 + max(1, budget // (qmax * tot_l[i1 - 1])))
        cmax = tot_l[i1 - 1]
        tiles = order[i0:i1]
        c = tcell[tiles]  # (G,)
        g = len(tiles)
        # candidates: the index ranges [start, start + count) of the block's rows, concatenated, then a padding
        # range [0, cmax − total); the whole (G, cmax) matrix is one cumsum of 1s with a jump at each range's start
        fs = torch.cat([st[c], torch.zeros(g, 1, dtype=st.dtype, device=dev)], 1).flatten()  # (G·(S + 1),)
        fc = torch.cat([cnt[c], (cmax - total[c]).unsqueeze(1)], 1).flatten()
        nz = fc > 0
        fs, fc = fs[nz], fc[nz]
        prev_end = torch.cat([fs.new_zeros(1), (fs + fc - 1)[:-1]])  # the value just before each range
        delta = torch.ones(g * cmax, dtype=torch.long, device=dev)
        delta[torch.cumsum(fc, 0) - fc] = fs - prev_end
        cand = torch.cumsum(delta, 0).view(g, cmax)  # (G, C)
        cval = torch.arange(cmax, device=dev) < total[c].unsqueeze(1)
        slot = torch.arange(int(tq[tiles].max()), device=dev)
        qval = slot < tq[tiles].unsqueeze(1)  # (G, Q)
        qrows = qorder[torch.where(qval, (qstart[c] + trank[tiles] * t).unsqueeze(1) + slot, 0)]  # (G, Q)
        blocks.append((qrows, qval, cand, cval, grid.corner(cells[first[c]], qb[first[c]])))
        i0 = i1
    return blocks, cells


def _grid_knn_pass(grid: _CellGrid, qpts: torch.Tensor, qb: torch.Tensor, qself: torch.Tensor | None, k: int,
                   half: int = 2):
    """k nearest reference points of queries qpts (R, 3) in clouds qb (R,) among the (2 half)³ cells around their
    nearest lattice points (see :func:`_cell_blocks`).

    ``qself`` (R,): flat reference index of each query, to exclude (None: no exclusion). Returns dist2 (R, k),
    flat reference indices (R, k) and ``exact`` (R,): the k-th neighbour lies strictly inside the searched block,
    so no point outside it can be closer.
    """
    kk = k + (qself is not None)  # one more, then the query itself is dropped
    out_d = torch.empty(len(qpts), k, dtype=qpts.dtype, device=qpts.device)
    out_i = torch.empty(len(qpts), k, dtype=torch.long, device=qpts.device)
    far = torch.finfo(qpts.dtype).max ** 0.25  # padding candidates: far away, squares stay finite
    blocks, cells = _cell_blocks(grid, qpts, qb, kk, half=half)
    for qrows, qval, cand, cval, corner in blocks:
        g, c = cand.shape
        q = qrows.shape[1]
        cp = grid.flat.index_select(0, cand.flatten()).view(g, c, 3).sub_(corner.unsqueeze(1))  # (G, C, 3) local
        cp.masked_fill_(~cval.unsqueeze(-1), far)  # coordinates: no cancellation
        qp = qpts.index_select(0, qrows.flatten()).view(g, q, 3).sub_(corner.unsqueeze(1))  # (G, Q, 3)
        # ‖q − c‖² − ‖q‖² = [q, 1] · [−2c, ‖c‖²]: one matmul (the per-row ‖q‖² does not change the order)
        d = torch.cat([qp, qp.new_ones(g, q, 1)], 2) @ torch.cat([-2 * cp, cp.square().sum(-1, keepdim=True)],
                                                                  2).transpose(1, 2)  # (G, Q, C)
        real = qval.flatten().nonzero().squeeze(1)  # (R_g,) rows g·Q + q of real queries: padding never selected
        dd, jj = d.view(g * q, c).index_select(0, real).topk(kk, dim=1, largest=False, sorted=True)  # (R_g, kk)
        at = (real // q * c).unsqueeze(1) + jj  # flat positions in (G, C)
        pos, ok = cand.take(at), cval.take(at)  # (R_g, kk)
        ids = torch.where(ok, grid.order.take(pos), -1)  # flat reference indices, −1: padding
        dest = qrows.flatten().index_select(0, real)
        # the winners' distances again, by differences: exact for duplicates, error ~1e-7 of the distance itself
        # (the matmul's is ~1e-7 of the squared cell size); re-sorted where that swaps near-ties
        diff = grid.flat.index_select(0, pos.flatten()).view(-1, kk, 3) - qpts.index_select(0, dest).unsqueeze(1)
        dd = torch.where(ok, diff.square_().sum(-1), float("inf"))
        swapped = (dd[:, 1:] < dd[:, :-1]).any(1).nonzero().squeeze(1)
        if len(swapped):
            dd[swapped], order = dd[swapped].sort(dim=1)
            ids[swapped] = ids[swapped].gather(1, order)
        if qself is not None:  # drop the query itself (or the last one if it was not among the kk)
            keep = ids != qself[dest].unsqueeze(1)
            keep &= torch.cumsum(keep, 1) <= k
            dd, ids = dd[keep].view(-1, k), ids[keep].view(-1, k)
        out_d.index_copy_(0, dest, dd)
        out_i.index_copy_(0, dest, ids)
    corner = grid.corner(cells - half, qb)  # (R, 3) lower corner of each query's block
    h = grid.h[qb].unsqueeze(1)
    bound = torch.minimum(qpts - corner, corner + 2 * half * h - qpts).amin(1)  # to the block's boundary
    # minus the rounding of the cell computation (~ulp × cells across the box), so "outside" is really outside
    bound -= 4 * torch.finfo(qpts.dtype).eps * float(grid.dims.max()) * h.squeeze(1)
    return out_d, out_i, out_d[:, -1] < bound.clamp_min(0) ** 2  # padding (far) is never exact


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


def _knn_grid(query: torch.Tensor, ref: torch.Tensor, k: int, exclude_self: bool):
    """Exact kNN of 3D clouds through :class:`_CellGrid`: (B, N, 3), (B, M, 3) → dist2, idx (B, N, k), or None
    if the cloud cannot be gridded (coordinates spanning more than 2⁶² cells)."""
    b, n, _ = query.shape
    m = ref.shape[1]
    grid = _CellGrid.fit(ref, _GRID_PER_CELL)
    if not grid.ok:
        return None
    qpts = query.reshape(-1, 3)  # (B·N, 3)
    rows = torch.arange(b * n, device=query.device)
    qb = rows // n
    qself = qb * m + rows % n if exclude_self else None
    dist, idx, exact = _grid_knn_pass(grid, qpts, qb, qself, k)
    bad = (~exact).nonzero().squeeze(1)  # most of the others: the 6 × 6 × 6 cells around their lattice point
    if len(bad):
        dist[bad], idx[bad], exact[bad] = _grid_knn_pass(grid, qpts[bad], qb[bad],
                                                         None if qself is None else qself[bad], k, half=3)
    # the others (sparse regions): a grid of cells 2, 4, 8… times larger, whose 4 × 4 × 4 block around the
    # query contains the ball through its k-th candidate (a superset of the cells searched so far)
    size = (ref.amax(1) - ref.amin(1)).amax(1)  # (B,)
    level = 1
    while not bool(exact.all()) and bool((grid.h * 2 ** (level - 1) < size).any()):
        bad = (~exact).nonzero().squeeze(1)
        need = (dist[bad, -1].sqrt() / (1.5 * grid.h[qb[bad]])).log2().ceil()  # inf (< k candidates): any level
        sel = bad[(need <= level) | need.isinf()]
        if len(sel):
            coarse = _CellGrid(ref, grid.h * 2**level)
            dist[sel], idx[sel], exact[sel] = _grid_knn_pass(coarse, qpts[sel], qb[sel],
                                                             None if qself is None else qself[sel], k)
        level += 1
    bad = (~exact).nonzero().squeeze(1)
    for c in qb[bad].unique().tolist():  # isolated queries, or outside the reference box: every point
        sel = bad[qb[bad] == c]
        for s in range(0, len(sel), 64):
            rows = sel[s:s + 64]
            d = ((qpts[rows].unsqueeze(1) - ref[c].unsqueeze(0)) ** 2).sum(-1)  # (64, M) by differences
            if exclude_self:
                d[torch.arange(len(rows), device=d.device), rows % n] = float("inf")
            dist[rows], i2 = d.topk(k, dim=1, largest=False, sorted=True)
            idx[rows] = i2 + c * m
    return dist.view(b, n, k), (idx - qb.view(-1, 1) * m).view(b, n, k)


def knn(query, ref=None, k: int = 16, exclude_self: bool = False, chunk_size: int = 2048):
    """k nearest neighbours of every query point among ``ref`` (``ref=None``: the query cloud itself).

    Exact. 3D clouds on the CPU with N·M ≥ 4 M pairs go through a voxel grid (see the notes above), anything
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
    gridable = query.dtype in (torch.float32, torch.float64) and ref.dtype == query.dtype and query.shape[-1] == 3
    if gridable and query.device.type == "cpu" and query.shape[-2] * m >= _GRID_MIN_PAIRS:
        batched = query.dim() == 3
        with _one_thread():
            out = _knn_grid(query if batched else query[None], ref if batched else ref[None], k, excl)
        if out is not None:
            return out if batched else (out[0][0], out[1][0])
    return _knn_brute(query, ref, k, excl, chunk_size)


def _radius_grid(a: torch.Tensor, b: torch.Tensor, radius: float, nearest_only: bool) -> torch.Tensor | None:
    """radius_pairs on a grid of cells of side ≥ ``radius`` (float64 (N, 3), (M, 3)); None if not griddable."""
    # cells of side ≥ radius / 1.5: the 4 × 4 × 4 block around a point's lattice point then holds all its
    # candidates. Not much smaller than ~1.5 points per cell either: looking up 64 mostly empty cells per point
    # costs more than the distances.
    fit = _CellGrid.fit(b[None], _RADIUS_PER_CELL)
    if not fit.ok:
        return None
    grid = fit if float(fit.h[0]) >= radius / 1.5 else _CellGrid(b[None], torch.tensor([radius / 1.5], dtype=b.dtype))
    if not grid.ok:
        return None
    r2, m = radius * radius, len(b)
    tol = 1e-12 * (r2 + float(grid.h[0]) ** 2)  # ≫ the matmul's rounding (~1e-15 of the squared block size)
    rows_i, rows_j = [], []
    blocks, _ = _cell_blocks(grid, a, torch.zeros(len(a), dtype=torch.long), 1, _GRID_BLOCK // 4)
    for qrows, qval, cand, cval, corner in blocks:
        if nearest_only:  # per query: the smallest distance within the radius, then the smallest j
            q, c = a[qrows], grid.flat[cand]  # (G, Q, 3), (G, C, 3)
            d = (q[..., 0:1] - c[:, None, :, 0]) ** 2  # (G, Q, C): differences, summed in the order x, y, z
            d += (q[..., 1:2] - c[:, None, :, 1]) ** 2
            d += (q[..., 2:3] - c[:, None, :, 2]) ** 2
            d.masked_fill_(~(cval.unsqueeze(1) & qval.unsqueeze(2)), float("inf"))
            ref_id = grid.order[cand].unsqueeze(1).expand(d.shape)  # (G, Q, C)
            dmin = d.amin(2, keepdim=True)  # (G, Q, 1)
            has = (dmin <= r2).squeeze(2)
            j = torch.where(d == dmin, ref_id, m).amin(2)
            rows_i.append(qrows[has])
            rows_j.append(j[has])
            continue
        # ‖q − c‖² by one matmul in coordinates local to the block (float64), then by differences — exactly as
        # a KD-tree decides — for the rare pairs within rounding distance of the radius
        cp = grid.flat[cand] - corner.unsqueeze(1)  # (G, C, 3)
        qp = a[qrows] - corner.unsqueeze(1)  # (G, Q, 3)
        d = torch.baddbmm(cp.square().sum(-1).unsqueeze(1), qp, cp.transpose(1, 2), alpha=-2)  # (G, Q, C)
        d += qp.square().sum(-1, keepdim=True)
        ok = cval.unsqueeze(1) & qval.unsqueeze(2)
        hit = (d <= r2 - tol) & ok
        near = ((d - r2).abs_() <= tol) & ok
        if bool(near.any()):
            g, qi, ci = near.nonzero(as_tuple=True)
            exact = ((a[qrows[g, qi]] - grid.flat[cand[g, ci]]) ** 2).sum(-1) <= r2  # x, y, z in order
            hit[g[exact], qi[exact], ci[exact]] = True
        g, qi, ci = hit.nonzero(as_tuple=True)
        rows_i.append(qrows[g, qi])
        rows_j.append(grid.order[cand[g, ci]])
    key = (torch.cat(rows_i) * m + torch.cat(rows_j)).sort().values  # pairs sorted by (i, j)
    return torch.stack([key // m, key % m], 1)


def radius_pairs(a, b, radius: float, nearest_only: bool = False) -> torch.Tensor:
    """All index pairs (i, j) with ‖a_i − b_j‖ ≤ radius, as a (P, 2) int64 tensor sorted by (i, j).

    Data preparation (PointContrast's correspondences): the points are read as float32 and compared in float64
    on a grid of cells of side ≥ ``radius`` (every candidate of a point lies in the 27 cells around its own).
    ``nearest_only`` keeps, for each i, only its nearest j within the radius (the smallest j among exact ties).
    """
    a = check_points(np.asarray(as_tensor(a), dtype=np.float64), "a", batched=False)
    b = check_points(np.asarray(as_tensor(b), dtype=np.float64), "b", batched=False)
    if math.isfinite(radius) and radius > 0:
        with _one_thread():
            pairs = _radius_grid(torch.from_numpy(a), torch.from_numpy(b), float(radius), nearest_only)
        if pairs is not None:
            return pairs
    from scipy.spatial import cKDTree  # radius 0 or coordinates too spread for a grid

    tb = cKDTree(b)
    if nearest_only:
        d, j = tb.query(a, k=1, distance_upper_bound=np.nextafter(radius, np.inf))
        i = np.nonzero(np.isfinite(d))[0]
        return torch.from_numpy(np.stack([i, j[i]], 1).astype(np.int64))
    lists = tb.query_ball_point(a, r=radius, return_sorted=True)
    counts = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    i = np.repeat(np.arange(len(a)), counts)
    j = np.fromiter((v for x in lists for v in x), dtype=np.int64, count=int(counts.sum()))
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


def voxelize(points, voxel_size: float, feats=None, labels=None, ignore_index: int = -100) -> Voxels:
    """Quantize points to a grid of cubes of side ``voxel_size``; average features, vote labels."""
    x = check_points(as_tensor(points), "points", batched=False)
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    coords = torch.floor(x / voxel_size).long()
    uniq, inverse, counts = torch.unique(coords, dim=0, return_inverse=True, return_counts=True)
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

