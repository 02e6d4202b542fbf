"""Composable augmentations used by the papers, acting on sample dicts of numpy arrays.

Every transform is called as ``t(sample, rng)`` with a ``numpy.random.Generator`` (datasets derive it from
their seed, the epoch and the item index, so augmented data reproduces). Per-point arrays — any key in
``PER_POINT`` whose first dimension equals the number of points — stay aligned when points are dropped.

=====================  =======================================================================
transform              used by
=====================  =======================================================================
RandomRotation(z)      object classification/segmentation (rotation about the up axis)
RandomRotation(None)   PointContrast (rotation by up to 360° about a random axis, per view)
RandomScale            PointContrast (0.8–1.2, off by default), ACT/Point-MAE (0.67–1.5)
Jitter                 PointNet/DGCNN (σ 0.01, clipped at 0.05)
ColorJitter            scene segmentation (Gaussian noise on RGB)
PointDropout           DGCNN/PointNet++ style random point dropout
=====================  =======================================================================
"""

from __future__ import annotations

import math

import numpy as np

from ssl3d import geometry as G

__all__ = ["PER_POINT", "Compose", "RandomRotation", "RandomScale", "Jitter", "ColorJitter", "PointDropout"]

PER_POINT = ("points", "normals", "colors", "part", "semantic", "instance", "mask", "pixels")


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self):
        return "Compose(" + ", ".join(map(repr, self.transforms)) + ")"


class RandomRotation:
    """Rotate points (and normals) by a random angle in [−max/2, max/2] about ``axis`` (None = random axis).

    The applied rotation is recorded in ``sample["rotation"]`` (composed with any earlier one), which view-pair
    datasets use to keep the ground-truth transform consistent.
    """

    def __init__(self, axis=(0, 0, 1), max_angle: float = 2 * math.pi):
        self.axis, self.max_angle = axis, max_angle

    def __call__(self, sample, rng):
        axis = rng.normal(size=3) if self.axis is None else np.asarray(self.axis, dtype=np.float64)
        angle = (rng.random() - 0.5) * self.max_angle
        R = G.rotation_matrix(axis, angle).double().numpy()
        sample = dict(sample)
        sample["points"] = (sample["points"] @ R.T).astype(np.float32)
        if "normals" in sample:
            sample["normals"] = (sample["normals"] @ R.T).astype(np.float32)
        sample["rotation"] = R @ sample.get("rotation", np.eye(3))
        return sample

    def __repr__(self):
        return f"RandomRotation(axis={self.axis}, max_angle={self.max_angle:.3f})"


class RandomScale:
    """Multiply coordinates by s ~ U(lo, hi) (per axis when ``anisotropic``)."""

    def __init__(self, lo=0.8, hi=1.2, anisotropic=False):
        self.lo, self.hi, self.anisotropic = lo, hi, anisotropic

    def __call__(self, sample, rng):
        s = rng.uniform(self.lo, self.hi, size=3 if self.anisotropic else 1)
        sample = dict(sample)
        sample["points"] = (sample["points"] * s).astype(np.float32)
        return sample

    def __repr__(self):
        return f"RandomScale({self.lo}, {self.hi}, anisotropic={self.anisotropic})"


class Jitter:
    """Add clipped Gaussian noise N(0, σ²) to every coordinate."""

    def __init__(self, sigma=0.01, clip=0.05):
        self.sigma, self.clip = sigma, clip

    def __call__(self, sample, rng):
        sample = dict(sample)
        noise = np.clip(rng.normal(0, self.sigma, sample["points"].shape), -self.clip, self.clip)
        sample["points"] = (sample["points"] + noise).astype(np.float32)
        return sample

    def __repr__(self):
        return f"Jitter(sigma={self.sigma}, clip={self.clip})"


class ColorJitter:
    """Add Gaussian noise (std in [0, 1] colour units) to ``colors`` and clip to [0, 1]."""

    def __init__(self, std=0.05):
        self.std = std

    def __call__(self, sample, rng):
        if "colors" not in sample:
            return sample
        sample = dict(sample)
        c = sample["colors"] + rng.normal(0, self.std, sample["colors"].shape)
        sample["colors"] = np.clip(c, 0, 1).astype(np.float32)
        return sample

    def __repr__(self):
        return f"ColorJitter(std={self.std})"


class PointDropout:
    """Drop a random fraction r ~ U(0, max_ratio) of the points (all per-point arrays stay aligned)."""

    def __init__(self, max_ratio=0.5):
        self.max_ratio = max_ratio

    def __call__(self, sample, rng):
        n = len(sample["points"])
        keep = rng.random(n) >= rng.uniform(0, self.max_ratio)
        if not keep.any():
            keep[rng.integers(n)] = True
        sample = dict(sample)
        for k in PER_POINT:
            if k in sample and hasattr(sample[k], "__len__") and len(sample[k]) == n:
                sample[k] = sample[k][keep]
        return sample

    def __repr__(self):
        return f"PointDropout(max_ratio={self.max_ratio})"
