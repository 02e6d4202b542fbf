"""Issue 12: the scans probe of saved students (act_variants.py tag=NAME, act_supervised_bound.py) averaged over
12 label draws per seed, at fixed C values and for 1-nearest-neighbour (cosine): how much of the seed-to-seed spread
of notebook 06's probe is the draw of the 14 labelled shapes, and whether the students beat scratch once it is
averaged out. Prints mean ± std over the draws, per seed and C.

    .venv/bin/python results/experiments/act_probe_draws.py NAME [N_TEST_PER_CLASS=10] [SEEDS=0,1,2]
"""
import sys

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

import ssl3d  # noqa: F401  (thread settings)
from ssl3d import evaluate as E
from ssl3d.data import load_dataset
from ssl3d.models import build_model
from ssl3d.models import transformer as TR


def draw_accuracies(xtr, ytr, xte, yte, budget: int, C, seed: int = 0, draws: int = 12) -> list[float]:
    """Test accuracy [%] of a probe fitted on ``budget`` training rows per class, for ``draws`` draws of those rows
    (draw d: numpy generator 1000 · seed + d). C: a LinearSVC on standardised features, or "nn" (1-NN, cosine)."""
    accs = []
    for d in range(draws):
        rng = np.random.default_rng(1000 * seed + d)
        idx = np.concatenate([rng.choice(np.flatnonzero(ytr == c), budget, replace=False) for c in np.unique(ytr)])
        if C == "nn":
            a = xtr[idx] / np.linalg.norm(xtr[idx], axis=1, keepdims=True)
            q = xte / np.linalg.norm(xte, axis=1, keepdims=True)
            pred = ytr[idx][(q @ a.T).argmax(1)]
        else:
            sc = StandardScaler().fit(xtr[idx])
            pred = LinearSVC(C=C, max_iter=5000).fit(sc.transform(xtr[idx]), ytr[idx]).predict(sc.transform(xte))
        accs.append(100 * (pred == yte).mean())
    return accs


def main():
    tag = sys.argv[1]
    ntest = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    scans = dict(n_points=1024, seed=0, variant="PB_T50_RS")
    tr = load_dataset("scanned_objects", "train", None, n_per_class=10, **scans)
    te = load_dataset("scanned_objects", "test", None, n_per_class=ntest, **scans)
    ytr, yte = np.asarray(tr.labels), np.asarray(te.labels)
    for s in [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "0,1,2").split(",")]:
        sd = torch.load(f"/tmp/act/stud_{tag}_{s}.pt")
        for name in ("scratch", "act"):
            net = build_model("point_transformer", **{**TR.SMOKE, "num_group": 32, "group_size": 16})
            net.load_state_dict(sd[name])
            net.eval()
            xtr = np.asarray(E.extract_global_features(net, tr, 64)[0])
            xte = np.asarray(E.extract_global_features(net, te, 64)[0])
            out = []
            for b in (1, 5):
                for C in (0.001, 0.01, 0.1, 1.0, "nn"):
                    accs = draw_accuracies(xtr, ytr, xte, yte, b, C, seed=s)
                    out.append(f"b{b} C{C}: {np.mean(accs):.1f}±{np.std(accs):.1f}")
            print(s, name, " | ".join(out), flush=True)


if __name__ == "__main__":
    main()
