import pytest
import torch

import ddpm_fast as df
from ddpm_fast.vocabulary import STREAM_Q_SAMPLE
from float64_reference import philox_noise64, q_sample64

SHAPES = [(3, 3, 7, 9), (1, 4, 8, 8), (2, 48, 3, 5), (4, 6), (2, 5, 11)]
DTYPE_TOLERANCE = {torch.float32: 2e-6, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def _make(shape, dtype, channels_last, device):
    x = torch.randn(shape).to(device=device, dtype=dtype) * 2 + 0.5
    if channels_last and len(shape) == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _timesteps(batch, device):
    return torch.randint(0, 1000, (batch,), device=device)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", list(DTYPE_TOLERANCE))
@pytest.mark.parametrize("channels_last", [False, True])
def test_q_sample_given_noise(device, shape, dtype, channels_last):
    s = df.NoiseSchedule.linear(1000)
    x0 = _make(shape, dtype, channels_last, device)
    noise = _make(shape, dtype, channels_last, device)
    t = _timesteps(shape[0], device)
    x_t, eps = df.q_sample(x0, t, s, noise=noise)
    assert eps is noise
    assert x_t.dtype == dtype and x_t.shape == x0.shape
    if channels_last and len(shape) == 4:
        assert x_t.is_contiguous(memory_format=torch.channels_last)
    expected = q_sample64(x0.cpu(), t.cpu(), s, noise.cpu())
    tol = DTYPE_TOLERANCE[dtype]
    torch.testing.assert_close(x_t.double().cpu(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", list(DTYPE_TOLERANCE))
@pytest.mark.parametrize("channels_last", [False, True])
def test_q_sample_draws_noise_in_kernel(device, shape, dtype, channels_last):
    s = df.NoiseSchedule.cosine(1000)
    x0 = _make(shape, dtype, channels_last, device)
    t = _timesteps(shape[0], device)
    x_t, eps = df.q_sample(x0, t, s, seed=99, sample_offset=3)
    assert eps.dtype == torch.float32 and eps.shape == x0.shape and x_t.dtype == dtype
    shape4 = tuple(shape) + (1,) * (4 - len(shape)) if len(shape) != 3 else (shape[0], shape[1], 1, shape[2])
    expected_eps = philox_noise64(99, shape[0], torch.zeros(shape[0], dtype=torch.int64), STREAM_Q_SAMPLE, shape4,
                                  "cpu", sample_offset=3).view(shape)
    torch.testing.assert_close(eps.double().cpu(), expected_eps, rtol=0, atol=2e-5)
    expected = q_sample64(x0.cpu(), t.cpu(), s, expected_eps)
    tol = DTYPE_TOLERANCE[dtype]
    torch.testing.assert_close(x_t.double().cpu(), expected, rtol=tol, atol=max(tol, 1e-5))


def test_q_sample_seeded_is_deterministic_and_prefix_invariant(device):
    s = df.NoiseSchedule.linear(1000)
    x0 = torch.randn(5, 3, 6, 6, device=device)
    t = _timesteps(5, device)
    a = df.q_sample(x0, t, s, seed=1)
    b = df.q_sample(x0, t, s, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    head = df.q_sample(x0[:2], t[:2], s, seed=1)
    assert torch.equal(head[1], a[1][:2]) and torch.equal(head[0], a[0][:2])
    assert not torch.equal(df.q_sample(x0, t, s, seed=2)[1], a[1])


def test_q_sample_scalar_t_and_empty_batch(device):
    s = df.NoiseSchedule.linear(10)
    x0 = torch.randn(2, 3, 4, 4, device=device)
    x_t, eps = df.q_sample(x0, 9, s, seed=0)
    torch.testing.assert_close(x_t.double().cpu(), q_sample64(x0.cpu(), torch.tensor([9, 9]), s, eps.cpu()))
    empty_t, empty_eps = df.q_sample(x0[:0], torch.zeros(0, dtype=torch.long, device=device), s, seed=0)
    assert empty_t.shape == (0, 3, 4, 4) and empty_eps.shape == (0, 3, 4, 4)


def test_q_sample_without_seed_follows_torch_manual_seed(device):
    s = df.NoiseSchedule.linear(100)
    x0 = torch.randn(2, 3, 4, 4, device=device)
    torch.manual_seed(11)
    a = df.q_sample(x0, 5, s)
    torch.manual_seed(11)
    b = df.q_sample(x0, 5, s)
    assert torch.equal(a[1], b[1])


def test_q_sample_gradients(device):
    s = df.NoiseSchedule.linear(50)
    x0 = torch.randn(3, 2, 5, 5, device=device, requires_grad=True)
    noise = torch.randn(3, 2, 5, 5, device=device, requires_grad=True)
    t = torch.tensor([0, 20, 49], device=device)
    x_t, _ = df.q_sample(x0, t, s, noise=noise)
    x_t.square().sum().backward()
    sa = s.sqrt_alphas_cumprod[t.cpu()].float().view(-1, 1, 1, 1).to(device)
    s1 = s.sqrt_one_minus_alphas_cumprod[t.cpu()].float().view(-1, 1, 1, 1).to(device)
    torch.testing.assert_close(x0.grad, 2 * x_t.detach() * sa)
    torch.testing.assert_close(noise.grad, 2 * x_t.detach() * s1)
    x0.grad = None
    x_t, eps = df.q_sample(x0, t, s, seed=3)
    x_t.sum().backward()
    torch.testing.assert_close(x0.grad, sa.expand_as(x0))


def test_q_sample_op_compiles_fullgraph(device):
    s = df.NoiseSchedule.linear(100)
    buffers = s.buffers(device)
    x0 = torch.randn(2, 3, 8, 8, device=device)
    t = torch.tensor([3, 70], device=device)
    seed = torch.tensor([5], device=device)

    def step(x0, t, seed):
        x_t, eps = torch.ops.ddpm_fast.q_sample_philox(
            x0, t, buffers["sqrt_alphas_cumprod"], buffers["sqrt_one_minus_alphas_cumprod"], seed, 0)
        return (x_t - eps).square().mean()

    compiled = torch.compile(step, fullgraph=True)
    torch.testing.assert_close(compiled(x0, t, seed), step(x0, t, seed), rtol=1e-5, atol=1e-6)
