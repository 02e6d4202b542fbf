"""Sparse 3D tensors and convolutions, written once, run on MinkowskiEngine or on plain PyTorch.

A :class:`SparseTensor` is a set of active voxels ("sites") with features:

    coords  (M, 4) int64   (batch, x, y, z) in units of the finest grid; a stride-s tensor has x, y, z that are
                           multiples of s (MinkowskiEngine's convention)
    feats   (M, C) float
    stride  int            the tensor stride s

The modules below (:class:`Conv3d`, :class:`ConvTranspose3d`, :class:`BatchNorm`, :class:`ReLU`, :func:`cat`, …) are
written against that interface and dispatch on ``x.backend``:

* ``"minkowski"`` — MinkowskiEngine 0.5.4 (``MinkowskiConvolutionFunction`` / ``…TransposeFunction`` with our own
  kernel parameter, so nothing about the weights depends on the backend).
* ``"torch"`` — plain PyTorch: coordinates are packed into one int64 key, keys are sorted, kernel maps are found
  with ``torch.searchsorted``, and each convolution is, for every kernel offset, gather → matmul → ``index_add_``.

Both backends use ONE weight layout: a convolution kernel is a parameter of shape ``(K, C_in, C_out)``, K = k³, whose
offsets are ordered with x varying fastest: offset index ``k = (iz·k + iy)·k + ix`` (exactly MinkowskiEngine's order,
checked against ME in ``tests/test_sparse.py``). A ``state_dict`` saved under one backend loads under the other.

Kernel offsets (MinkowskiEngine's hyper-cube region): per axis ``r ∈ {−(k−1)/2, …, (k−1)/2}`` for odd k and
``r ∈ {0, …, k−1}`` for even k, scaled by ``dilation × input tensor stride``.

Choose the backend with :func:`set_backend` or the environment variable ``SSL3D_SPARSE_BACKEND``; the default is
``"minkowski"`` when MinkowskiEngine imports, else ``"torch"``. A tensor keeps the backend it was created with.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssl3d.geometry import Voxels, as_tensor, voxelize

__all__ = [
    "BACKENDS",
    "set_backend",
    "get_backend",
    "minkowski_available",
    "kernel_offsets",
    "SparseTensor",
    "Conv3d",
    "ConvTranspose3d",
    "BatchNorm",
    "ReLU",
    "cat",
    "global_avg_pool",
    "global_max_pool",
    "sparse_quantize",
    "batch_sparse",
    "unbatch",
    "voxels_to_points",
]

BACKENDS = ("minkowski", "torch")
ENV_VAR = "SSL3D_SPARSE_BACKEND"

# ----------------------------------------------------------------------------------------------------------
# Backend selection
# ----------------------------------------------------------------------------------------------------------
_backend: str | None = None  # set by set_backend(); None = environment variable, then auto
_me_module = None
_me_error: BaseException | None = None

_ME_MISSING = (
    "the 'minkowski' sparse backend needs MinkowskiEngine, which does not import here ({err}). Build it for the CPU "
    "with `bash lib/env/build_minkowski.sh` (or bootstrap with SSL3D_MINKOWSKI=1), or use the pure-PyTorch backend: "
    "ssl3d.sparse.set_backend('torch') / SSL3D_SPARSE_BACKEND=torch"
)


def _import_me():
    """Import MinkowskiEngine once (silencing its CPU-only warning); None when it does not import."""
    global _me_module, _me_error
    if _me_module is None and _me_error is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import MinkowskiEngine as ME
            _me_module = ME
        except Exception as e:  # ImportError, or a broken build (undefined symbol, …)
            _me_error = e
    return _me_module


def _require_me():
    ME = _import_me()
    if ME is None:
        raise ImportError(_ME_MISSING.format(err=f"{type(_me_error).__name__}: {_me_error}"))
    return ME


def minkowski_available() -> bool:
    """True when MinkowskiEngine imports in this environment."""
    return _import_me() is not None


def _check_backend_name(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"unknown sparse backend {name!r}; choose one of {BACKENDS}")
    name = name.lower()
    if name == "minkowski":
        _require_me()
    return name


def set_backend(name: str | None) -> None:
    """Select the backend new tensors use: ``"minkowski"`` or ``"torch"`` (``None``: back to env var / auto)."""
    global _backend
    _backend = None if name is None else _check_backend_name(name)


def get_backend() -> str:
    """The backend new tensors use: :func:`set_backend`, else ``$SSL3D_SPARSE_BACKEND``, else ``"minkowski"`` when
    MinkowskiEngine imports, else ``"torch"``."""
    if _backend is not None:
        return _backend
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return _check_backend_name(env)
    return "minkowski" if minkowski_available() else "torch"


# ----------------------------------------------------------------------------------------------------------
# Kernel offsets (shared by both backends)
# ----------------------------------------------------------------------------------------------------------
def kernel_offsets(kernel_size: int, dilation: int = 1) -> torch.Tensor:
    """(k³, 3) int64 offsets (dx, dy, dz) of a cubic kernel in MinkowskiEngine's order: x varies fastest.

    Row ``(iz·k + iy)·k + ix`` holds ``(r[ix], r[iy], r[iz]) · dilation`` with ``r = −(k−1)/2 … (k−1)/2`` for odd k
    and ``r = 0 … k−1`` for even k. Multiply by the input tensor stride to get offsets in finest-grid units.
    """
    start = -((kernel_size - 1) // 2) if kernel_size % 2 else 0
    r = torch.arange(kernel_size, dtype=torch.long) + start
    zz, yy, xx = torch.meshgrid(r, r, r, indexing="ij")  # flattening (z, y, x) row-major → x fastest
    return torch.stack([xx, yy, zz], -1).reshape(-1, 3) * dilation


# ----------------------------------------------------------------------------------------------------------
# torch backend: coordinate hashing, coordinate cache, kernel maps
# ----------------------------------------------------------------------------------------------------------
class _Grid:
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
        if sizes[0] * sizes[1] * sizes[2] * sizes[3] >= 2**62:
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


class _CoordMap:
    """One coordinate set at one tensor stride: rows in a fixed order, plus sorted keys for look-ups."""

    MARGIN = 4  # grid steps of slack around the box: offsets up to ±4 (k ≤ 9, dilation 1) need no bounds check

    def __init__(self, coords: torch.Tensor, stride: int):
        self.coords = coords  # (M, 4) int64
        self.stride = stride
        self.grid = _Grid(coords, stride, self.MARGIN)
        keys, _ = self.grid.keys(coords)
        self.sorted_keys, self.order = torch.sort(keys)  # (M,), (M,)
        if coords.shape[0] > 1 and bool((self.sorted_keys[1:] == self.sorted_keys[:-1]).any()):
            i = int((self.sorted_keys[1:] == self.sorted_keys[:-1]).nonzero()[0, 0])
            dup = coords[self.order[i]].tolist()
            raise ValueError(f"sparse coordinates must be unique, {dup} occurs more than once: quantize points with "
                             "ssl3d.sparse.sparse_quantize(points, voxel_size), which averages features per voxel")

    def __len__(self) -> int:
        return self.coords.shape[0]

    def find(self, keys: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Matches of the query keys (N,): (query positions (P,), row indices (P,)) of the keys that are present.

        ``valid`` (N,) masks queries known to lie outside the box (their keys may alias); None = all inside.
        """
        pos = torch.searchsorted(self.sorted_keys, keys).clamp_max_(len(self) - 1)  # (N,)
        hit = self.sorted_keys[pos] == keys
        if valid is not None:
            hit &= valid
        q = hit.nonzero().squeeze(1)  # (P,)
        return q, self.order[pos[q]]

    def lookup(self, coords: torch.Tensor) -> torch.Tensor:
        """(N,) row index of each (N, 4) coordinate (multiples of the stride), −1 where absent."""
        if bool((torch.remainder(coords[:, 1:], self.stride) != 0).any()):
            raise ValueError(f"coordinates must be multiples of the tensor stride {self.stride}")
        keys, valid = self.grid.keys(coords)
        q, rows = self.find(keys, valid)
        return torch.full_like(keys, -1).index_put_((q,), rows)


class _KernelMap:
    """Input→output row pairs of a convolution, one entry per kernel offset that has pairs.

    ``pairs``: list of (k, in_idx (P_k,), out_idx (P_k,)); in_idx is None for the centre offset of a
    submanifold convolution (the identity map: out = in, all rows).
    """

    def __init__(self, pairs, n_in: int, n_out: int):
        self.pairs = pairs
        self.n_in, self.n_out = n_in, n_out

    @functools.cached_property
    def T(self) -> _KernelMap:
        """The transposed map (out ↔ in): a transposed convolution scatters along the pairs of the strided one."""
        pairs = [(k, o, i) for k, i, o in self.pairs]
        return _KernelMap(pairs, self.n_out, self.n_in)

    def num_pairs(self) -> int:
        return sum(self.n_in if i is None else i.numel() for _, i, _ in self.pairs)


class _CoordManager:
    """The torch backend's coordinate cache (the analogue of ME's CoordinateManager).

    maps[s]: the coordinate set at tensor stride s (the input's own order at the input stride, sorted (b, x, y, z)
    order for coarser sets made by strided convolutions). kernel_maps[(s_in, s_out, k, dilation)]: pairs shared by a
    convolution and by the transposed convolution that goes back (it uses ``.T``).
    """

    def __init__(self, cmap: _CoordMap):
        self.maps: dict[int, _CoordMap] = {cmap.stride: cmap}
        self.kernel_maps: dict[tuple[int, int, int, int], _KernelMap] = {}

    def coarse(self, s_in: int, s_out: int) -> _CoordMap:
        """Coordinates at stride s_out: unique ⌊c / s_out⌋ · s_out of the stride-s_in set (cached)."""
        if s_out not in self.maps:
            c = self.maps[s_in].coords.clone()  # (M, 4)
            c[:, 1:] = torch.div(c[:, 1:], s_out, rounding_mode="floor") * s_out
            grid = _Grid(c, s_out)
            keys = torch.unique(grid.keys(c)[0])  # sorted
            self.maps[s_out] = _CoordMap(grid.decode(keys), s_out)
        return self.maps[s_out]

    def kernel_map(self, s_in: int, s_out: int, kernel_size: int, dilation: int) -> _KernelMap:
        """Pairs (i, j) with coord_in[i] = coord_out[j] + offset_k · s_in for every offset k (cached)."""
        key = (s_in, s_out, kernel_size, dilation)
        if key not in self.kernel_maps:
            src, dst = self.maps[s_in], self.maps[s_out]
            offsets = kernel_offsets(kernel_size, dilation)  # (K, 3) in input-grid steps
            rel = src.grid.relative(dst.coords)  # (M_out, 4) output coordinates in input-grid steps
            base = (rel * src.grid.mul).sum(1)  # (M_out,) their keys in the input's hash
            # outputs lie in [min_in − (s_out/s_in − 1), max_in] per axis: offsets within the margin stay in the box
            slack = src.grid.margin - (s_out // s_in - 1)
            checked = int(offsets.max()) > src.grid.margin or int(offsets.min()) < -slack
            pairs = []
            for k, off in enumerate(offsets.to(rel.device)):
                if src is dst and not bool(off.any()):
                    pairs.append((k, None, None))  # submanifold centre: identity
                    continue
                valid = ((rel[:, 1:] + off >= 0) & (rel[:, 1:] + off < src.grid.size[1:])).all(1) if checked else None
                out_idx, in_idx = src.find(base + int((off * src.grid.mul[1:]).sum()), valid)  # (P_k,), (P_k,)
                if out_idx.numel():
                    pairs.append((k, in_idx, out_idx))
            self.kernel_maps[key] = _KernelMap(pairs, len(src), len(dst))
        return self.kernel_maps[key]


class _GatherMatmulScatter(torch.autograd.Function):
    """out[j] = Σ_k Σ_{(i, j) ∈ pairs_k} x[i] · W[k]  — for every offset: gather → matmul → index_add_.

    Backward: ∂x[i] += ∂out[j] · W[k]ᵀ, ∂W[k] = Σ x[i]ᵀ ∂out[j] over the same pairs. Only x, W and the (cached)
    kernel map are kept for backward — no per-offset gathered copies.
    """

    @staticmethod
    def forward(ctx, feats, kernel, kmap: _KernelMap):
        out = feats.new_zeros(kmap.n_out, kernel.shape[2])  # (M_out, C_out)
        for k, i, o in kmap.pairs:
            if i is None:
                out += feats @ kernel[k]
            else:
                out.index_add_(0, o, feats.index_select(0, i) @ kernel[k])  # (P_k, C_in) @ (C_in, C_out)
        ctx.save_for_backward(feats, kernel)
        ctx.kmap = kmap
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        feats, kernel = ctx.saved_tensors
        grad_out = grad_out.contiguous()  # (M_out, C_out)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = torch.zeros_like(feats) if need_x else None  # (M_in, C_in)
        gw = torch.zeros_like(kernel) if need_w else None  # (K, C_in, C_out)
        for k, i, o in ctx.kmap.pairs:
            g = grad_out if o is None else grad_out.index_select(0, o)  # (P_k, C_out)
            if need_w:
                x = feats if i is None else feats.index_select(0, i)  # (P_k, C_in)
                gw[k] = x.t() @ g
            if need_x:
                if i is None:
                    gx += g @ kernel[k].t()
                else:
                    gx.index_add_(0, i, g @ kernel[k].t())
        return gx, gw, None


class _TorchOps:
    """Convolutions for the torch backend."""

    name = "torch"

    @staticmethod
    def new(cmap: _CoordMap, feats: torch.Tensor):
        return _CoordManager(cmap)

    @staticmethod
    def coords(x: SparseTensor) -> torch.Tensor:
        return x._handle.maps[x.stride].coords

    @staticmethod
    def same_sites(a: SparseTensor, b: SparseTensor) -> bool:
        return a._handle is b._handle and a.stride == b.stride

    @staticmethod
    def replace(x: SparseTensor, feats: torch.Tensor) -> SparseTensor:
        return SparseTensor._wrap(feats, x.stride, "torch", x._handle)

    @staticmethod
    def conv(x: SparseTensor, kernel: torch.Tensor, kernel_size: int, stride: int, dilation: int) -> SparseTensor:
        mgr, s_in = x._handle, x.stride
        s_out = s_in * stride
        if stride > 1:
            mgr.coarse(s_in, s_out)
        if kernel_size == 1 and stride == 1:
            feats = x.feats @ kernel[0]  # 1×1×1 submanifold = per-site linear map
        else:
            feats = _GatherMatmulScatter.apply(x.feats, kernel, mgr.kernel_map(s_in, s_out, kernel_size, dilation))
        return SparseTensor._wrap(feats, s_out, "torch", mgr)

    @staticmethod
    def conv_transpose(x: SparseTensor, kernel: torch.Tensor, kernel_size: int, stride: int,
                       dilation: int) -> SparseTensor:
        mgr, s_in = x._handle, x.stride
        s_out = s_in // stride
        if s_in % stride:
            raise ValueError(f"ConvTranspose3d(stride={stride}) cannot upsample a stride-{s_in} tensor")
        if s_out not in mgr.maps:
            raise ValueError(
                f"ConvTranspose3d(stride={stride}) on a stride-{s_in} tensor needs the stride-{s_out} coordinates in "
                f"the tensor's coordinate cache (cached: strides {sorted(mgr.maps)}); upsample only tensors that were "
                "produced by strided Conv3d layers from a finer tensor")
        kmap = mgr.kernel_map(s_out, s_in, kernel_size, dilation).T
        feats = _GatherMatmulScatter.apply(x.feats, kernel, kmap)
        return SparseTensor._wrap(feats, s_out, "torch", mgr)


# ----------------------------------------------------------------------------------------------------------
# minkowski backend: delegate to MinkowskiEngine's functions with our own kernel parameter
# ----------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _me_kernel_generator(kernel_size: int, stride: int, dilation: int):
    ME = _require_me()
    return ME.KernelGenerator(kernel_size=kernel_size, stride=stride, dilation=dilation, dimension=3)


class _MinkowskiOps:
    """Convolutions for the minkowski backend: the handle of a tensor is its ``ME.SparseTensor``."""

    name = "minkowski"

    @staticmethod
    def new(cmap: _CoordMap, feats: torch.Tensor):
        ME = _require_me()
        if feats.device.type != "cpu" and not torch.cuda.is_available():
            raise ValueError("MinkowskiEngine here is a CPU build: keep the features on the CPU")
        # ME's default coordinate manager calls omp_set_num_threads(min(cpu_count, 20)), which silently overrides
        # torch.set_num_threads for the whole process (ME runs on torch's OpenMP runtime); keep the user's setting.
        manager = ME.CoordinateManager(D=3, num_threads=torch.get_num_threads())
        return ME.SparseTensor(feats, coordinates=cmap.coords.to(torch.int32), tensor_stride=cmap.stride,
                               coordinate_manager=manager, device=str(feats.device))

    @staticmethod
    def coords(x: SparseTensor) -> torch.Tensor:
        return x._handle.C.long()

    @staticmethod
    def same_sites(a: SparseTensor, b: SparseTensor) -> bool:
        ha, hb = a._handle, b._handle
        return ha.coordinate_manager is hb.coordinate_manager and ha.coordinate_map_key == hb.coordinate_map_key

    @staticmethod
    def replace(x: SparseTensor, feats: torch.Tensor) -> SparseTensor:
        ME = _require_me()
        h = ME.SparseTensor(feats, coordinate_map_key=x._handle.coordinate_map_key,
                            coordinate_manager=x._handle.coordinate_manager)
        return SparseTensor._wrap(feats, x.stride, "minkowski", h)

    @staticmethod
    def _apply(fn, x: SparseTensor, kernel, kernel_size, stride, dilation) -> SparseTensor:
        ME = _require_me()
        from MinkowskiEngineBackend._C import ConvolutionMode  # top-level package: importing it shadows nothing

        h = x._handle
        kg = _me_kernel_generator(kernel_size, stride, dilation)
        out_key = ME.CoordinateMapKey(h.coordinate_map_key.get_coordinate_size())  # empty: ME fills it in
        feats = fn.apply(x.feats, kernel, kg, ConvolutionMode.DEFAULT, h.coordinate_map_key, out_key, h._manager)
        out = ME.SparseTensor(feats, coordinate_map_key=out_key, coordinate_manager=h._manager)
        return SparseTensor._wrap(feats, int(out.tensor_stride[0]), "minkowski", out)

    @classmethod
    def conv(cls, x, kernel, kernel_size, stride, dilation) -> SparseTensor:
        if kernel_size == 1 and stride == 1:  # ME's own use_mm path
            return cls.replace(x, x.feats @ kernel[0])
        # ME's names, not `from MinkowskiEngine.MinkowskiConvolution import …`: ME imports its modules as top-level
        # ones, and importing the submodule path would overwrite the class ME.MinkowskiConvolution with a module.
        return cls._apply(_require_me().MinkowskiConvolutionFunction, x, kernel, kernel_size, stride, dilation)

    @classmethod
    def conv_transpose(cls, x, kernel, kernel_size, stride, dilation) -> SparseTensor:
        if x.stride % stride:
            raise ValueError(f"ConvTranspose3d(stride={stride}) cannot upsample a stride-{x.stride} tensor")
        s_out = x.stride // stride
        if not x._handle.coordinate_manager._manager.get_coordinate_map_keys([s_out] * 3):
            # ME would invent new fine sites (coarse + offsets); the torch backend cannot, so neither do we
            raise ValueError(
                f"ConvTranspose3d(stride={stride}) on a stride-{x.stride} tensor needs the stride-{s_out} coordinates "
                "in the tensor's coordinate cache (ME coordinate manager); upsample only tensors that were produced "
                "by strided Conv3d layers from a finer tensor")
        fn = _require_me().MinkowskiConvolutionTransposeFunction
        return cls._apply(fn, x, kernel, kernel_size, stride, dilation)


_OPS = {"torch": _TorchOps, "minkowski": _MinkowskiOps}


# ----------------------------------------------------------------------------------------------------------
# SparseTensor
# ----------------------------------------------------------------------------------------------------------
def _as_int_coords(coords, name: str = "coords") -> torch.Tensor:
    c = as_tensor(coords, None)
    if c.dtype.is_floating_point or c.dtype == torch.bool:
        raise TypeError(f"{name} must be integer voxel indices, got {c.dtype}: quantize points first with "
                        "ssl3d.sparse.sparse_quantize(points, voxel_size)")
    return c.long()


def _check_feats(feats, m: int, what: str = "feats") -> torch.Tensor:
    f = as_tensor(feats, None)
    if not f.dtype.is_floating_point:
        f = f.float()
    if f.dim() != 2:
        raise ValueError(f"{what} must be a (M, C) matrix, got shape {tuple(f.shape)}")
    if f.shape[0] != m:
        raise ValueError(f"{what} has {f.shape[0]} rows but there are {m} coordinates: pass one feature row per "
                         "voxel (e.g. Voxels.feats from sparse_quantize)")
    if not bool(torch.isfinite(f).all()):
        raise ValueError(f"{what} contains NaN or Inf values: clean the input features (e.g. drop invalid colours)")
    return f


class SparseTensor:
    """Active sites of a (batched) 3D grid with features — the one tensor type of :mod:`ssl3d.sparse`.

    Args:
        coords: (M, 4) integer (batch, x, y, z) in finest-grid units; x, y, z multiples of ``stride``; unique rows.
        feats: (M, C) float features, finite.
        stride: tensor stride s (an int ≥ 1).
        backend: ``"minkowski"`` or ``"torch"``; default :func:`get_backend`.

    Tensors produced by the layers share a coordinate cache with their input (ME's coordinate manager, or the torch
    backend's own), which is how a transposed convolution finds the finer sites to return to. Rows of a layer output
    at the input's stride are in the input's row order (both backends); rows of coarser tensors are in a
    backend-specific order — compare them with :meth:`features_at`.
    """

    __slots__ = ("feats", "stride", "backend", "_handle", "_coords")

    def __init__(self, coords, feats, stride: int = 1, backend: str | None = None):
        backend = get_backend() if backend is None else _check_backend_name(backend)
        c = _as_int_coords(coords)
        if c.dim() != 2 or c.shape[1] != 4:
            raise ValueError(f"coords must have shape (M, 4) = (batch, x, y, z), got {tuple(c.shape)}; "
                             "use batch_sparse([(coords, feats), …]) to add the batch column")
        if c.shape[0] == 0:
            raise ValueError("sparse tensor is empty (0 voxels): check the crop / voxel size that produced it")
        f = _check_feats(feats, c.shape[0])
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a positive int, got {stride!r}")
        if bool((c[:, 0] < 0).any()):
            raise ValueError("batch indices (coords[:, 0]) must be ≥ 0")
        if stride > 1 and bool((torch.remainder(c[:, 1:], stride) != 0).any()):
            raise ValueError(f"a stride-{stride} tensor needs x, y, z that are multiples of {stride}")
        c = c.to(f.device)
        cmap = _CoordMap(c, stride)  # uniqueness check (one sort), identical for both backends
        self.feats, self.stride, self.backend = f, stride, backend
        self._handle = _OPS[backend].new(cmap, f)
        self._coords = c

    @classmethod
    def _wrap(cls, feats: torch.Tensor, stride: int, backend: str, handle) -> SparseTensor:
        """Internal: a tensor on sites already known to the backend (no validation)."""
        t = cls.__new__(cls)
        t.feats, t.stride, t.backend, t._handle, t._coords = feats, stride, backend, handle, None
        return t

    # --- properties -------------------------------------------------------------------------------------
    @property
    def coords(self) -> torch.Tensor:
        """(M, 4) int64 (batch, x, y, z), finest-grid units."""
        if self._coords is None:
            self._coords = _OPS[self.backend].coords(self)
        return self._coords

    @property
    def C(self) -> torch.Tensor:  # noqa: N802 — MinkowskiEngine's name
        return self.coords

    @property
    def F(self) -> torch.Tensor:  # noqa: N802 — MinkowskiEngine's name
        return self.feats

    @property
    def num_channels(self) -> int:
        return self.feats.shape[1]

    @property
    def batch_size(self) -> int:
        return int(self.coords[:, 0].max()) + 1

    @property
    def device(self) -> torch.device:
        return self.feats.device

    def __len__(self) -> int:
        return self.feats.shape[0]

    def __repr__(self) -> str:
        return (f"SparseTensor(sites={len(self)}, channels={self.num_channels}, stride={self.stride}, "
                f"backend={self.backend!r}, dtype={self.feats.dtype})")

    # --- same-site operations ---------------------------------------------------------------------------
    def same_sites(self, other: SparseTensor) -> bool:
        """True when ``other`` lives on exactly these sites, in the same row order (same cache and stride)."""
        return isinstance(other, SparseTensor) and self.backend == other.backend and \
            _OPS[self.backend].same_sites(self, other)

    def _require_same(self, other: SparseTensor, op: str) -> None:
        if not self.same_sites(other):
            what = other if isinstance(other, SparseTensor) else type(other).__name__
            raise ValueError(f"{op} needs two sparse tensors on identical sites (same coordinate cache and stride), "
                             f"got {self!r} and {what!r}: combine tensors that come from the same input, e.g. a "
                             "U-Net skip and the matching transposed-convolution output")

    def replace(self, feats: torch.Tensor) -> SparseTensor:
        """The same sites with new features (M, C')."""
        if feats.dim() != 2 or feats.shape[0] != len(self):
            raise ValueError(f"replacement features must be ({len(self)}, C'), got {tuple(feats.shape)}")
        return _OPS[self.backend].replace(self, feats)

    def __add__(self, other: SparseTensor) -> SparseTensor:
        """Feature sum on identical sites (residual connections)."""
        self._require_same(other, "addition")
        return self.replace(self.feats + other.feats)

    def features_at(self, coords) -> torch.Tensor:
        """Features (N, C) of the sites ``coords`` (N, 4); raises if one is not a site of this tensor."""
        q = _as_int_coords(coords).to(self.feats.device)
        idx = _CoordMap(self.coords, self.stride).lookup(q)
        if bool((idx < 0).any()):
            raise KeyError(f"{int((idx < 0).sum())} of the {len(q)} requested coordinates are not sites of {self!r}, "
                           f"e.g. {q[(idx < 0).nonzero()[0, 0]].tolist()}")
        return self.feats[idx]


# ----------------------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------------------
def _check_input(x, channels: int, who: str) -> None:
    if not isinstance(x, SparseTensor):
        raise TypeError(f"{who} expects an ssl3d.sparse.SparseTensor, got {type(x).__name__}: build one with "
                        "SparseTensor(coords, feats) or batch_sparse([...])")
    if x.num_channels != channels:
        raise ValueError(f"{who} expects {channels} input channels but the tensor has {x.num_channels}: build the "
                         f"layer/model with in_channels={x.num_channels} or fix the input features")


def _check_int(name: str, v, lo: int = 1) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{name} must be an int ≥ {lo}, got {v!r} (only cubic kernels/strides are supported)")
    return v


class _ConvBase(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, dilation, bias, fan_channels):
        super().__init__()
        self.in_channels = _check_int("in_channels", in_channels)
        self.out_channels = _check_int("out_channels", out_channels)
        self.kernel_size = _check_int("kernel_size", kernel_size)
        self.stride = _check_int("stride", stride)
        self.dilation = _check_int("dilation", dilation)
        self.kernel = nn.Parameter(torch.empty(kernel_size**3, in_channels, out_channels))  # (K, C_in, C_out)
        self.bias = nn.Parameter(torch.empty(1, out_channels)) if bias else None  # (1, C_out), ME's shape
        self._fan = fan_channels * kernel_size**3
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MinkowskiEngine's default: U(−1/√fan, 1/√fan), fan = C_in·K (C_out·K for a transposed conv)."""
        bound = 1.0 / self._fan**0.5
        with torch.no_grad():
            self.kernel.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # MinkowskiEngine stores 1×1×1 stride-1 kernels as (C_in, C_out); accept those checkpoints too.
        k = prefix + "kernel"
        if k in state_dict and state_dict[k].dim() == 2 and self.kernel.shape[0] == 1:
            state_dict[k] = state_dict[k].unsqueeze(0)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _finish(self, out: SparseTensor) -> SparseTensor:
        return out if self.bias is None else out.replace(out.feats + self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"dilation={self.dilation}, bias={self.bias is not None}")


class Conv3d(_ConvBase):
    """Sparse (generalized) 3D convolution, MinkowskiEngine semantics.

        out[u] = Σ_k Σ_{i : c_i = u + o_k · d · s_in} x[i] · W[k]  (+ b)         W: (K, C_in, C_out)

    ``stride == 1``: submanifold — output sites = input sites. ``stride = s > 1``: output sites are the unique
    ⌊c / (s·s_in)⌋ · (s·s_in) of the input sites, output tensor stride s·s_in. o_k: :func:`kernel_offsets`.
    Shapes: (M_in, C_in) → (M_out, C_out).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias, in_channels)

    def forward(self, x: SparseTensor) -> SparseTensor:
        _check_input(x, self.in_channels, type(self).__name__)
        out = _OPS[x.backend].conv(x, self.kernel, self.kernel_size, self.stride, self.dilation)
        return self._finish(out)


class ConvTranspose3d(_ConvBase):
    """Sparse transposed 3D convolution back onto the finer sites recorded in the coordinate cache.

        out[v] = Σ_k Σ_{u : c_v = c_u + o_k · d · s_out} x[u] · W[k]  (+ b)       W: (K, C_in, C_out)

    i.e. the adjoint of :class:`Conv3d` with the same kernel size/stride: it scatters along the same pairs. Input
    stride s_in, output stride s_out = s_in / stride, output sites = the cached stride-s_out sites (in their order).
    Shapes: (M_coarse, C_in) → (M_fine, C_out).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 2, stride: int = 2,
                 dilation: int = 1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias, out_channels)

    def forward(self, x: SparseTensor) -> SparseTensor:
        _check_input(x, self.in_channels, type(self).__name__)
        out = _OPS[x.backend].conv_transpose(x, self.kernel, self.kernel_size, self.stride, self.dilation)
        return self._finish(out)


class BatchNorm(nn.Module):
    """Batch normalisation over all sites: y = γ (x − μ_B) / √(σ²_B + ε) + β per channel. (M, C) → (M, C).

    Holds ``self.bn = nn.BatchNorm1d`` like ``ME.MinkowskiBatchNorm`` (same state-dict keys, ``….bn.weight``);
    ``momentum`` follows PyTorch's convention (running = (1 − m)·running + m·batch).
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.num_features = _check_int("num_features", num_features)
        self.bn = nn.BatchNorm1d(num_features, eps=eps, momentum=momentum)

    def forward(self, x: SparseTensor) -> SparseTensor:
        _check_input(x, self.num_features, "BatchNorm")
        return x.replace(self.bn(x.feats))


class ReLU(nn.Module):
    """y = max(x, 0) on the features; sites unchanged."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(F.relu(x.feats))


def cat(*tensors: SparseTensor) -> SparseTensor:
    """Feature concatenation on identical sites: (M, C₁), (M, C₂), … → (M, C₁ + C₂ + …)."""
    if len(tensors) < 2:
        raise ValueError("cat needs at least two sparse tensors")
    for t in tensors[1:]:
        tensors[0]._require_same(t, "cat")
    return tensors[0].replace(torch.cat([t.feats for t in tensors], 1))


def _per_batch(x: SparseTensor) -> tuple[torch.Tensor, int]:
    b = x.coords[:, 0].to(x.feats.device)
    return b, int(b.max()) + 1


def global_avg_pool(x: SparseTensor) -> torch.Tensor:
    """(B, C): mean of the features of each batch element, out[b] = Σ_{i ∈ b} x[i] / |b|."""
    b, n = _per_batch(x)
    s = x.feats.new_zeros(n, x.num_channels).index_add_(0, b, x.feats)
    cnt = torch.bincount(b, minlength=n).clamp_min(1).to(x.feats.dtype)
    return s / cnt.unsqueeze(1)


def global_max_pool(x: SparseTensor) -> torch.Tensor:
    """(B, C): channel-wise max over the sites of each batch element."""
    b, n = _per_batch(x)
    idx = b.unsqueeze(1).expand_as(x.feats)
    init = x.feats.new_full((n, x.num_channels), float("-inf"))
    return init.scatter_reduce(0, idx, x.feats, "amax", include_self=True)


# ----------------------------------------------------------------------------------------------------------
# Points ↔ voxels
# ----------------------------------------------------------------------------------------------------------
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
        c = _as_int_coords(c, f"coords of sample {b}")
        if c.dim() != 2 or c.shape[1] != 3:
            raise ValueError(f"coords of sample {b} must have shape (M, 3), got {tuple(c.shape)}")
        if c.shape[0] == 0:
            raise ValueError(f"sample {b} is empty (0 voxels): drop it or check its crop / voxel size")
        f = _check_feats(f, c.shape[0], f"feats of sample {b}")
        if fs and f.shape[1] != fs[0].shape[1]:
            raise ValueError(f"sample {b} has {f.shape[1]} feature channels but sample 0 has {fs[0].shape[1]}")
        cs.append(torch.cat([torch.full((c.shape[0], 1), b, dtype=torch.long), c.cpu()], 1))
        fs.append(f)
    counts = torch.tensor([0] + [c.shape[0] for c in cs])
    x = SparseTensor(torch.cat(cs).to(fs[0].device), torch.cat(fs), stride=stride, backend=backend)
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
