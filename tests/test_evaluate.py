"""ssl3d.evaluate against scikit-learn's metrics, hand-computed ShapeNetPart cases and known-answer probes."""

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import jaccard_score

from ssl3d.evaluate import (
    confusion_matrix,
    extract_global_features,
    iou_from_confusion,
    linear_head,
    linear_svm_probe,
    masked_part_argmax,
    mean_std,
    part_miou,
    select_svm_C,
)
from ssl3d.models.point import PointNet


def test_confusion_matrix_matches_sklearn_with_ignore(gen):
    k = 6
    target = torch.randint(k, (4, 500), generator=gen)
    pred = torch.randint(k, (4, 500), generator=gen)
    target[torch.rand(4, 500, generator=gen) < 0.2] = -100
    pred[0, :7] = 3  # predictions on ignored points must not matter
    cm = confusion_matrix(pred, target, k)
    keep = target != -100
    ref = sk_confusion(target[keep].numpy(), pred[keep].numpy(), labels=list(range(k)))
    np.testing.assert_array_equal(cm.numpy(), ref)
    assert cm.sum() == keep.sum()
    # a custom ignore label, and accumulation across batches by addition
    t2 = torch.where(target == -100, torch.full_like(target, 255), target)
    np.testing.assert_array_equal(confusion_matrix(pred, t2, k, ignore_index=255).numpy(), ref)
    halves = confusion_matrix(pred[:2], target[:2], k) + confusion_matrix(pred[2:], target[2:], k)
    assert torch.equal(halves, cm)


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 5]), 3)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([0, -1]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(4, dtype=torch.long), torch.zeros(5, dtype=torch.long), 3)
    with pytest.raises(TypeError, match="argmax"):
        confusion_matrix(torch.rand(4, 3), torch.zeros(4, 3, dtype=torch.long), 3)


def test_iou_matches_sklearn_jaccard(gen):
    k = 7
    target = torch.randint(k - 1, (2000,), generator=gen)  # class 6 never appears in the target …
    pred = torch.randint(k - 2, (2000,), generator=gen)  # … nor in the prediction; class 5 only in the target
    iou, miou = iou_from_confusion(confusion_matrix(pred, target, k))
    ref = jaccard_score(target.numpy(), pred.numpy(), labels=list(range(k)), average=None, zero_division=0)
    absent = ~np.isin(np.arange(k), np.union1d(target.numpy(), pred.numpy()))  # in neither → NaN, not 0
    ref[absent] = np.nan
    np.testing.assert_allclose(iou.numpy(), ref, rtol=1e-12)
    assert math.isnan(iou[6]) and iou[5] == 0
    assert miou == pytest.approx(np.nanmean(ref), rel=1e-12)  # absent class excluded, class with IoU 0 counted
    _, nothing = iou_from_confusion(torch.zeros(3, 3, dtype=torch.long))
    assert math.isnan(nothing)


def test_iou_by_hand():
    # target 0 0 1 1 2 ; pred 0 1 1 1 0  → class 0: TP 1, FP 1, FN 1 → 1/3; class 1: 2/3; class 2: 0/1
    cm = confusion_matrix(torch.tensor([0, 1, 1, 1, 0]), torch.tensor([0, 0, 1, 1, 2]), 3)
    iou, miou = iou_from_confusion(cm)
    np.testing.assert_allclose(iou.numpy(), [1 / 3, 2 / 3, 0.0])
    assert miou == pytest.approx(1 / 3)


PARTS = {"A": [0, 1], "B": [2, 3, 4]}


def test_part_miou_by_hand():
    target = [[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 4, 4]]
    pred = [[0, 1, 1, 1], [2, 2, 3, 0], [4, 4, 4, 4]]
    # shape 0 (A): part 0 ∩ 1, ∪ 2 → ½; part 1 ∩ 2, ∪ 3 → ⅔;                      IoU 7/12
    # shape 1 (B): part 2 → 1; part 3 ∩ 1, ∪ 2 → ½; part 4 absent from both → 1;  IoU 5/6
    #              (the stray prediction 0 belongs to category A: it only costs part 3 a point)
    # shape 2 (B): parts 2 and 3 absent from both → 1; part 4 → 1;                IoU 1
    r = part_miou(torch.tensor(pred), torch.tensor(target), PARTS)
    np.testing.assert_allclose(r.shape_iou, [7 / 12, 5 / 6, 1.0])
    assert r.instance_miou == pytest.approx((7 / 12 + 5 / 6 + 1) / 3)
    assert r.per_category == pytest.approx({"A": 7 / 12, "B": (5 / 6 + 1) / 2})
    assert r.class_miou == pytest.approx((7 / 12 + 11 / 12) / 2)
    # list input of different lengths, explicit categories, ignored points
    r2 = part_miou([np.array(p) for p in pred] + [np.array([0, 9])], [np.array(t) for t in target] +
                   [np.array([0, -100])], list(PARTS.values()), categories=[0, 1, 1, 0])
    np.testing.assert_allclose(r2.shape_iou, [7 / 12, 5 / 6, 1.0, 1.0])


def test_part_miou_errors():
    with pytest.raises(ValueError, match="several categories"):
        part_miou([[0, 2]], [[0, 2]], PARTS)
    with pytest.raises(ValueError, match="in no category"):
        part_miou([[0, 7]], [[0, 7]], PARTS)
    with pytest.raises(ValueError, match="two categories"):
        part_miou([[0]], [[0]], {"A": [0, 1], "B": [1, 2]})


def test_masked_part_argmax():
    logits = torch.tensor([[[0.0, 1.0, 9.0, 0.0, 0.0]], [[9.0, 0.0, 0.0, 2.0, 1.0]]])  # (2 shapes, 1 point, 5)
    pred = masked_part_argmax(logits, torch.tensor([0, 1]), PARTS)
    assert pred.tolist() == [[1], [3]]  # the global argmax (2, 0) belongs to the other category


def test_linear_probe_separable_and_random(gen):
    rng = np.random.default_rng(0)
    k, d = 5, 32
    centres = rng.normal(size=(k, d)) * 4
    ytr, yte = rng.integers(k, size=400), rng.integers(k, size=200)
    xtr, xte = centres[ytr] + rng.normal(size=(400, d)), centres[yte] + rng.normal(size=(200, d))
    res = linear_svm_probe(torch.from_numpy(xtr).float(), torch.from_numpy(ytr), xte, yte, C=0.01, seed=0)
    assert res.accuracy >= 0.99
    assert res.classes.tolist() == list(range(k))
    manual = [np.mean(res.predictions[yte == c] == c) for c in range(k)]
    np.testing.assert_allclose(res.class_accuracy, manual)
    assert res.mean_class_accuracy == pytest.approx(np.mean(manual))
    # random labels on random features: nothing to learn, test accuracy ≈ chance (1/k = 0.2)
    noise = linear_svm_probe(rng.normal(size=(400, d)), ytr, rng.normal(size=(1000, d)), rng.integers(k, size=1000))
    assert abs(noise.accuracy - 1 / k) < 0.06


def test_linear_probe_absent_test_class_and_errors():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 4))
    y = np.repeat([0, 1, 2], 20)
    x[:, 0] += 5 * y
    res = linear_svm_probe(x, y, x[y < 2], y[y < 2])
    assert math.isnan(res.class_accuracy[2]) and not math.isnan(res.mean_class_accuracy)
    with pytest.raises(ValueError, match="single class"):
        linear_svm_probe(x, np.zeros(60), x, y)
    with pytest.raises(ValueError, match="same D"):
        linear_svm_probe(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="NaN"):
        linear_svm_probe(np.full_like(x, np.nan), y, x, y)


def test_extract_global_features_all_input_kinds(gen):
    torch.manual_seed(0)
    net = PointNet(width=0.125).train()
    pts = torch.randn(10, 32, 3, generator=gen)
    labels = torch.arange(10)
    with torch.no_grad():
        ref = net.eval()(pts)["global_feats"]
    net.train()
    feats, none = extract_global_features(net, pts, batch_size=3)
    assert none is None and net.training  # mode restored
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=1e-5)  # eval-mode BatchNorm: batch size irrelevant
    feats2, lab2 = extract_global_features(net, (pts.numpy(), labels), batch_size=4)
    torch.testing.assert_close(feats2, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(lab2, labels)
    items = [{"points": p.numpy(), "label": int(y)} for p, y in zip(pts, labels)]

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return items[i]

    feats3, lab3 = extract_global_features(net, Items(), batch_size=4)  # a Dataset: collate_for(net)
    torch.testing.assert_close(feats3, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(lab3, labels)
    dicts = [{"points": pts[s:s + 5], "label": labels[s:s + 5]} for s in (0, 5)]
    feats4, lab4 = extract_global_features(net, dicts)
    torch.testing.assert_close(feats4, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(lab4, labels) and not feats4.requires_grad
    with pytest.raises(TypeError, match="encode"):
        extract_global_features(torch.nn.Linear(3, 3), pts)


def test_extract_global_features_probes_a_sparse_backbone(gen):
    """A sparse U-Net is probed through the same call: its global feature is max ‖ mean of its voxel features."""
    from ssl3d.models import build_model

    torch.manual_seed(0)
    net = build_model("res16unet14tiny", in_channels=0, out_channels=8).eval()
    pts = torch.rand(4, 200, 3, generator=gen) * 2 - 1
    feats, lab = extract_global_features(net, (pts, torch.arange(4)), batch_size=4, voxel_size=0.2)
    assert feats.shape == (4, 16) and torch.equal(lab, torch.arange(4))
    from ssl3d import sparse as sp

    for b in range(4):  # one shape at a time, by hand
        v = sp.sparse_quantize(pts[b], 0.2)
        x, _ = sp.batch_sparse([v])
        with torch.no_grad():
            f = net(x).feats
        torch.testing.assert_close(feats[b], torch.cat([f.max(0).values, f.mean(0)]), atol=1e-5, rtol=1e-4)


def test_select_svm_C_uses_only_the_training_split():
    """C is the argmax of validation accuracy on a stratified split of the training features — checked against an
    explicit loop with scikit-learn — and does not depend on the test split at all."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    x = rng.normal(size=(120, 40)) + 0.6 * np.eye(4)[y] @ rng.normal(size=(4, 40))
    Cs = (1e-4, 1e-2, 1.0, 100.0)
    best, scores = select_svm_C(x, y, Cs, val_fraction=0.25, seed=3, folds=1)
    fit, val = train_test_split(np.arange(120), test_size=0.25, random_state=3, stratify=y)
    assert np.bincount(y[val]).tolist() == [8, 7, 7, 8] or len(set(np.bincount(y[val]))) <= 2  # stratified
    ref = {}
    for C in Cs:
        sc = StandardScaler().fit(x[fit])
        svm = LinearSVC(C=C, random_state=3, max_iter=10_000).fit(sc.transform(x[fit]), y[fit])
        ref[C] = float(np.mean(svm.predict(sc.transform(x[val])) == y[val]))
    assert scores == pytest.approx(ref)
    assert best == min(C for C in Cs if ref[C] == max(ref.values()))
    assert select_svm_C(x, y, Cs, 0.25, seed=3, folds=1)[0] == best  # deterministic per seed
    with pytest.raises(ValueError, match="val_fraction"):
        select_svm_C(x, y, Cs, 1.5)


def test_select_svm_C_gives_the_same_scores_on_any_number_of_threads():
    """The (C, fold) fits run on threads; the scores equal the one-thread loop's exactly, also for C ≥ 1, whose dual
    solver shuffles with liblinear's process-wide generator, which every fit reseeds (stopped early here, so its
    result depends on that shuffle: a dual fit beside a primal one on another thread changes it in about one run of
    forty)."""
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(4), 30)
    x = rng.normal(size=(120, 40)) + 0.4 * np.eye(4)[y] @ rng.normal(size=(4, 40))
    Cs = (1e-3, 0.1, 1.0, 10.0, 100.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dual solver stops at max_iter on purpose
        one = select_svm_C(x, y, Cs, seed=5, folds=5, max_iter=3, n_jobs=1)
        for _ in range(100):
            assert select_svm_C(x, y, Cs, seed=5, folds=5, max_iter=3, n_jobs=4) == one
    assert len(one[1]) == len(Cs)


def test_select_svm_C_by_cross_validation_is_the_mean_over_stratified_folds():
    """folds=k: each C scores the mean validation accuracy over k stratified folds of the training split — checked
    against an explicit scikit-learn loop; a class with fewer shapes than folds is refused with the fix named."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 20)
    x = rng.normal(size=(60, 30)) + 0.5 * np.eye(3)[y] @ rng.normal(size=(3, 30))
    Cs = (1e-3, 0.1, 10.0)
    best, scores = select_svm_C(x, y, Cs, seed=2, folds=4)
    ref = {}
    for C in Cs:
        accs = []
        for fit, val in StratifiedKFold(4, shuffle=True, random_state=2).split(x, y):
            assert len(set(np.bincount(y[val]))) == 1  # stratified: 5 of each class
            sc = StandardScaler().fit(x[fit])
            svm = LinearSVC(C=C, random_state=2, max_iter=10_000).fit(sc.transform(x[fit]), y[fit])
            accs.append(np.mean(svm.predict(sc.transform(x[val])) == y[val]))
        ref[C] = float(np.mean(accs))
    assert scores == pytest.approx(ref, abs=1e-9)
    assert best == min(C for C in Cs if ref[C] == max(ref.values()))
    with pytest.raises(ValueError, match="folds=1"):
        select_svm_C(x[:9], np.array([0] * 6 + [1] * 3), Cs, folds=5)


def test_mean_std():
    m, s, text = mean_std([90.1, 91.3, 90.7])
    assert m == pytest.approx(90.7)
    assert s == pytest.approx(np.std([90.1, 91.3, 90.7], ddof=1))
    assert text == "90.70 ± 0.60"
    m1, s1, t1 = mean_std(torch.tensor([88.0]))
    assert m1 == 88.0 and math.isnan(s1) and t1 == "88.00 (n=1)"
    with pytest.raises(ValueError, match="non-finite"):
        mean_std([1.0, float("nan")])
    with pytest.raises(ValueError, match="no values"):
        mean_std([])


def test_svm_in_the_span_of_the_training_rows_equals_the_plain_linear_svc():
    """Fewer shapes than features: the probe solves the SVM in the span of the training rows (intercept feature
    included). Same predictions and the same weights (mapped back) as scikit-learn's LinearSVC on the raw features."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from ssl3d.evaluate import _span_coordinates

    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(3), 15)
    x = rng.normal(size=(45, 200)) + np.eye(3)[y] @ rng.normal(size=(3, 200))
    xt = rng.normal(size=(30, 200)) + np.eye(3)[np.repeat(np.arange(3), 10)] @ rng.normal(size=(3, 200))
    sc = StandardScaler().fit(x)
    ztr, zte = _span_coordinates(sc.transform(x), sc.transform(xt))
    assert ztr.shape == (45, 45) and zte.shape == (30, 45)
    for C in (0.01, 1.0):
        ref = LinearSVC(C=C, max_iter=100_000, tol=1e-8, random_state=0).fit(sc.transform(x), y)
        ours = LinearSVC(C=C, fit_intercept=False, max_iter=100_000, tol=1e-8, random_state=0).fit(ztr, y)
        np.testing.assert_allclose(ours.decision_function(zte), ref.decision_function(sc.transform(xt)), atol=2e-3)
        res = linear_svm_probe(x, y, xt, np.repeat(np.arange(3), 10), C=C)
        assert (res.predictions == ref.predict(sc.transform(xt))).all()


@pytest.mark.parametrize("loss", ["logistic", "svm"])
@pytest.mark.parametrize("seen", [[0, 1, 3, 4], [1, 3]])
def test_linear_head_is_the_scikit_learn_classifier_as_a_layer(loss, seen):
    """The layer over raw features scores exactly what StandardScaler + the classifier scores (independent sklearn
    pipeline); a class without training examples is never predicted; two classes give (−d, d)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (5, 6)) * rng.uniform(0.1, 10, 6)           # features of very different scales
    ytr = np.repeat(seen, 20)
    xtr = centres[ytr] + rng.normal(0, 2, (len(ytr), 6)) + 50             # offset: the bias must absorb μ
    xte = centres[rng.integers(0, 5, 200)] + rng.normal(0, 2, (200, 6)) + 50
    clf = LogisticRegression(C=0.5, max_iter=10_000) if loss == "logistic" else LinearSVC(C=0.5, random_state=0,
                                                                                         max_iter=10_000)
    ref = make_pipeline(StandardScaler(), clf).fit(xtr, ytr)
    layer = linear_head(xtr, ytr, 5, loss, C=0.5)
    with torch.no_grad():
        out = layer(torch.from_numpy(xte).float()).double().numpy()      # (200, 5)
    assert np.array_equal(out.argmax(1), ref.predict(xte))
    d = ref.decision_function(xte)
    scores = np.stack([-d, d], 1) if d.ndim == 1 else d
    np.testing.assert_allclose(out[:, seen], scores, rtol=1e-4, atol=1e-3)
    assert (out[:, [c for c in range(5) if c not in seen]] < -1e29).all()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        linear_head(xtr, ytr, 3, loss)
    with pytest.raises(ValueError, match="loss must be"):
        linear_head(xtr, ytr, 5, "hinge")
