"""Hydra launcher: each multirun job runs as one ``torchrun`` process group on this node.

Hydra finds it by scanning the ``hydra_plugins`` namespace package (no ``__init__.py`` in
``src/hydra_plugins``); the schema is ``hydra/launcher=ditlab_torchrun`` and ditlab's preset with
comments is ``conf/hydra/launcher/torchrun.yaml``:

    ditlab-train -m hydra/launcher=torchrun trainer=ddp trainer.devices=4 hydra.launcher.nproc_per_node=4 \
        hydra.launcher.parallel_jobs=2 model=S,B model.patch_size=2,4      # 8 GPUs: two 4-GPU jobs at a time

A job that fails is recorded in its run folder (``summary.json`` with ``status: failed``) exactly as
:mod:`ditlab.sweep.jobs` does for the other launchers, and the sweep goes on.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, and
# dataclasses then cannot resolve string annotations.
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


@dataclass
class TorchrunLauncherConf:
    _target_: str = "hydra_plugins.ditlab_torchrun.torchrun_launcher.TorchrunLauncher"
    nproc_per_node: int = 1  # processes per job, one per GPU: the job's trainer.devices
    parallel_jobs: int = 1  # jobs side by side, each on its own nproc_per_node GPUs
    gpus: Any = "auto"  # auto (CUDA_VISIBLE_DEVICES or all GPUs) | [0, 1, ...] | [] (CPU)
    module: str = "ditlab.cli"  # `python -m <module> <overrides>` runs one job
    torchrun_args: list[str] = field(default_factory=list)  # more torchrun options, e.g. ["--max-restarts=1"]
    env: dict | None = None  # extra environment variables for every job


ConfigStore.instance().store(
    group="hydra/launcher", name="ditlab_torchrun", node=TorchrunLauncherConf, provider="ditlab"
)


class TorchrunLauncher(Launcher):
    def __init__(
        self,
        nproc_per_node: int = 1,
        parallel_jobs: int = 1,
        gpus: Any = "auto",
        module: str = "ditlab.cli",
        torchrun_args: Sequence[str] = (),
        env: dict | None = None,
    ) -> None:
        self.nproc_per_node, self.parallel_jobs, self.gpus = int(nproc_per_node), int(parallel_jobs), gpus
        self.module, self.torchrun_args = module, [str(a) for a in torchrun_args]
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context  # the task runs in the torchrun processes

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from ditlab.errors import one_line_errors
        from ditlab.sweep import torchrun as tr

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        slots: Queue = Queue()
        gpus = OmegaConf.to_object(self.gpus) if OmegaConf.is_config(self.gpus) else self.gpus
        with one_line_errors():  # a launcher setting that cannot work: one line, exit 2, nothing started
            for slot in tr.gpu_slots(tr.visible_gpus(gpus), self.nproc_per_node, self.parallel_jobs):
                slots.put(slot)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(
            f"Launching {len(job_overrides)} jobs, {self.parallel_jobs} at a time, "
            f"each as torchrun --nproc-per-node={self.nproc_per_node}"
        )
        jobs = [self._job_config(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]

        def run(job: tuple[int, list[str], DictConfig, Path]) -> Exception | None:
            idx, overrides, cfg, run_dir = job
            problem = tr.job_problem(cfg.trainer, self.nproc_per_node)
            if problem:  # not started: recorded as that job's failure, like a config error inside a job
                return problem
            cmd = tr.torchrun_command(
                overrides,
                run_dir,
                nproc_per_node=self.nproc_per_node,
                module=self.module,
                torchrun_args=self.torchrun_args,
            )
            slot = slots.get()
            try:
                log.info(
                    f"\t#{idx} : {' '.join(filter_overrides(overrides))}"
                    + (f" (CUDA_VISIBLE_DEVICES={slot})" if slot is not None else "")
                )
                return tr.run_group(cmd, run_dir, slot, self.env)[1]
            finally:
                slots.put(slot)

        with ThreadPoolExecutor(max_workers=self.parallel_jobs) as pool:
            outcomes = list(pool.map(run, jobs))
        return [self._job_return(job, error) for job, error in zip(jobs, outcomes)]

    def _job_config(self, idx: int, overrides: list[str]) -> tuple[int, list[str], DictConfig, Path]:
        """The job's composed config with Hydra's job number and sweep folder filled in, as a local job sees them."""
        assert self.config is not None and self.hydra_context is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg):
            cfg.hydra.job.id = idx
            cfg.hydra.job.num = idx
        HydraConfig.instance().set_config(cfg)
        run_dir = (Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)).resolve()
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = str(run_dir)
        return idx, overrides, cfg, run_dir

    def _job_return(self, job: tuple[int, list[str], DictConfig, Path], error: Exception | None) -> JobReturn:
        from ditlab.sweep.jobs import record_failure

        idx, overrides, cfg, run_dir = job
        HydraConfig.instance().set_config(cfg)
        if error is None:
            summary = run_dir / "summary.json"
            value: Any = json.loads(summary.read_text()) if summary.is_file() else {}
        else:  # written as ditlab.sweep.jobs.run_job writes an in-process failure
            value = record_failure(cfg, error)
        task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        return JobReturn(
            overrides=overrides,
            cfg=task_cfg,
            hydra_cfg=cfg,
            working_dir=str(run_dir),
            task_name=str(cfg.hydra.job.name),
            status=JobStatus.COMPLETED,
            _return_value=value,
        )
