"""Issue 10's many-seed check: plain fine-tuning, fine-tuning + precise BatchNorm, and LP-FT + precise BatchNorm of
notebook 04's PointInfoNCE checkpoint against scratch, 20 labelled points per room, on notebook 04's rooms and
settings (``ssl3d.protocols.finetune_semseg``; one line per seed).

    .venv/bin/python results/experiments/finetune_variants.py VARIANT SEED [SEED ...]
        VARIANT: ft | ftpbn | lpftpbn (lr 0.1) | lpftpbn03 (lr 0.03, the notebooks' setting)
        needs runs/smoke/checkpoints/04_pointcontrast_nce_res16unet14tiny.pt
        (./reproduce.sh --only 04)
    N=30 bash results/experiments/many_seeds.sh OUT   # every variant x seeds 0..N-1, 16 processes of one thread
"""
import sys

import torch

import ssl3d  # noqa: F401  (thread settings)
from ssl3d import protocols as PR
from ssl3d import sparse as sp
from ssl3d.data import load_dataset
from ssl3d.data import transforms as T
from ssl3d.models import build_model, load_backbone

VARIANTS = {"ft": dict(head_init="random", precise_bn=False), "ftpbn": dict(head_init="random", precise_bn=True),
            "lpftpbn": dict(head_init="probe", precise_bn=True),
            "lpftpbn03": dict(head_init="probe", precise_bn=True, lr=0.03)}
variant, seeds = sys.argv[1], [int(s) for s in sys.argv[2:]]
sp.set_backend("torch")
nce = load_backbone("runs/smoke/checkpoints/04_pointcontrast_nce_res16unet14tiny.pt")
kw = dict(points_per_room=30000, voxel_size=0.1, seed=0, test_area=5, features="ones")  # notebook 04's rooms
aug = T.Compose([T.RandomRotation((0, 0, 1)), T.RandomScale(0.9, 1.1)])
train = load_dataset("scenes", "train", None, transform=aug, n_rooms=8, **kw)
test = load_dataset("scenes", "test", None, n_rooms=6, **kw)
st = PR.TrainSettings(steps=24, batch_size=2, optimizer="sgd", momentum=0.9, weight_decay=1e-4, scheduler="poly",
                      **{"lr": 0.1, **VARIANTS[variant]})
for s in seeds:
    torch.manual_seed(s)
    out = {}
    for name, net in {"scratch": build_model("res16unet14tiny", in_channels=0, out_channels=32), "nce": nce}.items():
        out[name] = PR.finetune_semseg(net, train, test, regime="annotations", budget=20, seed=s, method=name,
                                       settings=st)[0]["value"]
    gain = out["nce"] - out["scratch"]
    print(f"{variant} seed {s} nce {out['nce']:.2f} scratch {out['scratch']:.2f} gain {gain:+.2f}", flush=True)
