"""Issue 12's student variants: one stage-1 teacher (trained once, cached under /tmp/act), then an ACT student per
seed and notebook 06's scans probe (1 and 5 labelled shapes per class, one label draw per seed) against the scratch
network of the same seed. Notebook 06's data, sizes and optimiser
one line per seed.

    .venv/bin/python results/experiments/act_variants.py [key=value ...]
        dvae_epochs=12 steps=204   teacher: 12 epochs (204 iterations), τ/KL schedules over 204 (notebook: 4, 68)
        target=gumbel|argmax center=0|1 ep=6 lr=1e-3 mr=0.8   the student (ep: epochs of 17 iterations)
        seeds=0,1,2 tag=NAME   tag: save scratch and student weights to /tmp/act/stud_NAME_SEED.pt for
                               act_probe_draws.py
"""
import itertools
import os
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

import ssl3d  # noqa: F401  (thread settings)
from ssl3d import act as A
from ssl3d import protocols as PR
from ssl3d.data import datasets as D
from ssl3d.data import load_dataset
from ssl3d.data import transforms as T
from ssl3d.methods import build_method
from ssl3d.models import build_model
from ssl3d.models import transformer as TR
from ssl3d.train import pretrain, recompute_batchnorm

args = dict(a.split("=", 1) for a in sys.argv[1:])
dvae_epochs = int(args.get("dvae_epochs", 12))
steps = int(args.get("steps", 204))
target = args.get("target", "gumbel")
center = args.get("center", "0") == "1"
ep = int(args.get("ep", 2))
lr = float(args.get("lr", 1e-3))
ntest = int(args.get("ntest", 10))
seeds = [int(s) for s in args.get("seeds", "0,1,2").split(",")]
ft = args.get("ft", "0") == "1"
npre = int(args.get("npre", 20))
mr = float(args.get("mr", 0.8))
pretrained_teacher = args.get("teacher", "pretrained") == "pretrained"
torch.set_num_threads(2)
seed = 0
pretrain_aug = T.Compose([T.RandomRotation((0, 0, 1)), A.ScaleAndTranslate()])
pretrain_ds = load_dataset("objects", "train", None, n_per_class=npre, n_points=1024, seed=seed + 100,
                           random_yaw=True, transform=pretrain_aug)
scans = dict(n_points=1024, seed=seed, variant="PB_T50_RS")
scan_train = load_dataset("scanned_objects", "train", None, n_per_class=10, **scans)
scan_train_aug = load_dataset("scanned_objects", "train", None, n_per_class=10,
                              transform=T.RandomRotation((0, 0, 1)), **scans)
scan_test = load_dataset("scanned_objects", "test", None, n_per_class=ntest, **scans)
dvae_config = {**A.SMOKE_DVAE, "num_group": 32, "group_size": 16, "teacher": "minilm", "teacher_weights": None,
               "teacher_depth": 2}
student_config = {**TR.SMOKE, "num_group": 32, "group_size": 16}
os.makedirs("/tmp/act", exist_ok=True)
tpath = f"/tmp/act/teacher_e{dvae_epochs}_s{steps}_n{npre}_{int(pretrained_teacher)}.pt"
if os.path.exists(tpath):
    dvae = A.load_dvae(tpath)
else:
    torch.manual_seed(seed)
    dvae = A.DiscreteVAE(**dvae_config, load_teacher_weights=pretrained_teacher)
    sched = dict(temp_start=1.0, temp_target=0.0625, temp_steps=steps, kl_start=0.0, kl_target=0.1, kl_steps=steps,
                 kl_warmup=max(steps // 10, 1))
    t0 = time.perf_counter()
    h = pretrain(build_method("act_dvae", dvae, **sched), pretrain_ds, epochs=dvae_epochs, batch_size=16, lr=5e-4,
                 weight_decay=5e-4, scheduler="cosine", warmup=6, clip_grad=10.0, seed=seed, desc="dvae")
    dvae.eval()
    bn_loader = DataLoader(pretrain_ds, 32, shuffle=True, generator=torch.Generator().manual_seed(seed))
    recompute_batchnorm(dvae, itertools.islice(bn_loader, 4), forward=lambda b: dvae(b["points"].float()))
    A.save_dvae(dvae, tpath, teacher="minilm", pretrained=pretrained_teacher)
    print(f"teacher {len(h['loss'])} it {time.perf_counter()-t0:.0f}s "
          f"recon {np.mean(h['recon'][-5:]):.4f} perp {h['code_perplexity'][-1]:.0f}", flush=True)
res = {}
def probe(net, name, s):
    out = {}
    for b in (1, 5):
        r = PR.linear_probe(net, scan_train, scan_test, method=name, task="scans", seed=s, budget=b,
                            Cs=[0.001, 0.01, 0.1, 1.0])
        out[f"p{b}"] = next(x["value"] for x in r if x["metric"] == "accuracy")
    if ft:
        settings = PR.TrainSettings(steps=30, batch_size=16, optimizer="adamw", lr=5e-4, weight_decay=0.05,
                                    scheduler="cosine", warmup=0)
        r = PR.finetune_classification(net, scan_train_aug, scan_test, budget=1, seed=s, method=name, task="scans",
                                       settings=settings)
        out["ft1"] = next(x["value"] for x in r if x["metric"] == "accuracy")
    return out
t_all = time.perf_counter()
for s in seeds:
    torch.manual_seed(s)
    scratch = build_model("point_transformer", **student_config)
    pretrain_ds.set_epoch(0)
    bn_loader = DataLoader(pretrain_ds, 32, shuffle=True, collate_fn=D.collate_for(scratch),
                           generator=torch.Generator().manual_seed(s))
    recompute_batchnorm(scratch, itertools.islice(bn_loader, 4))
    torch.manual_seed(s)
    method = build_method("act", build_model("point_transformer", **student_config), teacher=dvae, mask_ratio=mr,
                          target=target, center_targets=center)
    t0 = time.perf_counter()
    h = pretrain(method, pretrain_ds, epochs=ep, batch_size=16, optimizer="adamw", lr=lr, weight_decay=0.05,
                 scheduler="cosine", warmup=3, seed=s, desc=None)
    tt = time.perf_counter() - t0
    method.eval()
    bn_loader = DataLoader(pretrain_ds, 32, shuffle=True, collate_fn=D.collate_for(method.backbone),
                           generator=torch.Generator().manual_seed(s))
    recompute_batchnorm(method.backbone, itertools.islice(bn_loader, 4))
    tag = args.get("tag")
    if tag:
        torch.save({"scratch": scratch.state_dict(), "act": method.backbone.state_dict()},
                   f"/tmp/act/stud_{tag}_{s}.pt")
    res[s] = {"scratch": probe(scratch, "scratch", s), "act": probe(method.backbone, "ACT", s)}
    print(f"seed {s}: student {len(h['loss'])} it {tt:.0f}s "
          f"cos {np.mean(h['cosine'][:5]):.3f}->{np.mean(h['cosine'][-5:]):.3f} {res[s]}", flush=True)
for k in res[seeds[0]]["act"]:
    a = [res[s]["act"][k] for s in seeds]
    b = [res[s]["scratch"][k] for s in seeds]
    if len(seeds) > 1:
        print(f"{k}: ACT {np.mean(a):.2f}±{np.std(a, ddof=1):.2f} scratch {np.mean(b):.2f}±{np.std(b, ddof=1):.2f} "
              f"{PR.compare(a, b)['text']}")
print(f"args {args} total {time.perf_counter()-t_all:.0f}s")
