# The script that produced many_seeds_device.log (kept as run; finetune_variants.py is its library equivalent).
# Ran as .devrun/lpft.py with args: ft = "lpe=0 pbn=0", ftpbn = "lpe=0 pbn=1", lpftpbn = "lpe=1 raw=1 pbn=1", lr=0.1 s0=S nseeds=S+1.
"""Issue 10: LP-FT (head fitted on frozen features, then the whole net fine-tuned) vs plain fine-tuning."""
import ssl3d, sys, time
import numpy as np, torch
from ssl3d import protocols as PR, sparse as sp
from ssl3d.data import load_dataset, transforms as T, datasets as D
from ssl3d.models import build_model, load_backbone
from ssl3d.models.heads import Segmenter, head_features
from ssl3d.evaluate import evaluate_semseg
args = dict(a.split("=") for a in sys.argv[1:])
seeds = list(range(int(args.get("s0", 0)), int(args.get("nseeds", 6))))
ft = int(args.get("ft", 24)); lr = float(args.get("lr", 0.1)); lp_epochs = int(args.get("lpe", 2)); lp_iters = int(args.get("lpi", 200))
wd_lp = float(args.get("wdlp", 1e-4)); bb = float(args.get("bb", 1.0))
ckpt = args.get("ckpt", "runs/smoke/checkpoints/04_pointcontrast_nce_res16unet14tiny.pt")
sp.set_backend("torch"); arch = "res16unet14tiny"; t0 = time.perf_counter()
nce = load_backbone(ckpt)
scene_kw = dict(n_rooms=int(args.get("ntest", 6)), points_per_room=30000, voxel_size=0.1, seed=0, test_area=5, features="ones")
aug = T.Compose([T.RandomRotation((0, 0, 1)), T.RandomScale(0.9, 1.1)])
train_scenes = load_dataset("scenes", "train", None, transform=aug, **dict(scene_kw, n_rooms=8))
test_scenes = load_dataset("scenes", "test", None, **scene_kw)
st = PR.TrainSettings(steps=ft, batch_size=2, optimizer="sgd", lr=lr, momentum=0.9, weight_decay=1e-4, scheduler="poly")
K = train_scenes.num_classes

def run(backbone, s):
    labelled = train_scenes.with_annotations(20, s)
    model = Segmenter(PR._fresh_copy(backbone, s), K)
    loader = PR._loader(labelled, 2, s, D.collate_scenes)
    if lp_epochs:
        from ssl3d.train import recompute_batchnorm
        from ssl3d.evaluate import linear_head
        if int(args.get('tm', 0)):
            model.train()
        else:
            recompute_batchnorm(model.backbone, loader); model.eval()
        X, Y = [], []
        with torch.no_grad():
            for b in loader:
                f = model.backbone.encode(b)[model.input]; m = b["labels"] >= 0
                X.append(f[m].double()); Y.append(b["labels"][m])
        if int(args.get("raw", 0)):
            from sklearn.linear_model import LogisticRegression
            Xn, Yn = torch.cat(X).numpy(), torch.cat(Y).numpy()
            clf = LogisticRegression(C=float(args.get("C", 1.0)), max_iter=10000).fit(Xn, Yn)
            lin = torch.nn.Linear(Xn.shape[1], K); w = np.zeros((K, Xn.shape[1])); b = np.full(K, -30.0)
            w[clf.classes_], b[clf.classes_] = clf.coef_, clf.intercept_
            with torch.no_grad(): lin.weight.copy_(torch.from_numpy(w)); lin.bias.copy_(torch.from_numpy(b))
            model.head.out = lin
            print("head |W|", float(np.abs(clf.coef_).max()), flush=True)
        else:
            model.head.out = linear_head(torch.cat(X).numpy(), torch.cat(Y).numpy(), K, "logistic", 1.0, s).float()
            print("head |W|", float(model.head.out.weight.abs().max()), flush=True)
        model.train()
    def step(m, b):
        return torch.nn.functional.cross_entropy(m(b), b["labels"], ignore_index=-100)
    if ft:
        from ssl3d.train import make_scheduler, train
        epochs = max(1, round(ft / len(loader)))
        opt = torch.optim.SGD([{"params": model.backbone.parameters(), "lr": lr * bb}, {"params": model.head.parameters()}],
                              lr=lr, momentum=0.9, weight_decay=1e-4)
        h = train(model, loader, opt, epochs, make_scheduler(opt, "poly", epochs * len(loader)), step_fn=step, desc="ft")
        if int(args.get("hist", 0)):
            print("loss", [round(float(x), 2) for x in h["loss"]], flush=True)
    if int(args.get("pbn", 0)):
        from ssl3d.train import recompute_batchnorm
        recompute_batchnorm(model, [b for b in loader], forward=lambda b: model(b))
    return 100 * evaluate_semseg(model, test_scenes, K, -100).miou

res = {"nce": [], "scratch": []}
for s in seeds:
    torch.manual_seed(s)
    inits = {"scratch": build_model(arch, in_channels=0, out_channels=32), "nce": nce}
    if int(args.get("only_scratch", 0)): inits.pop("nce")
    for name, net in inits.items():
        res[name].append(run(net, s))
    print(s, {k: round(v[-1], 2) for k, v in res.items() if v}, f"{time.perf_counter()-t0:.0f}s", flush=True)
if not res["nce"]: raise SystemExit
n, sc = np.array(res["nce"]), np.array(res["scratch"])
c = PR.compare(n[:3], sc[:3]) if len(n) >= 3 else {"text": "-"}
print(args, f"nce {n.mean():.2f} ± {n.std(ddof=1):.2f}  scratch {sc.mean():.2f} ± {sc.std(ddof=1):.2f}  gain {n.mean()-sc.mean():+.2f}"
      f"  first3: {c['text']}  ahead {int((n>sc).sum())}/{len(n)}  {time.perf_counter()-t0:.0f}s")
