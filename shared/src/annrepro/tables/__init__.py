"""The tables engine: a table is a declarative spec (paper_tables/<paper>/<table>.toml + .csv)
plus a registered producer `fn(spec, ctx) -> rows`. See paper_tables/README.md."""

from .compare import Comparison, compare_run
from .report import write_report
from .runner import Context, ProducerError, TableRun, load_run, producers, register, run_table
from .spec import SpecError, TableSpec, find_specs, load_spec

__all__ = [
    "Comparison",
    "Context",
    "ProducerError",
    "SpecError",
    "TableRun",
    "TableSpec",
    "compare_run",
    "find_specs",
    "load_run",
    "load_spec",
    "producers",
    "register",
    "run_table",
    "write_report",
]
