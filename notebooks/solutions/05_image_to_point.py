"""Worked solutions to the exercises of 05_image_to_point (run them: `python notebooks/solutions/05_image_to_point.py`).
tests/test_solutions.py checks what each one claims (on smaller data)."""

import numpy as np
import torch
import torch.nn.functional as F

from ssl3d import distill
from ssl3d.data import load_dataset
from ssl3d.data import rgbd as R
from ssl3d.data.image_views import ImageViews, match_views
from ssl3d.models.resunet2d import ResUNet2d


def exercise_1(settings=(("released: 640×480 image, 224 px views", (480, 640), 224, 4092),
                         ("smoke: 80×60 frame, 48 px views", (60, 80), 48, 1024)),
               n_pairs: int = 200, seed: int = 0) -> dict:
    """Matched pixels per pair of views (crop area 20–100 %, aspect 3/4–4/3, flip ½: the released sampler).

    A view-0 pixel has a partner when a view-1 pixel shows the same original pixel. Where a view shrinks its crop
    (crop larger than the view), it shows only some of the original pixels, so the matches are bounded by the
    coarser of the two views over their overlap. Returns per setting the mean and median number of matches, the
    fraction of pairs with at least ``cap`` matches (the number of pairs the loss samples, released 4,092) and the
    fraction with none (crops that do not overlap)."""
    out = {}
    for name, orig, size, cap in settings:
        views, g = ImageViews(size=size), torch.Generator().manual_seed(seed)
        counts = np.array([len(match_views(views.sample_params(orig, g), views.sample_params(orig, g)))
                           for _ in range(n_pairs)])
        out[name] = {"view_pixels": size * size, "cap": cap, "mean_matches": float(counts.mean()),
                     "median_matches": float(np.median(counts)), "at_cap": float((counts >= cap).mean()),
                     "no_match": float((counts == 0).mean())}
    return out


def _nearest(fmap: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """(C, H, W) map read at the pixel whose area contains (u, v): (N, C)."""
    H, W = fmap.shape[-2:]
    col = torch.floor(uv[:, 0] + 0.5).long().clamp(0, W - 1)
    row = torch.floor(uv[:, 1] + 0.5).long().clamp(0, H - 1)
    return fmap[:, row, col].T


def exercise_2(net: torch.nn.Module | None = None, n_frames: int = 4, width: int = 80, height: int = 60,
               seed: int = 0) -> dict:
    """Bilinear vs nearest-pixel targets, with the 2D network at native and at half resolution (``teacher_size``).

    At native resolution the points of an RGB-D frame project onto pixel centres (integers), where bilinear
    interpolation *is* the pixel's value: the two agree exactly. At half resolution a pixel centre maps to
    u' = (u + ½)/2 − ½, a quarter pixel off the new centres, and the two differ. Returns the mean and the smallest
    cosine between the two targets per resolution (an untrained 2D network unless ``net`` is given)."""
    if net is None:
        torch.manual_seed(seed)
        net = ResUNet2d(layers=(1, 1, 1, 1), width=8)
    net = net.eval()
    frames = load_dataset("rgbd_frames", "test", None, n_rooms=1, frames_per_room=n_frames, width=width,
                          height=height, voxel_size=0.1, seed=seed)
    out = {}
    for name, size in (("native", (height, width)), ("half", (height // 2, width // 2))):
        cos = []
        for i in range(len(frames)):
            it = frames[i]
            uv, _ = distill.project_points(it["points"], it["K"])
            image = it["image"][None]
            if size != tuple(image.shape[-2:]):
                image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
                uv = distill.resize_uv(uv, it["image"].shape[-2:], size)
            with torch.no_grad():
                fmap = net(image)[0]  # (C, h, w) unit features
            bil = distill.bilinear_sample(fmap, uv.float())
            near = _nearest(fmap, uv)
            cos.append(F.cosine_similarity(bil, near, dim=1))
        c = torch.cat(cos)
        out[name] = {"mean_cosine": float(c.mean()), "min_cosine": float(c.min()), "points": len(c)}
    return out


def exercise_3(frame_i: int = 0, frame_j: int = 2, n_frames: int = 8, width: int = 80, height: int = 60,
               occlusion_tol: float = 0.1, seed: int = 100) -> dict:
    """Points of frame i (world coordinates) projected into frame j of the same room, with and without the
    depth test |z − D_j(u, v)| ≤ tol.

    Counts: points in front of camera j and inside its image; of those, the ones that pass the depth test. For
    both groups: the fraction whose pixel in frame j shows the same object instance, and the mean absolute colour
    difference between the point (as seen in frame i) and that pixel (colours differ a little even on the right
    surface: the renderer's head-light shades by viewing angle). The rejected points land on whatever occludes
    them."""
    frames = load_dataset("rgbd_frames", "train", None, n_rooms=1, frames_per_room=n_frames, width=width,
                          height=height, voxel_size=0.05, seed=seed)
    fi, fj = frames.raw(frame_i), frames.raw(frame_j)
    p = R.frame_points(fi, world=True)  # every valid pixel of frame i, world coordinates
    uv, z = distill.project_points(p["points"], fj["K"], fj["pose"])
    inside = distill.visible_mask(uv, z, fj["depth"].shape)
    kept = distill.visible_mask(uv, z, fj["depth"].shape, depth=fj["depth"], occlusion_tol=occlusion_tol)
    col = torch.floor(uv[:, 0] + 0.5).nan_to_num(0).long().clamp(0, width - 1).numpy()
    row = torch.floor(uv[:, 1] + 0.5).nan_to_num(0).long().clamp(0, height - 1).numpy()
    same = fj["instance"][row, col] == p["instance"]
    colour_err = np.abs(fj["color"][row, col].astype(np.float32) / 255 - p["colors"]).mean(1)
    inside, kept = inside.numpy(), kept.numpy()
    rejected = inside & ~kept

    def stats(mask):
        return {"points": int(mask.sum()), "same_instance": float(same[mask].mean()) if mask.any() else float("nan"),
                "colour_error": float(colour_err[mask].mean()) if mask.any() else float("nan")}

    return {"points": len(z), "in_front_and_inside": int(inside.sum()), "kept": stats(kept),
            "rejected": stats(rejected)}


if __name__ == "__main__":
    for name, r in exercise_1().items():
        print(f"1. {name}: {r['mean_matches']:.0f} matches on average (median {r['median_matches']:.0f}) of "
              f"{r['view_pixels']} view pixels; {r['at_cap']:.0%} of the pairs reach {r['cap']}, {r['no_match']:.0%} "
              f"have none")
    for name, r in exercise_2().items():
        print(f"2. teacher at {name} resolution: cosine(bilinear, nearest) mean {r['mean_cosine']:.4f}, "
              f"min {r['min_cosine']:.4f} over {r['points']} points")
    r = exercise_3()
    print(f"3. {r['points']} points of frame 0; {r['in_front_and_inside']} land inside frame 2 in front of its camera; "
          f"kept by the depth test: {r['kept']}; rejected: {r['rejected']}")
