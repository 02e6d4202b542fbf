"""SimCLR-style views of one image (ssl3d.data.image_views): the view → original pixel map and the matches between two
views are exact (against F.interpolate's nearest-exact index and a naive loop with exact fractions), the image
operations against hand computations, colorsys and scipy."""

import colorsys
import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl3d.contrastive import pixel_info_nce
from ssl3d.data import image_views as V


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """One thread: tiny tensors (conftest.one_thread)."""


H, W = 13, 17


def _params(g, n=30):
    """Random view geometries: shrinking and enlarging crops, flips, non-square outputs."""
    out = []
    for _ in range(n):
        h, w = (int(torch.randint(1, H + 1, (), generator=g)), int(torch.randint(1, W + 1, (), generator=g)))
        top, left = int(torch.randint(0, H - h + 1, (), generator=g)), int(torch.randint(0, W - w + 1, (), generator=g))
        size = (int(torch.randint(1, 12, (), generator=g)), int(torch.randint(1, 12, (), generator=g)))
        out.append(V.ViewParams(top, left, h, w, size, (H, W), bool(torch.rand((), generator=g) < 0.5)))
    return out


def _reference_index(p: V.ViewParams) -> torch.Tensor:
    """Original flat pixel index of every view pixel via F.interpolate(nearest-exact) of an index image."""
    idx = torch.arange(H * W, dtype=torch.float64).view(1, 1, H, W)
    crop = idx[..., p.top:p.top + p.height, p.left:p.left + p.width]
    out = F.interpolate(crop, size=p.size, mode="nearest-exact")[0, 0]
    return (out.flip(-1) if p.flip else out).long()


def test_view_to_original_equals_nearest_exact_resampling_of_an_index_image(gen):
    for p in _params(gen):
        rows, cols = V.view_to_original(p)
        torch.testing.assert_close(rows[:, None] * W + cols[None, :], _reference_index(p), rtol=0, atol=0)


def _centre(p: V.ViewParams, r: int, c: int):
    """Exact continuous original coordinates (x, y) of the centre of view pixel (r, c)."""
    cc = p.size[1] - 1 - c if p.flip else c
    x = p.left + Fraction(2 * cc + 1, 2) * Fraction(p.width, p.size[1]) - Fraction(1, 2)
    y = p.top + Fraction(2 * r + 1, 2) * Fraction(p.height, p.size[0]) - Fraction(1, 2)
    return x, y


def test_round_trip_view_pixel_centre_lies_in_its_original_pixel(gen):
    """Crop + flip round trip: the centre of every view pixel lies inside the cell [k − ½, k + ½) of its original pixel,
    and mapping the view's pixels back reproduces exactly the original pixels the crop covers (no more, no less)."""
    for p in _params(gen, 15):
        rows, cols = (t.tolist() for t in V.view_to_original(p))
        for r, c in itertools.product(range(p.size[0]), range(p.size[1])):
            x, y = _centre(p, r, c)
            assert cols[c] - Fraction(1, 2) <= x < cols[c] + Fraction(1, 2)
            assert rows[r] - Fraction(1, 2) <= y < rows[r] + Fraction(1, 2)
        assert set(cols) <= set(range(p.left, p.left + p.width))
        if p.size[1] >= p.width:  # enlarging: every original column of the crop is shown
            assert set(cols) == set(range(p.left, p.left + p.width))


def test_matches_equal_a_naive_loop_with_exact_fractions(gen):
    ps = _params(gen, 12)
    for p0, p1 in zip(ps[::2], ps[1::2], strict=True):
        ref0, ref1 = _reference_index(p0).reshape(-1).tolist(), _reference_index(p1).reshape(-1).tolist()
        expected = []
        for i0 in range(len(ref0)):
            x0, y0 = _centre(p0, *divmod(i0, p0.size[1]))
            best = None
            for i1 in range(len(ref1)):
                if ref1[i1] != ref0[i0]:
                    continue
                x1, y1 = _centre(p1, *divmod(i1, p1.size[1]))
                d = (x1 - x0) ** 2 + (y1 - y0) ** 2
                if best is None or d < best[0]:  # strict: ties keep the smaller flat index
                    best = (d, i1)
            if best is not None:
                expected.append([i0, best[1]])
        got = V.match_views(p0, p1)
        assert got.shape[1] == 2 and got.dtype == torch.long
        assert got.tolist() == expected


def test_matches_of_real_views_show_the_same_original_pixel(gen):
    views = V.ImageViews(size=(24, 32))
    img = torch.rand(3, 40, 50, generator=gen)
    out = views(img, gen)
    m = out["matches"]
    assert len(m) > 0 and len(torch.unique(m[:, 0])) == len(m)  # at most one match per view-0 pixel
    r0, c0 = V.view_to_original(out["params0"])
    r1, c1 = V.view_to_original(out["params1"])
    o0 = (r0[:, None] * 50 + c0[None, :]).reshape(-1)
    o1 = (r1[:, None] * 50 + c1[None, :]).reshape(-1)
    torch.testing.assert_close(o0[m[:, 0]], o1[m[:, 1]], rtol=0, atol=0)
    # completeness: a view-0 pixel is matched iff view 1 shows its original pixel
    assert set(m[:, 0].tolist()) == {i for i, o in enumerate(o0.tolist()) if o in set(o1.tolist())}
    loss = pixel_info_nce(torch.randn(16, 24, 32), torch.randn(16, 24, 32), m)
    assert torch.isfinite(loss)


def test_same_view_matches_itself_and_disjoint_crops_have_no_match():
    p = V.ViewParams(2, 3, 8, 10, (8, 10), (H, W), flip=True)  # no resize: a pure crop + flip
    m = V.match_views(p, p)
    torch.testing.assert_close(m[:, 0], m[:, 1])
    assert len(m) == 80
    q = V.ViewParams(0, 0, 4, 4, (6, 6), (H, W))
    r = V.ViewParams(5, 10, 4, 4, (6, 6), (H, W))
    assert V.match_views(q, r).shape == (0, 2)
    with pytest.raises(ValueError, match="outside the 13 × 17 image"):
        V.ViewParams(10, 0, 5, 5, (4, 4), (H, W))
    with pytest.raises(ValueError, match="same image"):
        V.match_views(q, V.ViewParams(0, 0, 4, 4, (6, 6), (H + 1, W)))


def test_resized_crop_samples_a_linear_ramp_at_the_view_pixel_centres():
    """Bilinear resizing of an enlarging crop reads a linear ramp exactly at x(c) = j + (c + ½)·w/S − ½ (interior)."""
    ramp = torch.arange(W, dtype=torch.float64).expand(3, H, W).clone()
    p = V.ViewParams(1, 4, 10, 7, (10, 19), (H, W), flip=True)
    out = V.resized_crop(ramp, p)
    for c in range(19):
        x = float(_centre(p, 0, c)[0])
        if p.left <= x <= p.left + p.width - 1:  # inside the crop's pixel-centre hull
            assert abs(out[0, 5, c].item() - x) < 1e-9
    with pytest.raises(ValueError, match="sampled for a"):
        V.resized_crop(torch.rand(3, H + 1, W), p)


def test_sample_crop_follows_scale_and_ratio(gen):
    for _ in range(50):
        top, left, h, w = V.sample_crop(120, 160, (0.2, 1.0), (3 / 4, 4 / 3), gen)
        assert 0 <= top <= 120 - h and 0 <= left <= 160 - w
        assert 0.2 * 120 * 160 * 0.9 <= h * w <= 120 * 160
    assert V.sample_crop(10, 100, (0.99, 1.0), (1.0, 1.0), gen) == (0, 45, 10, 10)  # fallback: central crop


def test_photometric_ops_against_hand_computations_and_colorsys(gen):
    img = torch.rand(3, 5, 6, generator=gen, dtype=torch.float64)
    gray = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    torch.testing.assert_close(V.rgb_to_grayscale(img)[0], gray)
    torch.testing.assert_close(V.adjust_brightness(img, 1.3), (1.3 * img).clamp(0, 1))
    torch.testing.assert_close(V.adjust_contrast(img, 0.6), (0.6 * img + 0.4 * gray.mean()).clamp(0, 1))
    torch.testing.assert_close(V.adjust_saturation(img, 1.4), (1.4 * img - 0.4 * gray).clamp(0, 1))
    out = V.adjust_hue(img, 0.23)
    for i, j in itertools.product(range(5), range(6)):
        h, s, v = colorsys.rgb_to_hsv(*img[:, i, j].tolist())
        torch.testing.assert_close(out[:, i, j], torch.tensor(colorsys.hsv_to_rgb((h + 0.23) % 1, s, v),
                                                               dtype=torch.float64))
    torch.testing.assert_close(V.adjust_hue(img, 0.0), img)
    with pytest.raises(ValueError, match="hue shift"):
        V.adjust_hue(img, 0.7)


def test_gaussian_blur_equals_scipy():
    from scipy.ndimage import gaussian_filter

    img = torch.rand(3, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = V.gaussian_blur(img, 1.0)  # radius ⌈3σ⌉ = 3 = scipy's int(3σ + ½) at truncate=3
    ref = np.stack([gaussian_filter(img[c].numpy(), 1.0, mode="mirror", truncate=3.0) for c in range(3)])
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)
    const = torch.full((3, 4, 4), 0.3, dtype=torch.float64)
    torch.testing.assert_close(V.gaussian_blur(const, 1.7), const)  # radius clipped to the image, still normalised


def test_views_reproduce_from_seed_and_accept_numpy_generators():
    img = torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(2))
    views = V.ImageViews(size=16)
    a = views(img, torch.Generator().manual_seed(5))
    b = views(img, torch.Generator().manual_seed(5))
    c = views(img, np.random.default_rng(5))
    torch.testing.assert_close(a["image0"], b["image0"])
    torch.testing.assert_close(a["matches"], b["matches"])
    assert c["image0"].shape == (3, 16, 16) and c["image0"].min() >= 0 and c["image0"].max() <= 1
    with pytest.raises(ValueError, match=r"RGB image \(3, H, W\)"):
        views(torch.rand(30, 40, 3))
    with pytest.raises(TypeError, match="generator"):
        views(img, 5)


def test_pixel_view_dataset_and_collate():
    frames = [{"color": (np.random.default_rng(i).random((24, 32, 3)) * 255).astype(np.uint8)} for i in range(3)]
    ds = V.PixelViewDataset(frames, V.ImageViews(size=16), seed=0)
    items = [ds[i] for i in range(3)]
    batch = V.collate_views(items)
    assert batch["image0"].shape == (3, 3, 16, 16) and len(batch["matches"]) == 3
    again = ds[1]
    torch.testing.assert_close(again["image1"], items[1]["image1"])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["image0"], items[1]["image0"])
    with pytest.raises(KeyError, match="PixelViewDataset"):
        V.collate_views([{"image": torch.zeros(3, 4, 4)}])
    with pytest.raises(KeyError, match="key="):
        V.PixelViewDataset([{"rgb": np.zeros((4, 4, 3))}])[0]
