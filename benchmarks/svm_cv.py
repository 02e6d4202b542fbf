"""The linear probe's choice of C: cross-validation fits on threads against the one-thread loop.

``ssl3d.evaluate.select_svm_C`` fits one linear SVM per (C, fold). It standardises each fold once (not once per C)
and runs the primal fits (C < 1) on ``torch.get_num_threads()`` threads (liblinear releases the GIL); dual fits
(C ≥ 1) run one at a time, since every fit reseeds liblinear's process-wide generator that the dual solver shuffles
with. The chosen C and every validation accuracy are the same for any thread count (checked here, and by
``tests/test_evaluate.py``).

Printed: the time of one C choice on notebook 03's clean-object probe (560 training shapes of 14 classes, the
1,024-d global features of a random-init PointNet ×0.5, Cs 0.001 / 0.01 / 0.1, 3 folds), ``n_jobs=1`` and the
default, interleaved; the minimum and median over repetitions and their ratio measured in the same run. No target;
README quotes it.

    .venv/bin/python benchmarks/svm_cv.py            # 5 repetitions
    .venv/bin/python benchmarks/svm_cv.py --quick    # 2 repetitions
"""

from __future__ import annotations

import argparse
import statistics
import time

import ssl3d  # noqa: F401 — first: OpenMP's wait policy PASSIVE before torch loads, as in the notebooks

# isort: split
import numpy as np
import torch

from ssl3d.data import load_dataset
from ssl3d.evaluate import extract_global_features, select_svm_C
from ssl3d.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 repetitions instead of 5")
    args = ap.parse_args()
    reps = 2 if args.quick else 5
    shapes = load_dataset("objects", "train", None, n_per_class=40, n_points=512, seed=0, random_yaw=True)
    torch.manual_seed(0)
    x = extract_global_features(build_model("pointnet", width=0.5), shapes, 64)[0].numpy()
    y = np.asarray(shapes.labels)
    Cs, folds = [0.001, 0.01, 0.1], 3
    runs = {"1 thread": 1, f"{torch.get_num_threads()} threads": None}
    times: dict[str, list[float]] = {k: [] for k in runs}
    results = {}
    for _ in range(reps):
        for name, n_jobs in runs.items():
            t0 = time.perf_counter()
            results[name] = select_svm_C(x, y, Cs, seed=0, folds=folds, n_jobs=n_jobs)
            times[name].append(time.perf_counter() - t0)
    if len({repr(r) for r in results.values()}) != 1:
        raise SystemExit(f"the thread count changed the result: {results}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {x.shape[0]} shapes × {x.shape[1]} features, "
          f"{len(np.unique(y))} classes, Cs {Cs}, {folds} folds; {reps} repetitions")
    print(f"chosen C {results['1 thread'][0]:g}, validation accuracies {results['1 thread'][1]} (identical for both)")
    for name, t in times.items():
        print(f"{name:>10}: {min(t):6.2f} s per C choice (median {statistics.median(t):6.2f})")
    a, b = times.values()
    print(f"speed-up on threads: {min(a) / min(b):.2f}×")


if __name__ == "__main__":
    main()
