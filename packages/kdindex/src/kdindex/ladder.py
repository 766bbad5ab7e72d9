"""`kdindex.ladder`: budget ladders of the paper's headline margins.

Spec paper_tables/kdindex/ladder.toml; the engine is `annrepro.ladder`, every method through
`annrepro.methods`."""

from __future__ import annotations

from annrepro.ladder import run_ladders
from annrepro.tables import register

__all__ = ["ladder"]


@register("kdindex.ladder")
def ladder(spec, ctx):
    """Each [[ladders]] of the spec: the margin better minus worse at every rung of the budget."""
    return run_ladders(spec, ctx)
