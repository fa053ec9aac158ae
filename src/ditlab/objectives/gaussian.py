"""Gaussian diffusion numerics as in improved DDPM / ADM / official DiT (``diffusion/`` package).

Tables are built in float64 and cast to float32 when gathered, exactly like the official code,
so schedule constants, the hybrid loss and the sampling steps match it to float precision
(DiT's ``diffusion/gaussian_diffusion.py`` and ``respace.py``; the tests compare with numbers
that code produced). This module is pure maths on tensors: it never calls a
network. Objectives and samplers pass model outputs in.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ditlab.errors import DitlabError

MEAN_TYPES = ("eps", "x0", "v")
VAR_TYPES = ("learned_range", "fixed_small", "fixed_large")


#################################################################################
#                        Schedules and timestep respacing                        #
#################################################################################


def get_named_beta_schedule(name: str, num_diffusion_timesteps: int) -> np.ndarray:
    if name == "linear":
        # Ho et al. linear schedule, scaled so any T has the same endpoints as T=1000.
        scale = 1000 / num_diffusion_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)
    if name == "cosine":
        # Nichol & Dhariwal cosine ᾱ (s = 0.008), betas capped at 0.999.
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [
            min(1 - alpha_bar((i + 1) / num_diffusion_timesteps) / alpha_bar(i / num_diffusion_timesteps), 0.999)
            for i in range(num_diffusion_timesteps)
        ]
        return np.array(betas, dtype=np.float64)
    raise DitlabError(f"unknown noise schedule '{name}'; set objective.schedule to 'linear' or 'cosine'")


def space_timesteps(num_timesteps: int, section_counts: str | int) -> list[int]:
    """Which of the original steps a respaced chain keeps (sorted). ``"250"``, ``"10,20"`` or ``"ddim50"``."""
    spec = str(section_counts)
    if spec.startswith("ddim"):
        desired = int(spec[len("ddim") :])
        for i in range(1, num_timesteps):
            if len(range(0, num_timesteps, i)) == desired:
                return list(range(0, num_timesteps, i))
        raise DitlabError(f"cannot take exactly {desired} evenly strided steps from {num_timesteps}")
    counts = [int(x) for x in spec.split(",")]
    size_per = num_timesteps // len(counts)
    extra = num_timesteps % len(counts)
    start_idx = 0
    all_steps: list[int] = []
    for i, section_count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < section_count:
            raise DitlabError(
                f"cannot sample {section_count} steps from a section of {size} of the {num_timesteps} training "
                f"steps; lower sampler.steps to at most {num_timesteps}"
            )
        frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
        cur_idx = 0.0
        for _ in range(section_count):
            all_steps.append(start_idx + round(cur_idx))  # Python round: halves to even
            cur_idx += frac_stride
        start_idx += size
    return sorted(set(all_steps))


#################################################################################
#                              The diffusion process                             #
#################################################################################


class GaussianDiffusion:
    """A (possibly respaced) discrete Gaussian diffusion with T steps.

    ``timestep_map[i]`` is the original 0..T_train-1 index of respaced step ``i``; the network
    always receives original indices (no rescaling), as in the official code.
    """

    def __init__(
        self,
        betas: np.ndarray,
        mean_type: str = "eps",
        var_type: str = "learned_range",
        timestep_map: list[int] | None = None,
    ):
        if mean_type not in MEAN_TYPES:
            raise DitlabError(f"unknown prediction '{mean_type}'; set objective.prediction to one of {MEAN_TYPES}")
        if var_type not in VAR_TYPES:
            raise DitlabError(f"unknown variance '{var_type}'; set objective.var_type to one of {VAR_TYPES}")
        self.mean_type = mean_type
        self.var_type = var_type
        self.betas = betas = np.asarray(betas, dtype=np.float64)
        assert betas.ndim == 1 and (betas > 0).all() and (betas <= 1).all()
        self.num_timesteps = int(betas.shape[0])
        self.timestep_map = list(range(self.num_timesteps)) if timestep_map is None else list(timestep_map)

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas, axis=0)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        # Posterior q(x_{t-1} | x_t, x_0).
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # log(0) at t=0 is replaced by the t=1 value.
        self.posterior_log_variance_clipped = (
            np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
            if len(self.posterior_variance) > 1
            else np.array([])
        )
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    # ----------------------------------------------------------------- respacing
    def respace(self, spec: str | int) -> GaussianDiffusion:
        """The chain that keeps ``space_timesteps(T, spec)``; β_new = 1 - ᾱ_i / ᾱ_last."""
        use = set(space_timesteps(self.num_timesteps, spec))
        last_alpha_cumprod = 1.0
        new_betas, timestep_map = [], []
        for i, alpha_cumprod in enumerate(self.alphas_cumprod):
            if i in use:
                new_betas.append(1 - alpha_cumprod / last_alpha_cumprod)
                last_alpha_cumprod = alpha_cumprod
                timestep_map.append(self.timestep_map[i])
        return GaussianDiffusion(np.array(new_betas), self.mean_type, self.var_type, timestep_map)

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Respaced indices -> the original indices the network was trained on."""
        table = torch.tensor(self.timestep_map, device=t.device, dtype=t.dtype)
        return table[t]

    # ------------------------------------------------------------ forward process
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return (
            _extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
            + _extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise
        )

    def q_posterior_mean_variance(self, x_start, x_t, t):
        mean = (
            _extract(self.posterior_mean_coef1, t, x_t.shape) * x_start
            + _extract(self.posterior_mean_coef2, t, x_t.shape) * x_t
        )
        variance = _extract(self.posterior_variance, t, x_t.shape)
        log_variance = _extract(self.posterior_log_variance_clipped, t, x_t.shape)
        return mean, variance, log_variance

    # ------------------------------------------------------------ reverse process
    def p_mean_variance(self, model_output: torch.Tensor, x: torch.Tensor, t: torch.Tensor, clip_denoised=False):
        """Model output (N, C or 2C, ...) at respaced step ``t`` -> mean, variance, log-variance, x̂0, ε̂."""
        C = x.shape[1]
        if self.var_type == "learned_range":
            assert model_output.shape[1] == 2 * C, "learned_range needs 2C output channels"
            model_output, model_var_values = model_output[:, :C], model_output[:, C:]
            min_log = _extract(self.posterior_log_variance_clipped, t, x.shape)
            max_log = _extract(np.log(self.betas), t, x.shape)
            frac = (model_var_values + 1) / 2  # the network's v in [-1, 1] (not clamped)
            model_log_variance = frac * max_log + (1 - frac) * min_log
            model_variance = torch.exp(model_log_variance)
        else:
            model_output = model_output[:, :C]
            if self.var_type == "fixed_large":
                # β_t, with β̃_1 at t=0 for a better decoder log-likelihood.
                var = np.append(self.posterior_variance[1], self.betas[1:])
                model_variance = _extract(var, t, x.shape)
                model_log_variance = _extract(np.log(var), t, x.shape)
            else:  # fixed_small
                model_variance = _extract(self.posterior_variance, t, x.shape)
                model_log_variance = _extract(self.posterior_log_variance_clipped, t, x.shape)

        pred_xstart = self.predict_xstart(model_output, x, t)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        model_mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {
            "mean": model_mean,
            "variance": model_variance,
            "log_variance": model_log_variance,
            "pred_xstart": pred_xstart,
            "eps": self.predict_eps_from_xstart(x, t, pred_xstart),
        }

    def predict_xstart(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.mean_type == "eps":
            return (
                _extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
                - _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * model_output
            )
        if self.mean_type == "x0":
            return model_output
        # v-prediction: x0 = √ᾱ x_t − √(1−ᾱ) v
        return (
            _extract(self.sqrt_alphas_cumprod, t, x_t.shape) * x_t
            - _extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape) * model_output
        )

    def predict_eps_from_xstart(self, x_t, t, pred_xstart):
        return (_extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - pred_xstart) / _extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t.shape
        )

    def target(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.mean_type == "eps":
            return noise
        if self.mean_type == "x0":
            return x_start
        return (
            _extract(self.sqrt_alphas_cumprod, t, x_start.shape) * noise
            - _extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * x_start
        )

    def p_sample(self, model_output, x, t, noise, clip_denoised=False):
        """One ancestral step; ``noise`` is ignored (masked) at t == 0."""
        out = self.p_mean_variance(model_output, x, t, clip_denoised)
        nonzero_mask = (t != 0).float().view(-1, *([1] * (x.dim() - 1)))
        sample = out["mean"] + nonzero_mask * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_sample(self, model_output, x, t, noise, eta=0.0, clip_denoised=False):
        out = self.p_mean_variance(model_output, x, t, clip_denoised)
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar = _extract(self.alphas_cumprod, t, x.shape)
        alpha_bar_prev = _extract(self.alphas_cumprod_prev, t, x.shape)
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        mean_pred = out["pred_xstart"] * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        nonzero_mask = (t != 0).float().view(-1, *([1] * (x.dim() - 1)))
        return {"sample": mean_pred + nonzero_mask * sigma * noise, "pred_xstart": out["pred_xstart"]}

    # -------------------------------------------------------------------- losses
    def vb_terms_bpd(self, model_output, x_start, x_t, t):
        """KL(q || p) for t > 0 and the decoder NLL at t = 0, per sample, in bits."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised=False)
        kl = normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])
        kl = mean_flat(kl) / math.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(
            x_start, means=out["mean"], log_scales=0.5 * out["log_variance"]
        )
        decoder_nll = mean_flat(decoder_nll) / math.log(2.0)
        return torch.where(t == 0, decoder_nll, kl)

    def training_losses(self, model_output, x_start, x_t, t, noise) -> dict[str, torch.Tensor]:
        """Per-sample ``mse``, ``vb`` (learned Σ only, stop-gradient on the mean) and ``loss``."""
        C = x_start.shape[1]
        terms = {"mse": mean_flat((self.target(x_start, t, noise) - model_output[:, :C]) ** 2)}
        if self.var_type == "learned_range":
            # The VLB trains only the variance channels: the mean half is detached.
            frozen_out = torch.cat([model_output[:, :C].detach(), model_output[:, C:]], dim=1)
            terms["vb"] = self.vb_terms_bpd(frozen_out, x_start, x_t, t)
            terms["loss"] = terms["mse"] + terms["vb"]
        else:
            terms["loss"] = terms["mse"]
        return terms


#################################################################################
#                                    Utilities                                   #
#################################################################################


def _extract(arr: np.ndarray, timesteps: torch.Tensor, broadcast_shape) -> torch.Tensor:
    """Gather float64 table entries at ``timesteps`` as float32, shaped to broadcast."""
    res = torch.from_numpy(np.asarray(arr)).to(device=timesteps.device)[timesteps].float()
    while len(res.shape) < len(broadcast_shape):
        res = res[..., None]
    return res.expand(broadcast_shape)


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=list(range(1, x.dim())))


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise."""
    tensor = next(obj for obj in (mean1, logvar1, mean2, logvar2) if isinstance(obj, torch.Tensor))
    logvar1, logvar2 = [x if isinstance(x, torch.Tensor) else torch.tensor(x).to(tensor) for x in (logvar1, logvar2)]
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + ((mean1 - mean2) ** 2) * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_log_likelihood(x, *, means, log_scales):
    """Log-likelihood of [-1, 1] data quantised into 255 bins of width 2/255 (edges open at ±0.999)."""
    centered_x = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered_x + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered_x - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))),
    )
