"""One error family for accelvit.

Every message is written for the user: what was wrong, what was expected, what to do.
The UI shows ``str(error)`` as it is, so keep messages complete sentences.
"""

from __future__ import annotations


class AccelvitError(Exception):
    """Base class of every error accelvit raises on purpose."""


class ConfigError(AccelvitError, ValueError):
    """A configuration value is invalid. ``field`` names the offending field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


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
