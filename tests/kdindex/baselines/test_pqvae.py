"""PQ-VAE (kdindex.baselines.pqvae): the straight-through encoder gradient and the search over
decoded reconstructions."""

import numpy as np
import torch
from annrepro.groundtruth import knn_exact
from kdindex.baselines import PQVAE, DecodedQuantizer, LBConfig, build_model, fit_model


def test_pqvae_straight_through_gradient_reaches_the_encoder(lb):
    B, W = lb.B, lb.W
    ds, _, _ = lb.data("l2")
    model = build_model("PQVAE", ds.xb, "l2", B, W, LBConfig())
    assert isinstance(model, PQVAE)
    x = torch.from_numpy(ds.xb[:64]) / model.scale
    xr, z, q = model(x)
    ((x - xr) ** 2).mean().backward()  # reconstruction only: reaches z only through the ST copy
    g = model.enc.net[2].weight.grad
    assert g is not None and g.abs().sum() > 0
    # without the straight-through copy the encoder gets nothing from the reconstruction
    model.zero_grad()
    ((x - model.dec(q)) ** 2).mean().backward()
    g = model.enc.net[2].weight.grad
    assert g is None or g.abs().sum() == 0


def test_pqvae_posting_search_ranks_by_decoded_reconstructions(lb):
    B, W = lb.B, lb.W
    ds, xt, labels = lb.data("ip")
    model = build_model("PQVAE", ds.xb, "ip", B, W, LBConfig(epochs=1, batch=32))
    fit_model(model, ds.xb, xt, labels)
    index = model.index(ds.xb)
    assert isinstance(index.quantizer, DecodedQuantizer)
    rec = index.quantizer.decode(index.codes)
    assert rec.shape == ds.xb.shape
    D, I = index.search(ds.xq, 10, W)  # all lists: exhaustive search over reconstructions
    D2, _ = knn_exact(ds.xq, rec, 10, "ip")
    np.testing.assert_allclose(D, D2, rtol=1e-4, atol=1e-4)
