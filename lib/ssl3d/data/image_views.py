"""Two SimCLR-style views of one image and the exact map between their pixels (image-to-point, stage 1).

Janda et al. train a 2D network so that two augmented views of an image give the same feature at pixels that "map
back to the same coordinates in the original image". A view is

    geometric   random resized crop (i, j, h, w) of the H × W original → resized to S_h × S_w, then a horizontal flip
    photometric colour jitter (brightness, contrast, saturation, hue; random order), grayscale, Gaussian blur

(the released ``ImagePretrainDataset`` of jandaa/masters-thesis ``src/models/minkowski/dataset.py``, with PixPro's
``RandomResizedCropCoord`` / ``RandomHorizontalFlipCoord`` from ``src/dataloaders/transform_coord.py``: 224 × 224
views, crop scale (0.2, 1.0), ratio (3/4, 4/3), bilinear resize, flip p 0.5, ``ColorJitter(0.4, 0.4, 0.4, 0.1)``
p 0.8, grayscale p 0.2, blur σ ∈ [0.1, 2.0] p 0.5, no mean/std normalisation).

Pixel geometry (OpenCV: the centre of pixel k sits at coordinate k, pixel k covers [k − ½, k + ½)). Along one axis a
crop of length w starting at j, resized to S pixels, samples view pixel c (after undoing the flip, c ← S − 1 − c)
at the original coordinate

    x(c) = j + (c + ½) · w / S − ½                                  (the centre of view pixel c; bilinear resizing
                                                                     with align_corners=False samples exactly here)

and the **original pixel of view pixel c** is the one whose cell contains x(c):

    k(c) = round-half-up(x(c)) = j + ⌊(2c + 1) · w / (2S)⌋          (integer arithmetic: exact, no float ties)

— the index ``F.interpolate(mode="nearest-exact")`` picks, which the tests use as the independent reference. Two
view pixels *match* when they have the same original pixel (row and column). When a view enlarges its crop (w < S)
several of its pixels share an original pixel; each view-0 pixel is then matched with exactly one view-1 pixel, the
one whose centre x(c) is nearest to its own (ties → the smaller index), so a view-0 pixel has at most one match
and ``pixel_info_nce``'s negatives never contain a second copy of the positive's source pixel *from view 0*. The
released code instead matches every view-0 pixel with the first view-1 pixel found within 1.5 original pixels
(``KDTree.query_ball_tree(…, 1.5)``), an approximate version of the same idea.

Everything here is plain torch (torchvision cannot be imported beside the CPU torch). Randomness comes from a
``torch.Generator`` or a ``numpy.random.Generator`` (a torch generator is seeded from it), drawn in a documented
order, so a view reproduces from its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ssl3d.data.datasets import AugmentedDataset

__all__ = [
    "ViewParams",
    "sample_crop",
    "axis_to_original",
    "view_to_original",
    "match_views",
    "resized_crop",
    "rgb_to_grayscale",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "gaussian_blur",
    "ImageViews",
    "PixelViewDataset",
    "collate_views",
]

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class ViewParams:
    """The geometry of one view: crop rows ``top … top + height − 1`` and columns ``left … left + width − 1`` of an
    ``orig_size`` = (H, W) image, resized to ``size`` = (S_h, S_w), then mirrored left–right when ``flip``."""

    top: int
    left: int
    height: int
    width: int
    size: tuple[int, int]
    orig_size: tuple[int, int]
    flip: bool = False

    def __post_init__(self):
        H, W = self.orig_size
        if not (0 <= self.top and self.top + self.height <= H and 0 <= self.left and self.left + self.width <= W
                and self.height > 0 and self.width > 0):
            raise ValueError(f"crop rows {self.top}…{self.top + self.height - 1}, columns {self.left}…"
                             f"{self.left + self.width - 1} lie outside the {H} × {W} image: sample crops with "
                             f"sample_crop(H, W, ...)")
        if min(self.size) < 1:
            raise ValueError(f"view size must be positive, got {self.size}")


# ----------------------------------------------------------------------------------------------------------
# Randomness
# ----------------------------------------------------------------------------------------------------------
def _torch_generator(generator) -> torch.Generator | None:
    """A torch generator from a torch one (as is), a numpy one (seeded from it), or None (the global torch RNG)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, np.random.Generator):
        return torch.Generator().manual_seed(int(generator.integers(0, 2**63 - 1)))
    raise TypeError(f"generator must be a torch.Generator, a numpy.random.Generator or None, got "
                    f"{type(generator).__name__}")


def _uniform(lo: float, hi: float, g: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _randint(lo: int, hi: int, g: torch.Generator | None) -> int:
    """An integer in [lo, hi] (both included)."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


def sample_crop(H: int, W: int, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), generator=None) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` (as copied by PixPro / the released code): up to 10 tries of
    area fraction s ~ U(scale) and aspect r = exp(U(log ratio)), w = round(√(s·H·W·r)), h = round(√(s·H·W / r)),
    accepted when it fits, top-left corner uniform; otherwise the central crop clipped to ``ratio``.
    Returns (top, left, height, width). Draws per try: s, log r (and top, left once accepted)."""
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"scale must be 0 < lo ≤ hi ≤ 1 (area fractions), got {scale}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio must be 0 < lo ≤ hi (width / height), got {ratio}")
    g = _torch_generator(generator)
    area = H * W
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(*scale, g)
        aspect = math.exp(_uniform(*log_ratio, g))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= W and 0 < h <= H:
            return _randint(0, H - h, g), _randint(0, W - w, g), h, w
    in_ratio = W / H  # fallback: central crop
    if in_ratio < min(ratio):
        w, h = W, int(round(W / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = H, int(round(H * max(ratio)))
    else:
        w, h = W, H
    return (H - h) // 2, (W - w) // 2, h, w


# ----------------------------------------------------------------------------------------------------------
# The view → original pixel map (exact) and the matches between two views
# ----------------------------------------------------------------------------------------------------------
def axis_to_original(start: int, length: int, size: int, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One axis of a view: for view index c = 0 … size − 1, the original pixel k(c) = start + ⌊(2c' + 1)·length /
    (2·size)⌋ (int64) and the doubled-and-scaled centre 2·size·x(c) + size = 2·size·start + (2c' + 1)·length (int64,
    exact), with c' = size − 1 − c when ``flip`` (module docstring)."""
    c = torch.arange(size, dtype=torch.long)
    if flip:
        c = size - 1 - c
    num = (2 * c + 1) * length  # (size,)
    return start + num // (2 * size), 2 * size * start + num


def view_to_original(p: ViewParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows (S_h,), cols (S_w,)) int64: view pixel (r, c) shows original pixel (rows[r], cols[c])."""
    rows, _ = axis_to_original(p.top, p.height, p.size[0])
    cols, _ = axis_to_original(p.left, p.width, p.size[1], p.flip)
    return rows, cols


def _match_axis(a0: tuple[torch.Tensor, torch.Tensor], n0: int, a1: tuple[torch.Tensor, torch.Tensor], n1: int):
    """For each index of axis 0: the index of axis 1 with the same original pixel and the nearest centre (−1: none).
    Centres are compared exactly: 2·n·x + n scaled to the common denominator 2·n0·n1."""
    k0, x0 = a0
    k1, x1 = a1
    x0 = x0 * n1  # (n0,) = 2·n0·n1·x + n0·n1, same affine map for both axes
    x1 = x1 * n0  # (n1,)
    same = k0[:, None] == k1[None, :]  # (n0, n1)
    dist = (x0[:, None] - x1[None, :]).abs()
    dist = torch.where(same, dist, torch.full_like(dist, torch.iinfo(torch.long).max))
    best = dist.argmin(1)  # (n0,) first minimum → ties go to the smaller index
    return torch.where(same.any(1), best, torch.full_like(best, -1))


def match_views(p0: ViewParams, p1: ViewParams) -> torch.Tensor:
    """Matches between two views of one image: (P, 2) int64 flat pixel indices (row · S_w + column) into view 0 and
    view 1 of pixels that show the same original pixel; one match per view-0 pixel at most (the nearest view-1
    pixel centre among those with the same original pixel), sorted by the view-0 index. Empty (0, 2) when the crops
    do not overlap. The map is separable, so rows and columns are matched independently and combined."""
    if p0.orig_size != p1.orig_size:
        raise ValueError(f"the two views come from images of different sizes ({p0.orig_size} vs {p1.orig_size}): "
                         f"both views must be crops of the same image")
    (h0, w0), (h1, w1) = p0.size, p1.size
    mr = _match_axis(axis_to_original(p0.top, p0.height, h0), h0, axis_to_original(p1.top, p1.height, h1), h1)
    mc = _match_axis(axis_to_original(p0.left, p0.width, w0, p0.flip), w0,
                     axis_to_original(p1.left, p1.width, w1, p1.flip), w1)
    r0, c0 = torch.nonzero(mr >= 0).squeeze(1), torch.nonzero(mc >= 0).squeeze(1)  # matched rows / columns of view 0
    i0 = (r0[:, None] * w0 + c0[None, :]).reshape(-1)  # (P,) row-major, hence sorted
    i1 = (mr[r0][:, None] * w1 + mc[c0][None, :]).reshape(-1)
    return torch.stack([i0, i1], 1)


# ----------------------------------------------------------------------------------------------------------
# Image operations (plain torch, (3, H, W) float in [0, 1])
# ----------------------------------------------------------------------------------------------------------
def _check_image(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise ValueError(f"expected an RGB image (3, H, W) float in [0, 1], got {shape}: convert an (H, W, 3) uint8 "
                         f"array with torch.from_numpy(a).permute(2, 0, 1).float() / 255")
    if not image.dtype.is_floating_point:
        raise TypeError(f"expected a float image in [0, 1], got {image.dtype}: divide a uint8 image by 255")
    return image


def resized_crop(image: torch.Tensor, p: ViewParams) -> torch.Tensor:
    """The geometric part of a view: crop, bilinear resize (align_corners=False, antialiased when shrinking, like
    PIL's resize in the released code), flip. (3, H, W) → (3, S_h, S_w)."""
    _check_image(image)
    if tuple(image.shape[-2:]) != tuple(p.orig_size):
        raise ValueError(f"the view was sampled for a {p.orig_size} image but this image is {tuple(image.shape[-2:])}")
    crop = image[:, p.top:p.top + p.height, p.left:p.left + p.width]
    out = F.interpolate(crop[None], size=p.size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.flip(-1) if p.flip else out


def rgb_to_grayscale(image: torch.Tensor) -> torch.Tensor:
    """Luma 0.299 R + 0.587 G + 0.114 B: (3, H, W) → (1, H, W)."""
    w = image.new_tensor(GRAY_WEIGHTS)
    return (image * w[:, None, None]).sum(0, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: float) -> torch.Tensor:
    return (factor * a + (1 - factor) * b).clamp(0, 1)


def adjust_brightness(image: torch.Tensor, factor: float) -> torch.Tensor:
    """clamp(f · x): 0 = black, 1 = unchanged."""
    return _blend(image, torch.zeros_like(image), factor)


def adjust_contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    """clamp(f · x + (1 − f) · mean gray): 0 = a uniform gray image, 1 = unchanged."""
    return _blend(image, rgb_to_grayscale(image).mean(), factor)


def adjust_saturation(image: torch.Tensor, factor: float) -> torch.Tensor:
    """clamp(f · x + (1 − f) · gray(x)) per pixel: 0 = grayscale, 1 = unchanged."""
    return _blend(image, rgb_to_grayscale(image), factor)


def adjust_hue(image: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue by ``shift`` turns (|shift| ≤ ½), keeping saturation and value (HSV).

    RGB → HSV: V = max, S = (max − min) / max, H from the sector of the largest channel; back with the closed form
    channel_n = V − V·S·clamp(min(k, 4 − k), 0, 1), k = (n + 6H) mod 6 for n = 5, 3, 1 (R, G, B).
    """
    if not -0.5 <= shift <= 0.5:
        raise ValueError(f"hue shift must be in [-0.5, 0.5] turns, got {shift}")
    r, g, b = image.unbind(0)
    maxc, minc = image.max(0).values, image.min(0).values
    cr = maxc - minc
    safe = torch.where(cr > 0, cr, torch.ones_like(cr))
    h = torch.where(maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(cr > 0, h / 6, torch.zeros_like(h))  # [0, 1)
    s = torch.where(maxc > 0, cr / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    h = (h + shift) % 1.0
    n = image.new_tensor([5.0, 3.0, 1.0])[:, None, None]  # (3, 1, 1)
    k = (n + 6 * h) % 6
    return (maxc - maxc * s * torch.minimum(k, 4 - k).clamp(0, 1)).clamp(0, 1)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with standard deviation ``sigma`` pixels (kernel radius ⌈3σ⌉, reflected borders)."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 pixels, got {sigma}")
    H, W = image.shape[-2:]
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()  # (2r + 1,)
    out = image[None]  # (1, 3, H, W)
    pw, ph = min(radius, W - 1), min(radius, H - 1)  # reflection needs pad < size
    kw = k[radius - pw:radius + pw + 1]
    kh = k[radius - ph:radius + ph + 1]
    out = F.conv2d(F.pad(out, (pw, pw, 0, 0), mode="reflect" if pw else "constant"),
                   (kw / kw.sum()).view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    out = F.conv2d(F.pad(out, (0, 0, ph, ph), mode="reflect" if ph else "constant"),
                   (kh / kh.sum()).view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return out[0]


# ----------------------------------------------------------------------------------------------------------
# The view sampler
# ----------------------------------------------------------------------------------------------------------
class ImageViews:
    """Two SimCLR-style views of one image and their pixel matches (defaults: the released code's).

    Args:
        size: view size (S_h, S_w) or S (square). Released: 224. Smoke profile: 64.
        scale, ratio: crop area fraction and aspect range (released: (0.2, 1.0), (3/4, 4/3)).
        flip_p: probability of a horizontal flip (0.5).
        jitter: (brightness, contrast, saturation, hue) strengths (0.4, 0.4, 0.4, 0.1): factors ~ U(1 − s, 1 + s),
            hue shift ~ U(−h, h), applied in a random order; ``jitter_p`` = 0.8.
        gray_p: probability of converting to grayscale (0.2). blur_sigma, blur_p: σ ~ U(0.1, 2.0) pixels, p 0.5.

    ``views(image, generator)`` → ``{"image0", "image1": (3, S_h, S_w), "matches": (P, 2) int64 flat indices,
    "params0", "params1": ViewParams}``. Random draws, per view in order: the crop (:func:`sample_crop`), the flip,
    jitter on/off, the jitter order and factors, grayscale on/off, blur on/off and σ.
    """

    def __init__(self, size=224, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), flip_p: float = 0.5,
                 jitter=(0.4, 0.4, 0.4, 0.1), jitter_p: float = 0.8, gray_p: float = 0.2, blur_sigma=(0.1, 2.0),
                 blur_p: float = 0.5):
        self.size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        self.scale, self.ratio, self.flip_p = tuple(scale), tuple(ratio), flip_p
        self.jitter, self.jitter_p, self.gray_p = tuple(jitter), jitter_p, gray_p
        self.blur_sigma, self.blur_p = tuple(blur_sigma), blur_p
        if len(self.jitter) != 4 or not 0 <= self.jitter[3] <= 0.5:
            raise ValueError(f"jitter must be (brightness, contrast, saturation, hue) with hue in [0, 0.5], got "
                             f"{jitter}")

    def __repr__(self):
        return (f"ImageViews(size={self.size}, scale={self.scale}, ratio={tuple(round(r, 4) for r in self.ratio)}, "
                f"flip_p={self.flip_p}, jitter={self.jitter}, jitter_p={self.jitter_p}, gray_p={self.gray_p}, "
                f"blur_sigma={self.blur_sigma}, blur_p={self.blur_p})")

    def sample_params(self, orig_size, generator=None) -> ViewParams:
        g = _torch_generator(generator)
        H, W = orig_size
        top, left, h, w = sample_crop(H, W, self.scale, self.ratio, g)
        flip = _uniform(0, 1, g) < self.flip_p
        return ViewParams(top, left, h, w, self.size, (H, W), flip)

    def photometric(self, image: torch.Tensor, generator=None) -> torch.Tensor:
        """Colour jitter (random order), grayscale, blur — each with its probability."""
        g = _torch_generator(generator)
        if _uniform(0, 1, g) < self.jitter_p:
            b, c, s, h = self.jitter
            for fn in torch.randperm(4, generator=g).tolist():
                if fn == 0 and b > 0:
                    image = adjust_brightness(image, _uniform(max(0.0, 1 - b), 1 + b, g))
                elif fn == 1 and c > 0:
                    image = adjust_contrast(image, _uniform(max(0.0, 1 - c), 1 + c, g))
                elif fn == 2 and s > 0:
                    image = adjust_saturation(image, _uniform(max(0.0, 1 - s), 1 + s, g))
                elif fn == 3 and h > 0:
                    image = adjust_hue(image, _uniform(-h, h, g))
        if _uniform(0, 1, g) < self.gray_p:
            image = rgb_to_grayscale(image).expand(3, -1, -1).contiguous()
        if _uniform(0, 1, g) < self.blur_p:
            image = gaussian_blur(image, _uniform(*self.blur_sigma, g))
        return image

    def view(self, image: torch.Tensor, generator=None) -> tuple[torch.Tensor, ViewParams]:
        g = _torch_generator(generator)
        _check_image(image)
        p = self.sample_params(tuple(image.shape[-2:]), g)
        return self.photometric(resized_crop(image, p), g), p

    def __call__(self, image: torch.Tensor, generator=None) -> dict:
        g = _torch_generator(generator)
        v0, p0 = self.view(image, g)
        v1, p1 = self.view(image, g)
        return {"image0": v0, "image1": v1, "matches": match_views(p0, p1), "params0": p0, "params1": p1}


def _as_image(x) -> torch.Tensor:
    """(3, H, W) float tensor in [0, 1] from such a tensor or an (H, W, 3) uint8 array/tensor."""
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if t.dim() == 3 and t.shape[-1] == 3 and t.shape[0] != 3:
        t = t.permute(2, 0, 1)
    if not t.dtype.is_floating_point:
        t = t.float() / 255
    return _check_image(t.float())


class PixelViewDataset(AugmentedDataset):
    """Stage-1 data: each item of ``base`` (anything with an ``"image"`` — :class:`~ssl3d.data.datasets.
    RGBDFrameDataset`, a list of real frames with ``"color"``) → two views and their matches, drawn from a generator
    seeded by (seed, epoch, index), so views change per epoch (``set_epoch``) and reproduce."""

    def __init__(self, base, views: ImageViews | None = None, seed: int = 0, key: str | None = None):
        super().__init__(seed, transform=None)
        self.base, self.views, self.key = base, views or ImageViews(), key

    def __len__(self):
        return len(self.base)

    def image(self, i: int) -> torch.Tensor:
        item = self.base.raw(i) if hasattr(self.base, "raw") and self.key is None else self.base[i]
        key = self.key or next((k for k in ("image", "color") if k in item), None)
        if key is None:
            raise KeyError(f"item {i} of {type(self.base).__name__} has no 'image' or 'color' (keys {sorted(item)}): "
                           f"pass key=... naming its RGB image")
        return _as_image(item[key])

    def __getitem__(self, i: int) -> dict:
        out = self.views(self.image(i), self.aug_rng(i))
        return {k: out[k] for k in ("image0", "image1", "matches")}


def collate_views(items: list[dict]) -> dict:
    """Views of B images → ``image0``, ``image1`` (B, 3, S_h, S_w) and ``matches``: a list of B (P_b, 2) tensors
    (the input of :func:`ssl3d.contrastive.pixel_info_nce`)."""
    for k in ("image0", "image1", "matches"):
        if any(k not in it for it in items):
            raise KeyError(f"view items need 'image0', 'image1' and 'matches' (missing {k!r}): wrap the image "
                           f"dataset in ssl3d.data.image_views.PixelViewDataset")
    shapes = {tuple(it["image0"].shape) for it in items} | {tuple(it["image1"].shape) for it in items}
    if len(shapes) != 1:
        raise ValueError(f"views of one batch must share one size, got {sorted(shapes)}: give every view the same "
                         f"ImageViews(size=...)")
    return {"image0": torch.stack([it["image0"] for it in items]),
            "image1": torch.stack([it["image1"] for it in items]), "matches": [it["matches"] for it in items]}
