"""Training switches of the KDindex tables: the torch Sinkhorn of Algorithm 1 and the Table 5
ablation variants (no distillation loss, no balance strategy, initialization only)."""

import warnings

import numpy as np
import pytest
import torch
from kdindex.api import KDIndex
from kdindex.balance import balance_gap, balanced_assign
from kdindex.train import TrainConfig, sinkhorn_codes


def _sq_dist(M, W=16, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, 1, d)) * 1.5
    c = rng.standard_normal((1, W, d))
    return ((x - c) ** 2).sum(-1)


@pytest.mark.parametrize("M", [64, 640])
def test_sinkhorn_codes_match_pot_and_balance(M):
    d = _sq_dist(M)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = balanced_assign(d, reg=0.05, num_iter=500)
    got = sinkhorn_codes(torch.from_numpy(d), reg=0.05, num_iter=500).numpy()
    assert got.dtype == np.int64 and got.shape == (M,)
    assert (got == ref).mean() > 0.95
    # Algorithm 1 balances the lists far better than the nearest codeword
    assert balance_gap(got, 16)[0] < balance_gap(d.argmin(1), 16)[0] / 2


def test_sinkhorn_codes_falls_back_on_underflow(monkeypatch):
    import kdindex.train as train

    calls = []
    real = train.balanced_assign
    monkeypatch.setattr(train, "balanced_assign", lambda *a, **k: calls.append(1) or real(*a, **k))
    d = _sq_dist(64)
    d[:, 0] = 1e9  # normalised cost ~16 in column 0: exp(-16 / 0.01) underflows to 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = sinkhorn_codes(torch.from_numpy(d), reg=0.01, num_iter=200).numpy()
    assert calls == [1]
    assert got.shape == (64,) and got.min() >= 0 and got.max() < 16
    ok = sinkhorn_codes(torch.from_numpy(_sq_dist(64)), reg=0.05, num_iter=200)
    assert calls == [1] and ok.shape == (64,)


def _fit(cfg, kind="PQ", seed=0, return_data=False):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((300, 8)).astype(np.float32)
    xq = rng.standard_normal((60, 8)).astype(np.float32)
    d2 = ((xq[:, None] - xb[None]) ** 2).sum(-1)
    labels = np.argsort(d2, 1)[:, :10]
    index = KDIndex(kind, "l2", B=2, W=16, K=10, config=cfg, n_warm=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index.fit(xb, xq, labels=labels)
    return (index, xb, xq, labels) if return_data else index


def test_variants_change_training():
    base = dict(epochs=2, init_max_rounds=1, patience=5, progress=False, seed=0)
    full = _fit(TrainConfig(**base))
    no_distill = _fit(TrainConfig(distill_weight=0.0, **base))
    assert not np.allclose(full.quantizer.codebooks, no_distill.quantizer.codebooks)
    init_only = _fit(TrainConfig(**dict(base, epochs=0)))
    assert [c["phase"] for c in init_only.result.curve] == ["init", "diff"]
    no_bal = _fit(TrainConfig(**base).without_balance())
    # the posting lists of "w/o balance" are the nearest codewords: less balanced than Alg. 1
    assert balance_gap(no_bal.codes, 16).mean() > balance_gap(full.codes, 16).mean()


def test_bad_config():
    with pytest.raises(ValueError, match="distill_weight"):
        TrainConfig(distill_weight=-1)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=-1)


def _clustered(n, d=8, seed=0):
    """Skewed data: most vectors in one tight cluster, so nearest codes are far from balanced."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[: int(0.7 * n)] *= 0.1
    return x


@pytest.mark.parametrize("kind", ["PQ", "AQ"])
def test_balanced_codes_fill_every_list_to_n_over_w(kind):
    """Algorithm 1 / Eq. 3: every posting list of every codebook holds floor(n / W) or
    ceil(n / W) documents (the constraint sum_i q(k | d_i) = M / W, rounded to integers)."""
    from kdindex.posting import posting_list_sizes
    from kdindex.quantizers import train_quantizer
    from kdindex.student import Student
    from kdindex.train import encode

    x = _clustered(1000)
    q = train_quantizer(kind, x, B=2, W=16, seed=0, aq_beam=1, aq_refine=False)
    student = Student.from_quantizer(q, x)
    cfg = TrainConfig(progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sizes = posting_list_sizes(encode(student, x, cfg, balanced=True), 16)
    assert sizes.min() >= 1000 // 16 and sizes.max() <= -(-1000 // 16), sizes
    # the nearest codes are not balanced on this data (the test is not vacuous)
    near = posting_list_sizes(encode(student, x, cfg, balanced=False), 16)
    assert near.max() - near.min() > 1000 / 16
    # chunks of balance_chunk documents are balanced one by one: within one per chunk
    cfg3 = TrainConfig(progress=False, balance_chunk=400)  # 3 chunks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s3 = posting_list_sizes(encode(student, x, cfg3, balanced=True), 16)
    assert np.abs(s3 - 1000 / 16).max() <= 3, s3


def _val_recall_of_saved(index, xq, labels):
    """Recall of the teacher's top-K among the saved index's exhaustive top-K, on the
    validation queries of the fit."""
    val = np.asarray(index.result.val_ids)
    K = labels.shape[1]
    _, I = index.search(xq[val], K)
    return float(np.mean([len(np.intersect1d(I[i], labels[v])) for i, v in enumerate(val)]) / K)


@pytest.mark.parametrize("balance_index", [True, False])
def test_validation_recall_is_the_saved_index_recall(balance_index):
    """Early stopping and the reported validation recall measure the codes the index saves
    (balanced by default, Sec. 3.4 / Algorithm 2's output; nearest with balance_index off)."""
    cfg = TrainConfig(
        epochs=2, init_max_rounds=1, patience=5, progress=False, seed=0, val_frac=0.2,
        balance_index=balance_index,
    )  # fmt: skip
    index, _, xq, labels = _fit(cfg, kind="AQ", return_data=True)
    assert len(index.result.val_ids) == 12
    assert index.result.best_val_recall == pytest.approx(
        _val_recall_of_saved(index, xq, labels), abs=1e-12
    )


def test_val_codes_switch():
    """`val_codes="nearest"` measures nearest codes while the index saves balanced ones."""
    cfg = TrainConfig(
        epochs=1, init_max_rounds=1, patience=5, progress=False, seed=0, val_frac=0.2,
        val_codes="nearest",
    )  # fmt: skip
    index, xb, xq, labels = _fit(cfg, kind="AQ", return_data=True)
    q = index.quantizer
    from kdindex.faiss_search import flat_index

    # the search of _val_recall (faiss's flat codes index): the point here is which codes are
    # measured; another exhaustive search (student.adc_search) sums the same look-up tables in
    # another order and flips a near tie on some CPUs (AMD AVX2: 0.4917 against 0.5)
    val = np.asarray(index.result.val_ids)
    _, I = flat_index(q, q.encode(xb), "l2").search(np.ascontiguousarray(xq[val]), 10)
    want = np.mean([len(np.intersect1d(I[i], labels[v])) for i, v in enumerate(val)]) / 10
    assert index.result.best_val_recall == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="val_codes"):
        TrainConfig(val_codes="other")


@pytest.mark.parametrize("kind", ["PQ", "OPQ", "AQ"])
def test_nothing_to_learn_gives_the_faiss_student(kind):
    """Degenerate case: distillation weight 0 and balancing off (and no reconstruction weight,
    so that no loss moves a codeword) leave KDindex equal to its faiss student: the same
    codebooks, the same codes of the base, the same search results and recall."""
    from annrepro.metrics import recall_at
    from kdindex.posting import PostingListIndex
    from kdindex.quantizers import train_quantizer

    rng = np.random.default_rng(1)
    xb = rng.standard_normal((400, 8)).astype(np.float32)
    xq = rng.standard_normal((60, 8)).astype(np.float32)
    labels = np.argsort(((xq[:, None] - xb[None]) ** 2).sum(-1), 1)[:, :10]
    warm = dict(opq_niter=3, aq_beam=3, aq_refine=False)
    cfg = TrainConfig(
        epochs=2, init_max_rounds=2, patience=5, progress=False, seed=0, distill_weight=0.0,
        rec_weight=0.0,
    ).without_balance()  # fmt: skip
    index = KDIndex(kind, "l2", B=2, W=16, K=10, config=cfg, n_warm=len(xb), **warm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index.fit(xb, xq, labels=labels)
    # the faiss student on the same documents (n_warm >= nb: the whole base, in order)
    student = train_quantizer(kind, xb, B=2, W=16, seed=0, **warm)
    np.testing.assert_array_equal(index.quantizer.codebooks, student.codebooks)
    np.testing.assert_array_equal(index.codes, student.encode(xb))
    ref = PostingListIndex(student, "l2", xb=xb)
    gt = np.argsort(((xq[:, None] - xb[None]) ** 2).sum(-1), 1)[:, :10]
    for nprobe in (4, 16):
        _, I_kd = index.search(xq, 10, nprobe=nprobe)
        _, I_ref = ref.search(xq, 10, nprobe)
        np.testing.assert_array_equal(I_kd, I_ref)
        assert recall_at(I_kd, gt, 10) == recall_at(I_ref, gt, 10)
