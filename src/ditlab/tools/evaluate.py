"""``ditlab-eval``: the ADM evaluator's numbers for a sample set, in PyTorch; a checkpoint's val_loss.

    ditlab-eval samples=samples.npz ref=VIRTUAL_imagenet256_labeled.npz
    ditlab-eval samples=runs/<digits run> eval.metrics=[fd_digits,digits_accuracy]   # digits reference built in
    ditlab-eval samples=runs/<run> ref=ref.npz eval.metrics=[fid,sfid] out=metrics.json write_ref=mine.npz
    torchrun --nproc-per-node 8 -m ditlab.tools.evaluate samples=samples.npz ref=ref.npz   # sharded over GPUs
    ditlab-eval ckpt=runs/<run> eval.metrics=[val_loss] out=val_loss.json   # no sampling: EMA weights' loss
    ditlab-eval ckpt=runs/<run> samples=runs/<run> eval.metrics=[val_loss,fd_digits] eval.val_loss.num_images=1024

SAMPLES is an ``.npz`` with uint8 ``arr_0`` (N, H, W, C) and optional labels ``arr_1`` (what
``ditlab-sample``, ``ditlab-train`` and guided-diffusion's samplers write) or a run directory.
``ref`` is an ADM-layout reference batch (:mod:`ditlab.metrics.reference`); the digits metrics need
none (the bundled digits are their reference, ``eval.real_count`` of them). Every other argument is
a Hydra override of ``conf/evaluate.yaml`` (``eval.*`` as in training). Each image goes through
Inception once for all metrics; under ``torchrun`` each process takes every W-th image.

``val_loss`` scores a checkpoint instead (``ckpt=`` a ``.ckpt`` or a run directory): the value its
training logs at that step, computed by the same code on the run's own EMA weights, objective,
encoder and data (:mod:`ditlab.tools.checkpoint_val_loss`); ``eval.val_loss.*`` left null takes
the run's own setting.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ditlab import progress
from ditlab.config import compose
from ditlab.devices import resolve_device
from ditlab.errors import DitlabError, one_line_errors
from ditlab.inputs import check_new_file, check_npz, check_writable, read_sample_set
from ditlab.metrics.val_loss import VAL_LOSS
from ditlab.schema import check_config
from ditlab.tools.checkpoint_val_loss import load_checkpoint_val_loss

log = logging.getLogger("ditlab")
USAGE = (
    "usage: ditlab-eval samples=SAMPLES.npz|RUN_DIR ref=REF.npz [eval.metrics=[fid,sfid,is,precision,recall]] "
    "[key=value ...] (ref= is not needed for the digits metrics), or "
    "ditlab-eval ckpt=RUN_DIR|CKPT eval.metrics=[val_loss] [eval.val_loss.KEY=VALUE ...]"
)
BUILTIN_DIGITS_REF = "builtin:digits"  # what ``ref`` says in the result when the bundled digits were the reference


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run ``ditlab-eval`` on a composed ``conf/evaluate.yaml``; returns (and prints) the values."""
    with progress.enabled_if(cfg.get("progress", True)):
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> dict[str, Any]:
    from ditlab.metrics.suite import import_eval_modules

    ec = cfg.eval
    import_eval_modules(ec)
    sampled, wants_loss = requested_metrics(cfg)
    sample_set = _read_sample_set(cfg, sampled) if sampled else None
    check_writable(cfg.out, "out", file=True)  # before any work: a read-only folder is found now, not after evaluating
    check_writable(cfg.write_ref, "write_ref", file=True)
    for option in ("out", "write_ref"):
        check_new_file(cfg.get(option), option, bool(cfg.get("overwrite", False)))
    checkpoint = None
    if wants_loss:  # read and checked before any work too: a bad checkpoint or option costs nothing
        checkpoint = load_checkpoint_val_loss(cfg.ckpt, ec.get("val_loss"), tuple(cfg.get("plugins") or ()))
    rank, world = _init_distributed()
    device = resolve_device(str(cfg.device))
    result, suite = {}, None
    if sample_set is not None:
        result, suite = _score_samples(cfg, sampled, sample_set, rank, world, device)
    if checkpoint is not None:  # every process computes the same value; rank 0 writes it
        result.update(checkpoint.compute(device))
    if rank == 0:
        _write_outputs(cfg, result, suite, sample_set.images if sample_set else None)
    return result


def requested_metrics(cfg: DictConfig) -> tuple[list[str], bool]:
    """(the sample metrics asked for, whether val_loss is): each given the argument it reads, and no
    argument given that nothing reads (one line saying which)."""
    from ditlab.metrics.suite import METRICS

    names = list(cfg.eval.metrics or [])
    unknown = [n for n in names if n != VAL_LOSS and n not in METRICS]
    if unknown or not names:
        raise DitlabError(
            f"unknown metric(s) {unknown or names} in eval.metrics; choose from {', '.join(METRICS.names())}, "
            f"{VAL_LOSS} (with ckpt=), or register your own and name its module in eval.modules"
        )
    sampled, wants_loss = [n for n in names if n != VAL_LOSS], VAL_LOSS in names
    has_samples, has_ckpt = not OmegaConf.is_missing(cfg, "samples"), bool(cfg.get("ckpt"))
    if sampled and not has_samples:
        if has_ckpt:
            raise DitlabError(
                f"{sampled[0]} scores a sample set but no samples= was given: pass samples=SAMPLES.npz|RUN_DIR, "
                f"or ask only eval.metrics=[{VAL_LOSS}] (ckpt= is read by {VAL_LOSS} alone)"
            )
        raise DitlabError(f"no samples given; {USAGE}")
    if wants_loss and not has_ckpt:
        raise DitlabError(
            f"{VAL_LOSS} needs ckpt=runs/<run>|path.ckpt (the weights it scores; samples= serves the sample metrics)"
        )
    if has_ckpt and not wants_loss:
        raise DitlabError(f"ckpt= is read by {VAL_LOSS} alone: add {VAL_LOSS} to eval.metrics or drop ckpt=")
    if has_samples and not sampled:
        raise DitlabError(
            f"samples= is read by the sample metrics alone and eval.metrics=[{VAL_LOSS}] has none: drop samples= "
            "or add a sample metric, e.g. eval.metrics=[val_loss,fd_digits]"
        )
    if cfg.write_ref and not sampled:
        raise DitlabError("write_ref= writes a sample set's statistics: it needs samples= and a sample metric")
    return sampled, wants_loss


def _read_sample_set(cfg: DictConfig, names: list[str]) -> SimpleNamespace:
    """The sample set (images, labels) and whether the bundled digits are the reference, checked."""
    from ditlab.metrics.suite import METRICS
    from ditlab.nets.digits import NUM_CLASSES  # loaded with METRICS (its digits extractor) already

    builtin_ref = OmegaConf.is_missing(cfg, "ref") and all(METRICS.get(m).extractor == "digits" for m in names)
    if OmegaConf.is_missing(cfg, "ref") and not builtin_ref:
        raise DitlabError(f"no ref given (only the digits metrics have a built-in reference); {USAGE}")
    accuracy = [m for m in names if METRICS.get(m).kind == "accuracy"]  # these compare the samples' labels
    # classes of the accuracy metrics' classifier, by extractor (None: a plugin's, unchecked)
    classes = {"digits": NUM_CLASSES}.get(METRICS.get(accuracy[0]).extractor) if accuracy else 0
    images, labels = load_samples(cfg.samples, classes)
    if not builtin_ref:
        check_npz(cfg.ref, "ref")
    return SimpleNamespace(images=images, labels=labels, builtin_ref=builtin_ref)


def _score_samples(
    cfg: DictConfig, names: list[str], sample_set: SimpleNamespace, rank: int, world: int, device: torch.device
) -> tuple[dict[str, Any], Any]:
    """The sample metrics' values (collective under torchrun) and the suite that computed them."""
    from ditlab.metrics.extractors import build_extractor
    from ditlab.metrics.reference import read_reference
    from ditlab.metrics.suite import METRICS, MetricSuite, suite_options

    ec, images, labels = cfg.eval, sample_set.images, sample_set.labels
    n, side, _, channels = images.shape
    # What the extractor builders read of a dataset; 1-channel samples are taken for digits.
    data = SimpleNamespace(name="digits" if channels == 1 else "samples", channels=channels, resolution=side)
    extractors = {
        e: build_extractor(e, data=data, eval_cfg=ec, cache_dir=cfg.paths.cache_dir)
        for e in sorted({METRICS.get(m).extractor for m in names})
    }
    suite = MetricSuite(names, extractors, suite_options(ec)).to(device)
    t0 = time.time()
    if sample_set.builtin_ref:
        suite.load_real(digits_reference(suite, extractors, side, ec, cfg.paths.cache_dir, device))
    else:
        suite.load_real(
            read_reference(cfg.ref, suite, device=device, batch_size=int(ec.batch_size), rank=rank, world_size=world)
        )
    mine = np.arange(rank, n, world)
    batch = int(ec.batch_size)
    with progress.bar(total=n, desc="samples", unit="img") as bar:
        for i in range(0, len(mine), batch):
            idx = mine[i : i + batch]
            suite.update(images[idx], labels[idx], index=idx)
            bar.update(len(idx) * world)
    values = suite.compute()  # collective under torchrun
    result = {
        "samples": str(cfg.samples),
        "ref": BUILTIN_DIGITS_REF if sample_set.builtin_ref else str(cfg.ref),
        "num_samples": int(n),
        **values,
        "extractors": {e: x.identity for e, x in extractors.items()},
        "options": suite_options(ec),
        "seconds": round(time.time() - t0, 2),
        "processes": world,
    }
    return result, suite


def _write_outputs(cfg: DictConfig, result: dict[str, Any], suite: Any, images: Any) -> None:
    """The result on stdout and in ``out=``; with ``write_ref=``, the samples' statistics as a reference."""
    from ditlab.metrics.reference import write_reference  # lazy, as in _evaluate: --help and bad input stay fast

    text = json.dumps(result, indent=2)
    print(text)
    if cfg.out:
        Path(cfg.out).write_text(text + "\n")
    if cfg.write_ref:
        write_reference(
            cfg.write_ref,
            suite.fake_sides(),
            images=images,
            info={"source": str(cfg.samples), "extractors": result["extractors"]},
        )


def digits_reference(suite: Any, extractors: dict[str, Any], side: int, ec: Any, cache_dir: str, device: Any):
    """The digits metrics' real side: the bundled digits at the samples' resolution (the first
    ``eval.real_count``), through the real-statistics cache training uses."""
    # lazy, as in _evaluate: --help and bad-input errors never load Lightning (the data module's base)
    from ditlab.data.digits import DigitsDataModule
    from ditlab.metrics.real_stats import (
        compute_real_stats,
        load_real_stats,
        real_image_batches,
        save_real_stats,
        stats_key,
    )

    data = DigitsDataModule(resolution=side)
    real = {}
    for name, needs in suite.needs_real().items():
        count, batches = real_image_batches(data, ec.get("real_count"), int(ec.batch_size))
        key = stats_key(data.describe(), side, count, extractors[name])
        stats = load_real_stats(cache_dir, key, needs)
        if stats is None:
            stats = compute_real_stats(batches, extractors[name], device, needs, num_images=count)
            save_real_stats(cache_dir, key, stats)
        real[name] = {output: s.side() for output, s in stats.items()}
    log.info("reference: %s (%d images at %dx%d)", BUILTIN_DIGITS_REF, count, side, side)
    return real


def load_samples(path: str | Path, classes: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of a sample set; ``classes``: labels are required and must lie in ``[0, classes)``
    (0: not required, and 0 for every image when absent)."""
    images, labels, _ = read_sample_set(path, labels_required=classes != 0, num_classes=classes or None)
    return images, labels if labels is not None else np.zeros(len(images), dtype=np.int64)


def _init_distributed() -> tuple[int, int]:
    """Under torchrun: join the process group (NCCL on GPUs, gloo otherwise) -> (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE + "\n\n" + (__doc__ or ""))
        return
    logging.getLogger("ditlab").setLevel(logging.INFO)
    with one_line_errors():
        positional = [a for a in argv if "=" not in a]
        if len(positional) > 1:
            raise DitlabError(f"one sample set at a time, got {positional}; {USAGE}")
        overrides = [a for a in argv if "=" in a] + [f"samples={p}" for p in positional]
        if positional:  # the one non-key=value argument of ditlab's commands: still read for one release
            print(
                f"ditlab-eval: note: a positional SAMPLES is the old spelling, still read until the next release; "
                f"write samples={positional[0]}",
                file=sys.stderr,
            )
        try:
            cfg = compose("evaluate", overrides)
        except Exception as e:  # a bad override: Hydra's message, on one line
            raise DitlabError(f"{str(e).splitlines()[0]}; {USAGE}") from None
        check_config("evaluate", cfg)
        evaluate(cfg)


if __name__ == "__main__":
    main()
