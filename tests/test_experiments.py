"""Every recipe in conf/experiment composes; its sweep grid expands to buildable runs; launcher presets."""

import itertools
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from ditlab.build import build_data, build_model, build_sampler
from ditlab.config import CONFIG_DIR
from ditlab.tools.flops import measured_gflops

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
NEEDS_DATA_ROOT = {"paper_table4", "conditioning_ablation"}


def compose_with_hydra(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base=None, config_dir=CONFIG_DIR):
        return compose("train", overrides=["paths.output_dir=unused", *overrides], return_hydra_config=True)


def grid(cfg) -> list[list[str]]:
    """The multirun points of a recipe's hydra.sweeper.params, as override lists."""
    params = cfg.hydra.sweeper.params or {}
    axes = [[f"{key}={value}" for value in str(values).split(",")] for key, values in params.items()]
    return [list(point) for point in itertools.product(*axes)]


def test_the_four_recipes_exist():
    assert set(EXPERIMENTS) >= {"paper_table4", "conditioning_ablation", "cfg_scale", "cpu_scaling"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_its_grid_points_build(name):
    extra = ["data.root=/data/imagenet/train"] if name in NEEDS_DATA_ROOT else []
    cfg = compose_with_hydra(f"experiment={name}", *extra)
    points = grid(cfg) or [[]]
    for point in points:
        run = compose_with_hydra(f"experiment={name}", *extra, *point)
        build_sampler(run.sampler)
        if run.data.name == "digits":  # CPU recipes: build everything
            data = build_data(run.data)
            model = build_model(
                run.model,
                run.block,
                in_channels=1,
                input_size=data.resolution,
                out_channels=2,
                num_classes=data.num_classes,
            )
            assert measured_gflops(model) > 0
        else:  # GPU recipes: the model at the latent size, on the meta device (no memory)
            with torch.device("meta"):
                model = build_model(
                    run.model,
                    run.block,
                    in_channels=4,
                    input_size=run.data.resolution // 8,
                    out_channels=8,
                    num_classes=1000,
                )
            assert model.num_tokens == (run.data.resolution // 8 // run.model.patch_size) ** 2


def test_cpu_scaling_is_the_size_by_patch_grid_on_digits():
    cfg = compose_with_hydra("experiment=cpu_scaling")
    points = grid(cfg)
    assert len(points) == 6 and {p[0] for p in points} == {"model=tiny", "model=small"}
    assert cfg.data.name == "digits" and cfg.eval.metrics[0] == "fd_digits" and cfg.eval.guidance_scale == 1.0
    assert "cpu_scaling" in cfg.hydra.sweep.dir
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2  # both cores


@pytest.mark.parametrize(
    "name,jobs,patches",
    [("cpu_scaling_law", 12, {"2"}), ("cpu_scaling_law_patches", 16, {"2", "4"})],
)
def test_the_scaling_law_studies_run_exactly_their_grid(name, jobs, patches):
    """Sweep params merge with the parent recipe's (cpu_scaling sweeps model=tiny,small and patch 2,4,8):
    each study pins those axes, or it silently runs 2-3x the jobs it documents (it happened, twice)."""
    points = grid(compose_with_hydra(f"experiment={name}"))
    assert len(points) == jobs and len({tuple(p) for p in points}) == jobs
    assert {o.split("=")[1] for p in points for o in p if o.startswith("model.patch_size=")} == patches
    assert {o for p in points for o in p if o.startswith("model=")} == {"model=tiny"}


def test_paper_recipes_use_the_papers_settings():
    cfg = compose_with_hydra("experiment=paper_table4", "data.root=/x")
    assert (cfg.optim.lr, cfg.ema.decay, cfg.data.batch_size, cfg.trainer.max_steps) == (1e-4, 0.9999, 256, 400000)
    assert cfg.eval.metrics == ["fid"] and cfg.eval.num_samples == 50000 and cfg.guidance.scale == 1.0
    assert cfg.encoder.name == "sd_vae" and cfg.sampler.name == "ddpm" and cfg.sampler.steps == 250
    assert len(grid(cfg)) == 12
    ablation = compose_with_hydra("experiment=conditioning_ablation", "data.root=/x")
    assert sorted(p[2] for p in grid(ablation)) == [
        "block=adaln",
        "block=adaln_zero",
        "block=cross_attn",
        "block=in_context",
    ]
    assert {p[0] for p in grid(ablation)} == {"model=XL"} and ablation.optim.lr == 1e-4


@pytest.mark.parametrize("gpus", [1, 4, 8])
def test_slurm_presets_start_one_task_per_gpu(gpus):
    cfg = compose_with_hydra(f"hydra/launcher=slurm_{gpus}gpu")
    launcher = cfg.hydra.launcher
    assert launcher.tasks_per_node == launcher.gpus_per_node == gpus and launcher.nodes == 1
    assert launcher.cpus_per_task is None and launcher.cpus_per_gpu > 0  # see the preset's comment
    assert launcher._target_.endswith("SlurmLauncher")


def test_local_parallel_launcher_is_joblib():
    cfg = compose_with_hydra("hydra/launcher=local_parallel")
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2


def test_the_wandb_sweep_example_runs_ditlab_train_with_hydra_overrides():
    import yaml

    sweep = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "experiments" / "cpu_scaling" / "wandb_sweep.yaml").read_text()
    )
    assert sweep["command"][-1] == "${args_no_hyphens}" and "ditlab-train" in sweep["command"]
    fixed = [a for a in sweep["command"] if "=" in a and not a.startswith("$")]
    for values in itertools.product(*(p["values"] for p in sweep["parameters"].values())):
        point = [f"{k}={v}" for k, v in zip(sweep["parameters"], values)]
        cfg = compose_with_hydra(*fixed, *point)
        assert list(cfg.logger) == ["wandb"] and f"patch:{values[1]}" in cfg.logger.wandb.tags
