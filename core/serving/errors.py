"""Errors raised for input that cannot be screened, and for jobs that cannot run."""


class ImageError(ValueError):
    """An input that cannot be screened; the message says why, for a person."""

    input_kind: str | None = None  # what the input was, when it was decoded before it was refused


class JobError(RuntimeError):
    """An operator's fault in a job or command (not one file's): it stops before any work, with this message."""
