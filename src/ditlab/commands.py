"""``ditlab <command> [key=value ...]``: one entry point for the eight ``ditlab-*`` commands.

``ditlab train model=S`` runs exactly what ``ditlab-train model=S`` runs (same options, same exit
status); ``ditlab --help`` lists the commands, ``ditlab <command> --help`` shows that command's help.
"""

from __future__ import annotations

import importlib
import sys

# command -> (the ditlab-<command> console script's function, one line for the list). Same order and
# functions as [project.scripts] in pyproject.toml (tests/test_command_line.py checks both agree).
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("ditlab.cli:train_main", "train one run, or a sweep with -m"),
    "sample": ("ditlab.tools.sample:main", "draw samples from a run's checkpoint (any sampler, guidance, labels)"),
    "eval": ("ditlab.tools.evaluate:main", "FID, sFID, IS, precision, recall (or the digits metrics) of a sample set"),
    "report": ("ditlab.report.cli:main", "tables, scaling fits and plots of a sweep's runs"),
    "flops": ("ditlab.tools.flops_cli:main", "parameters and forward Gflops of any model/block (paper Table 4)"),
    "extract": ("ditlab.cli:extract_main", "encode a dataset to a latent cache once"),
    "export": ("ditlab.tools.export:main", "export a run as a diffusers pipeline folder"),
    "classify": ("ditlab.metrics.digits_classifier:main", "digit accuracy of samples from the bundled digits"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: ditlab <command> [key=value ...]",
        "",
        "Diffusion Transformer experiments from Hydra configs. Every command takes key=value options;",
        "`ditlab <command> --help` lists them. `ditlab <command>` is the same as `ditlab-<command>`.",
        "",
        "commands:",
        *(f"  {name.ljust(width)}  {line}" for name, (_, line) in COMMANDS.items()),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"ditlab: error: unknown command '{name}'; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    module, function = COMMANDS[name][0].split(":")
    sys.argv = [f"ditlab-{name}", *rest]  # Hydra and argparse read sys.argv: the command sees its own line
    getattr(importlib.import_module(module), function)()


if __name__ == "__main__":
    main()
