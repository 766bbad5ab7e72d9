"""annrepro: the common library of the ANN paper reproductions (vector IO, data sets, exact
ground truth, metrics, and the table spec / compare / report engine)."""

from .datasets import Dataset, DatasetError, get_dataset
from .groundtruth import GroundTruthError, knn_exact
from .metrics import mrr_at, n_recall_at, ndcg_at, one_recall_at, recall_at
from .vecio import VectorFileError, read_vectors, write_vectors

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "DatasetError",
    "GroundTruthError",
    "VectorFileError",
    "get_dataset",
    "knn_exact",
    "mrr_at",
    "n_recall_at",
    "ndcg_at",
    "one_recall_at",
    "read_vectors",
    "recall_at",
    "write_vectors",
]
