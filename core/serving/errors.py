"""Errors raised for input that cannot be screened."""


class ImageError(ValueError):
    """An input that cannot be screened; the message says why, for a person."""

    input_kind: str | None = None  # what the input was, when it was decoded before it was refused
