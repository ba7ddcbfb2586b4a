"""One error family for accelvit.

Every message is written for the user: what was wrong, what was expected, what to do.
The UI shows ``str(error)`` as it is, so keep messages complete sentences.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


class AccelvitError(Exception):
    """Base class of every error accelvit raises on purpose."""


class ConfigError(AccelvitError, ValueError):
    """A configuration value is invalid. ``field`` names the offending field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def reject_unknown(d: Mapping[str, Any], cls: type, prefix: str = "", what: str = "setting") -> None:
    """ConfigError naming the first key of ``d`` that is not a field of the dataclass ``cls``.

    ``prefix`` makes the field a dotted path (``data.`` -> ``data.img_sise``); the message lists
    the settings that exist, so a typo is easy to see.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}", f"unknown {what}; known settings are {sorted(known)}.")


class DataError(AccelvitError):
    """A data set is missing, unreadable or malformed."""


class ModelError(AccelvitError):
    """A model name, configuration or weights file cannot be used."""


class CheckpointError(AccelvitError):
    """A saved model directory or file is not ours, is truncated, or is inconsistent."""


class InputError(AccelvitError):
    """A user-supplied input (an uploaded image, say) cannot be used."""


class Cancelled(AccelvitError):
    """Work was stopped because its cancel token was set."""

    def __init__(self, message: str = "The job was cancelled."):
        super().__init__(message)


class TrainingError(AccelvitError):
    """Training went where more steps cannot bring it back (the loss or the weights are no longer finite
    numbers); the model it leaves must not be used."""
