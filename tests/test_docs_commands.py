"""The docs' commands work as written: every copy-paste command of README.md and docs/*.md.

What counts as a command: each line of a ```bash, ```sh or ```shell block, and each ``$ ``-prefixed
line of a ```console block (``\\``-continued lines joined, ``# comments`` dropped). Other blocks
(python, yaml, plain) are not commands.

Two tiers:

* fast (``make test``): every command names a known program, and a ditlab command parses. A
  ``ditlab-*`` (or ``ditlab <command>``) must be a console script of pyproject.toml; a Hydra command
  (train, sample, flops, extract, export, eval) is composed with its overrides (each value of a
  sweep, placeholders such as ``runs/<run>`` filled with a dummy), so an unknown key or option
  fails; the other commands' ``key=value`` / ``--flag`` names must appear in their ``--help``.
  ``python -m X`` must import, ``python file.py`` must exist, ``make X`` must be a Makefile target,
  ``pip install 'ditlab[X]'`` must name extras of pyproject.toml. Any other program fails unless it
  is in EXTERNAL_PROGRAMS.
* slow (``make test-full``): each block whose commands fit a 2-core CPU runs, command after command
  (later ones use what earlier ones wrote), in a fresh folder holding a copy of the quickstart run
  (``make train``'s, trained here with SHORTEN), with DITLAB_CACHE in a temporary folder (seeded
  with the user's trained digits classifier, if any); each must
  exit 0. Training commands get SHORTEN appended, the shortened form README.md gives. Commands that
  cannot run here are listed with their reason (NOT_RUN rules below, first match wins) in the test's
  skip output.

Marker convention: an HTML comment on the line right above a block,
``<!-- docs-test: skip (reason) -->``, keeps the whole block from running (its ditlab commands are
still parse-checked; its other programs are not looked up, e.g. a script of another repository).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
MARKER = re.compile(r"<!--\s*docs-test:\s*skip\s*\(?(.*?)\)?\s*-->")


def _pyproject_table(name: str) -> dict[str, str]:
    """``key = value`` lines of one pyproject.toml table (tomllib is Python 3.11+; ditlab runs on 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    body = re.search(rf"^\[{re.escape(name)}\]\n(.*?)(?=^\[|\Z)", text, flags=re.M | re.S).group(1)
    return dict(re.findall(r'^"?([\w-]+)"?\s*=\s*"?([^"#\n]*)"?', body, flags=re.M))


SCRIPTS = _pyproject_table("project.scripts")  # name -> "module:function"
EXTRAS = set(_pyproject_table("project.optional-dependencies"))
# The shortened form of every training command (README.md says so, next to its tour).
SHORTEN = (
    "trainer.max_steps=2 final_samples.num_samples=20 final_samples.batch_size=20 "
    "eval.num_samples=20 eval.batch_size=10 progress=false"
)
# Programs the docs may name besides ditlab's own; they are never run by the fast tier.
EXTERNAL_PROGRAMS = {"pip", "git", "wandb", "torchrun", "srun", "source", "cd", "eval", "export"}
HYDRA_FLAGS = {"-m", "--multirun", "--resolve", "--help", "-h", "--hydra-help", "--info"}
HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "-sc", "--shell-completion", "-cn", "--config-name"}
# Why a command is not run by the slow tier: (pattern on the command, reason); the first match wins.
NOT_RUN = [
    (r"^sudo\b", "needs root"),
    (r"(?i)/data/|imagenet", "needs ImageNet on local disk"),
    (r"\.pt\b|/weights/|VIRTUAL_imagenet|REF\.npz", "needs downloaded weights or reference batches"),
    (r"trainer=(ddp|fsdp|gpu)\b|trainer\.devices=[2-9]|device=cuda|--nproc[-_]per[-_]node|gpu_check", "needs GPUs"),
    (r"slurm|^srun\b|#SBATCH", "needs a SLURM cluster"),
    (r"<[^>]+>|(^|\s)\.\.\.(\s|$)", "a placeholder to fill in (parse-checked only)"),
    (r"hydra\.searchpath", "uses the config folder its page writes (tests/test_extension.py runs the same)"),
    (
        r"warmup_cosine.*warmup_steps=\d{2,}",
        "its warm-up is longer than the shortened run (tests/test_optim.py runs one)",
    ),
    (r"compute\.budget_gflops", "a compute-matched sweep (~1,000 steps a job; tests/test_compute_matching.py)"),
    (r"/tmp/", "writes outside the test's folder"),
    (r"^make\b", "make installs ditlab and runs the suites; CI runs the targets itself"),
    (r"^(pip|git)\b|^wandb sync", "needs the network"),
    (r"sampler_study|ditlab\.tools\.bench\b", "a study or benchmark of minutes to hours (experiments/)"),
]
if importlib.util.find_spec("rich") is None:
    NOT_RUN.append((r"rich_progress_bar", "needs pip install 'ditlab[rich]'"))


@dataclass(frozen=True)
class DocCommand:
    where: str  # file:line of the command's first line
    block: str  # file:line of its code block
    text: str  # as written (continuations joined), without the comment
    skip_block: str | None  # a docs-test marker's reason

    @property
    def tokens(self) -> list[str]:
        return shlex.split(re.sub(r"<[^<>\n]+>", "<placeholder>", self.text))  # "<digits run>" is one word

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def _strip_comment(line: str) -> str:
    """``line`` without its trailing ``# comment`` (a ``#`` after a space, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def doc_commands(path: Path) -> list[DocCommand]:
    rel = path.relative_to(ROOT).as_posix()
    lines = path.read_text().splitlines()
    commands: list[DocCommand] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*```(\S*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        lang, start = fence.group(1).lower(), i
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.search(previous)
        i += 1
        pending, first = "", 0
        while i < len(lines) and not lines[i].strip().startswith("```"):
            line, i = lines[i], i + 1
            if lang not in SHELL_LANGS:
                continue
            if lang == "console" and not pending:
                if not line.lstrip().startswith("$ "):
                    continue
                line = line.lstrip()[2:]
            first = first if pending else i
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1].rstrip() + " "
                continue
            text, pending = _strip_comment(pending + line.strip()), ""
            if text:
                skip = (marker.group(1) or "marked skip") if marker else None
                commands.append(DocCommand(f"{rel}:{first}", f"{rel}:{start + 1}", text, skip))
        i += 1
    return commands


ALL_COMMANDS = [c for path in DOC_FILES for c in doc_commands(path)]


# ------------------------------------------------------------------ fast tier: names and parsing
def _split_env(tokens: list[str]) -> list[str]:
    """The command without leading ``NAME=value`` environment assignments."""
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):
        tokens = tokens[1:]
    return tokens


def _program(token: str) -> str:
    return Path(token).name if "/bin/" in token else token


def _inner_command(tokens: list[str]) -> list[str] | None:
    """The command a launcher (srun, torchrun) runs, as ``[program, *args]``; None when it runs a module."""
    if _program(tokens[0]) == "srun":
        return tokens[1:]
    if "--no-python" in tokens:
        return tokens[tokens.index("--no-python") + 1 :]
    if "-m" in tokens:
        return ["python", *tokens[tokens.index("-m") :]]
    return None


def _fill_placeholders(token: str) -> str:
    token = re.sub(r"\$\(.*?\)", "placeholder", token.replace("$PWD", str(ROOT)))
    return re.sub(r"<[^>]+>", "placeholder", token)


def _sweep_points(overrides: list[str]) -> list[list[str]]:
    """Override lists that together use every value of every sweep (``model=S,B``): the first values,
    then each further value of one sweep with the others at their first (not the whole grid)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    values = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            key = override.get_key_element()
            values.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:
            values.append([override.input_line])
    first = [v[0] for v in values]
    return [first] + [first[:i] + [v] + first[i + 1 :] for i, vs in enumerate(values) for v in vs[1:]]


def _compose(config: str, overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ditlab.config import CONFIG_DIR

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base=None, config_dir=CONFIG_DIR):
            compose(config, overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _help_text(script: str) -> str:
    module, function = SCRIPTS[script].split(":")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        getattr(importlib.import_module(module), function)(["--help"])
    assert stop.value.code in (0, None), f"{script} --help exited {stop.value.code}"
    return out.getvalue()


def check_ditlab_command(script: str, args: list[str]) -> None:
    if script == "ditlab":  # the umbrella: ditlab <command> ...
        assert args and f"ditlab-{args[0]}" in SCRIPTS, f"'ditlab {args[:1]}' names no command"
        script, args = f"ditlab-{args[0]}", args[1:]
    assert script in SCRIPTS, f"{script} is not a console script of pyproject.toml ({', '.join(SCRIPTS)})"
    name = script.removeprefix("ditlab-")
    config = {"eval": "evaluate"}.get(name, name)
    if (ROOT / "conf" / f"{config}.yaml").is_file():
        overrides, rest = [], iter(args)
        for token in rest:
            if token in HYDRA_FLAGS:
                continue
            if token in HYDRA_FLAGS_WITH_VALUE:
                next(rest, None)
                continue
            assert not token.startswith("-"), f"{script}: unknown flag {token}"
            if "=" not in token:  # ditlab-eval's one positional (the old spelling of samples=)
                assert script == "ditlab-eval", f"{script} takes key=value options, got '{token}'"
                token = f"samples={token}"
            overrides.append(_fill_placeholders(token))
        for point in _sweep_points(overrides):
            _compose(config, point)
        return
    text = _help_text(script)
    known = {f.replace("-", "_") for f in re.findall(r"--([a-z][\w-]*)", text)}
    known |= set(re.findall(r"\b([a-z_]\w*)=\.\.\.", text))
    for token in args:
        if token.startswith("--"):
            name = token[2:].split("=")[0].replace("-", "_")
        elif re.match(r"^[a-z_][\w.]*=", token):
            name = token.split("=")[0]
        else:
            continue  # a positional argument or a flag's value
        assert name in known, f"{script} has no option '{name}' (its --help names {sorted(known)})"


def _makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M))


# Commands the fast tier cannot compose: (pattern, reason); they are skipped with the reason.
NOT_PARSED = [
    (r"hydra\.searchpath", "adds the config folder its page writes (tests/test_extension.py composes the same)"),
    (r"(^|\s)\.\.\.(\s|$)", "an elided command (`...`)"),
]


def check_command(cmd: DocCommand) -> None:
    for pattern, reason in NOT_PARSED:
        if re.search(pattern, cmd.text):
            pytest.skip(f"not parsed: {reason}")
    tokens = _split_env(cmd.tokens)
    program, args = _program(tokens[0]), tokens[1:]
    if program.startswith("ditlab"):
        check_ditlab_command(program, args)
    elif program == "sudo":
        check_command(DocCommand(cmd.where, cmd.block, shlex.join(args), cmd.skip_block))
    elif program in ("srun", "torchrun"):
        inner = _inner_command(tokens)
        if inner is not None:
            check_command(DocCommand(cmd.where, cmd.block, shlex.join(inner), cmd.skip_block))
    elif program in ("python", "python3"):
        if args[:1] == ["-m"]:
            assert importlib.util.find_spec(args[1]) is not None, f"no module {args[1]}"
        elif not cmd.skip_block:
            assert (ROOT / args[0]).is_file(), f"no file {args[0]} in the repository"
    elif program == "make":
        unknown = {a for a in args if "=" not in a and not a.startswith("-")} - _makefile_targets()
        assert not unknown, f"no Makefile target {sorted(unknown)}"
    elif program == "pip":
        for extras in re.findall(r"(?:ditlab|\.)\[([\w,-]+)\]", cmd.text):
            assert set(extras.split(",")) <= EXTRAS, f"pip extras {extras} not all in pyproject.toml ({sorted(EXTRAS)})"
    else:
        assert program in EXTERNAL_PROGRAMS or cmd.skip_block, f"unknown program '{program}'"


def test_the_docs_have_commands():
    assert len(ALL_COMMANDS) > 50 and any(c.where.startswith("README.md") for c in ALL_COMMANDS)


@pytest.mark.parametrize("cmd", ALL_COMMANDS, ids=[c.where for c in ALL_COMMANDS])
def test_every_docs_command_names_a_known_program_and_parses(cmd):
    check_command(cmd)


def test_a_misspelled_script_option_or_key_fails_the_check():
    for text in (
        "ditlab-trian model=small",  # unknown script
        "ditlab-train trainer.max_step=5",  # unknown key
        "ditlab-train -m model=tiny,smal",  # unknown option (in a sweep)
        "ditlab-sample ckpt=runs/<run> grid.upscal=4",
        "ditlab-report runs/x --no-such-flag",
        "ditlab-report runs/x no_such_key=1",
        "make no-such-target",
        "pip install 'ditlab[nope]'",
        "frobnicate --all",
    ):
        with pytest.raises(Exception):  # noqa: B017  (an AssertionError or Hydra's error, either way a failure)
            check_command(DocCommand("test", "test", text, None))


def test_readme_gives_the_shortened_form_the_slow_tier_uses():
    assert SHORTEN in (ROOT / "README.md").read_text()


def test_readme_names_every_console_script():
    readme = (ROOT / "README.md").read_text()
    missing = [s for s in SCRIPTS if not re.search(rf"`{re.escape(s)}[` ]", readme)]
    assert not missing, f"README.md does not name {missing}"


# ------------------------------------------------------------------ the configs table
def _table_options() -> dict[str, set[str]]:
    """group -> options of the table in docs/configs.md (backticked names of its second column)."""
    table = {}
    for line in (ROOT / "docs" / "configs.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        group = re.fullmatch(r"`([\w/]+)`", cells[0]) if len(cells) >= 3 else None
        if group:
            names = re.findall(r"`([^`]+)`", cells[1])
            table[group.group(1)] = {n for n in names if re.fullmatch(r"[\w/]+", n)}
    return table


def _conf_options() -> dict[str, set[str]]:
    """group -> options: each conf/ folder (hydra/launcher for Hydra's own) and its YAML files, less the
    base configs other options extend (the same ones --help leaves out)."""
    from ditlab.cli import INTERNAL_OPTIONS

    folders = [p for p in (ROOT / "conf").iterdir() if p.is_dir() and p.name != "hydra"]
    folders.append(ROOT / "conf" / "hydra" / "launcher")
    return {
        str(folder.relative_to(ROOT / "conf")): {
            p.stem for p in folder.glob("*.yaml") if p.stem not in INTERNAL_OPTIONS.get(folder.name, ())
        }
        for folder in folders
    }


def test_the_configs_table_lists_every_group_and_option():
    table, conf = _table_options(), _conf_options()
    assert not set(conf) - set(table), f"docs/configs.md's table lacks the groups {sorted(set(conf) - set(table))}"
    for group, options in conf.items():
        assert options <= table[group], f"docs/configs.md: group {group} lacks {sorted(options - table[group])}"
        unknown = table[group] - options - {"basic"}  # basic: Hydra's own launcher
        assert not unknown, f"docs/configs.md: group {group} lists {sorted(unknown)}, not in conf/{group}"


def test_train_help_lists_every_group():
    from ditlab.cli import HELP_GROUPS

    missing = set(_conf_options()) - set(HELP_GROUPS["train"]) - {"paths"}  # paths: one option, set by env
    assert not missing, f"ditlab-train --help (ditlab.cli.HELP_GROUPS) leaves out {sorted(missing)}"


# ------------------------------------------------------------------ slow tier: run what fits a CPU
def not_run_reason(cmd: DocCommand) -> str | None:
    if cmd.skip_block:
        return cmd.skip_block
    for pattern, reason in NOT_RUN:
        if re.search(pattern, cmd.text, flags=re.M):
            return reason
    program = _program(_split_env(cmd.tokens)[0])
    if not (program.startswith("ditlab") or program in ("python", "python3", "eval", "source")):
        return f"runs only ditlab's own commands here, not {program}"
    return None


def _blocks() -> list[tuple[str, list[DocCommand]]]:
    """Each code block with its commands; a block repeating an earlier block's runnable commands (README
    and a docs page) keeps only its commands not run, so the same commands run once."""
    blocks: dict[str, list[DocCommand]] = {}
    for cmd in ALL_COMMANDS:
        blocks.setdefault(cmd.block, []).append(cmd)
    unique, seen = [], set()
    for where, cmds in blocks.items():
        key = tuple(c.text for c in cmds if not_run_reason(c) is None and not c.text.startswith("source "))
        if key and key in seen:
            cmds = [c for c in cmds if not_run_reason(c) is not None] or [
                DocCommand(where, where, "", "the same commands as an earlier block")
            ]
        seen.add(key)
        unique.append((where, cmds))
    return unique


def _shortened(text: str) -> str:
    tokens = _split_env(shlex.split(text))
    is_train = _program(tokens[0]) == "ditlab-train" or tokens[:2] == ["ditlab", "train"]
    informational = any(t in ("--help", "--cfg", "-sc", "--hydra-help") for t in tokens)
    return f"{text} {SHORTEN}" if is_train and not informational else text


def _env(work: Path, cache: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "DITLAB_ROOT": str(work),
        "DITLAB_CACHE": str(cache),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }


def _user_cache() -> Path:
    if os.environ.get("DITLAB_CACHE"):
        return Path(os.environ["DITLAB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ditlab"


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """``make train``'s run, shortened, under the name README.md gives it; and the cache it filled.

    The cache starts with the user's trained digits classifier when there is one (minutes to retrain on a
    busy 2-core machine; its training is tested elsewhere); everything else is built in the tmp cache."""
    work, cache = tmp_path_factory.mktemp("quickstart"), tmp_path_factory.mktemp("cache")
    for classifier in _user_cache().glob("digits_classifier_*.pt"):
        shutil.copy2(classifier, cache / classifier.name)
    done = subprocess.run(
        ["bash", "-c", f"ditlab-train {SHORTEN}"], cwd=work, env=_env(work, cache), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (work / "runs").iterdir()
    name = re.search(r"runs/(digits_[\w.-]+)", (ROOT / "README.md").read_text()).group(1)
    run.rename(work / "runs" / name)  # a shortened run may carry its options' hash in its name
    return work / "runs", cache


BLOCKS = _blocks()


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[where for where, _ in BLOCKS])
def test_docs_block_runs_on_the_cpu(block, request, tmp_path):
    """The block's runnable commands in order; a block with none is skipped with each command's reason."""
    runnable = [c for c in block[1] if not_run_reason(c) is None]
    if not runnable:
        pytest.skip("; ".join(sorted({f"{not_run_reason(c)}" for c in block[1]})))
    runs, cache = request.getfixturevalue("quickstart")
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    shutil.copytree(runs, tmp_path / "runs", symlinks=True)
    for cmd in runnable:
        text = _shortened(cmd.text)
        done = subprocess.run(
            ["bash", "-c", text], cwd=tmp_path, env=_env(tmp_path, cache), capture_output=True, text=True, timeout=1800
        )
        assert done.returncode == 0, f"{cmd.where}: {text}\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
