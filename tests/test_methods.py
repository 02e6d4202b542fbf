"""The method interface (ssl3d.methods): a registry of nn.Modules whose forward(batch) returns {"loss", ...}, and
one loop (ssl3d.train.pretrain) that pre-trains any of them."""

import math

import pytest
import torch

from ssl3d import gmm
from ssl3d.data import datasets as D
from ssl3d.methods import Method, build_method, list_methods, register_method
from ssl3d.models import build_model
from ssl3d.train import pretrain


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """One thread: small matmuls (conftest.one_thread)."""


@pytest.fixture(scope="module")
def shapes():
    return D.ObjectDataset(2, 128, classes=["chair", "mug", "lamp", "table"], random_yaw=True)


def test_registry():
    assert "gmm" in list_methods()
    with pytest.raises(KeyError, match="available: .*gmm"):
        build_method("simclr", build_model("pointnet", width=0.125))
    with pytest.raises(TypeError, match="ssl3d backbone"):
        build_method("gmm", torch.nn.Linear(3, 3))
    with pytest.raises(TypeError, match="not a subclass"):
        register_method("x")(object)
    assert issubclass(type(build_method("gmm", build_model("pointnet", width=0.125))), Method)


def test_gmm_method_on_a_point_backbone_is_the_gmm_loss_of_its_logits(shapes):
    torch.manual_seed(0)
    m = build_method("gmm", build_model("pointnet", width=0.125), J=6, cov="full", eps=1e-4).eval()
    batch = m.collate([shapes[i] for i in range(4)])
    out = m(batch)
    logits = m.head(m.backbone.encode(batch)["feats"])  # (B, N, J)
    torch.testing.assert_close(out["loss"], gmm.gmm_nll(batch["points"], logits, cov="full", eps=1e-4))
    pi = logits.softmax(-1).mean(1)  # (B, J)
    eff = torch.exp(-(pi * pi.log()).sum(-1)).mean().detach()
    torch.testing.assert_close(out["effective_components"], eff)
    assert 1 <= float(eff) <= 6
    assert m.partition(batch).shape == (4, 128)


@pytest.mark.parametrize("arch,kw", [("pointnet", {"width": 0.125}), ("res16unet14tiny", {"in_channels": 0})])
def test_pretrain_gmm_through_build_method(arch, kw, shapes):
    """A few steps of GMM pre-training through the registry and the one loop, on a point and a sparse backbone."""
    torch.manual_seed(0)
    method = build_method("gmm", build_model(arch, **kw), J=4, voxel_size=0.2)
    h = pretrain(method, shapes, epochs=6, batch_size=4, optimizer="adamw", lr=3e-3, scheduler=None, seed=0)
    assert len(h["loss"]) == 12 and all(math.isfinite(v) for v in h["loss"])
    assert len(h["effective_components"]) == 12
    assert h["epoch_loss"][-1] < h["epoch_loss"][0]


def test_sparse_gmm_is_the_per_shape_loss_of_the_voxel_centres(shapes):
    """The padded, masked batch equals running each voxelized shape on its own (no Python loop in the method)."""
    torch.manual_seed(0)
    m = build_method("gmm", build_model("res16unet14tiny", in_channels=0, out_channels=16), J=4,
                     voxel_size=0.2).eval()
    batch = m.collate([shapes[i] for i in range(3)])
    loss = m(batch)["loss"]
    logits = m.head(m.backbone.encode(batch)["feats"])  # (ΣM, J)
    b = batch["coords"][:, 0]
    per_shape = [gmm.gmm_log_likelihood(batch["centers"][b == s][None],
                                        gmm.gmm_params(batch["centers"][b == s][None], logits[b == s][None],
                                                       eps=m.eps)) for s in range(3)]
    ref = -torch.cat([ll.reshape(-1) for ll in per_shape]).mean()  # mean over every voxel of the batch
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)


def test_sparse_gmm_on_voxelized_rooms_is_the_loss_of_each_room_s_voxel_centres():
    """Scene items (already voxelized): one mixture per room over (coords + ½)·voxel_size, computed room by room."""
    rooms = D.SceneDataset(n_rooms=2, points_per_room=3000, voxel_size=0.4, features="ones")
    torch.manual_seed(0)
    m = build_method("gmm", build_model("res16unet14tiny", in_channels=0, out_channels=16), J=3,
                     voxel_size=0.4).eval()
    items = [rooms[0], rooms[1]]
    batch = m.collate(items)
    loss = m(batch)["loss"]
    logits = m.head(m.backbone.encode(batch)["feats"])  # (ΣM, J)
    lls = []
    for k, it in enumerate(items):
        c = (it["coords"].double() + 0.5) * 0.4  # (M, 3) voxel centres in metres, by hand
        sel = batch["coords"][:, 0] == k
        lg = logits[sel].double()[None]
        lls.append(gmm.gmm_log_likelihood(c[None], gmm.gmm_params(c[None], lg, eps=m.eps)).reshape(-1))
    torch.testing.assert_close(loss.double(), -torch.cat(lls).mean(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="sparse backbone"):
        build_method("gmm", build_model("pointnet", width=0.125), J=3).collate(items)


def test_supervised_method_is_cross_entropy_on_the_global_feature(shapes):
    torch.manual_seed(0)
    m = build_method("supervised", build_model("pointnet", width=0.125), num_classes=4).eval()
    batch = m.collate([shapes[i] for i in range(4)])
    out = m(batch)
    logits = m.fc(m.backbone.encode(batch)["global_feats"])
    torch.testing.assert_close(out["loss"], torch.nn.functional.cross_entropy(logits, batch["label"]))


def test_pointcontrast_method_is_the_contrastive_loss_of_the_normalised_voxel_features():
    from ssl3d import contrastive as CL
    from ssl3d.data import transforms as T

    ds = D.ViewPairDataset(n_rooms=1, frames_per_room=8, voxel_size=0.1, width=48, height=36,
                           transform=T.RandomRotation(axis=None))
    torch.manual_seed(0)
    backbone = build_model("res16unet14tiny", in_channels=0, out_channels=16)
    for loss in ("nce", "hardest"):
        m = build_method("pointcontrast", backbone, loss=loss, num_pos=64, hardest_num_pos=32, num_hn=16).eval()
        batch = m.collate([ds[0], ds[min(1, len(ds) - 1)]])
        torch.manual_seed(1)
        out = m(batch)
        f0 = torch.nn.functional.normalize(backbone.encode({"coords": batch["coords0"]})["feats"], dim=1)
        f1 = torch.nn.functional.normalize(backbone.encode({"coords": batch["coords1"]})["feats"], dim=1)
        torch.manual_seed(1)
        ref = (CL.point_info_nce(f0, f1, batch["correspondences"], 64) if loss == "nce" else
               CL.hardest_contrastive(f0, f1, batch["correspondences"], 0.1, 1.4, 32, 16, batch_size=2))
        torch.testing.assert_close(out["loss"], ref)
        assert 0 < float(out["feature_std"]) <= 1 and 1 <= float(out["effective_rank"]) <= 16
    with pytest.raises(TypeError, match="sparse backbone"):
        build_method("pointcontrast", build_model("pointnet", width=0.125))


def test_partition_stats_against_a_partition_that_is_the_ground_truth(shapes):
    """Logits that are the ground-truth parts (one-hot × 30): NMI 1, components per shape = parts per shape, used =
    distinct parts; the NLL is gmm_nll of those logits over all shapes; EM's NLL matches fit_gmm_em by hand."""
    from ssl3d.methods.gmm import partition_stats

    torch.manual_seed(0)
    J = 16
    m = build_method("gmm", build_model("pointnet", width=0.125), J=J, cov="full", eps=1e-4)
    parts = [torch.as_tensor(shapes[i]["part"]) for i in range(len(shapes))]

    def fake(batch):
        return 30.0 * torch.nn.functional.one_hot(batch["part"], J).float(), batch["points"], None

    m.logits_and_points = fake
    st = partition_stats(m, shapes, batch_size=3, em_shapes=2, em_iters=5)
    assert st["nmi"] == pytest.approx(1.0)
    n_parts = [len(torch.unique(p)) for p in parts]
    assert st["per_shape"] == pytest.approx(sum(n_parts) / len(n_parts))
    assert st["used"] == len(torch.unique(torch.cat(parts)))
    pts = torch.stack([torch.as_tensor(shapes[i]["points"], dtype=torch.float64) for i in range(len(shapes))])
    ref = gmm.gmm_nll(pts, 30.0 * torch.nn.functional.one_hot(torch.stack(parts), J).double(), cov="full", eps=1e-4)
    assert st["nll"] == pytest.approx(float(ref), rel=1e-6)
    g = torch.Generator().manual_seed(0)
    em = [-float(gmm.fit_gmm_em(pts[i], J, iters=5, cov="full", eps=1e-4, generator=g).log_likelihood[-1])
          for i in range(2)]
    assert st["em_nll"] == pytest.approx(sum(em) / 2)
    assert 1 <= st["eff"] <= J
    allp = torch.cat(parts)
    torch.testing.assert_close(st["share"], torch.bincount(allp, minlength=J).float() / len(allp))
