"""Point backbones: PointNet (Qi et al., CVPR 2017) and DGCNN (Wang et al., TOG 2019), segmentation style.

Both networks take raw points and share one interface, so every notebook (GMM pre-training, linear probes,
fine-tuning) can swap them::

    out = net(points, feats=None)          # points (B, N, 3), feats (B, N, in_channels) or None
    out["logits"]       (B, N, J)          per-point scores of the segmentation head (J = num_outputs)
    out["point_feats"]  (B, N, C)          per-point embedding, C = feat_dim (1024 × width by default)
    out["global_feats"] (B, 2C)            concat(max over points, mean over points) of point_feats

``point_feats`` is the embedding right before global pooling — the 1024-d layer of both papers — and
``global_feats`` is DGCNN's classification descriptor (max ‖ mean), the feature of the linear-SVM protocol.
The segmentation head sits on top: [local features ‖ global max feature repeated per point] → MLP → J.
It outputs pseudo-classes (J GMM components) in pre-training; :meth:`reset_head` swaps in a fresh head with
the number of semantic/part classes for fine-tuning, keeping the encoder.

Layers work on channel-last tensors (B, N, C) with ``nn.Linear`` (a 1 × 1 convolution) and BatchNorm over
all points of the batch — the same statistics as the papers' Conv1d/Conv2d + BatchNorm. ``width`` scales every
channel count (``width=0.125`` gives a CPU-sized network for smoke runs).

Choices, stated:
- PointNet without its T-Nets (input/feature alignment networks): they are optional in the paper, add ~3 M
  parameters and are usually dropped for pre-training; rotation is handled by augmentation instead.
- DGCNN keeps the point itself among its k neighbours (edge feature [x_i, 0]), as the authors' code does.
- No category one-hot in the part-segmentation head (ShapeNetPart papers often add one); add it to ``feats``
  if needed.
"""

from __future__ import annotations

import torch
from torch import nn

from ssl3d.geometry import knn
from ssl3d.models import register
from ssl3d.utils import check_points

__all__ = ["SharedMLP", "SegHead", "EdgeConv", "knn_graph", "PointNetSeg", "DGCNN"]


def _ch(c: int, width: float) -> int:
    """Channel count scaled by ``width`` (at least 1)."""
    return max(1, int(round(c * width)))


class SharedMLP(nn.Module):
    """The same Linear → BatchNorm → activation applied to every point (or edge): (..., C_in) → (..., C_out)."""

    def __init__(self, c_in: int, c_out: int, act: str = "relu"):
        super().__init__()
        self.linear = nn.Linear(c_in, c_out, bias=False)  # bias is redundant before BatchNorm
        self.bn = nn.BatchNorm1d(c_out)
        self.act = nn.ReLU() if act == "relu" else nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)  # (..., C_out)
        y = self.bn(y.reshape(-1, y.shape[-1])).reshape(y.shape)  # statistics over every point of the batch
        return self.act(y)


class SegHead(nn.Module):
    """Per-point classifier: hidden SharedMLP layers (dropout after all but the last) → Linear → num_outputs."""

    def __init__(self, c_in: int, hidden: list[int], num_outputs: int, dropout: float = 0.0, act: str = "relu"):
        super().__init__()
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be ≥ 1, got {num_outputs}")
        layers: list[nn.Module] = []
        c = c_in
        for i, h in enumerate(hidden):
            layers.append(SharedMLP(c, h, act))
            if dropout > 0 and i < len(hidden) - 1:
                layers.append(nn.Dropout(dropout))
            c = h
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(c, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))


class _PointBackbone(nn.Module):
    """Shared plumbing: input checks, the max ‖ mean global feature, re-initialising the head."""

    in_channels: int
    feat_dim: int
    num_outputs: int
    head: SegHead
    _head_cfg: tuple  # (c_in, hidden widths, dropout, activation) of the segmentation head

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

    @staticmethod
    def global_pool(point_feats: torch.Tensor) -> torch.Tensor:
        """(B, N, C) → (B, 2C): max over points ‖ mean over points."""
        return torch.cat([point_feats.max(dim=1).values, point_feats.mean(dim=1)], dim=-1)

    @property
    def global_dim(self) -> int:
        return 2 * self.feat_dim

    def _new_head(self, num_outputs: int) -> SegHead:
        c_in, hidden, dropout, act = self._head_cfg  # set by each model's __init__
        return SegHead(c_in, hidden, num_outputs, dropout, act)

    def reset_head(self, num_outputs: int, keep_hidden: bool = False) -> None:
        """Replace the segmentation head by a freshly initialised one with ``num_outputs`` classes.

        ``keep_hidden=True`` keeps the head's hidden layers and re-creates only the last Linear layer.
        The encoder (everything that produces ``point_feats``) is untouched.
        """
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be ≥ 1, got {num_outputs}")
        ref = next(self.parameters())
        if keep_hidden:
            new = nn.Linear(self.head.out.in_features, num_outputs).to(ref.device, ref.dtype)
            self.head.out = new
        else:
            self.head = self._new_head(num_outputs).to(ref.device, ref.dtype)
        self.num_outputs = num_outputs


@register("pointnet")
class PointNetSeg(_PointBackbone):
    """PointNet segmentation network (without T-Nets).

    encoder: shared MLPs (3 + in_channels) → 64 → 64 → 128 → 1024 (ReLU, BatchNorm) = point_feats;
    head:    [64-d local feature ‖ max-pooled 1024-d global feature] → 512 → 256 → 128 → num_outputs.
    All widths × ``width``.
    """

    def __init__(self, num_outputs: int = 16, in_channels: int = 0, width: float = 1.0, emb_dims: int = 1024,
                 head_dims: tuple[int, ...] = (512, 256, 128), dropout: float = 0.0):
        super().__init__()
        self.in_channels, self.num_outputs = in_channels, num_outputs
        c1, c2, c3 = _ch(64, width), _ch(64, width), _ch(128, width)
        self.feat_dim = _ch(emb_dims, width)
        self.mlp1 = SharedMLP(3 + in_channels, c1)
        self.mlp2 = SharedMLP(c1, c2)
        self.mlp3 = SharedMLP(c2, c3)
        self.mlp4 = SharedMLP(c3, self.feat_dim)
        self._head_cfg = (c2 + self.feat_dim, [_ch(h, width) for h in head_dims], dropout, "relu")
        self.head = self._new_head(num_outputs)

    def forward(self, points: torch.Tensor, feats: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = self._inputs(points, feats)  # (B, N, 3 + in_channels)
        local = self.mlp2(self.mlp1(x))  # (B, N, 64)
        point_feats = self.mlp4(self.mlp3(local))  # (B, N, C)
        glob = point_feats.max(dim=1, keepdim=True).values  # (B, 1, C)
        seg_in = torch.cat([local, glob.expand(-1, x.shape[1], -1)], dim=-1)  # (B, N, 64 + C)
        return {"logits": self.head(seg_in), "point_feats": point_feats,
                "global_feats": self.global_pool(point_feats)}


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
             shared MLP to 1024 = point_feats (LeakyReLU 0.2 throughout);
    head:    [512-d multi-scale local feature ‖ max-pooled global feature] → 256 → 256 → 128 → num_outputs,
             dropout after the first two (as in DGCNN's part-segmentation network).
    All widths × ``width``. ``forward(..., return_graphs=True)`` also returns the four (B, N, k) graphs.
    """

    def __init__(self, num_outputs: int = 16, in_channels: int = 0, k: int = 20, width: float = 1.0,
                 emb_dims: int = 1024, head_dims: tuple[int, ...] = (256, 256, 128), dropout: float = 0.5):
        super().__init__()
        if k < 1:
            raise ValueError(f"DGCNN: k must be ≥ 1, got {k}")
        self.in_channels, self.num_outputs, self.k = in_channels, num_outputs, k
        dims = [_ch(c, width) for c in (64, 64, 128, 256)]
        c_prev, convs = 3 + in_channels, []
        for d in dims:
            convs.append(EdgeConv(c_prev, d))
            c_prev = d
        self.edge_convs = nn.ModuleList(convs)
        self.feat_dim = _ch(emb_dims, width)
        self.embed = SharedMLP(sum(dims), self.feat_dim, act="leaky")
        self._head_cfg = (sum(dims) + self.feat_dim, [_ch(h, width) for h in head_dims], dropout, "leaky")
        self.head = self._new_head(num_outputs)

    def forward(self, points: torch.Tensor, feats: torch.Tensor | None = None,
                return_graphs: bool = False) -> dict[str, torch.Tensor]:
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
        point_feats = self.embed(local)  # (B, N, C)
        glob = point_feats.max(dim=1, keepdim=True).values  # (B, 1, C)
        seg_in = torch.cat([local, glob.expand(-1, local.shape[1], -1)], dim=-1)  # (B, N, 512 + C)
        out = {"logits": self.head(seg_in), "point_feats": point_feats,
               "global_feats": self.global_pool(point_feats)}
        if return_graphs:
            out["graphs"] = graphs
        return out
