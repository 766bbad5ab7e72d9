"""`Catalyzer`: the public estimator (Sablayrolles et al., ICLR 2019).

    cat = Catalyzer(d_out=24, lam=0.02, preset="released", epochs=10).fit(xt)
    cat = Catalyzer(24, config=TrainConfig.preset("released", epochs=10))  # the same config
    codes = cat.encode(xb, "zn_79")            # uint64 (nb,) lattice codes, 64 bits
    D, I = cat.search(xq, codes, 10, "zn_79")   # asymmetric search (Sec. 4.2)
    cat.save("cat.pt"); cat = Catalyzer.load("cat.pt")

Quantizers: "zn_<r2>" (spherical lattice S_{d_out}^r, Sec. 4.2 / Appendix B; codes need
<= 64 bits) or "sign" (binary codes of d_out bits, Hamming search, Sec. 4.1).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
from annrepro.config import configured
from annrepro.errors import InputError, SettingError  # ValueErrors: bad input, one CLI line
from annrepro.validate import as_f32

from .search import check_codes, encode_outputs, search_codes
from .train import TrainConfig, TrainResult, check_device, train_catalyzer

__all__ = ["Catalyzer"]

log = logging.getLogger(__name__)

# the `format_version` of the files (annrepro.atomic); files written before it was the one key
# say "format" instead, same numbers
FORMAT = 1
CODES_FORMAT = 1  # save_codes / load_codes archives
KIND = "catalyzer.Catalyzer"


_ARCHITECTURE = ("d_out", "hidden", "lam")
_OTHER_SETTINGS = ("device",)


def _configured(config: TrainConfig | None, preset: str | None = None, **overrides) -> TrainConfig:
    """The `TrainConfig` of `Catalyzer(..., preset, config, **overrides)`: config (default
    `TrainConfig.preset(preset or "paper")`) with `overrides` replacing its fields (config itself
    when there are none). SettingError in one line for an unknown field, a config that is not a
    TrainConfig, or both config and preset; InputError for an unknown preset."""
    if config is not None and preset is not None and isinstance(config, TrainConfig):
        raise SettingError(
            f"Catalyzer: preset={preset!r} and config= both given: a config already holds a "
            f"preset's epochs and lr_stages (TrainConfig.preset({preset!r}, ...))"
        )
    others = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in _ARCHITECTURE]
    text = f"overrides (TrainConfig fields): {', '.join(others)}"
    return configured(
        "Catalyzer",
        TrainConfig,
        config,
        overrides,
        default=lambda: TrainConfig.preset("paper" if preset is None else preset),
        architecture=_ARCHITECTURE,
        other=("preset", *_OTHER_SETTINGS),
        overrides_text=text,
    )


def _format_of(header: dict):
    return header.get("format_version", header.get("format"))


class Catalyzer:
    """The catalyzer f (Sec. 3) with the quantizers applied to its output.

    `Catalyzer(<architecture>, config=None, *, <other settings>, **overrides)`, the convention of
    the three estimators:

    Architecture (positional or keyword; None: the config's value):
        d_out: output dimension (24 by default); hidden: hidden width (1024 in the paper).
        lam: the KoLeo weight (0.02 by default): a `TrainConfig` field, named here as it always
            was.
    Config:
        preset (4th, positional or keyword): "paper" (300 epochs, Sec. 5.2; the default) or
            "released" (160 epochs, authors' code): the `TrainConfig.preset` the config is when
            config is None.
        config: a `catalyzer.train.TrainConfig` (the training hyper-parameters and, for this
            model, d_out / hidden / lam too); None: `TrainConfig.preset(preset)`. Giving both
            config and preset is a SettingError (the config already holds a preset's epochs and
            lr_stages).
    Other settings (keyword only; outside the config):
        device: torch device of training and transform ("cpu", "cuda"; `train.check_device`):
            `load` gives a CPU model; `to` moves it.
    **overrides:
        any other `TrainConfig` field (epochs, batch_size, seed, n_val, ...), applied on top of
        config: an override and the architecture arguments win over the config's value. An
        unknown name is a SettingError in one line listing the valid ones.
    """

    device: str = "cpu"  # where the network is (instances made by `load`, `from_result`: CPU)

    def __init__(
        self,
        d_out: int | None = None,
        hidden: int | None = None,
        lam: float | None = None,
        preset: str | None = None,
        config: TrainConfig | None = None,
        *,
        device: str = "cpu",
        **overrides,
    ):
        named = {"d_out": d_out, "hidden": hidden, "lam": lam}
        named = {k: v for k, v in named.items() if v is not None}
        self.config = _configured(config, preset, **named, **overrides)
        self.device = check_device(device)
        self.net = None
        self.d_in: int | None = None
        self.fingerprint: str | None = None
        self.result: TrainResult | None = None

    # ---------------------------------------------------------------- training / transform
    def fit(
        self,
        xt: np.ndarray,
        progress: bool = False,
        checkpoint_dir: str | Path | None = None,
        resume: bool = True,
    ) -> Catalyzer:
        """Train on xt: float32 (nt, d_in) (its last config.n_val rows are held out).

        checkpoint_dir: a checkpoint (`last.pt`) is written there after every epoch, and
        training resumes from one found there (same weights as an uninterrupted run); one of
        another configuration or data is refused (`catalyzer.train.CheckpointMismatch`).
        resume: False ignores (and overwrites) a checkpoint in checkpoint_dir.
        """
        from annrepro.groundtruth import array_fingerprint

        xt = as_f32(xt)
        res = train_catalyzer(
            xt,
            self.config,
            progress=progress,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            device=self.device,
        )
        self._set(res.state_dict, res.d_in)
        self.result = res
        self.fingerprint = array_fingerprint(xt)
        return self

    @classmethod
    def from_result(cls, res: TrainResult, fingerprint: str | None = None) -> Catalyzer:
        cat = cls.__new__(cls)
        cat.config, cat.result, cat.fingerprint = res.config, res, fingerprint
        cat.net, cat.d_in = None, None
        cat._set(res.state_dict, res.d_in)
        return cat

    def _set(self, state_dict: dict, d_in: int) -> None:
        from .model import CatalyzerNet

        net = CatalyzerNet(d_in, self.config.d_out, self.config.hidden, self.config.arch)
        net.load_state_dict(state_dict)
        net.eval()
        self.net, self.d_in = net.to(self.device), int(d_in)

    def to(self, device: str) -> Catalyzer:
        """Move the network to `device` (`train.check_device`) for transform / encode / search;
        returns self."""
        self.device = check_device(device)
        if self.net is not None:
            self.net.to(self.device)
        return self

    def _need(self):
        if self.net is None:
            raise RuntimeError("the catalyzer is not trained: call fit() or load()")
        return self.net

    def transform(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Catalyzed features f(x): float32 (n, d_out), unit norm. x: float32 (n, d_in)."""
        import torch

        net = self._need()
        x = as_f32(x)
        if not x.flags.writeable:  # torch.from_numpy needs writable memory
            x = x.copy()
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise InputError(
                f"this catalyzer was trained on {self.d_in}-d vectors; got an array of shape "
                f"{x.shape}"
            )
        out = np.empty((x.shape[0], self.config.d_out), dtype=np.float32)
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                xb = torch.from_numpy(x[i : i + batch_size]).to(self.device)
                out[i : i + batch_size] = net(xb).cpu().numpy()
        return out

    # ------------------------------------------------------------------- quantizers
    def encode(self, x: np.ndarray, quantizer: str = "zn_79") -> np.ndarray:
        """Codes of x: uint64 (n,) for "zn_<r2>"; uint8 (n, ceil(d_out / 8)) for "sign"."""
        return encode_outputs(self.transform(x), quantizer)

    def search(self, xq: np.ndarray, codes: np.ndarray, k: int, quantizer: str = "zn_79"):
        """k-NN of xq among encoded vectors: (D, I), I int64 (nq, k).

        "zn_<r2>": asymmetric, the query is catalyzed but not quantized, D = squared L2 in the
        output space (Sec. 4.2). "sign": the query is binarised, D = Hamming distance (Sec. 4.1).
        codes must be what `encode(x, quantizer)` returns (dtype and shape are checked).
        """
        lattice = check_codes(codes, quantizer, self.config.d_out)
        return search_codes(self.transform(xq), np.asarray(codes), k, lattice)

    # ------------------------------------------------------------------- code files
    @property
    def model_id(self) -> str:
        """Fingerprint of this model (config, input dimension and weights): 16 hex digits."""
        import hashlib
        import json

        net = self._need()
        h = hashlib.sha256(json.dumps([self.config.to_dict(), self.d_in], sort_keys=True).encode())
        for key, v in sorted(net.state_dict().items()):
            h.update(key.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def save_codes(self, path, codes: np.ndarray, quantizer: str) -> Path:
        """Write codes with what made them (quantizer, model_id, d_in, d_out) to exactly `path`
        (an .npz archive whatever the name; atomic). Returns the path."""
        from annrepro.atomic import atomic_savez

        meta = {
            "quantizer": quantizer,
            "model_id": self.model_id,
            "d_in": self.d_in,
            "d_out": self.config.d_out,
        }
        return atomic_savez(path, {"codes": np.asarray(codes)}, meta, CODES_FORMAT)

    def load_codes(self, path, quantizer: str) -> np.ndarray:
        """Codes from `save_codes` (checked: same quantizer, same model) or a bare .npy array
        (checked by `search` for dtype and shape only)."""
        import json
        import zipfile

        path = Path(path)
        if not zipfile.is_zipfile(path):
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as f:
            if "codes" not in f or "meta" not in f:
                raise InputError(f"{path}: not a catalyzer codes file (no codes / meta)")
            meta = json.loads(str(f["meta"]))
            codes = f["codes"]
        if not isinstance(meta, dict) or _format_of(meta) != CODES_FORMAT:
            raise InputError(f"{path}: not a catalyzer codes file of format {CODES_FORMAT}")
        if meta.get("quantizer") != quantizer:
            raise InputError(
                f"{path}: codes made with quantizer {meta.get('quantizer')!r}, searched with "
                f"{quantizer!r}"
            )
        if meta.get("model_id") != self.model_id:
            raise InputError(
                f"{path}: codes made by another model (model {meta.get('model_id')}, d_out "
                f"{meta.get('d_out')}; this model {self.model_id}, d_out {self.config.d_out})"
            )
        return codes

    # ------------------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Weights + config + data fingerprint, one torch file (written atomically)."""
        from annrepro.atomic import atomic_save

        self._need()
        res = self.result
        blob = {
            "state_dict": self.net.state_dict(),
            "config": self.config.to_dict(),
            "d_in": self.d_in,
            "fingerprint": self.fingerprint,
            "best_epoch": None if res is None else res.best_epoch,
            "best_score": None if res is None else res.best_score,
        }
        try:
            atomic_save(path, blob, FORMAT, KIND)
        except (OSError, RuntimeError) as e:  # torch's "enforce fail" does not name the file
            raise InputError(f"{path}: cannot write the model ({e})") from None

    @classmethod
    def load(cls, path) -> Catalyzer:
        import torch

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such model file")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # zip / pickle / torch errors of a truncated or foreign file
            raise InputError(
                f"{path}: not a readable catalyzer model (truncated or damaged? "
                f"{type(e).__name__}: {' '.join(str(e).split())[:160]})"
            ) from None
        if isinstance(blob, dict) and blob.get("kind", KIND) != KIND:
            raise InputError(f"{path}: a {blob['kind']} file, not a catalyzer model")
        if not isinstance(blob, dict) or _format_of(blob) != FORMAT:
            raise InputError(f"{path}: not a catalyzer file of format {FORMAT}")
        cat = cls.__new__(cls)
        cat.config = TrainConfig.from_dict(blob["config"])
        cat.result, cat.fingerprint = None, blob.get("fingerprint")
        cat.net, cat.d_in = None, None
        cat._set(blob["state_dict"], blob["d_in"])
        return cat

    def __repr__(self) -> str:
        c = self.config
        state = "untrained" if self.net is None else f"d_in={self.d_in}"
        return f"Catalyzer({state}, d_out={c.d_out}, hidden={c.hidden}, lam={c.lam})"
