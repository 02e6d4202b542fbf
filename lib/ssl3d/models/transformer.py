"""Point tokenizer + the plain 3D Transformer of Point-BERT / Point-MAE / ACT, as an ssl3d backbone.

A cloud of N points becomes G tokens (Point-BERT, Yu et al. CVPR 2022; ACT, Dong et al. ICLR 2023)::

    c_g        = FPS(points, G)                            G centres (farthest-point sampling)       (B, G, 3)
    P_g        = kNN(c_g, points, K) − c_g                 one patch of K points around each centre  (B, G, K, 3)
    e_g        = MiniPointNet(P_g)                         patch embedding (max-pooled shared MLPs)  (B, G, C_e)
    x_g        = reduce_dim(e_g)                           Linear to the width C (Identity if C_e = C)
    p_g        = pos_embed(c_g) = W₂ GELU(W₁ c_g)          positional MLP of the centre 3 → 128 → C
    x⁰         = [cls ; x_1 … x_G],  p = [cls_pos ; p_1 … p_G]
    x^{l+1}    = Block_l(x^l + p)                          positions are added before *every* block
    z          = LayerNorm(x^L)
    Block(x)   = x + DropPath(Attn(LN₁ x));  then  x + DropPath(MLP(LN₂ x))     (pre-LN, GELU, no qkv bias)

``global_feats`` is ACT's fine-tuning descriptor ``[z_cls ‖ max_g z_g]`` (2C), exactly what its
``cls_head_finetune`` reads (``models/act.py``, ``PointTransformer.forward``). Tokens are the Transformer's natural
sites; the backbone contract asks for per-*point* features, so ``feats`` propagates the token features back to the
points, PointNet++-style (the feature propagation of ACT's part-segmentation model)::

    f(x) = Σ_{j ∈ 3-NN centres of x} w_j z_j,   w_j = (1 / (‖x − c_j‖² + 1e-8)) / Σ_k (1 / (‖x − c_k‖² + 1e-8))

(``point_feats="nearest"`` copies the token of the nearest centre instead), and appends the max-pooled token
feature, as ACT's part-segmentation head appends its global features: ``feats = [f(x) ‖ max_g z_g]`` (2C).

Module names follow ACT's / Point-BERT's ``PointTransformer`` (``encoder.first_conv.0``, ``reduce_dim``,
``cls_token``, ``cls_pos``, ``pos_embed.0``, ``blocks.blocks.3.attn.qkv``, ``norm``), so the authors' released
weights load through the key map of :mod:`ssl3d.models.released_act`. The grouping has no parameters and the
fine-tuning head (``cls_head_finetune``) is not part of a backbone (``ssl3d.models.heads``).

Sizes: ``FULL`` is the paper's student (12 layers, 384-d, 6 heads, 64 groups of 32 points for 1,024 points);
``SMOKE`` trains in about a minute on two CPU cores (``build_model("point_transformer", **SMOKE)``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ssl3d.geometry import fps, knn
from ssl3d.models import register
from ssl3d.models.base import Backbone, model_device
from ssl3d.utils import check_points

__all__ = ["FULL", "SMOKE", "group_points", "random_mask", "interpolate_tokens", "nearest_token", "pointwise",
           "batchnorm_last", "MiniPointNet", "DropPath", "Mlp", "Attention", "Block", "TransformerEncoder",
           "PointTransformer", "init_act_weights", "pos_mlp"]

# The paper's student (cfgs/pretrain/pretrain_act_distill.yaml: 1,024 points, 64 × 32 groups, 12 × 384, 6 heads,
# drop path 0.1) and a CPU-sized one. Fine-tuning on ScanObjectNN uses 2,048 points and num_group=128.
FULL = {"num_group": 64, "group_size": 32, "encoder_dims": 384, "embed_dim": 384, "depth": 12, "num_heads": 6,
        "drop_path_rate": 0.1}
SMOKE = {"num_group": 32, "group_size": 16, "encoder_dims": 128, "embed_dim": 128, "depth": 3, "num_heads": 4,
         "drop_path_rate": 0.1, "patch_dims": (32, 64, 128)}


# ----------------------------------------------------------------------------------------------------------
# Tokenizer: FPS centres + kNN patches, and the mini-PointNet patch embedding
# ----------------------------------------------------------------------------------------------------------
def group_points(points: torch.Tensor, num_group: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split clouds into patches: ``num_group`` FPS centres, each with its ``group_size`` nearest points.

    Args:
        points: (B, N, 3) clouds.
    Returns:
        neighborhood: (B, G, K, 3) the K nearest points of every centre (nearest first, the centre itself
        included), *relative to the centre*.  center: (B, G, 3) the FPS centres (first sample = point 0, like the
        PointNet++ CUDA kernel ACT uses).
    """
    if not isinstance(points, torch.Tensor) or points.dim() != 3:
        shape = tuple(points.shape) if hasattr(points, "shape") else type(points).__name__
        raise ValueError(f"group_points: points must be a (B, N, 3) tensor, got {shape}; add a batch dimension "
                         f"with points[None]")
    check_points(points, "points", batched=True)
    n = points.shape[1]
    if num_group < 1 or group_size < 1:
        raise ValueError(f"group_points: num_group and group_size must be ≥ 1, got {num_group}, {group_size}")
    if n < num_group or n < group_size:
        raise ValueError(f"group_points: clouds of {n} points cannot give {num_group} groups of {group_size} points; "
                         f"feed at least max(num_group, group_size) = {max(num_group, group_size)} points per cloud "
                         f"or build the model with smaller num_group / group_size")
    b = torch.arange(points.shape[0], device=points.device)[:, None]  # (B, 1)
    with torch.no_grad():
        center_idx = fps(points.detach(), num_group)  # (B, G)
    center = points[b, center_idx]  # (B, G, 3)
    with torch.no_grad():
        _, idx = knn(center.detach(), points.detach(), k=group_size)  # (B, G, K) nearest first
    neighborhood = points[b[:, :, None], idx] - center.unsqueeze(2)  # (B, G, K, 3)
    return neighborhood, center


def random_mask(batch_size: int, num_group: int, ratio: float, device=None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """ACT's random masking (``mask_type: rand``): exactly ``int(ratio · G)`` masked tokens in every row, at random.

    Returns a (B, G) bool tensor, True = masked (hidden from the student encoder, predicted by its decoder).
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"mask ratio must be in [0, 1) (at least one visible token), got {ratio}")
    num_mask = int(ratio * num_group)
    scores = torch.rand(batch_size, num_group, generator=generator)  # (B, G)
    order = scores.argsort(dim=1)  # a uniform random permutation per row
    mask = torch.zeros(batch_size, num_group, dtype=torch.bool)
    mask.scatter_(1, order[:, :num_mask], True)
    return mask.to(device) if device is not None else mask


def pointwise(conv: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1 × 1 convolution applied channel-last: (..., C_in) → (..., C_out) with the conv's own weight (C_out, C_in,
    1[, 1]) and bias — one GEMM, several times faster on the CPU than ``Conv1d`` over short sequences, and the
    parameters keep the official layout (so released weights load as they are)."""
    return F.linear(x, conv.weight.reshape(conv.weight.shape[0], -1), conv.bias)


def batchnorm_last(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over every position of a channel-last tensor (..., C) — the statistics of ``Conv1d`` + BN."""
    return bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class MiniPointNet(nn.Module):
    """Point-BERT's patch embedding (``Encoder`` in the official code): (B, G, K, 3) → (B, G, C).

    f = Conv(3→128) BN ReLU Conv(128→256) per point;  g = max_k f;  h = Conv(512→512) BN ReLU Conv(512→C) on
    [g ‖ f] per point;  out = max_k h.  The layers are the official 1 × 1 ``Conv1d`` (weights load as they are),
    applied channel-last with :func:`pointwise`. ``hidden`` = (128, 256, 512) is the official network; smaller
    widths make CPU-sized models.
    """

    def __init__(self, encoder_channel: int, hidden: tuple[int, int, int] = (128, 256, 512)):
        super().__init__()
        h1, h2, h3 = hidden
        self.encoder_channel = encoder_channel
        self.first_conv = nn.Sequential(nn.Conv1d(3, h1, 1), nn.BatchNorm1d(h1), nn.ReLU(inplace=True),
                                        nn.Conv1d(h1, h2, 1))
        self.second_conv = nn.Sequential(nn.Conv1d(2 * h2, h3, 1), nn.BatchNorm1d(h3), nn.ReLU(inplace=True),
                                         nn.Conv1d(h3, encoder_channel, 1))

    @staticmethod
    def _mlp(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        conv_a, bn, _, conv_b = seq
        return pointwise(conv_b, F.relu(batchnorm_last(bn, pointwise(conv_a, x))))

    def forward(self, point_groups: torch.Tensor) -> torch.Tensor:
        bs, g, n, _ = point_groups.shape
        f = self._mlp(self.first_conv, point_groups.reshape(bs * g, n, 3))  # (BG, K, h2)
        glob = f.max(dim=1, keepdim=True).values  # (BG, 1, h2)
        f = self._mlp(self.second_conv, torch.cat([glob.expand(-1, n, -1), f], dim=-1))  # (BG, K, C)
        return f.max(dim=1).values.reshape(bs, g, self.encoder_channel)  # (B, G, C)


# ----------------------------------------------------------------------------------------------------------
# Transformer blocks (ACT's / timm's names: norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2)
# ----------------------------------------------------------------------------------------------------------
class DropPath(nn.Module):
    """Stochastic depth: zero a whole residual branch per sample with probability p, scale survivors by 1/(1−p)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """fc1 → GELU → fc2 (dropout after each)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1, self.act, self.fc2, self.drop = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), \
            nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention: softmax(q kᵀ / √d_h) v per head, heads concatenated, then ``proj``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads={num_heads}; pick a width that is")
        self.num_heads, self.attn_drop = num_heads, attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, T, d_h) each
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))  # (B, T, C)


class Block(nn.Module):
    """Pre-LN Transformer block: x + DropPath(Attn(LN x)), then x + DropPath(MLP(LN x)).

    ``qkv_bias=False, eps=1e-5`` is Point-BERT/ACT's block; ``qkv_bias=True, eps=1e-6`` is timm's ViT block (the
    frozen ViT teacher of :mod:`ssl3d.act`), with the same parameter names.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TransformerEncoder(nn.Module):
    """A stack of blocks with the positional embedding added before each one: x ← Block(x + pos)."""

    def __init__(self, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 drop_path_rate: float | list[float] = 0.0):
        super().__init__()
        dpr = drop_path_rate if isinstance(drop_path_rate, list) else [drop_path_rate] * depth
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, drop_path=dpr[i]) for i in range(depth)])

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x + pos)
        return x


def init_act_weights(m: nn.Module) -> None:
    """ACT's ``_init_weights``: trunc-normal(0.02) Linear/Conv1d weights, zero biases, LayerNorm 1/0."""
    if isinstance(m, nn.Linear | nn.Conv1d):
        nn.init.trunc_normal_(m.weight, std=0.02)  # timm's trunc_normal_: cut at ±2 (absolute), i.e. ±100σ
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def pos_mlp(width: int) -> nn.Sequential:
    """The positional embedding of a centre: Linear(3, 128) → GELU → Linear(128, width)."""
    return nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, width))


# ----------------------------------------------------------------------------------------------------------
# Tokens → points
# ----------------------------------------------------------------------------------------------------------
def interpolate_tokens(points: torch.Tensor, center: torch.Tensor, tokens: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Inverse-squared-distance interpolation of token features at the points (PointNet++ feature propagation as
    in ACT's part segmentation): (B, N, 3), (B, G, 3), (B, G, C) → (B, N, C)."""
    k = min(k, center.shape[1])
    d2, idx = knn(points.detach(), center.detach(), k=k)  # (B, N, k)
    w = 1.0 / (d2 + 1e-8)
    w = w / w.sum(-1, keepdim=True)  # (B, N, k)
    b = torch.arange(points.shape[0], device=points.device)[:, None, None]
    return (tokens[b, idx] * w.unsqueeze(-1).to(tokens.dtype)).sum(2)  # (B, N, C)


def nearest_token(points: torch.Tensor, center: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The feature of each point's nearest centre (the patch it belongs to): → (B, N, C)."""
    _, idx = knn(points.detach(), center.detach(), k=1)  # (B, N, 1)
    b = torch.arange(points.shape[0], device=points.device)[:, None]
    return tokens[b, idx[..., 0]]


# ----------------------------------------------------------------------------------------------------------
# The backbone
# ----------------------------------------------------------------------------------------------------------
@register("point_transformer")
class PointTransformer(Backbone):
    """ACT's / Point-BERT's ``PointTransformer`` encoder (no head) under the backbone contract.

    Args:
        in_channels: must be 0 — the tokenizer reads xyz only.
        num_group, group_size: G FPS centres and K points per patch (64 × 32 for 1,024 points; 128 × 32 for the
            2,048-point ScanObjectNN fine-tuning).
        encoder_dims: width of the mini-PointNet patch embedding (``reduce_dim`` maps it to ``embed_dim``).
        patch_dims: the mini-PointNet's hidden widths (official: 128, 256, 512).
        embed_dim, depth, num_heads, mlp_ratio: the Transformer. drop_path_rate: stochastic depth, linear in depth
            from 0 (ACT: 0.1).
        point_feats: ``"interp"`` (3-NN inverse-squared-distance interpolation of the tokens) or ``"nearest"``.
        head_dims, head_dropout: the per-point head of the family (``head_spec``): ACT's part-segmentation head
            (512 → 256, dropout 0.5).
    """

    kind = "point"

    def __init__(self, in_channels: int = 0, num_group: int = 64, group_size: int = 32, encoder_dims: int = 384,
                 embed_dim: int = 384, depth: int = 12, num_heads: int = 6, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.1, patch_dims: tuple[int, int, int] = (128, 256, 512),
                 point_feats: str = "interp", head_dims: tuple[int, ...] = (512, 256), head_dropout: float = 0.5):
        super().__init__()
        if in_channels != 0:
            raise ValueError(f"PointTransformer tokenizes xyz only: build it with in_channels=0 (got {in_channels})")
        if point_feats not in ("interp", "nearest"):
            raise ValueError(f"point_feats must be 'interp' or 'nearest', got {point_feats!r}")
        if depth < 1:
            raise ValueError(f"depth must be ≥ 1, got {depth}")
        self.in_channels, self.num_group, self.group_size = 0, num_group, group_size
        self.embed_dim, self.depth, self.num_heads, self.point_feats = embed_dim, depth, num_heads, point_feats
        self.encoder = MiniPointNet(encoder_dims, tuple(patch_dims))
        self.reduce_dim = nn.Identity() if encoder_dims == embed_dim else nn.Linear(encoder_dims, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = pos_mlp(embed_dim)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = TransformerEncoder(embed_dim, depth, num_heads, mlp_ratio, dpr)
        self.norm = nn.LayerNorm(embed_dim)
        self.feat_dim, self.global_dim = 2 * embed_dim, 2 * embed_dim
        self.head_spec = {"hidden": tuple(head_dims), "dropout": head_dropout, "act": "relu"}
        self.apply(init_act_weights)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.cls_pos, std=0.02)

    # -- the pieces a pre-training method calls -------------------------------------------------------------
    def group(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 3) → neighborhood (B, G, K, 3) relative to the centres, center (B, G, 3)."""
        return group_points(points, self.num_group, self.group_size)

    def embed(self, neighborhood: torch.Tensor) -> torch.Tensor:
        """Patch embedding at the Transformer's width: (B, G, K, 3) → (B, G, C)."""
        return self.reduce_dim(self.encoder(neighborhood))

    def forward_tokens(self, tokens: torch.Tensor, center: torch.Tensor,
                       visible: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the Transformer on (visible) tokens: → (z_cls (B, C), z (B, G_vis, C)), both after the final norm.

        ``visible`` (B, G) bool keeps the same number of tokens per row (ACT's ``VisableOnlyMaskTransformer``: the
        masked tokens are dropped, not replaced, and the cls token is prepended to the visible ones).
        """
        b, g, c = tokens.shape
        if visible is not None:
            counts = visible.sum(1)
            if not bool((counts == counts[0]).all()):
                raise ValueError("forward_tokens: every row of `visible` must keep the same number of tokens "
                                 "(use ssl3d.models.transformer.random_mask)")
            tokens = tokens[visible].reshape(b, -1, c)  # (B, G_vis, C)
            center = center[visible].reshape(b, -1, 3)
        x = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)  # (B, 1 + G', C)
        pos = torch.cat([self.cls_pos.expand(b, -1, -1), self.pos_embed(center)], dim=1)
        x = self.norm(self.blocks(x, pos))
        return x[:, 0], x[:, 1:]

    def forward(self, points: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, N, 3) → ``feats`` (B, N, 2C), ``global_feats`` (B, 2C), and the ``tokens`` (B, G, C) with their
        ``center`` (B, G, 3)."""
        neighborhood, center = self.group(points)
        cls, z = self.forward_tokens(self.embed(neighborhood), center)  # (B, C), (B, G, C)
        zmax = z.max(dim=1).values  # (B, C)
        spread = interpolate_tokens if self.point_feats == "interp" else nearest_token
        per_point = spread(points, center, z)  # (B, N, C)
        feats = torch.cat([per_point, zmax.unsqueeze(1).expand(-1, points.shape[1], -1)], dim=-1)
        return {"feats": feats, "global_feats": torch.cat([cls, zmax], dim=-1), "tokens": z, "center": center}

    def encode(self, batch: Mapping) -> dict[str, torch.Tensor]:
        if "points" not in batch:
            raise KeyError(f"PointTransformer needs batch['points'] (B, N, 3) — collate object clouds with "
                           f"ssl3d.data.datasets.collate_objects; got keys {sorted(batch)}")
        out = self(batch["points"].to(model_device(self)))
        return {"feats": out["feats"], "global_feats": out["global_feats"]}

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"groups={self.num_group}×{self.group_size}, depth={self.depth}, width={self.embed_dim}, " \
               f"params={n / 1e6:.2f}M"

