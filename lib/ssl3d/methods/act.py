"""ACT as two methods: ``"act_dvae"`` (stage 1, train the cross-modal teacher) and ``"act"`` (stage 2, distil it).

    dvae    = ssl3d.act.DiscreteVAE(**ssl3d.act.SMOKE_DVAE)
    stage1  = build_method("act_dvae", dvae, **SMOKE_SCHEDULE)              # Chamfer + w(t)·KL, Gumbel τ(t)
    pretrain(stage1, shapes, epochs=…, batch_size=…, lr=5e-4, weight_decay=5e-4)
    student = build_model("point_transformer", **ssl3d.models.transformer.SMOKE)
    stage2  = build_method("act", student, teacher=dvae)                    # masked modelling of the teacher
    pretrain(stage2, shapes, epochs=…, batch_size=…, lr=1e-3, weight_decay=0.05)
    save_backbone(student, "act.pt")                                        # probes / fine-tuning start here

Stage 2 (ACT's ``ACT_PointDistillation``): the cloud is cut into G patches once, shared by student and teacher;
a random 80 % of the tokens are masked (exactly ⌊0.8 G⌋ per cloud); the student encoder sees the visible tokens
(+ cls) only; a light decoder (2 blocks) gets them back with a shared ``mask_token`` at every masked position
(decoder positional MLP on all centres) and predicts, through ``proj_head`` (Linear), the teacher's latent
feature t_g of each masked token. The teacher is the frozen stage-1 dVAE: t = dgcnn_2(PromptedTransformer(codebook
[hard Gumbel sample at τ = 1 of its code logits])) — a *stochastic* target, as in the code
(``forward_tokenizer_features``); ``target="argmax"`` takes the most likely code instead (deterministic). Loss::

    L = 1/B Σ_b [1 − 1/M Σ_{g masked} cos(ŝ_bg, t_bg)]             (lightly's NegativeCosineSimilarity, + 1)

Both methods keep a ``global_step`` buffer that advances once per training-mode forward: the Gumbel τ and KL
weight schedules of stage 1 read it, and it is saved with the state dict, so a resumed run continues its schedules.

Differences from the released code, stated: the teacher of stage 2 stays in eval mode (the code leaves it in
training mode, so its BatchNorm uses batch statistics and its prompt dropout is on while it produces targets);
``proj_head`` maps to the teacher's actual feature width (``decoder_dims``; the code uses ``tokens_dims``, equal in
every released config).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ssl3d.act import DiscreteVAE, chamfer_l1, chamfer_l2, gumbel_tau, kl_to_uniform, kl_weight, load_dvae
from ssl3d.data.datasets import collate_objects
from ssl3d.methods import register_method
from ssl3d.methods.base import Method
from ssl3d.models.transformer import PointTransformer, TransformerEncoder, pos_mlp, random_mask

__all__ = ["ACTdVAE", "ACTDistillation", "TransformerDecoder", "FULL_SCHEDULE", "SMOKE_SCHEDULE", "FULL_PRETRAIN_DVAE",
           "FULL_PRETRAIN_ACT"]

# Stage-1 schedules: the released config (100 k iterations of τ and KL weight, KL held at 0 for 10 k), and a
# smoke version compressed to a ~100-iteration run.
FULL_SCHEDULE = {"temp_start": 1.0, "temp_target": 0.0625, "temp_steps": 100_000, "kl_start": 0.0, "kl_target": 0.1,
                 "kl_steps": 100_000, "kl_warmup": 10_000}
SMOKE_SCHEDULE = {"temp_start": 1.0, "temp_target": 0.0625, "temp_steps": 100, "kl_start": 0.0, "kl_target": 0.1,
                  "kl_steps": 100, "kl_warmup": 10}
# ssl3d.train.pretrain settings of the released configs (cfgs/autoencoder/act_dvae_with_pretrained_transformer.yaml,
# cfgs/pretrain/pretrain_act_distill.yaml: AdamW, cosine LR with 10 warm-up epochs — give `warmup` in iterations).
# The code excludes biases, 1-d parameters and tokens from weight decay; ssl3d.train.make_optimizer decays all.
FULL_PRETRAIN_DVAE = {"epochs": 300, "batch_size": 64, "optimizer": "adamw", "lr": 5e-4, "weight_decay": 5e-4,
                      "scheduler": "cosine"}
FULL_PRETRAIN_ACT = {"epochs": 300, "batch_size": 128, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05,
                     "scheduler": "cosine"}


def _points(method: Method, batch: Mapping) -> torch.Tensor:
    if "points" not in batch:
        raise KeyError(f"{type(method).__name__} needs batch['points'] (B, N, 3) — use method.collate; got keys "
                       f"{sorted(batch)}")
    return batch["points"].to(method.device)


@register_method("act_dvae")
class ACTdVAE(Method):
    """Stage 1: train the dVAE's trainable parts (everything but the frozen Transformer).

    loss = CD(coarse, P) + CD(fine, P) + w(t) · KL(u ‖ q̄), codes = soft Gumbel-softmax at τ(t) (``hard=False``).

    Args:
        backbone: a :class:`ssl3d.act.DiscreteVAE`.
        temp_*, kl_*: the schedules (:func:`ssl3d.act.gumbel_tau`, :func:`ssl3d.act.kl_weight`).
        chamfer: ``"l1"`` (ACT) or ``"l2"``.  hard: straight-through hard Gumbel samples instead of soft ones.
    Metrics: ``recon`` (the two Chamfer terms), ``kl``, ``tau``, ``kl_weight``, ``code_perplexity`` (exp of the
    entropy of the batch's hard code histogram: how many codes are in use).
    """

    def __init__(self, backbone: DiscreteVAE, temp_start: float = 1.0, temp_target: float = 0.0625,
                 temp_steps: int = 100_000, kl_start: float = 0.0, kl_target: float = 0.1, kl_steps: int = 100_000,
                 kl_warmup: int = 10_000, chamfer: str = "l1", hard: bool = False):
        if not isinstance(backbone, DiscreteVAE):
            raise TypeError(f"act_dvae trains an ssl3d.act.DiscreteVAE, got {type(backbone).__name__}")
        super().__init__(backbone)
        if chamfer not in ("l1", "l2"):
            raise ValueError(f"chamfer must be 'l1' or 'l2', got {chamfer!r}")
        self.temp = (temp_start, temp_target, temp_steps)
        self.kl = (kl_start, kl_target, kl_steps, kl_warmup)
        self.chamfer, self.hard = chamfer, hard
        self.register_buffer("global_step", torch.zeros((), dtype=torch.long))

    def collate(self, items: list[dict]) -> dict:
        return collate_objects(items)

    def schedules(self, step: int | None = None) -> tuple[float, float]:
        """(τ, KL weight) at ``step`` (default: the current global step)."""
        s = int(self.global_step) if step is None else step
        return gumbel_tau(s, *self.temp), kl_weight(s, *self.kl)

    def forward(self, batch: Mapping) -> dict[str, torch.Tensor]:
        points = _points(self, batch)
        tau, w = self.schedules()
        out = self.backbone(points, tau=tau, hard=self.hard)
        b, g = out["coarse"].shape[:2]
        cd = chamfer_l1 if self.chamfer == "l1" else chamfer_l2
        gt = out["neighborhood"].reshape(b * g, -1, 3)
        recon = cd(out["coarse"].reshape(b * g, -1, 3), gt) + cd(out["fine"].reshape(b * g, -1, 3), gt)
        kl = kl_to_uniform(out["logits"])
        if self.training:
            self.global_step += 1
        with torch.no_grad():
            hist = torch.bincount(out["logits"].argmax(-1).flatten(), minlength=out["logits"].shape[-1]).float()
            p = hist / hist.sum()
            perplexity = torch.exp(-(p * p.clamp_min(1e-12).log()).sum())
        return {"loss": recon + w * kl, "recon": recon.detach(), "kl": kl.detach(), "tau": torch.tensor(tau),
                "kl_weight": torch.tensor(w), "code_perplexity": perplexity}


class TransformerDecoder(nn.Module):
    """ACT's light decoder: blocks (positions added before each) → LayerNorm on the last ``return_token_num``
    tokens. Linear weights Xavier-uniform, as in the code."""

    def __init__(self, embed_dim: int, depth: int = 2, num_heads: int = 6, drop_path_rate: float = 0.1):
        super().__init__()
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = TransformerEncoder(embed_dim, depth, num_heads, drop_path_rate=dpr).blocks
        self.norm = nn.LayerNorm(embed_dim)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, return_token_num: int) -> torch.Tensor:
        for block in self.blocks:
            x = block(x + pos)
        return self.norm(x[:, -return_token_num:])


@register_method("act")
class ACTDistillation(Method):
    """Stage 2: masked modelling of the frozen teacher's latent features (module docstring).

    Args:
        backbone: the student, a ``point_transformer`` (its ``num_group``/``group_size`` must match the teacher's).
        teacher: the trained stage-1 :class:`~ssl3d.act.DiscreteVAE`, or the path of a :func:`ssl3d.act.save_dvae`
            file. A frozen copy is kept (``requires_grad=False``, always in eval mode).
        mask_ratio: fraction of masked tokens (0.8).  decoder_depth, decoder_num_heads: the light decoder (2
            blocks; heads default: the student's, 6).
        drop_path_rate: of the decoder (0.1).  target: ``"gumbel"`` (ACT: hard Gumbel sample at τ = 1,
            stochastic) or ``"argmax"`` (deterministic).
        center_targets: subtract a running mean of the teacher's features from the targets (an ssl3d option, not
            in ACT; off by default). A short-trained teacher's features share one dominant direction — predicting
            their mean alone scores a cosine near 0.9 — and the cosine loss is then met by a constant; centring
            (as DINO centres its teacher) leaves only what differs between patches. Momentum 0.9 per step,
            started at the first batch's mean.
    Metrics: ``cosine`` (mean cosine similarity on the masked tokens).
    """

    def __init__(self, backbone: PointTransformer, teacher: DiscreteVAE | str | os.PathLike, mask_ratio: float = 0.8,
                 decoder_depth: int = 2, decoder_num_heads: int | None = None, drop_path_rate: float = 0.1,
                 target: str = "gumbel", center_targets: bool = False):
        if not isinstance(backbone, PointTransformer):
            raise TypeError(f"act distils into a point_transformer backbone, got {type(backbone).__name__}")
        super().__init__(backbone)
        teacher = load_dvae(teacher) if isinstance(teacher, str | os.PathLike) else copy.deepcopy(teacher)
        if not isinstance(teacher, DiscreteVAE):
            raise TypeError(f"teacher must be an ssl3d.act.DiscreteVAE or the path of one, got "
                            f"{type(teacher).__name__}")
        if (teacher.num_group, teacher.group_size) != (backbone.num_group, backbone.group_size):
            raise ValueError(f"student groups {backbone.num_group}×{backbone.group_size} differ from the teacher's "
                             f"{teacher.num_group}×{teacher.group_size}: both must see the same patches — build the "
                             f"student with num_group={teacher.num_group}, group_size={teacher.group_size}")
        if target not in ("gumbel", "argmax"):
            raise ValueError(f"target must be 'gumbel' (ACT) or 'argmax', got {target!r}")
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.mask_ratio, self.target = mask_ratio, target
        self.teacher = teacher.requires_grad_(False).eval()
        c = backbone.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.decoder_pos_embed = pos_mlp(c)
        self.decoder = TransformerDecoder(c, decoder_depth, decoder_num_heads or backbone.num_heads, drop_path_rate)
        self.proj_head = nn.Linear(c, teacher.feat_dim)
        self.register_buffer("global_step", torch.zeros((), dtype=torch.long))
        self.center_targets = center_targets
        self.register_buffer("target_mean", torch.zeros(teacher.feat_dim))

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the frozen teacher never leaves eval mode
        return self

    def collate(self, items: list[dict]) -> dict:
        return collate_objects(items)

    @torch.no_grad()
    def targets(self, neighborhood: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """The teacher's latent features of every token: (B, G, D)."""
        return self.teacher.tokenizer_features(neighborhood, center, sampling=self.target)

    def forward(self, batch: Mapping) -> dict[str, torch.Tensor]:
        points = _points(self, batch)
        neighborhood, center = self.backbone.group(points)  # shared by student and teacher
        b, g = center.shape[:2]
        mask = random_mask(b, g, self.mask_ratio, device=points.device)  # (B, G) True = masked
        _, z_vis = self.backbone.forward_tokens(self.backbone.embed(neighborhood), center, visible=~mask)
        c, m = z_vis.shape[-1], int(mask[0].sum())
        pos = torch.cat([self.decoder_pos_embed(center[~mask].reshape(b, -1, 3)),
                         self.decoder_pos_embed(center[mask].reshape(b, m, 3))], dim=1)  # (B, G, C)
        x = torch.cat([z_vis, self.mask_token.expand(b, m, c)], dim=1)  # (B, G, C)
        pred = self.proj_head(self.decoder(x, pos, m))  # (B, M, D)
        target = self.targets(neighborhood, center)  # (B, G, D)
        if self.center_targets:
            if self.training:
                batch_mean = target.mean((0, 1))  # (D,)
                self.target_mean.copy_(batch_mean if int(self.global_step) == 0
                                       else 0.9 * self.target_mean + 0.1 * batch_mean)
            target = target - self.target_mean
        target = target[mask].reshape(b, m, -1)  # (B, M, D)
        cos = F.cosine_similarity(pred, target, dim=-1, eps=1e-8)  # (B, M)
        loss = (1 - cos.mean(1)).mean()
        if self.training:
            self.global_step += 1
        return {"loss": loss, "cosine": cos.detach().mean()}
