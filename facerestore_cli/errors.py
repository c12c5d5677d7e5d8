"""Domain errors. Each carries the process exit code and a one-line hint for the person at the terminal."""

from __future__ import annotations

EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_INPUTS = 3
EXIT_WEIGHTS = 4
EXIT_DEVICE = 5
EXIT_LOCKED = 75
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class FacerestoreError(Exception):
    exit_code = EXIT_SOME_FAILED

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(FacerestoreError):
    exit_code = EXIT_USAGE


class NoInputsError(FacerestoreError):
    exit_code = EXIT_NO_INPUTS


class WeightsError(FacerestoreError):
    """A weight file is missing, corrupt, of the wrong layout, or would need the network while offline."""

    exit_code = EXIT_WEIGHTS


class DeviceError(FacerestoreError):
    exit_code = EXIT_DEVICE


class InputError(FacerestoreError):
    """One input file cannot be processed; the batch goes on."""
