"""`kdindex teacher | train | search`: the learned method end to end from vector files."""

import numpy as np
import pytest
from annrepro.groundtruth import knn_exact
from annrepro.vecio import read_vectors, write_vectors
from kdindex.cli import main


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((300, 8)).astype(np.float32)
    xt = rng.standard_normal((80, 8)).astype(np.float32)
    xq = rng.standard_normal((20, 8)).astype(np.float32)
    paths = {n: tmp_path / f"{n}.fvecs" for n in ("xb", "xt", "xq")}
    for n, x in zip(paths, (xb, xt, xq), strict=True):
        write_vectors(paths[n], x)
    paths["gt"] = tmp_path / "gt.ivecs"
    write_vectors(paths["gt"], knn_exact(xq, xb, 10, "l2")[1].astype(np.int32))
    return tmp_path, paths, xb, xt


def test_teacher_train_search(files, capsys):
    tmp, p, xb, xt = files
    labels = tmp / "labels.npy"
    assert main(["teacher", "--xb", str(p["xb"]), "--xt", str(p["xt"]), "--out", str(labels),
                 "-K", "10", "--M", "16", "--ef-search", "64"]) == 0  # fmt: skip
    lab = np.load(labels)
    exact = knn_exact(xt, xb, 10, "l2")[1]
    assert lab.shape == (80, 10) and lab.dtype == np.int64
    assert (lab[:, 0] == exact[:, 0]).mean() > 0.9  # the teacher finds the true nearest
    index = tmp / "kd.npz"
    args = ["train", "--xb", str(p["xb"]), "--xt", str(p["xt"]), "--labels", str(labels),
            "--out", str(index), "--kind", "PQ", "-B", "2", "-W", "16", "--epochs", "1",
            "--init-rounds", "1", "--n-warm", "300"]  # fmt: skip
    assert main(args) == 0
    assert "trained KDindex (PQ)" in capsys.readouterr().out
    out = tmp / "I.ivecs"
    assert main(["search", "--index", str(index), "--xq", str(p["xq"]), "--out", str(out),
                 "--nprobe", "4", "--gt", str(p["gt"])]) == 0  # fmt: skip
    msg = capsys.readouterr().out
    I = read_vectors(out)
    assert I.shape == (20, 10) and I.min() >= 0 and I.max() < 300
    recall = float(msg.rsplit(" ", 1)[1])
    assert 0.2 < recall <= 1  # 2 x 4-bit codes of 8-d Gaussians: far above chance (10 / 300)


def _one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if "thread(s)" not in ln]
    assert len(err) == 1, err
    assert err[0].startswith("kdindex: error: "), err[0]
    return err[0]


def test_cli_errors(files, capsys):
    tmp, p, _, _ = files
    bad = ["teacher", "--xb", str(p["xb"]), "--xt", str(p["xt"]), "--out", str(tmp / "l.npy"),
           "-K", "50", "--ef-search", "20"]  # fmt: skip
    assert main(bad) == 2
    assert "exceeds --ef-search" in _one_error_line(capsys)
    missing = ["search", "--index", str(tmp / "none.npz"), "--xq", str(p["xq"]),
               "--out", str(tmp / "I.npy")]  # fmt: skip
    assert main(missing) == 2
    assert "none.npz" in _one_error_line(capsys)
    assert main(["train", "--kind", "PQ"]) == 2  # required arguments missing: one line too
    assert "required" in _one_error_line(capsys)
    assert main(["search", "--index", "x", "--xq", "y", "--out", "z", "--threads", "-3"]) == 2
    assert "--threads" in _one_error_line(capsys)


def test_bad_input_is_refused_before_any_work(files, capsys):
    """Each was accepted before (labels written, recall printed) or ended in a traceback."""
    tmp, p, xb, xt = files
    write_vectors(tmp / "xt32.fvecs", np.zeros((80, 32), np.float32) + 1)
    teach = ["teacher", "--xb", str(p["xb"]), "--out", str(tmp / "l.npy")]
    assert main(teach + ["--xt", str(tmp / "xt32.fvecs")]) == 2  # 32-d queries, 16-d base
    msg = _one_error_line(capsys)
    assert "dimension 32" in msg and "xt32.fvecs" in msg
    assert not (tmp / "l.npy").exists()
    (tmp / "file").write_text("")
    assert main(teach[:-1] + [str(tmp / "file" / "l.npy"), "--xt", str(p["xt"])]) == 2
    assert "is a file, not a folder" in _one_error_line(capsys)
    bad_labels = tmp / "bad_labels.npy"
    write_vectors(bad_labels, np.full((80, 10), 300, np.int64))  # ids beyond the 300-row base
    train = ["train", "--xb", str(p["xb"]), "--xt", str(p["xt"]), "--out", str(tmp / "kd.npz"),
             "--kind", "PQ", "-B", "2", "-W", "16", "--epochs", "1", "--init-rounds", "1",
             "--n-warm", "300"]  # fmt: skip
    assert main(train + ["--labels", str(bad_labels)]) == 2
    assert "outside [0, 300)" in _one_error_line(capsys)
    labels = tmp / "labels.npy"
    write_vectors(labels, knn_exact(xt, xb, 10, "l2")[1].astype(np.int64))
    assert main(train + ["--labels", str(labels)]) == 0
    capsys.readouterr()
    search = ["search", "--index", str(tmp / "kd.npz"), "--out", str(tmp / "I.npy")]
    write_vectors(tmp / "xq4.fvecs", np.ones((5, 4), np.float32))
    assert main(search + ["--xq", str(tmp / "xq4.fvecs")]) == 2
    assert "xq4.fvecs" in _one_error_line(capsys)
    gt_bad = tmp / "gt_bad.ivecs"
    write_vectors(gt_bad, -np.ones((20, 10), np.int32))
    assert main(search + ["--xq", str(p["xq"]), "--gt", str(gt_bad)]) == 2
    assert "gt_bad.ivecs" in _one_error_line(capsys)


def test_train_balance_index_switch(files, capsys):
    """`--balance-index` (default) stores Algorithm 1's balanced codes, every list within one of
    n / W; `--no-balance-index` the nearest codes of the learned codebooks (the AQ encoder)."""
    from kdindex.api import KDIndex
    from kdindex.posting import posting_list_sizes

    tmp, p, xb, xt = files
    labels = tmp / "labels.npy"
    write_vectors(labels, knn_exact(xt, xb, 10, "l2")[1].astype(np.int64))
    common = ["train", "--xb", str(p["xb"]), "--xt", str(p["xt"]), "--labels", str(labels),
              "--kind", "AQ", "-B", "2", "-W", "16", "--epochs", "1", "--init-rounds", "1",
              "--n-warm", "300", "--aq-beam", "3"]  # fmt: skip
    assert main([*common, "--out", str(tmp / "bal.npz")]) == 0
    assert "on balanced codes" in capsys.readouterr().out
    bal = KDIndex.load(tmp / "bal.npz")
    sizes = posting_list_sizes(bal.codes, 16)
    assert sizes.min() >= 300 // 16 and sizes.max() <= -(-300 // 16)
    assert main([*common, "--no-balance-index", "--out", str(tmp / "near.npz")]) == 0
    assert "on nearest codes" in capsys.readouterr().out
    near = KDIndex.load(tmp / "near.npz")
    assert near.quantizer.aq_beam == 3
    np.testing.assert_array_equal(near.codes, near.quantizer.encode(xb))


def test_damaged_index_file_is_one_line(files, capsys):
    tmp, p, _, _ = files
    for name, data in (("cut.npz", b"PK\x03\x04 truncated"), ("text.npz", b"1 2 3")):
        (tmp / name).write_bytes(data)
        argv = ["search", "--index", str(tmp / name), "--xq", str(p["xq"])]
        assert main(argv + ["--out", str(tmp / "I.npy")]) == 2
        line = _one_error_line(capsys)
        assert name in line and "not a readable KDindex index" in line and "unsafely" not in line


def test_train_says_when_no_epoch_beat_the_initialisation(files, capsys):
    """Was `best epoch -1, validation recall ...`: now what -1 means."""
    tmp, p, xb, xt = files
    labels = tmp / "labels.npy"
    write_vectors(labels, knn_exact(xt, xb, 10, "l2")[1].astype(np.int64))
    argv = ["train", "--xb", str(p["xb"]), "--xt", str(p["xt"]), "--labels", str(labels),
            "--out", str(tmp / "kd.npz"), "--kind", "PQ", "-B", "2", "-W", "16", "--epochs",
            "1", "--init-rounds", "1", "--n-warm", "300", "--lr", "0"]  # fmt: skip
    assert main(argv) == 0  # lr 0: the epoch cannot beat the initialised student
    out = capsys.readouterr().out
    assert "no differentiable epoch improved on the initialised student's validation recall" in out
    assert "the initialised student is kept" in out and "best epoch -1" not in out


def _subparsers():
    import argparse

    from kdindex.cli import _parser

    (sub,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def test_one_cli_style_options_only_each_with_help(capsys):
    """Every subcommand takes options only, each with a long name and a help line in --help."""
    subs = _subparsers()
    assert sorted(subs) == ["encode", "search", "teacher", "train"]
    for name, sp in subs.items():
        actions = [a for a in sp._actions if a.dest != "help"]
        assert all(a.option_strings for a in actions), f"{name}: a positional argument"
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        for a in actions:
            long = [o for o in a.option_strings if o.startswith("--")]
            assert long, f"{name}: {a.option_strings} has no long name"
            assert a.help and long[0] in text, f"{name} {long[0]}: no help"
            assert " ".join(a.help.split()) in text


def test_old_short_options_and_their_long_names_agree():
    from kdindex.cli import _parser

    p = _parser()
    base = ["train", "--xb", "b", "--xt", "t", "--labels", "l", "--out", "o"]
    a = p.parse_args([*base, "-K", "5", "-B", "4", "-W", "16"])
    b = p.parse_args([*base, "--K", "5", "--B", "4", "--W", "16"])
    assert vars(a) == vars(b) and (a.K, a.B, a.W) == (5, 4, 16)
    q = ["search", "--index", "i", "--xq", "q", "--out", "o"]
    assert p.parse_args([*q, "-k", "7"]).k == p.parse_args([*q, "--k", "7"]).k == 7
    t = ["teacher", "--xb", "b", "--xt", "t", "--out", "o"]
    assert p.parse_args([*t, "-K", "3"]).K == p.parse_args([*t, "--K", "3"]).K == 3


def test_every_subcommand_checks_outputs_first_and_announces_threads(files, capsys):
    """annrepro.cli: outputs checked before any work (one line, exit 2), threads said."""
    tmp, p, _, _ = files
    (tmp / "file").write_text("")
    bad = str(tmp / "file" / "out.npy")
    runs = {
        "teacher": ["--xb", str(p["xb"]), "--xt", str(p["xt"]), "--out", bad],
        "train": ["--xb", str(p["xb"]), "--xt", str(p["xt"]), "--labels", str(p["gt"])]
        + ["--out", bad],
        "search": ["--index", str(tmp / "kd.npz"), "--xq", str(p["xq"]), "--out", bad],
        "encode": ["--index", str(tmp / "kd.npz"), "--xb", str(p["xq"]), "--codes-out", bad],
    }
    assert sorted(runs) == sorted(_subparsers())
    for name, argv in runs.items():
        assert main([name, *argv]) == 2
        assert "is a file, not a folder" in _one_error_line(capsys), name
    labels = tmp / "labels.npy"
    assert main(["teacher", *runs["teacher"][:4], "--out", str(labels), "--M", "8"]) == 0
    assert "kdindex teacher: 1 thread(s)" in capsys.readouterr().err
