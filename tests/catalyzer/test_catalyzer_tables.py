"""The catalyzer tables' producers and specs (tiny scale, shrunk params): producer options, and
the training params the specs share so that one model serves several tables."""

import re
from pathlib import Path

import pytest
from annrepro.datasets import get_dataset
from annrepro.tables import load_spec
from annrepro.testing import FakeContext
from catalyzer.tables import table2

SPECS = Path(__file__).resolve().parents[2] / "paper_tables" / "catalyzer"


def test_table2_catalyzer_seeds_separate_from_baseline_seeds():
    spec = load_spec(SPECS / "table2.toml")
    ds = get_dataset(spec.datasets("tiny")["Deep1M"])
    methods = ["LSH", "Catalyzer+sign"]
    ctx = FakeContext(spec, {"Deep1M": ds}, bits=[16], methods=methods, n_seeds=2, cat_n_seeds=1)
    rows = {r["row"]: r for r in table2(ctx.spec, ctx)}
    # a single trained network has no spread to report (ddof 1); the 2-seed baseline has one
    assert "1-recall@10:std" not in rows["Catalyzer+sign 16b"]
    assert rows["LSH 16b"]["1-recall@10:std"] >= 0.0
    counts = [re.match(r"catalyzers: (\d+) trained in .* s, (\d+) reused", n) for n in ctx.notes]
    assert sum(int(c[1]) + int(c[2]) for c in counts if c) == 1  # one network, one seed
    assert any("Catalyzer+sign rows over 1 seed(s)" in n for n in ctx.notes)


# training params read by experiments.catalyzer_for: equal across specs => one model serves
# several tables
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
