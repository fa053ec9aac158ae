"""Run folders that tell runs apart (issue: `block.norm=rmsnorm` landed on the quickstart's folder),
run names that stay inside the runs folder, the user's cache folder, and sample folder names."""

from __future__ import annotations

import re

import pytest
from conftest import run_cli
from omegaconf import OmegaConf

from ditlab.config import compose
from ditlab.errors import DitlabError
from ditlab.run_names import check_run_name
from ditlab.user_cache import default_cache_dir

DEFAULT_NAME = "digits_DiT-tiny-2_adaln_zero_ddpm_seed0"
HASHED = re.compile(re.escape(DEFAULT_NAME) + r"_[0-9a-f]{8}")


def name(*overrides: str) -> str:
    return str(compose("train", list(overrides)).run_name)


def test_the_default_command_keeps_its_readable_name():
    assert name() == DEFAULT_NAME
    assert name("model=tiny", "block=adaln_zero") == DEFAULT_NAME  # the defaults spelled out
    assert name("seed=3") == DEFAULT_NAME.replace("seed0", "seed3")  # named already: no hash


def test_an_option_that_changes_the_training_gets_its_own_folder():
    rms = name("block.norm=rmsnorm")
    assert HASHED.fullmatch(rms)
    assert rms == name("block.norm=rmsnorm")  # the same command finds its own folder
    lr = str(compose("train").optim.lr)
    assert name(f"optim.lr={float(lr) / 2}") not in (DEFAULT_NAME, rms)
    assert name(f"optim.lr={float(lr):e}") == DEFAULT_NAME  # the default value in another spelling
    assert len({rms, name("data.batch_size=64"), name("block.norm=rmsnorm", "data.batch_size=64")}) == 3


def test_the_order_of_overrides_does_not_matter():
    assert name("block.norm=rmsnorm", "data.batch_size=64", "ema.decay=0.99") == name(
        "ema.decay=0.99", "data.batch_size=64", "block.norm=rmsnorm"
    )


def test_run_settings_leave_the_name_alone():
    # A resume that extends the run, hides bars or moves devices must find the same folder.
    settings = ["trainer.max_steps=5000", "progress=false", "logger=none", "ckpt_path=last", "eval=none"]
    assert name(*settings) == DEFAULT_NAME
    assert name("block.norm=rmsnorm", *settings) == name("block.norm=rmsnorm")


def test_an_explicit_run_name_wins():
    assert name("block.norm=rmsnorm", "run_name=mine") == "mine"


def test_the_console_script_names_the_folder_the_same_way(tmp_path):
    res = run_cli(
        "ditlab-train", "data.batch_size=64", "block.norm=rmsnorm", "--cfg", "job", "-p", "run_name", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == name("block.norm=rmsnorm", "data.batch_size=64")


@pytest.mark.parametrize(
    "bad,message",
    [
        ("../x", "must stay inside the runs folder"),
        ("a/../../x", "must stay inside the runs folder"),
        ("/tmp/elsewhere", "is an absolute path"),
        ("x" * 300, "longer than 200 bytes"),
    ],
)
def test_a_run_name_outside_the_runs_folder_is_refused_in_one_line(tmp_path, bad, message):
    work = tmp_path / "work"
    work.mkdir()
    res = run_cli("ditlab-train", f"run_name={bad}", "trainer.max_steps=1", cwd=work)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert list(work.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_nested_run_names_stay_inside_the_runs_folder():
    check_run_name("ablations/rmsnorm")  # a folder inside runs/: accepted
    for bad in ("", ".", "a//b", "a\\..\\b", "~/x"):
        with pytest.raises(DitlabError, match="run_name="):
            check_run_name(bad)


def test_the_cache_lives_in_the_users_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("DITLAB_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == str(tmp_path / "home" / ".cache" / "ditlab")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == str(tmp_path / "xdg" / "ditlab")
    monkeypatch.setenv("DITLAB_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == str(tmp_path / "mine")
    # What the configs use, whatever the working directory.
    monkeypatch.chdir(tmp_path)
    assert compose("train").paths.cache_dir == str(tmp_path / "mine")
    monkeypatch.setenv("DITLAB_CACHE", "")  # empty counts as unset, never the file system root
    assert compose("sample").paths.cache_dir == str(tmp_path / "xdg" / "ditlab")


def sample_folder(*overrides: str) -> str:
    import ditlab.tools.sample as sample_tool
    from ditlab.build import build_sampler

    cfg = compose("sample", ["ckpt=x", *overrides])
    default = OmegaConf.to_container(compose("train").sampler, resolve=True)  # the run's own sampler
    chosen = sample_tool.sampler_config(cfg.get("sampler"), default)
    return sample_tool.recipe_tag(cfg, build_sampler(chosen), chosen, default)


def test_sample_folders_tell_sampler_options_and_labels_apart():
    assert sample_folder() == "dpm_solver10_cfg4-all_n100_seed0"
    karras = sample_folder("sampler=dpm_solver_karras")
    plain = sample_folder("sampler=dpm_solver", "sampler.steps=10")
    assert karras == "dpm_solver10_cfg4-all_n100_seed0" and re.fullmatch(karras + r"_[0-9a-f]{8}", plain)
    assert sample_folder("labels=[3,8]").startswith("dpm_solver10_cfg4-all_n100_seed0_labels3-8_")
    assert sample_folder("labels=[3,8]") != sample_folder("labels=[3,9]")
    assert sample_folder("batch_size=50") != sample_folder()  # other batches draw other noise
