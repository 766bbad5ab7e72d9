"""`train_student` / `KDIndex.fit` / `kdindex train` checkpoints: one atomic checkpoint after every
iterative-initialisation round and every differentiable epoch, an exact resume (bit-identical
codebooks, codes and curve to an uninterrupted run, also after kill -9), and one clear error for
a checkpoint of another configuration or data, or a corrupt one."""

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import kdindex
import kdindex.train
import numpy as np
import pytest
import torch
from annrepro.errors import InputError
from kdindex.api import KDIndex
from kdindex.cli import main as cli_main
from kdindex.train import CheckpointMismatch, TrainConfig

CKPT = "last.pt"
NB_PER_UNIT = 5  # 72 training queries (80 minus 8 held out) in batches of 16


def _data(nb=300, nt=80, d=8, seed=0):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((nb, d)).astype(np.float32)
    xq = rng.standard_normal((nt, d)).astype(np.float32)
    labels = np.argsort(((xq[:, None] - xb[None]) ** 2).sum(-1), 1)[:, :10]
    return xb, xq, labels


def _cfg(**kw):
    # nearest codes in the initialisation: it runs all init_max_rounds rounds (balanced codes
    # end it after one); lr 0.05 and patience 2: the best epoch is 1 (PQ) or 2 (AQ), and early
    # stopping ends the run two epochs later, before `epochs`
    base = dict(epochs=6, init_max_rounds=3, init_balance=False, patience=2, batch_size=16,
                lr=0.05, progress=False)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _fit(cfg, kind="PQ", data=None, n_warm=300, **fit_kw):
    xb, xq, labels = data or _data()
    index = KDIndex(kind, "l2", B=2, W=16, K=10, config=cfg, n_warm=n_warm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return index.fit(xb, xq, labels=labels, **fit_kw)


def _same_index(a: KDIndex, b: KDIndex) -> bool:
    qa, qb = a.quantizer, b.quantizer
    rot = (qa.rotation is None and qb.rotation is None) or np.array_equal(qa.rotation, qb.rotation)
    return (
        np.array_equal(qa.codebooks, qb.codebooks)
        and rot
        and np.array_equal(a.codes, b.codes)
        # repr: the curve's NaN (the loss of the validation before epoch 0) equals itself
        and repr(a.result.as_dict()) == repr(b.result.as_dict())
    )


def _load(path):
    return torch.load(path, weights_only=True)


class _Stop(Exception):
    """Stands in for an interruption (Ctrl-C, a lost machine) inside a round or an epoch."""


def _stop_at_batch(monkeypatch, n: int):
    """Raise _Stop at the n-th (0-based) mini-batch of the training (rounds and epochs)."""
    real, calls = kdindex.train._batch_loss, [0]

    def batch_loss(*a, **kw):
        if calls[0] == n:
            raise _Stop
        calls[0] += 1
        return real(*a, **kw)

    monkeypatch.setattr(kdindex.train, "_batch_loss", batch_loss)


# ------------------------------------------------------------------ (a) on vs off: same index
@pytest.mark.parametrize("kind", ["OPQ", "AQ"])
def test_checkpointing_does_not_change_training(tmp_path, kind):
    plain = _fit(_cfg(), kind)
    ckpt = _fit(_cfg(), kind, checkpoint_dir=tmp_path)
    assert _same_index(plain, ckpt)
    blob = _load(tmp_path / CKPT)
    assert blob["phase"] == "done"  # the last checkpoint is the finished run
    assert blob["round"] == plain.result.init_rounds == 3
    assert not [p for p in tmp_path.iterdir() if p.name != CKPT]  # no temporaries left


# --------------------------------------------- (b) interrupted in round / epoch k, then resumed
@pytest.mark.parametrize(
    ("kind", "unit", "where"),
    [
        ("PQ", 1, ("init", 1, 0)),  # in init round 1: round 0 is done
        ("PQ", 3, ("diff", 3, 0)),  # in the first epoch: the validation before it is redone
        ("PQ", 6, ("diff", 3, 3)),  # in epoch 3: the best state, patience, Adam's moments kept
        ("AQ", 7, ("diff", 3, 4)),
    ],
)
def test_interrupted_then_resumed_is_bit_identical(tmp_path, monkeypatch, kind, unit, where):
    straight = _fit(_cfg(), kind)
    epochs = [c["epoch"] for c in straight.result.curve if c["phase"] == "diff"]
    assert straight.result.best_epoch == {"PQ": 1, "AQ": 2}[kind]  # kept across the resume
    assert epochs[-1] == straight.result.best_epoch + 2 < _cfg().epochs - 1  # stopped early
    with monkeypatch.context() as m:
        _stop_at_batch(m, unit * NB_PER_UNIT + 2)  # the third batch of round / epoch `unit`
        with pytest.raises(_Stop):
            _fit(_cfg(), kind, checkpoint_dir=tmp_path)
    blob = _load(tmp_path / CKPT)
    assert (blob["phase"], blob["round"], blob["epoch"]) == where
    resumed = _fit(_cfg(), kind, checkpoint_dir=tmp_path)
    assert _same_index(straight, resumed)


def test_fit_resumes_a_finished_run_without_training(tmp_path, monkeypatch):
    first = _fit(_cfg(), checkpoint_dir=tmp_path)
    _stop_at_batch(monkeypatch, 0)  # any round or epoch run would raise
    again = _fit(_cfg(), checkpoint_dir=tmp_path)
    assert _same_index(first, again)
    with pytest.raises(_Stop):  # resume=False starts afresh
        _fit(_cfg(), checkpoint_dir=tmp_path, resume=False)


def test_save_is_atomic(tmp_path, monkeypatch):
    """A run killed while saving the index leaves the previous file whole, and no temporary."""
    index = _fit(_cfg(epochs=1, init_max_rounds=1))
    path = tmp_path / "kd.npz"
    index.save(path)
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 a part")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        index.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["kd.npz"]


# -------------------------------------------------------- (c) kill -9 of `kdindex train`, rerun
def test_cli_train_killed_then_rerun_gives_the_uninterrupted_index(tmp_path):
    from annrepro.vecio import write_vectors

    xb, xt, labels = _data(nb=2000, nt=400, d=16, seed=3)
    paths = {n: tmp_path / f"{n}.fvecs" for n in ("xb", "xt")}
    write_vectors(paths["xb"], xb)
    write_vectors(paths["xt"], xt)
    np.save(tmp_path / "labels.npy", labels.astype(np.int64))
    epochs = 8  # ~0.3 s each here (1 thread); patience 8: no early stop
    common = ["--xb", str(paths["xb"]), "--xt", str(paths["xt"]),
              "--labels", str(tmp_path / "labels.npy"), "--kind", "PQ", "-B", "4", "-W", "16",
              "--batch-size", "16", "--epochs", str(epochs), "--patience", str(epochs),
              "--init-rounds", "2", "--n-warm", "2000", "--threads", "1"]  # fmt: skip
    straight = tmp_path / "straight.npz"
    assert cli_main(["train", "--out", str(straight), *common]) == 0

    ckdir, index = tmp_path / "ck", tmp_path / "index.npz"
    cmd = [sys.executable, "-m", "kdindex.cli", "train", "--out", str(index), *common,
           "--checkpoint-dir", str(ckdir)]  # fmt: skip
    src = str(Path(kdindex.__file__).resolve().parents[1])  # the kdindex this test imports
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (ckdir / CKPT).exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint after 60 s"
            time.sleep(0.005)
        time.sleep(0.4)  # the first is after init round 0: into a later epoch, or a write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    blob = _load(ckdir / CKPT)
    assert blob["phase"] != "done" and not index.exists()  # killed mid-training
    done = (blob["phase"], blob["round"], blob["epoch"])

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from {ckdir / CKPT} at {done[0]}" in rerun.stderr
    with np.load(straight) as a, np.load(index) as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            assert np.array_equal(a[name], b[name]), name  # codebooks, codes, meta (the curve)


# ----------------------------------------------------- (d) another configuration or data: refused
def test_resume_refuses_another_configuration_or_data(tmp_path):
    xb, xq, labels = _data()
    cfg = _cfg(epochs=1, init_max_rounds=1)
    _fit(cfg, checkpoint_dir=tmp_path)
    path = tmp_path / CKPT
    before = path.read_bytes()
    with pytest.raises(CheckpointMismatch, match=rf"^{path}: .*another configuration.*lr: "):
        _fit(_cfg(epochs=1, init_max_rounds=1, lr=0.02), checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatch, match=rf"^{path}: .*epochs: checkpoint 1 != now 2"):
        _fit(_cfg(epochs=2, init_max_rounds=1), checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatch, match=rf"^{path}: .*kind: checkpoint 'PQ' != now 'OPQ'"):
        _fit(cfg, "OPQ", checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatch, match=rf"^{path}: .*n_warm: checkpoint 300 != now 200"):
        _fit(cfg, n_warm=200, checkpoint_dir=tmp_path)
    other = xb.copy()
    other[5, 0] += 1.0
    with pytest.raises(CheckpointMismatch, match=rf"^{path}: .*other base vectors"):
        _fit(cfg, data=(other, xq, labels), checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatch, match=rf"^{path}: .*other training queries"):
        _fit(cfg, data=(xb, xq[::-1].copy(), labels), checkpoint_dir=tmp_path)
    lab = labels.copy()
    lab[0, [0, 1]] = lab[0, [1, 0]]
    with pytest.raises(CheckpointMismatch, match=rf"^{path}: .*other labels"):
        _fit(cfg, data=(xb, xq, lab), checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatch, match=rf"^{path}: .*validation split"):
        _fit(_cfg(epochs=1, init_max_rounds=1, val_frac=0.2), checkpoint_dir=tmp_path)
    assert path.read_bytes() == before  # the refused runs left it alone
    # display only: another progress setting resumes
    _fit(_cfg(epochs=1, init_max_rounds=1, progress=True), checkpoint_dir=tmp_path)


# ----------------------------------------------------------------- (e) corrupt checkpoint: refused
def test_corrupt_or_foreign_checkpoint_is_one_clear_error(tmp_path, capsys):
    cfg = _cfg(epochs=1, init_max_rounds=1)
    _fit(cfg, checkpoint_dir=tmp_path)
    path = tmp_path / CKPT
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])  # truncated, as by a full disk
    with pytest.raises(InputError, match=rf"^{path}: unreadable checkpoint \(truncated or corrupt"):
        _fit(cfg, checkpoint_dir=tmp_path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match=rf"^{path}: unreadable checkpoint"):
        _fit(cfg, checkpoint_dir=tmp_path)
    torch.save({"state_dict": {}}, path)  # a torch file, but not a checkpoint
    with pytest.raises(InputError, match=rf"^{path}: not a KDindex checkpoint"):
        _fit(cfg, checkpoint_dir=tmp_path)

    # the command line: one line naming the file, exit 2, no traceback, no index written
    from annrepro.vecio import write_vectors

    xb, xq, labels = _data()
    write_vectors(tmp_path / "xb.fvecs", xb)
    write_vectors(tmp_path / "xt.fvecs", xq)
    np.save(tmp_path / "labels.npy", labels.astype(np.int64))
    out = tmp_path / "kd.npz"
    args = ["train", "--xb", str(tmp_path / "xb.fvecs"), "--xt", str(tmp_path / "xt.fvecs"),
            "--labels", str(tmp_path / "labels.npy"), "--out", str(out), "--kind", "PQ",
            "-B", "2", "-W", "16", "--epochs", "1", "--init-rounds", "1", "--n-warm", "300",
            "--threads", "1", "--checkpoint-dir", str(tmp_path)]  # fmt: skip
    path.write_bytes(blob[:100])
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli_main(args) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "thread(s)" not in ln]
    assert len(err) == 1, err
    assert err[0].startswith(f"kdindex: error: {path}: unreadable checkpoint"), err[0]
    assert not out.exists()
