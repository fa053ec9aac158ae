"""``ditlab-eval`` scores the digits metrics against the bundled digits when no ``ref=`` is given."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from ditlab.data.digits import DigitsDataModule
from ditlab.metrics.extractors import EXTRACTORS, Extractor
from ditlab.metrics.images import real_to_uint8


class ToyDigitsNet(nn.Module):
    """Stands in for the digits classifier (same output names) so the test trains nothing."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(64, 14, generator=torch.Generator().manual_seed(0)), requires_grad=False)

    def forward(self, x):  # uint8 (N, 1, 8, 8)
        h = (x.float().flatten(1) / 255.0) @ self.w
        return {"pool": h[:, :4], "logits": h[:, 4:]}


def test_digits_metrics_need_no_ref(tmp_path, monkeypatch, capsys):
    from ditlab.tools.evaluate import main

    toy = Extractor("digits", ToyDigitsNet(), {"pool": 4, "logits": 10}, rgb=False, identity={"name": "toy-digits"})
    monkeypatch.setitem(EXTRACTORS._entries, "digits", lambda **kw: toy)
    images, labels = DigitsDataModule(resolution=8).real_images()  # the reference itself: distance 0
    np.savez(tmp_path / "samples.npz", arr_0=real_to_uint8(images), arr_1=labels.numpy())
    argv = [f"samples={tmp_path / 'samples.npz'}", "eval.metrics=[fd_digits,digits_accuracy]", "progress=false"]
    main([*argv, f"paths.cache_dir={tmp_path / 'cache'}"])
    result = json.loads(capsys.readouterr().out)
    assert result["ref"] == "builtin:digits" and result["num_samples"] == len(images) == 1797
    assert result["fd_digits"] == pytest.approx(0, abs=1e-6) and 0 <= result["digits_accuracy"] <= 1
    assert any((tmp_path / "cache" / "real_stats").iterdir())  # cached like training's real statistics
    # Metrics of another extractor still need a reference batch: one line naming ref=.
    with pytest.raises(SystemExit) as e:
        main([f"samples={tmp_path / 'samples.npz'}", "eval.metrics=[fid]"])
    assert e.value.code == 2 and "no ref given" in capsys.readouterr().err
