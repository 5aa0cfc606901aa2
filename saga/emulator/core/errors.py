"""Typed errors of the replica model. The HTTP shell maps every one to a 400 response."""

from __future__ import annotations


class EmulatorError(Exception):
    """Base of every error the replica model raises on bad input."""


class InvalidRequest(EmulatorError):
    """A request field is missing, of the wrong type or out of range."""


class PromptTooLong(InvalidRequest):
    """The prompt does not fit the model's context length."""


class ExceedsCapacity(InvalidRequest):
    """Prompt plus requested output tokens exceed the replica's whole KV pool."""


class DuplicateRequest(InvalidRequest):
    """A request with this rid is already waiting or running."""


class UnknownSession(InvalidRequest):
    """The session id names no open session."""


class DuplicateSession(InvalidRequest):
    """A session with this id is already open."""
