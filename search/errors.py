"""One exception type for everything a user can get wrong.

The CLI catches `UserError` and prints its message as one line, exit code 2, no
traceback. Raise it with a message that names the file or option, what is wrong
and what was expected, e.g.::

    raise UserError(f"{path}: field 'mentee.depth': expected an integer ≥ 1, got 'three'")
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user: shown as one line, exit code 2."""


class TrainingDiverged(RuntimeError):
    """A loss became NaN or inf; the message names the member and the step."""


class SweepInterrupted(Exception):
    """A sweep stopped before every mentee was recorded (Ctrl-C); `--resume` continues it."""


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `options`, or nothing: the tail of a UserError."""
    near = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{near[0]}'?)" if near else ""
