"""Billion-scale work on a Dask cluster: sharded exact ground truth and sharded transforms.

Optional extra `annrepro[dask]` (dask + distributed). The default engine everywhere stays the
single process; these functions take a `distributed.Client` (or start a `LocalCluster` through
`local_client`) when the caller asks for the Dask engine.

Sharded exact ground truth (`knn_sharded`): the base file is cut into row ranges; each task
memory-maps its range from the shared path (`annrepro.vecio.mmap_vectors`: no worker loads the
whole base), runs `faiss.knn` of every query block against it and returns the shard's top-k with
ids offset by the shard start. The partial top-k are merged pairwise by a tree reduction. Every
merge keeps the k best by (distance, id): ties go to the smaller id, so the result does not depend
on the shard boundaries or the order the tasks finish in, and it equals the single-process
`knn_exact` (`tests/shared/test_distributed.py`).

Sharded transforms (`transform_sharded`): one task per row range applies a picklable function
(a trained model's transform or encoder, loaded once per worker from its file) to the memory-mapped
rows and writes one `.npy` shard atomically; a manifest (`manifest.json`: ranges, shapes,
sha256 of every shard, the model fingerprint) is rewritten atomically as shards finish. A rerun
skips shards that the manifest lists with a matching file and checksum: an interrupted job (a
killed driver or worker) recomputes only what is missing. `read_shards` reads them back as one
array.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .atomic import atomic_path, atomic_write_text
from .errors import AnnreproError

__all__ = [
    "engine_client",
    "DistributedError",
    "shard_ranges",
    "knn_sharded",
    "merge_topk",
    "transform_sharded",
    "read_shards",
    "local_client",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class DistributedError(AnnreproError):
    """A sharded job cannot run or its shards do not match (one line, naming the path)."""


def _require_dask():
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise DistributedError(
            "the Dask engine needs dask and distributed: pip install 'annrepro[dask]'"
        ) from None


def shard_ranges(n: int, shard_rows: int) -> list[tuple[int, int]]:
    """[(start, stop)] covering rows [0, n) in pieces of at most shard_rows."""
    if n < 1 or shard_rows < 1:
        raise DistributedError(f"cannot shard {n} rows in pieces of {shard_rows}")
    return [(s, min(s + shard_rows, n)) for s in range(0, n, shard_rows)]


# ------------------------------------------------------------------------- exact ground truth
def merge_topk(a, b, k: int, metric: str):
    """Merge two partial results (D, I) of the same queries into the k best by (distance, id).

    D: float32 (nq, ka), I: int64 (nq, ka); missing entries have id -1 and go last. For "l2"
    smaller D is better, for "ip" larger. Ties go to the smaller id (deterministic merge)."""
    D = np.concatenate([a[0], b[0]], axis=1)
    I = np.concatenate([a[1], b[1]], axis=1)
    key = D if metric == "l2" else -D
    key = np.where(I < 0, np.inf, key)  # padding last
    ids = np.where(I < 0, np.iinfo(np.int64).max, I)
    order = np.lexsort((ids, key), axis=1)[:, :k]  # by key, then by id
    return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)


def _shard_knn(base_path: str, start: int, stop: int, xq, k: int, metric: str, query_rows: int):
    """Top-k of every query within base rows [start, stop) of the file; ids are global."""
    import faiss

    from .vecio import mmap_vectors

    xb = np.ascontiguousarray(mmap_vectors(base_path, start, stop), dtype=np.float32)
    bad = ~np.isfinite(xb).all(axis=1)
    if bad.any():
        raise DistributedError(
            f"{base_path}: base row {start + int(np.flatnonzero(bad)[0])} contains NaN or inf "
            "(after the cast to float32)"
        )
    fm = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    kk = min(k, stop - start)
    nq = xq.shape[0]
    D = np.full((nq, k), np.inf if metric == "l2" else -np.inf, dtype=np.float32)
    I = np.full((nq, k), -1, dtype=np.int64)
    for q0 in range(0, nq, query_rows):  # query blocks: bounded distance matrices
        q = np.ascontiguousarray(xq[q0 : q0 + query_rows], dtype=np.float32)
        Dc, Ic = faiss.knn(q, xb, kk, metric=fm)
        D[q0 : q0 + len(q), :kk] = Dc
        I[q0 : q0 + len(q), :kk] = np.where(Ic >= 0, Ic + start, -1)
    # a shard's own ties by id too, so every merge sees canonically ordered inputs
    return merge_topk((D, I), (D[:, :0], I[:, :0]), k, metric)


def _tree_reduce(client, futures, k: int, metric: str):
    while len(futures) > 1:
        nxt = [
            client.submit(merge_topk, futures[i], futures[i + 1], k, metric, pure=False)
            for i in range(0, len(futures) - 1, 2)
        ]
        if len(futures) % 2:
            nxt.append(futures[-1])
        futures = nxt
    return futures[0]


def knn_sharded(
    xq: np.ndarray,
    base_path,
    k: int,
    metric: str = "l2",
    client=None,
    shard_rows: int = 1 << 20,
    query_rows: int = 1 << 14,
    progress: bool = False,
    timeout: float | None = None,
):
    """Exact top-k of each query over the base file, sharded over a Dask cluster.

    xq: (nq, d) queries (any real dtype; float32 on the workers); base_path: a
    `.fvecs/.bvecs/.fbin/.u8bin/.npy` file on a path every worker can read (shared storage). With
    `client=None` it runs the same shards in this process (the reference of the tests). Returns
    (D float32 (nq, k), I int64 (nq, k)) like `annrepro.groundtruth.knn_exact`: squared L2
    ascending or inner products descending, ties by id."""
    from .validate import METRICS, check_same_dim
    from .vecio import vectors_shape

    if metric not in METRICS:
        raise DistributedError(f"unknown metric {metric!r}; expected one of {METRICS}")
    base_path = str(base_path)
    nb, d = vectors_shape(base_path)
    xq = np.asarray(xq)
    if xq.ndim != 2:
        raise DistributedError(f"queries must be 2-d, got shape {xq.shape}")
    check_same_dim(query=xq, base=(nb, d), paths={"base": base_path})
    if not 1 <= k <= nb:
        raise DistributedError(f"k={k} must be between 1 and the base size {nb} ({base_path})")
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    if not np.isfinite(xq).all():
        raise DistributedError("the queries contain NaN or inf (after the cast to float32)")
    ranges = shard_ranges(nb, shard_rows)
    if client is None:
        parts = [_shard_knn(base_path, s, e, xq, k, metric, query_rows) for s, e in ranges]
        D, I = parts[0]
        for p in parts[1:]:
            D, I = merge_topk((D, I), p, k, metric)
        return D, I
    _require_dask()
    # hash=False: a key of its own per call (the content hash let one call release the queries
    # that a concurrent or later call with the same queries still needed: "lost dependencies")
    xq_f = client.scatter(xq, broadcast=True, hash=False)
    futures = [
        client.submit(_shard_knn, base_path, s, e, xq_f, k, metric, query_rows, pure=False)
        for s, e in ranges
    ]
    if progress:
        from distributed import progress as dask_progress

        dask_progress(futures)
    return _gather(client, _tree_reduce(client, futures, k, metric), timeout)


def _gather(client, future, timeout: float | None = None):
    try:
        return future.result(timeout=timeout)
    except AnnreproError:
        raise
    except TimeoutError:
        raise DistributedError(f"no result from the Dask workers after {timeout} s") from None
    except Exception as e:  # a worker-side error arrives as its own type; keep it one line
        raise DistributedError(f"{type(e).__name__}: {e}") from None


# ------------------------------------------------------------------------------- transforms
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _shard_name(i: int) -> str:
    return f"shard-{i:06d}.npy"


def _transform_shard(fn, in_path: str, start: int, stop: int, out_path: str, batch_rows: int):
    """Apply fn to rows [start, stop) of the input file in batches; write one .npy atomically."""
    from .vecio import mmap_vectors

    x = mmap_vectors(in_path, start, stop)
    parts = []
    for b0 in range(0, stop - start, batch_rows):
        block = np.ascontiguousarray(x[b0 : b0 + batch_rows], dtype=np.float32)
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            r = start + b0 + int(np.flatnonzero(bad)[0])
            raise DistributedError(f"{in_path}: row {r} contains NaN or inf")
        y = np.asarray(fn(block))
        if y.shape[0] != len(block):
            raise DistributedError(
                f"the transform returned {y.shape[0]} rows for {len(block)} ({in_path})"
            )
        parts.append(y)
    y = np.concatenate(parts, axis=0)
    with atomic_path(out_path) as tmp:
        np.save(tmp, y)
    return {
        "file": Path(out_path).name,
        "start": start,
        "stop": stop,
        "shape": list(y.shape),
        "dtype": y.dtype.str,
        "sha256": _sha256(Path(out_path)),
    }


def _load_manifest(out_dir: Path) -> dict | None:
    path = out_dir / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DistributedError(
            f"{path}: unreadable manifest ({e}); remove it to start over"
        ) from None


def transform_sharded(
    fn: Callable[[np.ndarray], np.ndarray],
    in_path,
    out_dir,
    fingerprint: str,
    client=None,
    shard_rows: int = 1 << 20,
    batch_rows: int = 1 << 15,
    progress: bool = False,
    timeout: float | None = None,
) -> dict:
    """Apply `fn` (float32 (n, d) -> (n, ...), picklable) to every row of the input file, one
    output shard per row range, and return the manifest.

    `fingerprint` names what makes the output (e.g. the model file's sha256 and the settings):
    an existing out_dir made by another fingerprint or input is refused, never mixed. Shards
    already listed in the manifest with a matching checksum are not recomputed. `timeout`
    (seconds, Dask only): give up with DistributedError when shards stop finishing."""
    from .vecio import vectors_shape

    in_path = str(in_path)
    out_dir = Path(out_dir)
    nb, d = vectors_shape(in_path)
    ranges = shard_ranges(nb, shard_rows)
    source = {"input": str(Path(in_path).resolve()), "n": nb, "d": d}
    old = _load_manifest(out_dir)
    done: dict[int, dict] = {}
    if old is not None:
        same = old.get("fingerprint") == fingerprint and old.get("source") == source
        if not same or old.get("ranges") != [list(r) for r in ranges]:
            raise DistributedError(
                f"{out_dir}: holds shards of another model, input or shard size "
                f"(fingerprint {str(old.get('fingerprint'))[:16]}); use an empty directory"
            )
        for s in old.get("shards", []):
            path = out_dir / s["file"]
            if path.exists() and _sha256(path) == s["sha256"]:
                done[int(s["index"])] = s
    manifest = {
        "fingerprint": fingerprint,
        "source": source,
        "ranges": [list(r) for r in ranges],
        "shards": sorted(done.values(), key=lambda s: s["index"]),
        "complete": False,
    }

    def record(i: int, entry: dict) -> None:
        entry["index"] = i
        done[i] = entry
        manifest["shards"] = sorted(done.values(), key=lambda s: s["index"])
        atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n")

    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [(i, s, e) for i, (s, e) in enumerate(ranges) if i not in done]
    if todo:
        log.info("%d of %d shards to compute in %s", len(todo), len(ranges), out_dir)
    if client is None:
        for i, s, e in todo:
            record(
                i, _transform_shard(fn, in_path, s, e, str(out_dir / _shard_name(i)), batch_rows)
            )
    elif todo:
        _require_dask()
        from distributed import as_completed

        futures = {
            client.submit(
                _transform_shard,
                fn,
                in_path,
                s,
                e,
                str(out_dir / _shard_name(i)),
                batch_rows,
                pure=False,
            ): i
            for i, s, e in todo
        }
        if progress:
            from distributed import progress as dask_progress

            dask_progress(list(futures))
        try:
            for fut in as_completed(futures, timeout=timeout):
                record(futures[fut], _gather(client, fut))
        except TimeoutError:
            n_left = len(todo) - sum(i in done for i, _, _ in todo)
            raise DistributedError(
                f"{out_dir}: {n_left} shards still unfinished after {timeout} s (workers lost or "
                "unable to import the transform's class?); a rerun computes only those"
            ) from None
    manifest["complete"] = True
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_shards(out_dir, mmap: bool = False) -> np.ndarray:
    """The shards of a finished `transform_sharded` as one array (checked against the manifest)."""
    out_dir = Path(out_dir)
    manifest = _load_manifest(out_dir)
    if manifest is None or not manifest.get("complete"):
        raise DistributedError(f"{out_dir}: no complete manifest (the job did not finish)")
    parts = []
    for s in manifest["shards"]:
        path = out_dir / s["file"]
        if not path.exists():
            raise DistributedError(f"{path}: shard listed in the manifest is missing")
        a = np.load(path, mmap_mode="r" if mmap else None)
        if list(a.shape) != s["shape"] or a.shape[0] != s["stop"] - s["start"]:
            raise DistributedError(f"{path}: shape {a.shape} does not match the manifest")
        parts.append(a)
    return np.concatenate(parts, axis=0)


_ENGINE_CLIENT = None


def engine_client():
    """The Dask client the tables' full-scale paths use, or None (the default: one process).

    Configured by the environment, so that `annrepro reproduce --scale full` runs on a cluster
    without another option: ANNREPRO_ENGINE=dask, then ANNREPRO_SCHEDULER=ADDRESS (a running
    scheduler) or a LocalCluster of ANNREPRO_WORKERS processes (default: the cores) sharing
    ANNREPRO_MAX_MEMORY (e.g. 64GB). One client per process, made on first use."""
    import os

    global _ENGINE_CLIENT
    engine = os.environ.get("ANNREPRO_ENGINE", "single").strip() or "single"
    if engine == "single":
        return None
    if engine != "dask":
        raise DistributedError(f"ANNREPRO_ENGINE={engine!r}: expected 'single' or 'dask'")
    if _ENGINE_CLIENT is None:
        address = os.environ.get("ANNREPRO_SCHEDULER")
        if address:
            _require_dask()
            from distributed import Client

            _ENGINE_CLIENT = Client(address)
        else:
            workers = os.environ.get("ANNREPRO_WORKERS")
            _ENGINE_CLIENT = local_client(
                int(workers) if workers else None, os.environ.get("ANNREPRO_MAX_MEMORY")
            )
        log.info("ANNREPRO_ENGINE=dask: dashboard %s", _ENGINE_CLIENT.dashboard_link)
    return _ENGINE_CLIENT


def local_client(n_workers: int | None = None, max_memory: str | None = None, threads: int = 1):
    """A `distributed.Client` on a LocalCluster of this machine: `n_workers` processes (default:
    the cores), `max_memory` split evenly as each worker's memory limit (e.g. "16GB"). The
    dashboard address is logged."""
    _require_dask()
    import os

    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    n = n_workers or os.cpu_count() or 1
    limit = "auto" if max_memory is None else parse_bytes(max_memory) // n
    cluster = LocalCluster(  # dashboard on a free port: 8787 may be taken by another cluster
        n_workers=n,
        threads_per_worker=threads,
        processes=True,
        memory_limit=limit,
        dashboard_address=":0",
    )
    client = Client(cluster)
    log.info("Dask LocalCluster: %d workers, dashboard %s", n, client.dashboard_link)
    return client
