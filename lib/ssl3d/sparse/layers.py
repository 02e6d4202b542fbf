"""Sparse layers on :class:`~ssl3d.sparse.tensor.SparseTensor`: convolutions, BatchNorm, ReLU, ``cat``, pooling.

Written once for both backends: convolutions call the tensor's backend (:class:`~ssl3d.sparse.backend.SparseBackend`),
everything else acts on the (M, C) feature matrix. Weights: a kernel is ``(K, C_in, C_out)``, K = k³, offsets in
:func:`~ssl3d.sparse.backend.kernel_offsets` order — MinkowskiEngine's layout and state-dict names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl3d.sparse.tensor import SparseTensor

__all__ = ["Conv3d", "ConvTranspose3d", "BatchNorm", "ReLU", "cat", "global_avg_pool", "global_max_pool"]


def _conv(x: SparseTensor, kernel: torch.Tensor, kernel_size: int, stride: int, dilation: int) -> SparseTensor:
    if kernel_size == 1 and stride == 1:  # 1×1×1 submanifold = a per-site linear map, on any backend
        return x.replace(x.feats @ kernel[0])
    feats, sites = x.ops.conv(x.feats, x.sites, kernel, kernel_size, stride, dilation)
    return SparseTensor.from_sites(feats, x.backend, sites)


def _conv_transpose(x: SparseTensor, kernel: torch.Tensor, kernel_size: int, stride: int,
                    dilation: int) -> SparseTensor:
    feats, sites = x.ops.conv_transpose(x.feats, x.sites, kernel, kernel_size, stride, dilation)
    return SparseTensor.from_sites(feats, x.backend, sites)


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
        out = _conv(x, self.kernel, self.kernel_size, self.stride, self.dilation)
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
        out = _conv_transpose(x, self.kernel, self.kernel_size, self.stride, self.dilation)
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
        tensors[0].require_same_sites(t, "cat")
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
