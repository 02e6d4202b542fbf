"""Released PointContrast checkpoints → ssl3d's Res16UNet34C, tested on a mock checkpoint in the released format.

The mock's key names and kernel shapes are generated here from the official model code (facebookresearch/PointContrast
``pretrain/pointcontrast/model/res16unet.py``, ``model/resnet.py`` ``_make_layer``, ``model/modules/resnet_block.py``)
and MinkowskiEngine 0.4.3 (``MinkowskiConvolution.py``: (K, C_in, C_out), 1×1×1 stride-1 kernels as (C_in, C_out),
bias (1, C_out)) — not by renaming ssl3d's own keys. The kernel-offset orders of ME 0.4.3 are transcribed here too
(``src/region.cpp`` HYPERCUBE iteration, ``Common.convert_region_type`` HYBRID list), and every layer kind of the
loaded net is compared with a naive per-site convolution (or a dense conv3d) that uses the *raw* mock tensors.
"""

import copy
import pickle
import sys
import types
import typing
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from ssl3d import sparse as sp
from ssl3d.models import build_model
from ssl3d.models import released as R

pytestmark = pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")  # inside ME
ME_BACKENDS = ["torch", pytest.param("minkowski", marks=pytest.mark.skipif(
    not sp.minkowski_available(), reason="MinkowskiEngine does not import"))]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


# ----------------------------------------------------------------------------------------------------------
# The official state dict, from the official model definition (ME 0.4 shapes)
# ----------------------------------------------------------------------------------------------------------
INIT_DIM, PLANES, LAYERS = 32, (32, 64, 128, 256, 256, 128, 96, 96), (2, 3, 4, 6, 2, 2, 2, 2)  # Res16UNet34C


def official_keys(in_channels=3, out_channels=32, conv1_kernel_size=3):
    """(key, shape, kind) of PointContrast's Res16UNet34C in registration order; kind: the conv's region type."""
    keys = []

    def bn(name, c):
        keys.extend([(f"{name}.bn.weight", (c,), "bn"), (f"{name}.bn.bias", (c,), "bn"),
                     (f"{name}.bn.running_mean", (c,), "bn"), (f"{name}.bn.running_var", (c,), "bn"),
                     (f"{name}.bn.num_batches_tracked", (), "bn")])

    inplanes = INIT_DIM

    def make_layer(name, planes, blocks):  # resnet.py ResNetBase._make_layer, BasicBlock (expansion 1), stride 1
        nonlocal inplanes
        for b in range(blocks):
            keys.append((f"{name}.{b}.conv1.kernel", (27, inplanes, planes), "hybrid"))  # CONV_TYPE → HYBRID
            bn(f"{name}.{b}.norm1", planes)
            keys.append((f"{name}.{b}.conv2.kernel", (27, planes, planes), "hybrid"))
            bn(f"{name}.{b}.norm2", planes)
            if b == 0 and inplanes != planes:  # downsample = conv(k=1, stride=1) + norm, assigned after relu
                keys.append((f"{name}.{b}.downsample.0.kernel", (inplanes, planes), "matrix"))
                bn(f"{name}.{b}.downsample.1", planes)
            inplanes = planes

    keys.append(("conv0p1s1.kernel", (conv1_kernel_size**3, in_channels, inplanes), "hypercube"))
    bn("bn0", inplanes)
    for lvl, name in enumerate(("conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2")):
        keys.append((f"{name}.kernel", (8, inplanes, inplanes), "hypercube"))  # SPATIAL_HYPERCUBE, k=2, stride 2
        bn(f"bn{lvl + 1}", inplanes)
        make_layer(f"block{lvl + 1}", PLANES[lvl], LAYERS[lvl])
    skips = (PLANES[2], PLANES[1], PLANES[0], INIT_DIM)
    for i, name in enumerate(("convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2")):
        keys.append((f"{name}.kernel", (8, inplanes, PLANES[4 + i]), "hypercube"))
        bn(f"bntr{4 + i}", PLANES[4 + i])
        inplanes = PLANES[4 + i] + skips[i]
        make_layer(f"block{5 + i}", PLANES[4 + i], LAYERS[4 + i])
    keys.append(("final.kernel", (PLANES[7], out_channels), "matrix"))  # conv(k=1, bias=True): use_mm
    keys.append(("final.bias", (1, out_channels), "bias"))
    return keys


def mock_state_dict(seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for key, shape, _ in official_keys(**kw):
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(60000)
        elif key.endswith("running_var"):
            sd[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith(".kernel"):
            fan = shape[-2] * (shape[0] if len(shape) == 3 else 1)
            sd[key] = torch.randn(shape, generator=g) / fan**0.5
        else:
            sd[key] = 0.3 * torch.randn(shape, generator=g)
    return sd


class _FakeDictConfig:  # pickled as omegaconf.dictconfig.DictConfig (a module that does not exist here)
    def __init__(self, content):
        self.__dict__["_content"] = content
        self.__dict__["_metadata"] = {"ref_type": typing.Any, "object_type": dict}


def save_released_format(path, sd, legacy=False):
    """torch.save the dict _save_checkpoint writes, config included (needs a class weights_only refuses)."""
    omegaconf = types.ModuleType("omegaconf")
    dictconfig = types.ModuleType("omegaconf.dictconfig")
    _FakeDictConfig.__module__, _FakeDictConfig.__qualname__ = "omegaconf.dictconfig", "DictConfig"
    dictconfig.DictConfig = _FakeDictConfig
    saved = {k: sys.modules.get(k) for k in ("omegaconf", "omegaconf.dictconfig")}
    sys.modules.update({"omegaconf": omegaconf, "omegaconf.dictconfig": dictconfig})
    try:
        state = {"curr_iter": 60000, "state_dict": sd,
                 "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.8, "params": [0, 1]}]},
                 "scheduler": {"gamma": 0.99, "last_epoch": 240},
                 "config": _FakeDictConfig({"net": {"model": "Res16UNet34C", "normalize_feature": True}})}
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


@pytest.fixture(scope="module")
def mock_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pointcontrast") / "nce.pth"
    sd = mock_state_dict()
    save_released_format(path, sd)
    return path, sd


# ----------------------------------------------------------------------------------------------------------
# ME 0.4.3 kernel-offset orders, transcribed; naive references
# ----------------------------------------------------------------------------------------------------------
def me04_hypercube_offsets(k):
    """src/region.cpp RegionIterator case 0: start at the lower bound, advance x first, carry into y, then z."""
    lo = 0 if k % 2 == 0 else -(k // 2)
    p, out = [lo, lo, lo], []
    while True:
        out.append(tuple(p))
        d = 0
        while d < 3:
            p[d] += 1
            if p[d] <= lo + k - 1:
                break
            p[d] = lo
            d += 1
        if d == 3:
            return out


def me04_hybrid_list(k=3):
    """Common.convert_region_type, RegionType.HYBRID, axis_types = [HYPERCUBE] * 3, center=True."""
    region = [[0, 0, 0]]
    for d in range(3):
        new = []
        for offset in region:
            for c in range(k):
                off_center = (k - 1) // 2
                if c == off_center:
                    continue
                o = offset.copy()
                o[d] = c - off_center
                new.append(o)
        region.extend(new)
    return [tuple(o) for o in region]


def naive_conv(in_coords, feats, out_coords, kernel_rows, offsets, step, bias=None):
    """out[u] = Σ_r x[u + offsets[r]·step] @ W[r] over present inputs (per site, per offset)."""
    index = {tuple(c): n for n, c in enumerate(in_coords.tolist())}
    out = torch.zeros(len(out_coords), kernel_rows.shape[2], dtype=feats.dtype)
    for n, u in enumerate(out_coords.tolist()):
        for r, o in enumerate(offsets):
            v = (u[0], u[1] + o[0] * step, u[2] + o[1] * step, u[3] + o[2] * step)
            if v in index:
                out[n] += feats[index[v]] @ kernel_rows[r]
    return out if bias is None else out + bias


def naive_conv_transpose(coarse_coords, feats, fine_coords, kernel_rows, offsets, step):
    """out[v] = Σ_{u, r : v = u + offsets[r]·step} x[u] @ W[r] (ME 0.4: the strided conv's pairs, flipped)."""
    index = {tuple(c): n for n, c in enumerate(fine_coords.tolist())}
    out = torch.zeros(len(fine_coords), kernel_rows.shape[2], dtype=feats.dtype)
    for n, u in enumerate(coarse_coords.tolist()):
        for r, o in enumerate(offsets):
            v = (u[0], u[1] + o[0] * step, u[2] + o[1] * step, u[3] + o[2] * step)
            if v in index:
                out[index[v]] += feats[n] @ kernel_rows[r]
    return out


def sites(gen, n=60, span=6, stride=1, batches=2):
    """Unique (b, x, y, z) sites, x, y, z multiples of ``stride`` in [0, span·stride), in random row order."""
    rows = []
    for b in range(batches):
        xyz = torch.randint(0, span, (n, 3), generator=gen) * stride
        rows.append(torch.cat([torch.full((n, 1), b), xyz], 1))
    c = torch.unique(torch.cat(rows), dim=0)
    return c[torch.randperm(len(c), generator=gen)]


# ----------------------------------------------------------------------------------------------------------
# Key map
# ----------------------------------------------------------------------------------------------------------
def test_offset_orders_of_me04():
    assert me04_hypercube_offsets(3) == [tuple(o) for o in sp.kernel_offsets(3).tolist()]  # x fastest: no change
    assert me04_hypercube_offsets(2) == [tuple(o) for o in sp.kernel_offsets(2).tolist()]  # 0…1, x fastest
    hybrid = me04_hybrid_list(3)
    assert [tuple(o) for o in R.me04_hybrid_offsets(3).tolist()] == hybrid
    assert hybrid[:5] == [(0, 0, 0), (-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0)] and len(set(hybrid)) == 27
    perm = R.hybrid_to_hypercube(3)
    assert [hybrid[int(p)] for p in perm] == me04_hypercube_offsets(3)


def test_every_official_key_maps_onto_ssl3d():
    keys = official_keys()
    sd = mock_state_dict()
    conv = R.convert_pointcontrast_state_dict(sd)
    own = build_model("res16unet34c", in_channels=3, out_channels=32).state_dict()
    assert len(keys) == len(own) == 374
    assert set(conv) == set(own) and all(tuple(conv[k].shape) == tuple(own[k].shape) for k in own)
    assert sum(v.numel() for k, v in conv.items() if "running" not in k and "num_batches" not in k) == 37_847_808
    for key, _, kind in keys:  # the layout change of each kind
        raw, new = sd[key], conv[key]
        if kind == "hybrid":
            assert torch.equal(new, raw[R.hybrid_to_hypercube(3)]) and not torch.equal(new, raw)
        elif kind == "matrix":
            assert torch.equal(new, raw.unsqueeze(0))
        else:
            assert torch.equal(new, raw)
    # DDP's "module." prefix is stripped
    assert set(R.convert_pointcontrast_state_dict({"module." + k: v for k, v in sd.items()})) == set(own)


# ----------------------------------------------------------------------------------------------------------
# Reading the released format
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("legacy", [False, True])
def test_config_object_is_read_as_an_inert_placeholder(tmp_path, legacy):
    path = tmp_path / "ckpt.pth"
    save_released_format(path, OrderedDict([("final.bias", torch.zeros(1, 4))]), legacy=legacy)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # what a plain weights_only load does with the released files
    ckpt, names = R.read_pointcontrast_checkpoint(path)
    assert "omegaconf.dictconfig.DictConfig" in names and "typing.Any" in names
    assert "omegaconf" not in sys.modules  # nothing imported
    cfg = ckpt["config"]
    assert isinstance(cfg, R.CheckpointPlaceholder) and cfg.qualname == "omegaconf.dictconfig.DictConfig"
    assert cfg.state["_content"]["net"]["model"] == "Res16UNet34C"
    assert ckpt["curr_iter"] == 60000 and torch.equal(ckpt["state_dict"]["final.bias"], torch.zeros(1, 4))
    with pytest.raises(pickle.UnpicklingError, match="placeholders=True"):
        R.read_pointcontrast_checkpoint(path, placeholders=False)


# ----------------------------------------------------------------------------------------------------------
# Layer by layer against the raw mock tensors
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded(mock_file):
    path, sd = mock_file
    net, info = R.load_pointcontrast(path, return_checkpoint=True)
    return net, sd, info


def test_loader_reads_sizes_from_the_checkpoint(loaded):
    net, sd, info = loaded
    assert net.conv0p1s1.kernel.shape == (27, 3, 32) and net.final.kernel.shape == (1, 96, 32)
    assert net.normalize_feature and not net.training
    assert "omegaconf.dictconfig.DictConfig" in info["placeholders"]
    for m in net.modules():
        if isinstance(m, sp.BatchNorm):
            assert m.bn.momentum == 0.05


@pytest.mark.parametrize("backend", ME_BACKENDS)
def test_stem_equals_dense_conv3d_with_the_raw_kernel(loaded, gen, backend):
    net, sd, _ = loaded
    c = sites(gen, batches=1)
    x = torch.rand(len(c), 3, generator=gen, dtype=torch.float64)
    ours = copy.deepcopy(net.conv0p1s1).double()(sp.SparseTensor(c, x, backend=backend)).feats
    raw = sd["conv0p1s1.kernel"].double()  # (27, 3, 32), rows in ME 0.4 HYPERCUBE order
    span = int(c[:, 1:].max()) + 1
    dense = torch.zeros(1, 3, span, span, span, dtype=torch.float64)
    dense[0, :, c[:, 1], c[:, 2], c[:, 3]] = x.t()
    w = torch.zeros(32, 3, 3, 3, 3, dtype=torch.float64)  # (C_out, C_in, kx, ky, kz)
    for r, (dx, dy, dz) in enumerate(me04_hypercube_offsets(3)):
        w[:, :, dx + 1, dy + 1, dz + 1] = raw[r].t()
    ref = F.conv3d(dense, w, padding=1)[0][:, c[:, 1], c[:, 2], c[:, 3]].t()  # (M, 32) at the input sites
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("backend", ME_BACKENDS)
def test_block_conv_uses_me04_hybrid_offsets(loaded, gen, backend):
    """block1.0.conv1 runs at tensor stride 2: the raw row r belongs to offset hybrid[r] · 2."""
    net, sd, _ = loaded
    c = sites(gen, stride=2)
    x = torch.rand(len(c), 32, generator=gen, dtype=torch.float64)
    ours = copy.deepcopy(net.block1[0].conv1).double()(sp.SparseTensor(c, x, stride=2, backend=backend)).feats
    ref = naive_conv(c, x, c, sd["block1.0.conv1.kernel"].double(), me04_hybrid_list(3), step=2)
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=0)
    wrong = naive_conv(c, x, c, sd["block1.0.conv1.kernel"].double(), me04_hypercube_offsets(3), step=2)
    assert (ours - wrong).abs().max() > 1e-2  # copying the raw rows would have been wrong


@pytest.mark.skipif(not sp.minkowski_available(), reason="MinkowskiEngine does not import")
def test_block_conv_equals_minkowski_with_the_raw_rows_placed_by_offset(loaded, gen):
    """ME 0.5.4 runs neither HYBRID (removed) nor CUSTOM regions on the CPU ("Not implemented yet"), so the reference
    is an ME 0.5 HYPER_CUBE convolution whose row for offset o is the raw ME 0.4 row r with hybrid[r] = o."""
    import MinkowskiEngine as ME

    net, sd, _ = loaded
    c = sites(gen)
    x = torch.rand(len(c), 32, generator=gen)
    raw = sd["block1.0.conv1.kernel"]
    hybrid = me04_hybrid_list(3)
    conv = ME.MinkowskiConvolution(32, 32, kernel_size=3, dimension=3)
    with torch.no_grad():
        for h, o in enumerate(me04_hypercube_offsets(3)):  # ME 0.5's HYPER_CUBE order is the same, x fastest
            conv.kernel[h] = raw[hybrid.index(o)]
    ref = conv(ME.SparseTensor(x, coordinates=c.int()))
    ours = net.block1[0].conv1(sp.SparseTensor(c, x, backend="minkowski"))
    rows = {tuple(r): n for n, r in enumerate(ref.C.long().tolist())}
    order = torch.tensor([rows[tuple(r)] for r in c.tolist()])
    torch.testing.assert_close(ours.feats, ref.F[order], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ME_BACKENDS)
def test_strided_transposed_matrix_and_bn_layers(loaded, gen, backend):
    net, sd, _ = loaded
    dt = torch.float64

    def layer(m):  # a float64 copy of one loaded layer (the shared net stays float32)
        return copy.deepcopy(m).double()

    c = sites(gen, span=7)
    x = torch.rand(len(c), 32, generator=gen, dtype=dt)
    t = sp.SparseTensor(c, x, backend=backend)
    # stride-2 conv, kernel 2 (offsets 0…1, x fastest in ME 0.4's HYPERCUBE region)
    y = layer(net.conv1p1s2)(t)
    ref = naive_conv(c, x, y.coords, sd["conv1p1s2.kernel"].double(), me04_hypercube_offsets(2), step=1)
    torch.testing.assert_close(y.feats, ref, atol=1e-10, rtol=0)
    # transposed conv back onto the stride-1 sites (ME 0.4: the same region, in/out flipped)
    z = sp.SparseTensor(c, torch.rand(len(c), 96, generator=gen, dtype=dt), backend=backend)
    y2 = sp.Conv3d(96, 96, 2, 2).double()(z)  # (8, 96, 96): convtr7p2s2 maps block7's 96 → 96
    up = layer(net.convtr7p2s2)(y2)
    ref = naive_conv_transpose(y2.coords, y2.feats, c, sd["convtr7p2s2.kernel"].double(),
                               me04_hypercube_offsets(2), step=1)
    torch.testing.assert_close(up.feats, ref, atol=1e-10, rtol=0)
    # 1×1×1 shortcut conv and the final conv with bias: ME 0.4 matrices
    xs = torch.rand(len(c), 32, generator=gen, dtype=dt)
    out = layer(net.block2[0].downsample[0])(sp.SparseTensor(c, xs, backend=backend)).feats
    torch.testing.assert_close(out, xs @ sd["block2.0.downsample.0.kernel"].double(), atol=1e-12, rtol=0)
    xf = torch.rand(len(c), 96, generator=gen, dtype=dt)
    out = layer(net.final)(sp.SparseTensor(c, xf, backend=backend)).feats
    ref = xf @ sd["final.kernel"].double() + sd["final.bias"].double()
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    # eval-mode BN with the raw statistics
    out = layer(net.bntr7)(sp.SparseTensor(c, xf, backend=backend)).feats
    p = {k: sd[f"bntr7.bn.{k}"].double() for k in ("weight", "bias", "running_mean", "running_var")}
    ref = (xf - p["running_mean"]) / torch.sqrt(p["running_var"] + 1e-5) * p["weight"] + p["bias"]
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    assert int(net.bntr7.bn.num_batches_tracked) == 60000


# ----------------------------------------------------------------------------------------------------------
# Whole network: both backends, folded input
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not sp.minkowski_available(), reason="MinkowskiEngine does not import")
def test_whole_net_backends_agree_after_loading(loaded, gen):
    net, _, _ = loaded
    c = sites(gen, n=200, span=10)
    ones = torch.ones(len(c), 3)
    with torch.no_grad():
        a = net(sp.SparseTensor(c, ones, backend="torch")).feats
        b = net(sp.SparseTensor(c, ones, backend="minkowski")).feats
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(len(c)))


def test_fold_constant_input_is_exact(loaded, gen):
    net3, sd, _ = loaded
    net1 = R.load_pointcontrast({"state_dict": sd}, fold_constant_input=True)
    assert net1.conv0p1s1.kernel.shape == (27, 1, 32) and net1.in_channels == 0  # ssl3d's geometry-only net
    c = sites(gen, n=120, span=8, batches=1)
    with torch.no_grad():
        a = net3(sp.SparseTensor(c, torch.ones(len(c), 3), backend="torch")).feats
        b = net1(sp.SparseTensor(c, torch.ones(len(c), 1), backend="torch")).feats
        e = net1.encode({"coords": c})["feats"]  # the backbone contract feeds the constant itself
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e, b)


def test_in_channels_come_from_the_stem():
    sd = mock_state_dict(in_channels=1, out_channels=16)
    net = R.load_pointcontrast({"state_dict": sd}, normalize_feature=False)
    assert net.conv0p1s1.kernel.shape == (27, 1, 32) and net.final.kernel.shape == (1, 96, 16)
    assert not net.normalize_feature


# ----------------------------------------------------------------------------------------------------------
# Errors name the keys
# ----------------------------------------------------------------------------------------------------------
def test_missing_extra_and_misshapen_keys_are_listed(mock_file):
    sd = mock_file[1]
    bad = OrderedDict(sd)
    del bad["block3.2.norm1.bn.weight"]
    with pytest.raises(R.CheckpointMismatchError, match=r"missing \(1\): block3\.2\.norm1\.bn\.weight"):
        R.load_pointcontrast({"state_dict": bad})
    bad = OrderedDict(sd)
    bad["block9.0.conv1.kernel"] = torch.zeros(27, 4, 4)
    bad["classifier.weight"] = torch.zeros(3)
    with pytest.raises(R.CheckpointMismatchError, match=r"unexpected \(2\): block9\.0\.conv1\.kernel, classifier"):
        R.load_pointcontrast({"state_dict": bad})
    bad = OrderedDict(sd)
    bad["block2.1.conv2.kernel"] = torch.zeros(8, 64, 64)
    bad["final.kernel"] = torch.zeros(5, 96, 32)
    with pytest.raises(R.CheckpointMismatchError, match=r"misshapen \(2\): block2\.1\.conv2\.kernel: \(8, 64, 64\)"):
        R.load_pointcontrast({"state_dict": bad})
    bad = OrderedDict(sd)
    bad["block4.0.norm2.bn.running_var"] = torch.ones(7)
    with pytest.raises(R.CheckpointMismatchError, match=r"block4\.0\.norm2\.bn\.running_var: checkpoint \(7,\) vs "
                                                        r"model \(256,\)"):
        R.load_pointcontrast({"state_dict": bad})
    with pytest.raises(R.CheckpointMismatchError, match="no state dict"):
        R.load_pointcontrast({"optimizer": {}})
    with pytest.raises(FileNotFoundError, match="nce.pth"):
        R.load_pointcontrast("/nonexistent/nce.pth")
