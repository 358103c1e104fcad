"""Errors a user can act on. The CLI prints their message without a traceback."""


class NserError(Exception):
    """Base class for errors caused by input, configuration or cache state."""


class ModelUnavailableError(NserError):
    """A model that cannot be had: a hub id out of reach (offline and not cached, no such repository)
    or a local model path that does not exist. The CLI exits with `exit_code` for it (docs/extraction.md),
    so a script can skip an optional model and still fail on every other error."""

    exit_code = 3


class AudioError(NserError):
    """An audio file cannot be used (missing, corrupt, empty, silent, non-finite)."""


class CacheError(NserError):
    """A cache is missing, malformed, or does not fit the command."""


class LayerSelectionError(NserError):
    """A layer selection string is malformed or asks for layers the cache lacks."""


class NonFiniteStatesError(CacheError):
    """Hidden states of one utterance hold NaN or Inf (after the cast to float16): refused, so the
    caller can record that utterance as failed and go on with the others."""
