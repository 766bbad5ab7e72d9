"""The KDindex method: losses (Eq. 2, 4-6), Sinkhorn balance (Algorithm 1), the straight-through
student (Algorithm 2), ADC search, the KDIndex API and its input checks."""

import math

import numpy as np
import pytest
import torch
from annrepro.groundtruth import knn_exact
from kdindex.api import KDIndex
from kdindex.balance import SinkhornWarning, balanced_assign, is_balanced, sinkhorn_plan
from kdindex.losses import (
    distribution_loss,
    lambdarank_loss,
    reconstruction_loss,
    weighted_kl_loss,
    weighted_kl_target,
)
from kdindex.quantizers import KINDS, train_quantizer
from kdindex.student import Student, adc_search, reconstruction_norms2
from kdindex.teacher import HNSWTeacher
from kdindex.train import TrainConfig

torch.set_num_threads(1)


def _x(n, d, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


# ------------------------------------------------------------------ losses
def test_distribution_loss_hand_values():
    # B = 1, W = 2: query softmax [1/2, 1/2]; both neighbours softmax [1/4, 3/4]
    lq = torch.zeros(1, 1, 2)
    ld = torch.tensor([0.0, math.log(3.0)]).expand(1, 2, 1, 2)
    ce = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    # Eq. 6 literally: the weights w = [1, 1/2] add -B (log 1 + log 1/2) = log 2
    assert distribution_loss(lq, ld).item() == pytest.approx(2 * ce + math.log(2), rel=1e-6)
    assert distribution_loss(lq, ld, rank_weighting="scale").item() == pytest.approx(
        1.5 * ce, rel=1e-6
    )
    with pytest.raises(ValueError):
        distribution_loss(lq, ld, rank_weighting="other")


def test_weighted_kl_hand_value():
    # default reading (losses.py): the rank weight multiplies the softmax probability,
    # p~ ∝ w exp(S): with w = [1, 1/2], p^g = softmax([0, log 1/2]) = [2/3, 1/3] and
    # p = softmax([log 3, log 1/2]) = [6/7, 1/7]
    s_true = torch.zeros(1, 2)
    s_quant = torch.tensor([[math.log(3.0), 0.0]])
    want = 2 / 3 * math.log((2 / 3) / (6 / 7)) + 1 / 3 * math.log((1 / 3) / (1 / 7))
    assert weighted_kl_loss(s_quant, s_true).item() == pytest.approx(want, rel=1e-6)
    assert weighted_kl_loss(s_true, s_true).item() == pytest.approx(0.0, abs=1e-7)
    # the literal reading w * S: p^g = softmax([0, 0]), p = softmax([log 3, 0])
    want = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    got = weighted_kl_loss(s_quant, s_true, weighting="score").item()
    assert got == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="weighting"):
        weighted_kl_loss(s_quant, s_true, weighting="other")


# teacher-ordered similarities S(q, d_i) of K = 10 neighbours (nearest first): minus squared L2
# distances (always negative) and inner products of both signs
_TEACHER_SCORES = {
    "l2": -torch.linspace(2.0, 6.5, 10)[None, :],
    "ip": torch.linspace(1.5, -3.0, 10)[None, :],
}


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_weighted_kl_target_mass_decreases_with_rank(metric):
    """Eq. 5: 'the high-ranked items are more concerned': the teacher's target distribution puts
    more mass on its first neighbour than on its second, ..., than on its tenth, whatever the
    sign of the similarity (minus L2 distances are all negative)."""
    pg = weighted_kl_target(_TEACHER_SCORES[metric])
    assert pg.shape == (1, 10)
    assert torch.all(pg[0, :-1] > pg[0, 1:]), pg
    # even with tied similarities the rank weight alone orders the mass
    tied = weighted_kl_target(torch.full((1, 10), -4.0))
    assert torch.all(tied[0, :-1] > tied[0, 1:]), tied
    # the literal reading p = w * S inverts it on negative similarities (the defect this guards)
    literal = weighted_kl_target(_TEACHER_SCORES["l2"], weighting="score")
    assert torch.all(literal[0, :-1] < literal[0, 1:]), literal


def test_lambdarank_hand_value():
    # the student ranks the teacher's 2nd candidate first: scores [0, 1]
    s = torch.tensor([[0.0, 1.0]])
    g1, g2 = 1.0, 2**0.5 - 1  # gains 2^rel - 1 with rel = 1, 1/2
    ideal = g1 + g2 / math.log2(3)
    dndcg = (g1 - g2) * (1 - 1 / math.log2(3)) / ideal
    want = math.log(1 + math.e) * dndcg
    assert lambdarank_loss(s).item() == pytest.approx(want, rel=1e-5)
    # gradient pushes the teacher's first candidate up
    s.requires_grad_(True)
    lambdarank_loss(s).backward()
    assert s.grad[0, 0] < 0 < s.grad[0, 1]


def test_reconstruction_loss_hand_value():
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    xr = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert reconstruction_loss(x, xr).item() == pytest.approx((4 + 1 + 1) / 4)
    assert reconstruction_loss(x, xr, scale=2.0).item() == pytest.approx(0.75)


# ------------------------------------------------------------------ balance
def test_sinkhorn_balances_columns():
    rng = np.random.default_rng(0)
    # a skewed cost: most rows prefer codeword 0
    cost = rng.random((200, 8)) + np.linspace(0, 1, 8)[None, :]
    plan = sinkhorn_plan(cost, reg=0.05)
    np.testing.assert_allclose(plan.sum(0), 1 / 8, rtol=1e-3)
    np.testing.assert_allclose(plan.sum(1), 1 / 200, rtol=1e-3)
    codes = balanced_assign(cost)
    assert is_balanced(codes, 8)
    assert not is_balanced(cost.argmin(1), 8)


def test_sinkhorn_warns_and_falls_back():
    # POT's plain solver underflows at this reg; the log-domain solver converges
    cost = np.random.default_rng(1).random((40, 4))
    with pytest.warns(SinkhornWarning, match="residual"):
        plan = sinkhorn_plan(cost, reg=5e-4, method="sinkhorn", num_iter=2000)
    np.testing.assert_allclose(plan.sum(0), 1 / 4, rtol=1e-3)


# ------------------------------------------------------------------ student
@pytest.mark.parametrize("kind", ["PQ", "AQ"])
def test_straight_through_forward_is_hard_and_gradient_reaches_all_codewords(kind):
    torch.manual_seed(0)
    B, W, d = 2, 4, 6
    cb = torch.randn(B, W, d // B if kind == "PQ" else d).numpy()
    s = Student(kind, cb, d, d, tau=np.ones(B, np.float32))
    x = torch.randn(5, d)
    codes, _, xr = s.assign(x, straight_through=True)
    torch.testing.assert_close(xr, s.decode(codes), rtol=1e-5, atol=1e-5)
    xr.pow(2).sum().backward()
    g = s.codebooks.grad
    assert g is not None
    # through p = softmax(-dist / tau), codewords no vector picked still get a gradient
    for b in range(B):
        unused = sorted(set(range(W)) - set(codes[:, b].tolist()))
        if unused:
            assert g[b, unused].abs().sum() > 0


def test_straight_through_gradient_equals_softmax_path():
    # (e - p).detach() + p has the value of e and the gradient of p
    logits = torch.tensor([[0.3, -0.2, 1.0]], requires_grad=True)
    p = torch.softmax(logits, 1)
    e = torch.nn.functional.one_hot(p.argmax(1), 3).float()
    (((e - p).detach() + p) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    g_st = logits.grad.clone()
    logits.grad = None
    (torch.softmax(logits, 1) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    torch.testing.assert_close(g_st, logits.grad)
    torch.testing.assert_close(((e - p).detach() + p), e)


# ------------------------------------------------------------------ ADC search
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_adc_equals_brute_force_over_reconstructions(kind, metric):
    xb, xq = _x(500, 8), _x(20, 8, seed=1)
    q = train_quantizer(kind, xb, B=2, W=16, seed=0, opq_niter=2, aq_beam=1, aq_refine=False)
    codes = q.encode(xb)
    D, I = adc_search(q, codes, xq, 5, metric, base_batch=128)
    rec = q.decode(codes)
    De, _ = knn_exact(q.transform(xq), rec, 5, metric)
    np.testing.assert_allclose(D, De, rtol=1e-4, atol=1e-4)
    # the returned ids have the returned scores (ids may differ only among equal codes)
    xt = q.transform(xq)
    got = np.einsum("qd,qkd->qk", xt, rec[I])
    if metric == "l2":
        got = ((xt[:, None, :] - rec[I]) ** 2).sum(-1)
    np.testing.assert_allclose(got, D, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ API
def _bare_index(kind="OPQ", metric="l2"):
    xb = _x(300, 8)
    q = train_quantizer(kind, xb, B=2, W=16, seed=0, opq_niter=2, aq_beam=1, aq_refine=False)
    idx = KDIndex(kind, metric, B=2, W=16)
    idx.quantizer = Student.from_quantizer(q, xb).to_quantizer()
    idx.codes = q.encode(xb)
    idx.norms2 = reconstruction_norms2(idx.quantizer, idx.codes)
    return idx


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(tmp_path, kind):
    idx = _bare_index(kind, "ip")
    xq = _x(10, 8, seed=2)
    idx.save(tmp_path / "kd.npz")
    back = KDIndex.load(tmp_path / "kd.npz")
    assert (back.kind, back.metric, back.B, back.W) == (kind, "ip", 2, 16)
    np.testing.assert_array_equal(back.codes, idx.codes)
    for a, b in zip(idx.search(xq, 5), back.search(xq, 5)):
        np.testing.assert_array_equal(a, b)
    # probing all W lists scores every document: same ranking as the exhaustive ADC, up to
    # near-ties (the two paths sum the look-up tables in another order; seen with AVX2 kernels)
    D_pl, I_pl = back.search(xq, 5, nprobe=16)
    D_adc, I_adc = idx.search(xq, 6)  # one more: the 5th may tie with the 6th
    np.testing.assert_allclose(D_pl, D_adc[:, :5], rtol=1e-5, atol=1e-5)
    same = I_pl == I_adc[:, :5]
    tie = np.isclose(D_adc[:, :, None], D_adc[:, None, :], rtol=1e-5, atol=1e-5).sum(2) > 1
    assert (same | tie[:, :5]).all()
    assert same.mean() > 0.9


def test_index_files_from_before_format_version_load(tmp_path):
    """Files saved before annrepro.atomic.atomic_savez wrote `format_version` have none: they
    are format 1 and load; a newer format is refused, naming the file."""
    import json

    from annrepro.errors import InputError

    idx = _bare_index("OPQ", "l2")
    idx.save(tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    assert meta.pop("format_version") == 1
    np.savez(tmp_path / "old.npz", meta=np.array(json.dumps(meta)), **arrays)
    xq = _x(10, 8, seed=2)
    for a, b in zip(KDIndex.load(tmp_path / "old.npz").search(xq, 5), idx.search(xq, 5)):
        np.testing.assert_array_equal(a, b)
    meta["format_version"] = 2
    np.savez(tmp_path / "v2.npz", meta=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(InputError, match="v2.npz: index file format 2; this kdindex reads 1"):
        KDIndex.load(tmp_path / "v2.npz")


def test_fit_tiny_end_to_end():
    xb, xq = _x(200, 8), _x(64, 8, seed=1)
    labels = knn_exact(xq, xb, 4, "l2")[1]
    cfg = TrainConfig(epochs=1, progress=False, batch_size=32, val_frac=0.25)
    idx = KDIndex("PQ", "l2", B=2, W=4, K=4, config=cfg, n_warm=200).fit(xb, xq, labels=labels)
    D, I = idx.search(xq[:5], 4)
    assert I.shape == (5, 4) and (I >= 0).all()
    assert [c["phase"] for c in idx.result.curve][0] == "init"
    assert idx.codes.shape == (200, 2)
    # documents scored per query: all of them exhaustively, only the probed lists' union else
    _, I_all, n_all = idx.search(xq[:5], 4, return_ncand=True)
    assert (n_all == 200).all() and (I_all == I).all()
    _, _, n_one = idx.search(xq[:5], 4, nprobe=1, return_ncand=True)
    lists = [set(np.flatnonzero(idx.codes[:, b] == c)) for b in range(2) for c in range(4)]
    assert (n_one < 200).all() and (n_one >= min(len(s) for s in lists)).all()


def _teacher(xb, metric="l2", ef=8):
    t = HNSWTeacher(xb.shape[1], metric, M=8, ef_construction=20, ef_search=ef, threads=1)
    t.build(xb)
    return t


def test_bad_inputs():
    xb, xq = _x(100, 8), _x(20, 8, seed=1)
    with pytest.raises(ValueError, match="dimension 6"):
        KDIndex("PQ", K=4).fit(xb, _x(20, 6), labels=np.zeros((20, 4), np.int64))
    with pytest.raises(ValueError, match="efSearch"):
        KDIndex("PQ", K=10).fit(xb, xq, teacher=_teacher(xb, ef=8))
    with pytest.raises(ValueError, match="exceeds the 100 base"):
        KDIndex("PQ", K=101).fit(xb, xq, labels=np.zeros((20, 101), np.int64))
    with pytest.raises(ValueError, match="power of two"):
        KDIndex("PQ", W=100)
    with pytest.raises(ValueError, match="metric 'ip'"):
        KDIndex("PQ", metric="l2", K=4).fit(xb, xq, teacher=_teacher(xb, "ip"))
    with pytest.raises(ValueError, match="squared L2"):
        balanced_assign(xb[:, :4] @ xb[:4, :4].T, metric="ip")  # inner products: an L2-only path
    with pytest.raises(ValueError, match="exactly one"):
        KDIndex("PQ", K=4).fit(xb, xq)
    with pytest.raises(RuntimeError):
        KDIndex("PQ").search(xq, 5)


def test_public_names_load_lazily():
    import kdindex
    from kdindex.api import KDIndex
    from kdindex.train import TrainConfig

    assert kdindex.KDIndex is KDIndex and kdindex.TrainConfig is TrainConfig
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        kdindex.Nope  # noqa: B018
