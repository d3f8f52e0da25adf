"""Errors the user can act on. The CLI prints them as one line and exits non-zero."""
from __future__ import annotations


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
