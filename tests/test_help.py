"""--help of each command lists only what its user picks: its own groups, no internal base configs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

MAINS = {
    "train": "from ditlab.cli import train_main as main",
    "sample": "from ditlab.tools.sample import main",
    "export": "from ditlab.tools.export import main",
}


def help_of(command: str) -> str:
    res = subprocess.run([sys.executable, "-c", f"{MAINS[command]}; main()", "--help"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def groups(text: str) -> dict[str, list[str]]:
    block = text.split("== Choices (group=option) ==")[1].split("== Config")[0]
    return {m[1]: m[2].split(", ") for m in re.finditer(r"^([\w/]+)(?: \(with -m\))?: (.+)$", block, re.M)}


def test_train_help_lists_user_options_only():
    text = help_of("train")
    assert text.startswith("ditlab-train:")
    found = groups(text)
    assert found["trainer"] == ["cpu", "ddp", "ddp_cpu", "fsdp", "gpu"]  # no internal `default`
    assert found["eval"] == ["digits", "inception", "none"]  # no internal `base`
    assert "paths" not in found and "model/base" not in found
    assert {"logger", "callbacks", "experiment", "hydra/launcher"} <= set(found)
    assert "progress: true" in text.split("== Config")[1]


@pytest.mark.parametrize("command,expected", [("sample", {"sampler", "encoder"}), ("export", {"sampler"})])
def test_sampling_commands_list_no_training_groups(command, expected):
    text = help_of(command)
    assert text.startswith(f"ditlab-{command}:")
    assert set(groups(text)) == expected
    assert "trainer" not in text and "max_steps" not in text
