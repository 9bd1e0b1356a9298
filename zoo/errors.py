"""Every failure a user can cause is a ZooError: the CLI prints its message and exits 2.

Messages name the file, the place in it and the fix. Programming errors (bugs in zoo or in a
plugin) are *not* ZooErrors, so they keep their tracebacks.
"""

from __future__ import annotations


class ZooError(Exception):
    """Base of every error a user can cause (bad recipe, missing data, bad weights, ...)."""


class PluginError(ZooError):
    """A plugin is broken or two plugins claim the same component name."""


class UnknownComponentError(ZooError):
    """A recipe names a layer, dataset, loss or gradient mode that no plugin registers."""


class RecipeError(ZooError):
    """A recipe cannot be read, merged, overridden or validated."""


class ShapeError(ZooError):
    """A layer cannot take the shape it is given (e.g. `squeeze` on an odd size)."""


class DataError(ZooError):
    """A dataset's files are missing or malformed."""


class WeightsError(ZooError):
    """A run folder or Hub repo has missing, corrupt or mismatched weights."""


class HubError(ZooError):
    """The Hub (or a mirror) cannot be reached, or a repo, revision or name does not exist."""


class TrainingError(ZooError):
    """Training cannot go on (e.g. the loss became non-finite)."""


class TrackingError(ZooError):
    """A tracker that ``train.log`` names cannot start (its extra is not installed, or it
    refuses to), or a run report cannot be written."""


class DataFilesNotFound(DataError):
    """None of a dataset's files are where zoo looked (as opposed to some of them missing)."""


class KernelBackendError(ZooError):
    """A kernel backend was asked for where it cannot run (e.g. Triton without CUDA)."""


class ActivationRangeError(ZooError):
    """An activation's inverse got a value outside the activation's range."""


class LabelError(ZooError):
    """A data set's labels cannot answer what was asked: it has none, or no such class or attribute."""


class ContextError(ZooError):
    """A conditional model got a context it cannot take (wrong size, dtype or class), or a recipe
    conditions a model on labels its data set lacks, or a layer that cannot take one."""
