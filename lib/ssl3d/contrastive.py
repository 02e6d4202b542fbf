"""Point- and pixel-level contrastive losses: PointContrast (Xie et al., ECCV 2020) and image-to-point (Janda et al.).

Every loss here takes features of two views and a list of matches — index pairs (i, j) saying "row i of view 0 and
row j of view 1 are the same physical point (pixel)" — samples a subset of the matches, and contrasts them:

    info_nce              the shared core: q, k already paired row by row, cross-entropy with the diagonal
    point_info_nce        PointContrast's PointInfoNCE: one random match per unique view-0 point, ≤ 4,096 pairs
    pixel_info_nce        image-to-point stage 1: InfoNCE per image pair on ≤ 4,092 matched pixels
    hardest_contrastive   PointContrast's / FCGF's hardest-contrastive loss with margins 0.1 / 1.4

Details follow the released code, read from the authors' repositories (where the paper says otherwise, the code
wins and the paper's variant is a parameter):

* facebookresearch/PointContrast ``pretrain/pointcontrast/lib/ddp_trainer.py``: ``PointNCELossTrainer`` and
  ``HardestContrastiveLossTrainer.contrastive_hardest_negative_loss``; ``config/defaults.yaml``;
  ``scripts/ddp_launch.sh`` / ``ddp_local.sh``. The hardest-contrastive loss there is a copy of
  chrischoy/FCGF ``lib/trainer.py`` (``pdist`` in ``lib/metrics.py``).
* jandaa/masters-thesis ``src/models/minkowski/trainer.py`` (``ImageTrainer.loss_fn`` / ``_loss_fn``).

Batches of several scenes. ``ssl3d.data.datasets.collate_pairs`` concatenates the scenes of a batch and shifts the
matches into the concatenated index space, exactly like PointContrast's ``default_collate_pair_fn``. The point losses
then work on the whole batch at once, as the released trainers do: pairs and negative candidates are sampled from
the union of all scenes, so the negatives of a point include points of the other scenes of the batch, and
``num_pos`` counts pairs per *batch* for PointInfoNCE (the released run: 4,096 pairs for the 4 scenes on each of
its 8 GPUs) while the hardest-contrastive counts are per *scene* and multiplied by ``batch_size`` (the released
trainer passes ``num_pos_per_batch · batch_size`` and ``num_hn_samples_per_batch · batch_size``).
:func:`pixel_info_nce` instead loops over image pairs (negatives come from the same pair only, as in Janda et al.'s
code) and averages.

Randomness (which match per point, which pairs, which negative candidates) comes from an optional
``torch.Generator``, so a run reproduces; without one the global torch RNG is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "TAU_LAUNCH_SCRIPT",
    "TAU_CONFIG_FILE",
    "PDIST_EPS",
    "BLOCK_FLOATS",
    "info_nce",
    "one_match_per_point",
    "point_info_nce",
    "pixel_info_nce",
    "hardest_contrastive",
]

#: PointInfoNCE temperature passed by PointContrast's released launch scripts (``misc.nceT=0.4`` in
#: ``scripts/ddp_launch.sh`` and ``ddp_local.sh``) and used by Janda et al. — ssl3d's default.
TAU_LAUNCH_SCRIPT = 0.4
#: The value in PointContrast's ``config/defaults.yaml`` (``misc.nceT: 0.07``), overridden by both launch scripts.
TAU_CONFIG_FILE = 0.07
#: ε inside the square root of FCGF's / PointContrast's ``pdist``: d = √(‖a − b‖² + 1e-7).
PDIST_EPS = 1e-7


# ----------------------------------------------------------------------------------------------------------
# Input checks — every message names the problem and the fix
# ----------------------------------------------------------------------------------------------------------
def _check_feats(f: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(f, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of per-point features (N, C), got {type(f).__name__}")
    if f.dim() != 2:
        raise ValueError(f"{name} must be (N, C) per-point features, got shape {tuple(f.shape)}: for a SparseTensor "
                         "pass its .feats, for an image feature map (C, H, W) use pixel_info_nce")
    if not f.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got {f.dtype}: cast the features with .float()")
    if f.shape[0] == 0:
        raise ValueError(f"{name} has no rows (0 points): check the crop / voxel size that produced the view")
    return f


def _check_pair(f0: torch.Tensor, f1: torch.Tensor) -> None:
    if f0.shape[1] != f1.shape[1]:
        raise ValueError(f"the two views have different feature widths ({f0.shape[1]} vs {f1.shape[1]}): run both "
                         "views through the same network / projection head")
    if f0.device != f1.device:
        raise ValueError(f"the two views' features are on different devices ({f0.device} vs {f1.device}): "
                         "move them to one device")


def _check_matches(matches, n0: int, n1: int, name: str = "matches") -> torch.Tensor:
    m = torch.as_tensor(matches)
    if m.dim() != 2 or m.shape[1] != 2:
        raise ValueError(f"{name} must be a (P, 2) tensor of index pairs (i in view 0, j in view 1), got shape "
                         f"{tuple(m.shape)}")
    if m.dtype.is_floating_point or m.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer indices, got {m.dtype}: pass the correspondences as int64")
    if m.shape[0] == 0:
        raise ValueError(f"{name} is empty: the two views have no correspondence — keep only view pairs with enough "
                         "overlap (ssl3d.data.rgbd.find_view_pairs, min_overlap) or check the matching radius and "
                         "the voxel size")
    m = m.long()
    lo0, hi0 = int(m[:, 0].min()), int(m[:, 0].max())
    lo1, hi1 = int(m[:, 1].min()), int(m[:, 1].max())
    if lo0 < 0 or lo1 < 0 or hi0 >= n0 or hi1 >= n1:
        raise IndexError(f"{name} index outside the features: view 0 indices span [{lo0}, {hi0}] for {n0} rows, "
                         f"view 1 [{lo1}, {hi1}] for {n1} rows — for a batch of scenes shift each scene's matches by "
                         "the row offsets of its view (ssl3d.data.datasets.collate_pairs does this)")
    return m


def _check_count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int ≥ 1, got {value!r}: e.g. {name}=4096")
    return value


def _check_finite(x: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(f"{what} contain NaN or Inf values: the network diverged or its input holds NaNs — "
                                 "lower the learning rate, check the inputs, or enable the NaN guard of ssl3d.train")


def _randperm(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """A random permutation of range(n) drawn on the generator's device, moved to ``device``."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    return torch.randperm(n, generator=generator, device=gdev).to(device)


def _subsample(n: int, k: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """k distinct indices of range(n) in random order (all n, in order, when n ≤ k) — ``np.random.choice(n, k,
    replace=False)`` of the released code."""
    if n <= k:
        return torch.arange(n, device=device)
    return _randperm(n, generator, device)[:k]


def _safe_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean that is 0 (not NaN) over an empty set."""
    return x.sum() / max(x.numel(), 1)


# ----------------------------------------------------------------------------------------------------------
# InfoNCE — the shared core
# ----------------------------------------------------------------------------------------------------------
BLOCK_FLOATS = 2**20  #: logits per row block of the fused InfoNCE (4 MiB in float32: stays in the L3 cache)


class _InfoNCE(torch.autograd.Function):
    """Cross-entropy of the logits (q/τ)·kᵀ with the diagonal, and its gradient, in one pass over row blocks.

    For a block of rows i: L = (q_i/τ)·kᵀ, e_ij = exp(L_ij − c_i), s_i = Σ_j e_ij, lse_i = c_i + log s_i and
    p_ij = e_ij / s_i; the loss is mean_i(lse_i − L_ii). The gradient is formed in the same pass,
    ∂L/∂q_i = (Σ_j p_ij k_j − k_i) / (τ n) and ∂L/∂k_j = (Σ_i p_ij q_i − q_j) / (τ n) — the 1/s_i scaling is applied
    to the (b, C) factors, not to the (b, n) block — so the (n, n) logits are never stored (4 MiB blocks instead of
    64 MiB at n = 4,096) and each logit is exponentiated once. The shift c_i is the row maximum, or 0 when the
    logits are known to be bounded (unit-length rows: |L| ≤ 1/τ, and 1/τ + log n < 80 keeps exp and the row sums
    inside float32), which saves two passes over each block. Values and gradients equal
    ``F.cross_entropy((q/τ) @ k.T, arange(n))`` (tests compare with it and with a per-pair loop); not twice
    differentiable.
    """

    @staticmethod
    def forward(ctx, q, k, temperature, mask, bounded, need_grad, want_hits):
        n = q.shape[0]
        qs = q / temperature  # (n, C)
        lse = qs.new_empty(n)  # (n,) log Σ_j exp(L_ij)
        hits = torch.zeros((), dtype=torch.long, device=q.device)  # rows whose positive is the top-1 logit
        gq = torch.empty_like(qs) if need_grad else None  # (n, C) ∂/∂q · τn
        gk = (-qs) if need_grad else None  # (n, C) ∂/∂k · n, starting from the −δ term
        rows = max(1, min(n, BLOCK_FLOATS // n))
        for s in range(0, n, rows):
            e = min(s + rows, n)
            L = qs[s:e] @ k.t()  # (b, n) logits of rows s…e−1
            if mask is not None:
                L.masked_fill_(mask[s:e], float("-inf"))
            if want_hits:
                hits += (L.argmax(1) == torch.arange(s, e, device=q.device)).sum()
            if bounded:
                L.exp_()  # (b, n) e = exp(L)
                ssum = L.sum(1)  # (b,)
                lse[s:e] = ssum.log()
            else:
                mx = L.amax(1, keepdim=True)  # (b, 1)
                L.sub_(mx).exp_()  # (b, n) e = exp(L − max)
                ssum = L.sum(1)  # (b,)
                lse[s:e] = ssum.log() + mx.squeeze(1)
            if need_grad:
                inv = ssum.reciprocal().unsqueeze(1)  # (b, 1) 1/s_i: p = e · inv
                torch.mm(L, k, out=gq[s:e])  # (b, C) Σ_j e_ij k_j
                gq[s:e].mul_(inv).sub_(k[s:e])  # Σ_j p_ij k_j − k_i
                gk.addmm_(L.t(), qs[s:e] * inv)  # (n, C) += Σ_i p_ij q_i/τ
        loss = (lse - (qs * k).sum(1)).mean()  # mean_i lse_i − q_i·k_i/τ
        if need_grad:
            ctx.save_for_backward(gq, gk)
        ctx.scale = (1.0 / (temperature * n), 1.0 / n)
        ctx.mark_non_differentiable(hits)
        return loss, hits

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss, _grad_hits):
        if not ctx.saved_tensors:
            return None, None, None, None, None, None, None
        gq, gk = ctx.saved_tensors
        return gq * (grad_loss * ctx.scale[0]), gk * (grad_loss * ctx.scale[1]), None, None, None, None, None


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float = TAU_LAUNCH_SCRIPT, normalize: bool = True,
             mask: torch.Tensor | None = None, return_stats: bool = False):
    r"""InfoNCE with the other rows as negatives; row i of ``q`` and row i of ``k`` are a positive pair.

    .. math::

        \mathcal{L} = -\frac{1}{n}\sum_{i=1}^{n} \log \frac{\exp(q_i \cdot k_i / \tau)}
                                                        {\sum_{j=1}^{n} \exp(q_i \cdot k_j / \tau)}

    i.e. cross-entropy of the logits q·kᵀ/τ with the labels 0…n−1 (the diagonal), averaged over the n queries —
    PointContrast's ``NCESoftmaxLoss`` (``nn.CrossEntropyLoss``, mean reduction). Computed by :class:`_InfoNCE` in
    cache-sized row blocks with the gradient formed in the same pass (no (n, n) tensor is kept).

    Args:
        q, k: (n, C) paired features. temperature: τ > 0.
        normalize: L2-normalise q and k first. A no-op (same values and gradients) for features that are already
            unit length — PointContrast normalises in the network (``normalize_feature: True``) and not in the loss;
            Janda et al. normalise in the loss.
        mask: optional (n, n) bool, True = drop that logit from the softmax (never set on the diagonal).
        return_stats: also return a dict with ``accuracy`` (how often the positive is the top-1 logit of its row
            among the n candidates), ``num_pairs`` and ``temperature``.
    Returns:
        the scalar loss, or ``(loss, stats)``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}: PointContrast's launch scripts use 0.4, its "
                         "config file 0.07")
    _check_feats(q, "q")
    _check_feats(k, "k")
    _check_pair(q, k)
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"q and k must be paired row by row, got {q.shape[0]} and {k.shape[0]} rows")
    _check_finite(q, "query features")
    _check_finite(k, "key features")
    n = q.shape[0]
    if mask is not None:
        if mask.shape != (n, n) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a ({n}, {n}) bool tensor, got {tuple(mask.shape)} {mask.dtype}")
        if bool(mask.diagonal().any()):
            raise ValueError("mask must not remove a positive (diagonal) logit")
        mask = mask.to(q.device)
    if normalize:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)  # (n, C) unit rows
    need_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)
    bounded = normalize and 1.0 / temperature + math.log(n) < 80.0  # |logit| ≤ 1/τ: no max shift needed
    loss, hits = _InfoNCE.apply(q, k, float(temperature), mask, bounded, need_grad, return_stats)
    if not return_stats:
        return loss
    return loss, {"accuracy": hits.item() / n, "num_pairs": n, "temperature": float(temperature)}


# ----------------------------------------------------------------------------------------------------------
# PointInfoNCE
# ----------------------------------------------------------------------------------------------------------
def one_match_per_point(matches, generator: torch.Generator | None = None) -> torch.Tensor:
    """For every unique view-0 index of ``matches`` (P, 2), one of its matches chosen uniformly → (U, 2), sorted by i.

    PointContrast's ``PointNCELossTrainer`` does this with ``unique(return_counts=True)``, an offset ⌊u·count⌋,
    u ~ U(0, 1), and cumulative counts — which silently picks wrong pairs unless the matches are grouped by i (its
    data loader emits them sorted). Here they are sorted by i first (stable), so any order works.
    """
    m = torch.as_tensor(matches).long()  # (P, 2)
    i = m[:, 0]
    if m.shape[0] > 1 and not bool((i[1:] >= i[:-1]).all()):
        m = m[torch.argsort(i, stable=True)]  # group the matches of each view-0 point
    _, counts = torch.unique_consecutive(m[:, 0], return_counts=True)  # (U,)
    gdev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(counts.shape[0], generator=generator, device=gdev).to(m.device)  # (U,)
    off = torch.floor(u * counts).long().clamp_max_(counts - 1)  # (U,) offset inside each group
    starts = torch.cumsum(counts, 0) - counts  # (U,) first row of each group
    return m[starts + off]  # (U, 2)


def point_info_nce(f0: torch.Tensor, f1: torch.Tensor, matches, num_pos: int = 4096,
                   temperature: float = TAU_LAUNCH_SCRIPT, normalize: bool = True, mask_duplicate_keys: bool = False,
                   generator: torch.Generator | None = None, return_stats: bool = False):
    r"""PointContrast's PointInfoNCE loss (Xie et al., ECCV 2020, Sec. 3.4).

    .. math::

        \mathcal{L}_c = -\sum_{(i,j)\in\mathcal{P}} \log
            \frac{\exp(\mathbf{f}^0_i \cdot \mathbf{f}^1_j / \tau)}{\sum_{(\cdot,k)\in\mathcal{P}}
                  \exp(\mathbf{f}^0_i \cdot \mathbf{f}^1_k / \tau)}

    As released (``PointNCELossTrainer._train_iter``): for every unique matched view-0 point one of its matches is
    drawn at random (:func:`one_match_per_point`), then ``num_pos`` of those pairs are drawn without replacement
    (all of them when fewer), and :func:`info_nce` is applied — query f⁰_i, positive key f¹_j, negatives the keys of
    the other sampled pairs. The sum over 𝒫 of the paper is a mean in the code (``CrossEntropyLoss``).

    Paper vs code: the paper's negatives are the keys k ≠ j; in the code a view-1 point that is the key of two sampled
    pairs is also a negative of the other pair's query (a false negative). ``mask_duplicate_keys=True`` drops those
    logits (the paper's reading); the default ``False`` is the code.

    Args:
        f0, f1: (N0, C), (N1, C) per-point features of the two views (a whole batch, concatenated — see the module
            docstring). The released network L2-normalises its output; ``normalize=True`` does it here too (a no-op
            on unit-length features).
        matches: (P, 2) int (i in view 0, j in view 1), in concatenated indices for a batch.
        num_pos: pairs per loss evaluation (4,096 in the released config and scripts; per GPU, i.e. per 4 scenes).
        temperature: τ — 0.4 in the released launch scripts (:data:`TAU_LAUNCH_SCRIPT`, default), 0.07 in
            ``config/defaults.yaml`` (:data:`TAU_CONFIG_FILE`).
        generator: source of randomness, drawn in this order: U uniforms (``torch.rand``) for the match of each
            unique point, then ``torch.randperm(U)[:num_pos]`` when U > num_pos.
        return_stats: also return ``{"accuracy", "num_pairs", "temperature", "num_unique"}`` (top-1 accuracy of the
            positive key among the ``num_pairs`` candidates).
    Returns:
        the scalar loss, or ``(loss, stats)``.
    """
    _check_feats(f0, "f0")
    _check_feats(f1, "f1")
    _check_pair(f0, f1)
    _check_count(num_pos, "num_pos")
    m = _check_matches(matches, f0.shape[0], f1.shape[0]).to(f0.device)  # (P, 2)
    pairs = one_match_per_point(m, generator)  # (U, 2) one random match per unique view-0 point
    num_unique = pairs.shape[0]
    sel = _subsample(num_unique, num_pos, generator, f0.device)  # (n,) n = min(U, num_pos)
    pairs = pairs[sel]  # (n, 2)
    # index_select, not f1[j]: a view-1 point can be the match of several view-0 points, and the backward of advanced
    # indexing (index_put_ with accumulate) adds such repeated rows in a thread-dependent order on the CPU
    q, k = f0.index_select(0, pairs[:, 0]), f1.index_select(0, pairs[:, 1])  # (n, C), (n, C)
    mask = None
    if mask_duplicate_keys:
        j = pairs[:, 1]
        mask = j.unsqueeze(0) == j.unsqueeze(1)  # (n, n) same view-1 point as the row's positive
        mask.fill_diagonal_(False)
    out = info_nce(q, k, temperature, normalize=normalize, mask=mask, return_stats=return_stats)
    if return_stats:
        out[1]["num_unique"] = num_unique
    return out


# ----------------------------------------------------------------------------------------------------------
# Pixel InfoNCE (image-to-point, stage 1)
# ----------------------------------------------------------------------------------------------------------
def _as_maps(f: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(f, torch.Tensor) or f.dim() not in (3, 4):
        shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise ValueError(f"{name} must be pixel feature maps (B, C, H, W) or one map (C, H, W), got {shape}")
    if not f.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got {f.dtype}")
    f = f.unsqueeze(0) if f.dim() == 3 else f  # (B, C, H, W)
    return f.flatten(2)  # (B, C, H·W)


def pixel_info_nce(f0: torch.Tensor, f1: torch.Tensor, matches, num_pos: int = 4092,
                   temperature: float = TAU_LAUNCH_SCRIPT, normalize: bool = True,
                   generator: torch.Generator | None = None, return_stats: bool = False):
    r"""Pixel-level InfoNCE between two augmented views of the same images (Janda et al., stage 1).

    .. math::

        \mathcal{L} = \frac{1}{B}\sum_{b=1}^{B} -\frac{1}{n_b}\sum_{i=1}^{n_b}
            \log\frac{\exp(\mathbf{z}_i\cdot\mathbf{z}_i^{+}/\tau)}{\sum_{j=1}^{n_b}\exp(\mathbf{z}_i\cdot\mathbf{z}_j^{+}/\tau)}

    For image pair b, a positive is a pixel of view 0 and the pixel of view 1 that come from the same original pixel;
    up to ``num_pos`` (4,092) of its matches are drawn without replacement and the negatives of a pixel are the other
    sampled pixels *of the same image pair* (``ImageTrainer.loss_fn`` of jandaa/masters-thesis; the paper's text also
    mentions negatives from other images of the batch, the code does not use them). Features are L2-normalised in
    the loss (as in that code). The loss of a batch is the sum of the per-pair losses divided by B — a pair without
    matches contributes 0 but still counts in B, as in the code.

    Args:
        f0, f1: (B, C, H, W) feature maps of views 0 and 1 (or one pair (C, H, W)); the two views may differ in size.
        matches: for each pair b a (P_b, 2) int tensor of flat pixel indices (row · W + column) into view 0 and view
            1; a single (P, 2) tensor when B = 1.
        num_pos, temperature, normalize: as in :func:`point_info_nce`.
        generator: ``randperm(P_b)[:num_pos]`` per image pair with P_b > num_pos, in pair order.
        return_stats: also return ``{"accuracy", "num_pairs", "num_image_pairs", "temperature"}`` (accuracy over all
            sampled pixels).
    """
    _check_count(num_pos, "num_pos")
    z0, z1 = _as_maps(f0, "f0"), _as_maps(f1, "f1")  # (B, C, H0·W0), (B, C, H1·W1)
    if z0.shape[0] != z1.shape[0] or z0.shape[1] != z1.shape[1]:
        raise ValueError(f"f0 and f1 must hold the same number of image pairs and channels, got {tuple(f0.shape)} "
                         f"and {tuple(f1.shape)}")
    b = z0.shape[0]
    if isinstance(matches, torch.Tensor) and matches.dim() == 2:
        matches = [matches]
    if not isinstance(matches, Sequence) or len(matches) != b:
        got = len(matches) if isinstance(matches, Sequence) else type(matches).__name__
        raise ValueError(f"matches must be a list of {b} (P_b, 2) tensors (one per image pair), got {got}")
    total, hits, count = z0.new_zeros(()), 0.0, 0
    for i, mb in enumerate(matches):
        if torch.as_tensor(mb).numel() == 0:
            continue  # no match: contributes 0, still counted in B
        m = _check_matches(mb, z0.shape[2], z1.shape[2], f"matches[{i}]").to(z0.device)  # (P_b, 2)
        m = m[_subsample(m.shape[0], num_pos, generator, z0.device)]  # (n_b, 2)
        q, k = z0[i].index_select(1, m[:, 0]).t(), z1[i].index_select(1, m[:, 1]).t()  # (n_b, C), (n_b, C)
        out = info_nce(q, k, temperature, normalize=normalize, return_stats=return_stats)
        if return_stats:
            out, st = out
            hits += st["accuracy"] * st["num_pairs"]
        total = total + out
        count += q.shape[0]
    if count == 0:
        raise ValueError("no image pair has a pixel match: check the augmentations (crops that do not overlap) and "
                         "the correspondence computation")
    loss = total / b
    if not return_stats:
        return loss
    return loss, {"accuracy": hits / count, "num_pairs": count, "num_image_pairs": b, "temperature": float(temperature)}


# ----------------------------------------------------------------------------------------------------------
# Hardest-contrastive
# ----------------------------------------------------------------------------------------------------------
def _pair_keys(i: torch.Tensor, j: torch.Tensor, n1: int) -> torch.Tensor:
    """Injective int64 key of index pairs (the released code hashes i + j·max(N0, N1), any injective map works)."""
    return i * n1 + j


def _hardest(anchor: torch.Tensor, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each anchor row its nearest candidate row: (index (n,), distance √(‖a − c‖² + ε) (n,) with gradient).

    The search ranks ‖c‖² − 2 a·c (‖a − c‖² without the row constant ‖a‖²) with one ``addmm`` and no gradient ((n, m)
    floats); the chosen distance is then recomputed literally, so values and gradients equal those of the released
    ``pdist(A, B).min(1)`` (which builds an (n, m, C) difference tensor) without its memory.
    """
    with torch.no_grad():
        score = torch.addmm((cand * cand).sum(1).unsqueeze(0), anchor, cand.t(), alpha=-2)  # (n, m)
        idx = score.argmin(1)  # (n,)
    diff = anchor - cand.index_select(0, idx)  # (n, C); index_select: deterministic backward (see below)
    return idx, torch.sqrt((diff * diff).sum(1) + PDIST_EPS)  # (n,), (n,)


def hardest_contrastive(f0: torch.Tensor, f1: torch.Tensor, matches, pos_margin: float = 0.1,
                        neg_margin: float = 1.4, num_pos: int = 1024, num_hn: int = 256, batch_size: int = 1,
                        pos_weight: float = 1.0, neg_weight: float = 1.0, positive: str = "code",
                        normalize: bool = True, generator: torch.Generator | None = None, return_stats: bool = False):
    r"""Hardest-contrastive loss of FCGF, used by PointContrast (Xie et al., ECCV 2020, Sec. 3.4).

    Paper:

    .. math::

        \mathcal{L}_c = \sum_{(i,j)\in\mathcal{P}} \Big\{ [d(\mathbf{f}_i,\mathbf{f}_j) - m_p]_+^2 / |\mathcal{P}|
            + 0.5\,[m_n - \min_{k\in\mathcal{N}} d(\mathbf{f}_i,\mathbf{f}_k)]_+^2 / |\mathcal{N}_i|
            + 0.5\,[m_n - \min_{k\in\mathcal{N}} d(\mathbf{f}_j,\mathbf{f}_k)]_+^2 / |\mathcal{N}_j| \Big\}

    Released code (``contrastive_hardest_negative_loss``, identical in FCGF and PointContrast), followed here:

    * positives: ``num_pos · batch_size`` matches drawn without replacement from *all* matches (all when fewer);
    * candidates: ``num_hn · batch_size`` random rows of each view (any point, matched or not), without replacement;
    * for each positive (i, j): the hardest negative of f⁰_i among the view-1 candidates and of f¹_j among the view-0
      candidates, with d(a, b) = √(‖a − b‖² + 1e-7) (:data:`PDIST_EPS`);
    * a hardest negative that is itself a true match (its (i, k) or (k, j) is in the *full* match list, found by
      hashing index pairs) is dropped from its mean — not replaced by the next-hardest one;
    * pos = mean over positives of ``relu(‖f⁰_i − f¹_j‖² − m_p)`` — the code squares the distance *inside* the relu
      (no square root, no ε); the paper's ``relu(d − m_p)²`` is ``positive="paper"``;
    * neg = (mean relu(m_n − d⁰)² + mean relu(m_n − d¹)²) / 2;
    * loss = pos_weight · pos + neg_weight · neg (PointContrast adds them with weight 1; FCGF's ``neg_weight`` is 1).

    One deliberate difference: when every hardest negative of a view is a true match, the released mean over an empty
    set is NaN; here that term is 0 (``stats["masked0"/"masked1"]`` report how many were dropped).

    Args:
        f0, f1: (N0, C), (N1, C) features (a concatenated batch). normalize: L2-normalise them first (the released
            network does it, ``normalize_feature: True``; a no-op on unit-length features).
        matches: (P, 2) int (i in view 0, j in view 1), concatenated indices for a batch.
        pos_margin, neg_margin: m_p = 0.1, m_n = 1.4 (config ``pos_thresh`` / ``neg_thresh``).
        num_pos, num_hn: per scene, 1,024 and 256 (``num_pos_per_batch`` / ``num_hn_samples_per_batch``);
            multiplied by ``batch_size``, the number of scenes in f0/f1, as the released trainer does.
        positive: ``"code"`` (default) or ``"paper"``, the form of the positive term (see above).
        generator: source of randomness, drawn in this order: ``randperm(N0)[:num_hn·batch_size]`` (view-0
            candidates), the same for view 1, then ``randperm(P)[:num_pos·batch_size]`` (positives); a draw is
            skipped when its set is not larger than the count (then all rows/matches are used, in order).
        return_stats: also return a dict: ``pos_loss``, ``neg_loss``, ``neg_loss0``, ``neg_loss1`` (floats),
            ``num_pos``, ``num_candidates0/1``, ``masked0/1``, ``pos_dist`` and ``neg_dist0/1`` (mean distances).
    Returns:
        the scalar loss, or ``(loss, stats)``.
    """
    _check_feats(f0, "f0")
    _check_feats(f1, "f1")
    _check_pair(f0, f1)
    for name, v in (("num_pos", num_pos), ("num_hn", num_hn), ("batch_size", batch_size)):
        _check_count(v, name)
    if positive not in ("code", "paper"):
        raise ValueError(f"positive must be 'code' (relu(‖Δ‖² − m_p), the released loss) or 'paper' "
                         f"(relu(‖Δ‖ − m_p)²), got {positive!r}")
    if not (pos_margin >= 0 and neg_margin > pos_margin):
        raise ValueError(f"margins need 0 ≤ pos_margin < neg_margin, got {pos_margin} and {neg_margin} "
                         "(PointContrast: 0.1 and 1.4)")
    n0, n1, dev = f0.shape[0], f1.shape[0], f0.device
    m = _check_matches(matches, n0, n1).to(dev)  # (P, 2)
    sel0 = _subsample(n0, num_hn * batch_size, generator, dev)  # (m0,) view-0 candidates
    sel1 = _subsample(n1, num_hn * batch_size, generator, dev)  # (m1,) view-1 candidates
    pos = m[_subsample(m.shape[0], num_pos * batch_size, generator, dev)]  # (n, 2) sampled positives
    i, j = pos[:, 0], pos[:, 1]  # (n,), (n,)
    if normalize:
        # normalise only the rows the loss touches: same values and gradients as normalising all N rows first
        rows0 = torch.cat([i, sel0])
        rows1 = torch.cat([j, sel1])
        # index_select, not f0[rows0]: the backward of advanced indexing (index_put_ with accumulate) adds repeated
        # rows in a thread-dependent order on the CPU, so runs were not bit-identical; index_add_ is
        g0 = F.normalize(f0.index_select(0, rows0), dim=1)  # (n + m0, C)
        g1 = F.normalize(f1.index_select(0, rows1), dim=1)  # (n + m1, C)
        pos_f0, cand_f0 = g0[: len(i)], g0[len(i):]  # (n, C), (m0, C)
        pos_f1, cand_f1 = g1[: len(j)], g1[len(j):]  # (n, C), (m1, C)
    else:
        pos_f0, cand_f0 = f0.index_select(0, i), f0.index_select(0, sel0)
        pos_f1, cand_f1 = f1.index_select(0, j), f1.index_select(0, sel1)
    for x, what in ((pos_f0, "view-0 features"), (pos_f1, "view-1 features"), (cand_f0, "view-0 candidate features"),
                    (cand_f1, "view-1 candidate features")):
        _check_finite(x, what)

    idx01, d01 = _hardest(pos_f0, cand_f1)  # hardest view-1 candidate of each f⁰_i: (n,), (n,)
    idx10, d10 = _hardest(pos_f1, cand_f0)  # hardest view-0 candidate of each f¹_j: (n,), (n,)
    true_keys = _pair_keys(m[:, 0], m[:, 1], n1)  # (P,) every true match
    keep0 = ~torch.isin(_pair_keys(i, sel1[idx01], n1), true_keys)  # (n,) (i, k) is not a true match
    keep1 = ~torch.isin(_pair_keys(sel0[idx10], j, n1), true_keys)  # (n,) (k, j) is not a true match

    diff = pos_f0 - pos_f1  # (n, C)
    sq = (diff * diff).sum(1)  # (n,) ‖f⁰_i − f¹_j‖²
    if positive == "code":
        pos_terms = F.relu(sq - pos_margin)  # (n,)
        pos_dist = torch.sqrt(sq.detach())
    else:
        dist = torch.sqrt(sq + PDIST_EPS)  # (n,)
        pos_terms = F.relu(dist - pos_margin).pow(2)
        pos_dist = dist.detach()
    pos_loss = pos_terms.mean()
    neg0 = _safe_mean(F.relu(neg_margin - d01[keep0]).pow(2))
    neg1 = _safe_mean(F.relu(neg_margin - d10[keep1]).pow(2))
    neg_loss = (neg0 + neg1) / 2
    loss = pos_weight * pos_loss + neg_weight * neg_loss
    if not return_stats:
        return loss
    stats = {
        "pos_loss": pos_loss.item(), "neg_loss": neg_loss.item(), "neg_loss0": neg0.item(), "neg_loss1": neg1.item(),
        "num_pos": int(pos.shape[0]), "num_candidates0": int(sel0.numel()), "num_candidates1": int(sel1.numel()),
        "masked0": int((~keep0).sum()), "masked1": int((~keep1).sum()),
        "pos_dist": pos_dist.mean().item(), "neg_dist0": d01.detach().mean().item(),
        "neg_dist1": d10.detach().mean().item(),
    }
    return loss, stats
