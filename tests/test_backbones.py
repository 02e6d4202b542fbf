"""The backbone contract (ssl3d.models.base): every registered backbone encodes a batch the same way, rebuilds from
its checkpoint alone, and heads reset on the backbone's device."""

import pytest
import torch

from ssl3d.data import datasets as D
from ssl3d.models import build_model, list_models, load_backbone, save_backbone
from ssl3d.models.heads import Classifier, Segmenter

SMALL = {"pointnet": {"width": 0.125}, "dgcnn": {"width": 0.125, "k": 4},
         "point_transformer": {"num_group": 16, "group_size": 16, "encoder_dims": 64, "embed_dim": 64, "depth": 2,
                               "num_heads": 4, "patch_dims": (32, 64, 128)}}
SPARSE_SMALL = {"in_channels": 0, "out_channels": 8}
CHEAP_SPARSE = {"res16unet14tiny", "res16unet14a"}  # the big U-Nets are built but not run here


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """One thread: small matmuls (conftest.one_thread)."""


def small(name):
    torch.manual_seed(0)
    return build_model(name, **SMALL.get(name, SPARSE_SMALL if name.startswith("res16unet") else {}))


def object_batch(backbone, n=3):
    items = [D.ObjectDataset(1, 64, classes=["chair", "mug", "lamp"])[i] for i in range(n)]
    return D.collate_for(backbone, voxel_size=0.25)(items)


@pytest.mark.parametrize("name", sorted(set(list_models())))
def test_contract_attributes_and_checkpoint_rebuild(name, tmp_path):
    """Every registered backbone: the contract's attributes, and save_backbone → load_backbone rebuilds it from
    the file alone with identical weights (and identical outputs where it is cheap to run)."""
    net = small(name)
    assert net.kind in ("point", "sparse") and net.in_channels == 0
    assert isinstance(net.feat_dim, int) and isinstance(net.global_dim, int)
    path = save_backbone(net, tmp_path / f"{name}.pt", method="test")
    again, meta = load_backbone(path, return_meta=True)
    assert type(again) is type(net) and again.config == net.config and meta == {"method": "test"}
    for (k, a), (k2, b) in zip(net.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    if net.kind == "point" or name in CHEAP_SPARSE:
        batch = object_batch(net)
        out, out2 = net.eval().encode(batch), again.eval().encode(batch)
        assert torch.equal(out["feats"], out2["feats"]) and torch.equal(out["global_feats"], out2["global_feats"])
        n_sites = batch["points"].shape[:2] if net.kind == "point" else (len(batch["coords"]),)
        assert out["feats"].shape == (*n_sites, net.feat_dim) and out["global_feats"].shape == (3, net.global_dim)


def test_a_checkpoint_of_another_architecture_names_the_keys(tmp_path):
    path = save_backbone(small("pointnet"), tmp_path / "p.pt")
    with pytest.raises(ValueError, match=r"missing keys \[edge_convs"):
        load_backbone(path, into=small("dgcnn"))
    wide = build_model("pointnet", width=0.25)
    with pytest.raises(ValueError, match=r"shape mismatches \[mlp1.linear.weight"):
        load_backbone(path, into=wide)
    (tmp_path / "bad.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated"):
        load_backbone(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone(tmp_path / "missing.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an ssl3d backbone checkpoint"):
        load_backbone(tmp_path / "other.pt")


def test_in_channels_means_the_same_for_both_families():
    """in_channels counts the features beside the coordinates: 0 = geometry only for point and sparse nets."""
    p0, p3 = build_model("pointnet", in_channels=0, width=0.125), build_model("pointnet", in_channels=3, width=0.125)
    assert p0.mlp1.linear.in_features == 3 and p3.mlp1.linear.in_features == 6  # xyz always, + feats
    s0, s3 = build_model("res16unet14tiny", in_channels=0), build_model("res16unet14tiny", in_channels=3)
    assert s0.conv0p1s1.kernel.shape[1] == 1 and s3.conv0p1s1.kernel.shape[1] == 3  # a constant 1, or the feats
    batch = object_batch(s3)
    with pytest.raises(KeyError, match="no 'feats'"):
        s3.encode(batch)
    batch["feats"] = torch.rand(len(batch["coords"]), 3)
    assert s3.encode(batch)["feats"].shape == (len(batch["coords"]), 32)


def test_sparse_encode_equals_forward_in_row_order():
    net = small("res16unet14tiny").eval()
    batch = object_batch(net)
    from ssl3d import sparse as sp

    direct = net(sp.SparseTensor(batch["coords"], torch.ones(len(batch["coords"]), 1))).feats
    torch.testing.assert_close(net.encode(batch)["feats"], direct)


@pytest.mark.parametrize("name", ["pointnet", "res16unet14tiny"])
def test_heads_reset_on_the_backbones_device_and_dtype(name):
    seg = Segmenter(small(name), 5).double()
    seg.reset_head(7)
    assert seg.num_classes == 7 and all(p.dtype == torch.float64 for p in seg.head.parameters())
    clf = Classifier(small(name), 4).double()
    clf.reset_head(6)
    assert clf.num_classes == 6 and all(p.dtype == torch.float64 for p in clf.head.parameters())
    batch = object_batch(seg.backbone)
    batch = {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}
    assert clf.eval()(batch).shape == (3, 6)


def test_a_sparse_unets_task_head_replaces_its_output_layer():
    """PointContrast's fine-tuning loads every pre-trained weight whose shape matches, so the final 1×1 conv (→ 32-d
    features) starts afresh with one output per class. ssl3d's Segmenter does the same: on a sparse U-Net the head is
    one Linear on the last decoder block, the output layer takes no part (no gradient), and the logits equal that
    Linear applied to ``decode`` computed by hand."""
    from ssl3d import sparse as sp

    net = small("res16unet14tiny")
    net.normalize_feature = True  # a PointContrast-pre-trained network: L2-normalised 8-d outputs
    seg = Segmenter(net, 5).train()
    decoder_width = net.PLANES[7] * net.BLOCK.expansion
    assert seg.head.out.in_features == decoder_width != net.feat_dim
    batch = object_batch(net)
    logits = seg(batch)
    dec = net.decode(sp.SparseTensor(batch["coords"], torch.ones(len(batch["coords"]), 1))).feats
    torch.testing.assert_close(logits, dec @ seg.head.out.weight.T + seg.head.out.bias)
    logits.square().sum().backward()
    assert all(p.grad is None for p in net.final.parameters())
    assert all(p.grad is not None for n, p in net.named_parameters() if not n.startswith("final."))
    # the pre-training features themselves are unchanged: encode()["feats"] is still the normalised output layer
    feats = net.encode(batch)["feats"]
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(len(feats)))
    # and the old behaviour stays one override away
    assert Segmenter(net, 5, input="feats").head.out.in_features == net.feat_dim
