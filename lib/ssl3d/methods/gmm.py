"""GMM parametric bottleneck pre-training (Eckart et al., CVPR 2021) as a method.

    logits = head(backbone.encode(batch)["feats"])       (B, N, J) point backbones / (ΣM, J) sparse backbones
    loss   = gmm.gmm_nll(points, logits)                 the mixture's negative log-likelihood of its own points

The maths (soft partition → mixture in closed form → NLL) is :mod:`ssl3d.gmm`. This file only connects a backbone,
a J-way per-site head and that loss. On a sparse backbone the mixture's "points" are the voxel centres; shapes have
different numbers of voxels, so the batch is padded to (B, M_max, ·) with a validity mask and the whole batch goes
through ``gmm_nll`` at once (no Python loop over shapes). Items that are already voxelized (the scene datasets:
``coords`` without ``points`` per voxel) are batched by ``collate_scenes``; each room is then one mixture over its
voxel centres ``(coords + ½)·voxel_size`` (metres).

Metrics logged with the loss: ``effective_components`` = exp(H(π)), the perplexity of the mixing weights (how many
components a shape really uses; J when all are equal), averaged over the batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ssl3d import gmm
from ssl3d.data.datasets import collate_for, collate_scenes
from ssl3d.geometry import pad_batch
from ssl3d.methods import register_method
from ssl3d.methods.base import Method
from ssl3d.models.heads import SegHead, head_features, head_input

__all__ = ["GMMPretraining", "effective_components", "partition_stats"]


def effective_components(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """exp(H(π_b)) per shape, π_b = mean over its (valid) points of softmax(logits): (B, N, J) → (B,)."""
    gamma = logits.softmax(-1)  # (B, N, J)
    if mask is not None:
        gamma = gamma * mask.unsqueeze(-1)
        pi = gamma.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)  # (B, J)
    else:
        pi = gamma.mean(1)  # (B, J)
    return torch.exp(-(pi * pi.clamp_min(1e-12).log()).sum(-1))


@register_method("gmm")
class GMMPretraining(Method):
    """Backbone + J-way per-site head trained with the GMM negative log-likelihood.

    Args:
        backbone: any ssl3d backbone (point or sparse).
        J: mixture components (the pretext segmentation's classes).
        cov, eps, deepgmr_iso: passed to :func:`ssl3d.gmm.gmm_params` ("full" | "diag" | "iso"; ε on the variances).
        voxel_size: voxel side for sparse backbones (units of the unit-sphere clouds).
        head: overrides of the backbone family's default head (``hidden``, ``dropout``, ``act``).
    """

    def __init__(self, backbone, J: int = 16, cov: str = "full", eps: float = 1e-5, deepgmr_iso: bool = False,
                 voxel_size: float = 0.05, head: dict | None = None):
        super().__init__(backbone)
        if J < 1:
            raise ValueError(f"J must be ≥ 1 mixture components, got {J}")
        if cov not in gmm.COV_TYPES:
            raise ValueError(f"cov must be one of {gmm.COV_TYPES}, got {cov!r}")
        self.J, self.cov, self.eps, self.deepgmr_iso, self.voxel_size = J, cov, eps, deepgmr_iso, voxel_size
        # a pretext head reads the backbone's output features, as PointContrast's and image-to-point's do (only task
        # heads replace a sparse U-Net's output layer: models.heads)
        head = {"input": "feats", **(head or {})}
        self.head = SegHead.for_backbone(backbone, J, **head)
        self.head_input = head_input(backbone, **head)

    def collate(self, items: list[dict]) -> dict:
        if "coords" in items[0]:  # voxelized scenes
            if self.backbone.kind != "sparse":
                raise ValueError("GMMPretraining: voxelized scene items need a sparse backbone")
            return collate_scenes(items)
        return collate_for(self.backbone, self.voxel_size)(items)

    def logits_and_points(self, batch: Mapping):
        """(logits (B, N, J), points (B, N, 3), mask (B, N) or None) — the mixture's inputs for this batch."""
        logits = self.head(head_features(self.backbone.encode(batch), self.head_input))
        dev = logits.device
        if self.backbone.kind == "point":
            return logits, batch["points"].to(dev), None
        b = batch["coords"][:, 0].to(dev)  # (ΣM,) shape of each voxel
        centers = batch["centers"] if "centers" in batch else (batch["coords"][:, 1:] + 0.5) * self.voxel_size
        pts, mask = pad_batch(centers.to(dev, logits.dtype), b)  # (B, M_max, 3), (B, M_max)
        return pad_batch(logits, b)[0], pts, mask

    def forward(self, batch: Mapping) -> dict[str, torch.Tensor]:
        logits, pts, mask = self.logits_and_points(batch)
        masked = {} if mask is None else {"mask": mask}
        loss = gmm.gmm_nll(pts, logits, cov=self.cov, eps=self.eps, deepgmr_iso=self.deepgmr_iso, **masked)
        with torch.no_grad():
            eff = effective_components(logits, mask).mean()
        return {"loss": loss, "effective_components": eff}

    @torch.no_grad()
    def partition(self, batch: Mapping) -> torch.Tensor:
        """Hard partition (argmax component) of every site: (B, N) for point backbones, (ΣM,) for sparse ones."""
        was = self.training
        self.eval()
        try:
            return self.head(head_features(self.backbone.encode(batch), self.head_input)).argmax(-1)
        finally:
            self.train(was)


@torch.no_grad()
def partition_stats(method: GMMPretraining, dataset, batch_size: int = 64, min_share: float = 0.01,
                    em_shapes: int = 0, em_iters: int = 40, seed: int = 0) -> dict:
    """How finely and how consistently a GMM method partitions shapes it was not trained on (point backbones).

    Returns a dict of
      nll         mean per-point negative log-likelihood of the test shapes under their own mixtures (the loss)
      eff         exp H(π) per shape, averaged: the effective number of components
      per_shape   components holding ≥ ``min_share`` of a shape's points (argmax partition), averaged over shapes
      used        components holding ≥ ``min_share`` of the points of at least one shape
      share       (J,) tensor: the fraction of all points whose argmax is each component
      nmi         normalised mutual information between the argmax partition and the ground-truth parts of each
                  shape, averaged (1 = the components are the parts up to renaming, 0 = unrelated)
      em_nll      (``em_shapes`` > 0) the mean NLL that plain EM (same J, covariance type and ε) reaches on the
                  first ``em_shapes`` shapes — what a per-shape optimiser gets, the gap a single forward pass leaves
    """
    from sklearn.metrics import normalized_mutual_info_score
    from torch.utils.data import DataLoader

    if method.backbone.kind != "point":
        raise ValueError("partition_stats needs a point backbone (per-point parts); got a sparse one")
    was = method.training
    method.eval()
    nll, eff, per_shape, nmi = [], [], [], []
    used = torch.zeros(method.J, dtype=torch.bool)
    counts = torch.zeros(method.J)
    try:
        for b in DataLoader(dataset, batch_size, collate_fn=method.collate):
            logits, pts, _ = method.logits_and_points(b)  # (B, N, J), (B, N, 3)
            per = gmm.gmm_nll(pts.double(), logits.double(), cov=method.cov, eps=method.eps,
                              deepgmr_iso=method.deepgmr_iso)  # mean over the batch's points
            nll.append(float(per) * len(pts))
            eff += effective_components(logits).tolist()
            hard = logits.argmax(-1).cpu()  # (B, N)
            share = torch.nn.functional.one_hot(hard, method.J).float().mean(1)  # (B, J)
            per_shape += (share >= min_share).sum(1).tolist()
            used |= (share >= min_share).any(0)
            counts += torch.bincount(hard.reshape(-1), minlength=method.J).float()
            nmi += [normalized_mutual_info_score(p.numpy(), h.numpy()) for p, h in zip(b["part"], hard, strict=True)]
    finally:
        method.train(was)
    out = {"nll": sum(nll) / len(dataset), "eff": sum(eff) / len(eff), "per_shape": sum(per_shape) / len(per_shape),
           "used": int(used.sum()), "nmi": sum(nmi) / len(nmi), "share": counts / counts.sum()}
    if em_shapes:
        g = torch.Generator().manual_seed(seed)
        em = []
        for i in range(min(em_shapes, len(dataset))):
            x = torch.as_tensor(dataset[i]["points"], dtype=torch.float64)
            em.append(-float(gmm.fit_gmm_em(x, method.J, iters=em_iters, cov=method.cov, eps=method.eps,
                                            generator=g).log_likelihood[-1]))
        out["em_nll"] = sum(em) / len(em)
    return out

