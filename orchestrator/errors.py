"""Errors the user can act on. The CLI prints them as one line and exits non-zero."""
from __future__ import annotations

import os
import re


class OrchestratorError(Exception):
    """A known, actionable failure: `where` (file:line or config key), `what`, `fix`."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        head = f"{self.where}: " if self.where else ""
        tail = f" (fix: {self.fix})" if self.fix else ""
        return f"{head}{self.what}{tail}"


class ConfigError(OrchestratorError):
    """The composed configuration is invalid."""


class ManifestError(OrchestratorError):
    """A manifest line or the audio it points to is unusable."""


class AudioError(ManifestError):
    """An audio file cannot be decoded into usable samples."""


class TargetError(ConfigError):
    """A target-module spec resolves to nothing, or to modules PEFT cannot adapt."""


class RegistryError(OrchestratorError):
    """The registry cannot be opened or is at the wrong schema revision."""


class WriteError(OrchestratorError):
    """A checkpoint or artifact could not be written (disk full, file too large, read-only
    folder). Writes are atomic, so the previous version is intact."""


def os_reason(exc: BaseException) -> str:
    """The operating system's words for a failed write, found through wrapped exceptions
    (torch and safetensors wrap the OSError of a failed write in their own errors)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        code = re.search(r"\(os error (\d+)\)", str(cause))  # Rust's io::Error, as safetensors reports it
        if code:
            return os.strerror(int(code.group(1)))
        cause = cause.__cause__ or cause.__context__
    return " ".join(str(exc).split()) or type(exc).__name__
