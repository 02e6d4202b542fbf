"""PointNet and DGCNN: the backbone contract, symmetry, the dynamic kNN graph against brute force, gradients,
seeding."""

import pytest
import torch

from ssl3d.models import build_model, list_models
from ssl3d.models.heads import SegHead, Segmenter
from ssl3d.models.point import DGCNN, EdgeConv, PointNet

SMALL = {"pointnet": {"width": 0.125}, "dgcnn": {"width": 0.125, "k": 6}}
B, N, J = 3, 48, 5


def make(name, **kw):
    torch.manual_seed(0)
    return build_model(name, **{**SMALL[name], **kw})


@pytest.fixture
def cloud(gen):
    return torch.randn(B, N, 3, generator=gen)


def test_registry():
    assert {"pointnet", "dgcnn"} <= set(list_models())
    assert isinstance(build_model("PointNet"), PointNet) and isinstance(build_model("dgcnn"), DGCNN)


@pytest.mark.parametrize("name,local", [("pointnet", 8), ("dgcnn", 8 + 8 + 16 + 32)])
def test_output_shapes_and_global_feature(name, local, cloud):
    net = make(name).eval()
    emb = []
    last = net.mlp4 if name == "pointnet" else net.embed
    last.register_forward_hook(lambda m, a, out: emb.append(out))
    out = net(cloud)
    assert net.kind == "point" and net.in_channels == 0
    assert net.emb_dim == 128  # 1024 × 0.125
    assert net.feat_dim == local + 128 and out["feats"].shape == (B, N, net.feat_dim)
    assert net.global_dim == 256 and out["global_feats"].shape == (B, 256)
    e = emb[0]  # (B, N, 128) the embedding before pooling
    torch.testing.assert_close(out["global_feats"], torch.cat([e.max(1).values, e.mean(1)], -1))
    # per-point features = [local ‖ max-pooled embedding repeated]
    torch.testing.assert_close(out["feats"][..., local:], e.max(1, keepdim=True).values.expand(-1, N, -1))
    torch.testing.assert_close(net.encode({"points": cloud})["feats"], out["feats"])


def test_feats_are_built_on_first_access_only(cloud, monkeypatch):
    """``feats`` (the per-point concatenation) is built when read, equal to the eager form; membership, iteration and
    the factored form do not build it; a caller's extra entries are kept."""
    net = make("pointnet").eval()
    out = net(cloud)
    calls = []
    cat = torch.cat
    monkeypatch.setattr(torch, "cat", lambda *a, **k: calls.append(1) or cat(*a, **k))
    assert "feats" in out and set(out) == {"feats", "feats_factored", "global_feats"} and len(out) == 3
    local, glob = out["feats_factored"]
    assert not calls
    f = out["feats"]
    assert len(calls) == 1 and out["feats"] is f  # built once
    assert torch.equal(f, torch.cat([local, glob[:, None].expand(-1, N, -1)], -1))
    out["graphs"] = [1]
    assert dict(out)["graphs"] == [1] and torch.equal(dict(out)["feats"], f)
    del out["graphs"]
    assert "graphs" not in out
    assert len(make("dgcnn").eval()(cloud, return_graphs=True)["graphs"]) == 4


@pytest.mark.parametrize("name", ["pointnet", "dgcnn"])
def test_permutation_equivariance(name, cloud, gen):
    net = make(name).double().eval()
    x = cloud.double()
    perm = torch.randperm(N, generator=gen)
    out, out_p = net(x), net(x[:, perm])
    torch.testing.assert_close(out_p["feats"], out["feats"][:, perm])
    torch.testing.assert_close(out_p["global_feats"], out["global_feats"])


def brute_force_knn(x, k):
    """(B, N, C) → (B, N, k) with explicit float64 distances and a full sort."""
    x = x.double()
    d = ((x[:, :, None, :] - x[:, None, :, :]) ** 2).sum(-1)  # (B, N, N)
    return d.argsort(dim=-1, stable=True)[..., :k]


def test_dgcnn_graph_is_recomputed_per_layer_in_feature_space(cloud):
    net = make("dgcnn").double().eval()
    inputs = []
    hooks = [m.register_forward_hook(lambda mod, args, out: inputs.append(args[0])) for m in net.edge_convs]
    out = net(cloud.double(), return_graphs=True)
    for h in hooks:
        h.remove()
    assert len(out["graphs"]) == len(inputs) == 4
    torch.testing.assert_close(inputs[0], cloud.double())  # layer 1 works on xyz
    for layer, (feat, idx) in enumerate(zip(inputs, out["graphs"])):
        assert idx.shape == (B, N, net.k)
        ref = brute_force_knn(feat, net.k)
        assert torch.equal(idx.sort(-1).values, ref.sort(-1).values), f"layer {layer}"
        assert (idx == torch.arange(N)[None, :, None]).any(-1).all()  # each point is its own neighbour
    # deeper graphs are not the xyz graph any more: the features moved the neighbourhoods
    assert not torch.equal(out["graphs"][3].sort(-1).values, out["graphs"][0].sort(-1).values)


def test_edgeconv_matches_an_explicit_loop(gen):
    conv = EdgeConv(4, 6).double().eval()
    x = torch.randn(2, 10, 4, generator=gen, dtype=torch.float64)
    idx = brute_force_knn(x, 3)
    out = conv(x, idx)
    w = conv.mlp.linear.weight
    bn = conv.mlp.bn
    for b in range(2):
        for i in range(10):
            edges = torch.stack([torch.cat([x[b, i], x[b, j] - x[b, i]]) for j in idx[b, i]])  # (k, 8)
            h = (edges @ w.T - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
            torch.testing.assert_close(out[b, i], torch.nn.functional.leaky_relu(h, 0.2).max(0).values)


@pytest.mark.parametrize("name", ["pointnet", "dgcnn"])
def test_gradient_reaches_every_parameter(name, cloud, gen):
    seg = Segmenter(make(name), J).train()
    logits = seg({"points": cloud})
    target = torch.randint(J, (B, N), generator=gen)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, J), target.reshape(-1))
    loss = loss + seg.backbone(cloud)["global_feats"].pow(2).mean()
    loss.backward()
    for pname, p in seg.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ["pointnet", "dgcnn"])
def test_seeded_determinism(name, cloud):
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        seg = Segmenter(make(name), J).train()  # dropout in DGCNN's head draws from the same stream
        outs.append(seg({"points": cloud}))
    assert torch.equal(outs[0], outs[1])
    torch.manual_seed(1)
    other = Segmenter(build_model(name, **SMALL[name]), J).train()({"points": cloud})
    assert not torch.equal(other, outs[0])


@pytest.mark.parametrize("name,hidden", [("pointnet", (64, 32, 16)), ("dgcnn", (32, 32, 16))])
def test_default_heads_are_the_papers(name, hidden):
    net = make(name)
    head = SegHead.for_backbone(net, J)
    widths = [m.out_features for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert tuple(widths[:-1]) == hidden and widths[-1] == J  # 512-256-128 / 256-256-128 at width 0.125
    assert any(isinstance(m, torch.nn.Dropout) for m in head.modules()) == (name == "dgcnn")


@pytest.mark.parametrize("name", ["pointnet", "dgcnn"])
@pytest.mark.parametrize("hidden", [None, ()])
def test_factored_head_equals_the_concatenated_features(name, hidden, cloud):
    """A head reading ``feats_factored`` (local, global) gives the logits and gradients of the same head on the
    materialised [local ‖ global repeated] features, with and without hidden layers (train-mode BatchNorm)."""
    net, cloud = make(name).double().train(), cloud.double()
    over = {} if hidden is None else {"hidden": hidden}
    head = SegHead.for_backbone(net, J, **over).double()
    outs, grads = [], []
    for key in ("feats", "feats_factored"):
        net.zero_grad(), head.zero_grad()
        torch.manual_seed(1)  # the same dropout masks (DGCNN's head)
        logits = head(net(cloud)[key])
        logits.pow(2).sum().backward()
        outs.append(logits.detach())
        grads.append([p.grad.clone() for p in (*net.parameters(), *head.parameters())])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-10, atol=1e-10)
    for g_f, g_c in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(g_f, g_c, rtol=1e-9, atol=1e-10)
    local, glob = net(cloud)["feats_factored"]
    assert local.shape == (B, N, net.feat_dim - net.emb_dim) and glob.shape == (B, net.emb_dim)
    # Segmenter and the GMM method use the factored form for a point backbone
    seg = Segmenter(net, J, **over).double().eval()
    seg.head.load_state_dict(head.state_dict())
    torch.testing.assert_close(seg({"points": cloud}), head.eval()(net(cloud)["feats"]), rtol=1e-10, atol=1e-10)


def test_factored_linear_rejects_mismatched_widths(gen):
    from ssl3d.models.base import factored_linear

    with pytest.raises(ValueError, match="inputs expected"):
        factored_linear(torch.nn.Linear(10, 4), torch.randn(2, 5, 3), torch.randn(2, 6))


def test_extra_input_channels(cloud, gen):
    net = PointNet(in_channels=2, width=0.125).eval()
    f = torch.randn(B, N, 2, generator=gen)
    a, b = net(cloud, f), net(cloud, f + 1)
    assert not torch.allclose(a["feats"], b["feats"])
    torch.testing.assert_close(net.encode({"points": cloud, "feats": f})["feats"], a["feats"])
    dg = DGCNN(in_channels=2, width=0.125, k=4).eval()
    assert dg(cloud, f)["feats"].shape == (B, N, dg.feat_dim)
    with pytest.raises(KeyError, match="no 'feats'"):
        net.encode({"points": cloud})
    # a geometry-only backbone ignores features a dataset happens to carry
    torch.testing.assert_close(make("pointnet").eval().encode({"points": cloud, "feats": f})["feats"],
                               make("pointnet").eval()(cloud)["feats"])


def test_input_errors(cloud):
    net = make("dgcnn")
    with pytest.raises(ValueError, match=r"points\[None\]"):
        net(cloud[0])
    with pytest.raises(ValueError, match="in_channels=2"):
        net(cloud, torch.zeros(B, N, 2))
    with pytest.raises(ValueError, match="k ≤ N"):
        net(cloud[:, :4])
    with pytest.raises(ValueError, match="pass feats of shape"):
        PointNet(in_channels=3, width=0.125)(cloud)
    with pytest.raises(ValueError, match="NaN"):
        net(cloud.clone().fill_(float("nan")))
    with pytest.raises(KeyError, match="collate_objects"):
        net.encode({"coords": torch.zeros(3, 4, dtype=torch.long)})
