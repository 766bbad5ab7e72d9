"""`KDIndex`: the public API of the KDindex method (Lu et al., NeurIPS 2023).

    index = KDIndex("AQ", metric="l2", B=8, W=256, K=10)  # + config=TrainConfig(...), epochs=5
    index.fit(xb, xq_train, teacher=HNSWTeacher(...))     # or labels=int64 (nt, K)
    D, I = index.search(xq, k=10)                          # exhaustive ADC; nprobe= for lists
                                                           # (faiss; method="numpy": the oracle)
    index.save("kd.npz"); KDIndex.load("kd.npz")

fit: warm start from faiss (Sec. 4.3), teacher labels (Sec. 3.1), iterative initialisation and
differentiable training (Algorithm 2, `train.train_student`), then the base's codes and posting
lists: Algorithm 1's balanced codes by default (`TrainConfig.balance_index`, the paper's final
index), else the nearest codes of the learned codebooks (AQ: faiss's beam search of width
`aq_beam`, the AQ baseline's encoder). Early stopping measures exactly the codes stored
(`train.index_codes`). The index has the layout of its student quantizer (Sec. 3.6).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import zipfile

import numpy as np
from annrepro.config import configured

from .posting import PostingListIndex
from .quantizers import KINDS, CodebookQuantizer, train_quantizer
from .student import Student, adc_search, check_device, reconstruction_norms2
from .train import TrainConfig, TrainResult, index_codes, train_student

__all__ = ["KDIndex"]

# the `format_version` in an index file's meta (annrepro.atomic); files written before it was
# recorded have none and are format 1
FORMAT_VERSION = 1

log = logging.getLogger(__name__)

# the arguments of `KDIndex(...)`: architecture (positional), then config, then the keyword-only
# other settings, then the warm start's settings and any TrainConfig field as overrides
_ARCHITECTURE = ("kind", "metric", "B", "W", "K")
_OTHER_SETTINGS = ("n_warm", "device")
# `train_quantizer`'s own settings of the warm start (the rest: kind, data, B, W, seed)
WARM_SETTINGS = tuple(
    name
    for name, p in inspect.signature(train_quantizer).parameters.items()
    if p.default is not inspect.Parameter.empty and name not in ("B", "W", "seed")
)
_TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def _configured(config: TrainConfig | None, overrides: dict) -> TrainConfig:
    """config (default `TrainConfig()`) with `overrides` replacing its fields (annrepro.config)."""
    text = (
        f"overrides: the warm start's {', '.join(WARM_SETTINGS)} and the TrainConfig fields "
        f"{', '.join(_TRAIN_FIELDS)}"
    )
    return configured("KDIndex", TrainConfig, config, overrides, architecture=_ARCHITECTURE,
                      other=_OTHER_SETTINGS, overrides_text=text)  # fmt: skip


class KDIndex:
    """A learned PQ / OPQ / AQ index distilled from a teacher's top-K lists.

    `KDIndex(<architecture>, config=None, *, <other settings>, **overrides)`, the convention of
    the three estimators:

    Architecture (positional or keyword):
        kind: "PQ" | "OPQ" | "AQ"; metric: "l2" | "ip"; B codebooks of W codewords (Sec. 4.1:
        8 and 256; W must be a power of two: codes are log2(W) bits); K: teacher neighbours per
        training query (Sec. 4.1: 10).
    Config:
        config: a `kdindex.train.TrainConfig` (loss, lr, batch size, epochs, balancing, seed,
            ...); None: `TrainConfig()`.
    Other settings (keyword only; outside the config):
        n_warm: documents sampled for the warm start (faiss, Sec. 4.3).
        device: torch device of the training and of the balanced encoding of the base at `fit`
            ("cpu", "cuda"; `student.check_device`); the warm start (faiss), `encode` and
            `search` (numpy / faiss) run on the host.
    **overrides:
        any `TrainConfig` field (epochs=5, lr=0.05, ...), applied on top of config: an override
        wins over the config's value; and the warm start's settings, `train_quantizer`'s
        opq_niter, aq_beam, aq_refine (kept in `self.warm`, part of a checkpoint's identity).
        An unknown name is a SettingError in one line listing the valid ones.
    """

    def __init__(
        self,
        kind: str = "AQ",
        metric: str = "l2",
        B: int = 8,
        W: int = 256,
        K: int = 10,
        config: TrainConfig | None = None,
        *,
        n_warm: int = 100_000,
        device: str = "cpu",
        **overrides,
    ):
        if kind not in KINDS:
            raise ValueError(f"unknown student kind {kind!r}; expected one of {KINDS}")
        if metric not in ("l2", "ip"):
            raise ValueError(f"unknown metric {metric!r}; expected 'l2' or 'ip'")
        W, B, K = int(W), int(B), int(K)
        if W < 2 or W & (W - 1):
            raise ValueError(
                f"W={W} is not a power of two: codes are stored on log2(W) bits, so W must be "
                "2, 4, 8, ..., 256, ..."
            )
        if B < 1 or K < 1:
            raise ValueError(f"B={B} and K={K} must be positive")
        self.kind, self.metric, self.B, self.W, self.K = kind, metric, B, W, K
        warm = {k: v for k, v in overrides.items() if k in WARM_SETTINGS}
        train = {k: v for k, v in overrides.items() if k not in WARM_SETTINGS}
        self.config = _configured(config, train)
        self.n_warm, self.warm = int(n_warm), warm
        self.device = check_device(device)
        self.quantizer: CodebookQuantizer | None = None
        self.codes: np.ndarray | None = None
        self.norms2: np.ndarray | None = None
        self.result: TrainResult | None = None
        self._posting: tuple | None = None  # (quantizer, codes, PostingListIndex) searched

    # ------------------------------------------------------------------ fit
    def _check_fit_inputs(self, xb, xq, teacher, labels):
        if xb.ndim != 2 or xq.ndim != 2:
            raise ValueError(f"base and queries must be 2-d arrays; got {xb.shape}, {xq.shape}")
        if xq.shape[1] != xb.shape[1]:
            raise ValueError(
                f"training queries have dimension {xq.shape[1]} but the base has {xb.shape[1]}"
            )
        if (teacher is None) == (labels is None):
            raise ValueError("give exactly one of teacher and labels")
        if self.K > len(xb):
            raise ValueError(f"K={self.K} exceeds the {len(xb)} base vectors")
        if teacher is not None:
            if teacher.metric != self.metric:
                raise ValueError(
                    f"the teacher was built with metric {teacher.metric!r} but the student uses "
                    f"{self.metric!r}: their top-K lists would rank by different similarities"
                )
            if teacher.d != xb.shape[1]:
                raise ValueError(f"teacher dimension {teacher.d} != base dimension {xb.shape[1]}")
            if self.K > teacher.ef_search:
                raise ValueError(
                    f"K={self.K} exceeds the teacher's efSearch={teacher.ef_search}: HNSW cannot "
                    "return more neighbours than its search beam; raise efSearch (Table 7)"
                )
            if teacher.nb != len(xb):
                raise ValueError(f"the teacher indexes {teacher.nb} vectors, the base {len(xb)}")
        else:
            labels = np.asarray(labels)
            if labels.ndim != 2 or labels.shape[0] != len(xq):
                raise ValueError(f"labels must be (nt={len(xq)}, K); got {labels.shape}")
            if labels.shape[1] < self.K:
                raise ValueError(f"labels hold {labels.shape[1]} neighbours < K={self.K}")
            if labels.min() < 0 or labels.max() >= len(xb):
                raise ValueError("labels hold ids outside the base")

    def fit(
        self,
        xb: np.ndarray,
        xq_train: np.ndarray,
        teacher=None,
        labels=None,
        checkpoint_dir=None,
        resume: bool = True,
    ) -> KDIndex:
        """Train on documents xb float32 (nb, d) and training queries xq_train float32 (nt, d)
        labelled by `teacher` (an `HNSWTeacher` built over xb) or by `labels` int64 (nt, >= K)
        (top-K ids, nearest first). Returns self.

        checkpoint_dir: a checkpoint (`last.pt`) is written there after every initialisation
        round and epoch, and training resumes from one found there (the same index, bit for bit,
        as an uninterrupted run; `train.train_student`); one of another configuration or data is
        refused (`train.CheckpointMismatch`). resume: False ignores (and overwrites) it. The warm
        start is recomputed on a resume (deterministic; the checkpoint holds the student)."""
        xb = np.ascontiguousarray(xb, dtype=np.float32)
        xq = np.ascontiguousarray(xq_train, dtype=np.float32)
        self._check_fit_inputs(xb, xq, teacher, labels)
        if teacher is not None:
            labels = teacher.label(xq, self.K)
        labels = np.ascontiguousarray(np.asarray(labels)[:, : self.K], dtype=np.int64)
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        sample = xb[np.sort(rng.permutation(len(xb))[: self.n_warm])]
        warm = train_quantizer(self.kind, sample, B=self.B, W=self.W, seed=cfg.seed, **self.warm)
        student = Student.from_quantizer(warm, sample, self.metric, cfg.temperature)
        student.to(self.device)  # built on the CPU, trained where it is (train.train_student)
        settings = {"n_warm": self.n_warm, "warm": dict(sorted(self.warm.items()))}
        self.result = train_student(
            student,
            xb,
            xq,
            labels,
            self.metric,
            cfg,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            settings=settings,
        )
        self.quantizer = student.to_quantizer()
        self.codes = index_codes(student, xb, cfg)  # what early stopping measured
        self.norms2 = reconstruction_norms2(self.quantizer, self.codes)
        return self

    # --------------------------------------------------------------- new documents
    def encode(self, x: np.ndarray) -> np.ndarray:
        """Codes int32 (n, B) of new documents x float32 (n, d) under the learned codebooks: the
        nearest codeword per subspace (PQ / OPQ), faiss's residual beam search of width aq_beam
        (AQ), as `CodebookQuantizer.encode`. Not Algorithm 1's balanced assignment: that is
        solved once over the training base at `fit`."""
        if self.quantizer is None:
            raise RuntimeError("fit or load the index before encoding")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.quantizer.d_in:
            raise ValueError(f"documents must be (n, {self.quantizer.d_in}); got {x.shape}")
        return self.quantizer.encode(x)

    def add(self, x: np.ndarray) -> None:
        """Append documents x float32 (n, d) with ids len(codes) ..: encoded by `encode` (no
        retraining); the posting lists and faiss indexes are rebuilt on the next search."""
        codes = self.encode(x)
        norms2 = reconstruction_norms2(self.quantizer, codes)
        if self.codes is None or len(self.codes) == 0:
            self.codes, self.norms2 = codes, norms2
        else:
            self.codes = np.concatenate([self.codes, codes])
            self.norms2 = np.concatenate([self.norms2, norms2])

    # --------------------------------------------------------------- search
    def search(
        self,
        xq: np.ndarray,
        k: int = 10,
        nprobe: int | None = None,
        return_ncand: bool = False,
        method: str = "faiss",
    ):
        """Top-k of queries xq float32 (nq, d). nprobe None: exhaustive asymmetric-distance
        search with look-up tables; else through the nprobe best posting lists per codebook
        (`PostingListIndex`, Sec. 3.4). method "faiss": faiss's indexes holding these codebooks
        and codes (`kdindex.faiss_search`; built on the first search and kept); "numpy": the
        numpy oracle (`student.adc_search` / the dense posting-list scan), same results up to
        exact ties. Returns (D float32 (nq, k), I int64 (nq, k)), and with return_ncand the
        number of documents scored per query, int64 (nq,)."""
        if self.quantizer is None:
            raise RuntimeError("fit or load the index before searching it")
        if method not in ("faiss", "numpy"):
            raise ValueError(f"method={method!r}; expected 'faiss' or 'numpy'")
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        if xq.ndim != 2 or xq.shape[1] != self.quantizer.d_in:
            raise ValueError(f"queries must be (nq, {self.quantizer.d_in}); got {xq.shape}")
        if nprobe is None and method == "numpy":
            D, I = adc_search(self.quantizer, self.codes, xq, k, self.metric, self.norms2)
            return (D, I, np.full(len(xq), len(self.codes), np.int64)) if return_ncand else (D, I)
        index = self.posting_lists()
        nprobe = self.W if nprobe is None else nprobe
        return index.search(xq, k, nprobe, return_ncand=return_ncand, method=method)

    def posting_lists(self) -> PostingListIndex:
        """The `PostingListIndex` of the stored codes (kept, with its faiss indexes, until the
        codebooks or codes are replaced)."""
        held = self._posting
        if held is None or held[0] is not self.quantizer or held[1] is not self.codes:
            q, codes = self.quantizer, self.codes
            index = PostingListIndex(q, self.metric, codes=codes, norms2=self.norms2)
            held = self._posting = (self.quantizer, self.codes, index)
        return held[2]

    def memory_bytes(self) -> dict[str, int]:
        """Codes + codebooks (+ rotation) bytes (Table 3)."""
        return self.quantizer.memory_bytes(len(self.codes))

    # ------------------------------------------------------------ save/load
    def save(self, path) -> None:
        """Write codebooks, rotation, codes and settings to an .npz file (atomically: a run
        killed while saving leaves the previous file, or none, never a part)."""
        from annrepro.atomic import atomic_savez

        if self.quantizer is None:
            raise RuntimeError("nothing to save: fit the index first")
        q = self.quantizer
        meta = {
            "kind": self.kind,
            "metric": self.metric,
            "B": self.B,
            "W": self.W,
            "K": self.K,
            "d_in": q.d_in,
            "d_out": q.d_out,
            "aq_beam": q.aq_beam,
            "balance_index": bool(self.config.balance_index),
            "curve": self.result.curve if self.result else [],
        }
        arrays = {"codebooks": q.codebooks, "codes": self.codes}
        if q.rotation is not None:
            arrays["rotation"] = q.rotation
        atomic_savez(path, arrays, meta, FORMAT_VERSION)

    @classmethod
    def load(cls, path) -> KDIndex:
        """Read an index written by `save`; a missing, truncated or foreign file is one
        InputError naming it."""
        from pathlib import Path

        from annrepro.errors import InputError

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such index file")
        try:  # our own file handle: np.load leaks its own on a damaged zip
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if not isinstance(meta, dict):
                    raise InputError(f"{path}: not a KDindex index (its meta is not a table)")
                version = meta.get("format_version", 1)
                if version != FORMAT_VERSION:
                    raise InputError(
                        f"{path}: index file format {version!r}; this kdindex reads "
                        f"{FORMAT_VERSION}"
                    )
                rotation = z["rotation"] if "rotation" in z.files else None
                q = CodebookQuantizer(
                    meta["kind"],
                    meta["d_in"],
                    meta["d_out"],
                    z["codebooks"],
                    rotation,
                    aq_beam=meta.get("aq_beam", 5),
                )
                codes = z["codes"]
        except InputError:  # a ValueError too: already one line naming the file
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            why = " ".join(str(e).split())[:160]
            if "pickled" in why:  # numpy's advice to unpickle a stranger's file: not ours to give
                why = "not a numpy .npz archive"
            raise InputError(
                f"{path}: not a readable KDindex index (truncated, damaged or another file? "
                f"{type(e).__name__}: {why})"
            ) from None
        index = cls(meta["kind"], meta["metric"], meta["B"], meta["W"], meta["K"])
        index.quantizer, index.codes = q, codes
        index.norms2 = reconstruction_norms2(q, codes)
        index.result = TrainResult(curve=meta["curve"])
        return index
