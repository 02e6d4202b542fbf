"""ssl3d.contrastive against naive per-pair Python loops (float64), plus sampling, invariances and errors.

The references below are written from the equations and the released code's description, one pair at a time, and
never call ssl3d.contrastive. Where a loss samples, the reference either gets inputs for which sampling is the
identity (num_pos ≥ pairs, candidates = all rows) or replays the documented draw order of the generator.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from ssl3d import contrastive as C


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


# ----------------------------------------------------------------------------------------------------------
# Naive references (per pair, float64)
# ----------------------------------------------------------------------------------------------------------
def unit(v):
    return v / torch.sqrt(sum(x * x for x in v))


def naive_info_nce(q, k, tau, normalize=True, skip=None):
    """−(1/n) Σ_i log(exp(q_i·k_i/τ) / Σ_j exp(q_i·k_j/τ)); ``skip(i, j)`` True drops negative j of query i."""
    n = len(q)
    qs = [unit(q[i]) if normalize else q[i] for i in range(n)]
    ks = [unit(k[i]) if normalize else k[i] for i in range(n)]
    total = 0.0
    for i in range(n):
        pos = torch.exp(torch.dot(qs[i], ks[i]) / tau)
        den = 0.0
        for j in range(n):
            if j != i and skip is not None and skip(i, j):
                continue
            den = den + torch.exp(torch.dot(qs[i], ks[j]) / tau)
        total = total - torch.log(pos / den)
    return total / n


def naive_hardest(f0, f1, pos_pairs, cand0, cand1, true_pairs, mp=0.1, mn=1.4, form="code", normalize=True):
    """FCGF/PointContrast hardest-contrastive, one positive at a time (returns loss, pos term, neg term)."""
    g0 = [unit(r) if normalize else r for r in f0]
    g1 = [unit(r) if normalize else r for r in f1]
    true = {(int(a), int(b)) for a, b in true_pairs}

    def dist(a, b):
        return torch.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)) + 1e-7)

    pos_terms, neg0, neg1 = [], [], []
    for i, j in pos_pairs:
        i, j = int(i), int(j)
        sq = sum((x - y) ** 2 for x, y in zip(g0[i], g1[j]))
        if form == "code":
            pos_terms.append(torch.relu(sq - mp))
        else:
            pos_terms.append(torch.relu(torch.sqrt(sq + 1e-7) - mp) ** 2)
        d, k = min((dist(g0[i], g1[c]), c) for c in cand1)  # hardest view-1 candidate of f0_i
        if (i, k) not in true:
            neg0.append(torch.relu(mn - d) ** 2)
        d, k = min((dist(g1[j], g0[c]), c) for c in cand0)  # hardest view-0 candidate of f1_j
        if (k, j) not in true:
            neg1.append(torch.relu(mn - d) ** 2)

    def mean(xs):
        return sum(xs) / len(xs) if xs else torch.zeros((), dtype=torch.float64)

    pos, neg = mean(pos_terms), (mean(neg0) + mean(neg1)) / 2
    return pos + neg, pos, neg


def scene(gen, n0=14, n1=12, c=5, multi=True):
    """Random float64 features and matches: every view-0 point up to 3 view-1 matches (or exactly one)."""
    f0 = torch.randn(n0, c, generator=gen, dtype=torch.float64)
    f1 = torch.randn(n1, c, generator=gen, dtype=torch.float64)
    rows = []
    for i in range(n0 - 2):  # the last two view-0 points are unmatched
        js = torch.randperm(n1, generator=gen)[: (int(torch.randint(1, 4, (1,), generator=gen)) if multi else 1)]
        rows += [(i, int(j)) for j in js]
    return f0, f1, torch.tensor(rows)


def replay_point_pairs(matches, num_pos, seed):
    """The documented draw order of point_info_nce: U uniforms, then randperm(U)[:num_pos] when U > num_pos."""
    g = torch.Generator().manual_seed(seed)
    groups = {}
    for i, j in sorted(matches.tolist(), key=lambda r: r[0]):  # stable: keeps the order of equal i
        groups.setdefault(i, []).append(j)
    keys = sorted(groups)
    u = torch.rand(len(keys), generator=g, dtype=torch.float32)
    pairs = [(i, groups[i][min(int(math.floor(float(u[t]) * len(groups[i]))), len(groups[i]) - 1)])
             for t, i in enumerate(keys)]
    if len(pairs) > num_pos:
        pairs = [pairs[t] for t in torch.randperm(len(pairs), generator=g)[:num_pos].tolist()]
    return pairs


# ----------------------------------------------------------------------------------------------------------
# info_nce / point_info_nce
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("block", [C.BLOCK_FLOATS, 20])  # 20 floats → blocks of 2 rows (9 rows: 5 blocks)
def test_info_nce_equals_naive_loop_with_gradients(gen, normalize, block, monkeypatch):
    monkeypatch.setattr(C, "BLOCK_FLOATS", block)
    q = (0.3 * torch.randn(9, 4, generator=gen, dtype=torch.float64)).requires_grad_(True)
    k = (0.3 * torch.randn(9, 4, generator=gen, dtype=torch.float64)).requires_grad_(True)
    ours = C.info_nce(q, k, 0.4, normalize=normalize)
    gq, gk = torch.autograd.grad(ours, (q, k))
    ref = naive_info_nce(q, k, 0.4, normalize=normalize)
    rq, rk = torch.autograd.grad(ref, (q, k))
    assert abs(ours.item() - ref.item()) < 1e-6
    torch.testing.assert_close(gq, rq, atol=1e-6, rtol=0)
    torch.testing.assert_close(gk, rk, atol=1e-6, rtol=0)


@pytest.mark.parametrize("tau", [C.TAU_LAUNCH_SCRIPT, C.TAU_CONFIG_FILE])
def test_point_info_nce_equals_naive_loop_one_match_per_point(gen, tau):
    """One match per view-0 point and num_pos ≥ pairs: no randomness, the loss is InfoNCE over all pairs."""
    f0, f1, m = scene(gen, multi=False)
    ours, stats = C.point_info_nce(f0, f1, m, num_pos=100, temperature=tau, return_stats=True)
    ref = naive_info_nce(f0[m[:, 0]], f1[m[:, 1]], tau)
    assert abs(ours.item() - ref.item()) < 1e-6
    assert stats["num_pairs"] == stats["num_unique"] == len(m) and stats["temperature"] == tau


def test_point_info_nce_equals_naive_loop_with_sampling(gen):
    """Several matches per point and num_pos < unique points: replay the documented draws."""
    f0, f1, m = scene(gen, n0=30, n1=20)
    m = m[torch.randperm(len(m), generator=gen)]  # any order of the matches works
    for seed in (0, 1, 2):
        ours = C.point_info_nce(f0, f1, m, num_pos=11, generator=torch.Generator().manual_seed(seed))
        pairs = replay_point_pairs(m, 11, seed)
        assert len(pairs) == 11
        idx0, idx1 = [p[0] for p in pairs], [p[1] for p in pairs]
        ref = naive_info_nce(f0[idx0], f1[idx1], 0.4)
        assert abs(ours.item() - ref.item()) < 1e-6, seed


def test_point_info_nce_batch_of_scenes_uses_cross_scene_negatives(gen):
    """Two scenes concatenated as collate_pairs does: one InfoNCE over the union (negatives from both scenes)."""
    a0, a1, ma = scene(gen, multi=False)
    b0, b1, mb = scene(gen, multi=False)
    f0, f1 = torch.cat([a0, b0]), torch.cat([a1, b1])
    m = torch.cat([ma, mb + torch.tensor([len(a0), len(a1)])])
    ours = C.point_info_nce(f0, f1, m, num_pos=1000)
    ref = naive_info_nce(f0[m[:, 0]], f1[m[:, 1]], 0.4)
    assert abs(ours.item() - ref.item()) < 1e-6
    per_scene = (naive_info_nce(a0[ma[:, 0]], a1[ma[:, 1]], 0.4) + naive_info_nce(b0[mb[:, 0]], b1[mb[:, 1]], 0.4)) / 2
    assert abs(ours.item() - per_scene.item()) > 1e-3  # it is not a mean of per-scene losses


def test_point_info_nce_is_invariant_to_permuting_the_pairs(gen):
    f0, f1, m = scene(gen, multi=False)
    base = C.point_info_nce(f0, f1, m, num_pos=100)
    for _ in range(3):
        perm = torch.randperm(len(m), generator=gen)
        assert abs(C.point_info_nce(f0, f1, m[perm], num_pos=100).item() - base.item()) < 1e-12
        q, k = f0[m[:, 0]], f1[m[:, 1]]
        assert abs(C.info_nce(q[perm], k[perm]).item() - C.info_nce(q, k).item()) < 1e-12
    # relabelling the points of both views (and the matches with them) changes nothing either
    p0, p1 = torch.randperm(len(f0), generator=gen), torch.randperm(len(f1), generator=gen)
    inv0, inv1 = torch.argsort(p0), torch.argsort(p1)
    m2 = torch.stack([inv0[m[:, 0]], inv1[m[:, 1]]], 1)
    assert abs(C.point_info_nce(f0[p0], f1[p1], m2, num_pos=100).item() - base.item()) < 1e-12


@pytest.mark.parametrize("normalize", [True, False])
def test_info_nce_large_matches_dense_cross_entropy(gen, normalize):
    """n = 1,500 spans several row blocks: equal to F.cross_entropy on the full logits, values and gradients —
    also for unnormalised features whose logits (up to ~10⁴) overflow exp without the max shift."""
    scale = 1.0 if normalize else 30.0
    q = (scale * torch.randn(1500, 16, generator=gen, dtype=torch.float64)).requires_grad_(True)
    k = (scale * torch.randn(1500, 16, generator=gen, dtype=torch.float64)).requires_grad_(True)
    ours, st = C.info_nce(q, k, 0.07, normalize=normalize, return_stats=True)
    g1 = torch.autograd.grad(ours, (q, k))
    qn, kn = (q / q.norm(dim=1, keepdim=True), k / k.norm(dim=1, keepdim=True)) if normalize else (q, k)
    logits = qn @ kn.t() / 0.07
    ref = F.cross_entropy(logits, torch.arange(1500))
    g2 = torch.autograd.grad(ref, (q, k))
    assert torch.isfinite(ours) and abs(ours.item() - ref.item()) < 1e-9 * max(1.0, ref.item())
    assert st["accuracy"] == (logits.argmax(1) == torch.arange(1500)).double().mean().item()
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-9)
    with torch.no_grad():  # no gradient work without grad mode
        assert abs(C.info_nce(q, k, 0.07, normalize=normalize).item() - ours.item()) < 1e-12 * max(1.0, ref.item())
    # float32 with the bounded fast path (no max shift) stays finite at the released τ values and n = 4,096
    for tau in (C.TAU_LAUNCH_SCRIPT, C.TAU_CONFIG_FILE):
        a, b = torch.randn(4096, 32, generator=gen), torch.randn(4096, 32, generator=gen)
        ref32 = F.cross_entropy(F.normalize(a, dim=1) @ F.normalize(b, dim=1).t() / tau, torch.arange(4096))
        assert abs(C.info_nce(a, b, tau).item() - ref32.item()) < 1e-4


def test_no_pair_is_its_own_negative_info_nce():
    """Orthonormal perfect embedding: the positive enters the softmax once, so L = log(1 + (n−1)·e^{−1/τ})."""
    n, tau = 6, 0.4
    e = torch.eye(n, dtype=torch.float64)
    loss, stats = C.info_nce(e, e.clone(), tau, return_stats=True)
    assert abs(loss.item() - math.log(1 + (n - 1) * math.exp(-1 / tau))) < 1e-12
    assert stats["accuracy"] == 1.0


def test_duplicate_keys_are_negatives_in_the_code_and_masked_on_request(gen, monkeypatch):
    """Two view-0 points matched to the same view-1 point: the code keeps the other copy as a negative, the paper
    (k ≠ j) does not — mask_duplicate_keys=True."""
    f0 = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    f1 = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    monkeypatch.setattr(C, "BLOCK_FLOATS", 12)  # blocks of 2 rows: the mask is sliced per block
    m = torch.tensor([[0, 0], [1, 0], [2, 1], [3, 2], [4, 3], [5, 4]])  # view-1 point 0 is the key of two pairs
    k = m[:, 1]
    code = C.point_info_nce(f0, f1, m, num_pos=10)
    paper = C.point_info_nce(f0, f1, m, num_pos=10, mask_duplicate_keys=True)
    ref_code = naive_info_nce(f0[m[:, 0]], f1[k], 0.4)
    ref_paper = naive_info_nce(f0[m[:, 0]], f1[k], 0.4, skip=lambda i, j: int(k[i]) == int(k[j]))
    assert abs(code.item() - ref_code.item()) < 1e-6 and abs(paper.item() - ref_paper.item()) < 1e-6
    assert abs(code.item() - paper.item()) > 1e-4


def test_one_match_per_point_is_uniform_and_valid(gen):
    m = torch.tensor([[3, 0], [0, 5], [3, 1], [0, 6], [3, 2], [7, 9]])  # unsorted on purpose
    true = {tuple(r) for r in m.tolist()}
    counts = {}
    g = torch.Generator().manual_seed(0)
    for _ in range(3000):
        p = C.one_match_per_point(m, g)
        assert p[:, 0].tolist() == [0, 3, 7]
        assert all(tuple(r) in true for r in p.tolist())
        counts[int(p[1, 1])] = counts.get(int(p[1, 1]), 0) + 1
    assert sorted(counts) == [0, 1, 2] and all(abs(c / 3000 - 1 / 3) < 0.04 for c in counts.values())


def test_point_info_nce_reproducible_with_generator(gen):
    f0, f1, m = scene(gen, n0=40, n1=30)

    def run(seed):
        return C.point_info_nce(f0, f1, m, num_pos=8, generator=torch.Generator().manual_seed(seed)).item()

    assert run(3) == run(3)
    assert len({run(s) for s in range(6)}) > 1


# ----------------------------------------------------------------------------------------------------------
# pixel_info_nce
# ----------------------------------------------------------------------------------------------------------
def test_pixel_info_nce_equals_naive_loop(gen):
    """Per image pair InfoNCE on its matched pixels (negatives from the same pair), summed and divided by B —
    including an image pair without matches (0, still counted), as in Janda et al.'s code."""
    b, c, h, w = 3, 4, 5, 6
    f0 = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64)
    f1 = torch.randn(b, c, h + 1, w, generator=gen, dtype=torch.float64)  # views may differ in size
    matches = []
    for _ in range(b - 1):
        n = 9
        matches.append(torch.stack([torch.randperm(h * w, generator=gen)[:n],
                                    torch.randperm((h + 1) * w, generator=gen)[:n]], 1))
    matches.append(torch.zeros(0, 2, dtype=torch.long))
    ours, stats = C.pixel_info_nce(f0, f1, matches, num_pos=100, return_stats=True)
    ref = 0.0
    for i, mb in enumerate(matches[:-1]):
        q = [f0[i, :, int(p) // w, int(p) % w] for p in mb[:, 0]]
        k = [f1[i, :, int(p) // w, int(p) % w] for p in mb[:, 1]]
        ref = ref + naive_info_nce(q, k, 0.4)
    ref = ref / b
    assert abs(ours.item() - ref.item()) < 1e-6
    assert stats["num_pairs"] == 18 and stats["num_image_pairs"] == 3
    # one pair given as (C, H, W) maps and a (P, 2) tensor
    one = C.pixel_info_nce(f0[0], f1[0], matches[0], num_pos=100)
    q = [f0[0, :, int(p) // w, int(p) % w] for p in matches[0][:, 0]]
    k = [f1[0, :, int(p) // w, int(p) % w] for p in matches[0][:, 1]]
    assert abs(one.item() - naive_info_nce(q, k, 0.4).item()) < 1e-6


def test_pixel_info_nce_subsamples_num_pos(gen):
    f0 = torch.randn(1, 3, 20, 20, generator=gen)
    m = torch.stack([torch.arange(400), torch.arange(400)], 1)
    _, stats = C.pixel_info_nce(f0, f0.clone(), [m], num_pos=50, generator=gen, return_stats=True)
    assert stats["num_pairs"] == 50


# ----------------------------------------------------------------------------------------------------------
# hardest_contrastive
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["code", "paper"])
@pytest.mark.parametrize("normalize", [True, False])
def test_hardest_contrastive_equals_naive_loop_all_candidates(gen, form, normalize):
    f0, f1, m = scene(gen)
    f0.requires_grad_(True)
    f1.requires_grad_(True)
    scale = 1.0 if normalize else 0.3
    ours, st = C.hardest_contrastive(f0 * scale, f1 * scale, m, num_pos=1000, num_hn=1000, positive=form,
                                     normalize=normalize, return_stats=True)
    g_ours = torch.autograd.grad(ours, (f0, f1))
    ref, pos, neg = naive_hardest(f0 * scale, f1 * scale, m.tolist(), range(len(f0)), range(len(f1)), m.tolist(),
                                  form=form, normalize=normalize)
    g_ref = torch.autograd.grad(ref, (f0, f1))
    assert abs(ours.item() - ref.item()) < 1e-6
    assert abs(st["pos_loss"] - pos.item()) < 1e-6 and abs(st["neg_loss"] - neg.item()) < 1e-6
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_hardest_contrastive_equals_naive_loop_with_sampling(gen):
    """Subsampled positives and candidates: replay the documented draw order (candidates 0, candidates 1,
    positives)."""
    f0, f1, m = scene(gen, n0=40, n1=35)
    for seed in (0, 1):
        ours = C.hardest_contrastive(f0, f1, m, num_pos=5, num_hn=4, batch_size=2,
                                     generator=torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed)
        cand0 = torch.randperm(len(f0), generator=g)[:8].tolist()
        cand1 = torch.randperm(len(f1), generator=g)[:8].tolist()
        pos = m[torch.randperm(len(m), generator=g)[:10]].tolist()
        ref, _, _ = naive_hardest(f0, f1, pos, cand0, cand1, m.tolist())
        assert abs(ours.item() - ref.item()) < 1e-6, seed


def test_no_pair_is_its_own_negative_hardest():
    """A perfect embedding where each point's nearest feature in the other view is its own match (or another true
    match of it): every hardest negative is a true pair and is masked (dropped, not replaced), so the loss is 0."""
    e = torch.eye(8, dtype=torch.float64)
    f0 = e[:6]
    f1 = torch.cat([e[:2], e[:6]])  # view-1 points 0 and 1 duplicate the features of 2 and 3 ...
    m = torch.tensor([[i, i + 2] for i in range(6)] + [[0, 0], [1, 1]])  # ... and are true matches too
    loss, st = C.hardest_contrastive(f0, f1, m, num_pos=100, num_hn=100, return_stats=True)
    assert loss.item() == 0.0 and st["masked0"] == st["num_pos"] == 8 and st["masked1"] == 8
    # without the second matches, (0, 0) and (1, 1) are genuine hardest negatives at distance ~0
    m2 = m[:6]
    loss2, st2 = C.hardest_contrastive(f0, f1, m2, num_pos=100, num_hn=100, return_stats=True)
    ref, _, _ = naive_hardest(f0, f1, m2.tolist(), range(6), range(8), m2.tolist())
    assert st2["masked0"] == 4 and abs(loss2.item() - ref.item()) < 1e-6
    assert st2["masked1"] == 6  # view-1 side: every hardest negative is its true match
    assert abs(loss2.item() - 0.5 * (1.4 - math.sqrt(1e-7)) ** 2) < 1e-6  # mean over the 2 kept, /2 for the views


# ----------------------------------------------------------------------------------------------------------
# Both losses: a perfect embedding beats a random one
# ----------------------------------------------------------------------------------------------------------
def test_perfect_embedding_has_lower_loss_than_random(gen):
    n, c = 64, 32
    f0 = torch.randn(n, c, generator=gen)
    m = torch.stack([torch.arange(n), torch.randperm(n, generator=gen)], 1)
    perfect = torch.empty_like(f0)
    perfect[m[:, 1]] = f0[m[:, 0]]
    rand = torch.randn(n, c, generator=gen)
    g = torch.Generator().manual_seed(0)
    assert C.point_info_nce(f0, perfect, m, generator=g) < C.point_info_nce(f0, rand, m, generator=g) - 1.0
    _, st = C.point_info_nce(f0, perfect, m, generator=g, return_stats=True)
    assert st["accuracy"] == 1.0
    hp, sp_ = C.hardest_contrastive(f0, perfect, m, generator=g, return_stats=True)
    hr, sr = C.hardest_contrastive(f0, rand, m, generator=g, return_stats=True)
    assert hp < hr and sp_["pos_loss"] == 0.0 and sr["pos_loss"] > 0.5
    img = torch.randn(1, 8, 6, 6, generator=gen)
    pm = torch.stack([torch.arange(36), torch.arange(36)], 1)
    assert C.pixel_info_nce(img, img.clone(), pm) < C.pixel_info_nce(img, torch.randn(1, 8, 6, 6, generator=gen), pm)


# ----------------------------------------------------------------------------------------------------------
# Errors name the problem and the fix
# ----------------------------------------------------------------------------------------------------------
def test_errors(gen):
    f0, f1, m = scene(gen)
    with pytest.raises(ValueError, match="empty.*overlap"):
        C.point_info_nce(f0, f1, torch.zeros(0, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(P, 2\)"):
        C.hardest_contrastive(f0, f1, m[:, :1])
    with pytest.raises(IndexError, match="collate_pairs"):
        C.point_info_nce(f0, f1, m + 100)
    with pytest.raises(ValueError, match="num_pos must be an int ≥ 1"):
        C.point_info_nce(f0, f1, m, num_pos=0)
    with pytest.raises(ValueError, match="num_hn must be an int ≥ 1"):
        C.hardest_contrastive(f0, f1, m, num_hn=0)
    with pytest.raises(ValueError, match="feature widths"):
        C.point_info_nce(f0, f1[:, :3], m)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        C.point_info_nce(f0[None], f1, m)
    with pytest.raises(TypeError, match="integer"):
        C.point_info_nce(f0, f1, m.double())
    with pytest.raises(ValueError, match="temperature must be > 0.*0.4"):
        C.point_info_nce(f0, f1, m, temperature=0)
    bad = f0.clone()
    bad[m[0, 0]] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN.*learning rate"):
        C.point_info_nce(bad, f1, m)
    with pytest.raises(FloatingPointError, match="NaN"):
        C.hardest_contrastive(bad, f1, m, num_pos=1000)
    with pytest.raises(ValueError, match="positive must be 'code'"):
        C.hardest_contrastive(f0, f1, m, positive="squared")
    with pytest.raises(ValueError, match="no image pair has a pixel match"):
        C.pixel_info_nce(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3), [torch.zeros(0, 2, dtype=torch.long)])
    with pytest.raises(ValueError, match="list of 2"):
        C.pixel_info_nce(torch.randn(2, 2, 3, 3), torch.randn(2, 2, 3, 3), [torch.zeros(1, 2, dtype=torch.long)])


def assert_repeats_on_two_threads(grads, runs: int = 6):
    """``grads()`` → (grad f0, grad f1) is bit-identical over ``runs`` calls on 2 threads (the order of a parallel
    accumulation is what varies; this module otherwise runs on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = [grads() for _ in range(runs)]
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(ga, out[0][0]) and torch.equal(gb, out[0][1]) for ga, gb in out)


def test_point_info_nce_gradients_are_bit_identical_from_run_to_run():
    """A view-1 point matched by several view-0 points is the key of several sampled pairs: the gather's backward
    must add those rows in a fixed order (index_select; advanced indexing did not on the CPU, and notebook 04's
    PointInfoNCE checkpoint differed in its last bits from run to run)."""
    torch.manual_seed(0)
    f0, f1 = torch.randn(20000, 32), torch.randn(300, 32)
    m = torch.stack([torch.arange(20000), torch.randint(0, 300, (20000,))], 1)  # ~67 view-0 points per view-1 point

    def grads():
        a, b = f0.clone().requires_grad_(), f1.clone().requires_grad_()
        C.point_info_nce(a, b, m, num_pos=4096, generator=torch.Generator().manual_seed(1)).backward()
        return a.grad, b.grad

    assert_repeats_on_two_threads(grads)


@pytest.mark.parametrize("normalize", [True, False])
def test_hardest_contrastive_gradients_are_bit_identical_from_run_to_run(normalize):
    """Hardest negatives repeat (many anchors pick the same candidate): the gathers' backward must add those rows in
    a fixed order. Advanced indexing (index_put_ with accumulate) did not on the CPU; index_select does."""
    torch.manual_seed(0)
    f0, f1 = torch.randn(3000, 32), torch.randn(3000, 32)
    m = torch.stack([torch.randint(0, 3000, (5000,)), torch.randint(0, 3000, (5000,))], 1)

    def grads():
        a, b = f0.clone().requires_grad_(), f1.clone().requires_grad_()
        loss = C.hardest_contrastive(a, b, m, num_pos=1024, num_hn=256, normalize=normalize,
                                      generator=torch.Generator().manual_seed(1))
        loss.backward()
        return a.grad, b.grad

    assert_repeats_on_two_threads(grads)
