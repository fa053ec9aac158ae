"""Training-time distributions over the noise level, shared by the ``ddpm`` and ``flow`` objectives.

Both objectives draw a *noise level* τ ∈ [0, 1] (0 = data, 1 = pure noise, the convention of SD3,
Esser et al. 2024, arXiv 2403.03206 §2) and map it to their own time: the DDPM index ⌊τ·T⌋, or
SiT's t = 1 − τ (t = 1 is data there).

* ``uniform``: τ ~ U(0, 1) (DiT, SiT).
* ``logit_normal``: τ = sigmoid(n), n ~ N(mean, std²) (SD3 §3.1, best overall at mean 0, std 1;
  LightningDiT's ``use_lognorm``). It concentrates training on mid-range noise; mean > 0 favours
  noisier inputs, mean < 0 cleaner ones.
* ``time_shift`` α (SD3 §5.3.2, resolution-dependent shift): τ' = α·τ / (1 + (α − 1)·τ); α > 1 moves
  training toward noise (SD3 uses α = 3 at 1024²), α = 1 changes nothing.
"""

from __future__ import annotations

import torch

from ditlab.errors import DitlabError

TIME_SAMPLING = ("uniform", "logit_normal")


class NoiseLevelSampler:
    def __init__(self, kind: str = "uniform", mean: float = 0.0, std: float = 1.0, shift: float = 1.0):
        if kind not in TIME_SAMPLING:
            raise DitlabError(f"unknown time sampling '{kind}'; set objective.time_sampling to one of {TIME_SAMPLING}")
        if not std > 0:
            raise DitlabError(f"objective.logit_normal_std must be positive, got {std}")
        if not shift > 0:
            raise DitlabError(f"objective.time_shift must be positive (1 = no shift), got {shift}")
        self.kind, self.mean, self.std, self.shift = kind, float(mean), float(std), float(shift)

    @property
    def is_default(self) -> bool:
        return self.kind == "uniform" and self.shift == 1.0

    def sample(self, n: int) -> torch.Tensor:
        """(n,) noise levels τ in [0, 1], float32 on the CPU generator."""
        if self.kind == "uniform":
            tau = torch.rand((n,))
        else:
            tau = torch.sigmoid(torch.randn((n,)) * self.std + self.mean)
        return shift_noise_level(tau, self.shift)

    def describe(self) -> dict:
        out: dict = {"time_sampling": self.kind}
        if self.kind == "logit_normal":
            out["logit_normal"] = [self.mean, self.std]
        if self.shift != 1.0:
            out["time_shift"] = self.shift
        return out


def shift_noise_level(tau: torch.Tensor, shift: float) -> torch.Tensor:
    if shift == 1.0:
        return tau
    return shift * tau / (1 + (shift - 1) * tau)
