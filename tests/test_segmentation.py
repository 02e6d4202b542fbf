"""Sparse semantic segmentation glue: training reduces the loss; evaluation at the points matches scikit-learn."""

import numpy as np
import torch
from sklearn.metrics import jaccard_score

from ssl3d import sparse as sp
from ssl3d.data.datasets import SceneDataset, collate_scenes
from ssl3d.models import build_model
from ssl3d.segmentation import SparseSegmenter, evaluate_segmentation, segmentation_step


def test_train_and_evaluate_on_a_tiny_room():
    sp.set_backend("torch")
    try:
        torch.manual_seed(0)
        ds = SceneDataset(1, points_per_room=4000, voxel_size=0.25)
        model = SparseSegmenter(build_model("res16unet14tiny", in_channels=3, out_channels=8), ds.num_classes)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        batch = collate_scenes([ds[0]])
        losses = []
        for _ in range(15):
            loss = segmentation_step(model, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.7 * losses[0]
        res = evaluate_segmentation(model, ds)
        pred, target = res.predictions[0], ds[0]["point_labels"].numpy()
        assert pred.shape == target.shape
        assert res.confusion.sum() == (target != -100).sum()
        present = np.unique(np.concatenate([pred, target]))
        ref = jaccard_score(target, pred, labels=present, average=None)
        np.testing.assert_allclose(res.iou[present], ref)
        assert abs(res.miou - ref.mean()) < 1e-9
        assert abs(res.accuracy - (pred == target).mean()) < 1e-9
    finally:
        sp.set_backend(None)
