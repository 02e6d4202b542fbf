"""Res16UNet — the sparse residual U-Net of MinkowskiEngine / PointContrast ("SR-UNet"), on :mod:`ssl3d.sparse`.

Layout (tensor strides in brackets; the stem, every ↓ conv and every ↑ transposed conv is followed by BN + ReLU):

    conv0p1s1 k3 [1] ─────────────────────────────────────────────────────────────── cat → block8 → final 1×1 → out
      conv1p1s2 k2 ↓ [2] → block1 ───────────────────────────────────────── cat → block7 → convtr7p2s2 k2 ↑ [1]
        conv2p2s2 k2 ↓ [4] → block2 ─────────────────────────── cat → block6 → convtr6p4s2 k2 ↑ [2]
          conv3p4s2 k2 ↓ [8] → block3 ───────────── cat → block5 → convtr5p8s2 k2 ↑ [4]
            conv4p8s2 k2 ↓ [16] → block4 → convtr4p16s2 k2 ↑ [8]

Blocks are ResNet ``BasicBlock``s (two 3×3×3 submanifold convs) or ``Bottleneck``s (1-3-1, expansion 4); a block
whose input width differs from its output gets a 1×1 conv + BN shortcut. Module names follow PointContrast's
``res16unet.py`` (``conv0p1s1``, ``bn0``, ``block1.0.conv1.kernel``, ``bn0.bn.weight``, …) so its state-dict keys
line up. One deliberate difference: PointContrast passes ``bn_momentum`` only to the stem/transition BNs and to the
shortcut BNs (block-internal BNs keep ME's 0.1); here ``bn_momentum`` (default 0.05) is used for every BN.

Parameter counts (``in_channels`` → ``out_channels``; tests/test_sparse_unet.py checks them):
    Res16UNet34C      3 → 32: 37,847,808  (paper: 37.85 M — matches to the rounding; 1 → 32: 37,846,080 also rounds
                                           to 37.85 M, 3 → 32 is the closer one)
    Res16UNet34       3 → 32: 57,148,416     Res16UNet18A 3 → 32: 15,484,928     Res16UNet14A 3 → 32: 8,016,256
    Res16UNet14       3 → 32: 22,134,656     Res16UNet14Tiny 3 → 32: 503,416 (the CPU smoke-test member)
    (``python -m ssl3d.models.sparse_unet`` prints the full table.)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ssl3d import sparse as sp
from ssl3d.models import register
from ssl3d.models.base import Backbone, model_device

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "Res16UNetBase",
    "Res16UNet14",
    "Res16UNet14A",
    "Res16UNet14Tiny",
    "Res16UNet18",
    "Res16UNet18A",
    "Res16UNet34",
    "Res16UNet34A",
    "Res16UNet34C",
    "Res16UNet50",
    "count_parameters",
]


def conv_bn_relu(cin: int, cout: int, kernel_size: int, stride: int, bn_momentum: float) -> list[nn.Module]:
    return [sp.Conv3d(cin, cout, kernel_size, stride), sp.BatchNorm(cout, bn_momentum), sp.ReLU()]


class BasicBlock(nn.Module):
    """y = ReLU(BN(conv₃(ReLU(BN(conv₃(x))))) + shortcut(x)); shortcut = x or BN(conv₁(x)). (M, C_in) → (M, planes)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, dilation: int = 1, bn_momentum: float = 0.05):
        super().__init__()
        self.conv1 = sp.Conv3d(inplanes, planes, 3, dilation=dilation)
        self.norm1 = sp.BatchNorm(planes, bn_momentum)
        self.conv2 = sp.Conv3d(planes, planes, 3, dilation=dilation)
        self.norm2 = sp.BatchNorm(planes, bn_momentum)
        self.relu = sp.ReLU()
        self.downsample = _shortcut(inplanes, planes * self.expansion, bn_momentum)

    def forward(self, x: sp.SparseTensor) -> sp.SparseTensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(out + res)


class Bottleneck(nn.Module):
    """y = ReLU(BN(conv₁(ReLU(BN(conv₃(ReLU(BN(conv₁(x))))))) + shortcut(x)). (M, C_in) → (M, 4·planes)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, dilation: int = 1, bn_momentum: float = 0.05):
        super().__init__()
        self.conv1 = sp.Conv3d(inplanes, planes, 1)
        self.norm1 = sp.BatchNorm(planes, bn_momentum)
        self.conv2 = sp.Conv3d(planes, planes, 3, dilation=dilation)
        self.norm2 = sp.BatchNorm(planes, bn_momentum)
        self.conv3 = sp.Conv3d(planes, planes * self.expansion, 1)
        self.norm3 = sp.BatchNorm(planes * self.expansion, bn_momentum)
        self.relu = sp.ReLU()
        self.downsample = _shortcut(inplanes, planes * self.expansion, bn_momentum)

    def forward(self, x: sp.SparseTensor) -> sp.SparseTensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(out + res)


def _shortcut(cin: int, cout: int, bn_momentum: float) -> nn.Module | None:
    """1×1 conv + BN when the width changes (ResNet's projection shortcut), else identity (None)."""
    if cin == cout:
        return None
    return nn.Sequential(sp.Conv3d(cin, cout, 1), sp.BatchNorm(cout, bn_momentum))


class Res16UNetBase(Backbone):
    """Res16UNet: 4 stride-2 levels down, 4 transposed convs up, skip concatenations, per-voxel output.

    Class attributes define a variant: ``BLOCK`` (BasicBlock/Bottleneck), ``PLANES`` (8 widths: 4 encoder levels,
    4 decoder levels), ``LAYERS`` (blocks per level), ``INIT_DIM`` (stem width), ``DILATIONS``.

    Args:
        in_channels: input features per voxel besides the coordinates (3 for RGB). 0 = geometry only: the stem then
            sees one constant feature (1) per voxel, PointContrast's geometry-only input.
        out_channels: per-voxel output width (PointContrast: 32) = ``feat_dim``; ``global_feats`` = max ‖ mean of
            the output over each sample's voxels (``global_dim`` = 2 · out_channels).
        bn_momentum: momentum of every BatchNorm (PointContrast: 0.05).
        conv1_kernel_size: stem kernel (3).
        normalize_feature: L2-normalise the output features per voxel (PointContrast pre-training).
    Forward: SparseTensor (M, max(in_channels, 1)) at stride 1 → SparseTensor (M, out_channels) on the same sites,
    same order. ``encode(batch)`` (the backbone contract) builds that tensor from ``batch["coords"]`` (ΣM, 4) and
    ``batch["feats"]``.
    """

    kind = "sparse"
    BLOCK: type[nn.Module] | None = None
    PLANES: tuple[int, ...] = (32, 64, 128, 256, 256, 256, 256, 256)
    LAYERS: tuple[int, ...] = (2, 2, 2, 2, 2, 2, 2, 2)
    DILATIONS: tuple[int, ...] = (1, 1, 1, 1, 1, 1, 1, 1)
    INIT_DIM: int = 32

    def __init__(self, in_channels: int = 3, out_channels: int = 32, bn_momentum: float = 0.05,
                 conv1_kernel_size: int = 3, normalize_feature: bool = False):
        super().__init__()
        if self.BLOCK is None:
            raise TypeError(f"{type(self).__name__} is abstract: use a variant such as Res16UNet34C")
        if len(self.PLANES) != 8 or len(self.LAYERS) != 8:
            raise ValueError(f"{type(self).__name__}: PLANES and LAYERS need 8 entries each")
        if in_channels < 0 or out_channels < 1:
            raise ValueError(f"{type(self).__name__}: need in_channels ≥ 0 and out_channels ≥ 1, got {in_channels} "
                             f"and {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.feat_dim, self.global_dim = out_channels, 2 * out_channels
        # a task head replaces the output layer (PointContrast's fine-tuning loads every weight whose shape matches,
        # so its final 1×1 conv starts afresh with one output per class): it reads the last decoder block
        self.head_spec = {"hidden": (), "dropout": 0.0, "act": "relu", "input": "decoder_feats",
                          "input_dim": self.PLANES[7] * self.BLOCK.expansion}
        self.normalize_feature = normalize_feature
        block, exp, m = self.BLOCK, self.BLOCK.expansion, bn_momentum
        self.inplanes = self.INIT_DIM

        self.conv0p1s1 = sp.Conv3d(max(in_channels, 1), self.inplanes, conv1_kernel_size)
        self.bn0 = sp.BatchNorm(self.inplanes, m)
        # encoder: stride-2 kernel-2 conv (width kept) + BN + ReLU, then the level's blocks
        for lvl, name in enumerate(("conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2")):
            setattr(self, name, sp.Conv3d(self.inplanes, self.inplanes, 2, 2))
            setattr(self, f"bn{lvl + 1}", sp.BatchNorm(self.inplanes, m))
            setattr(self, f"block{lvl + 1}", self._make_layer(block, self.PLANES[lvl], self.LAYERS[lvl],
                                                              self.DILATIONS[lvl], m))
        # decoder: transposed conv + BN + ReLU, concatenation with the encoder skip, then the level's blocks
        skips = (self.PLANES[2] * exp, self.PLANES[1] * exp, self.PLANES[0] * exp, self.INIT_DIM)
        for i, name in enumerate(("convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2")):
            lvl = 4 + i
            setattr(self, name, sp.ConvTranspose3d(self.inplanes, self.PLANES[lvl], 2, 2))
            setattr(self, f"bntr{lvl}", sp.BatchNorm(self.PLANES[lvl], m))
            self.inplanes = self.PLANES[lvl] + skips[i]
            setattr(self, f"block{lvl + 1}", self._make_layer(block, self.PLANES[lvl], self.LAYERS[lvl],
                                                              self.DILATIONS[lvl], m))
        self.final = sp.Conv3d(self.PLANES[7] * exp, out_channels, 1, bias=True)
        self.relu = sp.ReLU()

    def _make_layer(self, block, planes: int, blocks: int, dilation: int, bn_momentum: float) -> nn.Sequential:
        layers = []
        for _ in range(blocks):
            layers.append(block(self.inplanes, planes, dilation=dilation, bn_momentum=bn_momentum))
            self.inplanes = planes * block.expansion
        return nn.Sequential(*layers)

    def _down(self, lvl: int, x: sp.SparseTensor) -> sp.SparseTensor:
        conv = getattr(self, ("conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2")[lvl])
        out = self.relu(getattr(self, f"bn{lvl + 1}")(conv(x)))
        return getattr(self, f"block{lvl + 1}")(out)

    def _up(self, i: int, x: sp.SparseTensor, skip: sp.SparseTensor) -> sp.SparseTensor:
        conv = getattr(self, ("convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2")[i])
        out = self.relu(getattr(self, f"bntr{4 + i}")(conv(x)))
        return getattr(self, f"block{5 + i}")(sp.cat(out, skip))

    def decode(self, x: sp.SparseTensor) -> sp.SparseTensor:
        """The U-Net without its output layer: stride-1 input (M, C_in) → last decoder block (M, PLANES[7]·exp)."""
        if isinstance(x, sp.SparseTensor) and x.stride != 1:
            raise ValueError(f"Res16UNet expects a stride-1 input tensor, got stride {x.stride}")
        out_p1 = self.relu(self.bn0(self.conv0p1s1(x)))  # (M, INIT_DIM)         stride 1
        out_b1p2 = self._down(0, out_p1)  # (M₂, PLANES[0]·exp)                     stride 2
        out_b2p4 = self._down(1, out_b1p2)  # (M₄, PLANES[1]·exp)                   stride 4
        out_b3p8 = self._down(2, out_b2p4)  # (M₈, PLANES[2]·exp)                   stride 8
        out = self._down(3, out_b3p8)  # (M₁₆, PLANES[3]·exp)                       stride 16
        out = self._up(0, out, out_b3p8)  # (M₈, PLANES[4]·exp)
        out = self._up(1, out, out_b2p4)  # (M₄, PLANES[5]·exp)
        out = self._up(2, out, out_b1p2)  # (M₂, PLANES[6]·exp)
        return self._up(3, out, out_p1)  # (M, PLANES[7]·exp)

    def output(self, dec: sp.SparseTensor) -> sp.SparseTensor:
        """The pre-training output layer: final 1×1 conv (M, out_channels), L2-normalised if ``normalize_feature``."""
        out = self.final(dec)  # (M, out_channels)
        if self.normalize_feature:
            out = out.replace(out.feats / out.feats.norm(dim=1, keepdim=True).clamp_min(1e-12))
        return out

    def forward(self, x: sp.SparseTensor) -> sp.SparseTensor:
        return self.output(self.decode(x))

    def encode(self, batch: Mapping) -> dict:
        """The backbone contract: ``batch["coords"]`` (ΣM, 4) (+ ``batch["feats"]``) → ``feats`` (ΣM, out_channels) in
        the batch's row order, ``global_feats`` (B, 2 · out_channels), the output ``sparse`` tensor itself, and
        ``decoder_feats`` (ΣM, PLANES[7]·exp): the last decoder block, which a task head reads (``head_spec``)."""
        if "coords" not in batch:
            raise KeyError(f"{type(self).__name__} needs batch['coords'] (ΣM, 4) = (batch, x, y, z): voxelize with "
                           f"ssl3d.data.datasets.collate_voxels / collate_scenes; got keys {sorted(batch)}")
        dev = model_device(self)
        coords = batch["coords"]
        feats = self._batch_feats(batch, len(coords))
        if feats is None:
            feats = torch.ones(len(coords), 1)  # geometry only: a constant per voxel
        dec = self.decode(sp.SparseTensor(coords.to(dev), feats.to(dev, next(self.parameters()).dtype)))
        out = self.output(dec)
        glob = torch.cat([sp.global_max_pool(out), sp.global_avg_pool(out)], dim=1)  # (B, 2 · out_channels)
        return {"feats": out.feats, "global_feats": glob, "sparse": out, "decoder_feats": dec.feats}


@register("res16unet14")
class Res16UNet14(Res16UNetBase):
    BLOCK = BasicBlock
    LAYERS = (1, 1, 1, 1, 1, 1, 1, 1)


@register("res16unet14a")
class Res16UNet14A(Res16UNet14):
    PLANES = (32, 64, 128, 256, 128, 128, 96, 96)


@register("res16unet14tiny")
class Res16UNet14Tiny(Res16UNet14):
    """A small member for CPU smoke runs and tests: Res16UNet14 at a quarter width (0.50 M parameters, 3 → 32)."""

    INIT_DIM = 8
    PLANES = (8, 16, 32, 64, 32, 32, 24, 24)


@register("res16unet18")
class Res16UNet18(Res16UNetBase):
    BLOCK = BasicBlock
    LAYERS = (2, 2, 2, 2, 2, 2, 2, 2)


@register("res16unet18a")
class Res16UNet18A(Res16UNet18):
    PLANES = (32, 64, 128, 256, 128, 128, 96, 96)


@register("res16unet34")
class Res16UNet34(Res16UNetBase):
    BLOCK = BasicBlock
    LAYERS = (2, 3, 4, 6, 2, 2, 2, 2)


@register("res16unet34a")
class Res16UNet34A(Res16UNet34):
    PLANES = (32, 64, 128, 256, 256, 128, 64, 64)


@register("res16unet34c")
class Res16UNet34C(Res16UNet34):
    """PointContrast's backbone: 37.85 M parameters (3 → 32 channels)."""

    PLANES = (32, 64, 128, 256, 256, 128, 96, 96)


@register("res16unet50")
class Res16UNet50(Res16UNetBase):
    BLOCK = Bottleneck
    LAYERS = (2, 3, 4, 6, 2, 2, 2, 2)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


if __name__ == "__main__":  # pragma: no cover — print the parameter table
    for cls in (Res16UNet14Tiny, Res16UNet14, Res16UNet14A, Res16UNet18, Res16UNet18A, Res16UNet34, Res16UNet34A,
                Res16UNet34C, Res16UNet50):
        for cin in (1, 3):
            print(f"{cls.__name__:16s} {cin} → 32: {count_parameters(cls(cin, 32)):>12,d}")
