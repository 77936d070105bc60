"""Classifier-free guidance fused into the reverse steps: p_step / ddim_step with guidance_scale against a float64
statement of u + w·(c − u) followed by the unguided step, every prediction type, layouts and model dtypes."""

import itertools

import pytest
import torch

import ddpm_fast as df
from ddpm_fast.vocabulary import STREAM_REVERSE_STEP
from float64_reference import ddim_step64, p_step64, philox_noise64

PREDICTIONS = ["epsilon", "sample", "v_prediction"]


def _guided_inputs(device, shape, model_dtype=torch.float32, channels_last=False, learned=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, c = shape[0], shape[1]
    x_t = torch.randn(shape, generator=g) * 1.5
    output = torch.randn((2 * b, 2 * c if learned else c, *shape[2:]), generator=g)
    if learned:
        output[:, c:] = torch.rand((2 * b, c, *shape[2:]), generator=g) * 2 - 1
    t = torch.randint(0, 1000, (b,), generator=g)
    t[0] = 0
    x_t, output = x_t.to(device), output.to(device=device, dtype=model_dtype)
    if channels_last:
        x_t, output = (v.contiguous(memory_format=torch.channels_last) for v in (x_t, output))
    return x_t, output, t.to(device)


def _combined64(output, batch, channels, w):
    """u + w·(c − u) in float64 on the prediction channels; the variance channels of the conditional half."""
    output = output.double().cpu()
    cond, uncond = output[:batch], output[batch:]
    mean = uncond[:, :channels] + w * (cond[:, :channels] - uncond[:, :channels])
    return torch.cat([mean, cond[:, channels:]], dim=1)


@pytest.mark.parametrize("prediction, variance, clip", list(itertools.product(
    PREDICTIONS, ["fixed_small", "fixed_large", "learned_range"], [False, True])))
def test_guided_p_step_vs_float64(device, prediction, variance, clip):
    s = df.NoiseSchedule.cosine(1000)
    shape = (3, 3, 5, 7)
    x_t, output, t = _guided_inputs(device, shape, learned=variance == "learned_range")
    w = 3.5
    out = df.p_step(output, t, x_t, s, seed=11, prediction_type=prediction, variance_type=variance,
                    clip_sample=clip, clip_sample_range=0.9, guidance_scale=w)
    z = philox_noise64(11, 3, t.cpu(), STREAM_REVERSE_STEP, shape, "cpu")
    expected = p_step64(_combined64(output, 3, 3, w), t, x_t, s, z, prediction, variance, clip, 0.9)
    torch.testing.assert_close(out.double().cpu(), expected, rtol=1e-5, atol=5e-5)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_guided_ddim_step_vs_float64(device, prediction, eta):
    s = df.NoiseSchedule.linear(1000)
    shape = (3, 3, 5, 7)
    x_t, output, _ = _guided_inputs(device, shape, learned=True)
    t = torch.tensor([1, 500, 999], device=device)
    t_prev = torch.tensor([-1, 480, 900], device=device)
    out = df.ddim_step(output, t, t_prev, x_t, s, eta=eta, seed=2, prediction_type=prediction, guidance_scale=-0.5)
    z = philox_noise64(2, 3, t.cpu(), STREAM_REVERSE_STEP, shape, "cpu") if eta else None
    expected = ddim_step64(_combined64(output, 3, 3, -0.5), t, t_prev, x_t, s, eta, z, prediction)
    torch.testing.assert_close(out.double().cpu(), expected, rtol=1e-5, atol=5e-5)


@pytest.mark.parametrize("model_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_guided_steps_dtypes_and_layouts(device, model_dtype, channels_last):
    s = df.NoiseSchedule.linear(1000)
    shape = (2, 4, 6, 5)
    x_t, output, t = _guided_inputs(device, shape, model_dtype, channels_last, learned=True)
    out = df.p_step(output, t, x_t, s, seed=5, variance_type="learned_range", guidance_scale=2.0)
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)
    z = philox_noise64(5, 2, t.cpu(), STREAM_REVERSE_STEP, shape, "cpu")
    expected = p_step64(_combined64(output, 2, 4, 2.0), t, x_t, s, z, "epsilon", "learned_range")
    torch.testing.assert_close(out.double().cpu(), expected, rtol=1e-5, atol=5e-5)
    out = df.ddim_step(output, t.clamp(min=1), t.clamp(min=1) - 1, x_t, s, guidance_scale=2.0)
    expected = ddim_step64(_combined64(output, 2, 4, 2.0), t.clamp(min=1), t.clamp(min=1) - 1, x_t, s, 0.0, None)
    torch.testing.assert_close(out.double().cpu(), expected, rtol=1e-5, atol=5e-5)


def test_guidance_scale_one_and_zero_pick_a_half(device):
    # w = 1 is the conditional prediction, w = 0 the unconditional one (up to float32 rounding of u + w·(c − u)).
    s = df.NoiseSchedule.linear(1000)
    x_t, output, t = _guided_inputs(device, (3, 3, 4, 4))
    for w, half in ((1.0, output[:3]), (0.0, output[3:])):
        guided = df.p_step(output, t, x_t, s, seed=1, guidance_scale=w)
        torch.testing.assert_close(guided, df.p_step(half, t, x_t, s, seed=1), rtol=1e-6, atol=1e-6)


def test_guidance_scale_zero_with_a_learned_variance_keeps_the_conditional_variance(device):
    """w = 0 takes the unconditional half's prediction (the mean) and, as diffusers' guided pipelines do, the
    conditional half's variance: the documented meaning of "0 gives the unconditional prediction", pinned."""
    s = df.NoiseSchedule.linear(1000)
    b, c = 3, 3
    x_t, output, t = _guided_inputs(device, (b, c, 4, 4), learned=True)
    cond, uncond = output[:b], output[b:]
    guided = df.p_step(output, t, x_t, s, seed=1, variance_type="learned_range", guidance_scale=0.0)
    mixed = torch.cat([uncond[:, :c], cond[:, c:]], dim=1)  # the unconditional mean, the conditional variance
    torch.testing.assert_close(guided, df.p_step(mixed, t, x_t, s, seed=1, variance_type="learned_range"),
                               rtol=1e-6, atol=1e-6)
    unconditional = df.p_step(uncond, t, x_t, s, seed=1, variance_type="learned_range")
    assert not torch.allclose(guided[1:], unconditional[1:], rtol=1e-4, atol=1e-4)  # t > 0: the variance differs


def test_guided_step_prefix_invariant(device):
    s = df.NoiseSchedule.linear(1000)
    x_t, output, t = _guided_inputs(device, (4, 3, 4, 4))
    full = df.p_step(output, t, x_t, s, seed=9, guidance_scale=4.0)
    part = torch.cat([output[:2], output[4:6]])  # the first two samples' conditional and unconditional outputs
    assert torch.equal(full[:2], df.p_step(part, t[:2], x_t[:2], s, seed=9, guidance_scale=4.0))


def test_guidance_argument_errors():
    s = df.NoiseSchedule.linear(10)
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="guidance_scale.*4 samples"):
        df.p_step(x, 3, x, s, seed=0, guidance_scale=2.0)
    with pytest.raises(TypeError, match="guidance_scale"):
        df.p_step(torch.zeros(4, 3, 4, 4), 3, x, s, seed=0, guidance_scale="2")
    with pytest.raises(ValueError, match="guidance_scale must be finite"):
        df.ddim_step(torch.zeros(4, 3, 4, 4), 3, 2, x, s, guidance_scale=float("nan"))
    with pytest.raises(ValueError, match="model_output"):
        df.ddim_step(torch.zeros(4, 3, 4, 5), 3, 2, x, s, guidance_scale=2.0)
