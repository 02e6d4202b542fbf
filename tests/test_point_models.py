"""PointNetSeg and DGCNN: interface, symmetry, the dynamic kNN graph against brute force, gradients, seeding."""

import pytest
import torch

from ssl3d.models import build_model, list_models
from ssl3d.models.point import DGCNN, EdgeConv, PointNetSeg

SMALL = {"pointnet": {"width": 0.125}, "dgcnn": {"width": 0.125, "k": 6}}
B, N, J = 3, 48, 5


def make(name, **kw):
    torch.manual_seed(0)
    return build_model(name, num_outputs=J, **{**SMALL[name], **kw})


@pytest.fixture
def cloud(gen):
    return torch.randn(B, N, 3, generator=gen)


def test_registry():
    assert {"pointnet", "dgcnn"} <= set(list_models())
    assert isinstance(build_model("PointNet"), PointNetSeg) and isinstance(build_model("dgcnn"), DGCNN)


@pytest.mark.parametrize("name", ["pointnet", "dgcnn"])
def test_output_shapes_and_global_feature(name, cloud):
    net = make(name).eval()
    out = net(cloud)
    c = net.feat_dim
    assert c == 128  # 1024 × 0.125
    assert out["logits"].shape == (B, N, J)
    assert out["point_feats"].shape == (B, N, c)
    assert out["global_feats"].shape == (B, 2 * c) and net.global_dim == 2 * c
    pf = out["point_feats"]
    torch.testing.assert_close(out["global_feats"], torch.cat([pf.max(1).values, pf.mean(1)], -1))


@pytest.mark.parametrize("name", ["pointnet", "dgcnn"])
def test_permutation_equivariance(name, cloud, gen):
    net = make(name).double().eval()
    x = cloud.double()
    perm = torch.randperm(N, generator=gen)
    out, out_p = net(x), net(x[:, perm])
    torch.testing.assert_close(out_p["logits"], out["logits"][:, perm])
    torch.testing.assert_close(out_p["point_feats"], out["point_feats"][:, perm])
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
    net = make(name).train()
    out = net(cloud)
    target = torch.randint(J, (B, N), generator=gen)
    loss = torch.nn.functional.cross_entropy(out["logits"].reshape(-1, J), target.reshape(-1))
    loss = loss + out["global_feats"].pow(2).mean()
    loss.backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ["pointnet", "dgcnn"])
def test_seeded_determinism(name, cloud):
    outs = []
    for _ in range(2):
        net = make(name).train()  # make() seeds; dropout draws from the same stream
        outs.append(net(cloud))
    for key in ("logits", "point_feats", "global_feats"):
        assert torch.equal(outs[0][key], outs[1][key])
    torch.manual_seed(1)
    other = build_model(name, num_outputs=J, **SMALL[name]).train()(cloud)
    assert not torch.equal(other["logits"], outs[0]["logits"])


@pytest.mark.parametrize("name", ["pointnet", "dgcnn"])
@pytest.mark.parametrize("keep_hidden", [False, True])
def test_reset_head_keeps_the_encoder(name, keep_hidden, cloud):
    net = make(name).eval()
    before = net(cloud)
    old_out = net.head.out.weight.detach().clone()
    torch.manual_seed(123)
    net.reset_head(13, keep_hidden=keep_hidden)
    after = net.eval()(cloud)
    assert after["logits"].shape == (B, N, 13) and net.num_outputs == 13
    torch.testing.assert_close(after["point_feats"], before["point_feats"])
    assert net.head.out.weight.shape[0] == 13 and not torch.equal(net.head.out.weight[:J], old_out)


def test_extra_input_channels(cloud, gen):
    net = PointNetSeg(num_outputs=J, in_channels=2, width=0.125).eval()
    f = torch.randn(B, N, 2, generator=gen)
    a, b = net(cloud, f), net(cloud, f + 1)
    assert not torch.allclose(a["logits"], b["logits"])
    dg = DGCNN(num_outputs=J, in_channels=2, width=0.125, k=4).eval()
    assert dg(cloud, f)["logits"].shape == (B, N, J)


def test_input_errors(cloud):
    net = make("dgcnn")
    with pytest.raises(ValueError, match=r"points\[None\]"):
        net(cloud[0])
    with pytest.raises(ValueError, match="in_channels=2"):
        net(cloud, torch.zeros(B, N, 2))
    with pytest.raises(ValueError, match="k ≤ N"):
        net(cloud[:, :4])
    with pytest.raises(ValueError, match="pass feats of shape"):
        PointNetSeg(in_channels=3, width=0.125)(cloud)
    with pytest.raises(ValueError, match="NaN"):
        net(cloud.clone().fill_(float("nan")))
