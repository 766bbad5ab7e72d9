"""Bad input reaching a command line: `annrepro.cli.run_cli` turns every AnnreproError (and an
OSError that names a file) into one line `<prog>: error: <message>` and exit code 2; a bug
keeps its traceback."""

import subprocess
import sys

import pytest
from annrepro.cli import ArgumentParser, run_cli
from annrepro.errors import AnnreproError, DatasetError, GroundTruthError, SettingError
from annrepro.vecio import VectorFileError, read_vectors


def _raise(exc):
    def fn(argv):
        raise exc

    return fn


@pytest.mark.parametrize(
    "exc, line",
    [
        (
            VectorFileError("/d/x.fvecs", "row 3 contains NaN or inf"),
            "kdindex: error: /d/x.fvecs: row 3 contains NaN or inf",
        ),
        (
            DatasetError("sift-10K: missing\n  two lines"),
            "kdindex: error: sift-10K: missing two lines",
        ),
        (
            FileNotFoundError(2, "No such file or directory", "/d/model.pt"),
            "kdindex: error: /d/model.pt: No such file or directory",
        ),
        (
            SettingError("--threads=-3: expected a positive integer"),
            "kdindex: error: --threads=-3: expected a positive integer",
        ),
    ],
)
def test_input_errors_are_one_line_and_exit_2(capsys, exc, line):
    assert run_cli("kdindex", _raise(exc), []) == 2
    cap = capsys.readouterr()
    assert cap.err == line + "\n" and cap.out == ""


def test_hierarchy():
    for cls in (VectorFileError, DatasetError, GroundTruthError, SettingError):
        assert issubclass(cls, AnnreproError)
    assert issubclass(VectorFileError, ValueError) and issubclass(DatasetError, RuntimeError)


def test_bugs_keep_their_traceback():
    with pytest.raises(ZeroDivisionError):
        run_cli("x", _raise(ZeroDivisionError("bug")), [])
    with pytest.raises(OSError):
        run_cli("x", _raise(OSError("no file named")), [])


def test_a_real_reader_error_through_run_cli(tmp_path, capsys):
    p = tmp_path / "q.fvecs"
    p.write_bytes(b"\x00" * 3)
    assert run_cli("catalyzer", lambda argv: read_vectors(argv[0]) and 0, [str(p)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"catalyzer: error: {p}: 3 bytes is shorter than one int32 dimension header"]


def test_usage_errors_are_one_line(capsys):
    def fn(argv):
        ap = ArgumentParser(prog="ccst")
        sub = ap.add_subparsers(dest="cmd", required=True)
        sub.add_parser("train").add_argument("--epochs", type=int)
        ap.parse_args(argv)
        return 0

    assert run_cli("ccst", fn, ["train", "--epochs", "many"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["ccst: error: argument --epochs: invalid int value: 'many' (see ccst train -h)"]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["data", "check", "no-such-set"], "unknown data set 'no-such-set'"),
        (
            ["reproduce", "--threads", "-3", "--tables", "nothing.*"],
            "argument --threads: '-3' is not a positive integer",
        ),
    ],
)
def test_console_command_prints_no_traceback(argv, needle):
    r = subprocess.run(
        [sys.executable, "-m", "annrepro", *argv], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("annrepro: error: ") and needle in lines[0]
    assert "Traceback" not in r.stderr


def test_a_closed_pipe_ends_the_command_quietly(monkeypatch):
    """`annrepro reference stale | head -2`: the reader leaving is no error and no traceback."""
    import os

    from annrepro.cli import run_cli

    moved = []
    monkeypatch.setattr(os, "dup2", lambda fd, fd2: moved.append(fd2))  # keep pytest's stdout

    def main_fn(argv):
        raise BrokenPipeError(32, "Broken pipe")

    assert run_cli("annrepro", main_fn, []) == 0
    assert len(moved) <= 1  # stdout, when it is a real file descriptor, now goes nowhere
