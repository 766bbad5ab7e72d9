"""The four scales (tiny, small, medium, full): one list, shared by the spec loader, the data set
registry, the CLI and the claims."""

import textwrap

import pytest
from annrepro import registry as regmod
from annrepro.cli import main
from annrepro.tables import spec as specmod
from annrepro.tables.spec import SpecError, load_spec


def test_one_list_of_scales_in_order():
    assert specmod.SCALES == ("tiny", "small", "medium", "full")
    # registry.py keeps its own copy (no import cycle): the two must not drift apart
    assert regmod.SCALES == specmod.SCALES


def _spec(tmp_path, scales: str):
    d = tmp_path / "toy"
    d.mkdir()
    (d / "t.csv").write_text(
        "dataset,row,column,published,std,source,note\nD,A,r,1.0,,Table 1,\nD,B,r,0.5,,Table 1,\n"
    )
    (d / "t.toml").write_text(
        textwrap.dedent(
            """\
            [table]
            id = "toy.t"
            [columns.r]
            unit = "%"
            [[claims]]
            text = "A beats B"
            dataset = "D"
            column = "r"
            better = "A"
            worse = "B"
            """
        )
        + scales
    )
    return load_spec(d / "t.toml")


def test_a_medium_scale_loads_and_claims_default_to_it(tmp_path):
    s = _spec(tmp_path, '[scales.medium]\ndatasets = { D = "x" }\nparams = { n = 3 }\n')
    assert s.datasets("medium") == {"D": "x"}
    assert s.params_for("medium") == {"n": 3}
    assert "medium" in s.claims[0].scales


def test_an_unknown_scale_names_the_spec_and_the_known_ones(tmp_path):
    with pytest.raises(SpecError, match=r"t\.toml: unknown scale 'huge'.*'medium'"):
        _spec(tmp_path, "[scales.huge]\n")


def test_registry_accepts_medium_and_refuses_an_unknown_scale(tmp_path):
    for scale in ("medium", "huge"):
        reg = {"sources": {}, "files": {}, "datasets": {"x": {"scale": scale}}}
        if scale == "medium":
            regmod.check_registry(reg, tmp_path / "datasets.toml")
        else:
            with pytest.raises(Exception, match="unknown scale 'huge'.*medium"):
                regmod.check_registry(reg, tmp_path / "datasets.toml")


def test_cli_offers_medium(capsys):
    assert main(["reproduce", "--scale", "huge"]) == 2  # bad input: one line, exit 2
    err = capsys.readouterr().err
    assert "invalid choice: 'huge'" in err and "'medium'" in err
