"""CCST training (Sec. 4.1) and the public API: fit, transform, save/load, checkpoints, errors."""

import numpy as np
import pytest
import torch
from ccst import CCST
from ccst import train as train_mod
from ccst.cli import main
from ccst.train import CheckpointMismatch, TrainConfig, TrainingDiverged

D = 16
TINY = {
    "compression_factor": 4,
    "depths": (1, 1),
    "heads": 2,
    "batch_size": 32,
    "epochs": 3,
    "checkpoint_every": 1,
    "progress": False,
}


pytestmark = pytest.mark.usefixtures("warm_torch_optim")


@pytest.fixture(scope="module")
def xt():
    return np.random.default_rng(0).standard_normal((100, D)).astype(np.float32)


def _states_equal(a, b):
    sa, sb = a.net.state_dict(), b.net.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fit_transform_shapes_and_history(xt):
    model = CCST(**TINY).fit(xt)
    assert (model.d_in, model.d_out) == (D, D // 4)
    assert [h["epoch"] for h in model.history] == [1, 2, 3]
    # poly schedule, power 0.9, per epoch (Sec. 4.1)
    lrs = [h["lr"] for h in model.history]
    np.testing.assert_allclose(lrs, [1e-4 * (1 - e / 3) ** 0.9 for e in range(3)])
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in model.history)
    y = model.transform(xt)
    assert y.shape == (100, 4) and y.dtype == np.float32 and y.flags.c_contiguous


def test_fit_is_deterministic(xt):
    a = CCST(**TINY, seed=3).fit(xt)
    b = CCST(**TINY, seed=3).fit(xt)
    assert _states_equal(a, b)
    assert a.history == b.history


def test_transform_batches_under_memory_bound(xt):
    model = CCST(**TINY).fit(xt)
    full = model.transform(xt)
    tiny_budget = 7 * model.bytes_per_vector() / 2**20  # 7 rows per forward pass
    np.testing.assert_allclose(model.transform(xt, max_memory_mb=tiny_budget), full, atol=1e-5)
    np.testing.assert_allclose(model.transform(xt, batch_size=1), full, atol=1e-5)


def test_save_load_round_trip(xt, tmp_path):
    model = CCST(**TINY, loss="abs").fit(xt)
    model.save(tmp_path / "m.pt")
    back = CCST.load(tmp_path / "m.pt")
    assert _states_equal(model, back)
    assert back.boundary == model.boundary and back.history == model.history
    assert back.config == model.config and back.train_config == model.train_config
    np.testing.assert_array_equal(back.transform(xt), model.transform(xt))


def test_transform_wrong_dimension(xt):
    model = CCST(**TINY).fit(xt)
    with pytest.raises(ValueError, match="dimension 12, but CCST was trained on dimension 16"):
        model.transform(np.zeros((3, 12), dtype=np.float32))


def test_transform_before_fit():
    with pytest.raises(RuntimeError, match="not fitted"):
        CCST().transform(np.zeros((3, 12), dtype=np.float32))


def test_factor_not_dividing_d_in(xt):
    with pytest.raises(ValueError, match="compression factor 3 does not divide"):
        CCST(**{**TINY, "compression_factor": 3}).fit(xt)


def test_duplicate_training_vectors():
    with pytest.raises(ValueError, match="boundary"):
        CCST(**TINY).fit(np.ones((50, D), dtype=np.float32))


def test_unknown_loss_variant():
    with pytest.raises(ValueError, match="unknown INRP variant"):
        TrainConfig(loss="huber")


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted_run(xt, tmp_path):
    straight = CCST(**TINY).fit(xt)

    def stop_after_first(record):
        if record["epoch"] == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        CCST(**TINY).fit(xt, checkpoint_dir=tmp_path, on_epoch_end=stop_after_first)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1
    resumed = CCST(**TINY).fit(xt, checkpoint_dir=tmp_path)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert _states_equal(straight, resumed)
    assert resumed.history == straight.history


def test_resume_from_another_configuration_fails(xt, tmp_path):
    CCST(**{**TINY, "epochs": 1}).fit(xt, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatch, match="heads: checkpoint 2 != now 1"):
        CCST(**{**TINY, "epochs": 1, "heads": 1}).fit(xt, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatch, match="lr"):
        CCST(**{**TINY, "epochs": 1, "lr": 1e-3}).fit(xt, checkpoint_dir=tmp_path)
    # resume=False starts afresh and overwrites
    CCST(**{**TINY, "epochs": 1, "heads": 1}).fit(xt, checkpoint_dir=tmp_path, resume=False)


def test_nan_loss_stops_naming_the_epoch_and_keeps_checkpoint(xt, tmp_path, monkeypatch):
    real = train_mod.inrp_loss
    calls = {"n": 0}
    batches_per_epoch = 3  # 95 training rows in batches of 32

    def flaky(fx, x, *args):
        calls["n"] += 1
        loss = real(fx, x, *args)
        if fx.requires_grad and calls["n"] > batches_per_epoch + 1:  # epoch 1 + its validation
            return loss * float("nan")
        return loss

    monkeypatch.setattr(train_mod, "inrp_loss", flaky)
    with pytest.raises(TrainingDiverged, match=r"at epoch 2 .*checkpoint .*epoch 1\)"):
        CCST(**TINY).fit(xt, checkpoint_dir=tmp_path)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_cli_train_and_compress(xt, tmp_path, capsys):
    np.save(tmp_path / "xt.npy", xt)
    model_path = tmp_path / "m.pt"
    argv = ["train", str(tmp_path / "xt.npy"), str(model_path), "--factor", "4"]
    argv += ["--depths", "1", "--heads", "2", "--epochs", "2", "--batch-size", "32"]
    assert main(argv) == 0
    assert (
        main(["compress", str(model_path), str(tmp_path / "xt.npy"), str(tmp_path / "y.npy")]) == 0
    )
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_array_equal(y, CCST.load(model_path).transform(xt))
    assert "16 -> 4" in capsys.readouterr().out


def test_cli_compress_on_dask_equals_the_single_process(xt, tmp_path, capsys):
    """`ccst compress --engine dask`: shards on 2 local workers read back as the same array."""
    pytest.importorskip("distributed")
    from annrepro.distributed import read_shards

    np.save(tmp_path / "xt.npy", xt)
    model_path = tmp_path / "m.pt"
    argv = ["train", str(tmp_path / "xt.npy"), str(model_path), "--factor", "4"]
    assert main(argv + ["--depths", "1", "--heads", "2", "--epochs", "1"]) == 0
    out = tmp_path / "shards"
    argv = ["compress", str(model_path), str(tmp_path / "xt.npy"), str(out)]
    assert main(argv + ["--engine", "dask", "--workers", "2", "--shard-rows", "50"]) == 0
    y = read_shards(out)
    np.testing.assert_allclose(y, CCST.load(model_path).transform(xt), rtol=1e-5, atol=1e-6)
    assert "shards in" in capsys.readouterr().out


def test_cli_errors_are_reported(xt, tmp_path, capsys):
    np.save(tmp_path / "xt.npy", xt)
    argv = ["train", str(tmp_path / "xt.npy"), str(tmp_path / "m.pt"), "--factor", "3"]
    assert main(argv) == 2  # bad input: exit 2, one line
    assert capsys.readouterr().err.strip().startswith("ccst: error: compression factor 3 does not")


def test_cli_train_killed_then_rerun_gives_the_uninterrupted_weights(xt, tmp_path):
    """kill -9 of `ccst train --checkpoint-dir` mid-training; the same command again resumes and
    ends with the weights of an uninterrupted run, every tensor equal."""
    import os
    import signal
    import subprocess
    import sys
    import time

    np.save(tmp_path / "xt.npy", xt)
    common = ["--factor", "4", "--depths", "1", "--heads", "2", "--epochs", "12"]
    common += ["--batch-size", "16", "--checkpoint-every", "1", "--threads", "1"]
    straight = tmp_path / "straight.pt"
    assert main(["train", str(tmp_path / "xt.npy"), str(straight), *common]) == 0

    ckdir, model = tmp_path / "ck", tmp_path / "model.pt"
    cmd = [sys.executable, "-m", "ccst.cli", "train", str(tmp_path / "xt.npy"), str(model)]
    cmd += [*common, "--checkpoint-dir", str(ckdir)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (ckdir / "last.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint after 60 s"
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL and not model.exists()  # killed mid-training
    done = torch.load(ckdir / "last.pt", weights_only=True)["epoch"]
    assert 1 <= done < 12
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    a, b = torch.load(straight, weights_only=True), torch.load(model, weights_only=True)
    sa, sb = a["state_dict"], b["state_dict"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
