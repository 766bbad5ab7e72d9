"""One evaluation of one method: fit, add, search, score (the unit of the cross-paper table and
of the budget ladders; `annrepro.points` keys finished evaluations on this module's code)."""

from __future__ import annotations

import time

from .metrics import per_query_recall

__all__ = ["run_method", "RECALLS", "SEEDED", "seed_matters"]

RECALLS = (("1-recall@1", 1, 1), ("1-recall@10", 1, 10), ("1-recall@100", 1, 100))
RECALLS += (("10-recall@10", 10, 10),)
# the plugins whose methods take the run's seed, and the setting it goes to (a faiss factory
# string: its training's random draws, annrepro.methods.seed_faiss)
SEEDED = {"catalyzer": "seed", "csst": "seed", "srp": "seed", "kdindex": "seed", "faiss": "seed"}


def seed_matters(spec: str, metric: str, d: int) -> bool:
    """Whether the run's seed can move the method's numbers: a paper method's (its network, its
    projection), a faiss factory string's only when its training draws at random (k-means,
    ITQ, random rotations: annrepro.methods.seed_faiss; PCA, SQ, Flat draw nothing). A run
    that does not depend on it is made once for every seed."""
    from .methods import FaissStage, plugin_name

    plugin = plugin_name(spec)
    if plugin != "faiss":
        return plugin in SEEDED
    return bool(FaissStage.draws(spec, metric, d))


def run_method(spec, metric, xt, xb, xq, gt, k, seed=0, settings=None, base_in_fit=False):
    """One fit / add / search of the method `spec` (annrepro.methods): the row's columns
    (bytes_per_vector, train_s, add_s, index_add_s, q/s, recalls) with per-query recalls
    ("<col>:per_query"). add_s: the time to add the base (a graph index: its build);
    index_add_s: the same without the method's learned transform of the base (Method.transform_s:
    CCST's compression), the index's own build as the CCST paper times it.

    settings: {plugin: {setting: value}}; a learned stage gets `seed` as its seed setting.
    base_in_fit: pass the base to fit (KDindex then trains on the documents it indexes)."""
    from .methods import make, plugin_name

    plugin = plugin_name(spec)
    kw = dict((settings or {}).get(plugin, {}))
    if plugin in SEEDED:
        kw[SEEDED[plugin]] = seed
    m = make(spec, metric, **kw)
    t0 = time.perf_counter()
    m.fit(xt, xb if base_in_fit else None)
    train_s = time.perf_counter() - t0
    t_add, transform_before = time.perf_counter(), m.transform_s
    m.add(xb)
    add_s = time.perf_counter() - t_add
    m.search(xq[:16], k)  # warm-up: search structures built lazily
    t1 = time.perf_counter()
    _, I = m.search(xq, k)
    search_s = time.perf_counter() - t1
    out = {"bytes_per_vector": m.bytes_per_vector, "train_s": train_s, "add_s": add_s}
    out["index_add_s"] = add_s - (m.transform_s - transform_before)  # without the transform
    out["q/s"] = len(xq) / search_s if search_s > 0 else float("inf")
    for name, n, mm in RECALLS:
        if mm <= k:
            pq = per_query_recall(I, gt, n, mm, len(xb))
            out[name], out[name + ":per_query"] = float(pq.mean()), pq
    return out
