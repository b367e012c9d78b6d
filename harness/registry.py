"""The version registry: every artifact version seen, and labels that move with history.

A version is the short content hash of an artifact (see `versions`); the registry keeps the
content itself, so `qa@3f2a1c09` still runs after prompts/qa.yaml changed or was deleted.
Labels (`production`, `staging`, ...) point at versions; every move is appended to
`label_history` (append-only, enforced by triggers). Rollback undoes moves like a stack: each
promote pushes the version it set, each rollback pops the top, so rolling back twice undoes the
last two promotes still in effect.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, StoreError
from harness.store import Store
from harness.versions import canonical_json, content_hash, short_version

KINDS = ("prompt", "retrieval", "index", "dataset", "rubric", "suite")
WORKING_COPY = "current"  # the selector naming the file on disk, never a label
LABEL_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
VERSION_PREFIX = re.compile(r"^[0-9a-f]{4,64}$")
MAX_LISTED = 8
CLI_KINDS = ("prompt", "rubric", "retrieval")  # kinds with `evals <kind> register`


@dataclass(frozen=True)
class VersionRecord:
    """One registered version of an artifact, with its exact content."""

    kind: str
    name: str
    version: str
    hash: str
    content: Any
    first_seen: float
    git_commit: str | None
    author: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LabelMove:
    """One row of a label's history."""

    kind: str
    name: str
    label: str
    action: str
    from_version: str | None
    to_version: str
    author: str | None
    at: float


# --- who and where --------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _git(cwd: str, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def current_author(cwd: Path | None = None) -> str | None:
    """'Name <email>' from git config; None when git or its config is unavailable."""
    where = str(cwd or Path.cwd())
    name, email = _git(where, "config", "user.name"), _git(where, "config", "user.email")
    if name and email:
        return f"{name} <{email}>"
    return name or email


def current_commit(cwd: Path | None = None) -> str | None:
    return _git(str(cwd or Path.cwd()), "rev-parse", "HEAD")


# --- versions -------------------------------------------------------------------------------
def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown artifact kind {kind!r}; kinds: {', '.join(KINDS)}")


def _record(row: tuple[Any, ...]) -> VersionRecord:
    return VersionRecord(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6], row[7])


_VERSION_COLUMNS = "kind, name, version, hash, content, first_seen, git_commit, author"


def record_version(
    store: Store,
    kind: str,
    name: str,
    content: Any,
    version: str | None = None,
    *,
    git_commit: str | None = None,
    author: str | None = None,
    first_seen: float | None = None,
) -> tuple[VersionRecord, bool]:
    """Register `content` as `kind` `name` at `version` (default: its short content hash).

    Idempotent: a version already present keeps its first-seen time, commit and author.
    Returns (the stored record, whether it was new).
    """
    _check_kind(kind)
    version = version or short_version(content)
    text = canonical_json(content)
    digest = content_hash(content)
    with store.transaction() as conn:
        row = conn.execute(
            f"SELECT {_VERSION_COLUMNS} FROM versions WHERE kind = ? AND name = ? AND version = ?",
            (kind, name, version),
        ).fetchone()
        if row is not None:
            if row[3] != digest:
                raise StoreError(
                    f"{kind} {name}@{version} is already registered with different "
                    "content (hash prefix collision or a corrupt store)"
                )
            return _record(row), False
        record = VersionRecord(
            kind,
            name,
            version,
            digest,
            json.loads(text),
            first_seen or time.time(),
            git_commit,
            author,
        )
        conn.execute(
            f"INSERT INTO versions ({_VERSION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
            (kind, name, version, digest, text, record.first_seen, git_commit, author),
        )
    return record, True


def get_version(store: Store, kind: str, name: str, version: str) -> VersionRecord | None:
    row = store.conn.execute(
        f"SELECT {_VERSION_COLUMNS} FROM versions WHERE kind = ? AND name = ? AND version = ?",
        (kind, name, version),
    ).fetchone()
    return None if row is None else _record(row)


def list_versions(store: Store, kind: str, name: str | None = None) -> list[VersionRecord]:
    """Registered versions of `kind` (of one `name`), by name then newest first."""
    query = f"SELECT {_VERSION_COLUMNS} FROM versions WHERE kind = ?"
    args: list[Any] = [kind]
    if name is not None:
        query += " AND name = ?"
        args.append(name)
    query += " ORDER BY name, first_seen DESC, rowid DESC"
    return [_record(row) for row in store.conn.execute(query, args)]


def labels_of(store: Store, kind: str, name: str) -> dict[str, str]:
    """label -> version for one artifact."""
    rows = store.conn.execute(
        "SELECT label, version FROM labels WHERE kind = ? AND name = ? ORDER BY label", (kind, name)
    )
    return {label: version for label, version in rows}


def _known(store: Store, kind: str, name: str) -> str:
    """What a name does have, for error messages: its labels and versions, or how to add one."""
    labels = labels_of(store, kind, name)
    versions = [r.version for r in list_versions(store, kind, name)]
    if not versions:
        hint = f"; register one with `evals {kind} register {name}`" if kind in CLI_KINDS else ""
        return f"none is registered{hint}"
    shown = ", ".join(versions[:MAX_LISTED]) + (
        f" and {len(versions) - MAX_LISTED} more" if len(versions) > MAX_LISTED else ""
    )
    label_text = ", ".join(f"{k} -> {v}" for k, v in labels.items()) or "none"
    return f"labels: {label_text}; versions: {shown}"


def resolve(store: Store, kind: str, name: str, selector: str) -> VersionRecord:
    """`name@selector` where selector is a label or a unique version (or hash) prefix."""
    labelled = labels_of(store, kind, name).get(selector)
    if labelled is not None:
        record = get_version(store, kind, name, labelled)
        if record is None:  # the foreign key makes this unreachable short of corruption
            raise StoreError(f"label {selector} of {kind} {name} points at a missing version")
        return record
    if VERSION_PREFIX.fullmatch(selector.lower()):
        wanted = selector.lower()
        matches = [
            r
            for r in list_versions(store, kind, name)
            if r.version.startswith(wanted) or r.hash.startswith(wanted)
        ]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            found = ", ".join(r.version for r in matches)
            raise ConfigError(
                f"{kind} version prefix {name}@{selector} is ambiguous ({found}); "
                "give more characters"
            )
    raise ConfigError(
        f"{kind} {name!r} has no version or label {selector!r} ({_known(store, kind, name)})"
    )


# --- labels ---------------------------------------------------------------------------------
def check_label(label: str) -> None:
    """Labels are names, never confusable with a version id or the working copy."""
    if (
        not LABEL_PATTERN.fullmatch(label)
        or label == WORKING_COPY
        or VERSION_PREFIX.fullmatch(label)
    ):
        raise ConfigError(
            f"invalid label {label!r}: use a name like production or staging "
            f"(a letter first; not {WORKING_COPY!r}; not a hex version id)",
            field="--label",
        )


def label_history(store: Store, kind: str, name: str, label: str | None = None) -> list[LabelMove]:
    """Every move of the labels of one artifact (one label when given), oldest first."""
    query = (
        "SELECT kind, name, label, action, from_version, to_version, author, at "
        "FROM label_history WHERE kind = ? AND name = ?"
    )
    args: list[Any] = [kind, name]
    if label is not None:
        query += " AND label = ?"
        args.append(label)
    return [LabelMove(*row) for row in store.conn.execute(query + " ORDER BY id", args)]


def _stack(moves: list[LabelMove]) -> list[str]:
    """The versions a label held and that are still in effect: promote pushes, rollback pops."""
    stack: list[str] = []
    for move in moves:
        if move.action == "rollback":
            stack.pop()
        else:
            stack.append(move.to_version)
    return stack


def _move(
    store: Store,
    kind: str,
    name: str,
    label: str,
    action: str,
    old: str | None,
    new: str,
    author: str | None,
) -> LabelMove:
    now = time.time()
    store.conn.execute(
        "INSERT OR REPLACE INTO labels (kind, name, label, version, updated_at) VALUES (?,?,?,?,?)",
        (kind, name, label, new, now),
    )
    store.conn.execute(
        "INSERT INTO label_history (kind, name, label, action, from_version, "
        "to_version, author, at) VALUES (?,?,?,?,?,?,?,?)",
        (kind, name, label, action, old, new, author, now),
    )
    return LabelMove(kind, name, label, action, old, new, author, now)


def promote(
    store: Store, kind: str, name: str, selector: str, label: str, *, author: str | None
) -> tuple[VersionRecord, LabelMove | None]:
    """Point `label` at the version `selector` names. None as the move: it already did."""
    check_label(label)
    record = resolve(store, kind, name, selector)
    with store.transaction():
        old = labels_of(store, kind, name).get(label)
        if old == record.version:
            return record, None
        return record, _move(store, kind, name, label, "promote", old, record.version, author)


def rollback(store: Store, kind: str, name: str, label: str, *, author: str | None) -> LabelMove:
    """Move `label` back to the version it held before its last promote still in effect."""
    with store.transaction():
        current = labels_of(store, kind, name).get(label)
        if current is None:
            raise ConfigError(
                f"{kind} {name!r} has no label {label!r} ({_known(store, kind, name)})"
            )
        stack = _stack(label_history(store, kind, name, label))
        if len(stack) < 2:
            raise ConfigError(
                f"label {label!r} of {kind} {name!r} has no earlier version to "
                f"roll back to (it points at {current}, its first version)"
            )
        return _move(store, kind, name, label, "rollback", current, stack[-2], author)


def adopt_label(
    store: Store, kind: str, name: str, label: str, version: str, *, author: str | None
) -> bool:
    """Set a label this store lacks (from an imported run file); an existing label never moves."""
    with store.transaction():
        if label in labels_of(store, kind, name) or get_version(store, kind, name, version) is None:
            return False
        _move(store, kind, name, label, "import", None, version, author)
        return True
