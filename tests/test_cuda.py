"""On a CUDA GPU, the library computes what it computes on the CPU: the sparse U-Net (torch backend, forward and
gradients), both contrastive losses, the GMM bottleneck, the semantic-segmentation evaluation, and one training step
of every registered method through the pre-training CLI's builder. Skipped without a GPU (CI has none; the lent GPU
machine runs it: ``python -m pytest tests/test_cuda.py``)."""

import os

import pytest
import torch

import ssl3d.sparse as sp
from ssl3d import contrastive as C
from ssl3d.data import datasets as D
from ssl3d.data import load_dataset
from ssl3d.gmm import gmm_nll, gmm_params
from ssl3d.models import build_model

# SSL3D_TEST_DEVICE=cpu runs these on the CPU against itself: a dry run of the code paths, not a GPU check
CUDA = torch.device(os.environ.get("SSL3D_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA GPU")


@pytest.fixture(autouse=True)
def _torch_backend():
    old = sp.get_backend()
    sp.set_backend("torch")  # MinkowskiEngine is built CPU-only here; the torch backend is the one on any GPU
    yield
    sp.set_backend(old)


def scene_batch(n=2, voxel=0.1):
    ds = load_dataset("scenes", "train", None, n_rooms=n, points_per_room=6000, voxel_size=voxel, seed=0,
                      features="ones")
    return D.collate_scenes([ds[i] for i in range(n)]), ds.num_classes


def test_sparse_unet_forward_and_gradients_match_cpu():
    batch, _ = scene_batch()
    torch.manual_seed(0)
    net = build_model("res16unet14tiny", in_channels=0, out_channels=32).eval()  # eval: BatchNorm's fixed stats
    gpu = build_model("res16unet14tiny", in_channels=0, out_channels=32)
    gpu.load_state_dict(net.state_dict())
    gpu = gpu.to(CUDA).eval()
    w = torch.randn(len(batch["coords"]), 32, generator=torch.Generator().manual_seed(1))
    outs, grads = [], []
    for m in (net, gpu):
        f = m.encode(batch)["feats"]  # (ΣM, 32), the batch's row order on both devices
        (f * w.to(f.device)).sum().backward()
        outs.append(f.detach().cpu())
        grads.append({k: p.grad.detach().cpu() for k, p in m.named_parameters()})
    torch.testing.assert_close(outs[1], outs[0], atol=2e-5, rtol=1e-4)
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], atol=1e-3, rtol=1e-3, msg=k)


def test_sparse_unet_train_mode_matches_cpu():
    """Train mode: BatchNorm's batch statistics (the reduction order differs on the GPU)."""
    batch, _ = scene_batch()
    torch.manual_seed(0)
    net = build_model("res16unet14tiny", in_channels=0, out_channels=32).train()
    gpu = build_model("res16unet14tiny", in_channels=0, out_channels=32)
    gpu.load_state_dict(net.state_dict())
    gpu = gpu.to(CUDA).train()
    torch.testing.assert_close(gpu.encode(batch)["feats"].detach().cpu(), net.encode(batch)["feats"].detach(),
                               atol=1e-4, rtol=1e-3)
    for (k, a), b in zip(net.state_dict().items(), gpu.state_dict().values()):
        if a.is_floating_point():  # the running statistics after one batch
            torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=1e-3, msg=k)


def _one_match_per_point(gen, n0=300, n1=280, c=32):
    f0 = torch.randn(n0, c, generator=gen)
    f1 = torch.randn(n1, c, generator=gen)
    j = torch.randperm(n1, generator=gen)[: n0 - 40]
    return f0, f1, torch.stack([torch.arange(n0 - 40), j], 1)  # the last 40 view-0 points unmatched


@pytest.mark.parametrize("loss", ["nce", "hardest"])
def test_contrastive_losses_and_gradients_match_cpu(gen, loss):
    """No subsampling (num_pos ≥ pairs, every candidate a negative): the same terms on both devices."""
    f0, f1, m = _one_match_per_point(gen)
    vals, grads = [], []
    for dev in ("cpu", CUDA):
        a, b = f0.to(dev).requires_grad_(True), f1.to(dev).requires_grad_(True)
        if loss == "nce":
            v = C.point_info_nce(a, b, m.to(dev), num_pos=10_000, temperature=0.4)
        else:
            v = C.hardest_contrastive(a, b, m.to(dev), num_pos=10_000, num_hn=10_000)
        vals.append(v.item())
        grads.append([g.cpu() for g in torch.autograd.grad(v, (a, b))])
    assert abs(vals[1] - vals[0]) < 1e-5 * max(1.0, abs(vals[0]))
    for g_gpu, g_cpu in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_gpu, g_cpu, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cov", ["full", "diag", "iso"])
def test_gmm_parameters_and_nll_match_cpu(gen, dtype, cov):
    x = (torch.randn(4, 512, 3, generator=gen, dtype=torch.float64) * 0.3 + 5.0).to(dtype)  # off the origin
    logits = (torch.randn(4, 512, 16, generator=gen, dtype=torch.float64) * 3).to(dtype)
    tol = dict(atol=1e-10, rtol=1e-9) if dtype == torch.float64 else dict(atol=1e-4, rtol=1e-4)
    p_cpu, p_gpu = gmm_params(x, logits, cov=cov), gmm_params(x.to(CUDA), logits.to(CUDA), cov=cov)
    for name in ("pi", "mu", "cov"):
        torch.testing.assert_close(getattr(p_gpu, name).cpu(), getattr(p_cpu, name), **tol, msg=name)
    lc = logits.clone().requires_grad_(True)
    lg = logits.to(CUDA).requires_grad_(True)
    n_cpu, n_gpu = gmm_nll(x, lc, cov=cov), gmm_nll(x.to(CUDA), lg, cov=cov)
    torch.testing.assert_close(n_gpu.detach().cpu(), n_cpu.detach(), **tol)
    torch.testing.assert_close(torch.autograd.grad(n_gpu, lg)[0].cpu(), torch.autograd.grad(n_cpu, lc)[0], **tol)


def test_evaluate_semseg_matches_cpu():
    from ssl3d.evaluate import evaluate_semseg
    from ssl3d.models.heads import Segmenter

    test = load_dataset("scenes", "test", None, n_rooms=2, points_per_room=6000, voxel_size=0.1, seed=0,
                        features="ones", test_area=5)
    torch.manual_seed(0)
    model = Segmenter(build_model("res16unet14tiny", in_channels=0, out_channels=32), test.num_classes).eval()
    cpu = evaluate_semseg(model, test, test.num_classes)
    gpu = evaluate_semseg(model.to(CUDA), test, test.num_classes)
    assert abs(gpu.miou - cpu.miou) < 1e-3 and abs(gpu.accuracy - cpu.accuracy) < 1e-3


@pytest.mark.parametrize("name", ["act", "gmm", "image_to_point", "pointcontrast"])
def test_every_pretraining_config_runs_on_cuda(tmp_path, name):
    """The CLI's code path (``ssl3d.pretrain.run``, device "cuda") at tiny sizes: finite losses, weights that move,
    a backbone file that rebuilds."""
    from test_distributed import ROOT, _tiny  # pytest puts tests/ on sys.path

    from ssl3d.models import load_backbone
    from ssl3d.pretrain import load_config, run

    cfg = load_config(ROOT / "configs" / "pretrain" / f"{name}.yaml")
    tiny = _tiny(name, tmp_path)
    cfg["backbone"] = tiny["backbone"]
    cfg["method"]["args"].update(tiny["method"]["args"])
    cfg["data"]["options"] = tiny["data"]["options"]
    cfg["train"].update(epochs=2, batch_size=2, checkpoint_every=None, warmup=0, device=CUDA.type)
    cfg["output"] = {"dir": str(tmp_path / "out")}
    res = run(name, cfg)
    loss = torch.tensor(res["history"]["loss"])
    assert len(loss) >= 2 and torch.isfinite(loss).all()
    net = load_backbone(res["backbone_path"])
    torch.manual_seed(cfg["train"]["seed"])
    init = build_model(cfg["backbone"]["name"], **cfg["backbone"]["args"])
    assert any(not torch.equal(a, b) for a, b in zip(net.state_dict().values(), init.state_dict().values())
               if a.is_floating_point()), "no backbone weight changed"
