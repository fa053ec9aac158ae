"""SiT interpolants x_t = α_t·x1 + σ_t·x0 between noise x0 (t = 0) and data x1 (t = 1).

Formulas follow SiT's ``transport/path.py`` (official SiT repository); every method takes ``t``
already shaped to broadcast against ``x`` (e.g. (N, 1, 1, 1)) and works in ``t``'s dtype.
``drift`` returns SiT's pair (drift_mean, drift_var) = (−f·x, g²/2) with f = α̇/α, so the
probability-flow velocity is v = −drift_mean + drift_var·score.

Paths are registry entries like blocks: ``@PATHS.register("name")`` on a :class:`Path` subclass
that defines ``alpha`` and ``sigma``, selected with ``objective.path=name`` or, as every other part,
``objective.path: {name: ..., module: ..., <constructor options>}``. The older spelling
``objective.path_module`` / ``objective.path_options`` still works (deprecated: it predates ``module:``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ditlab.errors import DitlabError
from ditlab.registry import Registry

Pair = tuple[torch.Tensor, torch.Tensor]
PATHS: Registry[type[Path]] = Registry("flow path", "objective.path")


class Path:
    name = ""

    def alpha(self, t: torch.Tensor) -> Pair:
        """(α_t, α̇_t)."""
        raise NotImplementedError

    def sigma(self, t: torch.Tensor) -> Pair:
        """(σ_t, σ̇_t)."""
        raise NotImplementedError

    def d_alpha_alpha_ratio(self, t: torch.Tensor) -> torch.Tensor:
        """f = α̇_t / α_t (written in closed form where α_t → 0 would divide by zero)."""
        alpha, d_alpha = self.alpha(t)
        return d_alpha / alpha

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> Pair:
        f = self.d_alpha_alpha_ratio(t)
        sigma, d_sigma = self.sigma(t)
        return -f * x, f * sigma**2 - sigma * d_sigma

    def plan(self, t: torch.Tensor, noise: torch.Tensor, data: torch.Tensor) -> Pair:
        """(x_t, u_t): the interpolant and its time derivative, the velocity target."""
        alpha, d_alpha = self.alpha(t)
        sigma, d_sigma = self.sigma(t)
        return alpha * data + sigma * noise, d_alpha * data + d_sigma * noise

    # ----------------------------------------------------------------- conversions
    def score_from_velocity(self, v: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, d_alpha = self.alpha(t)
        sigma, d_sigma = self.sigma(t)
        ratio = alpha / d_alpha
        return (ratio * v - x) / (sigma**2 - ratio * d_sigma * sigma)

    def noise_from_velocity(self, v: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, d_alpha = self.alpha(t)
        sigma, d_sigma = self.sigma(t)
        ratio = alpha / d_alpha
        return (ratio * v - x) / (ratio * d_sigma - sigma)

    def velocity_from_score(self, score: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        drift_mean, drift_var = self.drift(x, t)
        return drift_var * score - drift_mean


@PATHS.register("linear")
class LinearPath(Path):
    """SiT's ``ICPlan`` (default): α = t, σ = 1 − t; straight lines, constant velocity x1 − x0."""

    name = "linear"

    def alpha(self, t):
        return t, torch.ones_like(t)

    def sigma(self, t):
        return 1 - t, -torch.ones_like(t)

    def d_alpha_alpha_ratio(self, t):
        return 1 / t


@PATHS.register("gvp")
class GVPPath(Path):
    """SiT's ``GVPCPlan``: α = sin(πt/2), σ = cos(πt/2), so α² + σ² = 1 (variance preserving)."""

    name = "gvp"

    def alpha(self, t):
        return torch.sin(t * math.pi / 2), math.pi / 2 * torch.cos(t * math.pi / 2)

    def sigma(self, t):
        return torch.cos(t * math.pi / 2), -math.pi / 2 * torch.sin(t * math.pi / 2)

    def d_alpha_alpha_ratio(self, t):
        return math.pi / (2 * torch.tan(math.pi / 2 * t))


@PATHS.register("vp")
class VPPath(Path):
    """SiT's ``VPCPlan``: the DDPM-like VP SDE, α = exp(m(t)) with β from σ_min to σ_max."""

    name = "vp"

    def __init__(self, sigma_min: float = 0.1, sigma_max: float = 20.0):
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def _m(self, t):
        return -0.25 * (1 - t) ** 2 * (self.sigma_max - self.sigma_min) - 0.5 * (1 - t) * self.sigma_min

    def _dm(self, t):
        return 0.5 * (1 - t) * (self.sigma_max - self.sigma_min) + 0.5 * self.sigma_min

    def alpha(self, t):
        alpha = torch.exp(self._m(t))
        return alpha, alpha * self._dm(t)

    def sigma(self, t):
        p = torch.exp(2 * self._m(t))
        sigma = torch.sqrt(1 - p)
        return sigma, -p * self._dm(t) / sigma

    def d_alpha_alpha_ratio(self, t):
        return self._dm(t)

    def drift(self, x, t):
        beta = self.sigma_min + (1 - t) * (self.sigma_max - self.sigma_min)
        return -0.5 * beta * x, beta / 2


def build_path(path: str | Mapping, module: str | None = None, options: dict | None = None) -> Path:
    """The flow path ``path``: a name (with the deprecated ``objective.path_module`` and
    ``objective.path_options`` as ``module`` and ``options``) or a ``{name:, module:, ...options}`` mapping."""
    if isinstance(path, Mapping):
        if module or options:
            raise DitlabError(
                "objective.path names its module and options itself; drop objective.path_module/path_options"
            )
        path = {**path, "name": str(path.get("name")).lower()}
        built = PATHS.build(path)
        key = path["name"]
    else:
        key = path.lower()
        built = PATHS.build(
            key,
            module=module,
            # the deprecated spelling is named only where it was used; the hint names objective.path.module
            module_at="objective.path_module" if module else None,
            options_at="objective.path_options",
            **(options or {}),
        )
    built.name = built.name or key  # what summaries record
    return built


def expand_t_like_x(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1, ..., 1) so it broadcasts against ``x``."""
    return t.view(-1, *([1] * (x.dim() - 1)))
