"""Sparse 3D tensors and convolutions, written once, run on MinkowskiEngine or on plain PyTorch.

    from ssl3d import sparse as sp
    x, offsets = sp.batch_sparse([sp.sparse_quantize(points, 0.02)])     # SparseTensor, coords (M, 4) = (b, x, y, z)
    y = sp.ReLU()(sp.BatchNorm(32)(sp.Conv3d(1, 32, kernel_size=3)(x)))  # submanifold conv: same sites, same order

Modules (one idea each):

    backend.py        the backend contract (:class:`SparseBackend` protocol), backend selection, kernel offsets
    torch_ops.py      the "torch" backend: hashing, coordinate maps, kernel maps, gather → GEMM → scatter
    minkowski_ops.py  the "minkowski" backend: MinkowskiEngine 0.5.4's coordinate manager and convolutions
    tensor.py         SparseTensor: features + a backend's sites handle
    layers.py         Conv3d, ConvTranspose3d, BatchNorm, ReLU, cat, global pools
    quantize.py       points ↔ voxels: sparse_quantize, batch_sparse, unbatch, voxels_to_points

Both backends use ONE weight layout: a convolution kernel is a parameter of shape ``(K, C_in, C_out)``, K = k³, whose
offsets are ordered with x varying fastest: offset index ``k = (iz·k + iy)·k + ix`` (exactly MinkowskiEngine's order,
checked against ME in ``tests/test_sparse.py``). A ``state_dict`` saved under one backend loads under the other.
Kernel offsets (ME's hyper-cube region): per axis ``r ∈ {−(k−1)/2, …, (k−1)/2}`` for odd k and ``r ∈ {0, …, k−1}``
for even k, scaled by ``dilation × input tensor stride``.

Choose the backend with :func:`set_backend` or the environment variable ``SSL3D_SPARSE_BACKEND``; the default is
``"minkowski"`` when MinkowskiEngine imports, else ``"torch"``. A tensor keeps the backend it was created with.
"""

from ssl3d.sparse.backend import (
    BACKENDS,
    ENV_VAR,
    SparseBackend,
    get_backend,
    kernel_offsets,
    minkowski_available,
    set_backend,
)
from ssl3d.sparse.layers import BatchNorm, Conv3d, ConvTranspose3d, ReLU, cat, global_avg_pool, global_max_pool
from ssl3d.sparse.quantize import batch_sparse, sparse_quantize, unbatch, voxels_to_points
from ssl3d.sparse.tensor import SparseTensor

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "SparseBackend",
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
