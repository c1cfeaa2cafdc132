"""Errors that `rag` raises on purpose, each saying what to change.

All derive from `RagError` (a `ValueError`), so callers can catch everything the library refuses in
one place while unexpected bugs still surface as their own exception types.
"""

from __future__ import annotations


class RagError(ValueError):
    """Base class of the errors `rag` raises for bad input, config or files."""


class ConfigError(RagError):
    """A component or pipeline configuration is invalid."""


class PipelineError(ConfigError):
    """The stages of a pipeline do not fit together."""


class ModelNotFoundError(RagError):
    """A model name or path could not be resolved to a local model."""


class ModelLoadError(RagError):
    """A model folder was found but cannot be loaded (truncated weights, broken config files)."""


class CorpusError(RagError):
    """A corpus source could not be read; the message names the file and line."""


class EmptyCorpusError(CorpusError):
    """A corpus source holds no document that could be read; the message lists each file that
    could not be read and why."""


class IndexLoadError(RagError):
    """An index or cache folder is missing, truncated or was written by something else."""


class IndexExistsError(RagError):
    """The folder already holds an index that this command would not update."""


class IndexLockedError(RagError):
    """Another process is writing the index folder."""


class EncoderMismatchError(RagError):
    """A query encoder differs from the one that built the index."""


class KVTransferError(ConfigError):
    """A generator was asked to load precomputed KV caches, which its engine cannot take."""


class BackendUnavailableError(RagError):
    """An optional backend (such as vLLM) is not installed."""


class DatasetError(RagError):
    """An evaluation data set is missing, or one of its lines is malformed (named by file:line)."""
