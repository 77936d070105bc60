"""`latents=`: FastSampler.sample and OnnxSampler.sample start the chain from a given x_T, as diffusers' pipelines do.

(1) Bad latents are TypeError / ValueError naming `latents`, raised before any step (or compile) runs.
(2) The x_T that seed= (or generator=) draws, passed as latents, gives the same images bit for bit; the caller's
    tensor is left as it was, and the cached runner (static buffers, graphs) is the one a seeded call uses.
(3) diffusers' own scheduler full-loop fixtures (tests/schedulers/test_scheduler_ddpm.py, test_scheduler_ddim.py,
    test_scheduler_dpm_multi.py, test_scheduler_unipc.py in huggingface/diffusers; the UniPC file's 1-D variants
    need a [B, C, W] sample, which FastSampler's (C, H, W) sample_shape does not take): their dummy model `sample * t / (t + 1)`, their
    deterministic `dummy_sample_deter` passed as latents, `torch.manual_seed(0)` where they pass a generator, the
    scheduler configs of those files, and their hard-coded sums and means with their tolerances (1e-2 on the sum of
    |x|, 1e-3 on the mean).

The 1000-step DDPM chains run on the kernels' torch references (cpu_reference): under the Triton interpreter each
would take ~45 s. The 10-step DDIM and DPM-Solver++ chains, the rule tests and the errors run the kernels under the
interpreter (TRITON_INTERPRET=1, the suite's default) and the references (TRITON_INTERPRET=0, the CPU user's path).

FastSampler clamps its images to [-1, 1] and diffusers' loops do not; every fixture reproduced here stays inside
[-1, 1] (asserted), so the clamp changes none of them.
"""

import contextlib

import pytest
import torch
from torch import nn

import ddpm_fast as df
from ddpm_fast.diffusion import seed_tensor
from ddpm_fast.kernels import cpu_reference
from ddpm_fast.vocabulary import STREAM_INITIAL
from ddpm_fast.sampling.chain import initial_sample
from float64_reference import p_step64, q_sample64

SHAPE = (3, 8, 8)  # dummy_sample_deter's [4, 3, 8, 8]
BATCH = 4


# ------------------------------------------------------------------------------------ diffusers' test fixtures

def dummy_sample_deter(flip: bool = False) -> torch.Tensor:
    """diffusers' SchedulerCommonTest.dummy_sample_deter (flip=True: its dummy_noise_deter): 0, 1/768, ... laid out
    as [C, H, W, B], then moved to [B, C, H, W]."""
    count = BATCH * SHAPE[0] * SHAPE[1] * SHAPE[2]
    values = torch.arange(count)
    if flip:
        values = values.flip(-1)
    return (values.reshape(*SHAPE, BATCH) / count).permute(3, 0, 1, 2)


def dummy_model(sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """diffusers' SchedulerCommonTest.dummy_model, for a tensor t (ours: int64 [B])."""
    t = t.reshape(-1, *(1,) * (sample.dim() - 1)).to(sample.device).to(sample.dtype)
    return sample * t / (t + 1)


class DummyModule(nn.Module):
    """The same model as a module, for export_onnx."""

    def forward(self, sample, t):
        return dummy_model(sample, t)


LINEAR = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear")
DDPM_CONFIG = dict(LINEAR, variance_type="fixed_small", clip_sample=True)  # DDPMSchedulerTest.get_scheduler_config
DDIM_CONFIG = dict(LINEAR, clip_sample=True)  # DDIMSchedulerTest.get_scheduler_config
# DDIMScheduler's defaults the DDIM fixtures run with (DDPMScheduler's full loop visits every timestep, so spacing
# does not matter there).
DDIM_DEFAULTS = dict(timestep_spacing="leading", steps_offset=0, set_alpha_to_one=True)


def fast_sampler(config: dict, prediction_type: str = "epsilon", **options) -> df.FastSampler:
    """FastSampler from a diffusers scheduler config: its β, clipping and types, the dummy model, compile=False."""
    return df.FastSampler(dummy_model, df.NoiseSchedule.from_diffusers(config), SHAPE, compile=False,
                          prediction_type=prediction_type, variance_type=config.get("variance_type") or "fixed_small",
                          clip_sample=config.get("clip_sample", False), **options)


def noised(config: dict, t: int) -> torch.Tensor:
    """scheduler.add_noise(dummy_sample_deter, dummy_noise_deter, t), as the *_with_noise fixtures start."""
    x_t, _ = df.q_sample(dummy_sample_deter(), torch.full((BATCH,), t), df.NoiseSchedule.from_diffusers(config),
                         noise=dummy_sample_deter(flip=True))
    return x_t


def sum_and_mean(images: torch.Tensor) -> tuple[float, float]:
    assert images.shape == (BATCH, *SHAPE) and images.dtype == torch.float32
    assert images.abs().max() <= 1.0  # inside the clamp: the clamped images are diffusers' loop output
    return images.abs().sum().item(), images.abs().mean().item()


# UniPCMultistepSchedulerTest.get_scheduler_config's options beyond LINEAR (its solver_order 2 and solver_type bh2 are
# the defaults), and its full_loop's chain.
UNIPC_OPTIONS = dict(final_sigmas_type="sigma_min")
UNIPC_ARGUMENTS = dict(method="unipc", num_inference_steps=10)
# (name in diffusers' test file, scheduler config, sampler options, sample() arguments, latents, sum, mean);
# sum None: that test asserts the mean only.
FIXTURES = [
    ("DDPMSchedulerTest.test_full_loop_no_noise", DDPM_CONFIG, {}, dict(method="ddpm", generator=True), None,
     258.9606, 0.3372),
    ("DDPMSchedulerTest.test_full_loop_with_v_prediction", DDPM_CONFIG, dict(prediction_type="v_prediction"),
     dict(method="ddpm", generator=True), None, 202.0296, 0.2631),
    ("DDIMSchedulerTest.test_full_loop_no_noise", DDIM_CONFIG, DDIM_DEFAULTS,
     dict(method="ddim", num_inference_steps=10, eta=0.0), None, 172.0067, 0.223967),
    ("DDIMSchedulerTest.test_full_loop_with_v_prediction", DDIM_CONFIG,
     dict(DDIM_DEFAULTS, prediction_type="v_prediction"), dict(method="ddim", num_inference_steps=10, eta=0.0), None,
     52.5302, 0.0684),
    # "We specify different beta, so that the first alpha is 0.99"
    ("DDIMSchedulerTest.test_full_loop_with_set_alpha_to_one", dict(DDIM_CONFIG, beta_start=0.01), DDIM_DEFAULTS,
     dict(method="ddim", num_inference_steps=10, eta=0.0), None, 149.8295, 0.1951),
    ("DDIMSchedulerTest.test_full_loop_with_no_set_alpha_to_one", dict(DDIM_CONFIG, beta_start=0.01),
     dict(DDIM_DEFAULTS, set_alpha_to_one=False), dict(method="ddim", num_inference_steps=10, eta=0.0), None,
     149.0784, 0.1941),
    # t_start = 8 of 10 leading timesteps: the chain [100, 0] from add_noise(x0, noise, 100)
    ("DDIMSchedulerTest.test_full_loop_with_noise", DDIM_CONFIG, DDIM_DEFAULTS,
     dict(method="ddim", timesteps=[100, 0], eta=0.0), 100, 354.5418, 0.4616),
    # UniPCMultistepSchedulerTest (test_scheduler_unipc.py): order 2, bh2, ending at σ_min, 10 linspace steps
    ("UniPCMultistepSchedulerTest.test_full_loop_no_noise", LINEAR, UNIPC_OPTIONS, UNIPC_ARGUMENTS, None, None,
     0.2464),
    ("UniPCMultistepSchedulerTest.test_full_loop_with_karras", LINEAR, dict(UNIPC_OPTIONS, use_karras_sigmas=True),
     UNIPC_ARGUMENTS, None, None, 0.2925),
    ("UniPCMultistepSchedulerTest.test_full_loop_with_v_prediction", LINEAR,
     dict(UNIPC_OPTIONS, prediction_type="v_prediction"), UNIPC_ARGUMENTS, None, None, 0.1014),
    ("UniPCMultistepSchedulerTest.test_full_loop_with_karras_and_v_prediction", LINEAR,
     dict(UNIPC_OPTIONS, prediction_type="v_prediction", use_karras_sigmas=True), UNIPC_ARGUMENTS, None, None,
     0.1966),
    # t_start = 8 of 10 linspace timesteps: the chain [200, 100] (then σ_min) from add_noise(x0, noise, 200)
    ("UniPCMultistepSchedulerTest.test_full_loop_with_noise", LINEAR, UNIPC_OPTIONS,
     dict(method="unipc", timesteps=[200, 100]), 200, 315.5757, 0.4109),
]


@pytest.mark.parametrize("name, config, options, arguments, noised_at, expected_sum, expected_mean", FIXTURES,
                         ids=[fixture[0] for fixture in FIXTURES])
def test_diffusers_full_loop_fixtures(name, config, options, arguments, noised_at, expected_sum, expected_mean):
    """FastSampler with latents=dummy_sample_deter (or its add_noise) gives diffusers' hard-coded full-loop numbers,
    with their tolerances; on the Triton kernels under the interpreter and on the torch references alike."""
    arguments = dict(arguments)
    if arguments.pop("generator", False):  # as diffusers' loop: generator = torch.manual_seed(0)
        arguments["generator"] = torch.manual_seed(0)
    latents = dummy_sample_deter() if noised_at is None else noised(config, noised_at)
    full_chain = arguments["method"] == "ddpm"
    with cpu_reference() if full_chain else contextlib.nullcontext():
        images = fast_sampler(config, **options).sample(BATCH, latents=latents, **arguments)
    result_sum, result_mean = sum_and_mean(images)
    if expected_sum is not None:
        assert abs(result_sum - expected_sum) < 1e-2, (name, result_sum)
    assert abs(result_mean - expected_mean) < 1e-3, (name, result_mean)


def test_ddpm_full_loop_with_noise_is_float64_exact_where_diffusers_rounds():
    """DDPMSchedulerTest.test_full_loop_with_noise (add_noise at t = 1, then steps t = 1 and 0 with
    generator = torch.manual_seed(0)) asserts sum 387.9466 ± 1e-2 and mean 0.5051 ± 1e-3. Ours gives the mean and a
    sum of 387.9673: 0.021 from theirs. The gap is diffusers' float32 arithmetic, not a different chain: at t = 1,
    1 − ᾱ_1 ≈ 2.2e-4 cancels in float32 (1.5e-4 relative error), and so do its posterior coefficients; the same two
    steps in float64 (the same noise) sum to 387.9673, and ours stays within 1e-5 of them element by element where
    diffusers' loop (run here too) is off by 5e-5. So the mean is asserted against the fixture, the sum against
    float64, and diffusers' own loop against its fixture."""
    latents = noised(DDPM_CONFIG, 1)
    images = fast_sampler(DDPM_CONFIG).sample(BATCH, latents=latents, timesteps=[1, 0],
                                              generator=torch.manual_seed(0))
    result_sum, result_mean = sum_and_mean(images)
    assert abs(result_mean - 0.5051) < 1e-3
    schedule = df.NoiseSchedule.from_diffusers(DDPM_CONFIG)
    x = q_sample64(dummy_sample_deter(), torch.full((BATCH,), 1), schedule, dummy_sample_deter(flip=True))
    z = torch.randn(BATCH, *SHAPE, generator=torch.manual_seed(0)).double()  # the first step's z; none at t = 0
    for t, noise in ((1, z), (0, torch.zeros_like(z))):
        t = torch.full((BATCH,), t)
        x = p_step64(dummy_model(x, t), t, x, schedule, noise, clip=True)
    torch.testing.assert_close(images.double(), x, rtol=0, atol=1e-5)
    assert abs(result_sum - x.abs().sum().item()) < 1e-3
    assert abs(result_sum - 387.9673) < 1e-3

    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(**DDPM_CONFIG)
    generator = torch.manual_seed(0)
    theirs = scheduler.add_noise(dummy_sample_deter(), dummy_sample_deter(flip=True), torch.tensor([1]))
    for t in scheduler.timesteps[998:]:
        theirs = scheduler.step(dummy_model(theirs, t), t, theirs, generator=generator).prev_sample
    assert abs(theirs.abs().sum().item() - 387.9466) < 1e-2  # the fixture, from its float32 rounding:
    assert (theirs.double() - x).abs().max() > 2e-5 > (images.double() - x).abs().max()


def diffusers_dpm_loop(algorithm_type: str, prediction_type: str) -> torch.Tensor:
    """DPMSolverMultistepSchedulerTest.full_loop (10 steps, generator = torch.manual_seed(0)) with its config, but
    final_sigmas_type="zero", the one FastSampler runs."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DPMSolverMultistepScheduler(**DPM_CONFIG, algorithm_type=algorithm_type,
                                                      prediction_type=prediction_type, final_sigmas_type="zero")
    scheduler.set_timesteps(10)
    generator = torch.manual_seed(0)
    sample = dummy_sample_deter()
    for t in scheduler.timesteps:
        sample = scheduler.step(dummy_model(sample, t), t, sample, generator=generator).prev_sample
    return sample


# DPMSolverMultistepSchedulerTest.get_scheduler_config, less algorithm_type, prediction_type and final_sigmas_type.
DPM_CONFIG = dict(LINEAR, solver_order=2, thresholding=False, sample_max_value=1.0, solver_type="midpoint",
                  lower_order_final=False, euler_at_final=False, lambda_min_clipped=-float("inf"), variance_type=None)


@pytest.mark.parametrize("method, algorithm_type", [("dpm_solver++", "dpmsolver++"),
                                                    ("sde_dpm_solver++", "sde-dpmsolver++")])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_dpm_solver_full_loop_equals_diffusers_with_final_sigmas_zero(method, algorithm_type, prediction_type):
    """Their full_loop itself — dummy model, dummy_sample_deter as latents, generator = torch.manual_seed(0), 10
    linspace steps, ODE and SDE — against diffusers' own scheduler with FastSampler's default final_sigmas_type="zero"
    (their numbers, with their config's "sigma_min", are test_dpm_solver_full_loop_fixtures below)."""
    theirs = diffusers_dpm_loop(algorithm_type, prediction_type)
    sampler = fast_sampler(DPM_CONFIG, prediction_type=prediction_type, timestep_spacing="linspace")
    ours = sampler.sample(BATCH, latents=dummy_sample_deter(), generator=torch.manual_seed(0), method=method,
                          num_inference_steps=10)
    torch.testing.assert_close(ours, theirs.clamp(-1.0, 1.0), rtol=1e-5, atol=1e-5)


# DPMSolverMultistepSchedulerTest.get_scheduler_config's DPM-Solver++ options, as FastSampler's: the chain ends at
# σ_min (σ at t = 0) and its last step stays second order (lower_order_final=False); linspace, its default spacing.
DPM_FIXTURE_OPTIONS = dict(timestep_spacing="linspace", solver_order=2, final_sigmas_type="sigma_min",
                           lower_order_final=False, euler_at_final=False)
# (name in test_scheduler_dpm_multi.py, its full_loop's config changes, t_start (its *_with_noise chain starts at
# the 10-step chain's timestep t_start, from add_noise there), sum, mean); sum None: that test asserts the mean only.
# test_switch asserts test_full_loop_no_noise's 0.3301 again. test_full_loop_no_noise_thres (thresholding=True,
# dynamic_thresholding_ratio=0.87, sample_max_value=0.5) ends at a mean |x| of 1.1364, outside the [-1, 1]
# FastSampler's images are clamped to: its number is read from the chain's x before that clamp.
DPM_FIXTURES = [
    ("DPMSolverMultistepSchedulerTest.test_full_loop_no_noise", {}, None, None, 0.3301),
    ("DPMSolverMultistepSchedulerTest.test_full_loop_with_v_prediction", dict(prediction_type="v_prediction"), None,
     None, 0.2251),
    ("DPMSolverMultistepSchedulerTest.test_full_loop_with_karras_and_v_prediction",
     dict(prediction_type="v_prediction", use_karras_sigmas=True), None, None, 0.2096),
    ("DPMSolverMultistepSchedulerTest.test_full_loop_with_lu_and_v_prediction",
     dict(prediction_type="v_prediction", use_lu_lambdas=True), None, None, 0.1554),
    ("DPMSolverMultistepSchedulerTest.test_full_loop_with_noise", {}, 5, 318.4111, 0.4146),
    ("DPMSolverMultistepSchedulerTest.test_full_loop_no_noise_thres",
     dict(thresholding=True, dynamic_thresholding_ratio=0.87, sample_max_value=0.5), None, None, 1.1364),
]


@pytest.mark.parametrize("name, options, t_start, expected_sum, expected_mean", DPM_FIXTURES,
                         ids=[fixture[0] for fixture in DPM_FIXTURES])
def test_dpm_solver_full_loop_fixtures(name, options, t_start, expected_sum, expected_mean):
    """test_scheduler_dpm_multi.py's hard-coded numbers, with its tolerances, on the DPM step kernel under the
    interpreter and on its torch reference. Its *_with_noise loop starts from add_noise(dummy_sample_deter,
    dummy_noise_deter, timesteps[5]) and steps on the same 10-step chain's last five timesteps, to σ_min: here the
    custom chain timesteps[5:] (whose points are the same) from those latents."""
    sampler = fast_sampler(DPM_CONFIG, **DPM_FIXTURE_OPTIONS, **options)
    arguments = dict(method="dpm_solver++", generator=torch.manual_seed(0))
    if t_start is None:
        latents, arguments["num_inference_steps"] = dummy_sample_deter(), 10
    else:
        arguments["timesteps"] = sampler.timesteps(10, "dpm_solver++")[t_start:]
        latents = noised(DPM_CONFIG, arguments["timesteps"][0])
    images = sampler.sample(BATCH, latents=latents, **arguments)
    if options.get("thresholding"):  # its x before the clamp of the images: the last runner's static buffer
        x = next(reversed(sampler.fast_path.runners.values())).state.x
        assert torch.equal(images, x.clamp(-1.0, 1.0)) and x.abs().max() > 1.0
        images = x
    else:
        sum_and_mean(images)  # inside [-1, 1]: the clamped images are diffusers' loop output
    result_sum, result_mean = images.abs().sum().item(), images.abs().mean().item()
    if expected_sum is not None:
        assert abs(result_sum - expected_sum) < 1e-2, (name, result_sum)
    assert abs(result_mean - expected_mean) < 1e-3, (name, result_mean)


# ----------------------------------------------------------------------------------------------- OnnxSampler

@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    """The dummy model as ONNX model graphs: with DDIMScheduler's "leading" spacing (the DDPM and DDIM fixtures; a
    full DDPM chain visits every timestep) and DPMSolverMultistepScheduler's "linspace"."""
    pytest.importorskip("onnxruntime")
    from ddpm_fast.export import export_onnx

    folder = tmp_path_factory.mktemp("latents")
    schedule = df.NoiseSchedule.from_diffusers(DDPM_CONFIG)
    return {spacing: export_onnx(DummyModule(), folder / f"{spacing}.onnx", SHAPE, schedule=schedule,
                                 clip_sample=spacing == "leading", timestep_spacing=spacing)
            for spacing in ("leading", "linspace")}


def test_onnx_sampler_reproduces_the_diffusers_fixtures(onnx_files):
    """OnnxSampler with latents=dummy_sample_deter: DDPMSchedulerTest.test_full_loop_no_noise and
    DDIMSchedulerTest.test_full_loop_no_noise by their numbers, and the DPM-Solver++ full loops (ODE and SDE) equal
    to diffusers' with final_sigmas_type="zero" (see the FastSampler test for why not their numbers). OnnxSampler
    plans chains by spacing only, so the two *_with_noise chains ([1, 0], [100, 0]) are FastSampler's alone."""
    from ddpm_fast.export import OnnxSampler

    sampler = OnnxSampler(onnx_files["leading"])
    with cpu_reference():  # 1000 steps
        ddpm = sampler.sample(BATCH, latents=dummy_sample_deter(), generator=torch.manual_seed(0), method="ddpm")
    result_sum, result_mean = sum_and_mean(ddpm)
    assert abs(result_sum - 258.9606) < 1e-2 and abs(result_mean - 0.3372) < 1e-3
    ddim = sampler.sample(BATCH, latents=dummy_sample_deter(), method="ddim", num_inference_steps=10, eta=0.0)
    result_sum, result_mean = sum_and_mean(ddim)
    assert abs(result_sum - 172.0067) < 1e-2 and abs(result_mean - 0.223967) < 1e-3
    sampler = OnnxSampler(onnx_files["linspace"])
    for method, algorithm_type in (("dpm_solver++", "dpmsolver++"), ("sde_dpm_solver++", "sde-dpmsolver++")):
        ours = sampler.sample(BATCH, latents=dummy_sample_deter(), generator=torch.manual_seed(0), method=method,
                              num_inference_steps=10)
        torch.testing.assert_close(ours, diffusers_dpm_loop(algorithm_type, "epsilon").clamp(-1.0, 1.0), rtol=1e-5,
                                   atol=1e-5)


# ------------------------------------------------------------------------------------------- the rule itself

METHOD_CHAINS = [("ddpm", None), ("ddpm", 7), ("ddim", 6), ("dpm_solver++", 6), ("sde_dpm_solver++", 6)]
SHORT = dict(DDPM_CONFIG, num_train_timesteps=20)  # full chains of the rule tests: 20 steps


def seeded_x_T(seed: int, batch: int, sample_offset: int = 0) -> torch.Tensor:
    """The x_T seed= draws, from the kernel that draws it: Philox STREAM_INITIAL noise of samples offset + i."""
    starts = torch.zeros(batch, dtype=torch.int64)
    return torch.ops.ddpm_fast.philox_normal(seed_tensor(seed, torch.device("cpu")), starts, [batch, *SHAPE],
                                             sample_offset, STREAM_INITIAL, False)


@pytest.mark.parametrize("method, steps", METHOD_CHAINS)
def test_the_seeded_x_T_as_latents_gives_the_seeded_images(method, steps):
    """latents = the x_T that seed= draws (with sample_offset too) gives the seeded images bit for bit; the per-step
    noise is still seed='s. generator=: latents = its first draw, and the rest of the same stream, give its images."""
    sampler = fast_sampler(SHORT)
    chain = dict(method=method, num_inference_steps=steps)
    seeded = sampler.sample(3, seed=11, sample_offset=5, **chain)
    x_T = seeded_x_T(11, 3, sample_offset=5)
    torch.testing.assert_close(initial_sample((3, *SHAPE), torch.device("cpu"), seed_tensor(11, torch.device("cpu")),
                                              None, 5), x_T, rtol=0, atol=0)
    assert torch.equal(sampler.sample(3, seed=11, sample_offset=5, latents=x_T, **chain), seeded)
    other_seed = sampler.sample(3, seed=12, sample_offset=5, latents=x_T, **chain)
    # the per-step noise is still the seed's; DDIM (eta 0) and the ODE solver draw none: x_T decides it all
    assert torch.equal(other_seed, seeded) == (method in ("ddim", "dpm_solver++"))

    drawn = sampler.sample(3, generator=torch.Generator().manual_seed(4), **chain)
    generator = torch.Generator().manual_seed(4)
    x_T = torch.randn(3, *SHAPE, generator=generator)  # x_T, then the same generator gives every z
    assert torch.equal(sampler.sample(3, generator=generator, latents=x_T, **chain), drawn)


@pytest.mark.parametrize("method, steps", [("ddpm", 20), ("ddim", 6), ("sde_dpm_solver++", 6)])
def test_onnx_sampler_seeded_x_T_as_latents(onnx_files, method, steps):
    """OnnxSampler: the same rule, and the same images as FastSampler from the same latents and noise."""
    from ddpm_fast.export import OnnxSampler

    sampler = OnnxSampler(onnx_files["leading"])
    chain = dict(method=method, num_inference_steps=steps)
    seeded = sampler.sample(3, seed=11, sample_offset=5, **chain)
    x_T = seeded_x_T(11, 3, sample_offset=5)
    assert torch.equal(sampler.sample(3, seed=11, sample_offset=5, latents=x_T, **chain), seeded)
    drawn = sampler.sample(3, generator=torch.Generator().manual_seed(4), **chain)
    generator = torch.Generator().manual_seed(4)
    x_T = torch.randn(3, *SHAPE, generator=generator)
    from_latents = sampler.sample(3, generator=generator, latents=x_T, **chain)
    assert torch.equal(from_latents, drawn)
    fast = fast_sampler(DDPM_CONFIG, timestep_spacing="leading")
    torch.testing.assert_close(from_latents, fast.sample(3, generator=torch.Generator().manual_seed(4), **chain),
                               rtol=1e-5, atol=1e-5)


def test_latents_are_copied_and_the_runner_is_the_seeded_one(device):
    """The caller's tensor is left as it was and not returned; a channels-last or strided x_T gives the same images;
    a warm_up's runner (its static buffers, its CUDA graphs on a GPU) serves calls with latents, and no new one is
    made; on it too, the seeded x_T as latents gives the seeded images bit for bit."""
    sampler = fast_sampler(SHORT, device=device)
    chain = dict(method="ddpm", num_inference_steps=5)
    sampler.warm_up(3, **chain)
    (runner,) = sampler.fast_path.runners.values()
    x_T = torch.randn(3, *SHAPE, device=device)
    kept = x_T.clone()
    images = sampler.sample(3, seed=2, latents=x_T, **chain)
    assert torch.equal(x_T, kept) and images.data_ptr() != x_T.data_ptr()
    assert list(sampler.fast_path.runners.values()) == [runner]
    assert runner.state.x.data_ptr() not in (x_T.data_ptr(), images.data_ptr())
    channels_last = x_T.contiguous(memory_format=torch.channels_last)
    strided = torch.randn(3, SHAPE[0], SHAPE[1], 2 * SHAPE[2], device=device)[..., ::2]
    strided.copy_(x_T)
    for other in (channels_last, strided):
        assert torch.equal(sampler.sample(3, seed=2, latents=other, **chain), images)
    seeded = sampler.sample(3, seed=2, **chain)
    x_T = initial_sample((3, *SHAPE), device, seed_tensor(2, device), None)
    assert torch.equal(sampler.sample(3, seed=2, latents=x_T, **chain), seeded)
    assert list(sampler.fast_path.runners.values()) == [runner]


# ----------------------------------------------------------------------------------------------------- errors

BAD_LATENTS = [
    (lambda: dummy_sample_deter().tolist(), TypeError, "latents must be a torch.Tensor"),
    (lambda: dummy_sample_deter().numpy(), TypeError, "latents must be a torch.Tensor"),
    (lambda: dummy_sample_deter().double(), ValueError, "latents must be float32.*got float64"),
    (lambda: dummy_sample_deter().half(), ValueError, "latents must be float32.*got float16"),
    (lambda: torch.zeros(BATCH, *SHAPE, dtype=torch.int64), ValueError, "latents must be float32.*got int64"),
    (lambda: dummy_sample_deter()[:3], ValueError, r"latents must have shape \[4, 3, 8, 8\].*got \[3, 3, 8, 8\]"),
    (lambda: torch.zeros(BATCH, 1, 8, 8), ValueError, r"latents must have shape \[4, 3, 8, 8\]"),
    (lambda: torch.zeros(BATCH, 3, 8, 9), ValueError, r"latents must have shape \[4, 3, 8, 8\]"),
    (lambda: torch.zeros(3, 8, 8), ValueError, r"latents must have shape \[4, 3, 8, 8\]"),
    (lambda: torch.zeros(BATCH, *SHAPE, device="meta"), ValueError, "latents is on meta but the sampler samples on "
                                                                     "cpu"),
    (lambda: dummy_sample_deter().index_fill(2, torch.tensor([3]), float("nan")), ValueError,
     "latents contains NaN or infinite"),
    (lambda: dummy_sample_deter().index_fill(0, torch.tensor([1]), float("-inf")), ValueError,
     "latents contains NaN or infinite"),
]


@pytest.mark.parametrize("make, error, message", BAD_LATENTS, ids=[f"case{i}" for i in range(len(BAD_LATENTS))])
def test_bad_latents_are_clear_errors_before_any_step(make, error, message):
    sampler = fast_sampler(SHORT)
    for noise in (dict(seed=0), dict(generator=torch.manual_seed(0)), {}):
        with pytest.raises(error, match=message):
            sampler.sample(BATCH, latents=make(), method="ddim", num_inference_steps=3, **noise)
    assert not sampler.fast_path.runners  # refused at the boundary: nothing was built, compiled or run


def test_onnx_sampler_bad_latents_are_clear_errors(onnx_files):
    from ddpm_fast.export import OnnxSampler

    sampler = OnnxSampler(onnx_files["leading"])
    for make, error, message in BAD_LATENTS:
        with pytest.raises(error, match=message):
            sampler.sample(BATCH, seed=0, latents=make(), method="ddim", num_inference_steps=3)
    assert not sampler._buffers  # refused before binding

