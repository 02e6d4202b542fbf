"""Data-parallel training across processes (``torchrun``), on GPUs (NCCL) or CPUs (gloo).

    torchrun --nproc_per_node 8 -m ssl3d.pretrain pointcontrast --config configs/pretrain/pointcontrast.yaml
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --nproc_per_node 8 -m ssl3d.pretrain ...

Each process holds a replica of the method, sees ``1 / world_size`` of every global batch (a
``DistributedSampler``), and ``DistributedDataParallel`` averages the gradients, so N processes with per-process
batch B/N follow the trajectory of one process with batch B. BatchNorm statistics would otherwise be computed per
process; :func:`sync_batchnorm` makes them global, as PointContrast's 8-GPU runs do: torch's ``SyncBatchNorm`` on
GPUs, and on CPUs (where torch's refuses to run) :class:`CPUSyncBatchNorm`, the same computation with
differentiable all-reduces. Only rank 0 writes checkpoints and shows progress bars (``ssl3d.train.train``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "init_distributed", "is_main", "sync_batchnorm", "CPUSyncBatchNorm", "wrap", "cleanup"]


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK, …);
    a plain ``python`` run is a world of one and initialises nothing. NCCL on CUDA, gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but no CUDA GPU is visible; use device='cpu' or 'auto'")
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local, dev)


def is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class CPUSyncBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the union of every process's batch, for CPUs (gloo): per-channel count, Σx and Σx² are
    summed across processes with a differentiable all-reduce, then x̂ = (x − μ) / √(σ² + ε). Same running-statistics
    update as ``nn.BatchNorm1d`` (unbiased variance, momentum)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        flat = x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() > 2 else x.t()  # (C, n) channels first
        stats = torch.cat([flat.new_full((1,), flat.shape[1]), flat.sum(1), (flat * flat).sum(1)])  # (1 + 2C,)
        stats = all_reduce(stats)  # Σ over processes, differentiable
        c = x.shape[1]
        n, s, ss = stats[0], stats[1:1 + c], stats[1 + c:]
        mean = s / n
        var = ss / n - mean * mean  # biased: what normalises the batch
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * (var * n / (n - 1).clamp_min(1)).detach())
            self.num_batches_tracked += 1
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every ``nn.BatchNorm{1,2,3}d`` by a synchronised one (torch's on GPUs, :class:`CPUSyncBatchNorm` on
    CPUs), keeping its parameters and running statistics."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, CPUSyncBatchNorm):
            new = CPUSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new.to(next(child.buffers()).device))
        else:
            sync_batchnorm(child, device)
    return module


def wrap(method: nn.Module, info: DistInfo, sync_bn: bool = True) -> nn.Module:
    """The method on its device; in a world of several processes with synchronised BatchNorm and wrapped in
    ``DistributedDataParallel`` (``collate`` and ``backbone`` stay reachable through ``.module``)."""
    method = method.to(info.device)
    if info.world_size == 1:
        return method
    if sync_bn:
        method = sync_batchnorm(method, info.device)
    ids = [info.device.index] if info.device.type == "cuda" else None
    # a head on a sparse U-Net's last decoder block leaves the backbone's output layer without gradients
    unused = getattr(method, "head_input", "feats") != "feats"
    ddp = nn.parallel.DistributedDataParallel(method, device_ids=ids, find_unused_parameters=unused)
    ddp.collate = method.collate  # the loader asks the wrapper for the method's collate
    ddp.name = method.name
    return ddp


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
