"""PointNet's segmentation head on factored features against the same head on the materialised concatenation.

A point backbone's per-point features are [local ‖ max-pooled embedding repeated at every point]. The first layer
of a segmentation head multiplies them by W = [W_l | W_g]; ``models.base.factored_linear`` computes
W_l·local + W_g·global once per cloud instead of once per point — the same sum, so the same numbers up to rounding.
For notebook 03's PointNet (width 0.5: 32 local + 512 global channels into a 256-wide layer) that removes 94 % of the
first layer's multiply-adds, the largest layer of the network.

Printed: one GMM pre-training step of notebook 03's smoke setting (PointNet ×0.5, batch 32 × 512 points, J = 16,
full covariance; forward, loss, backward, AdamW step) for both forms — the minimum over interleaved repetitions, the
median beside it — and the ratio concatenated / factored measured in the same run. No target; README quotes it.

    .venv/bin/python benchmarks/factored_head.py            # 20 repetitions
    .venv/bin/python benchmarks/factored_head.py --quick    # 5 repetitions
"""

from __future__ import annotations

import argparse
import statistics
import time

import ssl3d  # noqa: F401 — first: OpenMP's wait policy PASSIVE before torch loads, as in the notebooks

# isort: split
import torch

from ssl3d import gmm
from ssl3d.data import load_dataset
from ssl3d.methods import build_method
from ssl3d.models import build_model


class ConcatenatedHead(torch.nn.Module):
    """The GMM method's forward with the head reading the materialised ``feats`` (the form before factoring)."""

    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, batch):
        m = self.method
        logits = m.head(m.backbone.encode(batch)["feats"])  # (B, N, 544) → (B, N, J)
        return {"loss": gmm.gmm_nll(batch["points"], logits, cov=m.cov, eps=m.eps)}


def smoke_gmm_step_setup():
    """Notebook 03's smoke setting: a GMM method on PointNet ×0.5 (J = 16, full covariance) and one collated batch
    of 32 shapes × 512 points. Also used by ``point_outputs.py``."""
    shapes = load_dataset("parts", "train", None, n_per_class=3, n_points=512, seed=0, random_yaw=True)
    torch.manual_seed(0)
    method = build_method("gmm", build_model("pointnet", width=0.5), J=16, cov="full", eps=1e-5)
    return method, method.collate([shapes[i] for i in range(32)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 repetitions instead of 20")
    args = ap.parse_args()
    reps = 5 if args.quick else 20
    method, batch = smoke_gmm_step_setup()
    forms = {"concatenated": ConcatenatedHead(method), "factored": method}
    with torch.no_grad():  # the two forms compute the same loss
        same = {k: float(f(batch)["loss"]) for k, f in forms.items()}
    opt = torch.optim.AdamW(method.parameters(), lr=1e-3)
    times: dict[str, list[float]] = {k: [] for k in forms}
    for r in range(reps + 1):  # the first round warms up and is dropped
        for name, f in forms.items():
            t0 = time.perf_counter()
            loss = f(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            if r:
                times[name].append(time.perf_counter() - t0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; PointNet ×0.5, batch 32 × 512 points, "
          f"J = 16, full covariance; {reps} repetitions")
    print(f"loss of both forms before training: {same['concatenated']:.6f} / {same['factored']:.6f}")
    for name, t in times.items():
        print(f"{name:>13}: {1e3 * min(t):7.1f} ms per step (median {1e3 * statistics.median(t):7.1f})")
    print(f"speed-up of the factored head: {min(times['concatenated']) / min(times['factored']):.2f}×")


if __name__ == "__main__":
    main()
