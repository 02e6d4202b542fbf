"""Small sparse maps: the torch backend's neighbour-matrix path against its per-offset path (and MinkowskiEngine).

The smoke notebooks train a Res16UNet14Tiny on small clouds: view pairs of the embedded rooms at 10 cm (04, a batch
of 2 pairs = 4 clouds of ~2,000–2,500 voxels) and embedded rooms at 10 cm (02/04/05/07 fine-tuning, 2 rooms of
~12,000 voxels). On such maps a convolution is a few thousand rows of 8–64 channels, and the per-offset path
(gather → GEMM → ``index_add_`` for each of the 27 offsets) is dominated by per-op overhead. Maps whose (rows, K·C)
neighbour matrix has at most ``torch_ops.DENSE_MAX_ELEMENTS`` entries therefore take one gather and one GEMM
(see ``ssl3d/sparse/torch_ops.py``).

Run under the notebooks' thread settings: ``import ssl3d`` first sets OpenMP's wait policy to PASSIVE (idle OpenMP
threads sleep; see ``ssl3d/__init__.py``), so every 2-thread op wakes a sleeping thread, and the per-offset path's
thousands of small ops per step pay that each time. Under OpenMP's default spinning policy the two paths were within
1.02–1.14× of each other on these workloads (2026-11-26, same machine).

Printed: the time of one training step (forward, loss, backward, SGD step; kernel maps built inside the timed
region, as in training) for each workload and path — the minimum over interleaved repetitions, the median beside
it — and the ratio per-offset / neighbour-matrix measured in the same run. No target; README quotes the ratio.

    .venv/bin/python benchmarks/sparse_small.py            # 8 repetitions
    .venv/bin/python benchmarks/sparse_small.py --quick    # 3 repetitions (< 1 min)
"""

from __future__ import annotations

import argparse
import statistics
import time

import ssl3d  # noqa: F401 — first: OpenMP's wait policy PASSIVE before torch loads, as in the notebooks

# isort: split
import torch

from ssl3d import geometry as G
from ssl3d import sparse as sp
from ssl3d.data import load_dataset
from ssl3d.models import build_model
from ssl3d.sparse import torch_ops


def workloads() -> dict[str, dict]:
    """Two batches shaped as the smoke notebooks' batches: {name: collated batch}."""
    pairs = load_dataset("view_pairs", "train", None, n_rooms=2, frames_per_room=8, width=128, height=96,
                         voxel_size=0.1, min_overlap=0.3, max_gap=4, seed=100, frame="world")
    views = [pairs[i][f"coords{v}"] for i in (0, 1) for v in (0, 1)]
    rooms = load_dataset("scenes", "train", None, n_rooms=2, points_per_room=30000, voxel_size=0.1, seed=0,
                         features="ones")
    batch = lambda clouds: {"coords": G.with_batch_index(clouds),  # noqa: E731 — (ΣM, 4), constant features
                            "feats": torch.ones(sum(len(c) for c in clouds), 1)}
    return {"view pairs (04 pre-training)": batch(views), "rooms (fine-tuning)": batch([r["coords"] for r in rooms])}


def step(net, opt, batch, backend: str) -> None:
    x = sp.SparseTensor(batch["coords"], batch["feats"], backend=backend)
    loss = net(x).feats.square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 repetitions instead of 8")
    args = ap.parse_args()
    reps = 3 if args.quick else 8
    default = torch_ops.DENSE_MAX_ELEMENTS
    paths = {"neighbour matrix": ("torch", default), "per offset": ("torch", 0)}
    if sp.minkowski_available():
        paths["MinkowskiEngine"] = ("minkowski", default)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, DENSE_MAX_ELEMENTS = {default}")
    for name, batch in workloads().items():
        torch.manual_seed(0)
        net = build_model("res16unet14tiny", in_channels=1, out_channels=32)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3)
        times = {p: [] for p in paths}
        for r in range(reps + 1):  # the first round warms up and is not counted
            for p, (backend, limit) in paths.items():
                torch_ops.DENSE_MAX_ELEMENTS = limit
                t = time.perf_counter()
                step(net, opt, batch, backend)
                if r:
                    times[p].append(time.perf_counter() - t)
        torch_ops.DENSE_MAX_ELEMENTS = default
        print(f"\n{name}: {len(batch['coords'])} voxels, {reps} repetitions")
        for p, ts in times.items():
            print(f"  {p:>16}: min {min(ts) * 1e3:7.1f} ms, median {statistics.median(ts) * 1e3:7.1f} ms")
        ratio = min(times["per offset"]) / min(times["neighbour matrix"])
        print(f"  per offset / neighbour matrix = {ratio:.2f}×")


if __name__ == "__main__":
    main()
