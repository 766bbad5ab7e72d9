"""ccst.api.CCST's scale normalisation (f(x) = s_out * net(x / s_in), `input_scaling`) and its
transform into a given array (the memory-mapped compressed database of Table 2)."""

import numpy as np
import pytest
import torch
from ccst.api import CCST

pytestmark = pytest.mark.usefixtures("warm_torch_optim")

TINY = dict(compression_factor=4, depths=(1,), heads=1, epochs=1, batch_size=64, progress=False)


@pytest.fixture(scope="module")
def pixels():
    """0-255 scaled data: pairwise distances in the hundreds, as on fmnist."""
    rng = np.random.default_rng(0)
    return (rng.random((200, 16)) * 255).astype(np.float32)


def _mean_dist(y):
    y = torch.from_numpy(y).double()
    n = len(y)
    return float(torch.cdist(y, y).sum() / (n * (n - 1)))


def _train_mode_ratio(model, x):
    """Mean pairwise output distance over the INRP boundary, batch norms on batch statistics
    (as when the output scale is fitted)."""
    with torch.no_grad():
        y = model.net.train()(torch.from_numpy(x)).numpy()
    return _mean_dist(y) / model.boundary


@pytest.mark.parametrize("scaling", ["output", "boundary"])
def test_output_scale_matches_the_boundary(pixels, scaling):
    # a negligible learning rate: the network keeps its initial weights
    model = CCST(**TINY, input_scaling=scaling, lr=1e-12, scale_sample=200).fit(pixels)
    assert _train_mode_ratio(model, pixels) == pytest.approx(1.0, rel=1e-3)
    # without the scales the output distances are off: the batch norms set the output scale
    # (with the released batch norms or the LayerNorms far below the pixels' distances, 0.003
    # here; with neither 0.57)
    for norm in ("released", "layernorm", "none"):
        unscaled = CCST(**TINY, input_scaling="none", lr=1e-12, norm=norm).fit(pixels)
        ratio = _train_mode_ratio(unscaled, pixels)
        assert ratio < 0.3 if norm != "none" else not 0.7 < ratio < 1.3, (norm, ratio)


def test_scales_survive_save_load_and_bad_values_raise(pixels, tmp_path):
    model = CCST(**TINY, input_scaling="boundary").fit(pixels)
    assert float(model.net.in_scale) == pytest.approx(model.boundary)
    model.save(tmp_path / "m.pt")
    back = CCST.load(tmp_path / "m.pt")
    assert back.input_scaling == "boundary"
    np.testing.assert_array_equal(back.transform(pixels), model.transform(pixels))
    with pytest.raises(ValueError, match="input_scaling"):
        CCST(input_scaling="minmax")
    with pytest.raises(ValueError, match="scale_sample"):
        CCST(scale_sample=1)


def test_transform_into_given_array(pixels):
    model = CCST(**TINY).fit(pixels)
    out = np.zeros((200, 4), dtype=np.float32)
    assert model.transform(pixels, out=out, max_memory_mb=0.001) is out
    np.testing.assert_allclose(out, model.transform(pixels), rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="out must be float32"):
        model.transform(pixels, out=np.zeros((200, 3), dtype=np.float32))
