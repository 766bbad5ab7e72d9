"""catalyzer.experiments: the catalyzers' learn-set split (Sec. 5.1) and the notes on what a
table trained, Table 2's seed counts, Figure 5's OPQ curve (one configuration with Table 1's
OPQ)."""

import re
from pathlib import Path

import numpy as np
import pytest
from annrepro.tables import load_spec
from annrepro.tables.runner import Context
from annrepro.testing import FakeContext, SyntheticDataset
from catalyzer import experiments

SPECS = Path(__file__).resolve().parents[2] / "paper_tables" / "catalyzer"
REPO = SPECS.parents[1]

# the tiny training settings, shrunk further (seconds)
TINY_TRAIN = dict(
    cat_preset="released",
    cat_epochs=1,
    cat_hidden=8,
    cat_batch_size=32,
    cat_ntrain=200,
    cat_n_val=60,
    cat_n_val_queries=20,
    cat_val_every=1,
    cat_cache=False,
    cat_split="clip",
)


def _counts(ctx) -> tuple[int, int]:
    """(trained, reused) as the table's note says."""
    found = [re.match(r"catalyzers: (\d+) trained in .* s, (\d+) reused", n) for n in ctx.notes]
    (m,) = [m for m in found if m]
    return int(m[1]), int(m[2])


def test_note_catalyzers_counts_what_the_table_trained_and_reused():
    ds = SyntheticDataset("cat-notes", d=8, nb=50, nt=300, seed=12345)
    ctx = FakeContext(None, {"Deep1M": ds}, **TINY_TRAIN)
    experiments.note_catalyzers(ctx)
    assert ctx.notes == []  # no catalyzer, no note
    a = experiments.catalyzer_for(ctx, ds, 4, 0.02, 0, "zn_3")
    b = experiments.catalyzer_for(ctx, ds, 4, 0.02, 0, "zn_3")  # the same model, in process
    experiments.note_catalyzers(ctx)
    assert _counts(ctx) == (1, 1)
    np.testing.assert_array_equal(a.transform(ds.xq), b.transform(ds.xq))
    other = FakeContext(None, {"Deep1M": ds}, memo=ctx.run_memo, **TINY_TRAIN)  # the next table
    experiments.catalyzer_for(other, ds, 4, 0.02, 0, "zn_3")
    experiments.note_catalyzers(other)
    assert _counts(other) == (0, 1)


@pytest.mark.parametrize("bad", [0, 3])
def test_binary_seed_counts_rejects_bad_catalyzer_seed_count(bad):
    ctx = FakeContext(None, n_seeds=2, cat_n_seeds=bad)
    with pytest.raises(ValueError, match="need 1 <= cat_n_seeds <= n_seeds, got"):
        experiments.binary_seed_counts(ctx)


def test_binary_seed_counts_default_to_the_baselines():
    assert experiments.binary_seed_counts(FakeContext(None, n_seeds=5)) == (5, 5)
    assert experiments.binary_seed_counts(FakeContext(None, n_seeds=5, cat_n_seeds=1)) == (5, 1)


def test_clip_split_shrinks_and_unknown_mode_is_refused():
    p = dict(TINY_TRAIN, cat_ntrain=1000, cat_n_val=400, cat_n_val_queries=50)
    assert experiments.catalyzer_split(2000, p) == (1000, 400, 50)
    assert experiments.catalyzer_split(1000, p) == (800, 200, 40)  # n_val <= nt/5, nq <= n_val/5
    with pytest.raises(ValueError, match="cat_split must be 'exact' or 'clip', got 'cut'"):
        experiments.catalyzer_split(1000, dict(p, cat_split="cut"))


# ---------------------------------------------------------------- one OPQ at the 64-bit point
@pytest.mark.parametrize("d", [32, 96, 100, 128])
def test_figure5_opq_at_64_bits_is_table1_opq(monkeypatch, d):
    """Table 1's OPQ (opq_factory) and Figure 5's 8-byte OPQ point are one configuration."""
    from types import SimpleNamespace

    from catalyzer.baselines import EncodedSearch

    seen = []

    def fake_index(dim, factory, niter=None):
        seen.append((dim, factory))
        return None

    monkeypatch.setattr(experiments, "opq_index", fake_index)
    monkeypatch.setattr(
        experiments, "encode_search", lambda *a, **k: EncodedSearch(np.zeros((1, 1)), 0.0, 0)
    )
    x = np.zeros((4, d), dtype=np.float32)
    ds = SimpleNamespace(d=d, xt=x, xb=x, xq=x)
    for scale in ("tiny", "small", "full"):
        seen.clear()
        p5 = load_spec(SPECS / "figure5.toml").params_for(scale)
        p1 = load_spec(SPECS / "table1.toml").params_for(scale)
        experiments.opq_curve(ds, p5, 10)
        by_bytes = dict(zip((int(b) for b in p5["pq_bytes"]), seen, strict=True))
        assert by_bytes[8] == (d, p1["opq_factory"])


# -------------------------------------------------------- full-scale split (Sec. 5.1) and registry
@pytest.mark.parametrize("name", ["deep96-1M", "bigann-1M"])
def test_full_scale_learn_sets_hold_the_papers_split(name):
    """Sec. 5.1: 500k training vectors and a separate 1M validation base (+ 10k validation
    queries, README): the registered learn rows hold exactly that, and every catalyzer spec's
    full-scale split is the paper's, unclipped."""
    from annrepro.registry import registry

    entry = registry(REPO / "paper_tables" / "datasets.toml")["datasets"][name]
    start, stop = entry["learn_rows"]
    for t in sorted(SPECS.glob("*.toml")):  # every catalyzer spec of the paper's split
        p = load_spec(t).params_for("full")
        if "cat_ntrain" not in p:  # the ladder trains through annrepro.methods (its notes)
            continue
        assert experiments.catalyzer_split(stop - start, p, name) == (500_000, 1_010_000, 10_000), t


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

    ds = get_dataset("big-fits")
    np.testing.assert_array_equal(ds.xt, tiny_full_registry[:260])  # the registered slice only
    ctx = _full_ctx(tmp_path)
    cat = experiments.catalyzer_for(ctx, ds, 4, 0.02, 0, "zn_3")
    assert (cat.config.n_val, cat.config.n_val_queries) == (60, 20)
    assert any("trained on 200 learn vectors, 60 held out" in n for n in ctx.notes)


def test_full_scale_split_never_shrinks_silently(tmp_path, tiny_full_registry):
    from annrepro.datasets import get_dataset

    ctx = _full_ctx(tmp_path)
    with pytest.raises(ValueError, match=r"big-short.*250 learn vectors.*cat_ntrain \+ cat_n_val"):
        experiments.catalyzer_for(ctx, get_dataset("big-short"), 4, 0.02, 0, "zn_3")
