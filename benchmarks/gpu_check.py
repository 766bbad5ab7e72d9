"""The GPU path end to end (issue 12 step 4): train each method a few epochs on a stand-in, then
encode / compress, and print per method the device, epochs, s/epoch, vectors/s and the peak GPU
memory. Not a reproduction: the figures say that `--device cuda` works and how fast it is.

    benchmarks/gpu_check.sh [--device cuda] [--quick]       # installs if needed, then this
    python benchmarks/gpu_check.py --device cuda            # < 10 min on a GPU (~1 min on H200?)
    python benchmarks/gpu_check.py --device cpu --quick     # < 2 min on a 2-core CPU
    python benchmarks/gpu_check.py --device cpu --quick --synthetic   # seconds (the test's)

Data (ANNREPRO_DATA or ../shared/data, `annrepro.datasets`): sift-10K for the catalyzer (learn
25k x 128) and KDindex (base 10k, training queries from learn), fmnist-1K for CCST (1000 x 784,
learn = base); a seeded Gaussian mixture of the same shapes when a data set is absent or with
--synthetic (with --quick --synthetic: tiny shapes). --quick trains smaller networks on fewer
vectors for one or two epochs.

Per method, one line `gpu_check <method>: key=value ...`:
- device, data, epochs;
- s/epoch: wall time of fit / epochs (catalyzer: its own epoch timer, mining and validation
  included; CCST: boundary estimate and validation included; KDindex: fit / (initialisation
  rounds + differentiable epochs), warm start, validation and final encoding included);
- train_vectors/s: catalyzer: training vectors stepped on per second of SGD; CCST: training
  vectors x epochs / fit time; KDindex: training queries x epochs / fit time;
- encode_vectors/s: catalyzer `encode(xb, "zn_79")`, CCST `transform(xb)`, KDindex the balanced
  encoding of the base (Algorithm 1, `train.index_codes`) on the device;
- 1-recall@10 of the encoded base (a sanity figure: it learned something);
- peak_gpu_memory: torch.cuda.max_memory_allocated over the method (fit + encode), MiB; "n/a on
  cpu" on the CPU.
Each method also checks that its network really is on the device (and, on CUDA, that memory was
allocated there), so a path that silently stays on the CPU fails. Exit 1 if a method failed
(the others still run), 2 for bad options (`--device cuda` without CUDA: one line).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

import numpy as np

MiB = 2**20

# shapes of the stand-ins (synthetic data of the same shapes when absent); --quick --synthetic:
# tiny. (nt learn, nb base, nq queries, d)
SHAPES = {
    "sift-10K": (25000, 10000, 100, 128),
    "fmnist-1K": (1000, 1000, 500, 784),
}
TINY = {"sift-10K": (600, 1000, 50, 32), "fmnist-1K": (300, 300, 50, 64)}


def _data(name: str, synthetic: bool, quick: bool):
    """(label, xt, xb, xq) float32 of the data set `name` or its synthetic stand-in."""
    why = "--synthetic"
    if not synthetic:
        from annrepro.datasets import get_dataset
        from annrepro.errors import AnnreproError

        try:
            ds = get_dataset(name)
            xt, xb, xq = (np.ascontiguousarray(a, dtype=np.float32) for a in (ds.xt, ds.xb, ds.xq))
            return name, xt, xb, xq
        except (AnnreproError, OSError) as e:
            why = f"{name} absent: {' '.join(str(e).split())[:100]}"
    from annrepro.datasets import synthetic_split

    nt, nb, nq, d = (TINY if quick else SHAPES)[name]
    xb, xt, xq = synthetic_split({"d": d, "nb": nb, "nt": nt, "nq": nq, "seed": 0})
    return f"synthetic {nt}x{d} ({why})", xt, xb, xq


def _recall10(xq, xb, I) -> float:
    """1-recall@10 of ids I (nq, >= 10) against the exact nearest neighbour of xq in xb."""
    import faiss
    from annrepro.metrics import one_recall_at

    return one_recall_at(I, faiss.knn(xq, xb, 1)[1], 10)


class _Peak:
    """Peak GPU memory of a block (MiB), or 'n/a on cpu'."""

    def __init__(self, device: str):
        import torch

        self.cuda = device.startswith("cuda")
        if self.cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        self.device = device

    def read(self) -> str:
        import torch

        if not self.cuda:
            return "n/a on cpu"
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device)
        if peak == 0:
            raise RuntimeError("no CUDA memory was allocated: the method ran on the CPU")
        return f"{peak / MiB:.0f}MiB"


def _on_device(module, device: str, what: str) -> None:
    import torch

    devices = {p.device for p in module.parameters()} | {b.device for b in module.buffers()}
    want = torch.device(device)
    bad = [d for d in devices if d.type != want.type]
    if bad:
        raise RuntimeError(f"{what} is on {bad[0]}, not on {device}")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def check_catalyzer(device: str, synthetic: bool, quick: bool) -> dict:
    from catalyzer import Catalyzer

    label, xt, xb, xq = _data("sift-10K", synthetic, quick)
    if quick and not synthetic:
        xt = xt[:6000]
    epochs = 1 if quick else 5
    hidden = 32 if quick and synthetic else 256 if quick else 1024  # Sec. 5.2: 1024
    n_val = len(xt) // 6  # held-out rows: queries + validation base
    peak = _Peak(device)
    cat = Catalyzer(
        d_out=24, hidden=hidden, lam=0.02, preset="released", epochs=epochs, n_val=n_val,
        n_val_queries=n_val // 5, val_every=epochs, device=device,
    )  # fmt: skip
    cat.fit(xt)
    _on_device(cat.net, device, "the catalyzer network")
    r = cat.result
    t0 = time.perf_counter()
    codes = cat.encode(xb, "zn_79")
    _sync(device)
    t_enc = time.perf_counter() - t0
    _, I = cat.search(xq, codes, 10, "zn_79")
    return {
        "data": label,
        "epochs": epochs,
        "s/epoch": r.train_s / epochs,
        "train_vectors/s": r.vectors_per_s,
        "encode_vectors/s": len(xb) / t_enc,
        "1-recall@10": _recall10(xq, xb, I),
        "peak_gpu_memory": peak.read(),
        "note": f"hidden {hidden}, {len(xt) - n_val} training vectors, zn_79 codes",
    }


def check_ccst(device: str, synthetic: bool, quick: bool) -> dict:
    import faiss
    from ccst import CCST

    label, xt, xb, xq = _data("fmnist-1K", synthetic, quick)
    epochs = 2 if quick else 50
    peak = _Peak(device)
    model = CCST(
        compression_factor=4, epochs=epochs, batch_size=256, device=device, progress=False,
        **({"depths": (1,), "heads": 2} if quick and synthetic else {}),
    )  # fmt: skip
    t0 = time.perf_counter()
    model.fit(xt)
    _sync(device)
    t_fit = time.perf_counter() - t0
    _on_device(model.net, device, "the CCST network")
    t0 = time.perf_counter()
    yb = model.transform(xb)
    _sync(device)
    t_enc = time.perf_counter() - t0
    I = faiss.knn(model.transform(xq), yb, 10)[1]
    n_train = round(len(xt) * (1 - model.train_config.val_fraction))
    return {
        "data": label,
        "epochs": epochs,
        "s/epoch": t_fit / epochs,
        "train_vectors/s": n_train * epochs / t_fit,
        "encode_vectors/s": len(xb) / t_enc,
        "1-recall@10": _recall10(xq, xb, I),
        "peak_gpu_memory": peak.read(),
        "note": f"{model.d_in} -> {model.d_out}, depths {model.config.depths}, batch 256",
    }


def check_kdindex(device: str, synthetic: bool, quick: bool) -> dict:
    import faiss
    from kdindex.api import KDIndex
    from kdindex.student import Student
    from kdindex.train import TrainConfig, index_codes

    label, xt, xb, xq = _data("sift-10K", synthetic, quick)
    nq_train = len(xt) if quick and synthetic else 1000 if quick else 5000
    xq_train = xt[:nq_train]
    B, W = (2, 16) if quick and synthetic else (4, 64) if quick else (8, 256)  # Sec. 4.1: 8, 256
    labels = faiss.knn(xq_train, xb, 10)[1]  # exact teacher (the teacher is not the GPU part)
    cfg = TrainConfig(
        epochs=1 if quick else 3, init_max_rounds=1 if quick else 3, progress=False, seed=0
    )
    peak = _Peak(device)
    index = KDIndex("PQ", "l2", B=B, W=W, K=10, config=cfg, n_warm=len(xb), device=device)
    t0 = time.perf_counter()
    index.fit(xb, xq_train, labels=labels)
    _sync(device)
    t_fit = time.perf_counter() - t0
    res = index.result
    epochs = res.init_rounds + sum(1 for c in res.curve if c["phase"] == "diff" and c["epoch"] >= 0)
    q = index.quantizer
    student = Student(q.kind, q.codebooks, q.d_in, q.d_out, q.rotation, aq_beam=q.aq_beam)
    student.to(device)
    _on_device(student, device, "the KDindex student")
    t0 = time.perf_counter()
    codes = index_codes(student, xb, cfg)  # Algorithm 1 on the device
    _sync(device)
    t_enc = time.perf_counter() - t0
    same = bool(np.array_equal(codes, index.codes))  # deterministic: True on the CPU
    _, I = index.search(xq, 10)
    return {
        "data": label,
        "epochs": epochs,
        "s/epoch": t_fit / epochs,
        "train_vectors/s": len(xq_train) * (1 - cfg.val_frac) * epochs / t_fit,
        "encode_vectors/s": len(xb) / t_enc,
        "1-recall@10": _recall10(xq, xb, I),
        "peak_gpu_memory": peak.read(),
        "note": f"PQ B={B} W={W}, {nq_train} training queries, balanced codes, the same as "
        f"fit's: {same}",
    }


CHECKS = {"catalyzer": check_catalyzer, "ccst": check_ccst, "kdindex": check_kdindex}


def _line(method: str, device: str, r: dict) -> str:
    formats = {
        "epochs": "{}",
        "s/epoch": "{:.3f}",
        "train_vectors/s": "{:.0f}",
        "encode_vectors/s": "{:.0f}",
        "1-recall@10": "{:.3f}",
    }
    body = " ".join(f"{k}={f.format(r[k])}" for k, f in formats.items())
    return (
        f"gpu_check {method}: device={device} {body} peak_gpu_memory={r['peak_gpu_memory']} "
        f"data={r['data']!r} ({r['note']})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--quick", action="store_true", help="smaller and shorter (CPU: < 2 min)")
    ap.add_argument("--synthetic", action="store_true", help="synthetic stand-ins only")
    ap.add_argument("--threads", type=int, default=None, help="torch / faiss threads")
    ap.add_argument("--methods", nargs="+", choices=sorted(CHECKS), default=list(CHECKS))
    args = ap.parse_args(argv)

    import faiss
    import torch
    from annrepro.errors import SettingError
    from annrepro.threads import default_threads, threads
    from catalyzer.train import check_device

    try:
        device = check_device(args.device, "--device")
    except SettingError as e:
        print(f"gpu_check: error: {e}", file=sys.stderr)
        return 2
    n_threads = args.threads or default_threads()
    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else "none"
    print(
        f"gpu_check: torch {torch.__version__} (CUDA {torch.version.cuda}), faiss "
        f"{faiss.__version__}, device {device}, GPU {gpu}, {n_threads} thread(s)"
        f"{', quick' if args.quick else ''}{', synthetic' if args.synthetic else ''}",
        flush=True,
    )
    failed = []
    t_all = time.perf_counter()
    with threads(n_threads):
        print(
            f"gpu_check: torch threads {torch.get_num_threads()}, faiss threads "
            f"{faiss.omp_get_max_threads()}",
            flush=True,
        )
        for method in args.methods:
            t0 = time.perf_counter()
            try:
                r = CHECKS[method](device, args.synthetic, args.quick)
            except Exception as e:  # report, go on with the next method, exit 1 at the end
                traceback.print_exc()
                print(f"gpu_check {method}: FAILED on {device}: {type(e).__name__}: {e}")
                failed.append(method)
                continue
            print(_line(method, device, r) + f" [{time.perf_counter() - t0:.1f} s]", flush=True)
    wall = time.perf_counter() - t_all
    if failed:
        print(f"gpu_check: FAILED {' '.join(failed)} ({wall:.1f} s)")
        return 1
    print(f"gpu_check: ok, {len(args.methods)} method(s) on {device} in {wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
