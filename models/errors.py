"""Errors raised while building, loading or checking a model."""


class ModelLoadError(Exception):
    """A model could not be loaded; the message names the file and the cause."""


class CardError(ModelLoadError):
    """The model card is missing, unreadable or invalid."""


class IntegrityError(ModelLoadError):
    """The weights file does not match the sha256 recorded in its card."""


class UnknownArchitectureError(ModelLoadError):
    """The card names an architecture the registry does not know."""
