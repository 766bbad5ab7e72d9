"""`catalyzer.search` (one module for the quantized searches) and `catalyzer.cache` (the model
cache of the table producers and its file format)."""

import numpy as np
import pytest
import torch
from annrepro.errors import InputError
from catalyzer import TrainConfig
from catalyzer.cache import cache_key, fit_cached, result_from_blob, result_to_blob
from catalyzer.search import check_codes, encode_outputs, quantized_search, search_codes


def _unit(n, d, seed):
    y = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return y / np.linalg.norm(y, axis=1, keepdims=True)


@pytest.mark.parametrize("quantizer", ["zn_10", "sign"])
def test_stored_codes_and_on_the_fly_search_find_the_same_neighbours(quantizer):
    yb, yq = _unit(300, 8, 0), _unit(20, 8, 1)
    codes = encode_outputs(yb, quantizer)
    lattice = check_codes(codes, quantizer, 8)
    D, I = search_codes(yq, codes, 10, lattice)
    ref = quantized_search(yq, yb, 10, quantizer)
    if quantizer == "sign":  # Hamming distances tie a lot: compare the distances of the ids
        bits = np.unpackbits(codes, axis=1)[:, :8]
        qbits = (yq > 0).astype(np.uint8)
        np.testing.assert_array_equal(D, (bits[ref] != qbits[:, None]).sum(-1))
    else:
        np.testing.assert_array_equal(I, ref)


def test_check_codes_refuses_codes_of_another_kind():
    yb = _unit(10, 8, 0)
    with pytest.raises(InputError, match="uint64"):
        check_codes(encode_outputs(yb, "sign"), "zn_10", 8)
    with pytest.raises(InputError, match=r"uint8 \(n, 1\)"):
        check_codes(encode_outputs(yb, "zn_10"), "sign", 8)
    with pytest.raises(InputError, match="unknown quantizer"):
        check_codes(np.zeros(3, np.uint64), "pq8", 8)


def test_cached_result_round_trips_and_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNREPRO_CACHE", str(tmp_path))
    import catalyzer.cache as cache

    x = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    cfg = TrainConfig.preset(
        "released", d_out=8, hidden=16, epochs=1, batch_size=32, k_neg=10, n_val=0
    )
    res, hit = fit_cached(x, cfg, data_key="toy")
    assert not hit
    back = result_from_blob(result_to_blob(res))
    assert back.config == cfg and back.history == res.history
    assert all(torch.equal(back.state_dict[k], v) for k, v in res.state_dict.items())
    files = list((tmp_path / "models").glob("catalyzer-*.pt"))
    assert [f.name for f in files] == [f"catalyzer-{cache_key('toy', cfg)}.pt"]
    again, hit = fit_cached(x, cfg, data_key="toy")  # read back from disk
    assert hit and again.best_epoch == res.best_epoch
    assert all(torch.equal(again.state_dict[k], v) for k, v in res.state_dict.items())
    assert torch.load(files[0], weights_only=True)["format_version"] == cache.CACHE_FORMAT


def test_run_memo_trains_once_and_reports_reuse(tmp_path, monkeypatch):
    from annrepro.testing import FakeContext

    monkeypatch.setenv("ANNREPRO_CACHE", str(tmp_path))
    x = np.random.default_rng(1).standard_normal((200, 8)).astype(np.float32)
    cfg = TrainConfig.preset(
        "released", d_out=8, hidden=16, epochs=1, batch_size=32, k_neg=10, n_val=0
    )
    ctx = FakeContext(None)
    first, hit1 = fit_cached(x, cfg, data_key="toy2", cache=False, memo=ctx.memo)
    second, hit2 = fit_cached(x, cfg, data_key="toy2", cache=False, memo=ctx.memo)
    assert (hit1, hit2) == (False, True) and second is first
