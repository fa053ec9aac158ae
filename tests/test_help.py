"""--help of each command lists only what its user picks: its own groups, no internal base configs."""

from __future__ import annotations

import re
import subprocess
import sys

MAINS = {"sample": "from ditlab.tools.sample import main"}


def help_of(command: str) -> str:
    res = subprocess.run(
        [sys.executable, "-c", f"{MAINS[command]}; main()", "--help"], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def groups(text: str) -> dict[str, list[str]]:
    block = text.split("== Choices (group=option) ==")[1].split("== Config")[0]
    return {m[1]: m[2].split(", ") for m in re.finditer(r"^([\w/]+)(?: \(with -m\))?: (.+)$", block, re.M)}


def test_train_help_lists_user_options_only():
    from ditlab.cli import help_text

    text = help_text("train")  # what `ditlab-train --help` prints above the config (hydra/help/ditlab.yaml)
    assert text.startswith("ditlab-train:")
    found = groups(text + "== Config")
    assert found["trainer"] == ["cpu", "ddp", "ddp_cpu", "fsdp", "gpu"]  # no internal `default`
    assert found["eval"] == ["adm", "digits", "inception", "none"]  # no internal `base`
    assert "paths" not in found and "model/base" not in found
    assert {"logger", "callbacks", "experiment", "hydra/launcher"} <= set(found)
    export = help_text("export")
    assert export.startswith("ditlab-export:") and set(groups(export + "== Config")) == {"sampler"}


def test_sample_help_lists_no_training_groups():
    text = help_of("sample")  # the real --help, through Hydra
    assert text.startswith("ditlab-sample:")
    assert set(groups(text)) == {"sampler", "encoder"}
    assert "trainer" not in text and "max_steps" not in text
    assert "progress: true" in text.split("== Config")[1]
