"""``ditlab-flops``: parameters and forward Gflops per image for any model/block composition.

With no model chosen it counts the paper's 12 configs (S/B/L/XL x patch 8/4/2, Table 4); with
``model=XL model.patch_size=2 block=cross_attn input_size=64`` it counts that one composition.
Every model is composed from the real ``model`` and ``block`` config groups and built with
:func:`ditlab.build.build_model`, the constructor training uses, on the **meta** device: shapes
without storage, so DiT-XL costs no memory and a count takes about a second.

The convention (paper Table 4) is documented in :mod:`ditlab.models.accounting`.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ditlab.build import build_model
from ditlab.cli import _hydra_entry
from ditlab.errors import DitlabError
from ditlab.models.accounting import block_label, describe_model, paper_gflops

RECORD_KEYS = ("name", "patch_size", "block", "tokens", "params", "gflops", "paper_gflops")


def count_composition(
    model_cfg: Any, block_cfg: Any, input_size: int, in_channels: int, num_classes: int, learn_sigma: bool
) -> dict[str, Any]:
    """One table record for a ``model`` + ``block`` group pair at the given latent shape: ``block`` names the
    block with its non-paper options, ``paper_gflops`` is the paper's count (``None`` where it has none)."""
    with torch.device("meta"):  # parameters without storage: counting needs shapes only
        model = build_model(
            model_cfg,
            block_cfg,
            in_channels=in_channels,
            input_size=input_size,
            out_channels=2 * in_channels if learn_sigma else in_channels,
            num_classes=num_classes,
        )
    described = describe_model(model_cfg, block_cfg, model, measure=False)  # closed form where the block has one
    label = block_label(block_cfg)
    paper = paper_gflops(described["model"], label, input_size, in_channels, learn_sigma)
    return {
        "name": described["model"],
        "patch_size": described["patch_size"],
        "block": label,
        **{key: described[key] for key in ("tokens", "params", "gflops")},
        "paper_gflops": paper,
    }


def compositions(cfg: DictConfig) -> list[DictConfig]:
    """The chosen composition, or (no model chosen) the paper grid composed with the user's overrides."""
    if cfg.get("model") is not None:
        return [cfg]
    hc = HydraConfig.get()
    # The user's overrides, and their config folders (hydra.searchpath) so their own blocks resolve too.
    task = [o for o in hc.overrides.hydra if o.startswith("hydra.searchpath=")] + list(hc.overrides.task)
    return [
        compose(hc.job.config_name, overrides=[*task, f"model={size}", f"model.patch_size={patch}"])
        for size in cfg.paper_grid.sizes
        for patch in cfg.paper_grid.patch_sizes
    ]


def paper_cells(record: dict[str, Any]) -> tuple[str, str]:
    """The ``paper`` and ``diff`` cells: the paper's printed count and ours relative to it ("-" for none)."""
    paper = record.get("paper_gflops")
    if paper is None:
        return "-", "-"
    return f"{paper:.2f}", f"{(record['gflops'] - paper) / paper:+.2%}"


def format_table(records: list[dict[str, Any]]) -> str:
    header = ("name", "patch", "block", "tokens", "params", "gflops", "paper", "diff")
    rows = [
        (
            r["name"],
            str(r["patch_size"]),
            r["block"],
            str(r["tokens"]),
            f"{r['params']:,}",
            f"{r['gflops']:.6g}",
            *paper_cells(r),
        )
        for r in records
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    left = {0, 2}  # text columns left-aligned, numbers right-aligned

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def run(cfg: DictConfig) -> list[dict[str, Any]]:
    if cfg.output not in ("table", "json"):
        raise DitlabError(f"output must be 'table' or 'json', got '{cfg.output}'")
    records = [
        count_composition(c.model, c.block, c.input_size, c.in_channels, c.num_classes, c.learn_sigma)
        for c in compositions(cfg)
    ]
    print(json.dumps(records, indent=2) if cfg.output == "json" else format_table(records))
    return records


def main() -> None:
    _hydra_entry("flops", run)()
