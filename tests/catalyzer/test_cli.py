"""`catalyzer reproduce` forwards to `annrepro reproduce --tables 'catalyzer.*'`."""

import annrepro.cli
from catalyzer.cli import main


def test_reproduce_forwards_to_annrepro(monkeypatch):
    seen = []
    monkeypatch.setattr(annrepro.cli, "main", lambda argv: seen.append(argv) or 0)
    assert main(["reproduce", "--scale", "tiny"]) == 0
    assert seen == [["reproduce", "--tables", "catalyzer.*", "--scale", "tiny"]]


def test_usage_and_unknown_command(capsys):
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "catalyzer reproduce" in capsys.readouterr().out
    assert main(["bogus"]) == 2
    assert "unknown command" in capsys.readouterr().err
