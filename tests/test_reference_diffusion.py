"""Improved-DDPM numerics against the official code's numbers (DiT's diffusion/: constants, respacing, hybrid
loss, p_sample and DDIM on the respaced 250-step chain)."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from ditlab.objectives.ddpm import DDPMObjective
from ditlab.objectives.gaussian import discretized_gaussian_log_likelihood, normal_kl, space_timesteps
from ditlab.samplers.ddpm import DDIMSampler, DDPMSampler
from ditlab.samplers.generate import to_uint8
from ditlab.samplers.guidance import GuidedModel


@pytest.fixture(scope="module")
def diffusion():
    return DDPMObjective().diffusion


def test_schedule_constants(diffusion):
    np.testing.assert_allclose(
        diffusion.betas[[0, 1, 2, 499, 998, 999]],
        [
            9.999999999998899e-05,
            0.00011991991991988638,
            0.00013983983983989479,
            0.01004004004004,
            0.01998008008008001,
            0.020000000000000018,
        ],
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        diffusion.alphas_cumprod[[0, 1, 9, 99, 249, 499, 749, 999]],
        [
            0.9999,
            0.9997800920720721,
            0.9981052047858344,
            0.89701814567496,
            0.5240853738253606,
            0.07858724288177824,
            0.0033505504389367744,
            4.035829765375676e-05,
        ],
        rtol=1e-11,
    )
    assert diffusion.sqrt_one_minus_alphas_cumprod[249] == pytest.approx(0.689865658062959, rel=1e-12)
    np.testing.assert_allclose(
        diffusion.posterior_variance[[0, 1, 2, 999]],
        [0.0, 5.453187661300667e-05, 8.548911523094303e-05, 0.019999983526560627],
        atol=1e-15,
    )
    np.testing.assert_allclose(
        diffusion.posterior_log_variance_clipped[[0, 1, 2]],
        [-9.81672513529595, -9.81672513529595, -9.367121497366247],
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        diffusion.posterior_mean_coef1[[0, 1, 999]], [1.0, 0.5452914995101377, 0.00012835148717224693], rtol=1e-11
    )
    np.testing.assert_allclose(
        diffusion.posterior_mean_coef2[[0, 1, 999]], [0.0, 0.4547084989905303, 0.9899486782675173], atol=1e-12
    )
    assert diffusion.sqrt_recip_alphas_cumprod[999] == pytest.approx(157.41045725150062, rel=1e-12)
    assert diffusion.sqrt_recipm1_alphas_cumprod[999] == pytest.approx(157.40728081040757, rel=1e-12)


@pytest.mark.parametrize(
    "spec,n,first,last",
    [
        ("250", 250, [0, 4, 8, 12, 16, 20, 24, 28], [987, 991, 995, 999]),
        ("100", 100, [0, 10, 20, 30, 40, 50, 61, 71], [969, 979, 989, 999]),
        ("50", 50, [0, 20, 41, 61, 82, 102, 122, 143], [938, 958, 979, 999]),
        ("25", 25, [0, 42, 83, 125, 166, 208, 250, 291], [874, 916, 957, 999]),
        ("10,20", 30, [0, 55, 111, 166, 222, 277, 333, 388], [920, 946, 973, 999]),
        ("ddim50", 50, [0, 20, 40, 60, 80, 100, 120, 140], [920, 940, 960, 980]),
        ("ddim25", 25, [0, 40, 80, 120, 160, 200, 240, 280], [840, 880, 920, 960]),
    ],
)
def test_respacing_maps(spec, n, first, last):
    steps = space_timesteps(1000, spec)
    assert len(steps) == n and steps[:8] == first and steps[-4:] == last


def test_respaced_250_chain(diffusion):
    r = diffusion.respace("250")
    gaps = np.diff(r.timestep_map)
    assert (gaps == 4).sum() == 246 and [r.timestep_map[i] for i in np.where(gaps == 5)[0]] == [164, 497, 830]
    np.testing.assert_allclose(
        r.betas[[0, 1, 2, 248, 249]],
        [9.999999999998899e-05, 0.0005990655644756426, 0.0009176029928172902, 0.07721930545605926, 0.07751934499235003],
        rtol=1e-10,
    )
    assert r.alphas_cumprod[249] == pytest.approx(4.035829765375675e-05, rel=1e-10)
    np.testing.assert_allclose(
        r.posterior_log_variance_clipped[[0, 1, 2, 249]],
        [-9.364628159803084, -9.364628159803084, -7.831775861327526, -2.557231152560974],
        rtol=1e-10,
    )
    ten = diffusion.respace("10")
    assert ten.timestep_map == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    np.testing.assert_allclose(
        ten.betas,
        [
            0.0001,
            0.1263076379,
            0.3168436178,
            0.4661190638,
            0.5830054944,
            0.674480639,
            0.746029767,
            0.8019625917,
            0.8456633784,
            0.8797882304,
        ],
        rtol=1e-8,
    )


def fixed_model_tensors():
    k = torch.arange(256.0).reshape(4, 4, 4, 4)
    x0 = 0.5 * torch.sin(0.1 * k + 0.3)
    noise = torch.cos(0.07 * k + 0.1)
    eps = 0.8 * noise + 0.1 * torch.sin(0.05 * k)
    v = torch.tanh(0.05 * k - 1)
    return k, x0, noise, torch.cat([eps, v], dim=1)


def test_hybrid_loss_on_fixed_model():
    _, x0, noise, out = fixed_model_tensors()
    objective = DDPMObjective()
    seen = {}

    def model(x_t, t):
        seen["x_t"] = x_t
        return out

    terms = objective.loss_at(model, x0, torch.tensor([0, 1, 500, 999]), noise, {})
    torch.testing.assert_close(
        terms["mse"],
        torch.tensor([0.03554314374923706, 0.03663380444049835, 0.02715899422764778, 0.005377618130296469]),
        rtol=1e-6,
        atol=0,
    )
    torch.testing.assert_close(
        terms["vb"],
        torch.tensor([1.6024911403656006, 0.18893283605575562, 0.0002161412703571841, 7.916895265225321e-05]),
        rtol=1e-5,
        atol=0,
    )
    torch.testing.assert_close(
        terms["loss"],
        torch.tensor([1.6380343437194824, 0.22556664049625397, 0.02737513557076454, 0.005456787068396807]),
        rtol=1e-6,
        atol=0,
    )
    torch.testing.assert_close(
        seen["x_t"][0, 0, 0],
        torch.tensor([0.1577027589, 0.2045553029, 0.2494141757, 0.2918304503]),
        rtol=1e-6,
        atol=1e-7,
    )
    torch.testing.assert_close(
        seen["x_t"][3, 0, 0],
        torch.tensor([0.5642132759, 0.5052424073, 0.4437859058, 0.3801434934]),
        rtol=1e-6,
        atol=1e-7,
    )


def test_vlb_trains_only_the_variance_channels():
    _, x0, noise, out = fixed_model_tensors()
    out = out.clone().requires_grad_(True)
    terms = DDPMObjective().loss_at(lambda x_t, t: out, x0, torch.tensor([0, 1, 500, 999]), noise, {})
    terms["vb"].sum().backward()
    assert out.grad[:, :4].abs().sum() == 0 and out.grad[:, 4:].abs().sum() > 0


def test_p_mean_variance_and_steps_on_250_chain(diffusion):
    k, _, _, out = fixed_model_tensors()
    x_t = torch.sin(0.03 * k + 0.2)
    r = diffusion.respace("250")
    t = torch.tensor([0, 1, 124, 249])
    assert r.model_timesteps(t).tolist() == [0, 4, 497, 999]
    pmv = r.p_mean_variance(out, x_t, t)
    sums = lambda a: a.sum(dim=(1, 2, 3))  # noqa: E731
    torch.testing.assert_close(
        sums(pmv["mean"]),
        torch.tensor([49.82090377807617, 3.9144084453582764, -54.028076171875, 34.887290954589844]),
        rtol=1e-5,
        atol=1e-4,
    )
    torch.testing.assert_close(
        sums(pmv["log_variance"]),
        torch.tensor([-592.7916870117188, -475.13775634765625, -207.15623474121094, -163.66258239746094]),
        rtol=1e-6,
        atol=0,
    )
    torch.testing.assert_close(
        sums(pmv["pred_xstart"]),
        torch.tensor([49.82090377807617, 3.870250701904297, -215.35281372070312, 8447.650390625]),
        rtol=1e-5,
        atol=1e-4,
    )
    torch.testing.assert_close(
        pmv["mean"][:, 0, 0, 0],
        torch.tensor([0.1907188296, 0.8557218909, -0.7674238086, -0.3655646145]),
        rtol=1e-6,
        atol=1e-7,
    )
    torch.testing.assert_close(
        pmv["pred_xstart"][3, 0, 0, :2], torch.tensor([-118.0560455322, -105.3284454346]), rtol=1e-6, atol=0
    )
    # p_sample at t = 0 returns exactly the mean, whatever the noise.
    step = r.p_sample(out, x_t, t, noise=torch.randn_like(x_t))
    assert torch.equal(step["sample"][0], pmv["mean"][0])
    ddim = r.ddim_sample(out, x_t, t, noise=torch.zeros_like(x_t), eta=0.0)
    torch.testing.assert_close(
        ddim["sample"][:, 0, 0, 0],
        torch.tensor([0.1907188296, 0.8550288081, -0.782630384, -0.3484662771]),
        rtol=1e-6,
        atol=1e-7,
    )
    torch.testing.assert_close(
        sums(ddim["sample"]),
        torch.tensor([49.82090377807617, 3.9873604774475098, -53.847381591796875, 34.02317428588867]),
        rtol=1e-5,
        atol=1e-4,
    )


class RampModel(nn.Module):
    """Loop model of the reference check: [0.1 x + 0.01 t/1000, 0] over 8 channels, t the original index."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, t, y):
        self.seen.append(int(t[0]))
        eps = 0.1 * x + 0.01 * (t.float() / 1000).view(-1, 1, 1, 1)
        return torch.cat([eps, torch.zeros_like(x)], dim=1)


@pytest.mark.parametrize(
    "sampler,expected",
    [
        (
            DDPMSampler(steps=10),
            [
                26.28776169,
                19.91214371,
                45.50522232,
                6.43549538,
                -4.43696785,
                -65.05258179,
                -93.12499237,
                -117.79934692,
                -42.4174118,
                -55.92396164,
                32.11711884,
                80.10482788,
                96.52986908,
                148.93283081,
                105.46779633,
                0.91941375,
            ],
        ),
        (
            DDIMSampler(steps=10),
            [
                101.0401001,
                88.54286194,
                54.11087036,
                6.17430019,
                -43.53030396,
                -82.8335495,
                -102.1125946,
                -96.64727783,
                -67.77568817,
                -22.56660652,
                27.91120911,
                71.29903412,
                96.97399139,
                98.6499939,
                75.91667175,
                34.33995438,
            ],
        ),
    ],
)
def test_full_ten_step_loops(sampler, expected):
    model = RampModel()
    x_T = torch.cos(0.5 * torch.arange(16.0)).reshape(1, 4, 2, 2)
    guided = GuidedModel(model, pred_channels=4, null_label=0, scale=1.0)
    generator = torch.Generator().manual_seed(0)
    out = sampler.sample(guided, DDPMObjective(), x_T, torch.zeros(1, dtype=torch.long), generator)
    assert model.seen == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    torch.testing.assert_close(out.flatten(), torch.tensor(expected), rtol=1e-5, atol=1e-4)
    assert guided.nfe == 10


def test_utilities():
    assert normal_kl(torch.tensor(0.0), 0.0, 1.0, float(np.log(2))).item() == pytest.approx(0.3465735912322998)
    assert normal_kl(torch.tensor(0.5), float(np.log(0.3)), -0.2, float(np.log(1.7))).item() == pytest.approx(
        0.5996534824371338, rel=1e-6
    )
    x = torch.tensor([-1, -0.5, 0, 0.5, 1])
    means = torch.tensor([-0.9, -0.5, 0.1, 0.45, 0.95])
    scales = torch.tensor([0.1, 0.01, 0.2, 0.05, 0.3])
    ll = discretized_gaussian_log_likelihood(x, means=means, log_scales=torch.log(scales))
    torch.testing.assert_close(
        ll,
        torch.tensor([-1.7809691429, -1.1873710155, -4.2831797600, -3.2721352577, -0.8233337998]),
        rtol=1e-5,
        atol=1e-6,
    )
    u8 = to_uint8(torch.tensor([-1, -0.99, -0.0039, 0, 0.5, 0.999, 1]).view(1, 1, 1, 7))
    assert u8.flatten().tolist() == [0, 1, 127, 128, 191, 255, 255]
