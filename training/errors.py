"""Training errors. TrainingError messages are written for the user (CLI line, API 422 body)."""

from __future__ import annotations


class TrainingError(Exception):
    """Bad input: a missing file, an unknown column, labels that do not fit, a taken name..."""

    def __init__(self, message: str, *, code: str = "invalid_training_input") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class TrainingCancelled(Exception):
    """should_stop() asked to stop; nothing was written to the store."""

    code = "training_cancelled"
