"""Issue 12's upper reference: the notebook-06 student network pre-trained *with labels* (cross-entropy) on the same
280 clean pre-training shapes and budget (EPOCHS × 17 iterations), saved as /tmp/act/stud_supobjectsEPOCHS_0.pt
beside a scratch network for act_probe_draws.py.

    .venv/bin/python results/experiments/act_supervised_bound.py EPOCHS
    .venv/bin/python results/experiments/act_probe_draws.py supobjectsEPOCHS 10 0
"""
import itertools
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader

import ssl3d  # noqa: F401  (thread settings)
from ssl3d import act as A
from ssl3d.data import datasets as D
from ssl3d.data import load_dataset
from ssl3d.data import transforms as T
from ssl3d.methods import build_method
from ssl3d.models import build_model
from ssl3d.models import transformer as TR
from ssl3d.train import pretrain, recompute_batchnorm

ep = int(sys.argv[1])
src = sys.argv[2] if len(sys.argv) > 2 else "objects"
aug = T.Compose([T.RandomRotation((0, 0, 1)), A.ScaleAndTranslate()])
if src == "objects":
    ds = load_dataset("objects", "train", None, n_per_class=20, n_points=1024, seed=100, random_yaw=True, transform=aug)
else:  # scans from a disjoint seed (a labelled scan corpus)
    ds = load_dataset("scanned_objects", "train", None, n_per_class=20, n_points=1024, seed=100,
                      variant="PB_T50_RS", transform=aug)
torch.manual_seed(0)
scratch = build_model("point_transformer", **{**TR.SMOKE, "num_group": 32, "group_size": 16})
torch.manual_seed(0)
net = build_model("point_transformer", **{**TR.SMOKE, "num_group": 32, "group_size": 16})  # the same initial weights
m = build_method("supervised", net, num_classes=ds.num_classes)
h = pretrain(m, ds, epochs=ep, batch_size=16, lr=1e-3, weight_decay=0.05, scheduler="cosine", warmup=3, seed=0)
print("train acc last", np.mean(h["accuracy"][-5:]))
net.eval()
loader = DataLoader(ds, 32, shuffle=True, collate_fn=D.collate_for(net), generator=torch.Generator().manual_seed(0))
recompute_batchnorm(net, itertools.islice(loader, 4))
recompute_batchnorm(scratch, itertools.islice(loader, 4))
torch.save({"scratch": scratch.state_dict(), "act": net.state_dict()}, f"/tmp/act/stud_sup{src}{ep}_0.pt")
