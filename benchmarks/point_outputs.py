"""A point backbone's outputs built lazily against the eager form: feature extraction and a GMM pre-training step.

``PointNet`` returns ``feats`` (the (B, N, C_l + C) concatenation [local ‖ max-pooled embedding at every point]),
``feats_factored`` and ``global_feats``. Heads read ``feats_factored`` and probes ``global_feats``, so
``models.point.PointOutputs`` builds ``feats`` only when it is read; without gradient the max-pooling is ``amax``
(the same numbers; ``max(dim)`` also finds the indices). The eager form below is the code before that change: the
concatenation always built, ``max(dim).values`` always.

Printed, for notebook 03's smoke setting (PointNet ×0.5, batch 32 × 512 points): one batch of frozen feature
extraction (eval, no gradient: what every linear probe does) and one GMM pre-training step (J = 16, full covariance;
forward, loss, backward, AdamW) for both forms — the minimum over interleaved repetitions, the median beside it —
with the ratio eager / lazy measured in the same run, and whether both forms give identical numbers. No target.

    .venv/bin/python benchmarks/point_outputs.py            # 20 repetitions
    .venv/bin/python benchmarks/point_outputs.py --quick    # 5 repetitions
"""

from __future__ import annotations

import argparse
import statistics
import time

import ssl3d  # noqa: F401 — first: OpenMP's wait policy PASSIVE before torch loads, as in the notebooks

# isort: split
import torch
from factored_head import smoke_gmm_step_setup  # benchmarks/ is on sys.path when a benchmark runs as a script


def eager_outputs(net, points):
    """PointNet's forward as it was: ``max(dim).values`` and the concatenation built on every call."""
    local = net.mlp2(net.mlp1(points))  # (B, N, C_l)
    embedding = net.mlp4(net.mlp3(local))  # (B, N, C)
    glob = embedding.max(dim=1).values  # (B, C)
    return {"feats": torch.cat([local, glob.unsqueeze(1).expand(-1, local.shape[1], -1)], dim=-1),
            "feats_factored": (local, glob), "global_feats": torch.cat([glob, embedding.mean(dim=1)], dim=-1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 repetitions instead of 20")
    args = ap.parse_args()
    reps = 5 if args.quick else 20
    method, batch = smoke_gmm_step_setup()
    net = method.backbone
    pts = batch["points"]

    forms = {"eager": lambda p: eager_outputs(net, p), "lazy": net}
    net.eval()
    with torch.no_grad():
        out = {k: f(pts) for k, f in forms.items()}
    same = all(torch.equal(out["eager"][k], out["lazy"][k]) for k in ("feats", "global_feats"))

    def extract(f):
        with torch.no_grad():
            return f(pts)["global_feats"]

    opt = torch.optim.AdamW(method.parameters(), lr=1e-3)
    real_forward = net.forward

    def step(form):
        net.forward = real_forward if form == "lazy" else (lambda p, feats=None: eager_outputs(net, p))
        loss = method(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        net.forward = real_forward

    t_ext: dict[str, list[float]] = {k: [] for k in forms}
    t_step: dict[str, list[float]] = {k: [] for k in forms}
    for r in range(reps + 1):  # round 0 warms up and is dropped
        for name, f in forms.items():
            net.eval()
            t0 = time.perf_counter()
            extract(f)
            t_ext[name].append(time.perf_counter() - t0)
            net.train()
            t0 = time.perf_counter()
            step(name)
            t_step[name].append(time.perf_counter() - t0)
        if r == 0:
            for t in (*t_ext.values(), *t_step.values()):
                t.clear()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; PointNet ×0.5, batch 32 × 512 points; "
          f"{reps} repetitions")
    print(f"identical feats and global_feats in both forms: {same}")
    for title, times in (("feature extraction (no gradient)", t_ext), ("GMM pre-training step", t_step)):
        print(title)
        for name, t in times.items():
            print(f"  {name:>5}: {1e3 * min(t):7.1f} ms (median {1e3 * statistics.median(t):7.1f})")
        print(f"  speed-up of the lazy outputs: {min(times['eager']) / min(times['lazy']):.2f}×")


if __name__ == "__main__":
    main()
