"""KDindex table specs, published numbers and producers (fast smoke tests)."""

import annrepro.cli
import numpy as np
import pytest
from annrepro.groundtruth import knn_exact
from annrepro.tables import find_specs, producers
from annrepro.tables.compare import claim_verdict
from annrepro.testing import FakeContext
from kdindex import tables
from kdindex.cli import main

TABLES = ["kdindex.figure3", "kdindex.figure4"] + [f"kdindex.table{n}" for n in range(2, 9)]
PRODUCED = TABLES


def test_every_table_has_a_spec_and_a_producer():
    specs = {s.id: s for s in find_specs("kdindex.*")}
    assert sorted(specs) == TABLES
    registered = producers("kdindex")
    assert sorted(t for t in registered if t.startswith("kdindex.")) == PRODUCED
    for s in specs.values():
        assert set(s.scales) == {"tiny", "small", "full"}


def _paper_verdicts(table):
    spec = find_specs(table)[0]
    paper = {k: c.published for k, c in spec.published().items() if c.published is not None}
    out = {}
    for cl in spec.claims:
        out[cl.id] = claim_verdict(cl, paper, spec.columns[cl.column].higher_is_better)[0]
    return out


def test_published_claims():
    # Table 2: KDindex (X) beats X, and KDindex (AQ) beats every baseline, on every cell
    assert set(_paper_verdicts("kdindex.table2").values()) == {"holds"}
    assert set(_paper_verdicts("kdindex.table4").values()) == {"holds"}
    assert set(_paper_verdicts("kdindex.table8").values()) == {"holds"}
    # Table 3: 10x smaller everywhere but on SIFT1M (printed 7x)
    t3 = _paper_verdicts("kdindex.table3")
    assert [k for k, v in t3.items() if v == "fails"] == ["kdindex-10x-lighter-sift"]
    # Table 5: one ablation step does not help (AQ, MRR@10: 38.52 -> 36.52)
    t5 = _paper_verdicts("kdindex.table5")
    assert [k for k, v in t5.items() if v == "fails"] == ["aq-init-helps-mrr"]


def test_published_transcription_spot_checks():
    pub = find_specs("kdindex.table2")[0].published()
    c = pub[("GIST1M", "KDindex (AQ)", "ndcg@10")]
    assert (c.published_text, c.std) == ("63.17", 0.62)
    c = pub[("MSMARCO-Passage", "PQ", "recall@10")]
    assert (c.published_text, c.std) == ("1.80", 0.08)
    t6 = find_specs("kdindex.table6")[0].published()
    assert t6[("MSMARCO-Passage", "statistics", "nb")].published == 8841823
    t7 = find_specs("kdindex.table7")[0].published()
    assert t7[("GIST1M", "HNSW", "build_s")].published == 145.4  # printed "2m25.4s"


class _Data:
    """A minimal stand-in for annrepro's Dataset."""

    def __init__(self, metric="l2", nb=400, nq=20, d=8, seed=0):
        rng = np.random.default_rng(seed)
        self.name, self.metric = f"fake-{metric}", metric
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


def _ctx(params):
    return FakeContext(None, **params)  # the producers' real Context (seeds, param, note, ...)


def test_baseline_rows_mean_std_and_cache():
    tables._BASELINE_CACHE.clear()
    ctx = _ctx(PARAMS)
    ds = _Data("ip")
    rows = tables.baseline_rows(ctx, "MSMARCO-Doc", ds, kinds=("PQ",))
    assert [r["row"] for r in rows] == ["PQ"]
    r = rows[0]
    cells = {"recall@10", "mrr@10"}
    assert set(r) == {"dataset", "row"} | {
        f"{c}{s}" for c in cells for s in ("", ":std", ":per_query")
    }
    assert 0 < r["recall@10"] <= 1 and r["recall@10:std"] >= 0
    # per-query values for the report's bootstrap interval: one per test query, averaged over the
    # seeds, in the unit of the cell (a fraction), their mean the cell
    for c in cells:
        pq = np.asarray(r[f"{c}:per_query"])
        assert pq.shape == (ds.nq,) and pq.min() >= 0 and pq.max() <= 1
        assert pq.mean() == pytest.approx(r[c], abs=1e-12)
    assert len(tables._BASELINE_CACHE) == 2  # one entry per seed
    again = tables.baseline_rows(ctx, "MSMARCO-Passage", ds, kinds=("PQ",))
    assert again[0]["recall@10"] == r["recall@10"] and len(tables._BASELINE_CACHE) == 2
    tables._BASELINE_CACHE.clear()


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
    res = tables.evaluate_baseline("OPQ", _Data("l2"), seed=3, p=PARAMS)
    for key in ("recall@10", "ndcg@10", "mrr@10", "scanned"):
        assert 0 <= res[key] <= 1


def test_teacher_params_per_dataset():
    p = {"M": 32, "efConstruction": {"GIST1M": 40}, "efSearch": {"GIST1M": 512}}
    assert tables._teacher_params(p, "GIST1M") == (32, 40, 512)
    with pytest.raises(KeyError):
        tables._teacher_params(p, "SIFT1M")


def test_cli_forwards_to_annrepro(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(annrepro.cli, "main", lambda argv: seen.append(argv) or 0)
    assert main(["reproduce", "--scale", "tiny"]) == 0
    assert seen == [["reproduce", "--tables", "kdindex.*", "--scale", "tiny"]]
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "kdindex reproduce" in capsys.readouterr().out
    assert main(["evaluate"]) == 2
    assert "unknown command" in capsys.readouterr().err
