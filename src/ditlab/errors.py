"""One exception type for every user-facing configuration or input problem.

The CLI catches :class:`DitlabError` and prints its message as a single line, then exits
with status 2: a mistake in a config or a path should read like an instruction, not a
traceback.
"""


class DitlabError(Exception):
    """A problem the user fixes by changing an option, a path or an input file."""
