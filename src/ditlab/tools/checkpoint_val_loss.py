"""``ditlab-eval ckpt=...``: a checkpoint's ``val_loss``, the value its training run logs at that step.

    ditlab-eval ckpt=runs/<run> eval.metrics=[val_loss]
    ditlab-eval ckpt=runs/<run>/checkpoints/<step>.ckpt eval.metrics=[val_loss] eval.val_loss.num_images=1024

The checkpoint is read as data (``weights_only``; its stored config may name only the modules in
``plugins=[...]``). Its parts are put together as ``ditlab-train`` puts them together: the data
module from the stored ``data`` config, the encoder from its recorded (resolved) description,
adapted to the data (a latent cache reads its posteriors), the objective from the stored config,
and the **EMA** weights. The value is computed by :class:`ditlab.metrics.val_loss.ValidationLoss`,
the code the training eval callback runs, so nothing here can drift from it.

``eval.val_loss.*`` left null (``conf/evaluate.yaml``) takes the run's own setting (its stored
``eval.val_loss``), and where the run has none (trained before val_loss existed) training's default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ditlab.errors import DitlabError

VALUE_KEYS = ("num_images", "num_times", "seed", "batch_size")  # what the value depends on
UNUSED_HERE = ("every_n_steps",)  # training's schedule: read by nobody here


@dataclass
class CheckpointValLoss:
    """A checkpoint's parts and the val_loss options, checked: :meth:`compute` does the work."""

    model: torch.nn.Module
    encoder: Any
    objective: Any
    data: Any
    options: dict[str, Any]
    options_from: dict[str, str]  # option -> "command line" | "checkpoint" | "default"
    info: dict[str, Any]

    def compute(self, device: torch.device) -> dict[str, Any]:
        """The fields of a training ``eval/metrics.jsonl`` row (val_loss, per-stratum values, recipe)
        plus where they come from (checkpoint, step, weights, options)."""
        from ditlab.metrics.val_loss import VAL_LOSS, ValidationLoss

        val = ValidationLoss(self.options, self.data, self.objective)
        self.encoder.to(device)
        loss = val.compute(self.model.to(device), self.encoder, device)
        return {
            **self.info,
            "weights": "ema",
            VAL_LOSS: loss[VAL_LOSS],
            "val_loss_strata": loss["val_loss_strata"],
            "val_loss_recipe": {**val.describe(), "seconds": loss["seconds"]},
            "val_loss_options": {
                **{k: self.options[k] for k in VALUE_KEYS},
                "from": {k: self.options_from[k] for k in VALUE_KEYS},
            },
            "device": str(device),
        }


def load_checkpoint_val_loss(path: str | Path, given: Any, plugins: tuple[str, ...] = ()) -> CheckpointValLoss:
    """Read the checkpoint at ``path`` (a ``.ckpt`` or a run directory) and build what its val_loss needs;
    ``given``: the command line's ``eval.val_loss`` (null: the checkpoint's own, else the default)."""
    from ditlab.build import build_data, build_encoder, build_objective
    from ditlab.models.official import model_from_ditlab_checkpoint
    from ditlab.tools.sample_source import read_run_checkpoint

    ckpt_path, ckpt, cfg = read_run_checkpoint(
        path, plugins, ": val_loss needs the run's objective and data, which only a ditlab training checkpoint records"
    )
    options, options_from = val_loss_settings(given, cfg)
    data = build_data(cfg.data)
    # As ditlab-train: the encoder (its resolved description: the scaling factor it trained with), adapted
    # to the data (a latent cache checks it against its manifest and reads the cached posteriors).
    encoder = data.adapt_encoder(build_encoder(ckpt["ditlab"].get("encoder", cfg.encoder)))
    objective = build_objective(cfg.objective)
    model = model_from_ditlab_checkpoint(ckpt, use_ema=True, source=str(ckpt_path), cfg=cfg)  # cfg: checked above
    info = {
        "ckpt": str(ckpt_path.resolve()),
        "run": cfg.get("run_name"),
        "step": ckpt.get("global_step"),
        "objective": objective.describe(),
    }
    return CheckpointValLoss(model, encoder, objective, data, options, options_from, info)


def val_loss_settings(given: Any, stored: DictConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """The val_loss options: the command line's non-null ``eval.val_loss.*``, else the run's stored
    ``eval.val_loss``, else the defaults; checked as training checks them. Returns (options, where from)."""
    from ditlab.metrics.val_loss import DEFAULTS, val_loss_options

    given = _plain(given)
    run = _plain(OmegaConf.select(stored, "eval.val_loss", default=None))
    unknown = sorted(set(run) - set(DEFAULTS))
    if unknown:  # an edited or foreign config: training would refuse it too
        raise DitlabError(
            f"the checkpoint's stored config has eval.val_loss.{unknown[0]}, which this ditlab's val_loss does not "
            "know: the run was made by another ditlab version or the file was edited; use a checkpoint of this version"
        )
    for key in UNUSED_HERE:
        if given.get(key) is not None:
            raise DitlabError(
                f"eval.val_loss.{key} sets how often training computes val_loss; ditlab-eval computes it once: drop it"
            )
        run.pop(key, None)
    chosen = {**run, **{k: v for k, v in given.items() if v is not None}}
    options = val_loss_options({"val_loss": chosen})  # unknown command-line keys and bad values: one line
    origin = {
        k: "command line" if given.get(k) is not None else "checkpoint" if run.get(k) is not None else "default"
        for k in options
    }
    return options, origin


def _plain(node: Any) -> dict[str, Any]:
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return dict(OmegaConf.to_container(node, resolve=True))
    return dict(node)
