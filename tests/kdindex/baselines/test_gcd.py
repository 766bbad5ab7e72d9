"""GCD (kdindex.baselines.gcd): Givens rotations, greedy pairs, an orthogonal learned rotation."""

import numpy as np
import torch
from kdindex.baselines import GCD, LBConfig, build_model, fit_model, givens_block, greedy_pairs


def test_givens_product_is_orthogonal_and_rotates_rows():
    rng = np.random.default_rng(0)
    d = 9
    R = torch.eye(d)
    for _ in range(20):
        pairs = greedy_pairs(np.zeros((d, d)), rng, select="random")
        R = givens_block(R, pairs, torch.from_numpy(rng.uniform(-3, 3, len(pairs))).float())
    assert torch.allclose(R @ R.T, torch.eye(d), atol=1e-5)
    assert not torch.allclose(R, torch.eye(d), atol=0.1)
    # one rotation of the (0, 1) plane by theta: rows 0 and 1 mix as cos / sin
    G = givens_block(torch.eye(3), np.array([[0, 1]]), torch.tensor([0.5]))
    c, s = np.cos(0.5), np.sin(0.5)
    want = torch.tensor([[c, s, 0], [-s, c, 0], [0, 0, 1]], dtype=torch.float32)
    assert torch.allclose(G, want, atol=1e-6)


def test_greedy_pairs_are_disjoint_and_start_with_the_largest_entry():
    rng = np.random.default_rng(1)
    M = rng.standard_normal((8, 8))
    A = M - M.T
    pairs = greedy_pairs(A)
    assert pairs.shape == (4, 2)
    assert len(np.unique(pairs)) == 8
    iu, ju = np.triu_indices(8, 1)
    best = np.argmax(np.abs(A[iu, ju]))
    assert tuple(pairs[0]) == (iu[best], ju[best])


def test_givens_step_descends_a_rotation_loss():
    # L(R) = ||x R^T - y||^2 with y a rotated x: one GCD block along -A lowers L
    rng = np.random.default_rng(2)
    d = 6
    x = torch.from_numpy(rng.standard_normal((50, d))).float()
    Q = torch.from_numpy(np.linalg.qr(rng.standard_normal((d, d)))[0]).float()
    y = x @ Q.T
    R = torch.eye(d, requires_grad=True)
    loss = ((x @ R.T - y) ** 2).sum()
    loss.backward()
    A = (R.grad @ R.T - R @ R.grad.T).detach().numpy()
    pairs = greedy_pairs(A)
    theta = -0.01 * torch.from_numpy(A[pairs[:, 0], pairs[:, 1]] / np.abs(A).max()).float()
    R2 = givens_block(R.detach(), pairs, theta)
    assert ((x @ R2.T - y) ** 2).sum() < loss.detach()


def test_gcd_rotation_stays_orthogonal_and_moves(lb):
    B, W = lb.B, lb.W
    ds, xt, labels = lb.data("l2", d=14)  # 14 -> padded to 16: rotation (16, 14)
    model = build_model("GCD", ds.xb, "l2", B, W, LBConfig(epochs=2, batch=32, gcd_lr=0.05))
    assert isinstance(model, GCD)
    fit_model(model, ds.xb, xt, labels)
    R = model.R
    assert R.shape == (16, 16)
    assert torch.allclose(R @ R.T, torch.eye(16), atol=1e-4)
    assert not torch.allclose(R, torch.eye(16), atol=1e-3)
    q = model.quantizer()
    assert q.kind == "OPQ" and q.rotation.shape == (16, 14)
