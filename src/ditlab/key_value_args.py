"""``key=value`` arguments for the two argparse-based commands (``ditlab-report``, ``ditlab-classify``).

Every other ditlab command takes Hydra overrides (``key=value``); these two now take the same spelling:

    ditlab-report sweep=runs/multirun/2025-01-01_12-00-00 metric=fd_digits budget=1e15 overwrite=true
    ditlab-classify samples=runs/<run> out=accuracy.json

The old spelling (a positional folder and ``--flags``) still works for one release: it prints one
note on stderr with the same command in the new spelling.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys

from ditlab.errors import DitlabError, one_line_errors

TRUE, FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def parse_key_values(
    parser: argparse.ArgumentParser, argv: list[str] | None, positional_keys: dict[str, str]
) -> argparse.Namespace:
    """Parse ``argv`` (``key=value`` tokens, old ``--flag``/positional tokens, or a mix) with ``parser``.

    ``positional_keys`` names each positional argument's key, e.g. ``{"sweep": "dir"}``: ``sweep=X``
    (or ``dir=X``) fills the positional ``dir``. A key that names no option is one line naming the
    options, exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    keys = [*positional_keys, *(a.dest for a in parser._actions if a.option_strings and a.dest != "help")]
    parser.epilog = parser.epilog or (
        f"Options are key=value ({', '.join(k + '=...' for k in keys)}), as in every ditlab command; "
        "the positional/--flag spelling is read until the next release."
    )
    for action in parser._actions:  # argparse's own messages ("required: sweep") name the key
        key = next((k for k, dest in positional_keys.items() if dest == action.dest), None)
        if key is not None and not action.option_strings:
            action.metavar = key
    parser.usage = parser.usage or f"{parser.prog} {' '.join(k + '=...' for k in positional_keys)} [key=value ...]"
    if any(a in ("-h", "--help") for a in argv):
        return parser.parse_args(argv)  # prints the help and exits
    with one_line_errors():
        flags, positionals, old = _translate(parser, argv, positional_keys)
    args = parser.parse_args([*flags, "--", *positionals] if positionals else flags)
    if old:
        new = new_spelling(parser, args, positional_keys)
        print(
            f"{parser.prog}: note: {' '.join(old)} is the old spelling, still read until the next release; "
            f"write: {parser.prog} {new}",
            file=sys.stderr,
        )
    return args


def _translate(
    parser: argparse.ArgumentParser, argv: list[str], positional_keys: dict[str, str]
) -> tuple[list[str], list[str], list[str]]:
    """-> (argparse flags, positional values, the old-spelling tokens seen)."""
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    aliases = {**{dest: dest for dest in actions}, **positional_keys}
    flags: list[str] = []
    positionals: list[str] = []
    old: list[str] = []
    for token in argv:
        key, eq, value = token.partition("=")
        if token.startswith("-") or not eq or not KEY.fullmatch(key):
            old.append(token)  # a --flag, its value or a positional: argparse reads it as before
            flags.append(token)
            continue
        dest = aliases.get(key.replace("-", "_"))
        if dest is None:
            names = [*positional_keys, *(d for d, a in actions.items() if a.option_strings)]
            raise DitlabError(f"{parser.prog} has no option '{key}'; options: {', '.join(names)} (key=value)")
        action = actions[dest]
        if not action.option_strings:
            positionals.append(value)
        elif action.nargs == 0:  # a switch (store_true): key=true | key=false
            if value.lower() not in TRUE | FALSE:
                raise DitlabError(f"{key}={value}: {key} is true or false")
            if value.lower() in TRUE:
                flags.append(_long_option(action))
        else:
            _check_value(key, value, action)
            flags.append(f"{_long_option(action)}={value}")  # one token: a value may start with "-"
    return flags, positionals, old


def _check_value(key: str, value: str, action: argparse.Action) -> None:
    """argparse's own type and choice errors name the --flag; in the key=value spelling, name the key."""
    if callable(action.type):
        try:
            typed = action.type(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            kind = getattr(action.type, "__name__", "value")
            raise DitlabError(
                f"{key}={value} is not valid: give {'an' if kind[0] in 'aeiou' else 'a'} {kind}"
            ) from None
    else:
        typed = value
    if action.choices is not None and typed not in action.choices:
        raise DitlabError(f"{key}={value} is not valid: choose one of {', '.join(map(str, action.choices))}")


def new_spelling(parser: argparse.ArgumentParser, args: argparse.Namespace, positional_keys: dict[str, str]) -> str:
    """The ``key=value`` command line equal to ``args`` (options at their defaults left out)."""
    key_of = {dest: key for key, dest in positional_keys.items()}
    parts = []
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.dest == "help" or value is None or value == action.default:
            continue
        key = key_of.get(action.dest, action.dest)
        parts.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    return " ".join(shlex.quote(p) for p in parts)


def _long_option(action: argparse.Action) -> str:
    return next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
