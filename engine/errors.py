"""Errors the engine raises on purpose; each carries a message meant for the user as it is."""

from __future__ import annotations


class StudioError(Exception):
    """Base of every error whose message is written for the user."""


class RequestError(StudioError, ValueError):
    """A request that cannot run as given; names the field, the bound and the value."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class ModelLoadError(StudioError):
    """A model that cannot be found or loaded: what is wrong and what to do."""

    def __init__(self, problem: str, remedy: str, model: str | None = None):
        self.problem = problem
        self.remedy = remedy
        self.model = model
        super().__init__(self._text())

    def _text(self) -> str:
        who = f"Model {self.model}: " if self.model else ""
        return f"{who}{self.problem}. {self.remedy}"

    def for_model(self, model: str) -> ModelLoadError:
        if self.model is None:
            self.model = model
            self.args = (self._text(),)
        return self


class OutputError(StudioError):
    """The outputs folder cannot take the video (missing, not writable, disk full)."""


class WorkersUnavailable(StudioError):
    """No worker can take jobs now (the Ray cluster cannot be reached); said until it is back."""
