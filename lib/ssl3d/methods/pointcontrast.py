"""PointContrast (Xie et al., ECCV 2020) as a method: two overlapping views, one sparse U-Net, a contrastive loss on
the matched points.

    f0 = normalize(backbone(view 0))     (ΣN0, C)        f1 = normalize(backbone(view 1))     (ΣN1, C)
    loss = point_info_nce(f0, f1, matches)   or   hardest_contrastive(f0, f1, matches)

Algorithm 1 of the paper: views come from :class:`ssl3d.data.datasets.ViewPairDataset` (embedded RGB-D rooms,
pairs with ≥ 30 % overlap, each view independently rotated) or ``ScanNetPairs`` (real ScanNet frames); matches are
the ground-truth correspondences. The losses are :mod:`ssl3d.contrastive`. The released network L2-normalises its
output (``normalize_feature``); here the method normalises, so the backbone handed on to fine-tuning keeps its raw
32-d output under a fresh head, as the released fine-tuning does with its re-initialised last layer.

Metrics logged with the loss (a collapse measure, since the paper reports hardest-contrastive collapsing with long
training): ``accuracy`` (InfoNCE: top-1 of the positive among the sampled keys), ``feature_std`` (mean per-channel
standard deviation of the normalised features; 1/√C for isotropic features, → 0 when they collapse) and
``effective_rank`` (exp of the entropy of the normalised singular values, between 1 and C).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from ssl3d import contrastive as CL
from ssl3d.data.datasets import collate_pairs
from ssl3d.methods import register_method
from ssl3d.methods.base import Method

__all__ = ["PointContrast", "effective_rank"]

LOSSES = ("nce", "hardest")


def effective_rank(f: torch.Tensor, max_rows: int = 2048) -> torch.Tensor:
    """exp(H(σ / Σσ)) of the singular values σ of the centred features (Roy & Vetterli, 2007): (N, C) → scalar in
    [1, C]. Uses the first ``max_rows`` rows."""
    x = f[:max_rows].float()
    s = torch.linalg.svdvals(x - x.mean(0))
    p = s / s.sum().clamp_min(1e-12)
    return torch.exp(-(p * p.clamp_min(1e-12).log()).sum())


@register_method("pointcontrast")
class PointContrast(Method):
    """Sparse backbone trained with PointInfoNCE (``loss="nce"``) or the hardest-contrastive loss (``"hardest"``).

    Args (defaults: the released code — ../shared/REFERENCE.md):
        temperature: τ of PointInfoNCE (0.4 in the released launch scripts; 0.07 in its config file).
        num_pos: PointInfoNCE pairs per batch (4,096).
        pos_margin, neg_margin, hardest_num_pos, num_hn: the hardest-contrastive loss (0.1, 1.4, 1,024 and 256 per
            scene).
    Pairs and negative candidates are drawn from torch's global RNG, whose state ``ssl3d.train`` checkpoints.
    """

    def __init__(self, backbone, loss: str = "nce", temperature: float = CL.TAU_LAUNCH_SCRIPT, num_pos: int = 4096,
                 pos_margin: float = 0.1, neg_margin: float = 1.4, hardest_num_pos: int = 1024, num_hn: int = 256):
        super().__init__(backbone)
        if backbone.kind != "sparse":
            raise TypeError(f"PointContrast trains a sparse backbone (a Res16UNet), got a {backbone.kind} backbone "
                            f"{type(backbone).__name__}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss, self.temperature, self.num_pos = loss, temperature, num_pos
        self.pos_margin, self.neg_margin, self.hardest_num_pos, self.num_hn = (pos_margin, neg_margin,
                                                                                hardest_num_pos, num_hn)

    def collate(self, items: list[dict]) -> dict:
        return collate_pairs(items)

    def features(self, batch: Mapping, view: int) -> torch.Tensor:
        """L2-normalised per-voxel features of one view of a :func:`collate_pairs` batch: (ΣN_v, C)."""
        sub = {"coords": batch[f"coords{view}"]}
        if f"feats{view}" in batch:
            sub["feats"] = batch[f"feats{view}"]
        return F.normalize(self.backbone.encode(sub)["feats"], dim=1)

    def forward(self, batch: Mapping) -> dict[str, torch.Tensor]:
        f0, f1 = self.features(batch, 0), self.features(batch, 1)  # (ΣN0, C), (ΣN1, C)
        matches = batch["correspondences"].to(f0.device)  # (ΣP, 2) concatenated indices
        if self.loss == "nce":
            loss, stats = CL.point_info_nce(f0, f1, matches, self.num_pos, self.temperature, return_stats=True)
            out = {"loss": loss, "accuracy": torch.tensor(stats["accuracy"])}
        else:
            loss, stats = CL.hardest_contrastive(f0, f1, matches, self.pos_margin, self.neg_margin,
                                                 self.hardest_num_pos, self.num_hn, batch_size=len(batch["T"]),
                                                 return_stats=True)
            out = {"loss": loss, "pos_loss": torch.tensor(stats["pos_loss"]),
                   "neg_loss": torch.tensor(stats["neg_loss"])}
        with torch.no_grad():
            out["feature_std"] = f0.std(0).mean()
            out["effective_rank"] = effective_rank(f0)
        return out
