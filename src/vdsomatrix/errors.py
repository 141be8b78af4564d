"""Errors that reach the user as one line saying what to do."""


class VdsomatrixError(Exception):
    """Base class. ``exit_code`` follows the CLI's convention: 2 bad input, 1 a failed run."""

    exit_code = 1


class BadInput(VdsomatrixError):
    """Unknown environment, malformed matrix file, unreadable result file."""

    exit_code = 2


class EnvironmentUnavailable(VdsomatrixError):
    """The environment cannot run on this machine (no engine, no image, no QEMU)."""


class ProbeFailed(VdsomatrixError):
    """The probe ran but produced no usable result."""
