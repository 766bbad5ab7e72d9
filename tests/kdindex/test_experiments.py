"""kdindex.experiments: the faiss baselines' rows and their sharing within a run, the teacher's
labels, the KDindex training variants and runs, the metric columns the spec prints."""

import warnings

import numpy as np
import pytest
from annrepro.groundtruth import knn_exact
from annrepro.tables import find_specs
from annrepro.testing import FakeContext
from kdindex import experiments
from kdindex.train import TrainConfig


class _Data:
    """A minimal stand-in for annrepro's Dataset (the base doubles as training queries)."""

    def __init__(self, metric="l2", nb=400, nq=20, d=8, seed=0):
        rng = np.random.default_rng(seed)
        self.name, self.metric = f"fake-{metric}-{nb}-{d}", metric
        self.xb = rng.standard_normal((nb, d)).astype(np.float32)
        self.xq = rng.standard_normal((nq, d)).astype(np.float32)
        self.xt = self.xb
        self.nb, self.nq, self.nt, self.d, self.has_learn = nb, nq, nb, d, False

    def gt(self, k):
        return knn_exact(self.xq, self.xb, k, self.metric)[1]


PARAMS = {
    "B": 2,
    "W": 16,
    "k": 10,
    "n_seeds": 2,
    "nprobe": 4,
    "n_train": 300,
    "opq_niter": 2,
    "aq_beam": 1,
    "aq_refine": False,
}

KD_PARAMS = dict(
    PARAMS,
    K=10,
    M=16,
    efConstruction=40,
    efSearch=64,
    n_train_queries=60,
    epochs=1,
    patience=1,
    init_max_rounds=1,
)


def _ctx(params, table=None):
    """The producers' real Context (seeds, param, memo, note, ...) with its own memo; over the
    spec of `table` when given (its published cells name the metric columns)."""
    return FakeContext(find_specs(table)[0] if table else None, **params)


@pytest.fixture(autouse=True)
def _quiet_sinkhorn():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SinkhornWarning on tiny, unbalanced problems
        yield


def test_metric_columns_are_the_ones_the_paper_prints():
    ctx = _ctx(PARAMS, "kdindex.table2")
    assert experiments.metric_columns(ctx, "SIFT1M") == ["recall@10", "ndcg@10"]
    assert experiments.metric_columns(ctx, "MSMARCO-Passage") == ["recall@10", "mrr@10"]
    assert experiments.metric_columns(_ctx(PARAMS, "kdindex.table5"), "MSMARCO-Doc") == [
        "recall@10",
        "mrr@10",
    ]
    with pytest.raises(ValueError, match="no metric column for 'Deep1B'"):
        experiments.metric_columns(ctx, "Deep1B")


def test_baseline_rows_mean_std_and_shared_runs(monkeypatch):
    calls = []
    evaluate = experiments.evaluate_baseline
    monkeypatch.setattr(
        experiments,
        "evaluate_baseline",
        lambda *a: calls.append(a[:3]) or evaluate(*a),
    )
    ctx = _ctx(PARAMS, "kdindex.table2")
    ds = _Data("ip")
    rows = experiments.baseline_rows(ctx, "MSMARCO-Doc", ds, kinds=("PQ",))
    assert [r["row"] for r in rows] == ["PQ"]
    r = rows[0]
    cells = {"recall@10", "mrr@10"}
    assert set(r) == {"dataset", "row"} | {
        f"{c}{s}" for c in cells for s in ("", ":std", ":per_query")
    }
    assert 0 < r["recall@10"] <= 1 and r["recall@10:std"] >= 0
    # per-query values for the report's bootstrap interval (over seeds and queries): one row per
    # seed, one value per test query, in the unit of the cell (a fraction), their mean the cell
    for c in cells:
        pq = np.asarray(r[f"{c}:per_query"])
        assert pq.shape == (2, ds.nq) and pq.min() >= 0 and pq.max() <= 1
        assert pq.mean() == pytest.approx(r[c], abs=1e-12)
    assert calls == [("PQ", ds, 0), ("PQ", ds, 1)]  # one run per seed
    # MS MARCO Passage on the same stand-in: the same runs, from the run's memo
    again = experiments.baseline_rows(ctx, "MSMARCO-Passage", ds, kinds=("PQ",))
    assert again[0]["recall@10"] == r["recall@10"] and len(calls) == 2


def test_per_query_scores_are_the_metrics_per_query():
    """Per-query recall / NDCG / MRR whose means are annrepro.metrics' values, with padding (-1)
    and repeated ids (counted once) as the metrics treat them."""
    from annrepro.metrics import mrr_at, ndcg_at, recall_at
    from kdindex.posting import per_query_scores

    rng = np.random.default_rng(0)
    gt = np.stack([rng.permutation(50)[:10] for _ in range(40)])
    I = rng.integers(-1, 50, size=(40, 12))
    I[0, :3] = gt[0, 0]  # one true neighbour repeated
    I[1] = -1
    I[2, :10] = gt[2]  # perfect
    pq = per_query_scores(I, gt, 10)
    assert set(pq) == {"recall@10", "ndcg@10", "mrr@10"}
    for name, fn in (("recall@10", recall_at), ("ndcg@10", ndcg_at), ("mrr@10", mrr_at)):
        assert pq[name].shape == (40,)
        assert pq[name].mean() == pytest.approx(fn(I, gt, 10), abs=1e-12), name
        assert pq[name][1] == 0 and pq[name][2] == pytest.approx(1.0)
    assert pq["recall@10"][0] == pytest.approx(recall_at(I[:1], gt[:1], 10))


def test_evaluate_baseline_fractions():
    res = experiments.evaluate_baseline("OPQ", _Data("l2"), seed=3, p=PARAMS)
    for key in ("recall@10", "ndcg@10", "mrr@10", "scanned"):
        assert 0 <= res[key] <= 1


def test_teacher_params_per_dataset():
    p = {"M": 32, "efConstruction": {"GIST1M": 40}, "efSearch": {"GIST1M": 512}}
    assert experiments.teacher_params(p, "GIST1M") == (32, 40, 512)
    with pytest.raises(KeyError):
        experiments.teacher_params(p, "SIFT1M")


def test_teacher_labels_shape_cap_and_cache():
    ds = _Data("l2", nb=300)
    ctx = _ctx(KD_PARAMS)
    xt, labels = experiments.teacher_labels(ctx, "SIFT1M", ds)
    assert xt.dtype == np.float32 and xt.shape == (60, ds.d)
    assert labels.dtype == np.int64 and labels.shape == (60, 10)
    # the teacher's top-10 of a training query that is a base vector starts with itself
    assert (labels[:, 0] == np.arange(60)).mean() > 0.9
    again = experiments.teacher_labels(ctx, "SIFT1M", ds)
    assert again[1] is labels  # cached
    # a list of K (Table 4) asks the teacher for the largest
    _, l100 = experiments.teacher_labels(_ctx(dict(KD_PARAMS, K=[5, 20])), "SIFT1M", ds)
    assert l100.shape == (60, 20)


def test_teacher_labels_bad_input():
    ds = _Data("l2", nb=300)
    with pytest.raises(ValueError, match="efSearch"):
        experiments.teacher_labels(_ctx(dict(KD_PARAMS, K=100)), "SIFT1M", ds)
    with pytest.raises(ValueError, match="no training query"):
        experiments.teacher_labels(_ctx(dict(KD_PARAMS, n_train_queries=0)), "SIFT1M", ds)


def test_train_config_variants():
    p = dict(KD_PARAMS, lr=0.05, batch_size=32)
    full = experiments.train_config(p, seed=3)
    assert (full.lr, full.batch_size, full.epochs, full.seed) == (0.05, 32, 1, 3)
    assert experiments.train_config(p, 0, "initialization").epochs == 0
    assert experiments.train_config(p, 0, "no_distillation").distill_weight == 0
    nb = experiments.train_config(p, 0, "no_balance")
    assert not (nb.init_balance or nb.batch_balance or nb.balance_index)
    assert experiments.train_config(p, 0, loss="lambdarank").loss == "lambdarank"
    with pytest.raises(ValueError, match="variant"):
        experiments.train_config(p, 0, "bogus")
    with pytest.raises(ValueError, match="Sinkhorn"):
        TrainConfig(sinkhorn_method="exact")


def test_evaluate_kdindex_beats_scrambled_codes():
    """The trained index's codes must carry the neighbourhoods: the same index with its codes
    permuted across documents (a degenerate index of the same size) must score far lower."""
    from annrepro.metrics import recall_at
    from kdindex.api import KDIndex

    ds = _Data("l2", nb=400, d=8)
    ctx = _ctx(KD_PARAMS)
    xt, labels = experiments.teacher_labels(ctx, "SIFT1M", ds)
    r = experiments.evaluate_kdindex("PQ", ds, xt, labels, 0, KD_PARAMS)
    assert 0 < r["recall@10"] <= 1 and r["memory_bytes"] > 0 and r["train_s"] > 0
    index = KDIndex("PQ", "l2", B=2, W=16, K=10, config=experiments.train_config(KD_PARAMS, 0))
    index.fit(ds.xb, xt, labels=labels)
    good = recall_at(index.search(ds.xq, 10)[1], ds.gt(10), 10)
    index.codes = index.codes[np.random.default_rng(0).permutation(ds.nb)]
    index.norms2 = None
    bad = recall_at(index.search(ds.xq, 10)[1], ds.gt(10), 10)
    assert good > 2 * bad
