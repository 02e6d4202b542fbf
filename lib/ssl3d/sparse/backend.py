"""The backend contract of :mod:`ssl3d.sparse`: what a backend must provide, which one is used, the weight layout.

A *backend* turns coordinates into its own record of a coordinate set (a *sites handle*) and runs convolutions on
features living on such sets. Everything else — :class:`~ssl3d.sparse.tensor.SparseTensor`, the layers, BatchNorm,
ReLU, ``cat``, pooling, quantisation — is written once, on top of the five operations of :class:`SparseBackend`.

Two backends implement it:

* ``"torch"`` — :class:`ssl3d.sparse.torch_ops.TorchBackend`, plain PyTorch (any device);
* ``"minkowski"`` — :class:`ssl3d.sparse.minkowski_ops.MinkowskiBackend`, MinkowskiEngine 0.5.4.

Both use ONE weight layout: a convolution kernel is a parameter of shape ``(K, C_in, C_out)``, K = k³, whose offsets
are ordered with x varying fastest (:func:`kernel_offsets`, MinkowskiEngine's order), so a ``state_dict`` saved under
one backend loads under the other. Choose the backend with :func:`set_backend` or the environment variable
``SSL3D_SPARSE_BACKEND``; the default is ``"minkowski"`` when MinkowskiEngine imports, else ``"torch"``.
"""

from __future__ import annotations

import os
import warnings
from typing import Protocol, runtime_checkable

import torch

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "Sites",
    "SparseBackend",
    "kernel_offsets",
    "set_backend",
    "get_backend",
    "check_backend_name",
    "minkowski_available",
    "import_minkowski",
    "require_minkowski",
]

BACKENDS = ("minkowski", "torch")
ENV_VAR = "SSL3D_SPARSE_BACKEND"


# ----------------------------------------------------------------------------------------------------------
# The contract
# ----------------------------------------------------------------------------------------------------------
class Sites(Protocol):
    """A backend's handle on one coordinate set (the "sites" of a tensor). Opaque outside the backend, except:

    stride  int   the tensor stride s of the set (x, y, z are multiples of s, in finest-grid units).

    A handle also names the *coordinate cache* it lives in (ME's CoordinateManager, or the torch backend's own):
    every tensor computed from one input shares that cache, which is where a transposed convolution finds the finer
    sites to return to and where kernel maps are reused by all layers of a network.
    """

    stride: int


@runtime_checkable
class SparseBackend(Protocol):
    """What a sparse backend provides. Shapes: M sites, C channels, K = k³ kernel offsets.

    Conventions every method follows:

    * coordinates are ``(M, 4)`` int64 ``(batch, x, y, z)`` in finest-grid units (MinkowskiEngine's convention);
    * features are ``(M, C)`` float matrices whose row i belongs to coordinate row i of the sites;
    * kernels are ``(K, C_in, C_out)`` with offsets in :func:`kernel_offsets` order (x fastest); kernel offsets are
      scaled by ``dilation × input tensor stride``;
    * outputs of a convolution at the input's tensor stride keep the input's row order; coarser sets may use any
      order, but a set's order never changes once created;
    * features are autograd tensors: gradients flow to ``feats`` and ``kernel`` through both convolutions.
    """

    name: str  # "torch" / "minkowski": the value of SparseTensor.backend

    def new(self, coords: torch.Tensor, stride: int) -> Sites:
        """Register ``coords`` (M, 4) int64 (unique rows, x, y, z multiples of ``stride``, on the features' device)
        as a coordinate set in a fresh coordinate cache. Row order is kept."""
        ...

    def coords(self, sites: Sites) -> torch.Tensor:
        """(M, 4) int64 coordinates of ``sites``, in the row order of features on them."""
        ...

    def same_sites(self, a: Sites, b: Sites) -> bool:
        """True when ``a`` and ``b`` are the same coordinate set of the same cache (same rows, same order)."""
        ...

    def conv(self, feats: torch.Tensor, sites: Sites, kernel: torch.Tensor, kernel_size: int, stride: int,
             dilation: int) -> tuple[torch.Tensor, Sites]:
        """Sparse convolution of ``feats`` (M_in, C_in) on ``sites`` with ``kernel`` (K, C_in, C_out).

        ``stride == 1``: submanifold, output sites = input sites. ``stride > 1``: output sites are the unique
        ⌊c / (stride · s_in)⌋ · (stride · s_in), added to the cache. out[u] = Σ_k Σ_{i: c_i = u + o_k · dilation ·
        s_in} feats[i] · kernel[k]. Returns (M_out, C_out) features and their sites (no bias: the layer adds it).
        """
        ...

    def conv_transpose(self, feats: torch.Tensor, sites: Sites, kernel: torch.Tensor, kernel_size: int, stride: int,
                       dilation: int) -> tuple[torch.Tensor, Sites]:
        """The adjoint of :meth:`conv` with the same kernel size/stride/dilation, back onto the stride
        ``s_in / stride`` sites already in the cache (raise ``ValueError`` naming the fix if they are not there, or
        if ``s_in`` is not a multiple of ``stride``). Returns (M_fine, C_out) features and the fine sites."""
        ...


# ----------------------------------------------------------------------------------------------------------
# The weight layout: kernel offsets (shared by both backends)
# ----------------------------------------------------------------------------------------------------------
def kernel_offsets(kernel_size: int, dilation: int = 1) -> torch.Tensor:
    """(k³, 3) int64 offsets (dx, dy, dz) of a cubic kernel in MinkowskiEngine's order: x varies fastest.

    Row ``(iz·k + iy)·k + ix`` holds ``(r[ix], r[iy], r[iz]) · dilation`` with ``r = −(k−1)/2 … (k−1)/2`` for odd k
    and ``r = 0 … k−1`` for even k (ME's hyper-cube region). Multiply by the input tensor stride to get offsets in
    finest-grid units.
    """
    start = -((kernel_size - 1) // 2) if kernel_size % 2 else 0
    r = torch.arange(kernel_size, dtype=torch.long) + start
    zz, yy, xx = torch.meshgrid(r, r, r, indexing="ij")  # flattening (z, y, x) row-major → x fastest
    return torch.stack([xx, yy, zz], -1).reshape(-1, 3) * dilation


# ----------------------------------------------------------------------------------------------------------
# MinkowskiEngine: imported once, on first use
# ----------------------------------------------------------------------------------------------------------
_me_module = None
_me_error: BaseException | None = None

_ME_MISSING = (
    "the 'minkowski' sparse backend needs MinkowskiEngine, which does not import here ({err}). Build it for the CPU "
    "with `bash lib/env/build_minkowski.sh` (or bootstrap with SSL3D_MINKOWSKI=1), or use the pure-PyTorch backend: "
    "ssl3d.sparse.set_backend('torch') / SSL3D_SPARSE_BACKEND=torch"
)


def import_minkowski():
    """The MinkowskiEngine module (imported once, its CPU-only warning silenced), or None when it does not import."""
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


def require_minkowski():
    """The MinkowskiEngine module; ``ImportError`` saying how to build it (or to switch backend) when it is missing."""
    ME = import_minkowski()
    if ME is None:
        raise ImportError(_ME_MISSING.format(err=f"{type(_me_error).__name__}: {_me_error}"))
    return ME


def minkowski_available() -> bool:
    """True when MinkowskiEngine imports in this environment."""
    return import_minkowski() is not None


# ----------------------------------------------------------------------------------------------------------
# Backend selection
# ----------------------------------------------------------------------------------------------------------
_backend: str | None = None  # set by set_backend(); None = environment variable, then auto


def check_backend_name(name: str) -> str:
    """``name`` lower-cased if it is a usable backend; ``ValueError`` for unknown names, ``ImportError`` for
    ``"minkowski"`` without MinkowskiEngine."""
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"unknown sparse backend {name!r}; choose one of {BACKENDS}")
    name = name.lower()
    if name == "minkowski":
        require_minkowski()
    return name


def set_backend(name: str | None) -> None:
    """Select the backend new tensors use: ``"minkowski"`` or ``"torch"`` (``None``: back to env var / auto)."""
    global _backend
    _backend = None if name is None else check_backend_name(name)


def get_backend() -> str:
    """The backend new tensors use: :func:`set_backend`, else ``$SSL3D_SPARSE_BACKEND``, else ``"minkowski"`` when
    MinkowskiEngine imports, else ``"torch"``."""
    if _backend is not None:
        return _backend
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return check_backend_name(env)
    return "minkowski" if minkowski_available() else "torch"
