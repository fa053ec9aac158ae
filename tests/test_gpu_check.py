"""The one-command GPU check: on CPU it runs the CPU-feasible parts and names each skipped CUDA part."""

import json

import pytest
import torch

from ditlab.tools.gpu_check import CUDA_ONLY, main

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU variant of the check")


def test_gpu_check_on_cpu_runs_what_it_can_and_says_what_it_skipped(tmp_path, capsys):
    out = tmp_path / "check.json"
    main(["--quick", "--skip", "ddp_smoke", "--out", str(out)])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    parts = result["parts"]
    for part, why in CUDA_ONLY.items():  # every CUDA part is named with the reason, in the JSON and on stdout
        assert parts[part] == {"skipped": f"skipped: no CUDA device here ({why})"}
        assert f"gpu_check: {part} skipped: no CUDA device here" in printed
    assert "ddp_smoke" not in parts
    assert parts["sdpa_backend"]["backend"] == "flash"  # CPU SDPA runs its fused flash kernel
    assert any("scaled_dot_product" in op for op in parts["sdpa_backend"]["aten_ops"])
    probe = parts["plain_loop"]["cpu_probe"]
    assert (
        probe["model"] == "DiT-tiny/2"
        and probe["timed_steps"] == 6
        and parts["plain_loop"]["ratio_ditlab_over_plain"] > 0
    )
    curve = parts["bf16_vs_fp32"]
    assert curve["steps"] == 8 and curve["final_loss_fp32"] > 0 and curve["final_loss_bf16"] > 0
    assert curve["agree_within_5pct"] == (curve["relative_difference"] < 0.05)
    assert result["machine"]["device"].startswith("cpu") and result["flops_formula"].startswith("train FLOPs = 3 x 2")
    with pytest.raises(SystemExit) as exit_info:  # an existing result is kept
        main(["--quick", "--only", "sdpa_backend", "--out", str(out)])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_gpu_check_ddp_smoke_on_two_cpu_processes_keeps_the_ema(tmp_path):
    out = tmp_path / "check.json"
    main(["--quick", "--only", "ddp_smoke", "--out", str(out)])
    ddp = json.loads(out.read_text())["parts"]["ddp_smoke"]
    assert ddp["trainer"] == ["trainer=ddp_cpu"] and ddp["intact"] and ddp["ema_keys_match_model"]
