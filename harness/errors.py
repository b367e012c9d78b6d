"""The few exceptions users see; only the CLI turns them into messages and exit codes."""

from __future__ import annotations

from pathlib import Path


class HarnessError(Exception):
    """Base of every error the CLI reports as one line (exit code in `exit_code`)."""

    exit_code = 1


class ConfigError(HarnessError):
    """A bad input file or argument: names the file, line and field where known. Exit 2."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path:
            where = self.path + (f":{self.line}" if self.line else "")
        if self.field:
            where = f"{where}: {self.field}" if where else self.field
        return f"{where}: {self.message}" if where else self.message


class StoreError(HarnessError):
    """The run store is unreadable, corrupt, or asked for something it does not hold. Exit 2."""

    exit_code = 2


class RunAborted(HarnessError):
    """A run stopped early on purpose (error rate too high, interrupted). Exit 3."""

    exit_code = 3


class ProviderCallError(Exception):
    """A model call that failed for good (after retries); becomes an `error` result, not a fail."""

    def __init__(self, kind: str, message: str, *, status: int | None = None) -> None:
        self.kind = kind
        self.status = status
        super().__init__(message)


class ScorerError(Exception):
    """A scorer could not produce a score (crash, unparseable judge reply): an `error` result."""

    def __init__(self, message: str, *, kind: str = "scorer_error", raw: str | None = None) -> None:
        self.kind = kind
        self.raw = raw
        super().__init__(message)
