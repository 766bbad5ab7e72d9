"""The estimators' one convention: `Method(<architecture>, config=None, *, <other settings>,
**overrides)` (catalyzer.Catalyzer, ccst.CCST, kdindex.KDIndex).

`configured` turns `config` and `overrides` into the config the estimator trains with: the given
config (or `default()`) with each override replacing its field (a copy; the config itself when
there are none). An unknown name, or a config of another class, is one SettingError line that
names it and lists what the estimator takes.
"""

from __future__ import annotations

import dataclasses

from .errors import SettingError

__all__ = ["configured"]


def configured(
    owner: str,
    cls,
    config,
    overrides: dict,
    default=None,
    architecture=(),
    other=(),
    overrides_text: str | None = None,
):
    """`config` (an instance of the dataclass `cls`, or `default()` / `cls()` when None) with
    `overrides` applied. owner: the estimator's name in messages; architecture / other: its
    argument names, listed in the message; overrides_text: how to describe the override names
    (default: "overrides (TrainConfig fields): <the fields of cls>")."""
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(fields))
    where = f"{cls.__module__}.{cls.__name__}"
    if unknown:
        described = overrides_text or f"overrides (TrainConfig fields): {', '.join(fields)}"
        raise SettingError(
            f"{owner}: unknown argument(s) {', '.join(unknown)}; architecture: "
            f"{', '.join(architecture)}; config: a {where}; other settings: {', '.join(other)}; "
            f"{described}"
        )
    if config is None:
        config = default() if default is not None else cls()
    elif not isinstance(config, cls):
        raise SettingError(f"{owner}: config must be a {where}, not {type(config).__name__}")
    return dataclasses.replace(config, **overrides) if overrides else config
