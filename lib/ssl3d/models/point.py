"""Point backbones: PointNet (Qi et al., CVPR 2017) and DGCNN (Wang et al., TOG 2019), segmentation style.

Both follow the backbone contract of :mod:`ssl3d.models.base` (``kind = "point"``)::

    out = net(points, feats=None)          # points (B, N, 3), feats (B, N, in_channels) or None
    out = net.encode(batch)                # the same from a collated batch (batch["points"], batch["feats"])
    out["feats"]        (B, N, feat_dim)   per-point features for a segmentation head:
                                           [local feature ‖ max-pooled global embedding repeated per point]
    out["global_feats"] (B, global_dim)    concat(max over points, mean over points) of the embedding
    out["feats_factored"] (local (B, N, C_l), max-pooled embedding (B, C))   ``feats`` before the repeat: heads
                                           read this form (the same numbers, a cheaper first layer:
                                           ``models.base.factored_linear``)

The embedding is the 1024-d layer right before global pooling in both papers; ``global_feats`` is DGCNN's
classification descriptor (max ‖ mean), the feature of the linear-SVM protocol. The papers' segmentation heads
(PointNet: 512 → 256 → 128; DGCNN: 256 → 256 → 128 with dropout 0.5) are each network's ``head_spec``; heads are
built by :mod:`ssl3d.models.heads` (a GMM pretext head of J components in pre-training, a part head in
fine-tuning) and are not part of the backbone.

Layers work on channel-last tensors (B, N, C) with ``nn.Linear`` (a 1 × 1 convolution) and BatchNorm over
all points of the batch. ``width`` scales every channel count (``width=0.125`` gives a CPU-sized network).

Choices, stated:
- PointNet without its T-Nets (input/feature alignment networks): they are optional in the paper, add ~3 M
  parameters and are usually dropped for pre-training; rotation is handled by augmentation instead.
- DGCNN keeps the point itself among its k neighbours (edge feature [x_i, 0]), as the authors' code does.
- No category one-hot in the part-segmentation head (ShapeNetPart papers often add one); add it to ``feats``
  if needed.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import torch
from torch import nn

from ssl3d.geometry import knn
from ssl3d.models import register
from ssl3d.models.base import Backbone, SharedMLP, model_device
from ssl3d.utils import check_points

__all__ = ["EdgeConv", "knn_graph", "PointNet", "DGCNN", "PointOutputs"]


def _ch(c: int, width: float) -> int:
    """Channel count scaled by ``width`` (at least 1)."""
    return max(1, int(round(c * width)))


class _PointBackbone(Backbone):
    """Shared plumbing: input checks, the batch entry point, the max ‖ mean global feature."""

    kind = "point"

    def _inputs(self, points: torch.Tensor, feats: torch.Tensor | None) -> torch.Tensor:
        name = type(self).__name__
        if not isinstance(points, torch.Tensor):
            raise TypeError(f"{name}: points must be a torch.Tensor (B, N, 3), got {type(points).__name__}")
        if points.dim() == 2:
            raise ValueError(f"{name}: points must be (B, N, 3), got {tuple(points.shape)}; add a batch dimension "
                             f"with points[None]")
        check_points(points, "points", batched=True)
        if self.in_channels == 0:
            if feats is not None:
                raise ValueError(f"{name} was built with in_channels=0 but got feats {tuple(feats.shape)}: build it "
                                 f"with in_channels={feats.shape[-1]} or pass feats=None")
            return points
        want = (*points.shape[:2], self.in_channels)
        if feats is None or tuple(feats.shape) != want:
            got = None if feats is None else tuple(feats.shape)
            raise ValueError(f"{name} was built with in_channels={self.in_channels}: pass feats of shape {want}, "
                             f"got {got}")
        return torch.cat([points, feats.to(points.dtype)], dim=-1)  # (B, N, 3 + in_channels)

    def encode(self, batch: Mapping) -> PointOutputs:
        if "points" not in batch:
            raise KeyError(f"{type(self).__name__} needs batch['points'] (B, N, 3) — collate object clouds with "
                           f"ssl3d.data.datasets.collate_objects; got keys {sorted(batch)}")
        dev = model_device(self)
        points = batch["points"].to(dev)
        feats = self._batch_feats(batch, points.shape[1])
        return self(points, None if feats is None else feats.to(dev))

    @staticmethod
    def seg_outputs(local: torch.Tensor, embedding: torch.Tensor) -> PointOutputs:
        """``feats`` = [local (B, N, C_l) ‖ max-pooled embedding repeated per point] (B, N, C_l + C), its factored
        form ``feats_factored`` = (local, max-pooled (B, C)), and ``global_feats`` = max ‖ mean (B, 2C)."""
        # (B, C). Without gradient (probes, feature extraction) amax: the same numbers, ~4× faster on a CPU than
        # max(dim).values, which also finds the indices. With gradient they differ where values tie (max sends the
        # gradient to one, amax splits it): amax changed notebook 03's pre-training from its 9th step, so training
        # keeps max(dim) and the numbers of earlier runs.
        glob = embedding.max(dim=1).values if embedding.requires_grad else embedding.amax(dim=1)
        return PointOutputs(local, glob, torch.cat([glob, embedding.mean(dim=1)], dim=-1))


class PointOutputs(MutableMapping):
    """What a point backbone returns: a dict of ``feats``, ``feats_factored`` and ``global_feats`` (plus whatever a
    caller adds), whose ``feats`` — [local ‖ global repeated at every point], (B, N, C_l + C) — is built on first
    access. Heads read ``feats_factored`` and probes ``global_feats``, so most calls never need that tensor, and
    building it took ~15 % of a PointNet forward pass on a CPU."""

    def __init__(self, local: torch.Tensor, glob: torch.Tensor, global_feats: torch.Tensor):
        self._d = {"feats": None, "feats_factored": (local, glob), "global_feats": global_feats}

    def __getitem__(self, key):
        if key == "feats" and "feats" in self._d and self._d["feats"] is None:  # not built yet
            local, glob = self._d["feats_factored"]
            self._d["feats"] = torch.cat([local, glob.unsqueeze(1).expand(-1, local.shape[1], -1)], dim=-1)
        return self._d[key]

    def __setitem__(self, key, value):
        self._d[key] = value

    def __delitem__(self, key):
        del self._d[key]

    def __contains__(self, key):  # without building ``feats``
        return key in self._d

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)

    def __repr__(self):
        return f"PointOutputs({sorted(self._d)})"


@register("pointnet")
class PointNet(_PointBackbone):
    """PointNet segmentation network (without T-Nets).

    encoder: shared MLPs (3 + in_channels) → 64 → 64 → 128 → 1024 (ReLU, BatchNorm) = the embedding;
    feats:   [64-d local feature ‖ max-pooled 1024-d embedding] (1088-d); head_spec: 512 → 256 → 128.
    All widths × ``width``.
    """

    def __init__(self, in_channels: int = 0, width: float = 1.0, emb_dims: int = 1024,
                 head_dims: tuple[int, ...] = (512, 256, 128)):
        super().__init__()
        self.in_channels = in_channels
        c1, c2, c3 = _ch(64, width), _ch(64, width), _ch(128, width)
        self.emb_dim = _ch(emb_dims, width)
        self.mlp1 = SharedMLP(3 + in_channels, c1)
        self.mlp2 = SharedMLP(c1, c2)
        self.mlp3 = SharedMLP(c2, c3)
        self.mlp4 = SharedMLP(c3, self.emb_dim)
        self.feat_dim, self.global_dim = c2 + self.emb_dim, 2 * self.emb_dim
        self.head_spec = {"hidden": tuple(_ch(h, width) for h in head_dims), "dropout": 0.0, "act": "relu"}

    def forward(self, points: torch.Tensor, feats: torch.Tensor | None = None) -> PointOutputs:
        x = self._inputs(points, feats)  # (B, N, 3 + in_channels)
        local = self.mlp2(self.mlp1(x))  # (B, N, 64)
        embedding = self.mlp4(self.mlp3(local))  # (B, N, 1024)
        return self.seg_outputs(local, embedding)


def knn_graph(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k nearest neighbours of every point in feature space (itself included): (B, N, C) →
    (B, N, k). The graph is discrete, so it is built without gradient."""
    with torch.no_grad():
        _, idx = knn(x.detach(), k=k)
    return idx


class EdgeConv(nn.Module):
    """EdgeConv: h_i = max_{j ∈ kNN(i)} LeakyReLU(BN(W [x_i, x_j − x_i])): (B, N, C_in) → (B, N, C_out).

    [x_i] carries the point's own (global) position in feature space, [x_j − x_i] its local neighbourhood.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.mlp = SharedMLP(2 * c_in, c_out, act="leaky")

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        b = torch.arange(x.shape[0], device=x.device).view(-1, 1, 1)  # (B, 1, 1)
        x_j = x[b, idx]  # (B, N, k, C)   neighbour features
        x_i = x.unsqueeze(2).expand_as(x_j)  # (B, N, k, C)   centre features
        edge = torch.cat([x_i, x_j - x_i], dim=-1)  # (B, N, k, 2C)
        return self.mlp(edge).max(dim=2).values  # (B, N, C_out)


@register("dgcnn")
class DGCNN(_PointBackbone):
    """Dynamic Graph CNN, segmentation style.

    encoder: 4 EdgeConv layers 64 → 64 → 128 → 256, each on the kNN graph recomputed in the feature space of
             its own input (layer 1: xyz ‖ feats); their outputs are concatenated (512) and embedded by a
             shared MLP to 1024 (LeakyReLU 0.2 throughout);
    feats:   [512-d multi-scale local feature ‖ max-pooled embedding] (1536-d); head_spec: 256 → 256 → 128 with
             dropout 0.5 after the first two (DGCNN's part-segmentation head).
    All widths × ``width``. ``forward(..., return_graphs=True)`` also returns the four (B, N, k) graphs.
    """

    def __init__(self, in_channels: int = 0, k: int = 20, width: float = 1.0, emb_dims: int = 1024,
                 head_dims: tuple[int, ...] = (256, 256, 128), dropout: float = 0.5):
        super().__init__()
        if k < 1:
            raise ValueError(f"DGCNN: k must be ≥ 1, got {k}")
        self.in_channels, self.k = in_channels, k
        dims = [_ch(c, width) for c in (64, 64, 128, 256)]
        c_prev, convs = 3 + in_channels, []
        for d in dims:
            convs.append(EdgeConv(c_prev, d))
            c_prev = d
        self.edge_convs = nn.ModuleList(convs)
        self.emb_dim = _ch(emb_dims, width)
        self.embed = SharedMLP(sum(dims), self.emb_dim, act="leaky")
        self.feat_dim, self.global_dim = sum(dims) + self.emb_dim, 2 * self.emb_dim
        self.head_spec = {"hidden": tuple(_ch(h, width) for h in head_dims), "dropout": dropout, "act": "leaky"}

    def forward(self, points: torch.Tensor, feats: torch.Tensor | None = None,
                return_graphs: bool = False) -> PointOutputs:
        x = self._inputs(points, feats)  # (B, N, 3 + in_channels)
        if self.k > x.shape[1]:
            raise ValueError(f"DGCNN: k={self.k} neighbours but clouds have only N={x.shape[1]} points; build the "
                             f"model with k ≤ N or feed more points")
        outs, graphs = [], []
        for conv in self.edge_convs:
            idx = knn_graph(x, self.k)  # (B, N, k)   recomputed in the current feature space
            x = conv(x, idx)  # (B, N, C_l)
            outs.append(x)
            graphs.append(idx)
        local = torch.cat(outs, dim=-1)  # (B, N, 512)
        embedding = self.embed(local)  # (B, N, 1024)
        out = self.seg_outputs(local, embedding)
        if return_graphs:
            out["graphs"] = graphs
        return out
