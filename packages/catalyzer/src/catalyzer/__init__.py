"""catalyzer: reproduction of "Spreading vectors for similarity search" (Sablayrolles, Douze,
Schmid, Jegou; ICLR 2019).

Public API: the `Catalyzer` estimator (Sec. 3-5: network, KoLeo + rank losses, training,
lattice / sign codes, save / load), its building blocks (`CatalyzerNet`, losses, `TrainConfig`,
`train_catalyzer`), the spherical Zn lattice quantizer (Sec. 4.2, Appendix B) and the baselines of
Tables 1 and 2. The table producers live in `catalyzer.tables` (loaded by the annrepro runner
through the `annrepro.tables` entry point).
"""

from .api import Catalyzer
from .baselines import (
    EncodedSearch,
    encode_search,
    l2_normalize,
    lsq_index,
    opq_factory,
    opq_index,
    pca_lattice_search,
)
from .binary import hamming_knn, itq_index, lsh_index, sign_index
from .lattice import (
    ZnSphereLattice,
    atom_permutations,
    atom_points,
    atom_sign_bits,
    count_atoms,
    count_sphere_points,
)
from .losses import catalyzer_loss, koleo_loss, rank_loss
from .model import CatalyzerNet, StraightThroughLattice
from .train import PRESETS, TrainConfig, TrainingDiverged, TrainResult, train_catalyzer

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "Catalyzer",
    "CatalyzerNet",
    "StraightThroughLattice",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "catalyzer_loss",
    "koleo_loss",
    "rank_loss",
    "train_catalyzer",
    "EncodedSearch",
    "ZnSphereLattice",
    "atom_permutations",
    "atom_points",
    "atom_sign_bits",
    "count_atoms",
    "count_sphere_points",
    "encode_search",
    "hamming_knn",
    "itq_index",
    "l2_normalize",
    "lsh_index",
    "lsq_index",
    "opq_factory",
    "opq_index",
    "pca_lattice_search",
    "sign_index",
]
