"""Errors raised for input that cannot be screened."""


class ImageError(ValueError):
    """An input that cannot be screened; the message says why, for a person."""
