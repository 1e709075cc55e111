"""The project's expected errors: each message names the file or field at fault and what was
expected, and is all a user needs to see (the CLI prints it on one line, no traceback).

``ProLabError`` is the base of every expected error, the pipeline's (``tasks.errors``) too: it
lives here, in the lowest layer that raises one, and this module imports nothing, so
recognising an error never costs an import of torch or mmseg.
"""

from __future__ import annotations


class ProLabError(Exception):
    """An error the user can act on; its message says what is wrong, where, and what to do."""


class MissingInputError(ProLabError, FileNotFoundError):
    """A path the user named (a dataset root or one of its folders, a run without a checkpoint)
    does not exist. Only these are expected: any other ``FileNotFoundError`` is a bug, and keeps
    its traceback."""


class ProLabInputError(ProLabError, ValueError):
    """An input of a model run (config, label space, dataset, checkpoint) does not fit it."""


class UnknownConfigError(ProLabInputError):
    """A config name is neither a known short name nor an existing file."""


class InvalidConfigError(ProLabInputError):
    """A config file cannot be read, lacks what a segmentation run needs, or is given an
    override that cannot stand where it goes."""


class LabelSpaceMismatchError(ProLabInputError):
    """A label space does not fit the dataset or the checkpoint it is used with."""


class DatasetLayoutError(ProLabInputError):
    """A dataset on disk does not match the layout or label range its class expects."""


class PretrainedWeightsError(ProLabInputError):
    """Pretrained weights cannot be found or do not fit the model that names them."""
