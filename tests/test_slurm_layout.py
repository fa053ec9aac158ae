"""A Slurm allocation whose tasks are not trainer.num_nodes x trainer.devices processes is one line
naming the sbatch options, before anything is built (Lightning: a traceback inside Trainer, or a hang)."""

from __future__ import annotations

import pytest
from conftest import compose_train

from ditlab.errors import DitlabError
from ditlab.training.slurm_layout import check_slurm_layout, device_count
from ditlab.training.train import train

SBATCH_N2 = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2"}


@pytest.mark.parametrize(
    "env,trainer,names",
    [
        (SBATCH_N2, {"num_nodes": 2, "devices": 1}, "--ntasks-per-node is not set"),  # the reported `sbatch -N2`
        (SBATCH_N2, {"num_nodes": 1, "devices": 1}, "--nodes=2 but trainer.num_nodes=1"),
        (
            {**SBATCH_N2, "SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4"},
            {"num_nodes": 2, "devices": 2},
            "--ntasks-per-node=4 but trainer.devices=2",
        ),
        (
            {**SBATCH_N2, "SLURM_NTASKS": "3", "SLURM_NTASKS_PER_NODE": "2"},
            {"num_nodes": 2, "devices": 2},
            "--ntasks=3",
        ),
    ],
)
def test_a_mismatched_allocation_names_the_sbatch_options(env, trainer, names):
    with pytest.raises(DitlabError) as refused:
        check_slurm_layout(trainer, env)
    message = str(refused.value)
    assert names in message and "\n" not in message
    want = f"sbatch --nodes={trainer['num_nodes']} --ntasks-per-node={trainer['devices']}"
    assert want in message


@pytest.mark.parametrize(
    "env,trainer",
    [
        ({}, {"num_nodes": 1, "devices": 1}),  # not under Slurm
        ({**SBATCH_N2, "SLURM_NTASKS_PER_NODE": "1"}, {"num_nodes": 2, "devices": 1}),
        ({**SBATCH_N2, "SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4"}, {"num_nodes": 2, "devices": [0, 1, 2, 3]}),
        ({**SBATCH_N2, "SLURM_JOB_NAME": "interactive"}, {"num_nodes": 1, "devices": 1}),  # Lightning: not Slurm's
        ({**SBATCH_N2, "TORCHELASTIC_RUN_ID": "x"}, {"num_nodes": 1, "devices": 2}),  # torchrun's layout
        ({"SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1"}, {"num_nodes": 1, "devices": "auto"}),
    ],
)
def test_a_matching_allocation_passes(env, trainer):
    check_slurm_layout(trainer, env)


def test_device_count_reads_lightnings_spellings():
    assert [device_count(d) for d in (1, 4, -1, "auto", "2", "0,1", "1,", [0, 3])] == [1, 4, None, None, 2, 2, 1, 2]


def test_a_run_under_a_mismatched_allocation_writes_nothing(tmp_path, monkeypatch):
    for key, value in SBATCH_N2.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    monkeypatch.delenv("SLURM_JOB_NAME", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    with pytest.raises(DitlabError, match="--ntasks-per-node is not set"):
        train(compose_train("trainer.max_steps=1", "trainer.num_nodes=2", output_dir=tmp_path / "run"))
    assert list(tmp_path.iterdir()) == []
