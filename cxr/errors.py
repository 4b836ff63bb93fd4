"""Typed errors of the cxr library.

Every message is written for the person who will read it in the app (a clinician or a data
scientist), not for a developer: it says what is wrong with *their* input and what to do.
"""


class CxrError(Exception):
    """Base class of every error the library raises on purpose."""


class InvalidImageError(CxrError, ValueError):
    """The bytes or file given are not a usable chest X-ray image."""


class ModelError(CxrError):
    """A saved model is missing, incomplete, or refused (e.g. unsafe content)."""


class DatasetError(CxrError):
    """A dataset folder is missing, empty, or not laid out as expected."""


class TrainingError(CxrError):
    """Training could not run as configured (e.g. a distribution setup this stack cannot do)."""
