"""SiT transport numerics against the official code's numbers (SiT's transport/: path coefficients,
conversions, losses, sampling intervals, Euler steps)."""

import math

import pytest
import torch
import torch.nn as nn

from ditlab.objectives.flow import FlowObjective
from ditlab.objectives.paths import build_path
from ditlab.samplers.flow import EulerSampler, HeunSampler
from ditlab.samplers.guidance import GuidedModel

T = torch.tensor([0.25, 0.5, 0.9])


def close(actual, expected, rtol=1e-6, atol=1e-6):
    torch.testing.assert_close(
        actual, torch.tensor(expected, dtype=actual.dtype).expand_as(actual), rtol=rtol, atol=atol
    )


@pytest.mark.parametrize(
    "path,alpha,d_alpha,sigma,d_sigma,ratio,g2",
    [
        (
            "linear",
            [0.25, 0.5, 0.9],
            [1, 1, 1],
            [0.75, 0.5, 0.1],
            [-1, -1, -1],
            [4, 2, 1.1111112],
            [3.0, 1.0, 0.11111114],
        ),
        (
            "gvp",
            [0.38268346, 0.70710677, 0.98768836],
            [1.45122659, 1.11072075, 0.24572673],
            [0.92387950, 0.70710677, 0.15643449],
            [-0.60111779, -1.11072075, -1.55145729],
            [3.79223776, 1.57079637, 0.24878973],
            [3.79223776, 1.57079637, 0.24878973],
        ),
        (
            "vp",
            [0.05866352, 0.28118289, 0.94672179],
            [0.44070965, 1.41294408, 0.98932445],
            [0.99827778, 0.95965415, 0.32205257],
            [-0.02589818, -0.41399881, -2.90826750],
            [7.5125, 5.025, 1.045],
            [7.5125, 5.025, 1.045],
        ),
    ],
)
def test_path_coefficients(path, alpha, d_alpha, sigma, d_sigma, ratio, g2):
    p = build_path(path)
    a, da = p.alpha(T)
    s, ds = p.sigma(T)
    for got, want in ((a, alpha), (da, d_alpha), (s, sigma), (ds, d_sigma), (p.d_alpha_alpha_ratio(T), ratio)):
        close(got, want)
    drift_mean, drift_var = p.drift(torch.ones(3), T)
    close(drift_var, g2, rtol=1e-5)
    close(drift_mean, [-r for r in ratio], rtol=1e-5)  # (−f·x, g²/2) at x = 1


@pytest.mark.parametrize(
    "path,score,noise",
    [
        ("linear", [-0.83333331, -1.09999990, -4.29999876], [0.625, 0.55, 0.43]),
        ("gvp", [-0.62089103, -0.50901413, 0.50583750], None),
        ("vp", [-0.66006660, -0.64029855, -0.41291869], None),
    ],
)
def test_conversions_from_velocity(path, score, noise):
    p = build_path(path)
    v, x = torch.full((3,), 0.3), torch.full((3,), 0.7)
    s = p.score_from_velocity(v, x, T)
    close(s, score, rtol=1e-5)
    if noise is not None:
        close(p.noise_from_velocity(v, x, T), noise, rtol=1e-5)
    # ... and back: the score-form drift recovers the velocity.
    close(p.velocity_from_score(s, x, T), [0.3] * 3, rtol=1e-5)


@pytest.mark.parametrize(
    "path,x_t,u_t",
    [
        ("linear", [-0.7, 0.35, 0.38000005], [1.2, -0.3, -1.8]),
        ("gvp", [-0.84734279, 0.49497473, 0.51040667], [0.89136314, -0.33321622, -3.05376911]),
        ("vp", [-0.98654509, 0.53606367, 0.83344948], [0.11404011, 0.07558940, -5.61866999]),
    ],
)
def test_plan(path, x_t, u_t):
    got_x, got_u = build_path(path).plan(T, noise=torch.tensor([-1.0, 0.5, 2.0]), data=torch.full((3,), 0.2))
    close(got_x, x_t, rtol=1e-5)
    close(got_u, u_t, rtol=1e-5)


@pytest.mark.parametrize(
    "path,prediction,weight,expected",
    [
        ("linear", "velocity", None, [2.519803524, 1.874094009]),
        ("gvp", "velocity", None, [2.018344879, 1.311414361]),
        ("vp", "velocity", None, [0.292488277, 0.340885073]),
        ("linear", "noise", None, [0.378462940, 0.472486079]),
        ("linear", "score", "velocity", [46.21905518, 28.83202171]),
        ("linear", "score", "likelihood", [9.910066605, 10.679805756]),
    ],
)
def test_rng_ordered_loss(path, prediction, weight, expected):
    torch.manual_seed(0)
    x1 = torch.sin(0.3 * torch.arange(32.0)).reshape(2, 4, 2, 2)
    seen = {}

    def model(x, t):
        seen["t"], seen["x"] = t, x
        return 0.5 * x + t.view(-1, 1, 1, 1)

    loss = FlowObjective(path=path, prediction=prediction, loss_weight=weight).loss(model, x1, {})["loss"]
    torch.testing.assert_close(loss, torch.tensor(expected), rtol=1e-6, atol=0)
    if (path, prediction) == ("linear", "velocity"):  # the draws: noise first, then t; t reaches the model as is
        close(seen["t"], [0.17591017, 0.26983356])
        noise_00 = (seen["x"][0, 0] - 0.17591017 * x1[0, 0]) / (1 - 0.17591017)  # x_t = t·data + (1 − t)·noise
        close(noise_00.flatten(), [-1.12583983, -1.15236020, -0.25057858, -0.43387881], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "path,prediction,train,ode",
    [
        ("linear", "velocity", (0, 1), (0, 1)),
        ("gvp", "velocity", (0, 1), (0, 1)),
        ("linear", "noise", (0.001, 0.999), (0.001, 0.999)),
        ("gvp", "score", (0.001, 0.999), (0.001, 0.999)),
        ("vp", "velocity", (0, 0.99999), (0, 0.999)),
        ("vp", "noise", (0, 0.99999), (0, 0.999)),
    ],
)
def test_interval_table(path, prediction, train, ode):
    objective = FlowObjective(path=path, prediction=prediction)
    assert objective.interval(eval=False) == pytest.approx(train)
    assert objective.interval(eval=True) == pytest.approx(ode)
    t = objective.sample_t(10_000)
    assert train[0] <= t.min() and t.max() <= train[1]


class ToyDrift(nn.Module):
    """v(x, t) = −x + t; records where it was evaluated."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, y):
        self.calls.append((float(t[0]), float(x.flatten()[0])))
        return -x + t.view(-1, 1)


def test_euler_ode_semantics():
    # torchdiffeq `euler` on linspace(0, 1, 5): trajectory [1.0, 0.75, 0.625, 0.59375, 0.6328125].
    model = ToyDrift()
    guided = GuidedModel(model, pred_channels=1, null_label=0)
    x = EulerSampler(steps=4).sample(guided, FlowObjective(), torch.ones(1, 1), torch.zeros(1, dtype=torch.long), None)
    assert [t for t, _ in model.calls] == [0.0, 0.25, 0.5, 0.75]
    assert [x for _, x in model.calls] == [1.0, 0.75, 0.625, 0.59375]
    assert x.item() == 0.6328125 and guided.nfe == 4


def test_heun_is_second_order_and_skips_the_last_corrector():
    exact = 2 / math.e  # x(1) of x' = −x + t, x(0) = 1
    errors = {}
    for steps in (4, 8):
        model = ToyDrift()
        guided = GuidedModel(model, pred_channels=1, null_label=0)
        sampler = HeunSampler(steps=steps, correct_last_step=True)
        x = sampler.sample(guided, FlowObjective(), torch.ones(1, 1), torch.zeros(1, dtype=torch.long), None)
        errors[steps] = abs(x.item() - exact)
        assert guided.nfe == 2 * steps == sampler.model_calls()
    assert errors[4] < 0.01 and 3.5 < errors[4] / errors[8] < 4.5  # halving the step quarters the error
    guided = GuidedModel(ToyDrift(), pred_channels=1, null_label=0)
    HeunSampler(steps=4).sample(guided, FlowObjective(), torch.ones(1, 1), torch.zeros(1, dtype=torch.long), None)
    assert guided.nfe == 7  # 2 per step, 1 on the last
