"""The re-implemented learned baselines of Table 2 (DiffPQ, DeepPQ, GCD, RepCONC, PQVAE;
kdindex.learned_baselines): training, codes, posting-list search, their distinctive parts
(Givens rotations, Sinkhorn-balanced codes, straight-through PQ-VAE) and input checks."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from annrepro.groundtruth import knn_exact
from annrepro.metrics import recall_at
from kdindex.balance import is_balanced
from kdindex.learned_baselines import (
    GCD,
    LEARNED_BASELINES,
    PQVAE,
    DecodedQuantizer,
    LBConfig,
    RepCONC,
    build_model,
    capacity_round,
    evaluate_learned_baseline,
    fit_model,
    givens_block,
    greedy_pairs,
)

torch.set_num_threads(1)

B, W, K = 4, 16, 10


@pytest.fixture(scope="module", autouse=True)
def _imports():
    """One-off imports (torch's optimiser machinery ~3 s, POT ~2 s) outside the timed tests."""
    import ot  # noqa: F401

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _mixture(n, d=16, seed=0, clusters=12):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((clusters, d)) * 2
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, d))
    return x.astype(np.float32)


def _data(metric="l2", d=16):
    xb, xt, xq = _mixture(400, d, 1), _mixture(128, d, 2), _mixture(40, d, 3)
    labels = knn_exact(xt, xb, K, metric)[1]
    gt = knn_exact(xq, xb, K, metric)[1]
    ds = SimpleNamespace(
        name="mixture", xb=xb, xq=xq, metric=metric, nb=len(xb), d=d, gt=lambda k: gt[:, :k]
    )
    return ds, xt, labels


def _params(**kw):
    p = {"B": B, "W": W, "k": 10, "nprobe": W, "n_train": 400, "lb_epochs": 3, "lb_batch": 32}
    p.update(kw)
    return p


# Known defect, recorded: with Eq. 5's rank weight on the probability (losses.py) PQVAE's
# distillation on its decoded neighbours carries a signal on inner-product data, and its training
# diverges there (seeds 0-2: loss 0.79 -> 3.6 over 3 epochs; recall 0.30 vs 0.42 with the literal
# reading, whose target was one-hot on the first neighbour for teacher and student alike, KL ~ 0,
# i.e. no distillation at all). strict: this test fails as soon as PQVAE trains there again.
_PQVAE_IP = pytest.mark.xfail(
    strict=True, reason="PQVAE diverges on inner product under the corrected Eq. 5 (see above)"
)


@pytest.mark.parametrize(
    ("name", "metric"),
    [
        pytest.param(n, m, marks=_PQVAE_IP) if (n, m) == ("PQVAE", "ip") else (n, m)
        for n in LEARNED_BASELINES
        for m in ("l2", "ip")
    ],
)
def test_each_baseline_trains_and_searches(name, metric):
    ds, xt, labels = _data(metric)
    cfg = LBConfig(epochs=3, batch=32, seed=0)
    model = build_model(name, ds.xb, metric, B, W, cfg)
    curve = fit_model(model, ds.xb, xt, labels)
    assert len(curve) == 3
    assert curve[-1]["loss"] < curve[0]["loss"], curve
    index = model.index(ds.xb)
    assert index.codes.shape == (ds.nb, B)
    assert index.codes.min() >= 0 and index.codes.max() < W
    _, I = index.search(ds.xq, 10, W)
    assert I.shape == (len(ds.xq), 10)
    assert I.min() >= 0 and I.max() < ds.nb
    # random ids would find 10 / nb = 2.5% of the true top-10; the learned codes do far better
    assert recall_at(I, ds.gt(10), 10) > 0.2


@pytest.mark.parametrize("name", LEARNED_BASELINES)
def test_evaluate_learned_baseline_returns_table2_fields(name):
    ds, xt, labels = _data("l2")
    r = evaluate_learned_baseline(name, ds, xt, labels, seed=0, p=_params(nprobe=4))
    cells = {"recall@10", "ndcg@10", "mrr@10"}
    assert set(r) == cells | {c + ":per_query" for c in cells} | {"scanned", "train_s"}
    for c in cells:
        assert r[c + ":per_query"].shape == (len(ds.xq),)
        assert r[c + ":per_query"].mean() == pytest.approx(r[c], abs=1e-12)
    assert 0.2 < r["recall@10"] <= 1 and 0 <= r["mrr@10"] <= 1 and 0 <= r["ndcg@10"] <= 1
    assert 0 < r["scanned"] < 1  # 4 of 16 lists per codebook: a part of the base is scored
    assert r["train_s"] > 0


def test_evaluate_is_deterministic_for_a_seed():
    ds, xt, labels = _data("ip")
    a = evaluate_learned_baseline("DiffPQ", ds, xt, labels, seed=3, p=_params(lb_epochs=1))
    b = evaluate_learned_baseline("DiffPQ", ds, xt, labels, seed=3, p=_params(lb_epochs=1))
    for key in a:
        if key != "train_s":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("name", LEARNED_BASELINES)
def test_other_distillation_losses_train(name):
    ds, xt, labels = _data("ip")
    for kw in ({"loss": "distribution"}, {"loss": "lambdarank"}, {"diffpq_mode": "soft"}):
        cfg = LBConfig(epochs=1, batch=32, n_queries=64, **kw)
        model = build_model(name, ds.xb, "ip", B, W, cfg)
        curve = fit_model(model, ds.xb, xt, labels)
        assert np.isfinite(curve[0]["loss"]), (name, kw)


def test_deeppq_stages_are_progressive_residual_codes():
    ds, _, _ = _data("l2")
    model = build_model("DeepPQ", ds.xb, "l2", B, W, LBConfig())
    assert model.s.kind == "AQ" and model.s.codebooks.shape == (B, W, 16)
    x = model.s.transform(torch.from_numpy(ds.xb[:50]) / model.scale)
    recs, logits = model._progressive(x)
    assert len(recs) == B and logits[0].shape == (50, W)
    codes = model.s.assign(x)[0]  # greedy residual codes: the last stage is Q(x)
    torch.testing.assert_close(recs[-1], model.s.decode(codes), rtol=1e-5, atol=1e-5)
    err = [((x - r) ** 2).sum().item() for r in recs]
    assert all(a >= b for a, b in zip(err, err[1:]))  # each stage refines the residual


def test_diffpq_soft_forward_mixes_codewords():
    ds, _, _ = _data("l2")
    sx = build_model("DiffPQ", ds.xb, "l2", B, W, LBConfig(diffpq_mode="sx"))
    soft = build_model("DiffPQ", ds.xb, "l2", B, W, LBConfig(diffpq_mode="soft"))
    x = sx.s.transform(torch.from_numpy(ds.xb[:20]) / sx.scale)
    hard = sx.s.decode(sx.s.assign(x)[0])
    torch.testing.assert_close(sx._st(x), hard)  # straight-through: forward is the hard code
    assert not torch.allclose(soft._st(x), hard, atol=1e-3)


def test_params_are_read_from_lb_keys():
    cfg = LBConfig.from_params({"lb_epochs": "2", "lb_lr": 1, "B": 8, "lb_init": "random"}, 5)
    assert (cfg.epochs, cfg.lr, cfg.init, cfg.seed) == (2, 1.0, "random", 5)
    assert isinstance(cfg.epochs, int) and isinstance(cfg.lr, float)


# ------------------------------------------------------------------------------- GCD
def test_givens_product_is_orthogonal_and_rotates_rows():
    rng = np.random.default_rng(0)
    d = 9
    R = torch.eye(d)
    for _ in range(20):
        pairs = greedy_pairs(np.zeros((d, d)), rng, select="random")
        R = givens_block(R, pairs, torch.from_numpy(rng.uniform(-3, 3, len(pairs))).float())
    assert torch.allclose(R @ R.T, torch.eye(d), atol=1e-5)
    assert not torch.allclose(R, torch.eye(d), atol=0.1)
    # one rotation of the (0, 1) plane by theta: rows 0 and 1 mix as cos / sin
    G = givens_block(torch.eye(3), np.array([[0, 1]]), torch.tensor([0.5]))
    c, s = np.cos(0.5), np.sin(0.5)
    want = torch.tensor([[c, s, 0], [-s, c, 0], [0, 0, 1]], dtype=torch.float32)
    assert torch.allclose(G, want, atol=1e-6)


def test_greedy_pairs_are_disjoint_and_start_with_the_largest_entry():
    rng = np.random.default_rng(1)
    M = rng.standard_normal((8, 8))
    A = M - M.T
    pairs = greedy_pairs(A)
    assert pairs.shape == (4, 2)
    assert len(np.unique(pairs)) == 8
    iu, ju = np.triu_indices(8, 1)
    best = np.argmax(np.abs(A[iu, ju]))
    assert tuple(pairs[0]) == (iu[best], ju[best])


def test_givens_step_descends_a_rotation_loss():
    # L(R) = ||x R^T - y||^2 with y a rotated x: one GCD block along -A lowers L
    rng = np.random.default_rng(2)
    d = 6
    x = torch.from_numpy(rng.standard_normal((50, d))).float()
    Q = torch.from_numpy(np.linalg.qr(rng.standard_normal((d, d)))[0]).float()
    y = x @ Q.T
    R = torch.eye(d, requires_grad=True)
    loss = ((x @ R.T - y) ** 2).sum()
    loss.backward()
    A = (R.grad @ R.T - R @ R.grad.T).detach().numpy()
    pairs = greedy_pairs(A)
    theta = -0.01 * torch.from_numpy(A[pairs[:, 0], pairs[:, 1]] / np.abs(A).max()).float()
    R2 = givens_block(R.detach(), pairs, theta)
    assert ((x @ R2.T - y) ** 2).sum() < loss.detach()


def test_gcd_rotation_stays_orthogonal_and_moves():
    ds, xt, labels = _data("l2", d=14)  # 14 -> padded to 16: rotation (16, 14)
    model = build_model("GCD", ds.xb, "l2", B, W, LBConfig(epochs=2, batch=32, gcd_lr=0.05))
    assert isinstance(model, GCD)
    fit_model(model, ds.xb, xt, labels)
    R = model.R
    assert R.shape == (16, 16)
    assert torch.allclose(R @ R.T, torch.eye(16), atol=1e-4)
    assert not torch.allclose(R, torch.eye(16), atol=1e-3)
    q = model.quantizer()
    assert q.kind == "OPQ" and q.rotation.shape == (16, 14)


# --------------------------------------------------------------------------- RepCONC
def test_repconc_batch_codes_are_balanced():
    # skewed data: most points near one codeword, so nearest-codeword codes are unbalanced
    ds, _, _ = _data("l2")
    model = build_model("RepCONC", ds.xb, "l2", B, W, LBConfig())
    assert isinstance(model, RepCONC)
    rng = np.random.default_rng(4)
    x = ds.xb[:8][rng.integers(0, 8, 320)] + 0.05 * rng.standard_normal((320, 16))
    xt = model.s.transform(torch.from_numpy(x.astype(np.float32)) / model.scale)
    nearest = model.s.assign(xt)[0].numpy()
    balanced = model.balanced_codes(xt).numpy()
    assert not is_balanced(nearest, W)
    assert is_balanced(balanced, W)  # max - min list length < N / W in every codebook
    counts = np.stack([np.bincount(balanced[:, b], minlength=W) for b in range(B)])
    assert (counts == 320 // W).all()  # capacity ceil(320 / 16) = 20: every list holds 20
    assert model.sinkhorn_misses == 0


def test_capacity_round_respects_capacity_and_prefers_large_entries():
    rng = np.random.default_rng(5)
    plan = rng.random((50, 8))
    plan[:, 0] += 10  # every row prefers codeword 0
    codes = capacity_round(plan, cap=7)
    counts = np.bincount(codes, minlength=8)
    assert counts.max() <= 7 and counts.sum() == 50
    # codeword 0 keeps the 7 rows with the largest entries for it
    assert set(np.flatnonzero(codes == 0)) == set(np.argsort(-plan[:, 0])[:7])
    np.testing.assert_array_equal(capacity_round(np.eye(4), 1), np.arange(4))
    with pytest.raises(ValueError, match="capacity"):
        capacity_round(plan, cap=6)


# ----------------------------------------------------------------------------- PQ-VAE
def test_pqvae_straight_through_gradient_reaches_the_encoder():
    ds, _, _ = _data("l2")
    model = build_model("PQVAE", ds.xb, "l2", B, W, LBConfig())
    assert isinstance(model, PQVAE)
    x = torch.from_numpy(ds.xb[:64]) / model.scale
    xr, z, q = model(x)
    ((x - xr) ** 2).mean().backward()  # reconstruction only: reaches z only through the ST copy
    g = model.enc.net[2].weight.grad
    assert g is not None and g.abs().sum() > 0
    # without the straight-through copy the encoder gets nothing from the reconstruction
    model.zero_grad()
    ((x - model.dec(q)) ** 2).mean().backward()
    g = model.enc.net[2].weight.grad
    assert g is None or g.abs().sum() == 0


def test_pqvae_posting_search_ranks_by_decoded_reconstructions():
    ds, xt, labels = _data("ip")
    model = build_model("PQVAE", ds.xb, "ip", B, W, LBConfig(epochs=1, batch=32))
    fit_model(model, ds.xb, xt, labels)
    index = model.index(ds.xb)
    assert isinstance(index.quantizer, DecodedQuantizer)
    rec = index.quantizer.decode(index.codes)
    assert rec.shape == ds.xb.shape
    D, I = index.search(ds.xq, 10, W)  # all lists: exhaustive search over reconstructions
    D2, _ = knn_exact(ds.xq, rec, 10, "ip")
    np.testing.assert_allclose(D, D2, rtol=1e-4, atol=1e-4)


# -------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_value_errors():
    ds, xt, labels = _data("l2")
    p = _params()
    with pytest.raises(ValueError, match="unknown learned baseline"):
        evaluate_learned_baseline("LightRec", ds, xt, labels, 0, p)
    with pytest.raises(ValueError, match="training queries must be"):
        evaluate_learned_baseline("DiffPQ", ds, xt[:, :8], labels, 0, p)
    with pytest.raises(ValueError, match="outside the base"):
        evaluate_learned_baseline("DiffPQ", ds, xt, labels + ds.nb, 0, p)
    with pytest.raises(ValueError, match="outside the base"):
        evaluate_learned_baseline("DiffPQ", ds, xt, labels - 1000, 0, p)
    with pytest.raises(ValueError, match="labels must be"):
        evaluate_learned_baseline("DiffPQ", ds, xt, labels[:5], 0, p)
    with pytest.raises(ValueError, match="unknown learned-baseline param"):
        evaluate_learned_baseline("DiffPQ", ds, xt, labels, 0, _params(lb_epoch=2))
    with pytest.raises(ValueError, match="power of two"):
        evaluate_learned_baseline("DiffPQ", ds, xt, labels, 0, _params(W=12, nprobe=4))
    with pytest.raises(ValueError, match="lb_diffpq_mode"):
        LBConfig(diffpq_mode="gumbel")
    with pytest.raises(ValueError, match="unknown distillation loss"):
        LBConfig(loss="triplet")
