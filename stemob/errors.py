"""Errors that stemob reports to users (a leaf module: it imports nothing of the project)."""


class StemobError(ValueError):
    """A user-facing error: bad input, a bad option or a missing file, with a message that names it.

    Command-line tools print the message alone (no traceback) and exit with status 2.
    """


class CacheMismatchError(StemobError):
    """An inversion cache exists but was made with other settings or from other source data."""
