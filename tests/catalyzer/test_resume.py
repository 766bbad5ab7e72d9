"""`train_catalyzer` / `Catalyzer.fit` / `catalyzer train` checkpoints: one atomic checkpoint per
epoch, an exact resume (bit-identical weights to an uninterrupted run, also after kill -9), and
one clear error for a checkpoint of another configuration or data, or a corrupt one."""

import os
import signal
import subprocess
import sys
import time

import catalyzer.losses
import catalyzer.train
import numpy as np
import pytest
import torch
from annrepro.errors import InputError
from catalyzer import Catalyzer, TrainConfig, TrainingDiverged, train_catalyzer
from catalyzer.cli import main as cli_main

CKPT = "last.pt"
TIMINGS = ("mine_s", "train_s", "val_s")


@pytest.fixture(scope="module", autouse=True)
def _torch_warm_up():
    """torch's first optimiser step imports lazily (~2 s): pay it once, outside the tests."""
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.zeros(2, 2)).sum().backward()
    opt.step()


def _x(n=300, d=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _cfg(**kw):
    # validation every epoch: the kept (best) state and its epoch must survive a resume too
    base = dict(d_out=8, hidden=16, epochs=4, batch_size=32, k_neg=10, lam=0.05, n_val=60,
                n_val_queries=20, val_quantizer="zn_3", val_every=1)  # fmt: skip
    base.update(kw)
    return TrainConfig.preset("released", **base)


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _losses(history):
    return [{k: v for k, v in rec.items() if k not in TIMINGS} for rec in history]


def _load(path):
    return torch.load(path, weights_only=True)


class _Stop(Exception):
    """Stands in for an interruption (Ctrl-C, a lost machine) at the start of an epoch."""


def _stop_at_epoch(monkeypatch, k: int):
    """Raise _Stop when epoch k (0-based) starts mining negatives: epochs 0..k-1 are done."""
    real, calls = catalyzer.train.mine_negatives, [0]

    def mine(*a, **kw):
        if calls[0] == k:
            raise _Stop
        calls[0] += 1
        return real(*a, **kw)

    monkeypatch.setattr(catalyzer.train, "mine_negatives", mine)


# ------------------------------------------------------------------ (a) on vs off: same weights
def test_checkpointing_does_not_change_training(tmp_path):
    x, cfg = _x(), _cfg()
    plain = train_catalyzer(x, cfg)
    ckpt = train_catalyzer(x, cfg, checkpoint_dir=tmp_path)
    assert _same_tensors(plain.state_dict, ckpt.state_dict)
    assert (plain.best_epoch, plain.best_score) == (ckpt.best_epoch, ckpt.best_score)
    assert _losses(plain.history) == _losses(ckpt.history)
    blob = _load(tmp_path / CKPT)
    assert blob["epoch"] == cfg.epochs  # the last checkpoint is the finished run
    assert not [p for p in tmp_path.iterdir() if p.name != CKPT]  # no temporaries left


# ---------------------------------------------------- (b) interrupted after epoch k, then resumed
@pytest.mark.parametrize("k", [1, 3])
def test_interrupted_then_resumed_is_bit_identical(tmp_path, monkeypatch, k):
    x, cfg = _x(), _cfg()
    straight_dir = tmp_path / "straight"
    straight = train_catalyzer(x, cfg, checkpoint_dir=straight_dir)
    with monkeypatch.context() as m:
        _stop_at_epoch(m, k)
        with pytest.raises(_Stop):
            train_catalyzer(x, cfg, checkpoint_dir=tmp_path / "run")
    assert _load(tmp_path / "run" / CKPT)["epoch"] == k
    resumed = train_catalyzer(x, cfg, checkpoint_dir=tmp_path / "run")
    assert _same_tensors(straight.state_dict, resumed.state_dict)  # the kept (best) state
    assert (straight.best_epoch, straight.best_score) == (resumed.best_epoch, resumed.best_score)
    assert _losses(straight.history) == _losses(resumed.history)
    a, b = _load(straight_dir / CKPT), _load(tmp_path / "run" / CKPT)
    assert _same_tensors(a["model"], b["model"])  # the last state too, and its momentum
    assert _same_tensors(a["optimizer"]["state"][0], b["optimizer"]["state"][0])


def test_api_fit_resumes_a_finished_run_without_training(tmp_path, monkeypatch):
    x = _x()
    kw = dict(d_out=8, hidden=16, lam=0.05, preset="released", epochs=2, batch_size=32, k_neg=10,
              n_val=0)  # fmt: skip
    first = Catalyzer(**kw).fit(x, checkpoint_dir=tmp_path)
    assert (tmp_path / CKPT).is_file()
    _stop_at_epoch(monkeypatch, 0)  # any epoch run would raise
    again = Catalyzer(**kw).fit(x, checkpoint_dir=tmp_path)
    assert _same_tensors(first.net.state_dict(), again.net.state_dict())
    assert again.model_id == first.model_id
    with pytest.raises(_Stop):  # resume=False starts afresh
        Catalyzer(**kw).fit(x, checkpoint_dir=tmp_path, resume=False)


def test_nan_loss_keeps_the_last_checkpoint_and_names_it(tmp_path, monkeypatch):
    real, calls = catalyzer.losses.catalyzer_loss, [0]

    def flaky(a, p, n, lam, eps=catalyzer.losses.KOLEO_EPS):
        calls[0] += 1
        total, lr, lk = real(a, p, n, lam, eps)
        return (total * float("nan") if calls[0] > 16 else total), lr, lk

    monkeypatch.setattr(catalyzer.losses, "catalyzer_loss", flaky)
    path = tmp_path / CKPT
    with pytest.raises(TrainingDiverged, match=rf"checkpoint {path} \(epochs done: 2\) is kept"):
        train_catalyzer(_x(), _cfg(), checkpoint_dir=tmp_path)  # 8 batches per epoch
    assert _load(path)["epoch"] == 2


# ------------------------------------------------------- (c) kill -9 of `catalyzer train`, rerun
def test_cli_train_killed_then_rerun_gives_the_uninterrupted_weights(tmp_path):
    from annrepro.vecio import write_fvecs

    xt = tmp_path / "learn.fvecs"
    write_fvecs(xt, _x(1200, 16, seed=3))
    epochs = 20  # ~0.1 s each here; validated at epochs 10 and 20 (the best state is resumed too)
    common = ["--xt", str(xt), "--d-out", "8", "--hidden", "32", "--preset", "released",
              "--epochs", str(epochs), "--batch-size", "32", "--n-val", "200",
              "--n-val-queries", "50", "--val-quantizer", "zn_3", "--threads", "1"]  # fmt: skip
    straight = tmp_path / "straight.pt"
    assert cli_main(["train", "--out", str(straight), *common]) == 0

    ckdir, model = tmp_path / "ck", tmp_path / "model.pt"
    cmd = [sys.executable, "-m", "catalyzer.cli", "train", "--out", str(model), *common,
           "--checkpoint-dir", str(ckdir)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (ckdir / CKPT).exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint after 60 s"
            time.sleep(0.005)
        time.sleep(0.05)  # into a later epoch, or a checkpoint write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done = _load(ckdir / CKPT)["epoch"]
    assert 1 <= done < epochs and not model.exists()  # killed mid-training

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from {ckdir / CKPT} at epoch {done}" in rerun.stderr
    a, b = _load(straight), _load(model)
    assert _same_tensors(a["state_dict"], b["state_dict"])
    assert (a["best_epoch"], a["best_score"]) == (b["best_epoch"], b["best_score"])


# ----------------------------------------------------- (d) another configuration or data: refused
def test_resume_refuses_another_configuration_or_data(tmp_path):
    x = _x()
    train_catalyzer(x, _cfg(epochs=1), checkpoint_dir=tmp_path)
    path = tmp_path / CKPT
    with pytest.raises(InputError, match=rf"{path}.*another configuration.*lam: checkpoint 0.05 "):
        train_catalyzer(x, _cfg(epochs=1, lam=0.1), checkpoint_dir=tmp_path)
    with pytest.raises(InputError, match=rf"{path}.*epochs: checkpoint 1 != now 2"):
        train_catalyzer(x, _cfg(epochs=2), checkpoint_dir=tmp_path)
    other = x.copy()
    other[0, 0] += 1.0
    with pytest.raises(InputError, match=rf"{path}.*other training data"):
        train_catalyzer(other, _cfg(epochs=1), checkpoint_dir=tmp_path)
    with pytest.raises(InputError, match=rf"{path}.*other training data"):  # another dimension
        train_catalyzer(_x(d=6), _cfg(epochs=1), checkpoint_dir=tmp_path)
    assert _load(path)["epoch"] == 1  # the refused runs left it alone


# ----------------------------------------------------------------- (e) corrupt checkpoint: refused
def test_corrupt_or_foreign_checkpoint_is_one_clear_error(tmp_path, capsys):
    x, cfg = _x(), _cfg(epochs=1)
    train_catalyzer(x, cfg, checkpoint_dir=tmp_path)
    path = tmp_path / CKPT
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])  # truncated, as by a full disk
    with pytest.raises(InputError, match=rf"^{path}: unreadable checkpoint \(truncated or corrupt"):
        train_catalyzer(x, cfg, checkpoint_dir=tmp_path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match=rf"^{path}: unreadable checkpoint"):
        train_catalyzer(x, cfg, checkpoint_dir=tmp_path)
    torch.save({"state_dict": {}}, path)  # a torch file, but not a checkpoint (a model file)
    with pytest.raises(InputError, match=rf"^{path}: not a catalyzer checkpoint"):
        train_catalyzer(x, cfg, checkpoint_dir=tmp_path)

    # the command line: one line naming the file, exit 2, no traceback
    np.save(tmp_path / "x.npy", x)
    args = ["train", "--xt", str(tmp_path / "x.npy"), "--out", str(tmp_path / "m.pt"),
            "--d-out", "8", "--hidden", "16", "--preset", "released", "--epochs", "1",
            "--batch-size", "32", "--n-val", "0", "--threads", "1",
            "--checkpoint-dir", str(tmp_path)]  # fmt: skip
    path.write_bytes(blob[:100])
    capsys.readouterr()
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert (
        err.strip().splitlines()[-1].startswith(f"catalyzer: error: {path}: unreadable checkpoint")
    )
    assert "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()
