"""The `medium` scale: every spec has one, on registered medium (or reused small) data sets, with
training budgets that fit those data sets; and its settings run end to end on tiny synthetic data
(only the data is shrunk, as the full-scale split test does for catalyzer)."""

import pytest
from annrepro.registry import registry
from annrepro.tables import find_specs
from annrepro.testing import FakeContext, SyntheticDataset

SPECS = find_specs("*")
REG = registry()["datasets"]


def _learn_rows(name: str) -> int:
    """Learn-set size from the registry alone (no data needed): a derived split's count, else the
    learn file's registered shape, else the base's (learn = base)."""
    e = REG[name]
    if "derive" in e:
        dv = e["derive"]
        v = dv.get("learn", dv.get("base"))
        return v if "seed" in dv else v[1] - v[0]
    files = registry()["files"]
    return files[e.get("learn", e["base"])]["shape"][0]


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_every_spec_has_a_medium_scale_on_medium_or_small_data(spec):
    assert "medium" in spec.scales, f"{spec.id}: no [scales.medium]"
    ds = spec.datasets("medium")
    assert ds, f"{spec.id}: [scales.medium] maps no data set"
    for name in ds.values():
        assert REG[name].get("scale") in ("medium", "small"), (spec.id, name)
    # the runner knows a row's data set from the tiny / small / full mappings and the CSV
    known = set(spec.datasets("small")) | set(spec.datasets("full"))
    known |= {c.dataset for c in spec.cells}
    assert set(ds) <= known, f"{spec.id}: medium names paper data sets no other scale has"
    assert "medium =" in spec.notes, f"{spec.id}: the notes do not say what medium uses"


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_medium_uses_the_largest_stand_ins(spec):
    """Where small uses a 100K GloVe split, medium uses the 300K one (all 341,479 words)."""
    small, medium = spec.datasets("small"), spec.datasets("medium")
    for paper_name, name in small.items():
        if name.startswith("glove100-"):
            assert medium[paper_name] == name.replace("-100K", "-300K"), (spec.id, paper_name)


CATALYZER = [s for s in SPECS if s.paper == "catalyzer" and "cat_ntrain" in s.params_for("medium")]


@pytest.mark.parametrize("spec", CATALYZER, ids=[s.id for s in CATALYZER])
def test_medium_catalyzer_split_fits_the_learn_sets_unclipped(spec):
    """The medium training split (cat_ntrain + cat_n_val) fits the GloVe and SIFT learn sets, so
    'clip' only shrinks it on deep1b-q96-3K (945 learn vectors), as at small."""
    p = spec.params_for("medium")
    assert p["cat_hidden"] == 1024 and p["cat_batch_size"] == 64  # Sec. 5.2 / train.py
    for name in spec.datasets("medium").values():
        if name != "deep1b-q96-3K":
            assert p["cat_ntrain"] + p["cat_n_val"] <= _learn_rows(name), (spec.id, name)


@pytest.mark.parametrize("table", ["catalyzer.ladder", "kdindex.ladder"])
def test_medium_ladder_rungs_fit_the_data(table):
    spec = find_specs(table)[0]
    p = spec.params_for("medium")
    for lad in spec.raw["ladders"]:
        name = spec.datasets("medium")[lad["dataset"]]
        rungs = p["values"][lad["id"]]
        if lad["id"].endswith("-ntrain"):
            assert max(rungs) <= _learn_rows(name), (lad["id"], rungs)
        if lad["id"].endswith("-docs"):
            assert max(rungs) <= REG[name]["derive"]["base"], (lad["id"], rungs)


def test_registered_medium_glove_splits_use_every_word():
    files = registry()["files"]
    for name in ("glove100-norm-300K", "glove100-ip-300K"):
        dv = REG[name]["derive"]
        assert dv["query"] + dv["learn"] + dv["base"] == files[dv["from"]]["shape"][0]
        assert dv["seed"] == REG["glove100-norm-100K"]["derive"]["seed"]  # the same queries


# -- the medium settings run, on tiny synthetic data -----------------------------------------
def _tiny(spec, metric="l2"):
    return {
        name: SyntheticDataset(name=name, d=16, nb=600, nq=20, nt=400, seed=i, metric=metric)
        for i, name in enumerate(spec.datasets("medium"))
    }


@pytest.mark.slow
def test_kdindex_table7_runs_with_the_medium_settings():
    from kdindex.tables import table7

    spec = find_specs("kdindex.table7")[0]
    ctx = FakeContext(spec, {"SIFT1M": _tiny(spec)["SIFT1M"]}, scale="medium")
    assert ctx.params == spec.params_for("medium")
    rows = table7(spec, ctx)
    assert rows and all(r["dataset"] == "SIFT1M" for r in rows)


@pytest.mark.slow
def test_kdindex_table3_trains_kdindex_with_the_medium_settings():
    """KDindex (AQ) at medium's budget: faiss-default AQ beam 5, up to 1024 training queries,
    10 epochs, 5 initialisation rounds, W = 256 as printed; only the data is tiny."""
    from kdindex.tables import table3

    spec = find_specs("kdindex.table3")[0]
    ctx = FakeContext(spec, {"SIFT1M": _tiny(spec)["SIFT1M"]}, scale="medium")
    p = ctx.params
    assert (p["W"], p["aq_beam"], p["epochs"], p["init_max_rounds"]) == (256, 5, 10, 5)
    rows = table3(spec, ctx)
    got = {r["row"] for r in rows if r["dataset"] == "SIFT1M"}
    assert any("KDindex" in r for r in got), got
