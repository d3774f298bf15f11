"""The errors tinygpt raises on purpose, one hierarchy: catch :class:`TinyGPTError` to handle them all.

Each is also the built-in kind a caller would catch without knowing tinygpt (a bad file or argument is a
``ValueError``, a download that cannot happen an ``OSError``), so ``except ValueError`` keeps working.
Messages name what is wrong: the file, tensor, field, option or token position.
"""


class TinyGPTError(Exception):
    """Base class of every error tinygpt raises on purpose."""


class ConfigError(TinyGPTError, ValueError):
    """config.json is missing, unreadable, or describes a model tinygpt cannot run."""


class WeightsError(TinyGPTError, ValueError):
    """A weights file is unreadable, truncated, holds a NaN/inf, or does not match the config."""


class TokenizerError(TinyGPTError, ValueError):
    """Tokenizer files that cannot be read or do not fit the model, or text or ids a tokenizer cannot take."""


class InputError(TinyGPTError, ValueError):
    """An argument of a public function: token ids, generation options, lengths, a cache, a text."""


class NonFiniteError(TinyGPTError, FloatingPointError):
    """The model computed NaN or infinity (from extreme weights or inputs) where a number was expected."""


class MissingFileError(TinyGPTError, FileNotFoundError):
    """A model or tokenizer directory, or a file it must hold, is not there (or a file stands where the
    directory should be)."""


class HubError(TinyGPTError, OSError):
    """A hub model could not be provided: not cached while offline, missing repo or revision, unusable weights."""
