"""Exceptions that xaikit raises for problems the user can fix.

Everything a user can cause (a missing file, a wrong layer name, a target out of range)
raises a subclass of :class:`XaikitError`; the command line turns these into one line on
stderr and exit code 2. Anything else is a bug in xaikit and exits with code 1.
"""

from __future__ import annotations


class XaikitError(Exception):
    """Base class for every error caused by input or configuration, not by a bug."""


class XaikitConfigError(XaikitError, ValueError):
    """A setting does not fit the model or the data (layer, target, shape, device)."""


class CheckpointError(XaikitError):
    """A checkpoint or model card is missing, corrupt, unsafe or does not fit its card."""


class DataError(XaikitError):
    """A data set or an input file cannot be read or has the wrong content."""
