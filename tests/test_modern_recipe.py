"""The modern_recipe ablation: its 16 configs compose as documented, and the speed-up report's arithmetic."""

import json
from pathlib import Path

from conftest import compose_train
from omegaconf import OmegaConf

from ditlab.build import build_model
from ditlab.cli import compose
from ditlab.config import CONFIG_DIR
from ditlab.report.convergence import build, recipe_options, steps_to_reach

VARIANT_KEY = "+experiment/modern_recipe@_global_"


def variant_cfg(variant: str, block: str):
    return compose(
        "train", ["experiment=modern_recipe", f"{VARIANT_KEY}={variant}", f"block={block}", "paths.output_dir=unused"]
    )


def test_each_variant_changes_exactly_its_own_option_from_the_papers_dit():
    text = (Path(CONFIG_DIR) / "experiment" / "modern_recipe.yaml").read_text()
    params = OmegaConf.create(text)["hydra"]["sweeper"]["params"]
    variants, blocks = params[VARIANT_KEY].split(","), params["block"].split(",")
    assert len(variants) * len(blocks) == 16 and "adaln_zero" in blocks and len(blocks) >= 2
    seen = {}
    for variant in variants:
        cfg = variant_cfg(variant, "in_context")
        seen[variant] = recipe_options(cfg)
        assert cfg.trainer.max_steps == 1000 and cfg.eval.every_n_steps == 100  # one budget for all
    assert seen["dit"] == []
    for single in ("rmsnorm", "swiglu", "qk_norm", "rope2d", "logit_normal", "repa"):
        assert seen[single] == [single]
    assert seen["all"] == ["rmsnorm", "swiglu", "qk_norm", "rope2d", "logit_normal", "repa"]


def test_the_all_variant_builds_for_both_designs():
    for block in ("adaln_zero", "in_context"):
        cfg = variant_cfg("all", block)
        model = build_model(cfg.model, cfg.block, in_channels=1, input_size=8, out_channels=2, num_classes=10)
        assert model.pos_embed is None and model.blocks[0].mlp.w12.out_features == 2 * 341


def test_steps_to_reach_interpolates_the_crossing():
    curve = [(50, 400.0), (100, 200.0), (150, 100.0), (200, 120.0)]
    assert steps_to_reach(curve, 100.0) == 150
    assert steps_to_reach(curve, 300.0) == 75  # halfway between 400 @ 50 and 200 @ 100
    assert steps_to_reach(curve, 400.0) == 50
    assert steps_to_reach(curve, 99.0) is None


def test_speedup_table_from_run_folders(tmp_path):
    def fake_run(name, block, overrides, curve):
        run = tmp_path / name
        (run / "eval").mkdir(parents=True)
        cfg = compose_train(f"block={block}", *overrides, output_dir=run)
        (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        (run / "summary.json").write_text(
            json.dumps(
                {"status": "finished", "block": block, "params": 10, "gflops": 0.5, "metrics": {"digits_accuracy": 0.9}}
            )
        )
        (run / "eval" / "metrics.jsonl").write_text(
            "".join(json.dumps({"step": s, "fd_digits": v}) + "\n" for s, v in curve)
        )

    fake_run("0", "adaln_zero", [], [(100, 300.0), (200, 150.0), (300, 100.0), (400, 80.0)])
    fake_run("1", "adaln_zero", ["block.norm=rmsnorm"], [(100, 150.0), (200, 80.0), (300, 60.0), (400, 50.0)])
    fake_run("2", "adaln_zero", ["block.mlp=swiglu"], [(100, 400.0), (200, 300.0), (300, 200.0), (400, 90.0)])
    rows = build(tmp_path, tmp_path / "report")
    by_variant = {r["variant"]: r for r in rows}
    assert by_variant["DiT (baseline)"]["speedup"] == 1.0 and by_variant["DiT (baseline)"]["steps_to_target"] == 400
    assert by_variant["rmsnorm"]["steps_to_target"] == 200 and by_variant["rmsnorm"]["speedup"] == 2.0
    assert by_variant["swiglu"]["steps_to_target"] is None and by_variant["swiglu"]["speedup"] is None
    assert by_variant["rmsnorm"]["speedup_best"] == 2.0  # the baseline's best is its final here
    text = (tmp_path / "report" / "convergence.md").read_text()
    assert "| adaln_zero | rmsnorm |" in text and "2.00×" in text and "not reached" in text
    assert (tmp_path / "report" / "convergence.png").stat().st_size > 1000
