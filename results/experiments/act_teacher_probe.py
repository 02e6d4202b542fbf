"""Issue 12: how much class information the stage-1 teacher's own features carry — the scans and clean-object probe
(1 and 5 labelled shapes per class, C = 0.01, mean ± std over 12 label draws) of a saved dVAE's pooled token features
[max ‖ mean] (what ``DiscreteVAE.encode`` returns). MODE picks the tokens: ``global`` (the targets of ACT's student:
dgcnn_2 after the prompted Transformer, argmax codes), ``soft`` (the same with softmax code weights instead of one
code), ``h`` (the prompted Transformer's output), ``enc`` (the code logits). ``random``: an untrained dVAE around
the same pretrained MiniLM.

    MODE=global .venv/bin/python results/experiments/act_teacher_probe.py /tmp/act/teacher_e12_s204_n20_1.pt random
"""
import os
import sys

import numpy as np
import torch
from act_probe_draws import draw_accuracies  # the script beside this one

import ssl3d  # noqa: F401  (thread settings)
from ssl3d import act as A
from ssl3d import evaluate as E
from ssl3d.data import load_dataset

mode = os.environ.get("MODE", "global")
scans = dict(n_points=1024, seed=0, variant="PB_T50_RS")
clean = dict(n_points=1024, seed=0, random_yaw=True)
tasks = {"scans": (load_dataset("scanned_objects", "train", None, n_per_class=10, **scans),
                   load_dataset("scanned_objects", "test", None, n_per_class=10, **scans)),
         "objects": (load_dataset("objects", "train", None, n_per_class=10, **clean),
                     load_dataset("objects", "test", None, n_per_class=10, **clean))}


def encode(self, batch):
    neighborhood, center = self.group(batch["points"])
    if mode == "h":
        f = self.tokenizer_features(neighborhood, center, sampling="argmax", return_global=False)
    elif mode == "soft":  # softmax(logits) instead of a one-hot code: the expected code embedding
        soft = self.sample_codes(self.logits(neighborhood, center), "softmax", tau=1.0)
        f = self.dgcnn_2(self.prompted_transformer(soft @ self.codebook, center), center)
    elif mode == "enc":
        f = self.logits(neighborhood, center)
    else:
        f = self.tokenizer_features(neighborhood, center, sampling="argmax")
    return {"feats": f, "global_feats": torch.cat([f.max(1).values, f.mean(1)], -1)}  # (B, G, D), (B, 2D)


A.DiscreteVAE.encode = encode
for path in sys.argv[1:]:
    if path == "random":
        torch.manual_seed(0)
        net = A.DiscreteVAE(**{**A.SMOKE_DVAE, "num_group": 32, "group_size": 16}, load_teacher_weights=True).eval()
    else:
        net = A.load_dvae(path).eval()
    for task, (train, test) in tasks.items():
        ytr, yte = np.asarray(train.labels), np.asarray(test.labels)
        xtr = np.asarray(E.extract_global_features(net, train, 32)[0])
        xte = np.asarray(E.extract_global_features(net, test, 32)[0])
        out = []
        for budget in (1, 5):
            accs = draw_accuracies(xtr, ytr, xte, yte, budget, C=0.01, seed=0)
            out.append(f"{budget}/class: {np.mean(accs):.1f} ± {np.std(accs):.1f}")
        print(f"{mode} {path} {task}: " + " | ".join(out), flush=True)
