"""Every method spec string the README shows is one `annrepro.methods` accepts, fits, fills and
searches (on tiny data, with tiny settings for the learned stages)."""

import re
from pathlib import Path

import pytest
from annrepro.methods import make, plugin_name
from annrepro.testing import SyntheticDataset

README = Path(__file__).resolve().parents[2] / "README.md"
TINY = {
    "catalyzer": dict(hidden=16, preset="released", epochs=1, batch_size=32, k_neg=10),
    "csst": dict(depths=(1,), heads=2, epochs=1, batch_size=64),
    "kdindex": dict(epochs=1, init_max_rounds=1, n_warm=1000, progress=False, aq_beam=1),
    "faiss": {},
}


def readme_specs() -> list[str]:
    text = README.read_text(encoding="utf-8")
    specs = []
    for group in re.findall(r"--methods '([^']+)'", text):
        specs += [s.strip() for s in group.split(";") if s.strip()]
    specs += re.findall(r'make\("([^"]+)"', text)
    return list(dict.fromkeys(specs))


def test_the_readme_shows_methods_of_every_paper():
    plugins = {plugin_name(s) for s in readme_specs()}
    assert {"catalyzer", "csst", "kdindex", "faiss"} <= plugins


@pytest.mark.parametrize("spec", readme_specs())
def test_readme_spec_string_runs(spec):
    ds = SyntheticDataset(d=64, nb=1200, nq=5, nt=1200, seed=0)
    m = make(spec, "l2", **TINY[plugin_name(spec)]).fit(ds.xt, ds.xb)
    m.add(ds.xb)
    D, I = m.search(ds.xq, 10)
    assert I.shape == (5, 10) and (I >= 0).all()
    assert m.bytes_per_vector > 0
