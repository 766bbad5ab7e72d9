"""Distillation losses (KDindex Sec. 3.3, App. C.1, Eq. 4-6) and the reconstruction loss (Eq. 2).

The teacher returns, for a training query q, its top-K list `D_K^T` (Sec. 3.1); `rank(i)` is the
1-based position of candidate i in that list and `w_i = 1 / rank(i)` its rank weight (Eq. 5, 6).
All losses take torch tensors, return a scalar averaged over the queries of the batch, and are
written on *similarity* scores (higher is more similar): for L2 data the similarity is minus the
squared distance, as in `CodebookQuantizer.codeword_scores`.

Where the paper's formulas, read literally, do not train (each choice is a parameter):

- Eq. 6 (distribution-based loss): `log(p~ * w_i) = log p~ + log w_i` and `sum_k p~^q_bk = 1`, so
  the rank weight only adds the constant `-B sum_i log w_i`: it changes the loss value, not its
  gradient. `rank_weighting="eq6"` computes Eq. 6 literally (the default, the paper's formula);
  `"scale"` multiplies each candidate's cross entropy by w_i instead, the reading under which the
  weight matters.
- Eq. 5 (weighted KL) is printed as `- sum p^g log(p^g / p~)`, i.e. minus a KL divergence, which
  minimisation would push *up*; the text says the loss "attempts to minimize the distance", so it
  is implemented as the KL divergence `sum p^g log(p^g / p~)` (>= 0).
- Eq. 5's rank weight, `p_i = w_i S(q, Q(d_i))` then a softmax, read literally (`weighting=
  "score"`), puts *more* target mass on low ranks whenever S is negative: minus squared L2
  distances always are, so on L2 data the teacher's first neighbour gets the least mass and its
  tenth the most (measured: 3 % vs 13 % on 10 neighbours), against App. C.1's intent ("the rank
  information is also considered where the high-ranked items are more concerned"). Default
  (`weighting="prob"`): the weight multiplies the softmax *probability*, `p~_i ∝ w_i exp(S_i)`,
  i.e. logits `S_i + log w_i`, the way Eq. 6 applies the same w_i (`log(p~ w_i)`). Then the target
  mass decreases with rank for any sign of S, so for L2 and inner product alike.
- Eq. 4 (Lambdarank) sums `log(1 + exp(p_i - p_j)) |dNDCG_ij|` over i, j without saying which of
  the pair should win, and with binary relevance every swap inside the teacher's list leaves NDCG
  unchanged. Here: pairs with rank(i) < rank(j) (i should score higher), loss
  `log(1 + exp(p_j - p_i))`, graded relevance `rel_i = w_i = 1 / rank(i)` with gain
  `2^rel - 1`, and |dNDCG_ij| of swapping i and j at their current positions in the student's
  own ordering of the K candidates (LambdaRank, Burges 2006).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "LOSSES",
    "distribution_loss",
    "lambdarank_loss",
    "rank_weights",
    "reconstruction_loss",
    "weighted_kl_loss",
    "weighted_kl_target",
]

LOSSES = ("distribution", "weighted_kl", "lambdarank")
KL_WEIGHTINGS = ("prob", "score")  # Eq. 5's rank weight: on the probability, or on the score


def rank_weights(K: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """float (K,): w_i = 1 / rank(i), ranks 1..K (Eq. 5, 6), on `device` (default the CPU)."""
    return 1.0 / torch.arange(1, K + 1, dtype=dtype, device=device)


def _weights(weights, K: int, like: torch.Tensor) -> torch.Tensor:
    """`weights` (default 1 / rank) with the dtype and on the device of `like`: the losses take
    CPU weights (`rank_weights(K)`) for scores on any device."""
    if weights is None:
        return rank_weights(K, like.dtype, like.device)
    return weights.to(device=like.device, dtype=like.dtype)


def distribution_loss(
    logits_q: torch.Tensor,
    logits_d: torch.Tensor,
    weights: torch.Tensor | None = None,
    rank_weighting: str = "eq6",
) -> torch.Tensor:
    """Distribution-based loss (Eq. 1 = Eq. 6), the paper's default distillation loss.

    logits_q: float (n, B, W) similarity of each query to each codeword, `S(q, c^b_k)` (already
    divided by the softmax temperature); logits_d: float (n, K, B, W) the same for the query's K
    teacher neighbours; weights: float (K,) rank weights (default 1 / rank).

    `L = - sum_i sum_b sum_k p~^q_bk log(p~^{d_i}_bk * w_i)` with softmax over the W codewords of
    each codebook; mean over the n queries. `rank_weighting`: "eq6" (literal) or "scale"
    (`- sum_i w_i sum_b sum_k p~^q log p~^{d_i}`); see the module docstring.
    """
    n, K = logits_d.shape[:2]
    w = _weights(weights, K, logits_d)
    pq = F.softmax(logits_q, dim=-1)  # (n, B, W)
    log_pd = F.log_softmax(logits_d, dim=-1)  # (n, K, B, W)
    ce = -(pq[:, None] * log_pd).sum(dim=(-1, -2))  # (n, K): cross entropy summed over codebooks
    if rank_weighting == "eq6":
        B = logits_d.shape[2]
        per_query = ce.sum(1) - B * torch.log(w).sum()
    elif rank_weighting == "scale":
        per_query = (ce * w[None, :]).sum(1)
    else:
        raise ValueError(f"rank_weighting must be 'eq6' or 'scale'; got {rank_weighting!r}")
    return per_query.mean()


def _kl_logits(s: torch.Tensor, w: torch.Tensor, weighting: str) -> torch.Tensor:
    """Eq. 5's weighted scores before the softmax: `S + log w` ("prob", the default: the weight
    multiplies the softmax probability) or `w S` ("score", literal; inverts on negative S)."""
    if weighting == "prob":
        return s + torch.log(w)
    if weighting == "score":
        return s * w
    raise ValueError(f"weighting must be one of {KL_WEIGHTINGS}; got {weighting!r}")


def weighted_kl_target(
    s_true: torch.Tensor, weights: torch.Tensor | None = None, weighting: str = "prob"
) -> torch.Tensor:
    """The teacher's target distribution of Eq. 5, `p~^g` float (n, K): softmax over the K
    candidates of the rank-weighted similarities `S(q, d_i)` (s_true float (n, K), teacher order;
    weights float (K,), default 1 / rank; weighting: see the module docstring)."""
    K = s_true.shape[1]
    w = _weights(weights, K, s_true)
    return F.softmax(_kl_logits(s_true, w, weighting), dim=1)


def weighted_kl_loss(
    s_quant: torch.Tensor,
    s_true: torch.Tensor,
    weights: torch.Tensor | None = None,
    weighting: str = "prob",
) -> torch.Tensor:
    """Weighted KL loss (Eq. 5).

    s_quant: float (n, K) `S(q, Q(d_i))` to the quantized candidates; s_true: float (n, K)
    `S(q, d_i)` to the original vectors (no gradient needed); weights: float (K,) (default
    1 / rank). `p~` and `p~^g` are softmaxes over the K candidates of the rank-weighted scores
    (`weighting` "prob": `S + log w`, the default; "score": `w S`, literal; module docstring):
    `KL(p~^g || p~) = sum_i p~^g_i log(p~^g_i / p~_i)`, mean over queries.
    """
    K = s_quant.shape[1]
    w = _weights(weights, K, s_quant)
    log_p = F.log_softmax(_kl_logits(s_quant, w, weighting), dim=1)
    log_pg = F.log_softmax(_kl_logits(s_true, w, weighting), dim=1)
    return (log_pg.exp() * (log_pg - log_p)).sum(1).mean()


def _delta_ndcg(s: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """|dNDCG_ij| (n, K, K) of swapping candidates i and j at their current positions in the
    ordering of s (n, K) (descending); rel: (K,) graded relevance, gain 2^rel - 1."""
    n, K = s.shape
    order = torch.argsort(s, dim=1, descending=True)
    pos = torch.empty_like(order)
    pos.scatter_(1, order, torch.arange(K, device=s.device).expand(n, K))
    disc = 1.0 / torch.log2(pos.to(s.dtype) + 2.0)  # (n, K), position 0 -> 1 / log2(2)
    gain = (2.0**rel - 1.0).to(device=s.device, dtype=s.dtype)  # (K,)
    ranks = torch.arange(K, device=s.device)
    ideal = (torch.sort(gain, descending=True).values / torch.log2(ranks + 2.0)).sum()
    dg = (gain[:, None] - gain[None, :]).abs()  # (K, K)
    dd = (disc[:, :, None] - disc[:, None, :]).abs()  # (n, K, K)
    return dg[None] * dd / ideal


def lambdarank_loss(s_quant: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Lambdarank loss (Eq. 4).

    s_quant: float (n, K) `p_i = S(q, Q(d_i))` for the K teacher neighbours in teacher order;
    weights: float (K,) graded relevance (default 1 / rank). Sum over pairs rank(i) < rank(j) of
    `log(1 + exp(p_j - p_i)) |dNDCG@K_ij|` (K = 10 in the paper, so NDCG@10 covers the list),
    mean over queries; |dNDCG| is computed without gradient (module docstring).
    """
    n, K = s_quant.shape
    rel = _weights(weights, K, s_quant)
    with torch.no_grad():
        dndcg = _delta_ndcg(s_quant.detach(), rel)
    pair = F.softplus(s_quant[:, None, :] - s_quant[:, :, None])  # [n, i, j] = log(1+e^(p_j-p_i))
    ones = torch.ones(K, K, dtype=torch.bool, device=s_quant.device)
    upper = torch.triu(ones, diagonal=1)  # i ranked above j
    return (pair * dndcg * upper).sum(dim=(1, 2)).mean()


def reconstruction_loss(x: torch.Tensor, xr: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Reconstruction loss (Eq. 2): `(1/D) ||x - Q(x)||^2`, mean over the n vectors.

    x, xr: float (n, D) vectors and their reconstructions; scale: divides the loss (the trainer
    passes the data's mean squared coordinate so that the loss is scale-free; the paper is silent).
    """
    if x.shape != xr.shape:
        raise ValueError(f"x {tuple(x.shape)} and reconstruction {tuple(xr.shape)} differ")
    return ((x - xr) ** 2).mean() / scale


def check_kl_weighting(name: str) -> str:
    if name not in KL_WEIGHTINGS:
        raise ValueError(f"unknown weighted-KL weighting {name!r}; expected one of {KL_WEIGHTINGS}")
    return name


def check_loss(name: str) -> str:
    if name not in LOSSES:
        raise ValueError(f"unknown distillation loss {name!r}; expected one of {LOSSES}")
    return name
