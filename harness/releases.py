"""Release records: the exact versions approved for a deployment and the run that justified them.

`evals release NAME --run RUN` builds a record from the run's manifest and summary, stores it
(table `releases`, newest wins, history kept) and writes it as YAML (or JSON) for the user to
commit. A record carries `schema`; `read_release_file` is the one place old shapes upgrade.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any

import yaml

from harness.artifacts import open_existing, to_yaml
from harness.errors import ConfigError
from harness.runrefs import LoadedRun
from harness.store import Store

RELEASE_SCHEMA = 1
RELEASE_DIR = "releases"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
RESERVED = {"show", "list", "create"}  # subcommands of `evals release`


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name) or name in RESERVED:
        raise ConfigError(
            f"invalid release name {name!r}: letters, digits, '.', '_', '-' "
            f"(not {', '.join(sorted(RESERVED))})"
        )


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def refusal(run: LoadedRun) -> list[str]:
    """Why a run may not be released ([] when it may): not completed, or thresholds failed."""
    reasons = []
    status = run.record.get("status")
    if status != "completed":
        reasons.append(f"run {run.id} is {status}, not completed")
    summary = run.record.get("summary") or {}
    for check in summary.get("thresholds") or []:
        if not check.get("ok"):
            actual = check.get("actual")
            shown = "-" if actual is None else f"{actual:.1%}"
            required = f"{check['required']:.1%}"
            reasons.append(f"threshold {check['scorer']} on {check['model']}: {shown} < {required}")
    return reasons


def _pass_rates(summary: dict[str, Any]) -> dict[str, Any]:
    rates = {}
    for model, block in (summary.get("models") or {}).items():
        rates[model] = {
            "pass_rate": block.get("pass_rate"),
            "ci95": [block.get("ci_low"), block.get("ci_high")],
            "n": block.get("n"),
            "errors": block.get("errors"),
            "scorers": {k: v.get("pass_rate") for k, v in (block.get("scorers") or {}).items()},
        }
    return rates


def build_release(
    name: str,
    run: LoadedRun,
    *,
    author: str | None,
    note: str | None = None,
    force: bool = False,
    now: float | None = None,
) -> dict[str, Any]:
    """The release record for `run`. Refuses (ConfigError) a run that is not completed or that
    failed a threshold, unless `force` (then the reasons are recorded)."""
    check_name(name)
    reasons = refusal(run)
    if reasons and not force:
        raise ConfigError(f"refusing to release {name}: {'; '.join(reasons)} (--force to override)")
    manifest, summary = run.manifest, run.record.get("summary") or {}
    prompt = manifest.get("prompt")
    artifacts = manifest.get("artifacts") or {}
    dataset = manifest.get("dataset") or {}
    return {
        "schema": RELEASE_SCHEMA,
        "release": name,
        "created_at": _iso(now or time.time()),
        "author": author,
        "note": note,
        "forced": reasons if reasons else None,
        "versions": {
            "prompt": []
            if not prompt
            else [
                {
                    "name": prompt.get("name"),
                    "version": prompt.get("version"),
                    "source": prompt.get("source"),
                    "content": prompt.get("content"),
                }
            ],
            **{kind: artifacts.get(kind) or [] for kind in ("retrieval", "index", "rubric")},
        },
        "models": [
            {k: m[k] for k in ("id", "name", "params") if k in m}
            for m in manifest.get("models") or []
        ],
        "approved_by": {
            "run": run.id,
            "suite": manifest.get("suite"),
            "dataset": {
                "source": dataset.get("source"),
                "version": dataset.get("version"),
                "selected": dataset.get("selected"),
            },
            "status": run.record.get("status"),
            "started_at": _iso(run.record.get("created_at")),
            "finished_at": _iso(run.record.get("finished_at")),
            "code": manifest.get("git"),
            "thresholds_ok": summary.get("thresholds_ok"),
            "thresholds": summary.get("thresholds") or [],
            "pass_rates": _pass_rates(summary),
        },
    }


def release_file(name: str, project_dir: Path) -> Path:
    return project_dir / RELEASE_DIR / f"{name}.yaml"


def write_release_file(record: dict[str, Any], path: Path) -> None:
    """Write atomically: YAML, or JSON when the path ends in .json."""
    if path.suffix == ".json":
        text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    else:
        text = f"# release record written by `evals release`; commit it.\n{to_yaml(record)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def read_release_file(path: Path) -> dict[str, Any]:
    """Read a release record file (the one place where older record shapes are upgraded)."""
    try:
        text = path.read_text(encoding="utf-8")
        record = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except FileNotFoundError:
        raise ConfigError("file not found", path=path) from None
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"not a readable release record: {exc}", path=path) from None
    if not isinstance(record, dict) or "release" not in record:
        raise ConfigError("not a release record (no 'release' key)", path=path)
    schema = record.get("schema")
    if not isinstance(schema, int) or schema > RELEASE_SCHEMA:
        raise ConfigError(
            f"release record schema {schema!r} is newer than this harness "
            f"understands ({RELEASE_SCHEMA})",
            path=path,
        )
    return record


def save_release(store: Store, record: dict[str, Any]) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO releases (name, run_id, created_at, author, record) VALUES (?,?,?,?,?)",
            (
                record["release"],
                record["approved_by"]["run"],
                time.time(),
                record.get("author"),
                json.dumps(record, ensure_ascii=False),
            ),
        )


def release_history(store: Store, name: str) -> list[dict[str, Any]]:
    """Every record of release `name`, newest first."""
    rows = store.conn.execute(
        "SELECT record FROM releases WHERE name = ? ORDER BY id DESC", (name,)
    )
    return [json.loads(row[0]) for row in rows]


def list_releases(store: Store) -> list[dict[str, Any]]:
    """The newest record of every release name, by name."""
    rows = store.conn.execute(
        "SELECT record FROM releases WHERE id IN (SELECT max(id) FROM releases GROUP BY name) "
        "ORDER BY name"
    )
    return [json.loads(row[0]) for row in rows]


def find_release(ref: str, *, store_path: Path, project_dir: Path) -> tuple[dict[str, Any], int]:
    """A release by name (the store, else releases/NAME.yaml) or by record file path.
    Returns (newest record, how many times the name was released in this store)."""
    if ref.endswith((".yaml", ".yml", ".json")):
        return read_release_file(Path(ref)), 1
    store = open_existing(store_path)
    history: list[dict[str, Any]] = []
    known: list[str] = []
    if store is not None:
        with store:
            history = release_history(store, ref)
            known = [r["release"] for r in list_releases(store)]
    if history:
        return history[0], len(history)
    path = release_file(ref, project_dir)
    if path.exists():
        return read_release_file(path), 1
    listed = ", ".join(known) if known else "none yet"
    raise ConfigError(f"no release {ref!r} in the store or at {path} (releases: {listed})")
