import itertools
import os

import pytest
import torch

import ddpm_fast as df
from ddpm_fast.kernels import launch
from ddpm_fast.vocabulary import STREAM_REVERSE_STEP
from float64_reference import ddim_step64, p_step64, philox_noise64

PREDICTIONS = ["epsilon", "sample", "v_prediction"]
VARIANCES = ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned_range"]
MODEL_DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def test_kernels_really_run_under_the_interpreter():
    # CI runs these tests twice: with TRITON_INTERPRET=1 on the Triton kernels, with 0 on the torch references.
    if os.environ.get("TRITON_INTERPRET") == "1":
        assert launch.TRITON_INTERPRETED


def _inputs(device, shape, model_dtype, channels_last, learned=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, c = shape[0], shape[1]
    x_t = torch.randn(shape, generator=g) * 1.5
    model_shape = (b, 2 * c, *shape[2:]) if learned else shape
    model_output = torch.randn(model_shape, generator=g)
    if learned:
        model_output[:, c:] = torch.rand((b, c, *shape[2:]), generator=g) * 2 - 1  # v in [-1, 1]
    t = torch.randint(0, 1000, (b,), generator=g)
    t[0] = 0  # always cover the no-noise step
    x_t, model_output = x_t.to(device), model_output.to(device=device, dtype=model_dtype)
    if channels_last and len(shape) == 4:
        x_t = x_t.contiguous(memory_format=torch.channels_last)
        model_output = model_output.contiguous(memory_format=torch.channels_last)
    return x_t, model_output, t.to(device)


def _shape4(shape):
    return tuple(shape) + (1,) * (4 - len(shape)) if len(shape) != 3 else (shape[0], shape[1], 1, shape[2])


def _tolerance(model_dtype, prediction):
    # ε-prediction with x0 recovered at large t multiplies the output's rounding by 1/sqrt(ᾱ_t) ~ 150,
    # but the result then scales it back down; fp32 math leaves ~1e-5 absolute at worst.
    return dict(rtol=1e-5, atol=3e-5)


@pytest.mark.parametrize("prediction, variance, clip", list(itertools.product(PREDICTIONS, VARIANCES, [False, True])))
@pytest.mark.parametrize("noise_mode", ["given", "seed", "none"])
def test_p_step_every_option_vs_float64(device, prediction, variance, clip, noise_mode):
    s = df.NoiseSchedule.cosine(1000)
    shape = (3, 3, 7, 9)
    x_t, model_output, t = _inputs(device, shape, torch.float32, False, learned=variance == "learned_range")
    noise = torch.randn(shape, device=device) if noise_mode == "given" else None
    seed = 77 if noise_mode == "seed" else None
    if noise_mode == "none":
        # Noise-free: the posterior mean. Reach it through the op (the public function always adds noise).
        from ddpm_fast.kernels import PREDICTION_TYPES, VARIANCE_TYPES
        out = torch.ops.ddpm_fast.p_step(model_output, t, x_t, s.coefficient_table(device), None, None, 0,
                                         PREDICTION_TYPES[prediction], VARIANCE_TYPES[variance], clip, 0.8)
        z = None
    else:
        out = df.p_step(model_output, t, x_t, s, noise=noise, seed=seed, prediction_type=prediction,
                        variance_type=variance, clip_sample=clip, clip_sample_range=0.8)
        z = noise if noise is not None else philox_noise64(77, 3, t.cpu(), STREAM_REVERSE_STEP, shape, "cpu")
    assert out.dtype == torch.float32 and out.shape == shape
    expected = p_step64(model_output, t, x_t, s, z, prediction, variance, clip, 0.8)
    torch.testing.assert_close(out.double().cpu(), expected, **_tolerance(torch.float32, prediction))


@pytest.mark.parametrize("shape", [(3, 3, 7, 9), (1, 3, 32, 32), (2, 48, 3, 5), (2, 5), (2, 4, 13)])
@pytest.mark.parametrize("model_dtype", MODEL_DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("variance", ["fixed_small", "learned_range"])
def test_p_step_dtypes_layouts_shapes(device, shape, model_dtype, channels_last, variance):
    s = df.NoiseSchedule.linear(1000)
    x_t, model_output, t = _inputs(device, shape, model_dtype, channels_last, learned=variance == "learned_range")
    out = df.p_step(model_output, t, x_t, s, seed=5, variance_type=variance, prediction_type="v_prediction")
    if channels_last and len(shape) == 4:
        assert out.is_contiguous(memory_format=torch.channels_last)
    z = philox_noise64(5, shape[0], t.cpu(), STREAM_REVERSE_STEP, _shape4(shape), "cpu").view(shape)
    expected = p_step64(model_output, t, x_t, s, z, "v_prediction", variance)
    torch.testing.assert_close(out.double().cpu(), expected, rtol=1e-5, atol=3e-5)


def test_p_step_no_noise_at_t0_and_noise_scale(device):
    s = df.NoiseSchedule.linear(1000)
    x_t = torch.randn(4, 3, 5, 5, device=device)
    eps = torch.randn(4, 3, 5, 5, device=device)
    t = torch.tensor([0, 0, 10, 999], device=device)
    a = df.p_step(eps, t, x_t, s, seed=1)
    b = df.p_step(eps, t, x_t, s, seed=2)
    assert torch.equal(a[:2], b[:2])  # t = 0: the mean, whatever the noise
    assert not torch.equal(a[2:], b[2:])


def test_p_step_seeded_prefix_invariant_and_deterministic(device):
    s = df.NoiseSchedule.linear(1000)
    x_t, model_output, t = _inputs(device, (5, 3, 6, 6), torch.float32, False)
    full = df.p_step(model_output, t, x_t, s, seed=9)
    assert torch.equal(full, df.p_step(model_output, t, x_t, s, seed=9))
    assert torch.equal(full[:2], df.p_step(model_output[:2], t[:2], x_t[:2], s, seed=9))
    assert torch.equal(full[3:], df.p_step(model_output[3:], t[3:], x_t[3:], s, seed=9, sample_offset=3))


def test_p_step_empty_batch(device):
    s = df.NoiseSchedule.linear(10)
    x = torch.zeros(0, 3, 4, 4, device=device)
    out = df.p_step(x, torch.zeros(0, dtype=torch.long, device=device), x, s, seed=0)
    assert out.shape == (0, 3, 4, 4)
    out = df.ddim_step(x, torch.zeros(0, dtype=torch.long, device=device), -1, x, s, eta=1.0, seed=0)
    assert out.shape == (0, 3, 4, 4)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("eta, noise_mode", [(0.0, "none"), (0.5, "seed"), (1.0, "given")])
@pytest.mark.parametrize("clip", [False, True, "clipped_eps"])
@pytest.mark.parametrize("gap", [1, 20, "end"])
def test_ddim_step_vs_float64(device, prediction, eta, noise_mode, clip, gap):
    clipped_eps = clip == "clipped_eps"  # use_clipped_model_output: ε re-derived from the clipped x0
    clip = bool(clip)
    s = df.NoiseSchedule.linear(1000)
    shape = (3, 3, 7, 9)
    x_t, model_output, t = _inputs(device, shape, torch.float32, False)
    t = torch.tensor([1, 500, 999], device=device)
    t_prev = torch.full_like(t, -1) if gap == "end" else (t - gap).clamp(min=-1)
    noise = torch.randn(shape, device=device) if noise_mode == "given" else None
    out = df.ddim_step(model_output, t, t_prev, x_t, s, eta=eta, noise=noise,
                       seed=4 if noise_mode == "seed" else None, prediction_type=prediction, clip_sample=clip,
                       use_clipped_model_output=clipped_eps)
    z = noise if noise is not None else (
        philox_noise64(4, 3, t.cpu(), STREAM_REVERSE_STEP, shape, "cpu") if noise_mode == "seed" else None)
    expected = ddim_step64(model_output, t, t_prev, x_t, s, eta, z, prediction, clip,
                           use_clipped_model_output=clipped_eps)
    if clipped_eps and gap != "end":  # x0 reaches beyond the clip range, so the re-derived ε differs (at ᾱ = 1
        # the step is x0 alone)
        plain = ddim_step64(model_output, t, t_prev, x_t, s, eta, z, prediction, clip)
        assert (plain - expected).abs().max() > 1e-3
    torch.testing.assert_close(out.double().cpu(), expected, rtol=1e-5, atol=5e-5)


@pytest.mark.parametrize("model_dtype", MODEL_DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_ddim_step_dtypes_layouts_and_learned_variance_output(device, model_dtype, channels_last):
    s = df.NoiseSchedule.linear(1000)
    x_t, model_output, t = _inputs(device, (2, 3, 5, 7), model_dtype, channels_last, learned=True)
    out = df.ddim_step(model_output, t, t - 1, x_t, s, eta=0.0)
    expected = ddim_step64(model_output, t, t - 1, x_t, s, 0.0, None)
    torch.testing.assert_close(out.double().cpu(), expected, rtol=1e-5, atol=5e-5)


def test_ddim_eta1_adjacent_equals_ddpm_posterior(device):
    # With t_prev = t - 1 and η = 1, DDIM's σ is the DDPM posterior std and its mean the posterior mean.
    s = df.NoiseSchedule.linear(1000)
    x_t, eps, _ = _inputs(device, (2, 3, 4, 4), torch.float32, False)
    t = torch.tensor([5, 600], device=device)
    noise = torch.randn_like(x_t)
    ddim = df.ddim_step(eps, t, t - 1, x_t, s, eta=1.0, noise=noise)
    ddpm = df.p_step(eps, t, x_t, s, noise=noise)
    torch.testing.assert_close(ddim, ddpm, rtol=1e-4, atol=1e-4)


def test_unchecked_ops_clamp_out_of_range_timesteps(device):
    s = df.NoiseSchedule.linear(10)
    table = s.coefficient_table(device)
    x = torch.randn(2, 3, 4, 4, device=device)
    wild = torch.tensor([-50, 10**6], device=device)
    clamped = torch.tensor([0, 9], device=device)
    a = torch.ops.ddpm_fast.p_step(x, wild, x, table, None, None, 0, 0, 0, False, 1.0)
    b = torch.ops.ddpm_fast.p_step(x, clamped, x, table, None, None, 0, 0, 0, False, 1.0)
    assert torch.equal(a, b)


def test_p_step_op_compiles_fullgraph(device):
    s = df.NoiseSchedule.linear(100)
    table = s.coefficient_table(device)
    x = torch.randn(2, 3, 8, 8, device=device)
    t = torch.tensor([3, 70], device=device)
    seed = torch.tensor([5], device=device)

    def step(model_output, x, t, seed):
        return torch.ops.ddpm_fast.p_step(model_output * 0.5, t, x, table, None, seed, 0, 0, 0, True, 1.0)

    compiled = torch.compile(step, fullgraph=True)
    torch.testing.assert_close(compiled(x, x, t, seed), step(x, x, t, seed), rtol=1e-5, atol=1e-5)


def test_ops_read_broadcast_timesteps_without_copies(device):
    # Sampling loops pass `all_t[i].expand(B)` (stride 0); the kernels must read it as B equal timesteps.
    s = df.NoiseSchedule.linear(50)
    table, alphas64 = s.coefficient_table(device), s.buffers(device)["alphas_cumprod_float64"]
    buffers = s.buffers(device)
    x = torch.randn(3, 3, 4, 5, device=device)
    seed = torch.tensor([1], device=device)
    steps = torch.arange(50, device=device)
    broadcast, dense = steps[17].expand(3), torch.full((3,), 17, device=device)
    prev_broadcast, prev_dense = steps[4].expand(3), torch.full((3,), 4, device=device)
    ops = torch.ops.ddpm_fast
    assert torch.equal(ops.p_step(x, broadcast, x, table, None, seed, 0, 0, 0, False, 1.0),
                       ops.p_step(x, dense, x, table, None, seed, 0, 0, 0, False, 1.0))
    assert torch.equal(ops.ddim_step(x, broadcast, prev_broadcast, x, alphas64, None, seed, 0, 0, 1.0, False, 1.0),
                       ops.ddim_step(x, dense, prev_dense, x, alphas64, None, seed, 0, 0, 1.0, False, 1.0))
    rows = (buffers["sqrt_alphas_cumprod"], buffers["sqrt_one_minus_alphas_cumprod"])
    assert torch.equal(ops.q_sample(x, broadcast, *rows, x), ops.q_sample(x, dense, *rows, x))
    assert torch.equal(ops.philox_normal(seed, broadcast, [3, 3, 4, 5], 0, 2, False),
                       ops.philox_normal(seed, dense, [3, 3, 4, 5], 0, 2, False))


def test_unchecked_ops_refuse_launches_that_would_read_out_of_bounds(device):
    # The same metadata checks guard the torch-reference path, so behaviour does not depend on the device.
    s = df.NoiseSchedule.linear(10)
    table = s.coefficient_table(device)
    x = torch.randn(2, 3, 4, 4, device=device)
    ops = torch.ops.ddpm_fast
    with pytest.raises(ValueError, match="timesteps must be a \\[2\\] tensor"):
        ops.p_step(x, torch.tensor([1], device=device), x, table, None, None, 0, 0, 0, False, 1.0)
    with pytest.raises(ValueError, match="noise has shape"):
        ops.p_step(x, torch.tensor([1, 2], device=device), x, table, x[:, :2], None, 0, 0, 0, False, 1.0)
    with pytest.raises(ValueError, match="model_output has shape"):  # learned_range needs 2C channels
        ops.p_step(x, torch.tensor([1, 2], device=device), x, table, None, None, 0, 0, 2, False, 1.0)
    with pytest.raises(ValueError, match="model_output has shape"):
        ops.ddim_step(x[:, :, :3], torch.tensor([1, 2], device=device), torch.tensor([0, 1], device=device), x,
                      s.buffers(device)["alphas_cumprod_float64"], None, None, 0, 0, 0.0, False, 1.0)
    buffers = s.buffers(device)
    with pytest.raises(ValueError, match="noise has shape"):
        ops.q_sample(x, torch.tensor([1, 2], device=device), buffers["sqrt_alphas_cumprod"],
                     buffers["sqrt_one_minus_alphas_cumprod"], x[:1])


@pytest.mark.gpu
def test_p_step_replays_in_a_cuda_graph_with_a_device_timestep():
    # The sampler's pattern: static buffers, t updated in place on the device, one graph replayed per step.
    device = torch.device("cuda")
    s = df.NoiseSchedule.linear(1000)
    table = s.coefficient_table(device)
    x = torch.randn(4, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    eps = torch.randn_like(x).to(torch.bfloat16)
    t = torch.full((4,), 999, dtype=torch.int64, device=device)
    seed = torch.tensor([3], device=device)

    def step():
        return torch.ops.ddpm_fast.p_step(eps, t, x, table, None, seed, 0, 0, 0, False, 1.0)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # compile the kernel outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    for value in (999, 500, 1, 0):
        t.fill_(value)
        graph.replay()
        assert torch.equal(out, step())


@pytest.mark.gpu
def test_p_step_under_reduce_overhead_compile():
    device = torch.device("cuda")
    s = df.NoiseSchedule.linear(1000)
    table = s.coefficient_table(device)
    seed = torch.tensor([3], device=device)

    def step(eps, t, x):
        return torch.ops.ddpm_fast.p_step(eps, t, x, table, None, seed, 0, 0, 0, False, 1.0)

    compiled = torch.compile(step, mode="reduce-overhead", fullgraph=True)
    x = torch.randn(2, 3, 16, 16, device=device)
    eps = torch.randn_like(x)
    for value in (900, 10, 0):
        t = torch.full((2,), value, dtype=torch.int64, device=device)
        torch.testing.assert_close(compiled(eps, t, x).clone(), step(eps, t, x))


def test_unchecked_ops_refuse_bad_schedule_tables_and_seeds(device):
    s = df.NoiseSchedule.linear(10)
    table, buffers = s.coefficient_table(device), s.buffers(device)
    x = torch.randn(2, 3, 4, 4, device=device)
    t = torch.tensor([1, 2], device=device)
    seed = torch.tensor([1], device=device)
    ops = torch.ops.ddpm_fast
    for bad_table in (table[:1], table[:, ::2], table.double()):
        with pytest.raises(ValueError, match="table must be"):
            ops.p_step(x, t, x, bad_table, None, None, 0, 0, 0, False, 1.0)
    with pytest.raises(ValueError, match="seed must be"):
        ops.p_step(x, t, x, table, None, seed[:0], 0, 0, 0, False, 1.0)
    with pytest.raises(ValueError, match="alphas_cumprod must be"):
        ops.ddim_step(x, t, t - 1, x, buffers["alphas_cumprod"], None, None, 0, 0, 0.0, False, 1.0)
    with pytest.raises(ValueError, match="same length"):
        ops.q_sample(x, t, buffers["sqrt_alphas_cumprod"], buffers["sqrt_one_minus_alphas_cumprod"][:2], x)
    with pytest.raises(ValueError, match="seed must be"):
        ops.q_sample_philox(x, t, buffers["sqrt_alphas_cumprod"], buffers["sqrt_one_minus_alphas_cumprod"],
                            seed.float(), 0)
    with pytest.raises(ValueError, match="seed must be"):
        ops.philox_normal(seed[:0], t, [2, 3, 4, 4], 0, 2, False)


def test_public_steps_compile_fullgraph_with_changing_float_arguments(device):
    # A recompile makes eta / clip_sample_range symbolic floats; argument checks must still trace.
    s = df.NoiseSchedule.linear(100)
    x = torch.randn(2, 3, 4, 4, device=device)
    t = torch.tensor([50, 60], device=device)

    def ddim(eta):
        return df.ddim_step(x, t, t - 5, x, s, eta=eta, noise=x)

    def ddpm(clip_range):
        return df.p_step(x, t, x, s, noise=x, clip_sample=True, clip_sample_range=clip_range)

    compiled_ddim = torch.compile(ddim, fullgraph=True)
    compiled_ddpm = torch.compile(ddpm, fullgraph=True)
    for value in (0.3, 0.5, 0.7):
        torch.testing.assert_close(compiled_ddim(value), ddim(value), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(compiled_ddpm(value), ddpm(value), rtol=1e-5, atol=1e-5)
