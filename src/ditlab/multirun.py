"""The jobs of a ``-m`` command line, as override lists to compose and check before Hydra starts the
sweep (and creates its multirun folder): a bad value or a typo is then one line, not a failed job
per value or Hydra's multi-line error.

Each swept key (``key=a,b,c``, ``range(...)``, ``choice(...)``, parsed with Hydra's own override
grammar) is checked value by value, the other keys at their first value: 1 + sum(values - 1)
compositions instead of the whole product. Keys with many values are checked at their first and
last ``EDGE_VALUES`` (a bad value in between fails in its own job, as before). Glob and interval
sweeps (``glob(*)``, an optimizer sweeper's ``interval(...)``) and Hydra's own ``hydra...``
overrides are left to Hydra and the job.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from hydra.core.override_parser.types import Override, ValueType

from ditlab.errors import DitlabError

EDGE_VALUES = 5
ENUMERABLE = (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP, ValueType.RANGE_SWEEP)


def parse(overrides: Sequence[str]) -> list[Override]:
    """Hydra's parse of the overrides; a syntax error is one line naming the override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, parsed = OverridesParser.create(), []
    for override in overrides:  # one by one: the message names the override
        try:
            parsed += parser.parse_overrides([override])
        except Exception as e:  # noqa: BLE001 - Hydra's OverrideParseException, multi-line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DitlabError(f"{override}: {first.rstrip('.')}; fix its syntax (Hydra's override grammar)") from None
    return parsed


def swept_values(override: Override) -> list[str]:
    """The values of one command-line override as ``key=value`` strings, the first one first."""
    key = override.get_key_element()
    if not override.is_sweep_override():
        return [override.input_line or key]
    values = list(override.sweep_string_iterator())
    if len(values) > 2 * EDGE_VALUES:
        values = values[:EDGE_VALUES] + values[-EDGE_VALUES:]
    return [f"{key}={v}" for v in values]


def multirun_jobs(overrides: Sequence[str]) -> Iterator[list[str]]:
    """Override lists covering every checked value of every swept key (see the module docstring)."""
    kept = [
        o
        for o in parse(overrides)
        if not o.key_or_group.startswith("hydra")
        and (not o.is_sweep_override() or o.value_type in ENUMERABLE)  # glob/interval: Hydra's
    ]
    columns = [swept_values(o) for o in kept]
    base = [values[0] for values in columns]
    yield base
    for i, values in enumerate(columns):
        for value in values[1:]:
            yield [*base[:i], value, *base[i + 1 :]]
