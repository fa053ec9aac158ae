"""The sampler speed-vs-quality study end to end, on a seconds-sized copy of experiments/samplers/study.yaml."""

import csv

import pytest
import yaml
from conftest import FAST

from ditlab.errors import DitlabError
from ditlab.nets import digits as digits_net
from ditlab.tools.sampler_study import run_study

TRAIN = [o for o in FAST if not o.startswith(("final_samples", "sampler."))] + [
    "trainer.max_steps=3",
    "sampler.steps=2",
    "final_samples.num_samples=10",
    "final_samples.batch_size=10",
]


def test_study_trains_once_samples_each_sampler_and_writes_table_and_plot(tmp_path, monkeypatch):
    # A fresh classifier cache, trained for one epoch instead of 40: the real metric code, in seconds.
    monkeypatch.setenv("DITLAB_CACHE", str(tmp_path / "cache"))
    real_train = digits_net.train_digits_classifier
    monkeypatch.setattr(digits_net, "train_digits_classifier", lambda res: real_train(res, epochs=1))
    study = {
        "objectives": ["ddpm", "flow"],
        "train_overrides": TRAIN,
        "num_samples": 20,
        "batch_size": 10,
        "seed": 0,
        "sample_overrides": [],
        "reference": "DDPM-4",
        "goal": {"max_nfe": 25, "tolerance": 0.05},
        "samplers": [
            {"label": "DDPM-4", "objective": "ddpm", "overrides": ["sampler=ddpm", "sampler.steps=4"]},
            {"label": "DPM-Solver++-3", "objective": "ddpm", "overrides": ["sampler=dpm_solver", "sampler.steps=3"]},
            {
                "label": "flow Heun-2",
                "objective": "flow",
                "reference": "flow Heun-2",
                "overrides": ["sampler=heun", "sampler.steps=2"],
            },
        ],
    }
    path = tmp_path / "study" / "study.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(study))
    rows = run_study(path, tmp_path / "runs")
    assert [r["nfe"] for r in rows] == [8, 6, 6] and rows[0]["fd_vs_reference"] == 1.0
    with open(path.parent / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["label"] for r in table] == ["DDPM-4", "DPM-Solver++-3", "flow Heun-2"]
    assert all(0 <= float(r["digits_accuracy"]) <= 1 and float(r["frechet_distance"]) > 0 for r in table)
    table_md = (path.parent / "results.md").read_text()
    assert "| DPM-Solver++-3 | ddpm | 4 | 6 (3) |" in table_md and "| 1.00 (flow Heun-2) |" in table_md
    assert (path.parent / "quality_vs_nfe.png").stat().st_size > 10_000
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert [r.rsplit("_", 1)[0] for r in runs] == [  # + the hash of the study's training overrides
        "digits_DiT-tiny-4_adaln_zero_ddpm_seed0",
        "digits_DiT-tiny-4_adaln_zero_flow_seed0",
    ]
    with pytest.raises(DitlabError, match="already holds results; pass --overwrite"):
        run_study(path, tmp_path / "runs")
