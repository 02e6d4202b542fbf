"""The ``"torch"`` backend: sparse convolution in plain PyTorch (CPU or CUDA), to be read in one sitting.

A convolution needs, for every kernel offset o_k, the pairs (input row i, output row j) with c_i = c_j + o_k · s_in
(the *kernel map*); then out[j] = Σ_k Σ_{(i, j) ∈ pairs_k} x[i] · W[k]. Four steps, one section each:

1. :class:`Grid` — hashing: (b, x, y, z) → one int64 key, by mixed-radix packing inside the bounding box.
2. :class:`CoordMap` — one coordinate set: its keys sorted (``torch.searchsorted`` look-ups) and, when the box is
   small enough, a dense key → row table (a look-up is one gather).
3. :class:`KernelMap` and :class:`CoordManager` — the pairs, and the coordinate cache shared by every tensor
   computed from one input: coordinate sets per tensor stride, kernel maps per (s_in, s_out, kernel size,
   dilation). A map is built once per network forward and reused by every layer with the same key, by the
   transposed convolution that goes back (``.T``) and by the backward passes.
4. :class:`GatherMatmulScatter` — the convolution and its gradients: gather → matmul → ``index_add_`` per offset,
   or, for small maps, one gather and one GEMM on the neighbour matrix.

Measured choices (``benchmarks/sparse_conv.py``, 156 k-voxel room, 3×3×3 submanifold conv forward with cached maps,
CPU time on 1 thread of a busy 2-core AMD EPYC; "fraction" = time of the per-offset GEMMs alone on operands already
gathered ÷ time of the whole convolution):

* **Blocks of output rows** (:meth:`KernelMap.blocks`). Pairs are sorted by output row, and the convolution walks
  blocks of ~3 700 output rows (``BLOCK_PAIRS`` pairs) and, inside a block, the offsets: gather → GEMM →
  ``index_add_`` through two scratch buffers reused by every (block, offset) slice. The input rows a block reads lie
  within a few thousand rows of it (neighbours are close in key order), so they and the output block stay in the
  L2/L3 cache across the 27 offsets instead of streaming the whole feature matrix from memory 27 times; the scratch
  buffers never reach the allocator (whole-offset temporaries of tens of MB are handed back to the OS and
  page-faulted in again on every call). Fraction 32→32: 0.37–0.45 → 0.56–0.64; 96→96: 0.59 → 0.87.
  On CUDA a block is the whole map (one kernel launch per offset and op).
* **One thread per run of blocks** (:func:`_run_blocks`). With n > 1 threads the blocks are split among n Python
  threads whose ops are single-threaded: one fork/join per call instead of one per op. On cores shared with other
  jobs a 2-thread OpenMP region waits for whichever thread is descheduled; per-op threading made the 32→32
  convolution 13× slower on 2 threads than on 1, block threads are not slower than 1 thread.
* **Submanifold centre = identity**: the centre offset pairs every site with itself, so it is one dense
  ``x @ W[centre]`` that also initialises the output (no gather, no scatter, no zero fill).
* **Mirrored offsets**: in an odd-k submanifold map the pairs of −o are those of o swapped, so only half the offsets
  are looked up, and the map is its own transpose (backward needs no second copy of the pairs).
* **Dense look-up table** for kernel maps when the bounding box has at most ``DENSE_CELLS_PER_SITE`` cells per site
  (156 k-voxel room: 3×3×3 map 280 ms → 73 ms; binary search on sorted queries, the fallback: 171 ms).
* **Neighbour matrix for small maps** (:meth:`KernelMap.neighbours`): when the (rows, K·C) matrix of every output's
  K neighbours (zeros where one is missing) has at most ``DENSE_MAX_ELEMENTS`` entries, a convolution is one gather
  and one GEMM with W reshaped to (K·C_in, C_out); backward is one GEMM for ∂W on the same matrix and one gather +
  GEMM on the transposed map for ∂x — no scatter. It multiplies the missing neighbours by zero too (a 3×3×3 map on
  surfaces has ~9–12 of 27), but on the smoke notebooks' clouds (a few thousand rows of 8–64 channels) the
  per-offset path is op overhead — above all under OpenMP's wait policy PASSIVE with no spin (what ``import ssl3d``
  set when this was measured; it now also sets ``GOMP_SPINCOUNT``), where every 2-thread op of a one-block map
  wakes a sleeping thread. A Res16UNet14Tiny training step is 1.9× faster on a
  batch of 4 view-pair clouds (8.5 k voxels) and 1.5× on 2 rooms at 10 cm (23 k voxels), and 04's PointContrast
  pre-training loop 2.4–2.8× (``benchmarks/sparse_small.py``; under OpenMP's default spinning policy the two paths
  are within 1.02–1.14×). Larger limits (16 M entries) were slower on the rooms; rooms at 2 cm and Res16UNet34C
  widths stay on the per-offset path.
* Backward re-gathers x and ∂out per (block, offset) instead of saving the gathered (P, C) copies from forward:
  those copies would be Σ P·C_in floats — gigabytes for a Res16UNet34C on this room — against one extra gather.

Measured and not kept: offset-major chunks through the same L2-sized buffers (fraction 0.47–0.60 / 0.66); one gather
of all pairs of a block → per-offset GEMMs into one buffer → one ``index_add_`` (0.50–0.59 / 0.82); gathering the
output rows, ``addmm`` into them and ``index_copy_`` back instead of ``index_add_`` (0.65–0.73 / 0.71); for small maps
(≤ 5 k sites) one GEMM on a dense (sites, K·C_in) neighbour matrix instead of per-offset GEMMs, 32→32 forward
alone (1.2–2× slower: wasted multiplications by missing neighbours; in whole training steps of the narrow smoke
networks it is the faster path, see above). BatchNorm/ReLU fusion: not tried, they are ~5 % of a U-Net step.
"""

from __future__ import annotations

import functools
import threading
from typing import NamedTuple

import torch

from ssl3d.sparse.backend import kernel_offsets

__all__ = ["Grid", "CoordMap", "KernelMap", "CoordManager", "GatherMatmulScatter", "TorchSites", "TorchBackend"]


# ----------------------------------------------------------------------------------------------------------
# 1. Hashing
# ----------------------------------------------------------------------------------------------------------
class Grid:
    """Mixed-radix packing of (b, x/step, y/step, z/step) into one int64 key inside the bounding box of ``coords``.

    key = ((b − b₀)·S_x + (x/s − x₀))·S_y … — keys sort in lexicographic (b, x, y, z) order. A query outside the
    box cannot be in the set and is reported invalid (instead of aliasing another key). ``margin`` widens the box by
    that many steps on every spatial side, so that kernel offsets within the margin never leave it (no check needed).
    """

    def __init__(self, coords: torch.Tensor, step: int, margin: int = 0):
        self.step, self.margin = step, margin
        u = self._units(coords)  # (M, 4)
        pad = torch.tensor([0, margin, margin, margin], device=coords.device)  # no margin on the batch axis
        self.lo = u.min(0).values - pad  # (4,)
        self.size = u.max(0).values + pad - self.lo + 1  # (4,)
        sizes = [int(s) for s in self.size]
        self.cells = sizes[0] * sizes[1] * sizes[2] * sizes[3]  # number of keys in the box
        if self.cells >= 2**62:
            raise ValueError(f"sparse coordinates span {sizes} (batch, x, y, z) grid cells: too large to hash into "
                             "int64; use a larger voxel size or crop the scene")
        self.mul = torch.tensor([sizes[1] * sizes[2] * sizes[3], sizes[2] * sizes[3], sizes[3], 1],
                                dtype=torch.long, device=coords.device)  # (4,)

    def _units(self, coords: torch.Tensor) -> torch.Tensor:
        if self.step == 1:
            return coords
        u = coords.clone()
        u[:, 1:] = torch.div(u[:, 1:], self.step, rounding_mode="floor")
        return u

    def relative(self, coords: torch.Tensor) -> torch.Tensor:
        """(N, 4) coordinates relative to the box corner, in grid steps."""
        return self._units(coords) - self.lo

    def inside(self, rel: torch.Tensor) -> torch.Tensor:
        return ((rel >= 0) & (rel < self.size)).all(1)

    def keys(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) int64 keys and (N,) bool validity (inside the box)."""
        rel = self.relative(coords)
        return (rel * self.mul).sum(1), self.inside(rel)

    def decode(self, keys: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`keys` for valid keys → (N, 4) coordinates in finest-grid units."""
        out = torch.empty(keys.shape[0], 4, dtype=torch.long, device=keys.device)
        rem = keys
        for a in range(4):
            out[:, a] = torch.div(rem, self.mul[a], rounding_mode="floor")
            rem = rem - out[:, a] * self.mul[a]
        out = out + self.lo
        out[:, 1:] *= self.step
        return out


# ----------------------------------------------------------------------------------------------------------
# 2. Coordinate maps
# ----------------------------------------------------------------------------------------------------------
class CoordMap:
    """One coordinate set at one tensor stride: rows in a fixed order, plus sorted keys (and maybe a table)."""

    MARGIN = 4  # grid steps of slack around the box: offsets up to ±4 (k ≤ 9, dilation 1) need no bounds check
    DENSE_CELLS_PER_SITE = 64  # dense key → row table when the box has ≤ 64 cells per site (≤ 256 B/site, int32) …
    DENSE_MAX_CELLS = 2**27  # … and ≤ 2²⁷ cells (512 MiB) in all

    def __init__(self, coords: torch.Tensor, stride: int):
        self.coords = coords  # (M, 4) int64
        self.stride = stride
        self.grid = Grid(coords, stride, self.MARGIN)
        keys, _ = self.grid.keys(coords)
        self.sorted_keys, self.order = torch.sort(keys)  # (M,), (M,)
        if coords.shape[0] > 1 and bool((self.sorted_keys[1:] == self.sorted_keys[:-1]).any()):
            i = int((self.sorted_keys[1:] == self.sorted_keys[:-1]).nonzero()[0, 0])
            dup = coords[self.order[i]].tolist()
            raise ValueError(f"sparse coordinates must be unique, {dup} occurs more than once: quantize points with "
                             "ssl3d.sparse.sparse_quantize(points, voxel_size), which averages features per voxel")

    def __len__(self) -> int:
        return self.coords.shape[0]

    @functools.cached_property
    def table(self) -> torch.Tensor | None:
        """(cells,) int32 row of every key of the box, −1 for empty cells; None when the box is too sparse."""
        cells = self.grid.cells
        if cells > min(self.DENSE_CELLS_PER_SITE * len(self), self.DENSE_MAX_CELLS):
            return None
        t = torch.full((cells,), -1, dtype=torch.int32, device=self.coords.device)
        t[self.sorted_keys] = self.order.to(torch.int32)
        return t

    def rows(self, keys: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) int64 row of each query key (N,), −1 where absent.

        ``valid`` (N,) masks queries known to lie outside the box (their keys may alias); None = all inside.
        Queries in increasing key order make the binary search cache-friendly.
        """
        if self.table is not None:
            rows = self.table[keys.clamp(0, self.grid.cells - 1)].long()
        else:
            pos = torch.searchsorted(self.sorted_keys, keys).clamp_max_(len(self) - 1)  # (N,)
            rows = torch.where(self.sorted_keys[pos] == keys, self.order[pos], -1)
        if valid is not None:
            rows.masked_fill_(~valid, -1)
        return rows

    def lookup(self, coords: torch.Tensor) -> torch.Tensor:
        """(N,) row index of each (N, 4) coordinate (multiples of the stride), −1 where absent."""
        if bool((torch.remainder(coords[:, 1:], self.stride) != 0).any()):
            raise ValueError(f"coordinates must be multiples of the tensor stride {self.stride}")
        keys, valid = self.grid.keys(coords)
        return self.rows(keys, valid)


# ----------------------------------------------------------------------------------------------------------
# 3. Kernel maps and the coordinate cache
# ----------------------------------------------------------------------------------------------------------
def _sorted_by_out(i: torch.Tensor, o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (i, o) reordered by output row (a no-op when they already are: sites in key order)."""
    if o.numel() < 2 or bool((o[1:] >= o[:-1]).all()):
        return i, o
    perm = torch.argsort(o)
    return i[perm], o[perm]


class KernelMap:
    """Input→output row pairs of a convolution, grouped by kernel offset and sorted by output row.

    ``pairs``: list of (k, in_idx (P_k,), out_idx (P_k,)) int64, one entry per kernel offset k that has pairs; within
    an entry every output row occurs at most once and out_idx increases. ``identity``: the offset index whose pairs
    are all (i, i) — the centre of a submanifold convolution with odd k, kept out of ``pairs`` — or None; such a map
    is its own transpose up to mirroring the offsets (k ↔ K−1−k).
    """

    def __init__(self, pairs, n_in: int, n_out: int, identity: int | None = None):
        self.pairs = [(k, *_sorted_by_out(i, o)) for k, i, o in pairs]
        self.n_in, self.n_out, self.identity = n_in, n_out, identity
        self._blocks: dict[int, list] = {}
        self._neighbours: dict[int, torch.Tensor] = {}

    @functools.cached_property
    def T(self) -> KernelMap:  # noqa: N802 — transpose, as in torch
        """The transposed map (out ↔ in): a transposed convolution, and the input gradient of a convolution, scatter
        along the pairs of the forward map."""
        if self.identity is not None:  # odd-k submanifold: the pairs of −o_k are those of o_k swapped
            last = 2 * self.identity
            t = KernelMap([], self.n_out, self.n_in, self.identity)
            t.pairs = [(last - k, i, o) for k, i, o in reversed(self.pairs)]
        else:
            t = KernelMap([(k, o, i) for k, i, o in self.pairs], self.n_out, self.n_in)
        t.__dict__["T"] = self  # transposing back gives this map, not a copy
        return t

    def blocks(self, rows: int) -> list[list[tuple[int, torch.Tensor, torch.Tensor]]]:
        """The pairs cut into blocks of ``rows`` consecutive output rows: for every block, the (k, in_idx, out_idx)
        slices of each offset whose outputs fall in it (cached per ``rows``)."""
        if rows not in self._blocks:
            edges = list(range(0, self.n_out, rows)) + [self.n_out]  # (n_blocks + 1,)
            blocks = [[] for _ in range(len(edges) - 1)]
            for k, i, o in self.pairs:
                cut = torch.searchsorted(o, torch.tensor(edges, device=o.device)).tolist()
                for j, (a, b) in enumerate(zip(cut[:-1], cut[1:])):
                    if b > a:
                        blocks[j].append((k, i[a:b], o[a:b]))
            self._blocks[rows] = [blk for blk in blocks if blk]
        return self._blocks[rows]

    def neighbours(self, num_offsets: int, device: torch.device) -> torch.Tensor:
        """(n_out, K) int64: the input row paired with output row j at offset k, or n_in (a zero row appended to the
        input) where there is none; the identity offset is the column arange(n_out). Cached per K."""
        if num_offsets not in self._neighbours:
            t = torch.full((self.n_out, num_offsets), self.n_in, dtype=torch.long, device=device)
            for k, i, o in self.pairs:
                t[o, k] = i
            if self.identity is not None:
                t[:, self.identity] = torch.arange(self.n_out, device=t.device)
            self._neighbours[num_offsets] = t
        return self._neighbours[num_offsets]

    def num_pairs(self) -> int:
        """Σ_k P_k, identity included: the number of multiply-adds per channel pair."""
        return sum(i.numel() for _, i, _ in self.pairs) + (self.n_in if self.identity is not None else 0)


class CoordManager:
    """The torch backend's coordinate cache (the analogue of ME's CoordinateManager).

    maps[s]: the coordinate set at tensor stride s (the input's own order at the input stride, sorted (b, x, y, z)
    order for coarser sets made by strided convolutions). kernel_maps[(s_in, s_out, k, dilation)]: pairs shared by
    every convolution with that key and by the transposed convolution that goes back (it uses ``.T``).
    """

    def __init__(self, cmap: CoordMap):
        self.maps: dict[int, CoordMap] = {cmap.stride: cmap}
        self.kernel_maps: dict[tuple[int, int, int, int], KernelMap] = {}

    def coarse(self, s_in: int, s_out: int) -> CoordMap:
        """Coordinates at stride s_out: unique ⌊c / s_out⌋ · s_out of the stride-s_in set (cached)."""
        if s_out not in self.maps:
            c = self.maps[s_in].coords.clone()  # (M, 4)
            c[:, 1:] = torch.div(c[:, 1:], s_out, rounding_mode="floor") * s_out
            grid = Grid(c, s_out)
            keys = torch.unique(grid.keys(c)[0])  # sorted
            self.maps[s_out] = CoordMap(grid.decode(keys), s_out)
        return self.maps[s_out]

    def kernel_map(self, s_in: int, s_out: int, kernel_size: int, dilation: int) -> KernelMap:
        """Pairs (i, j) with coord_in[i] = coord_out[j] + offset_k · s_in for every offset k (cached)."""
        key = (s_in, s_out, kernel_size, dilation)
        if key not in self.kernel_maps:
            self.kernel_maps[key] = self._build(self.maps[s_in], self.maps[s_out], kernel_size, dilation)
        return self.kernel_maps[key]

    @staticmethod
    def _build(src: CoordMap, dst: CoordMap, kernel_size: int, dilation: int) -> KernelMap:
        offsets = kernel_offsets(kernel_size, dilation).to(src.coords.device)  # (K, 3) in input-grid steps
        K, subm = len(offsets), src is dst
        # output sites as keys of the input's grid, visited in increasing key order (cache-friendly look-ups)
        if subm:
            base, out_rows = src.sorted_keys, src.order  # (M,), (M,)
        else:
            base, out_rows = torch.sort((src.grid.relative(dst.coords) * src.grid.mul).sum(1))
        # outputs lie in [min_in − (s_out/s_in − 1), max_in] per axis: offsets within the margin stay in the box
        slack = src.grid.margin - (dst.stride // src.stride - 1)
        checked = int(offsets.max()) > src.grid.margin or int(offsets.min()) < -slack
        rel = src.grid.relative(dst.coords[out_rows])[:, 1:] if checked else None  # (M_out, 3): bounds check
        off_keys = (offsets * src.grid.mul[1:]).sum(1).tolist()  # (K,) key shift of every offset
        centre = K // 2 if subm and kernel_size % 2 else None  # odd k: offsets[K−1−k] = −offsets[k]
        found: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for k in range(K):
            if k == centre:
                continue
            if centre is not None and k > centre:  # mirror of offset K−1−k: the same pairs, swapped
                i, o = found[K - 1 - k]
                found[k] = (o, i)
                continue
            valid = ((rel + offsets[k] >= 0) & (rel + offsets[k] < src.grid.size[1:])).all(1) if checked else None
            rows = src.rows(base + off_keys[k], valid)  # (M_out,) input row or −1
            hit = rows >= 0
            found[k] = (rows[hit], out_rows[hit])  # (P_k,), (P_k,)
        pairs = [(k, i, o) for k, (i, o) in sorted(found.items()) if i.numel()]
        return KernelMap(pairs, len(src), len(dst), identity=centre)


# ----------------------------------------------------------------------------------------------------------
# 4. The convolution: gather → GEMM → scatter, block of rows by block, forward and backward
# ----------------------------------------------------------------------------------------------------------
BLOCK_PAIRS = 48 * 1024  # pairs per block on the CPU (≈ 3 700 output rows of a 3×3×3 submanifold map on surfaces)
MIN_BLOCK_ROWS = 256
DENSE_MAX_ELEMENTS = 1 << 22  # small maps: one gather + one GEMM on the (rows, K·C) neighbour matrix (16 MiB float32)


def _block_rows(t: torch.Tensor, kmap: KernelMap) -> int:
    """Output rows per block: about ``BLOCK_PAIRS`` pairs on the CPU (see the module docstring); all rows — one
    block, one kernel launch per offset and op — on GPUs."""
    if t.device.type != "cpu":
        return max(kmap.n_out, 1)
    return max(MIN_BLOCK_ROWS, BLOCK_PAIRS * kmap.n_out // max(kmap.num_pairs(), 1))


def _longest(blocks) -> int:
    """Rows of the longest (block, offset) slice: the size of the scratch buffers."""
    return max((i.numel() for blk in blocks for _, i, _ in blk), default=0)


def _run_blocks(blocks, scratch, work, device: torch.device) -> list:
    """Call ``work(block, s)`` for every block, ``s = scratch()`` being one worker's buffers; return the ``s``'s.

    On a CPU with ``torch.get_num_threads() = n > 1`` the blocks are split into n contiguous runs, one per Python
    thread, and every thread runs its ops single-threaded. A block writes only its own rows, so the threads never
    touch the same row; the split is fixed, so results do not depend on timing. This replaces one OpenMP fork/join
    per op — thousands per convolution — by one per call: on cores shared with other jobs every OpenMP barrier waits
    for a descheduled thread (2 OpenMP threads were 13× slower than 1 there; 2 block threads are not).
    """
    n = min(torch.get_num_threads(), len(blocks)) if device.type == "cpu" else 1
    if n <= 1:
        s = scratch()
        for blk in blocks:
            work(blk, s)
        return [s]
    runs = [blocks[w * len(blocks) // n:(w + 1) * len(blocks) // n] for w in range(n)]
    results, errors = [None] * n, []

    def worker(w: int) -> None:
        try:
            torch.set_num_threads(1)  # OpenMP/MKL thread counts are per thread: this one's ops are single-threaded
            with torch.no_grad():  # grad mode is per thread too (the caller runs inside an autograd.Function)
                results[w] = scratch()
                for blk in runs[w]:
                    work(blk, results[w])
        except BaseException as e:  # re-raised in the caller
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,), name=f"ssl3d-sparse-{w}") for w in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    torch.set_num_threads(torch.get_num_threads())  # the workers also lowered torch's default for new threads
    if errors:
        raise errors[0]
    return results


def _forward(feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """out (M_out, C_out) = Σ_k scatter_{out_idx}(feats[in_idx] @ W[k]), block of output rows by block."""
    c_in, c_out = kernel.shape[1:]
    w = kernel.unbind(0)  # K × (C_in, C_out)
    if kmap.identity is not None:  # submanifold centre: every site with itself, a dense GEMM that initialises out
        out = feats @ w[kmap.identity]
    else:
        out = feats.new_zeros(kmap.n_out, c_out)
    blocks = kmap.blocks(_block_rows(feats, kmap))
    rows = _longest(blocks)

    def scratch():  # gathered inputs, GEMM products: reused by every slice
        return feats.new_empty(rows, c_in), feats.new_empty(rows, c_out)

    def work(blk, buffers):
        gathered, product = buffers
        for k, i, o in blk:
            n = i.numel()
            g = torch.index_select(feats, 0, i, out=gathered[:n])  # (n, C_in)
            out.index_add_(0, o, torch.mm(g, w[k], out=product[:n]))  # (n, C_out) scattered to the output rows

    _run_blocks(blocks, scratch, work, feats.device)
    return out


def _backward(grad_out: torch.Tensor, feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap,
              need_x: bool, need_w: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """∂x[i] += ∂out[j] · W[k]ᵀ and ∂W[k] += x[i]ᵀ · ∂out[j] over the pairs (i, j) of every offset k.

    Walks the transposed map (sorted by input row), so ∂x is accumulated block of input rows by block, as the
    forward pass accumulates out; ∂out[j] is gathered once per pair for both gradients. ∂W is summed per worker.
    """
    c_in, c_out = kernel.shape[1:]
    c, wt = kmap.identity, kernel.transpose(1, 2).unbind(0)  # K × (C_out, C_in)
    gx = None
    if need_x:
        gx = grad_out @ wt[c] if c is not None else torch.zeros_like(feats)  # (M_in, C_in)
    t = kmap.T  # pairs (conv output j, conv input i), sorted by i
    blocks = t.blocks(_block_rows(feats, t))
    rows = _longest(blocks)

    def scratch():  # ∂out rows; x rows, then ∂x contributions; this worker's ∂W
        return feats.new_empty(rows, c_out), feats.new_empty(rows, c_in), torch.zeros_like(kernel) if need_w else None

    def work(blk, buffers):
        g_buf, x_buf, gw = buffers
        for k, j, i in blk:
            n = i.numel()
            g = torch.index_select(grad_out, 0, j, out=g_buf[:n])  # (n, C_out)
            if need_w:
                x = torch.index_select(feats, 0, i, out=x_buf[:n])  # (n, C_in)
                gw[k].addmm_(x.t(), g)
            if need_x:
                gx.index_add_(0, i, torch.mm(g, wt[k], out=x_buf[:n]))  # (n, C_in) scattered to the input rows

    parts = [gw for _, _, gw in _run_blocks(blocks, scratch, work, feats.device)]
    gw = None
    if need_w:
        gw = parts[0]  # (K, C_in, C_out)
        for p in parts[1:]:
            gw += p
        if c is not None:
            torch.mm(feats.t(), grad_out, out=gw[c])
    return gx, gw


def _dense(kernel: torch.Tensor, kmap: KernelMap) -> bool:
    """Small maps take the neighbour-matrix path: both (rows, K·C) matrices have at most ``DENSE_MAX_ELEMENTS``."""
    k, c_in, c_out = kernel.shape
    return k * max(kmap.n_out * c_in, kmap.n_in * c_out) <= DENSE_MAX_ELEMENTS


def _neighbour_matrix(x: torch.Tensor, kmap: KernelMap, num_offsets: int) -> torch.Tensor:
    """(n_out, K·C): row j holds x at the K neighbours of output j, zeros where a neighbour is missing."""
    padded = torch.cat([x, x.new_zeros(1, x.shape[1])])  # (n_in + 1, C): row n_in is the missing neighbour
    return padded.index_select(0, kmap.neighbours(num_offsets, x.device).view(-1)).view(kmap.n_out, -1)


def _forward_dense(feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """out (M_out, C_out) = [x at the K neighbours] (M_out, K·C_in) @ W (K·C_in, C_out): one gather, one GEMM."""
    k, c_in, c_out = kernel.shape
    return _neighbour_matrix(feats, kmap, k) @ kernel.reshape(k * c_in, c_out)


def _backward_dense(grad_out, feats, kernel, kmap: KernelMap, need_x: bool, need_w: bool):
    """∂W = [x at the neighbours]ᵀ @ ∂out; ∂x = [∂out at the neighbours of the transposed map] @ Wᵀ (K·C_out, C_in)."""
    k, c_in, c_out = kernel.shape
    gx = gw = None
    if need_w:
        gw = (_neighbour_matrix(feats, kmap, k).t() @ grad_out).view(k, c_in, c_out)
    if need_x:
        gx = _neighbour_matrix(grad_out, kmap.T, k) @ kernel.transpose(1, 2).reshape(k * c_out, c_in)
    return gx, gw


class GatherMatmulScatter(torch.autograd.Function):
    """out[j] = Σ_k Σ_{(i, j) ∈ pairs_k} x[i] · W[k]: (M_in, C_in), (K, C_in, C_out) → (M_out, C_out).

    Backward: ∂x[i] += ∂out[j] · W[k]ᵀ, ∂W[k] = Σ x[i]ᵀ ∂out[j] over the same pairs. Only x, W and the (cached)
    kernel map are kept for backward — no per-offset gathered copies.
    """

    @staticmethod
    def forward(ctx, feats, kernel, kmap: KernelMap):
        ctx.save_for_backward(feats, kernel)
        ctx.kmap, ctx.dense = kmap, _dense(kernel, kmap)
        return (_forward_dense if ctx.dense else _forward)(feats, kernel, kmap)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        feats, kernel = ctx.saved_tensors
        backward = _backward_dense if ctx.dense else _backward
        gx, gw = backward(grad_out.contiguous(), feats, kernel, ctx.kmap, *ctx.needs_input_grad[:2])
        return gx, gw, None


# ----------------------------------------------------------------------------------------------------------
# The backend
# ----------------------------------------------------------------------------------------------------------
class TorchSites(NamedTuple):
    """A coordinate set of the torch backend: the coordinate cache and the tensor stride of the set in it."""

    manager: CoordManager
    stride: int


class TorchBackend:
    """:class:`~ssl3d.sparse.backend.SparseBackend` in plain PyTorch."""

    name = "torch"

    def new(self, coords: torch.Tensor, stride: int) -> TorchSites:
        return TorchSites(CoordManager(CoordMap(coords, stride)), stride)

    def coords(self, sites: TorchSites) -> torch.Tensor:
        return sites.manager.maps[sites.stride].coords

    def same_sites(self, a: TorchSites, b: TorchSites) -> bool:
        return a.manager is b.manager and a.stride == b.stride

    def conv(self, feats, sites, kernel, kernel_size, stride, dilation):
        mgr, s_in = sites
        s_out = s_in * stride
        if stride > 1:
            mgr.coarse(s_in, s_out)
        out = GatherMatmulScatter.apply(feats, kernel, mgr.kernel_map(s_in, s_out, kernel_size, dilation))
        return out, TorchSites(mgr, s_out)

    def conv_transpose(self, feats, sites, kernel, kernel_size, stride, dilation):
        mgr, s_in = sites
        s_out = s_in // stride
        if s_in % stride:
            raise ValueError(f"ConvTranspose3d(stride={stride}) cannot upsample a stride-{s_in} tensor")
        if s_out not in mgr.maps:
            raise ValueError(
                f"ConvTranspose3d(stride={stride}) on a stride-{s_in} tensor needs the stride-{s_out} coordinates in "
                f"the tensor's coordinate cache (cached: strides {sorted(mgr.maps)}); upsample only tensors that were "
                "produced by strided Conv3d layers from a finer tensor")
        kmap = mgr.kernel_map(s_out, s_in, kernel_size, dilation).T
        return GatherMatmulScatter.apply(feats, kernel, kmap), TorchSites(mgr, s_out)
