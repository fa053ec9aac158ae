"""One exception type for every user-facing configuration or input problem.

Every console script runs inside :func:`one_line_errors`, which prints a :class:`DitlabError`'s
message as a single line and exits with status 2: a mistake in a config or a path should read
like an instruction, not a traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class DitlabError(Exception):
    """A problem the user fixes by changing an option, a path or an input file."""


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    try:
        yield
    except DitlabError as e:
        print(f"ditlab: error: {e}", file=sys.stderr)
        sys.exit(2)
