"""Training checkpoints shared by the paper packages: read one back, refuse a mismatch.

A package writes its checkpoint with `annrepro.atomic.atomic_torch_save` (a dict with a
`format` and a `fingerprint` = {"config": dict, "code_version": int, "data": {what: sha256}})
and resumes only from a checkpoint whose fingerprint is its own. Every problem is one line that
names the file (an `InputError`): a checkpoint that cannot be read, one of another kind or
format, one made with another configuration, code version or data.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError

__all__ = [
    "CheckpointMismatch",
    "first_line",
    "read_checkpoint",
    "check_resumable",
    "save_checkpoint",
    "checkpoint_path",
]


class CheckpointMismatch(InputError):
    """The checkpoint to resume from was made with another configuration or other data."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, whitespace collapsed (for one-line errors)."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def read_checkpoint(path, kind: str, fmt: int, keys, how: str) -> dict:
    """The checkpoint dict at `path` (loaded on the CPU, weights only), or InputError: the file
    cannot be read, is truncated / not a torch file, or lacks one of `keys` / has another
    `format` than `fmt`. `kind` names the package ("catalyzer"), `how` says what to do."""
    import torch

    path = Path(path)
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise InputError(f"{path}: cannot read the checkpoint ({e.strerror or e})") from None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip / pickle / EOF / OSError (seek) of a truncated or foreign file
        raise InputError(
            f"{path}: unreadable checkpoint (truncated or corrupt? {type(e).__name__}: "
            f"{first_line(e)}); {how}"
        ) from None
    missing = [k for k in keys if not isinstance(ckpt, dict) or k not in ckpt]
    if missing or ckpt.get("format") != fmt:
        what = f"no {', '.join(missing)}" if missing else f"format {ckpt.get('format')!r}"
        raise InputError(f"{path}: not a {kind} checkpoint of format {fmt} ({what}); {how}")
    return ckpt


def check_resumable(theirs, ours: dict, path, kind: str, how: str) -> None:
    """CheckpointMismatch naming every difference in one line unless the checkpoint's
    fingerprint `theirs` equals `ours` in config, code_version and data."""
    if not isinstance(theirs, dict):
        raise InputError(f"{path}: not a {kind} checkpoint (bad fingerprint); {how}")
    tc, oc = theirs.get("config") or {}, ours["config"]
    diff = [
        f"{key}: checkpoint {tc.get(key)!r} != now {oc.get(key)!r}"
        for key in sorted(set(tc) | set(oc))
        if tc.get(key) != oc.get(key)
    ]
    if theirs.get("code_version") != ours["code_version"]:
        diff.append(
            f"{kind.lower()}.train CODE_VERSION: checkpoint {theirs.get('code_version')!r} != now "
            f"{ours['code_version']!r}"
        )
    parts = [f"another configuration ({'; '.join(diff)})"] if diff else []
    td = theirs.get("data") or {}
    for what, fp in ours["data"].items():
        if td.get(what) != fp:
            short = [None if v is None else str(v)[:12] for v in (td.get(what), fp)]
            parts.append(f"other {what} (fingerprint {short[0]} != now {short[1]})")
    if parts:
        raise CheckpointMismatch(
            f"{path}: cannot resume: the checkpoint was made with {'; '.join(parts)}; {how}"
        )


def save_checkpoint(blob: dict, path) -> None:
    """Through a unique temporary and an atomic rename (annrepro.atomic): a kill -9 leaves the
    previous checkpoint or the new one, never a part; a failed write is one line naming it."""
    from .atomic import atomic_torch_save

    try:
        atomic_torch_save(blob, path)
    except (OSError, RuntimeError) as e:  # torch's 'enforce fail' does not name the file
        raise InputError(f"{path}: cannot write the checkpoint ({first_line(e)})") from None


def checkpoint_path(checkpoint_dir, name: str) -> Path:
    """`checkpoint_dir / name`, the folder created; one line naming it if that cannot be done."""
    path = Path(checkpoint_dir) / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(
            f"{path.parent}: cannot create the checkpoint directory ({e.strerror or e})"
        ) from None
    return path
