""":class:`SparseTensor` — active sites of a batched 3D grid with features, on either backend.

    coords  (M, 4) int64   (batch, x, y, z) in units of the finest grid; a stride-s tensor has x, y, z that are
                           multiples of s (MinkowskiEngine's convention)
    feats   (M, C) float
    stride  int            the tensor stride s

A tensor is its features plus a *sites handle* of its backend (:class:`ssl3d.sparse.backend.Sites`); every
coordinate-related question is forwarded to the backend object in :data:`BACKEND_OPS`.
"""

from __future__ import annotations

import torch

from ssl3d.geometry import as_tensor
from ssl3d.sparse.backend import Sites, SparseBackend, check_backend_name, get_backend
from ssl3d.sparse.minkowski_ops import MinkowskiBackend
from ssl3d.sparse.torch_ops import CoordMap, TorchBackend

__all__ = ["SparseTensor", "BACKEND_OPS", "as_int_coords", "check_feats"]

BACKEND_OPS: dict[str, SparseBackend] = {"torch": TorchBackend(), "minkowski": MinkowskiBackend()}


def as_int_coords(coords, name: str = "coords") -> torch.Tensor:
    """``coords`` as an int64 tensor; ``TypeError`` for float/bool input (points must be quantized first)."""
    c = as_tensor(coords, None)
    if c.dtype.is_floating_point or c.dtype == torch.bool:
        raise TypeError(f"{name} must be integer voxel indices, got {c.dtype}: quantize points first with "
                        "ssl3d.sparse.sparse_quantize(points, voxel_size)")
    return c.long()


def check_feats(feats, m: int, what: str = "feats") -> torch.Tensor:
    """``feats`` as a finite float (m, C) tensor, or an error saying what is wrong with it."""
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
        backend: ``"minkowski"`` or ``"torch"``; default :func:`~ssl3d.sparse.backend.get_backend`.

    Tensors produced by the layers share a coordinate cache with their input (ME's coordinate manager, or the torch
    backend's own), which is how a transposed convolution finds the finer sites to return to. Rows of a layer output
    at the input's stride are in the input's row order (both backends); rows of coarser tensors are in a
    backend-specific order — compare them with :meth:`features_at`.
    """

    __slots__ = ("feats", "stride", "backend", "sites", "_coords")

    def __init__(self, coords, feats, stride: int = 1, backend: str | None = None):
        backend = get_backend() if backend is None else check_backend_name(backend)
        c = as_int_coords(coords)
        if c.dim() != 2 or c.shape[1] != 4:
            raise ValueError(f"coords must have shape (M, 4) = (batch, x, y, z), got {tuple(c.shape)}; "
                             "use batch_sparse([(coords, feats), …]) to add the batch column")
        if c.shape[0] == 0:
            raise ValueError("sparse tensor is empty (0 voxels): check the crop / voxel size that produced it")
        f = check_feats(feats, c.shape[0])
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a positive int, got {stride!r}")
        if bool((c[:, 0] < 0).any()):
            raise ValueError("batch indices (coords[:, 0]) must be ≥ 0")
        if stride > 1 and bool((torch.remainder(c[:, 1:], stride) != 0).any()):
            raise ValueError(f"a stride-{stride} tensor needs x, y, z that are multiples of {stride}")
        c = c.to(f.device)
        self.feats, self.stride, self.backend = f, stride, backend
        self.sites: Sites = BACKEND_OPS[backend].new(c, stride)  # raises on duplicate rows
        self._coords = c

    @classmethod
    def from_sites(cls, feats: torch.Tensor, backend: str, sites: Sites) -> SparseTensor:
        """A tensor with features ``feats`` (M, C) on sites already known to the backend (no validation)."""
        t = cls.__new__(cls)
        t.feats, t.stride, t.backend, t.sites, t._coords = feats, sites.stride, backend, sites, None
        return t

    @property
    def ops(self) -> SparseBackend:
        """The backend object that owns this tensor's sites."""
        return BACKEND_OPS[self.backend]

    # --- properties -------------------------------------------------------------------------------------
    @property
    def coords(self) -> torch.Tensor:
        """(M, 4) int64 (batch, x, y, z), finest-grid units."""
        if self._coords is None:
            self._coords = self.ops.coords(self.sites)
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
            self.ops.same_sites(self.sites, other.sites)

    def require_same_sites(self, other: SparseTensor, op: str) -> None:
        """``ValueError`` naming ``op`` unless ``other`` lives on these sites (see :meth:`same_sites`)."""
        if not self.same_sites(other):
            what = other if isinstance(other, SparseTensor) else type(other).__name__
            raise ValueError(f"{op} needs two sparse tensors on identical sites (same coordinate cache and stride), "
                             f"got {self!r} and {what!r}: combine tensors that come from the same input, e.g. a "
                             "U-Net skip and the matching transposed-convolution output")

    def replace(self, feats: torch.Tensor) -> SparseTensor:
        """The same sites with new features (M, C')."""
        if feats.dim() != 2 or feats.shape[0] != len(self):
            raise ValueError(f"replacement features must be ({len(self)}, C'), got {tuple(feats.shape)}")
        t = SparseTensor.from_sites(feats, self.backend, self.sites)
        t._coords = self._coords
        return t

    def __add__(self, other: SparseTensor) -> SparseTensor:
        """Feature sum on identical sites (residual connections)."""
        self.require_same_sites(other, "addition")
        return self.replace(self.feats + other.feats)

    def features_at(self, coords) -> torch.Tensor:
        """Features (N, C) of the sites ``coords`` (N, 4); raises if one is not a site of this tensor."""
        q = as_int_coords(coords).to(self.feats.device)
        idx = CoordMap(self.coords, self.stride).lookup(q)
        if bool((idx < 0).any()):
            raise KeyError(f"{int((idx < 0).sum())} of the {len(q)} requested coordinates are not sites of {self!r}, "
                           f"e.g. {q[(idx < 0).nonzero()[0, 0]].tolist()}")
        return self.feats[idx]
