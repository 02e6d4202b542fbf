"""Image-to-point pre-training (Janda et al.): dense 2D features first, then a 3D network trained to match them.

Stage 1 — ``"pixel_contrast"`` (:class:`PixelContrast`), the 2D network alone::

    z⁰ = net(view 0), z¹ = net(view 1)                       (B, 16, S, S) unit features per pixel
    loss = pixel_info_nce(z⁰, z¹, matches, 4,092, τ = 0.4)   positives: view pixels from the same original pixel

(views and matches: :mod:`ssl3d.data.image_views`; loss: :func:`ssl3d.contrastive.pixel_info_nce`; the encoder runs
without gradients for the first ``freeze_encoder_steps`` = 50 steps, as the released run's ``warmup_steps=50``).

Stage 2 — ``"image_to_point"`` (:class:`ImageToPoint`), a sparse 3D backbone + MLP head against the frozen 2D net::

    pairing      project every point of the scan into its image with K: (u, v), visible?      (ssl3d.distill)
    augment      rotate / scale / mirror / recolour the points — after the pairing is fixed  (:class:`PointAugment`)
    voxelize     one voxel per occupied cell; each voxel is paired with the pixel of its representative point
    sample       N voxel–pixel pairs per scan (2,000 in the released code and the paper)
    2D target    t_i = bilinear(teacher(image), (u_i, v_i))     no grad, teacher in eval mode, once per image
    3D feature   z_i = head(backbone(voxels))[voxel_i]          Res16UNet (32-d) → Linear-BN-ReLU-Linear → 16-d
    loss         info_nce(z, t, τ = 0.4): positive = the point's own pixel feature, negatives = the other pairs'

Details from the released code (jandaa/masters-thesis): ``src/models/minkowski/trainer.py`` (``ImageTrainer``,
``CMEBackboneTrainerFull``, ``MinkowskiMLP``), ``src/models/minkowski/dataset.py`` (``ImagePretrainDataset``,
``MinkowskiPretrainDataset``), ``src/dataloaders/transforms.py``, ``scripts/experiments/pretrain/images.sh``
(stage 1: batch 64, lr 0.01, ``warmup_steps=50``) and ``images_transfer.sh`` (stage 2: batch 8, voxel 0.05 m,
``dataset.classes=16`` — the head's output width). In the released stage 2 the InfoNCE runs once over the pairs of
the whole batch (negatives from every scan of the batch; ``negatives="batch"``, the default), the head is
Linear(32, 32) → BN → ReLU → Linear(32, 16) on the un-normalised backbone output, and a voxel that holds two of the
2,000 sampled points is paired twice; here each voxel is paired once, with the pixel of its representative point
(the first point of the voxel).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssl3d import distill
from ssl3d import geometry as G
from ssl3d.contrastive import info_nce, pixel_info_nce
from ssl3d.data.image_views import collate_views
from ssl3d.methods import register_method
from ssl3d.methods.base import Method
from ssl3d.models.heads import SegHead
from ssl3d.models.resunet2d import ResUNet2d, load_resunet2d

__all__ = ["PixelContrast", "PointAugment", "ImageToPoint", "SMOKE", "FULL"]

#: Parameter sets. Smoke: a CPU run of each stage (80 × 60 frames, a ResNet-18-style 2D net at width 16, the
#: Res16UNet14Tiny). No ImageNet weights there, so the encoder is not frozen, and AdamW replaces the paper's SGD: with
#: SGD (lr 0.01 or 0.1) neither stage left chance level in 40 steps, with AdamW 3e-3 stage 1 did (InfoNCE 6.77 → 6.30
#: in 32 steps; chance ln 1024 = 6.93). Stage 2's AdamW setting is not yet validated to learn in 40 steps.
SMOKE = {
    "frames": {"n_rooms": 4, "frames_per_room": 8, "width": 80, "height": 60, "voxel_size": 0.05},
    "stage1": {"net": "resnet18-w16", "view_size": 48, "batch_size": 8, "steps": 40, "optimizer": "adamw", "lr": 3e-3,
               "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-4, "freeze_encoder_steps": 0, "num_pos": 1024},
    "stage2": {"backbone": "res16unet14tiny", "batch_size": 4, "steps": 40, "num_pairs": 512, "voxel_size": 0.05,
               "optimizer": "adamw", "lr": 1e-3, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-4},
}
FULL = {
    "frames": {"dataset": "ScanNet v2 RGB-D frames (released preprocessing: frame_skip 50)", "width": 640,
               "height": 480, "voxel_size": 0.05},
    "stage1": {"net": "resnet34", "imagenet": "resnet34-b627a593.pth", "view_size": 224, "batch_size": 64,
               "steps": 20_000, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "dampening": 0.1,
               "weight_decay": 1e-4, "freeze_encoder_steps": 50, "num_pos": 4092,
               "scheduler": "exp, γ 0.99 every 1,000 steps"},
    "stage2": {"backbone": "res16unet34c", "batch_size": 8, "steps": 40_000, "num_pairs": 2000, "voxel_size": 0.05,
               "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-4,
               "temperature": 0.4, "scheduler": "exp, γ 0.99 every 1,000 steps"},
}
"""Full profile. Stage 1 as ``scripts/experiments/pretrain/images.sh`` (paper: batch 64, lr 0.01, momentum 0.9,
20 k iterations; weight decay 1e-4 in the config, 0.004 in the paper); stage 2 as ``images_transfer.sh`` (batch 8,
voxel 5 cm) with the config's defaults (lr 0.1, ``dataset.pretrain.max_steps`` 40,000)."""


# ----------------------------------------------------------------------------------------------------------
# Stage 1
# ----------------------------------------------------------------------------------------------------------
@register_method("pixel_contrast")
class PixelContrast(Method):
    """Dense contrastive pre-training of the 2D network (stage 1).

    ``backbone`` here is the 2D network (:class:`~ssl3d.models.resunet2d.ResUNet2d`), not a point backbone; save it
    with :func:`~ssl3d.models.resunet2d.save_resunet2d`. Batches come from
    :class:`~ssl3d.data.image_views.PixelViewDataset` items (``collate`` = :func:`~ssl3d.data.image_views.
    collate_views`).

    Args:
        num_pos: matched pixels per image pair (4,092). temperature: τ (0.4).
        freeze_encoder_steps: training steps during which the encoder gets no gradient (50 in the released run; 0 =
            never frozen). The step counter is a buffer, so it resumes with checkpoints.
    """

    def __init__(self, backbone: ResUNet2d, num_pos: int = 4092, temperature: float = 0.4,
                 freeze_encoder_steps: int = 50):
        nn.Module.__init__(self)  # not Method.__init__: the 2D network is not an ssl3d point backbone
        if not isinstance(backbone, ResUNet2d):
            raise TypeError(f"pixel_contrast trains the 2D network: pass a ssl3d.models.resunet2d.ResUNet2d "
                            f"(build_resunet2d('resnet34')), got {type(backbone).__name__}")
        if freeze_encoder_steps < 0:
            raise ValueError(f"freeze_encoder_steps must be ≥ 0, got {freeze_encoder_steps}")
        self.backbone = backbone
        self.num_pos, self.temperature, self.freeze_encoder_steps = num_pos, temperature, freeze_encoder_steps
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def collate(self, items: list[dict]) -> dict:
        return collate_views(items)

    def forward(self, batch: Mapping) -> dict:
        frozen = self.training and int(self.step) < self.freeze_encoder_steps
        self.backbone.encoder_frozen = frozen
        dev = self.device
        z0 = self.backbone(batch["image0"].to(dev))  # (B, C, S, S)
        z1 = self.backbone(batch["image1"].to(dev))
        loss, st = pixel_info_nce(z0, z1, batch["matches"], num_pos=self.num_pos, temperature=self.temperature,
                                  return_stats=True)
        if self.training:
            self.step += 1
        return {"loss": loss, "accuracy": st["accuracy"], "num_pairs": float(st["num_pairs"]),
                "encoder_frozen": float(frozen)}


# ----------------------------------------------------------------------------------------------------------
# Stage 2
# ----------------------------------------------------------------------------------------------------------
def _axis_rotation(axis: int, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    R = torch.eye(3, dtype=torch.float64)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


class PointAugment:
    """The 3D-side augmentations of stage 2 (released ``MinkowskiPretrainDataset``), on camera-frame points.

    In order: scale s ~ U(``scale``) (0.9–1.1); centre; with p 0.95 mirror each horizontal axis with p ``flip_p``
    (x ← max x − x); rotations about the three axes by angles ~ U(``rotation[a]``), composed in a random order
    (released: ±π/32 about the horizontal axes, ±π about the vertical one, ``up_axis`` — the camera frame's
    vertical axis is y, 1; in world coordinates of ScanNet or the embedded rooms it is z, 2);
    Gaussian jitter σ = ``jitter`` (0: none, as released); centre again. Colours (in [0, 1]): with p 0.2 auto-contrast
    blended by b ~ U(0, 1); with p 0.95 a translation ~ U(−r, r) per channel (r = ``color_translation``, 0.05); with
    p 0.95 noise N(0, ``color_jitter``²) (0.005); clipped to [0, 1].
    ``augment(points (M, 3), colors (M, 3) or None, generator)`` → (points, colors), float32 tensors.
    """

    def __init__(self, scale=(0.9, 1.1), rotation=None, up_axis: int = 1, flip_p: float = 0.5, jitter: float = 0.0,
                 color_translation: float = 0.05, color_jitter: float = 0.005, autocontrast_p: float = 0.2):
        if up_axis not in (0, 1, 2):
            raise ValueError(f"up_axis must be 0, 1 or 2 (camera frame: 1 = y), got {up_axis}")
        if rotation is None:  # released bounds: ±π about the up axis, ±π/32 about the two others
            rotation = tuple((-math.pi, math.pi) if ax == up_axis else (-math.pi / 32, math.pi / 32) for ax in range(3))
        self.scale, self.rotation, self.up_axis, self.flip_p = tuple(scale), tuple(rotation), up_axis, flip_p
        self.jitter, self.color_translation, self.color_jitter = jitter, color_translation, color_jitter
        self.autocontrast_p = autocontrast_p

    def __repr__(self):
        return (f"PointAugment(scale={self.scale}, up_axis={self.up_axis}, flip_p={self.flip_p}, jitter={self.jitter}, "
                f"color_translation={self.color_translation}, color_jitter={self.color_jitter})")

    def __call__(self, points: torch.Tensor, colors: torch.Tensor | None, generator=None):
        g = generator

        def u(lo=0.0, hi=1.0):
            return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))

        p = points.double() * u(*self.scale)
        p = p - p.mean(0)
        if u() < 0.95:
            for ax in range(3):
                if ax != self.up_axis and u() < self.flip_p:
                    p[:, ax] = p[:, ax].max() - p[:, ax]
        rots = [_axis_rotation(ax, u(*self.rotation[ax])) for ax in range(3)]
        R = torch.eye(3, dtype=torch.float64)
        for i in torch.randperm(3, generator=g).tolist():
            R = R @ rots[i]
        p = p @ R.T
        if self.jitter > 0:
            p = p + self.jitter * torch.randn(p.shape, generator=g, dtype=torch.float64)
        p = (p - p.mean(0)).float()
        if colors is None:
            return p, None
        c = colors.double()
        if u() < self.autocontrast_p:
            lo, hi = c.min(0).values, c.max(0).values
            contrast = (c - lo) / (hi - lo).clamp_min(1e-6)
            b = u()
            c = (1 - b) * c + b * contrast
        if u() < 0.95:
            c = c + (torch.rand(1, 3, generator=g, dtype=torch.float64) - 0.5) * 2 * self.color_translation
        if u() < 0.95:
            c = c + self.color_jitter * torch.randn(c.shape, generator=g, dtype=torch.float64)
        return p, c.clamp(0, 1).float()


@register_method("image_to_point")
class ImageToPoint(Method):
    """A sparse 3D backbone + MLP head trained to reproduce the frozen 2D network's pixel features (stage 2).

    Args:
        backbone: a sparse ssl3d backbone (Res16UNet…) with ``in_channels`` 0 (geometry only) or 3 (RGB in [0, 1],
            as the fine-tuning datasets feed it; released: RGB).
        teacher: the stage-1 :class:`~ssl3d.models.resunet2d.ResUNet2d`, or the path of its
            :func:`~ssl3d.models.resunet2d.save_resunet2d` file; frozen and kept in eval mode.
        num_pairs: voxel–pixel pairs sampled per scan (2,000); all visible voxels when fewer.
        temperature: τ (0.4). voxel_size: metres (0.05).
        negatives: ``"batch"`` — one InfoNCE over all pairs of the batch (released); ``"scan"`` — one per scan,
            averaged (negatives from the same scan only).
        pairing: ``"project"`` — re-project the camera-frame points with K (what real data with K and a pose needs);
            ``"pixels"`` — use the items' stored source pixels (row, column).
        frame: ``"camera"`` — the 3D network sees the points in the camera frame (the items' ``points``; up = −y);
            ``"world"`` — rotated by the camera-to-world rotation of each item's ``pose`` (4, 4) after the pairing,
            so that the 3D network sees gravity-aligned scans (up = z) like the scenes it is fine-tuned on (the
            released code's ScanNet points are in world coordinates, z up). Items then need ``pose``.
        augment: a :class:`PointAugment` (default: the released settings, with the up axis of ``frame``: y for
            ``"camera"``, z for ``"world"``) or None; applied in training mode only.
        teacher_size: (H', W') to resize images to before the teacher (e.g. ScanNet's 640 × 480 → 320 × 240); the
            pixel coordinates follow (:func:`ssl3d.distill.resize_uv`). None: native size.
        head_hidden: hidden widths of the head (default: one layer of the backbone's width, as released).
        generator: torch generator for augmentation and pair sampling (None: the global torch RNG, which
            ``ssl3d.train`` checkpoints restore).
    Items: :class:`~ssl3d.data.datasets.RGBDFrameDataset` items built **without** a transform, or
    :func:`ssl3d.distill.rgbd_item` of a real frame: ``image``, ``K``, ``points`` (camera frame) and ``pixels``.
    """

    def __init__(self, backbone, teacher: ResUNet2d | str | Path | None = None, num_pairs: int = 2000,
                 temperature: float = 0.4, voxel_size: float = 0.05, negatives: str = "batch",
                 pairing: str = "project", augment: PointAugment | None | str = "default", teacher_size=None,
                 head_hidden=None, generator: torch.Generator | None = None, frame: str = "camera"):
        super().__init__(backbone)
        if getattr(backbone, "kind", None) != "sparse":
            raise TypeError(f"image_to_point trains a sparse (voxel) backbone such as res16unet34c, got "
                            f"{type(backbone).__name__} (kind {getattr(backbone, 'kind', None)!r})")
        if backbone.in_channels not in (0, 3):
            raise ValueError(f"the backbone must take 0 (geometry only) or 3 (RGB) input channels, got "
                             f"{backbone.in_channels}: build it with in_channels=3 or 0")
        if teacher is None:
            raise ValueError("image_to_point needs the frozen 2D network: pass teacher=<ResUNet2d> or the path of a "
                             "save_resunet2d file written after stage 1 ('pixel_contrast')")
        if isinstance(teacher, str | Path):
            teacher = load_resunet2d(teacher)
        if not isinstance(teacher, ResUNet2d):
            raise TypeError(f"teacher must be a ResUNet2d or a checkpoint path, got {type(teacher).__name__}")
        if negatives not in ("batch", "scan"):
            raise ValueError(f"negatives must be 'batch' (released) or 'scan', got {negatives!r}")
        if frame not in ("camera", "world"):
            raise ValueError(f"frame must be 'camera' (points as given) or 'world' (rotated by each item's pose), got "
                             f"{frame!r}")
        if pairing not in ("project", "pixels"):
            raise ValueError(f"pairing must be 'project' (re-project with K) or 'pixels' (stored), got {pairing!r}")
        if not (isinstance(num_pairs, int) and num_pairs >= 1):
            raise ValueError(f"num_pairs must be an int ≥ 1 (paper: 2000), got {num_pairs!r}")
        ref = next(backbone.parameters())
        self.teacher = teacher.to(ref.device).eval().requires_grad_(False)
        self.teacher.unfreeze_encoder()
        self.head = SegHead(backbone.feat_dim, teacher.out_channels,
                            hidden=(backbone.feat_dim,) if head_hidden is None else tuple(head_hidden)).to(ref.device)
        self.num_pairs, self.temperature, self.voxel_size = num_pairs, temperature, voxel_size
        self.negatives, self.pairing, self.generator, self.frame = negatives, pairing, generator, frame
        self.augment = PointAugment(up_axis=2 if frame == "world" else 1) if augment == "default" else augment
        self.teacher_size = None if teacher_size is None else tuple(int(s) for s in teacher_size)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: BN statistics never move
        return self

    # -- batches --------------------------------------------------------------------------------------------
    def pair_item(self, item: Mapping, b: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """One item's pairing, before any augmentation: (uv (M, 2) float64 (column, row), visible (M,) bool)."""
        for k in ("image", "K", "points"):
            if k not in item:
                raise KeyError(f"item {b} has no {k!r} (keys {sorted(item)}): use RGBDFrameDataset items or "
                               f"ssl3d.distill.rgbd_item(color, depth, K, voxel_size)")
        H, W = item["image"].shape[-2:]
        pts = torch.as_tensor(item["points"]).double()
        if self.pairing == "pixels":
            if "pixels" not in item:
                raise KeyError(f"pairing='pixels' needs the items' 'pixels' (row, column); item {b} has none — use "
                               f"pairing='project'")
            pix = torch.as_tensor(item["pixels"]).long()
            return pix[:, [1, 0]].double(), torch.ones(len(pix), dtype=torch.bool)
        uv, z = distill.project_points(pts, item["K"])
        vis = distill.visible_mask(uv, z, (H, W))
        if not bool(vis.any()):
            behind = int((z <= 0).sum())
            raise ValueError(f"no point of scan {b} projects into its {H} × {W} image ({behind} of {len(z)} points "
                             f"are behind the camera, z ≤ 0): the points must be in this camera's frame (world "
                             f"points need the camera-to-world pose inverted first) and K in pixels of this image")
        if "pixels" in item:  # the stored source pixels must agree: else the points were moved before pairing
            pix = torch.as_tensor(item["pixels"]).long()
            err = (uv[vis] - pix[vis][:, [1, 0]].double()).abs().max().item() if len(pix) == len(uv) else math.inf
            if not err < 0.5:
                raise ValueError(f"scan {b}: the points re-projected with K land up to {err:.2f} px away from their "
                                 f"stored source pixels — they were transformed before the pairing. Build "
                                 f"RGBDFrameDataset(transform=None) and give 3D augmentations to the method "
                                 f"(augment=PointAugment(...)), which applies them after pairing")
        return uv, vis

    def make_batch(self, items: list[dict], augment: bool = True, num_pairs: int | None = -1) -> dict:
        """Items → a batch: ``image`` (B, 3, H, W), ``K``, ``coords`` (ΣV, 4) of the augmented voxels, ``feats``
        (ΣV, 3) for an RGB backbone, and the pairs ``pair_voxel`` (ΣP,) rows of ``coords``, ``pair_uv`` (ΣP, 2)
        float (column, row) in the image, ``pair_batch`` (ΣP,). ``num_pairs``: per scan (-1: the method's, None:
        every visible voxel)."""
        if not items:
            raise ValueError("make_batch needs at least one item")
        sizes = {tuple(it["image"].shape) for it in items}
        if len(sizes) != 1:
            raise ValueError(f"the images of one batch must share one size, got {sorted(sizes)}: resize/crop the "
                             f"frames (ssl3d.distill.crop_rgbd) or use batch_size=1")
        n_pairs = self.num_pairs if num_pairs == -1 else num_pairs
        g = self.generator
        coords, feats, pv, puv, pb = [], [], [], [], []
        offset = 0
        for b, it in enumerate(items):
            uv, vis = self.pair_item(it, b)
            pts = torch.as_tensor(it["points"]).float()
            colors = None
            if self.backbone.in_channels == 3:
                H, W = it["image"].shape[-2:]
                if "pixels" in it:
                    rc = torch.as_tensor(it["pixels"]).long()
                else:
                    rc = torch.stack([torch.floor(uv[:, 1] + 0.5), torch.floor(uv[:, 0] + 0.5)], 1)
                    rc = rc.nan_to_num(0).long().clamp_min(0).minimum(torch.tensor([H - 1, W - 1]))
                colors = it["image"][:, rc[:, 0], rc[:, 1]].T.float()  # (M, 3) colour of each point's pixel
            if self.frame == "world":  # camera → world orientation (the translation is dropped: voxels are shifted)
                if "pose" not in it:
                    raise KeyError(f"frame='world' needs each item's camera-to-world 'pose' (4, 4); item {b} has none "
                                   f"(keys {sorted(it)}): add it, or use frame='camera'")
                R = torch.as_tensor(np.asarray(it["pose"]) if not isinstance(it["pose"], torch.Tensor) else it["pose"],
                                    dtype=torch.float64)[:3, :3]
                pts = (pts.double() @ R.T).float()
            if augment and self.augment is not None:
                pts, colors = self.augment(pts, colors, g)
            pts = pts - pts.min(0).values  # non-negative voxel coordinates
            vox = G.voxelize(pts, self.voxel_size, feats=colors)
            rep = vox.index  # (V,) representative (first) point of each voxel
            cand = torch.nonzero(vis[rep]).squeeze(1)  # voxels whose representative point is visible
            if n_pairs is not None and len(cand) > n_pairs:
                cand = cand[torch.randperm(len(cand), generator=g)[:n_pairs]]
            coords.append(vox.coords)
            if colors is not None:
                feats.append(vox.feats)
            pv.append(cand + offset)
            puv.append(uv[rep[cand]])
            pb.append(torch.full((len(cand),), b, dtype=torch.long))
            offset += len(vox)
        out = {"image": torch.stack([torch.as_tensor(it["image"]).float() for it in items]),
               "K": torch.stack([torch.as_tensor(it["K"]).float() for it in items]),
               "coords": G.with_batch_index(coords),
               "pair_voxel": torch.cat(pv), "pair_uv": torch.cat(puv).float(), "pair_batch": torch.cat(pb),
               "offsets": torch.tensor([0] + [len(c) for c in coords]).cumsum(0)}
        if feats:
            out["feats"] = torch.cat(feats).float()
        return out

    def collate(self, items: list[dict]) -> dict:
        return self.make_batch(items, augment=self.training)

    # -- the loss -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def targets(self, batch: Mapping) -> torch.Tensor:
        """The frozen 2D features at the pairs' pixels: (ΣP, C), one teacher pass per image."""
        dev = self.device
        image = batch["image"].to(dev)
        uv = batch["pair_uv"].to(dev)
        if self.teacher_size is not None and tuple(image.shape[-2:]) != self.teacher_size:
            uv = distill.resize_uv(uv, image.shape[-2:], self.teacher_size)
            image = F.interpolate(image, size=self.teacher_size, mode="bilinear", align_corners=False, antialias=True)
        fmap = self.teacher(image)  # (B, C, H, W) unit features
        return distill.bilinear_sample(fmap, uv, batch["pair_batch"].to(dev))

    def point_features(self, batch: Mapping) -> torch.Tensor:
        """The 3D network's projected features of the paired voxels: (ΣP, C)."""
        z = self.head(self.backbone.encode(batch)["feats"])  # (ΣV, C)
        return z[batch["pair_voxel"].to(z.device)]

    def forward(self, batch: Mapping) -> dict:
        if len(batch["pair_voxel"]) < 2:
            raise ValueError("fewer than 2 voxel–pixel pairs in the batch: the scans project (almost) nowhere into "
                             "their images — check K, the image size and the voxel size")
        t = self.targets(batch)  # (P, C)
        z = self.point_features(batch)  # (P, C)
        if self.negatives == "batch":
            loss, st = info_nce(z, t, self.temperature, return_stats=True)
            acc = st["accuracy"]
        else:
            bi = batch["pair_batch"].to(z.device)
            losses, hits = [], 0.0
            for b in torch.unique(bi).tolist():
                m = bi == b
                if int(m.sum()) < 2:
                    continue
                lb, sb = info_nce(z[m], t[m], self.temperature, return_stats=True)
                losses.append(lb)
                hits += sb["accuracy"] * sb["num_pairs"]
            loss, acc = torch.stack(losses).mean(), hits / len(z)
        return {"loss": loss, "accuracy": acc, "num_pairs": float(len(z))}

    @torch.no_grad()
    def retrieval(self, items: list[dict], num_candidates: int = 1024, generator: torch.Generator | None = None,
                  batch_size: int = 4) -> dict:
        """The notebook's check on (held-out) scans: top-1 accuracy with which a voxel's 3D feature retrieves its
        own pixel's 2D feature among ``num_candidates`` pairs of the same scan (:func:`ssl3d.distill.
        retrieval_accuracy`), every visible voxel, no augmentation, eval mode."""
        was = self.training
        self.eval()
        try:
            qs, ks, bs = [], [], []
            for s in range(0, len(items), batch_size):
                batch = self.make_batch(items[s:s + batch_size], augment=False, num_pairs=None)
                qs.append(self.point_features(batch).cpu())
                ks.append(self.targets(batch).cpu())
                bs.append(batch["pair_batch"] + s)
            return distill.retrieval_accuracy(torch.cat(qs), torch.cat(ks), num_candidates, torch.cat(bs), generator)
        finally:
            self.train(was)
