"""Errors a user can fix: each names the file or field at fault and what was expected.

All are ``ValueError`` subclasses, so callers that only know "bad input" can catch that.
"""

from __future__ import annotations


class ProLabInputError(ValueError):
    """Base: an input (config, label space, dataset, checkpoint) does not fit the run."""


class UnknownConfigError(ProLabInputError):
    """A config name is neither a known short name nor an existing file."""


class InvalidConfigError(ProLabInputError):
    """A config file cannot be read, lacks what a segmentation run needs, or is given an
    override that cannot stand where it goes."""


class LabelSpaceMismatchError(ProLabInputError):
    """A label space does not fit the dataset or the checkpoint it is used with."""
