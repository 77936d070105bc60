import math

import numpy as np
import pytest
import torch

import ddpm_fast as df
from ddpm_fast.kernels import COEFFICIENT_ROWS

# Left to the TRITON_INTERPRET=0 run (tests/conftest.py checks no test here reaches a kernel): the schedule's float64
# math: no kernel.
pytestmark = pytest.mark.torch_references

diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("make", [
    lambda: df.NoiseSchedule.linear(1000),
    lambda: df.NoiseSchedule.scaled_linear(1000),
    lambda: df.NoiseSchedule.cosine(1000),
    lambda: df.NoiseSchedule.sigmoid(1000),
    lambda: df.NoiseSchedule.from_betas([0.1, 0.2, 0.3]),
    lambda: df.NoiseSchedule.linear(1),
])
def test_derived_quantities_match_their_definitions(make):
    s = make()
    b = s.betas
    assert b.dtype == torch.float64
    a = torch.tensor(np.cumprod(1 - b.numpy()))
    a_prev = torch.cat([torch.ones(1, dtype=torch.float64), a[:-1]])
    torch.testing.assert_close(s.alphas_cumprod, a, rtol=1e-12, atol=0)
    torch.testing.assert_close(s.alphas_cumprod_prev, a_prev, rtol=1e-12, atol=0)
    torch.testing.assert_close(s.one_minus_alphas_cumprod, 1 - a, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(s.sqrt_recipm1_alphas_cumprod, (1 / a - 1).sqrt(), rtol=1e-9, atol=0)
    torch.testing.assert_close(s.posterior_variance, b * (1 - a_prev) / (1 - a), rtol=1e-9, atol=0)
    torch.testing.assert_close(s.posterior_mean_coef1, b * a_prev.sqrt() / (1 - a), rtol=1e-9, atol=0)
    torch.testing.assert_close(s.posterior_mean_coef2, (1 - a_prev) * (1 - b).sqrt() / (1 - a), rtol=1e-9, atol=0)
    assert torch.isfinite(s.posterior_log_variance_clipped).all()
    assert s.posterior_variance[0] == 0


def test_linear_endpoints_and_cosine_cap():
    s = df.NoiseSchedule.linear(1000)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    c = df.NoiseSchedule.cosine(1000)
    assert c.betas.max().item() <= 0.999
    expected = math.cos((0.5 + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    assert c.alphas_cumprod[499].item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("config", [
    dict(beta_schedule="linear"),
    dict(beta_schedule="linear", beta_start=0.0002, beta_end=0.03, num_train_timesteps=500),
    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    dict(beta_schedule="squaredcos_cap_v2"),
    dict(beta_schedule="sigmoid"),
    dict(trained_betas=[0.01, 0.02, 0.05, 0.1], num_train_timesteps=4),
])
def test_from_diffusers_matches_diffusers_alphas_cumprod(config):
    scheduler = diffusers.DDPMScheduler(**config)
    for source in (scheduler, dict(scheduler.config)):
        s = df.NoiseSchedule.from_diffusers(source)
        assert len(s) == scheduler.config.num_train_timesteps
        torch.testing.assert_close(s.betas.float(), scheduler.betas, rtol=0, atol=0)
        # Theirs is a float32 cumprod, ours float64: equal to float32 accumulation error.
        torch.testing.assert_close(s.alphas_cumprod.float(), scheduler.alphas_cumprod, rtol=2e-5, atol=1e-7)


def test_from_diffusers_rejects_what_it_cannot_represent():
    with pytest.raises(ValueError, match="beta_schedule"):
        df.NoiseSchedule.from_diffusers({"beta_schedule": "exponential"})
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        df.NoiseSchedule.from_diffusers({"rescale_betas_zero_snr": True})
    with pytest.raises(TypeError, match="scheduler_or_config"):
        df.NoiseSchedule.from_diffusers(42)


@pytest.mark.parametrize("betas, match", [
    ([0.1, 0.0, 0.2], "between 0 and 1"),
    ([0.1, -0.1], "between 0 and 1"),
    ([0.5, 1.0], "between 0 and 1"),
    ([0.1, float("nan")], "NaN"),
    ([], "at least one"),
    ([[0.1, 0.2]], "1-D"),
])
def test_invalid_betas(betas, match):
    with pytest.raises(ValueError, match=match):
        df.NoiseSchedule.from_betas(betas)


def test_invalid_num_timesteps():
    for maker in (df.NoiseSchedule.linear, df.NoiseSchedule.cosine, df.NoiseSchedule.sigmoid,
                  df.NoiseSchedule.scaled_linear):
        with pytest.raises(ValueError, match="num_timesteps"):
            maker(0)
        with pytest.raises(TypeError, match="num_timesteps"):
            maker(10.0)
    with pytest.raises(TypeError, match="betas"):
        df.NoiseSchedule.from_betas("0.1")


def test_device_buffers_are_float32_and_cached():
    s = df.NoiseSchedule.linear(100)
    first = s.buffers("cpu")
    assert first is s.buffers(torch.device("cpu"))
    for name, value in first.items():
        assert value.dtype == (torch.float64 if name == "alphas_cumprod_float64" else torch.float32), name
    table = s.coefficient_table()
    assert table.shape == (len(COEFFICIENT_ROWS), 100)
    for i, name in enumerate(COEFFICIENT_ROWS):
        torch.testing.assert_close(table[i], getattr(s, name).float())
    # float32 ᾱ near t = 0 must not round to 1 in a way that zeroes 1 - ᾱ.
    assert (first["one_minus_alphas_cumprod"] > 0).all()
