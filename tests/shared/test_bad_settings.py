"""Bad input, class "settings": ANNREPRO_THREADS=abc, --threads -3, ANNREPRO_RESULTS that is a
file or read-only: one line naming the variable or option and the problem, before any work."""

import os
import tempfile

import pytest
from annrepro.cli import main
from annrepro.errors import SettingError
from annrepro.threads import check_threads, default_threads, threads


@pytest.mark.parametrize("value", ["abc", "0", "-3", "2.5"])
def test_annrepro_threads_must_be_a_positive_integer(monkeypatch, value):
    monkeypatch.setenv("ANNREPRO_THREADS", value)
    with pytest.raises(SettingError, match=f"ANNREPRO_THREADS='{value}': expected a positive"):
        default_threads()


def test_annrepro_threads_good_values(monkeypatch):
    monkeypatch.setenv("ANNREPRO_THREADS", " 3 ")
    assert default_threads() == 3
    monkeypatch.setenv("ANNREPRO_THREADS", "")
    assert default_threads() >= 1


def test_thread_counts_are_checked_where_they_are_used():
    with pytest.raises(SettingError, match="threads=-3"):
        with threads(-3):
            pass
    with pytest.raises(SettingError, match="--threads=0"):
        check_threads(0, "--threads")


def _run(capsys, argv):
    rc = main(argv)
    return rc, capsys.readouterr().err.strip().splitlines()


def test_cli_threads_option(capsys):
    rc, err = _run(capsys, ["reproduce", "--threads", "-3", "--tables", "nothing.*"])
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("annrepro: error: argument --threads: '-3' is not a positive integer")


def test_cli_threads_variable(capsys, monkeypatch):
    monkeypatch.setenv("ANNREPRO_THREADS", "abc")
    rc, err = _run(capsys, ["reproduce", "--tables", "nothing.*"])
    assert rc == 2 and err == [
        "annrepro: error: ANNREPRO_THREADS='abc': expected a positive integer (threads)"
    ]


@pytest.mark.parametrize("cmd", [["report"], ["reproduce", "--tables", "nothing.*"]])
def test_results_variable_that_is_a_file(capsys, monkeypatch, tmp_path, cmd):
    f = tmp_path / "results"
    f.write_text("not a folder")
    monkeypatch.setenv("ANNREPRO_RESULTS", str(f))
    rc, err = _run(capsys, cmd)
    assert rc == 2 and err == [f"annrepro: error: ANNREPRO_RESULTS={f}: is a file, not a folder"]
    monkeypatch.setenv("ANNREPRO_RESULTS", str(f / "sub"))
    rc, err = _run(capsys, cmd)
    assert rc == 2 and err == [
        f"annrepro: error: ANNREPRO_RESULTS={f / 'sub'}: {f} is a file, not a folder"
    ]


def test_results_variable_read_only(capsys, monkeypatch, tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    monkeypatch.setenv("ANNREPRO_RESULTS", str(d))
    real = tempfile.TemporaryFile

    def refuse(*a, dir=None, **kw):  # what a read-only folder does (root ignores chmod)
        if dir is not None and os.path.samefile(dir, d):
            raise PermissionError(13, "Permission denied", str(dir))
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    rc, err = _run(capsys, ["report"])
    assert rc == 2 and err == [
        f"annrepro: error: ANNREPRO_RESULTS={d}: cannot write in {d}: Permission denied "
        "(read-only?)"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder")
def test_results_variable_read_only_chmod(capsys, monkeypatch, tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    monkeypatch.setenv("ANNREPRO_RESULTS", str(d))
    try:
        rc, err = _run(capsys, ["report"])
    finally:
        d.chmod(0o755)
    assert rc == 2 and len(err) == 1 and "read-only?" in err[0]
