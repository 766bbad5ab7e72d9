"""`ccst reproduce` forwards to `annrepro reproduce --tables 'ccst.*'`."""

import annrepro.cli
import pytest
from ccst.cli import main


def test_reproduce_forwards_options(monkeypatch):
    seen = []
    monkeypatch.setattr(annrepro.cli, "main", lambda argv: seen.append(argv) or 0)
    assert main(["reproduce", "--scale", "tiny", "--threads", "1"]) == 0
    assert seen == [["reproduce", "--tables", "ccst.*", "--scale", "tiny", "--threads", "1"]]


def test_unknown_command_fails():
    with pytest.raises(SystemExit):
        main(["frobnicate"])
