"""Producer options of the catalyzer tables (tiny scale, shrunk params)."""

from pathlib import Path

import numpy as np
import pytest
from annrepro.tables import load_spec
from annrepro.tables.runner import Context
from catalyzer.tables import table2

SPECS = Path(__file__).resolve().parents[2] / "paper_tables" / "catalyzer"


def _table2_ctx(tmp_path, **params) -> Context:
    ctx = Context(
        load_spec(SPECS / "table2.toml"),
        "tiny",
        threads=1,
        progress_enabled=False,
        out_dir=tmp_path,
    )
    ctx.params.update(dict(datasets=["Deep1M"], bits=[16], methods=["LSH", "Catalyzer+sign"]))
    ctx.params.update(params)
    return ctx


def test_table2_catalyzer_seeds_separate_from_baseline_seeds(tmp_path):
    ctx = _table2_ctx(tmp_path, n_seeds=2, cat_n_seeds=1)
    rows = {r["row"]: r for r in table2(ctx.spec, ctx)}
    # a single trained network has no spread to report (ddof 1); the 2-seed baseline has one
    assert "1-recall@10:std" not in rows["Catalyzer+sign 16b"]
    assert rows["LSH 16b"]["1-recall@10:std"] >= 0.0
    assert ctx._catalyzer_stats["trained"] + ctx._catalyzer_stats["reused"] == 1
    assert any("Catalyzer+sign rows over 1 seed(s)" in n for n in ctx.notes)


@pytest.mark.parametrize("bad", [0, 3])
def test_table2_rejects_bad_catalyzer_seed_count(tmp_path, bad):
    ctx = _table2_ctx(tmp_path, n_seeds=2, cat_n_seeds=bad)
    with pytest.raises(ValueError, match="cat_n_seeds"):
        table2(ctx.spec, ctx)


# training params read by catalyzer_for: equal across specs => one model serves several tables
TRAIN_KEYS = (
    "cat_preset",
    "cat_epochs",
    "cat_hidden",
    "cat_batch_size",
    "cat_ntrain",
    "cat_n_val",
    "cat_n_val_queries",
    "cat_val_every",
    "cat_cache",
    "cat_split",
)
TABLES = ("table1", "table2", "table3", "figure5", "text")


@pytest.mark.parametrize("scale", ["tiny", "small", "medium", "full"])
def test_catalyzer_training_params_are_shared_across_tables(scale):
    specs = {t: load_spec(SPECS / f"{t}.toml") for t in TABLES}
    train = {t: {k: s.params_for(scale)[k] for k in TRAIN_KEYS} for t, s in specs.items()}
    assert all(v == train["table1"] for v in train.values()), train
    # the models the tables share are trained with the same (d_out, lambda, validation lattice)
    p1, pt = specs["table1"].params_for(scale), specs["text"].params_for(scale)
    assert (pt["d_out"], pt["r2"], pt["cat_lam"]) == (p1["d_out"], p1["r2"], p1["cat_lam"])
    p3, p5 = specs["table3"].params_for(scale), specs["figure5"].params_for(scale)
    assert p5["val_r2"] == p3["r2"]
    same_data = (
        specs["figure5"].datasets(scale)["Deep1M"] == specs["table3"].datasets(scale)["Deep1M"]
    )
    if scale != "tiny" and same_data:  # tiny's lambda grid is cut to two values: nothing to save
        lam = p5["lambda_per_d_out"]
        assert all(float(lam[str(d)]) in map(float, p3["lambda_grid"]) for d in p3["d_outs"])


# ------------------------------------------------------------- Figure 7 (Appendix C) range search
class _WarpCatalyzer:
    """A stand-in catalyzer: a fixed non-linear map onto the sphere that changes neighbours."""

    def transform(self, x):
        y = np.sign(x) * np.abs(x) ** 3
        return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


def test_range_search_radius_comes_from_original_space_neighbours(tmp_path, monkeypatch):
    """Appendix C: epsilon and the recall are measured on the nearest neighbours in the ORIGINAL
    space, also in the catalyzed space (not on neighbours recomputed after the catalyzer)."""
    import catalyzer.tables as ct
    import faiss
    from annrepro.datasets import get_dataset

    fake = _WarpCatalyzer()
    monkeypatch.setattr(ct, "catalyzer_for", lambda *a, **k: fake)
    ctx = Context(
        load_spec(SPECS / "text.toml"), "tiny", threads=1, progress_enabled=False, out_dir=tmp_path
    )
    ctx.params.update(speedup_datasets=[])
    rows = {(r["dataset"], r["row"]): r for r in ct.text(ctx.spec, ctx)}
    ds = get_dataset(ctx.spec.datasets("tiny")["Deep1M"])
    xq, xb = np.ascontiguousarray(ds.xq), np.ascontiguousarray(ds.xb)
    nn = faiss.knn(xq, xb, 1)[1][:, 0]  # true nearest neighbours, original space
    yq, yb = fake.transform(xq), fake.transform(xb)
    assert (faiss.knn(yq, yb, 1)[1][:, 0] != nn).any()  # the warp moves some neighbours
    target = float(ctx.params["target_recall"])
    d1 = np.linalg.norm(yq - yb[nn], axis=1)
    eps = float(np.quantile(d1.astype(np.float64), target, method="inverted_cdf"))
    out = rows[("Deep1M", "Catalyzer output")]
    assert out["epsilon"] == pytest.approx(eps, rel=1e-6)
    d_all = np.linalg.norm(yq[:, None, :] - yb[None], axis=2)
    assert out["results_per_query"] == pytest.approx((d_all <= eps * (1 + 1e-6)).sum(1).mean())
    # at that radius the original nearest neighbour is found for >= target of the queries
    assert (d1 <= eps).mean() >= target


# ---------------------------------------------------------------- one OPQ at the 64-bit point
@pytest.mark.parametrize("d", [32, 96, 100, 128])
def test_figure5_opq_at_64_bits_is_table1_opq(monkeypatch, d):
    """Table 1's OPQ (opq_factory) and Figure 5's 8-byte OPQ point are one configuration."""
    from types import SimpleNamespace

    import catalyzer.tables as ct
    from catalyzer.baselines import EncodedSearch

    seen = []

    def fake_index(dim, factory, niter=None):
        seen.append((dim, factory))
        return None

    monkeypatch.setattr(ct, "opq_index", fake_index)
    monkeypatch.setattr(
        ct, "encode_search", lambda *a, **k: EncodedSearch(np.zeros((1, 1)), 0.0, 0)
    )
    x = np.zeros((4, d), dtype=np.float32)
    ds = SimpleNamespace(d=d, xt=x, xb=x, xq=x)
    for scale in ("tiny", "small", "full"):
        seen.clear()
        p5 = load_spec(SPECS / "figure5.toml").params_for(scale)
        p1 = load_spec(SPECS / "table1.toml").params_for(scale)
        ct._opq_curve(ds, p5, 10)
        by_bytes = dict(zip((int(b) for b in p5["pq_bytes"]), seen, strict=True))
        assert by_bytes[8] == (d, p1["opq_factory"])


# -------------------------------------------------------- full-scale split (Sec. 5.1) and registry
REPO = SPECS.parents[1]


@pytest.mark.parametrize("name", ["deep96-1M", "bigann-1M"])
def test_full_scale_learn_sets_hold_the_papers_split(name):
    """Sec. 5.1: 500k training vectors and a separate 1M validation base (+ 10k validation
    queries, README): the registered learn rows hold exactly that, and every catalyzer spec's
    full-scale split is the paper's, unclipped."""
    from annrepro.registry import registry
    from catalyzer.tables import catalyzer_split

    entry = registry(REPO / "paper_tables" / "datasets.toml")["datasets"][name]
    start, stop = entry["learn_rows"]
    for t in TABLES:
        p = load_spec(SPECS / f"{t}.toml").params_for("full")
        assert catalyzer_split(stop - start, p, name) == (500_000, 1_010_000, 10_000), t


@pytest.fixture
def tiny_full_registry(tmp_path, monkeypatch):
    """A private registry with one file-backed full-scale data set whose learn set is a row
    slice (learn_rows) of a bigger .fbin file, as deep96-1M's."""
    from annrepro import datasets as dsmod
    from annrepro.vecio import write_vectors

    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    learn = rng.standard_normal((400, 8)).astype(np.float32)
    write_vectors(data / "big" / "learn.fbin", learn)
    write_vectors(data / "big" / "base.fbin", rng.standard_normal((60, 8)).astype(np.float32))
    write_vectors(data / "big" / "query.fbin", rng.standard_normal((5, 8)).astype(np.float32))
    rows = {"fits": 260, "short": 250}
    toml = "".join(
        f"""
[datasets.big-{k}]
scale = "full"
metric = "l2"
base = "big/base.fbin"
learn = "big/learn.fbin"
learn_rows = [0, {n}]
query = "big/query.fbin"
"""
        for k, n in rows.items()
    )
    root = tmp_path / "paper_tables"
    root.mkdir()
    (root / "datasets.toml").write_text(toml)
    monkeypatch.setenv("ANNREPRO_TABLES", str(root))
    monkeypatch.setenv("ANNREPRO_DATA", str(data))
    monkeypatch.setattr(dsmod, "_cache", {})
    return learn


def _full_ctx(tmp_path) -> Context:
    ctx = Context(
        load_spec(SPECS / "table1.toml"),
        "full",
        threads=1,
        progress_enabled=False,
        out_dir=tmp_path,
    )
    # the full-scale split rule with shrunk sizes: 200 training, 60 validation (20 queries)
    ctx.params.update(
        cat_preset="released",
        cat_epochs=1,
        cat_hidden=8,
        cat_batch_size=32,
        cat_ntrain=200,
        cat_n_val=60,
        cat_n_val_queries=20,
        cat_val_every=1,
        cat_cache=False,
    )
    return ctx


def test_full_scale_split_is_exact_on_a_sliced_learn_set(tmp_path, tiny_full_registry):
    from annrepro.datasets import get_dataset
    from catalyzer.tables import catalyzer_for

    ds = get_dataset("big-fits")
    np.testing.assert_array_equal(ds.xt, tiny_full_registry[:260])  # the registered slice only
    ctx = _full_ctx(tmp_path)
    cat = catalyzer_for(ctx, ds, 4, 0.02, 0, "zn_3")
    assert (cat.config.n_val, cat.config.n_val_queries) == (60, 20)
    assert any("trained on 200 learn vectors, 60 held out" in n for n in ctx.notes)


def test_full_scale_split_never_shrinks_silently(tmp_path, tiny_full_registry):
    from annrepro.datasets import get_dataset
    from catalyzer.tables import catalyzer_for

    ctx = _full_ctx(tmp_path)
    with pytest.raises(ValueError, match=r"big-short.*250 learn vectors.*cat_ntrain \+ cat_n_val"):
        catalyzer_for(ctx, get_dataset("big-short"), 4, 0.02, 0, "zn_3")
