"""``Run``: every part of one run, built from its config groups before anything is written
(:func:`ditlab.training.train.build_run`), and what the steps of ``train()`` and ``summary.json`` read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from omegaconf import DictConfig

if TYPE_CHECKING:  # types of the fields only
    from ditlab.auxloss.base import AuxLoss
    from ditlab.checkpoints.resume import ResumePlan
    from ditlab.data.base import ImageDataModule
    from ditlab.encoders.base import LatentEncoder
    from ditlab.objectives.base import Objective
    from ditlab.samplers.base import Sampler
    from ditlab.training.compute import ComputePlan
    from ditlab.training.eval_callback import EvalCallback
    from ditlab.training.module import DiffusionModule


@dataclass
class Run:
    """Every part of one run, built from its config groups before anything is written."""

    cfg: DictConfig
    run_dir: Path
    resume: ResumePlan | None
    data: ImageDataModule
    encoder: LatentEncoder
    objective: Objective
    sampler: Sampler
    evaluator: EvalCallback | None
    best: L.Callback | None  # checkpoint of the best evaluation (checkpoint.monitor)
    aux: AuxLoss
    module: DiffusionModule
    stats: dict[str, Any]
    plan: ComputePlan | None  # compute.* plan (compute-matched sweeps)
    callbacks: list[L.Callback]  # extra callbacks from the caller (benchmarks time steps with one)
