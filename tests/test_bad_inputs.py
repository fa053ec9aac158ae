"""Every bad input to the eight console scripts: exit status 2, one line naming the option or file,
no traceback, nothing written (issue 20 §1). One table, each case run in-process through the
script's entry point (sys.argv patched, SystemExit caught) in a folder whose every file is compared
before and after.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, compose_train

from ditlab.cli import extract_main, train_main
from ditlab.config import CONFIG_DIR, compose
from ditlab.metrics import digits_classifier
from ditlab.report import cli as report_cli
from ditlab.schema import check_config
from ditlab.tools import evaluate, export, flops_cli, sample

ENTRY = {
    "ditlab-train": train_main,
    "ditlab-sample": sample.main,
    "ditlab-eval": evaluate.main,
    "ditlab-report": report_cli.main,
    "ditlab-flops": flops_cli.main,
    "ditlab-extract": extract_main,
    "ditlab-export": export.main,
    "ditlab-classify": digits_classifier.main,
}


class Payload:
    """Pickles to a call that creates PWNED in the working folder: the tree check sees it if it ever runs."""

    def __reduce__(self):
        return (os.mkdir, ("PWNED",))


def _digits(n: int, labels=None, channels: int = 1, dtype=np.uint8) -> dict[str, np.ndarray]:
    images = np.random.default_rng(0).integers(0, 256, (n, 8, 8, channels)).astype(dtype)
    arrays = {"arr_0": images}
    if labels is not None:
        arrays["arr_1"] = np.asarray(labels, dtype=np.int64)
    return arrays


def _make_files(root: Path) -> None:
    """The bad files the table refers to as {files}/<name>."""
    files = root / "files"
    files.mkdir()
    np.savez(files / "objects.npz", arr_0=np.array([{"a": 1}, None], dtype=object), arr_1=np.zeros(2, np.int64))
    np.savez(files / "empty.npz", **_digits(0, labels=[]))
    np.savez(files / "labels_out.npz", **_digits(4, labels=[0, 1, 2, 12]))
    np.savez(files / "labels_negative.npz", **_digits(4, labels=[0, -1, 2, 3]))
    np.savez(files / "labels_float.npz", arr_0=_digits(2)["arr_0"], arr_1=np.array([0.5, 1.0]))
    np.savez(files / "no_labels.npz", **_digits(4))
    np.savez(files / "floats.npz", **_digits(4, labels=[0, 1, 2, 3], dtype=np.float32))
    np.savez(files / "rgb.npz", **_digits(4, labels=[0, 1, 2, 3], channels=3))
    np.savez(files / "good.npz", **_digits(4, labels=[0, 1, 2, 3]))
    np.save(files / "single.npy", np.zeros(3))
    (files / "text.npz").write_text("not a zip\n")
    (files / "payload.pkl").write_bytes(pickle.dumps(Payload()))
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload()}, files / "payload.ckpt")
    (files / "plain.txt").write_text("a file, not a folder\n")
    last = root / "run" / "checkpoints" / "last.ckpt"
    (files / "truncated.ckpt").write_bytes(last.read_bytes()[:2000])
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    ckpt["ditlab"]["config"]["model"]["bogus_option"] = 3
    torch.save(ckpt, files / "unknown_key.ckpt")
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    ckpt["ditlab"]["config"]["eval"]["val_loss"]["bogus_option"] = 3
    torch.save(ckpt, files / "unknown_val_loss_key.ckpt")
    for name, text in (("damaged", '{"status": "finished", "steps": 4'), ("listed", "[1, 2]")):
        (root / "reports" / name / "r1").mkdir(parents=True)
        (root / "reports" / name / "r1" / "summary.json").write_text(text)
    latents = root / "latents"  # a finished latent cache whose one shard was replaced by a pickle payload
    (latents / "shards").mkdir(parents=True)
    (latents / "shards" / "shard-00000.safetensors").write_bytes(pickle.dumps(Payload()))
    manifest = {"format": "ditlab-latents/1", "complete": True, "resolution": 8, "channels": 1}
    manifest["shards"] = [{"file": "shards/shard-00000.safetensors", "count": 1}]
    (latents / "manifest.json").write_text(json.dumps(manifest))
    (root / "cache").mkdir()
    (root / "runs").mkdir()  # a project's runs folder exists; what a refused run leaves inside it is the test
    (root / "payload_cache").mkdir()
    (root / "payload_cache" / f"digits_classifier_r8_v{digits_classifier.CACHE_VERSION}.pt").write_bytes(
        pickle.dumps(Payload())
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A working folder with a 2-step run (its checkpoints) and the bad files."""
    root = tmp_path_factory.mktemp("bad_inputs")
    train(
        compose_train(
            "trainer.max_steps=2", "final_samples.num_samples=4", "final_samples.batch_size=4", output_dir=root / "run"
        )
    )
    _make_files(root)
    return root


def train(cfg):
    from ditlab.training.train import train as train_run

    return train_run(cfg)


T, S, E, R, F, X, P, C = (
    "ditlab-train",
    "ditlab-sample",
    "ditlab-eval",
    "ditlab-report",
    "ditlab-flops",
    "ditlab-extract",
    "ditlab-export",
    "ditlab-classify",
)
SAMPLE = ["ckpt={root}/run", "out={root}/out", "num_samples=4", "batch_size=4"]
EVAL = ["ref={files}/good.npz", "eval.metrics=[digits_accuracy]"]
VAL_LOSS = ["ckpt={root}/run", "eval.metrics=[val_loss]"]
EXTRACT = ["data.root={root}/run", "cache_dir={root}/cache_out"]
EXPORT = ["ckpt={root}/run", "out={root}/export"]

# (tool, arguments, what the last line must name)
CASES = [
    # ditlab-train: wrong types
    (T, ["trainer.max_steps=abc"], "trainer.max_steps"),
    (T, ["ema.decay=abc"], "ema.decay"),
    (T, ["data.num_workers=abc"], "data.num_workers"),
    (T, ["data.resolution=abc"], "data.resolution"),
    (T, ["data.batch_size=1.5"], "data.batch_size"),
    (T, ["trainer.gradient_clip_val=abc"], "trainer.gradient_clip_val"),
    (T, ["guidance.scale=abc"], "guidance.scale"),
    (T, ["optim.lr=abc"], "optim.lr"),
    (T, ["seed=abc"], "seed"),
    (T, ["eval.batch_size=abc"], "eval.batch_size"),
    (T, ["model.hidden_size=abc"], "model.hidden_size"),
    (T, ["sampler.steps=abc"], "sampler.steps"),
    (T, ["divergence.max_loss=abc"], "divergence.max_loss"),
    (T, ["trainer.enable_progress_bar=maybe"], "trainer.enable_progress_bar"),
    (T, ["overwrite=maybe"], "overwrite"),
    (T, ["-m", "seed=1,2", "--cfg", "job"], "--cfg and --multirun"),  # Hydra: one mode per command
    # ditlab-train -m: every swept value composed and checked before Hydra creates the multirun folder
    (T, ["-m", "trainer.max_steps=abc"], "trainer.max_steps=abc"),
    (T, ["-m", "seed=1,2", "trainer.max_step=5"], "trainer.max_step"),
    (T, ["-m", "model=nope"], "model/nope"),
    (T, ["-m", "model=S,nope"], "model/nope"),
    (T, ["-m", "seed=1,2", "trainer.max_steps=1,0"], "trainer.max_steps=0"),
    (T, ["--multirun", "seed=range(0,3)", "data.batch_size=abc"], "data.batch_size=abc"),
    (T, ["-m", "seed=[1,2"], "seed=[1,2"),
    (T, ["trainer.accumulate_grad_batches=abc"], "trainer.accumulate_grad_batches"),
    # ditlab-train: values Lightning, torch or the data pipeline reject late
    (T, ["trainer.precision=bogus"], "trainer.precision"),
    (T, ["trainer.devices=0"], "trainer.devices"),
    (T, ["trainer.devices=abc"], "trainer.devices"),
    (T, ["trainer.num_nodes=0"], "trainer.num_nodes"),
    (T, ["data.num_workers=-1"], "data.num_workers"),
    (T, ["data.resolution=0"], "data.resolution"),
    (T, ["data.resolution=-8"], "data.resolution"),
    (T, ["data.batch_size=0"], "data.batch_size"),
    (T, ["trainer.max_steps=0"], "trainer.max_steps"),
    (T, ["trainer.max_steps=-5"], "trainer.max_steps"),
    (T, ["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps"),
    (T, ["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches"),
    (T, ["model.patch_size=0"], "model.patch_size"),
    (T, ["model.depth=0"], "model.depth"),
    (T, ["model.num_heads=0"], "model.num_heads"),
    (T, ["model.mlp_ratio=0"], "model.mlp_ratio"),
    (T, ["sampler.steps=0"], "sampler.steps"),
    (T, ["objective.num_timesteps=0"], "objective.num_timesteps"),
    (T, ["eval.num_samples=0"], "eval.num_samples"),
    (T, ["eval.every_n_steps=-1"], "eval.every_n_steps"),
    (T, ["final_samples.num_samples=0"], "final_samples.num_samples"),
    (T, ["final_samples.grid_columns=0"], "final_samples.grid_columns"),
    (T, ["checkpoint.every_n_steps=0"], "checkpoint.every_n_steps"),
    (T, ["checkpoint.keep=-2"], "checkpoint.keep"),
    (T, ["checkpoint.monitor_mode=median"], "checkpoint.monitor_mode"),
    (T, ["optim.lr=-1"], "optim.lr"),
    (T, ["optim.weight_decay=-1"], "optim.weight_decay"),
    (T, ["optim.betas=[0.9]"], "optim.betas"),
    (T, ["ema.decay=1.5"], "ema.decay"),
    (T, ["divergence.max_loss=0"], "divergence.max_loss"),
    (T, ["seed=-1"], "seed"),
    # ditlab-train: values accepted before that make no sense
    (T, ["model.class_dropout_prob=2"], "model.class_dropout_prob"),
    (T, ["model.class_dropout_prob=-0.1"], "model.class_dropout_prob"),
    (T, ["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val"),
    (T, ["guidance.scale=-1"], "guidance.scale"),
    (T, ["guidance.channels=some"], "guidance.channels"),
    (T, ["guidance.interval=[0.8,0.2]"], "guidance.interval"),
    (T, ["guidance.interval=[0,2]"], "guidance.interval"),
    (T, ["final_samples.grid_upscale=0"], "final_samples.grid_upscale"),
    (T, ["eval.grid_upscale=0"], "eval.grid_upscale"),
    (T, ["eval.guidance_scale=-1"], "eval.guidance_scale"),
    # ditlab-train: typos and files
    (T, ["trainer.bogus=1"], "trainer.bogus"),
    (T, ["model=nope"], "model/nope"),
    (T, ["model=S,B"], "model"),
    (T, ["ckpt_path={files}/payload.pkl"], "Python objects"),
    (T, ["ckpt_path={files}/payload.ckpt"], "Python objects"),
    (T, ["init_from={files}/payload.pkl"], "Python objects"),
    (T, ["init_from={files}/payload.ckpt"], "Python objects"),
    (T, ["ckpt_path={files}/truncated.ckpt"], "truncated.ckpt"),
    (T, ["ckpt_path={files}/missing.ckpt"], "missing.ckpt"),
    (T, [*FAST, "ckpt_path={files}/unknown_key.ckpt"], "bogus_option"),  # the fixture run's own settings
    (T, ["data=imagefolder"], "data.root"),
    (T, ["eval.reference={files}/objects.npz"], "objects.npz holds Python objects"),
    (T, ["eval.reference={files}/empty.npz"], "empty.npz"),
    (T, ["eval.reference={files}/text.npz"], "text.npz"),
    (T, ["data=latents", "data.cache_dir={root}/latents"], "Python objects"),
    (T, ["data=latents"], "data.cache_dir"),
    # ditlab-sample
    (S, [*SAMPLE, "num_samples=abc"], "num_samples"),
    (S, [*SAMPLE, "num_samples=0"], "num_samples"),
    (S, [*SAMPLE, "batch_size=0"], "batch_size"),
    (S, [*SAMPLE, "batch_size=abc"], "batch_size"),
    (S, [*SAMPLE, "seed=abc"], "seed"),
    (S, [*SAMPLE, "grid.upscale=0"], "grid.upscale"),
    (S, [*SAMPLE, "grid.rows=0"], "grid.rows"),
    (S, [*SAMPLE, "grid.columns=abc"], "grid.columns"),
    (S, [*SAMPLE, "guidance.scale=-2"], "guidance.scale"),
    (S, [*SAMPLE, "guidance.scale=abc"], "guidance.scale"),
    (S, [*SAMPLE, "guidance.channels=bogus"], "guidance.channels"),
    (S, [*SAMPLE, "guidance.interval=[0.5]"], "guidance.interval"),
    (S, [*SAMPLE, "precision=fp8"], "precision"),
    (S, [*SAMPLE, "weights=best"], "weights"),
    (S, [*SAMPLE, "labels=[11]"], "labels"),
    (S, [*SAMPLE, "labels=[a]"], "labels"),
    (S, [*SAMPLE, "labels=[-1]"], "labels"),
    (S, [*SAMPLE, "sampler=ddpm", "sampler.steps=0"], "sampler.steps"),
    (S, [*SAMPLE, "progress=maybe"], "progress"),
    (S, [*SAMPLE, "bogus=1"], "bogus"),
    (S, ["out={root}/out", "num_samples=4"], "ckpt="),
    (S, [*SAMPLE[1:], "ckpt={files}/missing.ckpt"], "missing.ckpt"),
    (S, [*SAMPLE[1:], "ckpt={files}/payload.pkl"], "Python objects"),
    (S, [*SAMPLE[1:], "ckpt={files}/payload.ckpt"], "Python objects"),
    (S, [*SAMPLE[1:], "ckpt={files}/truncated.ckpt"], "truncated.ckpt"),
    (S, [*SAMPLE[1:], "ckpt={files}/good.npz"], "good.npz"),
    (S, [*SAMPLE[1:], "ckpt={files}/unknown_key.ckpt"], "bogus_option"),
    (S, ["official={files}/payload.pkl", "encoder=identity", "out={root}/out"], "Python objects"),
    (S, ["official={files}/good.npz", "encoder=identity", "image_size=abc"], "image_size"),
    (S, [*SAMPLE[:1], "out={files}/plain.txt/sub", *SAMPLE[2:]], "plain.txt"),
    # ditlab-eval
    (E, ["{files}/objects.npz", *EVAL], "objects.npz holds Python objects"),
    (E, ["{files}/empty.npz", *EVAL], "empty.npz"),
    (E, ["{files}/text.npz", *EVAL], "text.npz is not a readable .npz"),
    (E, ["{files}/payload.pkl", *EVAL], "payload.pkl holds Python objects"),
    (E, ["{files}/single.npy", *EVAL], "single.npy"),
    (E, ["{files}/floats.npz", *EVAL], "floats.npz"),
    (E, ["{files}/missing.npz", *EVAL], "missing.npz"),
    (E, ["{files}/labels_out.npz", *EVAL], "labels_out.npz"),
    (E, ["{files}/labels_negative.npz", *EVAL], "labels_negative.npz"),
    (E, ["{files}/labels_float.npz", *EVAL], "labels_float.npz"),
    (E, ["{files}/no_labels.npz", *EVAL], "no_labels.npz"),
    (
        E,
        ["{files}/good.npz", "ref={files}/objects.npz", "eval.metrics=[fd_digits]"],
        "objects.npz holds Python objects",
    ),
    (E, ["{files}/good.npz", "ref={files}/empty.npz", "eval.metrics=[fd_digits]"], "empty.npz"),
    (E, ["{files}/good.npz", "ref={files}/text.npz", "eval.metrics=[fd_digits]"], "text.npz is not a readable .npz"),
    (E, ["{files}/good.npz", "ref={files}/missing.npz", "eval.metrics=[fd_digits]"], "missing.npz"),
    (E, ["{files}/good.npz", *EVAL, "eval.batch_size=0"], "eval.batch_size"),
    (E, ["{files}/good.npz", *EVAL, "eval.batch_size=abc"], "eval.batch_size"),
    (E, ["{files}/good.npz", "ref={files}/good.npz", "eval.metrics=[bogus]"], "bogus"),
    (E, ["{files}/good.npz", "{files}/no_labels.npz", *EVAL], "one sample set"),
    (E, ["{files}/good.npz"], "ref"),
    (E, ["{files}/good.npz", *EVAL, "out={files}/plain.txt/m.json"], "plain.txt"),
    (E, ["{files}/good.npz", *EVAL, "write_ref={files}/plain.txt/r.npz"], "plain.txt"),
    (E, ["{files}/good.npz", *EVAL, "out={files}/plain.txt"], "plain.txt already exists"),  # not replaced unasked
    (E, ["{files}/good.npz", *EVAL, "write_ref={files}/plain.txt"], "overwrite=true"),
    (E, ["{files}/good.npz", *EVAL, "progress=maybe"], "progress"),
    (E, ["{files}/good.npz", *EVAL, "bogus=1"], "bogus"),
    # ditlab-eval, samples= spelling: refused the same way
    (E, ["samples={files}/objects.npz", *EVAL], "objects.npz holds Python objects"),
    (E, ["samples={files}/empty.npz", *EVAL], "empty.npz"),
    (E, ["samples={files}/labels_out.npz", *EVAL], "labels_out.npz"),
    (E, ["samples={files}/no_labels.npz", *EVAL], "no_labels.npz"),
    (E, ["samples={files}/good.npz", *EVAL, "eval.batch_size=abc"], "eval.batch_size"),
    # ditlab-eval ckpt= (val_loss)
    (E, ["ckpt={files}/missing.ckpt", "eval.metrics=[val_loss]"], "missing.ckpt"),
    (E, ["ckpt={files}/payload.ckpt", "eval.metrics=[val_loss]"], "Python objects"),
    (E, ["ckpt={files}/truncated.ckpt", "eval.metrics=[val_loss]"], "truncated.ckpt"),
    (E, ["ckpt={files}/good.npz", "eval.metrics=[val_loss]"], "good.npz"),
    (E, ["ckpt={files}/unknown_key.ckpt", "eval.metrics=[val_loss]"], "bogus_option"),
    (E, ["ckpt={files}/unknown_val_loss_key.ckpt", "eval.metrics=[val_loss]"], "eval.val_loss.bogus_option"),
    (E, [*VAL_LOSS, "eval.val_loss.bogus=1"], "eval.val_loss.bogus"),
    (E, [*VAL_LOSS, "+eval.val_loss.bogus=1"], "eval.val_loss.bogus"),
    (E, [*VAL_LOSS, "eval.val_loss.num_times=0"], "eval.val_loss.num_times"),
    (E, [*VAL_LOSS, "eval.val_loss.num_images=abc"], "eval.val_loss.num_images"),
    (E, [*VAL_LOSS, "eval.val_loss.every_n_steps=5"], "eval.val_loss.every_n_steps"),
    (E, [*VAL_LOSS, "out={files}/plain.txt/m.json"], "plain.txt"),
    (E, [*VAL_LOSS, "write_ref={root}/r.npz"], "write_ref"),
    (E, [*VAL_LOSS, "eval.metrics=[val_loss,bogus]"], "bogus"),
    (E, ["ckpt={root}/run", "eval.metrics=[fd_digits]"], "no samples= was given"),
    (E, ["ckpt={root}/run"], "no samples= was given"),
    (E, ["samples={files}/good.npz", "eval.metrics=[val_loss]"], "val_loss needs ckpt="),
    (E, [*VAL_LOSS, "samples={files}/good.npz"], "samples= is read by the sample metrics alone"),
    (E, ["samples={files}/good.npz", *EVAL, "ckpt={root}/run"], "ckpt= is read by val_loss alone"),
    # ditlab-classify
    (C, ["{files}/missing.npz"], "missing.npz"),
    (C, ["{files}/objects.npz"], "objects.npz holds Python objects"),
    (C, ["{files}/empty.npz"], "empty.npz"),
    (C, ["{files}/text.npz"], "text.npz is not a readable .npz"),
    (C, ["{files}/payload.pkl"], "payload.pkl holds Python objects"),
    (C, ["{files}/single.npy"], "single.npy"),
    (C, ["{files}/labels_out.npz"], "labels_out.npz"),
    (C, ["{files}/labels_negative.npz"], "labels_negative.npz"),
    (C, ["{files}/labels_float.npz"], "labels_float.npz"),
    (C, ["{files}/no_labels.npz"], "no_labels.npz"),
    (C, ["{files}/floats.npz"], "floats.npz"),
    (C, ["{files}/rgb.npz"], "rgb.npz"),
    (C, ["{files}/good.npz", "--out", "{files}/plain.txt/r.json"], "plain.txt"),
    (C, ["{files}/good.npz", "--cache-dir", "{root}/payload_cache"], "Python objects"),
    (C, ["{files}/good.npz", "--bogus"], "--bogus"),
    # ditlab-classify, key=value spelling: refused the same way
    (C, ["samples={files}/objects.npz"], "objects.npz holds Python objects"),
    (C, ["samples={files}/labels_out.npz"], "labels_out.npz"),
    (C, ["samples={files}/no_labels.npz"], "no_labels.npz"),
    (C, ["samples={files}/good.npz", "out={files}/plain.txt/r.json"], "plain.txt"),
    (C, ["samples={files}/good.npz", "out={files}/plain.txt"], "plain.txt already exists"),
    (C, ["samples={files}/good.npz", "cache_dir={root}/payload_cache"], "Python objects"),
    (C, ["samples={files}/good.npz", "bogus=1"], "bogus"),
    # ditlab-report
    (R, ["{root}/missing"], "missing"),
    (R, ["{root}/reports/damaged"], "summary.json"),
    (R, ["{root}/reports/listed"], "summary.json"),
    (R, ["{root}/run", "--holdout", "-1"], "--holdout"),
    (R, ["{root}/run", "--bootstrap", "-1"], "--bootstrap"),
    (R, ["{root}/run", "--metric", "bogus"], "--metric"),
    (R, ["{root}/run", "--at-step", "abc"], "--at-step"),
    (R, ["{root}/run", "--out", "{files}/plain.txt"], "plain.txt"),
    # ditlab-report, key=value spelling
    (R, ["sweep={root}/missing"], "missing"),
    (R, ["sweep={root}/reports/damaged"], "summary.json"),
    (R, ["sweep={root}/run", "holdout=-1"], "holdout"),
    (R, ["sweep={root}/run", "bootstrap=-1"], "bootstrap"),
    (R, ["sweep={root}/run", "metric=bogus"], "metric"),
    (R, ["sweep={root}/run", "at_step=abc"], "at_step=abc"),  # the key as the user spelt it
    (R, ["sweep={root}/run", "out={files}/plain.txt"], "plain.txt"),
    # ditlab-flops
    (F, ["in_channels=abc"], "in_channels"),
    (F, ["in_channels=0"], "in_channels"),
    (F, ["input_size=0"], "input_size"),
    (F, ["input_size=abc"], "input_size"),
    (F, ["num_classes=-1"], "num_classes"),
    (F, ["learn_sigma=maybe"], "learn_sigma"),
    (F, ["output=csv"], "output"),
    (F, ["model=S", "model.patch_size=0"], "model.patch_size"),
    (F, ["model=S", "model.patch_size=3"], "patch_size"),
    (F, ["model=S", "model.depth=abc"], "model.depth"),
    (F, ["paper_grid.patch_sizes=[0]"], "paper_grid.patch_sizes"),
    (F, ["block=bogus"], "block/bogus"),
    # ditlab-extract
    (X, ["data.root={root}/run"], "cache_dir"),
    (X, [*EXTRACT, "shard_size=0"], "shard_size"),
    (X, [*EXTRACT, "batch_size=abc"], "batch_size"),
    (X, [*EXTRACT, "dtype=int8"], "dtype"),
    (X, [*EXTRACT, "data.num_workers=-1"], "data.num_workers"),
    (X, [*EXTRACT, "data.resolution=0"], "data.resolution"),
    (X, [*EXTRACT, "data.batch_size=0"], "data.batch_size"),
    (X, ["data.root={files}/missing", "cache_dir={root}/cache_out"], "missing"),
    # ditlab-export
    (P, ["out={root}/export"], "ckpt"),
    (P, ["ckpt={root}/run"], "out"),
    (P, [*EXPORT, "weights=best"], "weights"),
    (P, ["ckpt={files}/payload.pkl", "out={root}/export"], "Python objects"),
    (P, ["ckpt={files}/missing.ckpt", "out={root}/export"], "missing.ckpt"),
    (P, ["ckpt={files}/unknown_key.ckpt", "out={root}/export"], "bogus_option"),
    (P, [*EXPORT, "sampler=dpm_solver", "sampler.steps=0"], "sampler.steps"),
    (P, [*EXPORT, "overwrite=maybe"], "overwrite"),
]


READ_ONLY = [
    (S, [*SAMPLE[:1], "out={root}/read_only/samples", *SAMPLE[2:]], "read_only"),
    (E, ["{files}/good.npz", *EVAL, "out={root}/read_only/m.json"], "read_only"),
    (E, ["{files}/good.npz", *EVAL, "write_ref={root}/read_only/r.npz"], "read_only"),
    (E, [*VAL_LOSS, "out={root}/read_only/m.json"], "read_only"),
    (P, ["ckpt={root}/run", "out={root}/read_only/export"], "read_only"),
    (C, ["{files}/good.npz", "--out", "{root}/read_only/r.json"], "read_only"),
    (R, ["{root}/run", "--out", "{root}/read_only/report"], "read_only"),
    (R, ["sweep={root}/run", "out={root}/read_only/report"], "read_only"),
    (C, ["samples={files}/good.npz", "out={root}/read_only/r.json"], "read_only"),
]


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path with its size and modification time (folders: only that they exist)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, 0)
        for p in root.rglob("*")
    }


def _ids(cases):
    return [f"{tool[7:]}:{' '.join(a.split('}/')[-1] for a in args)}" for tool, args, _ in cases]


@pytest.mark.parametrize("tool,args,names", READ_ONLY, ids=_ids(READ_ONLY))
def test_a_read_only_output_folder_is_found_before_any_work(root, tool, args, names, monkeypatch, capsys):
    folder = root / "read_only"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes through permission bits; it meets read-only folders as read-only mounts
        access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != folder and access(p, mode))
    test_bad_input_is_one_line_exit_2_and_writes_nothing(root, tool, args, names, monkeypatch, capsys)


@pytest.mark.parametrize("tool,args,names", CASES, ids=_ids(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(root, tool, args, names, monkeypatch, capsys):
    argv = [a.format(root=root, files=root / "files") for a in args]
    monkeypatch.chdir(root)
    monkeypatch.setenv("DITLAB_ROOT", str(root))
    monkeypatch.setenv("DITLAB_CACHE", str(root / "cache"))
    monkeypatch.setattr(sys, "argv", [tool, *argv])
    before = _tree(root)
    with pytest.raises(SystemExit) as exit_info:
        ENTRY[tool]()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code == 2, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert lines and names in lines[-1], err[-2000:]
    assert _tree(root) == before


GOOD = [  # every command's own defaults, every recipe and the group options whose values differ most
    ("train", []),
    *[
        ("train", [f"experiment={p.stem}", "++data.root=x"])
        for p in sorted(Path(CONFIG_DIR, "experiment").glob("*.yaml"))
    ],
    *[("train", [f"trainer={t}"]) for t in ("gpu", "ddp", "fsdp", "ddp_cpu")],
    *[("train", [f"eval={e}"]) for e in ("inception", "adm", "none")],
    ("train", ["objective=flow", "data=latents", "data.cache_dir=x", "encoder=sd_vae"]),
    ("sample", ["ckpt=x"]),
    ("sample", ["official=x", "encoder=sd_vae", "sampler=ddpm"]),
    ("flops", []),
    ("flops", ["model=XL"]),
    ("extract", ["cache_dir=x", "data.root=y"]),
    ("export", ["ckpt=x", "out=y"]),
    ("evaluate", ["samples=x", "ref=y"]),
]


@pytest.mark.parametrize("config,overrides", GOOD, ids=[f"{c}:{' '.join(o)}" for c, o in GOOD])
def test_the_shipped_configs_pass_the_schema(config, overrides):
    check_config(config, compose(config, overrides))  # a rule stricter than a shipped value would refuse it
