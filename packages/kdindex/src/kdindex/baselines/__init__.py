"""The learned baselines of KDindex's Table 2, re-implemented (Sec. 4.1, App. B.2).

The paper re-ran the supervised learnable indexes "with optimized objectives proposed in KDindex
instead of interaction information-based loss function" (Sec. 4.1). These are therefore NOT the
original authors' code: each is a re-implementation, trained on the same data as KDindex (training
queries labelled by the teacher's top-K, Sec. 3.1) with a KDindex distillation objective (the
weighted KL of Eq. 5 on the scores of the quantized neighbours by default, `DEFAULT_LOSS` in
`_common`, where the measurements that ruled out Eq. 6 are; `lb_loss` selects Eq. 6 or Eq. 4) plus
the reconstruction loss (Eq. 2), and each keeps the ingredient that defines it, one module each:

- `diffpq`: DiffPQ (Chen et al. 2020), softmax-relaxed PQ assignments;
- `deeppq`: DeepPQ (Gao et al. 2019), progressive additive codes;
- `gcd`: GCD (Jiang et al. 2022), a Givens-rotation OPQ;
- `repconc`: RepCONC (Zhan et al. 2022), uniform clustering and a contrastive ranking loss;
- `pqvae`: PQ-VAE (Wu & Flierl 2019), an MLP auto-encoder around a PQ bottleneck.

`_common` holds what they share (the `lb_*` params, `LBConfig`; the loss; the warm start),
`_train` builds, trains and scores one of them (`evaluate_learned_baseline`).

Every method yields B codebooks of W codewords (Sec. 4.1: 8 and 256) and codes of the base,
searched with the same posting-list index as the faiss baselines (`posting.PostingListIndex`,
same nprobe): DiffPQ and RepCONC as PQ, GCD as OPQ (its rotation), DeepPQ as AQ, PQ-VAE through
its decoder (`DecodedQuantizer`).
"""

from ._common import LBConfig
from ._train import LEARNED_BASELINES, build_model, evaluate_learned_baseline, fit_model
from .deeppq import DeepPQ
from .diffpq import DiffPQ
from .gcd import GCD, givens_block, greedy_pairs
from .pqvae import PQVAE, DecodedQuantizer
from .repconc import RepCONC, capacity_round

__all__ = [
    "GCD",
    "LEARNED_BASELINES",
    "PQVAE",
    "DecodedQuantizer",
    "DeepPQ",
    "DiffPQ",
    "LBConfig",
    "RepCONC",
    "build_model",
    "capacity_round",
    "evaluate_learned_baseline",
    "fit_model",
    "givens_block",
    "greedy_pairs",
]
