"""KDindex reproduction: Knowledge Distillation for High Dimensional Search Index (Lu et al.,
NeurIPS 2023).

Public API:
- `CodebookQuantizer`, `train_quantizer`, `quantizer_memory_bytes`: PQ / OPQ / AQ with B
  codebooks of W codewords (Sec. 2.2), trained with faiss, held as arrays;
- `PostingListIndex`: search through the codewords' posting lists (Sec. 2.2, 3.4, App. D);
- `HNSWTeacher`: the hnswlib teacher that labels training queries with their top-K (Sec. 3.1,
  Table 7);
- `KDIndex` (`kdindex.api`): the distilled student index (Sec. 3, Algorithm 2): fit / search /
  save / load; its parts are `kdindex.losses` (Eq. 2, 4-6), `kdindex.balance` (Algorithm 1),
  `kdindex.student` (differentiable PQ / OPQ / AQ, ADC search), `kdindex.train` (Algorithm 2).
  They import torch: `kdindex.KDIndex` and `kdindex.TrainConfig` load on first access.

Table producers live in `kdindex.tables` (entry point `annrepro.tables`).
"""

from .posting import PostingListIndex, posting_list_sizes
from .quantizers import KINDS, CodebookQuantizer, pad_dim, quantizer_memory_bytes, train_quantizer
from .teacher import HNSWTeacher, hnsw_memory_bytes_estimate

__all__ = [
    "KDIndex",
    "KINDS",
    "CodebookQuantizer",
    "HNSWTeacher",
    "PostingListIndex",
    "hnsw_memory_bytes_estimate",
    "pad_dim",
    "posting_list_sizes",
    "quantizer_memory_bytes",
    "train_quantizer",
    "TrainConfig",
]

__version__ = "0.1.0"


def __getattr__(name):
    # torch is imported on first use of the learned index only
    if name == "KDIndex":
        from .api import KDIndex

        return KDIndex
    if name == "TrainConfig":
        from .train import TrainConfig

        return TrainConfig
    raise AttributeError(f"module 'kdindex' has no attribute {name!r}")
