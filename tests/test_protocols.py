"""Evaluation protocols (ssl3d.protocols): tidy records, the C-tuned probe, fine-tuning regimes, seed statistics."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from ssl3d import protocols as PR
from ssl3d.data import datasets as D
from ssl3d.evaluate import extract_global_features, linear_svm_probe, select_svm_C
from ssl3d.models import build_model

KEYS = {"method", "backbone", "task", "protocol", "regime", "budget", "seed", "metric", "value"}
TINY = PR.TrainSettings(steps=2, batch_size=4, lr=1e-3)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """One thread: small matmuls (conftest.one_thread)."""


@pytest.fixture(scope="module")
def objects():
    classes = ["chair", "mug", "lamp"]
    return D.ObjectDataset(6, 64, "train", classes=classes), D.ObjectDataset(3, 64, "test", classes=classes)


def net():
    torch.manual_seed(0)
    return build_model("pointnet", width=0.125)


def test_linear_probe_records_match_a_manual_probe(objects):
    train, test = objects
    backbone = net()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    recs = PR.linear_probe(backbone, train, test, method="random", seed=1, budget=2, Cs=(0.01, 1.0))
    assert [r["metric"] for r in recs] == ["accuracy", "class_accuracy"] and KEYS <= set(recs[0])
    r = recs[0]
    assert r["backbone"] == "pointnet" and r["n_labeled"] == 6 and r["label_fraction"] == pytest.approx(6 / 18)
    idx = D.per_class_subset(train.labels, 2, seed=1)
    xtr, _ = extract_global_features(backbone, torch.utils.data.Subset(train, idx))
    xte, _ = extract_global_features(backbone, test)
    C, _ = select_svm_C(xtr, train.labels[idx], (0.01, 1.0), 0.2, seed=1, folds=2)  # 2 shapes per class → 2 folds
    ref = linear_svm_probe(xtr, train.labels[idx], xte, test.labels, C=C, seed=1)
    assert r["C"] == C and r["value"] == pytest.approx(100 * ref.accuracy)
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in before.items())  # the backbone is untouched


def test_finetune_classification_and_partseg_produce_records(objects):
    train, test = objects
    backbone = net()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    cls = PR.finetune_classification(backbone, train, test, budget=1, seed=0, method="m", settings=TINY)
    assert cls[0]["metric"] == "accuracy" and 0 <= cls[0]["value"] <= 100 and cls[0]["n_labeled"] == 3
    seg = PR.finetune_partseg(backbone, train, test, budget=0.5, seed=0, settings=TINY)
    assert [r["metric"] for r in seg] == ["instance_miou", "class_miou"]
    assert all(0 <= r["value"] <= 100 for r in seg) and seg[0]["regime"] == "fraction"
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in before.items())


def test_finetune_semseg_regimes():
    train = D.SceneDataset(3, points_per_room=4000, voxel_size=0.25, features="ones")
    test = D.SceneDataset(1, points_per_room=4000, voxel_size=0.25, split="test", features="ones")
    torch.manual_seed(0)
    backbone = build_model("res16unet14tiny", in_channels=0, out_channels=8)
    st = PR.TrainSettings(steps=2, batch_size=2, optimizer="sgd", lr=0.01, scheduler="poly")
    for regime, budget, extra in (("reconstructions", 0.34, {"n_scenes": 1}), ("annotations", 20,
                                                                                 {"points_per_scene": 20})):
        recs = PR.finetune_semseg(backbone, train, test, regime=regime, budget=budget, settings=st, method="x")
        assert recs[0]["metric"] == "miou" and 0 <= recs[0]["value"] <= 100
        assert all(recs[0][k] == v for k, v in extra.items())
    with pytest.raises(ValueError, match="labelled points per scene"):
        PR.finetune_semseg(backbone, train, test, regime="annotations", budget=0.5, settings=st)
    with pytest.raises(ValueError, match="regime"):
        PR.finetune_semseg(backbone, train, test, regime="weak", settings=st)


def manual_head_features(backbone, batches):
    """By hand: a copy of the backbone, BatchNorm re-estimated on ``batches``, eval mode, the features a head reads
    at the labelled points → (net, key, per-batch (features, labels), x (M, C) float64, y (M,))."""
    from ssl3d.models.heads import head_input
    from ssl3d.train import recompute_batchnorm

    net, key = copy.deepcopy(backbone), head_input(backbone)
    recompute_batchnorm(net, batches)
    net.eval()
    with torch.no_grad():
        feats = [(net.encode(b)[key].double().numpy(), b["labels"].numpy()) for b in batches]
    x = np.concatenate([f[y >= 0] for f, y in feats])
    y = np.concatenate([y[y >= 0] for _, y in feats])
    return net, key, feats, x, y


def test_probe_semseg_matches_a_manual_probe():
    """probe_semseg (classifier folded into the head, scored by evaluate_semseg) against the same probe done by hand:
    BatchNorm re-estimated on the labelled scenes, head features of the labelled points, scikit-learn's pipeline
    predicting every test voxel, predictions carried to the original points, mIoU from the confusion matrix."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ssl3d.evaluate import confusion_matrix, iou_from_confusion

    train = D.SceneDataset(3, points_per_room=4000, voxel_size=0.25, features="ones")
    test = D.SceneDataset(1, points_per_room=4000, voxel_size=0.25, split="test", features="ones")
    torch.manual_seed(0)
    backbone = build_model("res16unet14tiny", in_channels=0, out_channels=8)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    recs = PR.probe_semseg(backbone, train, test, regime="annotations", budget=30, seed=2, method="random", C=0.3)
    assert [r["metric"] for r in recs] == ["miou", "accuracy"] and recs[0]["protocol"] == "probe_semseg"
    assert recs[0]["points_per_scene"] == 30 and recs[0]["C"] == 0.3
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in before.items())  # the backbone is untouched

    labelled = train.with_annotations(30, 2)
    batches = [D.collate_scenes([labelled[i], labelled[i + 1]]) if i + 1 < len(labelled) else
               D.collate_scenes([labelled[i]]) for i in range(0, len(labelled), 2)]
    net, key, _, x, y = manual_head_features(backbone, batches)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=10_000)).fit(x, y)
    with torch.no_grad():
        cm = torch.zeros(train.num_classes, train.num_classes, dtype=torch.long)
        for i in range(len(test)):
            b = D.collate_scenes([test[i]])
            pred = torch.from_numpy(clf.predict(net.encode(b)[key].double().numpy()))[b["inverse"]]
            cm += confusion_matrix(pred, b["semantic"], train.num_classes)
    assert recs[0]["value"] == pytest.approx(100 * iou_from_confusion(cm)[1], abs=1e-9)
    assert recs[1]["value"] == pytest.approx(100 * cm.diag().sum().item() / cm.sum().item(), abs=1e-9)
    with pytest.raises(ValueError, match="labelled points per scene"):
        PR.probe_semseg(backbone, train, test, regime="annotations", budget=0.5)


def test_lp_ft_starts_from_the_probe_and_precise_bn_is_one_pass_over_the_labelled_scenes(monkeypatch):
    """head_init="probe": before fine-tuning, the head is scikit-learn's logistic regression (C = 1, raw features)
    on the labelled points' features, BatchNorm re-estimated on the labelled scenes; absent classes start at bias
    −30. precise_bn: after fine-tuning, the running statistics are one pass over the labelled scenes. lr = 0 keeps
    every weight where the probe put it, so both can be checked against a manual run."""
    from sklearn.linear_model import LogisticRegression

    from ssl3d.train import recompute_batchnorm

    train = D.SceneDataset(3, points_per_room=4000, voxel_size=0.25, features="ones")
    test = D.SceneDataset(1, points_per_room=4000, voxel_size=0.25, split="test", features="ones")
    torch.manual_seed(0)
    backbone = build_model("res16unet14tiny", in_channels=0, out_channels=8)
    kw = dict(steps=3, batch_size=1, optimizer="sgd", lr=0.0, momentum=0.0, weight_decay=0.0, scheduler=None)
    st = PR.TrainSettings(**kw, head_init="probe", precise_bn=True)
    recs, model, _ = PR.finetune_semseg(backbone, train, test, regime="annotations", budget=30, seed=2, settings=st,
                                        return_model=True)
    # by hand: batches of one scene, so that the shuffled order does not matter
    labelled = train.with_annotations(30, 2)
    batches = [D.collate_scenes([labelled[i]]) for i in range(len(labelled))]
    _, _, feats, x, y = manual_head_features(backbone, batches)
    clf = LogisticRegression(C=1.0, max_iter=10_000).fit(x, y)
    w, b = model.head.out.weight.detach().double().numpy(), model.head.out.bias.detach().double().numpy()
    np.testing.assert_allclose(w[clf.classes_], clf.coef_, atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(b[clf.classes_], clf.intercept_, atol=2e-3, rtol=2e-3)
    absent = np.setdiff1d(np.arange(train.num_classes), clf.classes_)
    assert len(absent) and np.all(b[absent] == -30.0) and np.all(w[absent] == 0)
    # more labelled points than PROBE_HEAD_MAX_POINTS: the fit sees a seeded random subset of them, in order
    monkeypatch.setattr(PR, "PROBE_HEAD_MAX_POINTS", 50)
    _, capped, _ = PR.finetune_semseg(backbone, train, test, regime="annotations", budget=30, seed=2, settings=st,
                                      return_model=True)
    # the loader's shuffled order (a DataLoader seeded like the protocol's): one pass re-estimates BatchNorm, the
    # next one reads the features
    order_loader = torch.utils.data.DataLoader(range(len(batches)), batch_size=1, shuffle=True,
                                               generator=torch.Generator().manual_seed(2))
    order = [[int(i) for i in order_loader] for _ in range(2)][1]
    xo = np.concatenate([feats[i][0][feats[i][1] >= 0] for i in order])
    yo = np.concatenate([feats[i][1][feats[i][1] >= 0] for i in order])
    keep = np.sort(np.random.default_rng(2).choice(len(yo), 50, replace=False))
    sub = LogisticRegression(C=1.0, max_iter=10_000).fit(xo[keep], yo[keep])
    np.testing.assert_allclose(capped.head.out.weight.detach().double().numpy()[sub.classes_], sub.coef_, atol=1e-2)
    assert np.abs(capped.head.out.weight.detach().double().numpy()[clf.classes_] - clf.coef_).max() > 0.05
    monkeypatch.undo()
    # precise BN: one pass over the labelled scenes with the trained network (here: the initial weights)
    ref = copy.deepcopy(model)
    recompute_batchnorm(ref, batches, forward=ref)
    stats = [k for k in ref.state_dict() if k.endswith(("running_mean", "running_var"))]
    for k in stats:
        torch.testing.assert_close(model.state_dict()[k], ref.state_dict()[k], atol=1e-5, rtol=1e-5, msg=k)
    _, plain, _ = PR.finetune_semseg(backbone, train, test, regime="annotations", budget=30, seed=2, return_model=True,
                                     settings=PR.TrainSettings(**kw, head_init="probe"))
    assert not all(torch.allclose(plain.state_dict()[k], ref.state_dict()[k], atol=1e-5) for k in stats)
    # the options change what is measured, so they enter the record key; at their defaults the keys stay as they were
    assert recs[0]["key"] != PR.finetune_semseg(backbone, train, test, regime="annotations", budget=30, seed=2,
                                                settings=PR.TrainSettings(**kw))[0]["key"]
    assert set(PR._settings_dict(PR.TrainSettings())) == {f.name for f in dataclasses.fields(PR.TrainSettings)} - {
        "head_init", "precise_bn"}
    with pytest.raises(ValueError, match="finetune_semseg only"):
        PR.finetune_classification(backbone, train, test, settings=PR.TrainSettings(precise_bn=True))
    with pytest.raises(ValueError, match="head_init"):
        PR.TrainSettings(head_init="lp")


def test_summarize_and_compare_by_hand():
    recs = [{"method": m, "task": "t", "metric": "accuracy", "value": v, "seed": s}
            for m, vals in (("a", [90.0, 92.0, 94.0]), ("b", [80.0, 81.0, 82.0])) for s, v in enumerate(vals)]
    rows = PR.summarize(recs, by=("method", "metric"))
    assert [(r["method"], r["mean"], r["n"]) for r in rows] == [("a", 92.0, 3), ("b", 81.0, 3)]
    assert rows[0]["std"] == pytest.approx(2.0) and rows[0]["text"] == "92.00 ± 2.00"
    c = PR.compare([90.0, 92.0, 94.0], [80.0, 81.0, 82.0])
    assert c["gain"] == pytest.approx(11.0) and c["spread"] == pytest.approx(2.0) and c["passed"]
    assert not PR.compare([90.0, 92.0, 94.0], [88.0, 89.0, 90.0])["passed"]  # +3 < 2 · 2
    with pytest.raises(ValueError, match="two seeds"):
        PR.compare([1.0], [2.0, 3.0])
    assert np.isnan(PR.summarize([recs[0]], by=("method",))[0]["std"])


def test_trivial_partseg_baselines_match_a_hand_computed_case():
    """Two categories; the majority predictor scores exactly the per-shape IoU computed by hand, and the uniform
    predictor only ever predicts parts of the shape's category."""
    class Parts:
        part_ranges, num_parts, num_classes = [[0, 1], [2, 3, 4]], 5, 2

        def __init__(self, items):
            self.items, self.labels = items, np.array([it["label"] for it in items])

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    train = Parts([{"label": 0, "part": np.array([0, 0, 0, 1])}, {"label": 1, "part": np.array([2, 4, 4, 4])}])
    test = Parts([{"label": 0, "part": np.array([0, 1, 1, 1])}, {"label": 1, "part": np.array([2, 3, 4, 4])}])
    recs = PR.trivial_partseg_baselines(train, test, budget=1.0, seed=0)
    maj = next(r["value"] for r in recs if r["method"] == "majority part" and r["metric"] == "instance_miou")
    # shape 0 predicts part 0: IoU(0) = 1/4, IoU(1) = 0 → 1/8; shape 1 predicts part 4: IoU 2/4, parts 2, 3: 0 → 1/6
    assert maj == pytest.approx(100 * (1 / 8 + 1 / 6) / 2)
    uni = next(r["value"] for r in recs if r["method"] == "uniform random" and r["metric"] == "instance_miou")
    assert 0 <= uni <= 100 and {r["metric"] for r in recs} == {"instance_miou", "class_miou"}


# ----------------------------------------------------------------------------------------------------------
# Measured once per run: the record cache
# ----------------------------------------------------------------------------------------------------------
def _fresh_objects(seed=0):
    classes = ["chair", "mug", "lamp"]
    return D.ObjectDataset(6, 64, "train", classes=classes, seed=seed), D.ObjectDataset(3, 64, "test", classes=classes)


def test_cache_returns_what_a_rerun_measures_and_counts_hits(tmp_path):
    from ssl3d.report import write_records

    train, test = _fresh_objects()
    cache = PR.RecordCache()
    first = PR.finetune_classification(net(), train, test, budget=1, seed=0, method="a", settings=TINY, cache=cache)
    assert (cache.hits, cache.misses) == (1 - 1, 1) and first[0]["key"]
    # an independent rerun (fresh network, freshly built datasets, no cache) measures the same number …
    train2, test2 = _fresh_objects()
    rerun = PR.finetune_classification(net(), train2, test2, budget=1, seed=0, method="b", settings=TINY)
    assert rerun[0]["value"] == first[0]["value"] and rerun[0]["key"] == first[0]["key"]
    # … which the cache returns without training, relabelled with the caller's method name
    hit = PR.finetune_classification(net(), train2, test2, budget=1, seed=0, method="b", settings=TINY, cache=cache)
    assert cache.hits == 1 and hit[0]["method"] == "b" and hit[0]["value"] == first[0]["value"]
    # and so does a cache read back from the CSV the records were written to
    path = write_records(first, tmp_path / "r.csv")
    disk = PR.RecordCache.from_csv([path])
    again = PR.finetune_classification(net(), train2, test2, budget=1, seed=0, method="c", settings=TINY, cache=disk)
    assert (disk.hits, disk.misses) == (1, 0) and again[0]["value"] == pytest.approx(first[0]["value"])


def test_cache_misses_when_anything_that_matters_changes():
    train, test = _fresh_objects()
    cache = PR.RecordCache()
    PR.linear_probe(net(), train, test, budget=2, seed=0, Cs=(0.01, 1.0), cache=cache)
    nudged = net()
    with torch.no_grad():
        next(nudged.parameters())[0].flatten()[0] += 1e-3  # one weight
    other_data = _fresh_objects(seed=1)[0]  # another draw of the training shapes
    variants = [dict(backbone=nudged), dict(train_set=other_data), dict(budget=1), dict(seed=1),
                dict(Cs=(0.1, 1.0)), dict(folds=3)]
    for change in variants:
        args = dict(backbone=net(), train_set=train, test_set=test, budget=2, seed=0, Cs=(0.01, 1.0)) | change
        PR.linear_probe(args.pop("backbone"), args.pop("train_set"), args.pop("test_set"), cache=cache, **args)
    assert (cache.hits, cache.misses) == (0, 1 + len(variants))
    PR.linear_probe(net(), *_fresh_objects(), budget=2, seed=0, Cs=(0.01, 1.0), cache=cache)
    assert cache.hits == 1


def test_describe_dataset_sees_transforms_and_wrapped_datasets():
    from ssl3d.data import transforms as T

    a = D.ObjectDataset(2, 32, "train", classes=["mug"])
    b = D.ObjectDataset(2, 32, "train", classes=["mug"], transform=T.RandomScale(0.9, 1.1))
    assert PR.describe_dataset(a) != PR.describe_dataset(b)
    sub = torch.utils.data.Subset(a, [0])
    assert PR.describe_dataset(sub)["dataset"] == PR.describe_dataset(a)
    assert PR.describe_dataset(sub) != PR.describe_dataset(torch.utils.data.Subset(a, [1]))


def test_cache_keeps_one_measurement_per_key_when_files_repeat_it(tmp_path):
    """Notebook 05's CSV holds copies of records it reused from 04's: read together, each key counts once."""
    train, test = _fresh_objects()
    recs = PR.linear_probe(net(), train, test, budget=2, seed=0, Cs=(0.01, 1.0))
    cache = PR.RecordCache([*recs, *[dict(r, method="copy") for r in recs]])
    hit = PR.linear_probe(net(), train, test, budget=2, seed=0, Cs=(0.01, 1.0), cache=cache, method="m")
    assert len(hit) == len(recs) == 2 and [r["metric"] for r in hit] == ["accuracy", "class_accuracy"]


def test_probe_extracts_the_test_features_once_and_gives_the_same_numbers(monkeypatch):
    from ssl3d.data import transforms as T

    train, test = _fresh_objects()
    backbone = net()
    PR._FEATURES.clear()
    first = PR.linear_probe(backbone, train, test, budget=2, seed=0, Cs=(0.01, 1.0))
    calls = []
    real = PR.extract_global_features
    monkeypatch.setattr(PR, "extract_global_features", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    again = PR.linear_probe(backbone, train, test, budget=2, seed=0, Cs=(0.01, 1.0))
    other = PR.linear_probe(backbone, train, test, budget=1, seed=0, Cs=(0.01, 1.0))
    assert [r["value"] for r in again] == [r["value"] for r in first]
    assert calls == [3 * 1], "second call: nothing extracted; budget 1: only its 3 training shapes"
    PR.linear_probe(backbone, train, D.ObjectDataset(3, 64, "test", classes=["chair", "mug", "lamp"],
                                                     transform=T.RandomScale(0.9, 1.1)), budget=1, seed=0)
    PR.linear_probe(backbone, train, D.ObjectDataset(3, 64, "test", classes=["chair", "mug", "lamp"],
                                                     transform=T.RandomScale(0.9, 1.1)), budget=1, seed=0)
    assert calls.count(9) == 2, "an augmented dataset is extracted every time"
    assert other[0]["n_labeled"] == 3


def test_majority_class_baseline_is_the_one_class_predictor_scored_by_hand():
    train = D.SceneDataset(n_rooms=2, points_per_room=2000, voxel_size=0.3, features="ones")
    test = D.SceneDataset(n_rooms=1, points_per_room=2000, voxel_size=0.3, split="test", features="ones")
    recs = PR.trivial_semseg_baselines(train, test, seeds=(0, 1))
    assert [r["metric"] for r in recs] == ["miou", "accuracy"] * 2 and recs[0]["value"] == recs[2]["value"]
    counts = np.bincount(np.concatenate([train[i]["semantic"].numpy() for i in range(2)]), minlength=12)
    c = counts.argmax()
    sem = test[0]["semantic"].numpy()
    present = np.union1d(np.unique(sem), [c])  # classes in the target or the prediction
    iou = [(sem == c).mean() if k == c else 0.0 for k in present]  # predicting c everywhere: IoU_c = share of c
    assert recs[0]["class"] == train.class_names[c]
    assert recs[1]["value"] == pytest.approx(100 * (sem == c).mean())
    assert recs[0]["value"] == pytest.approx(100 * np.mean(iou), abs=1e-4)
