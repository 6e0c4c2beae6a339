"""Errors that stemob reports to users, and how commands report them (a leaf module: it imports
nothing of the project)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


class StemobError(ValueError):
    """A user-facing error: bad input, a bad option or a missing file, with a message that names it.

    Command-line tools print the message alone (no traceback) and exit with status 2.
    """


class CacheMismatchError(StemobError):
    """An inversion cache exists but was made with other settings or from other source data."""


def run_cli(
    main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None, prog: str
) -> int:
    """Run a command; a user error prints one line (no traceback) and returns exit status 2."""
    try:
        main(argv)
    except StemobError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0
