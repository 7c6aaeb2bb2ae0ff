"""Error types with a location, so bad input is reported as ``file:line: field: reason``."""

from __future__ import annotations

from pathlib import Path


class ReproError(Exception):
    """Base of the harness's own errors; the CLI prints them as one line and exits non-zero."""


class DataFormatError(ReproError, ValueError):
    """Malformed input file: names the file and, where known, the line and field."""

    def __init__(self, path: str | Path, message: str, *, line: int | None = None, field: str | None = None):
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message
        loc = self.path if line is None else f"{self.path}:{line}"
        where = f"{loc}: field '{field}'" if field else loc
        super().__init__(f"{where}: {message}")


class DatasetNotFoundError(ReproError, FileNotFoundError):
    """A configured dataset root (or a file it must contain) is missing."""
