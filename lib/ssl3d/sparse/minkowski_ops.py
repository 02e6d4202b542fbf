"""The ``"minkowski"`` backend: MinkowskiEngine 0.5.4's coordinate manager and convolution functions.

Sites are ``(ME.CoordinateManager, ME.CoordinateMapKey)`` pairs; convolutions call ``MinkowskiConvolutionFunction``
/ ``MinkowskiConvolutionTransposeFunction`` with ssl3d's own kernel parameter (K, C_in, C_out), which is exactly ME's
layout, so nothing about the weights depends on the backend. See :class:`ssl3d.sparse.backend.SparseBackend` for
the contract.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import torch

from ssl3d.sparse.backend import require_minkowski
from ssl3d.sparse.torch_ops import CoordMap

__all__ = ["MinkowskiBackend", "MinkowskiSites"]


class MinkowskiSites(NamedTuple):
    """A coordinate set of the minkowski backend: ME's coordinate manager and the key of the set in it."""

    manager: Any  # ME.CoordinateManager (the Python wrapper)
    key: Any  # ME.CoordinateMapKey
    stride: int


@functools.lru_cache(maxsize=64)
def _kernel_generator(kernel_size: int, stride: int, dilation: int):
    ME = require_minkowski()
    return ME.KernelGenerator(kernel_size=kernel_size, stride=stride, dilation=dilation, dimension=3)


class MinkowskiBackend:
    """:class:`~ssl3d.sparse.backend.SparseBackend` on MinkowskiEngine."""

    name = "minkowski"

    def new(self, coords: torch.Tensor, stride: int) -> MinkowskiSites:
        ME = require_minkowski()
        if coords.device.type != "cpu" and not torch.cuda.is_available():
            raise ValueError("MinkowskiEngine here is a CPU build: keep the features on the CPU")
        # ME's default coordinate manager calls omp_set_num_threads(min(cpu_count, 20)), which silently overrides
        # torch.set_num_threads for the whole process (ME runs on torch's OpenMP runtime); keep the user's setting.
        CoordMap(coords, stride)  # ME would silently merge duplicate rows: raise the torch backend's error instead
        manager = ME.CoordinateManager(D=3, num_threads=torch.get_num_threads())
        # An ME.SparseTensor registers the coordinates (keeping the order of unique rows); only its key is kept.
        dummy = torch.zeros(coords.shape[0], 1, device=coords.device)
        t = ME.SparseTensor(dummy, coordinates=coords.to(torch.int32), tensor_stride=stride,
                            coordinate_manager=manager, device=str(coords.device))
        return MinkowskiSites(manager, t.coordinate_map_key, stride)

    def coords(self, sites: MinkowskiSites) -> torch.Tensor:
        return sites.manager.get_coordinates(sites.key).long()

    def same_sites(self, a: MinkowskiSites, b: MinkowskiSites) -> bool:
        return a.manager is b.manager and a.key == b.key

    @staticmethod
    def _apply(fn, feats, sites: MinkowskiSites, kernel, kernel_size, stride, dilation):
        ME = require_minkowski()
        from MinkowskiEngineBackend._C import ConvolutionMode  # top-level package: importing it shadows nothing

        kg = _kernel_generator(kernel_size, stride, dilation)
        out_key = ME.CoordinateMapKey(sites.key.get_coordinate_size())  # empty: ME fills it in
        out = fn.apply(feats, kernel, kg, ConvolutionMode.DEFAULT, sites.key, out_key, sites.manager)
        return out, MinkowskiSites(sites.manager, out_key, int(out_key.get_tensor_stride()[0]))

    def conv(self, feats, sites, kernel, kernel_size, stride, dilation):
        # ME's names, not `from MinkowskiEngine.MinkowskiConvolution import …`: ME imports its modules as top-level
        # ones, and importing the submodule path would overwrite the class ME.MinkowskiConvolution with a module.
        fn = require_minkowski().MinkowskiConvolutionFunction
        return self._apply(fn, feats, sites, kernel, kernel_size, stride, dilation)

    def conv_transpose(self, feats, sites, kernel, kernel_size, stride, dilation):
        if sites.stride % stride:
            raise ValueError(f"ConvTranspose3d(stride={stride}) cannot upsample a stride-{sites.stride} tensor")
        s_out = sites.stride // stride
        if not sites.manager._manager.get_coordinate_map_keys([s_out] * 3):
            # ME would invent new fine sites (coarse + offsets); the torch backend cannot, so neither do we
            raise ValueError(
                f"ConvTranspose3d(stride={stride}) on a stride-{sites.stride} tensor needs the stride-{s_out} "
                "coordinates in the tensor's coordinate cache (ME coordinate manager); upsample only tensors that "
                "were produced by strided Conv3d layers from a finer tensor")
        fn = require_minkowski().MinkowskiConvolutionTransposeFunction
        return self._apply(fn, feats, sites, kernel, kernel_size, stride, dilation)
