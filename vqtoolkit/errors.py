"""Errors a user can cause. The CLI prints them as one line and exits non-zero, no traceback."""

import difflib
from collections.abc import Iterable


class VQTError(Exception):
    """A mistake in a recipe, a file or a command line: shown to the user as one clear line."""


def one_line(message: str) -> str:
    """A message as exactly one line: newlines and other control characters (a file name may hold
    them) are shown escaped, so that nothing can split the line or forge another `error:` line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in message)


def closest(name: str, choices: Iterable[str], prefix: str = "") -> str:
    """' (did you mean 'x'?)' for the closest valid name, or a list of the valid ones."""
    choices = sorted(choices)
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if match:
        return f" (did you mean '{prefix}{match[0]}'?)"
    if choices:
        return f" (valid: {', '.join(prefix + c for c in choices)})"
    return ""
