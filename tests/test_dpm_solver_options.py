"""DPM-Solver++'s options, as diffusers' DPMSolverMultistepScheduler names them: solver_order 1 and 2,
lower_order_final, final_sigmas_type ("zero", "sigma_min"), euler_at_final, and the σ spacings use_karras_sigmas,
use_lu_lambdas, use_exponential_sigmas.

(1) The rules against diffusers itself: which order each step takes (diffusers' update functions, watched), which
    timesteps a σ-spaced chain calls the model at and which (α, σ) it steps on (its set_timesteps).
(2) Whole chains against diffusers' scheduler on the same model and latents, fp32, within 1e-4, ε / x0 / v, ODE and
    SDE: diffusers' dummy model `sample * t / (t + 1)` on the DPM step kernel under the Triton interpreter
    (TRITON_INTERPRET=1, the suite's default) and on its torch reference (TRITON_INTERPRET=0); a small U-Net on the
    torch references, with our error against a float64 solver no worse than 2x diffusers'.
(3) The options travel with the setup (FastSampler.setup, setup.json, diffusers configs, the command line, ONNX
    files) and OnnxSampler runs the same chains. diffusers' own full-loop numbers are in tests/test_latents.py.
"""

import contextlib
import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import ddpm_fast as df
from ddpm_fast.kernels import cpu_reference
from ddpm_fast.sampling.dpm_solver import SolverOptions, _sigma_to_t, dpm_solver_chain, step_orders
from ddpm_fast.vocabulary import SIGMA_SPACINGS
from dummy_chains import BATCH, LINEAR, SHAPE, DummyModule, dummy_model, last_x, latents

ALGORITHMS = {"dpm_solver++": "dpmsolver++", "sde_dpm_solver++": "sde-dpmsolver++"}


def diffusers_scheduler(schedule_config=LINEAR, **options):
    diffusers = pytest.importorskip("diffusers")
    return diffusers.DPMSolverMultistepScheduler(**schedule_config, **options)


def diffusers_chain(model, x, method, steps, prediction_type, options, generator=None, schedule_config=LINEAR):
    """diffusers' loop: the scheduler's timesteps, the model at each, step(); the SDE's noise drawn from `generator`
    before each step (what FastSampler's generator= draws when latents are given)."""
    scheduler = diffusers_scheduler(schedule_config, algorithm_type=ALGORITHMS[method],
                                    prediction_type=prediction_type, **options)
    scheduler.set_timesteps(steps)
    with torch.no_grad():
        for t in scheduler.timesteps:
            output = model(x, t.expand(x.shape[0]))
            noise = torch.randn(x.shape, generator=generator) if method.startswith("sde") else None
            x = scheduler.step(output, t, x, variance_noise=noise).prev_sample
    return x, scheduler.timesteps.tolist()


# ----------------------------------------------------------------------------------------------------- the rules


def diffusers_orders(steps, **options):
    """The order diffusers' DPMSolverMultistepScheduler.step takes at each step: its update functions, watched."""
    scheduler = diffusers_scheduler(**options)
    scheduler.set_timesteps(steps)
    taken = []
    for order, name in ((1, "dpm_solver_first_order_update"), (2, "multistep_dpm_solver_second_order_update"),
                        (3, "multistep_dpm_solver_third_order_update")):
        update = getattr(scheduler, name)
        setattr(scheduler, name, lambda *a, _order=order, _update=update, **k: (taken.append(_order),
                                                                                 _update(*a, **k))[1])
    x = torch.ones(1, 1, 2, 2)
    for t in scheduler.timesteps:
        x = scheduler.step(torch.zeros_like(x), t, x).prev_sample
    return taken


def test_step_orders_are_diffusers():
    for steps, order, lower, euler, final in itertools.product((1, 2, 3, 5, 14, 15, 16, 20), (1, 2, 3), (True, False),
                                                              (True, False), ("zero", "sigma_min")):
        options = dict(solver_order=order, lower_order_final=lower, euler_at_final=euler, final_sigmas_type=final)
        assert step_orders(steps, SolverOptions(**options)) == diffusers_orders(steps, **options), (steps, options)


@pytest.mark.parametrize("schedule_config", [LINEAR, dict(LINEAR, beta_schedule="scaled_linear", beta_end=0.012)],
                         ids=["linear", "scaled_linear"])
@pytest.mark.parametrize("spacing", [None, *SIGMA_SPACINGS])
@pytest.mark.parametrize("final_sigmas_type", ["zero", "sigma_min"])
def test_chains_are_diffusers(schedule_config, spacing, final_sigmas_type):
    """The model's timesteps, and the (α, σ) the solver steps on to diffusers' float32 rounding, for every σ spacing
    and both ends. diffusers computes σ from its float32 ᾱ (at t = 0, 1 − ᾱ cancels: 8e-5 relative) and maps σ to a
    timestep through float32 log σ; ours are float64. So a σ whose float timestep lies within that error of a rounding
    boundary (x.5 for Karras and Lu, an integer for the exponential spacing's truncation) may land one timestep
    apart: here 1 timestep in 100 to 200 at the longer chains, each asserted to be such a case; none at the chain
    lengths the whole-chain tests run."""
    schedule = df.NoiseSchedule.from_diffusers(schedule_config)
    flags = {spacing: True} if spacing else {}
    for steps in (1, 2, 3, 7, 10, 20, 25, 50, 100):
        options = SolverOptions(final_sigmas_type=final_sigmas_type, **flags)
        try:
            chain, alpha, sigma = dpm_solver_chain(schedule.alphas_cumprod, steps, "linspace", 0, options)
        except ValueError:  # linspace refuses a chain that repeats a timestep; diffusers repeats it
            assert spacing is None
            continue
        scheduler = diffusers_scheduler(schedule_config, final_sigmas_type=final_sigmas_type, **flags)
        scheduler.set_timesteps(steps)
        theirs = scheduler.timesteps.numpy()
        apart = (chain != theirs).nonzero()[0]
        if steps <= 25 or spacing is None:
            assert len(apart) == 0, (steps, chain.tolist(), theirs.tolist())
        if len(apart):
            ve = ((1 - schedule.alphas_cumprod) / schedule.alphas_cumprod).sqrt().numpy()
            times = _sigma_to_t((sigma / alpha)[:-1][apart], np.log(ve))
            offset = 0.0 if spacing == "use_exponential_sigmas" else 0.5  # truncation: integers; rounding: x.5
            to_boundary = abs((times - offset + 0.5) % 1.0 - 0.5)
            assert len(apart) <= 2 and (abs(chain[apart] - theirs[apart]) == 1).all(), (steps, apart)
            assert (to_boundary < 5e-3).all(), (steps, times)
        their_alpha, their_sigma = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas.double())
        torch.testing.assert_close(torch.from_numpy(alpha), their_alpha, rtol=1e-4, atol=1e-9)
        torch.testing.assert_close(torch.from_numpy(sigma), their_sigma, rtol=1e-4, atol=1e-9)


def test_a_sigma_spaced_chain_may_repeat_a_timestep_and_the_sde_refuses_to_repeat_its_noise():
    schedule = df.NoiseSchedule.from_diffusers(LINEAR)
    chain, _, sigma = dpm_solver_chain(schedule.alphas_cumprod, 200, options=SolverOptions(use_karras_sigmas=True))
    assert len(set(chain.tolist())) < len(chain) and (sigma[1:] < sigma[:-1]).all()  # σ still strictly falls
    sampler = df.FastSampler(dummy_model, schedule, SHAPE, compile=False, use_karras_sigmas=True)
    assert sampler.timesteps(200, "sde_dpm_solver++") == chain.tolist()
    with pytest.raises(ValueError, match=r"calls the model at timestep 0.* more than once"):
        sampler.sample(1, seed=0, method="sde_dpm_solver++", num_inference_steps=200)


# ---------------------------------------------------------------------------------------------------- the chains

# (options, steps): each option alone and in the combinations diffusers' users set; 10 steps (< 15: lower_order_final
# applies) or 20 (it does not: with final_sigmas_type="sigma_min" the last step is second order).
CHAIN_CASES = [
    (dict(solver_order=1), 10),
    (dict(solver_order=1, final_sigmas_type="sigma_min"), 10),
    (dict(final_sigmas_type="sigma_min"), 10),
    (dict(final_sigmas_type="sigma_min", lower_order_final=False), 10),
    (dict(final_sigmas_type="sigma_min"), 20),
    (dict(final_sigmas_type="sigma_min", euler_at_final=True), 20),
    (dict(lower_order_final=False), 10),
    (dict(use_karras_sigmas=True), 10),
    (dict(use_karras_sigmas=True, final_sigmas_type="sigma_min", lower_order_final=False), 10),
    (dict(use_lu_lambdas=True, final_sigmas_type="sigma_min"), 20),
    (dict(use_exponential_sigmas=True), 10),
    (dict(use_exponential_sigmas=True, solver_order=1, final_sigmas_type="sigma_min"), 20),
    (dict(solver_order=3), 10),
    (dict(solver_order=3, final_sigmas_type="sigma_min", lower_order_final=False), 10),
    (dict(solver_order=3, final_sigmas_type="sigma_min"), 20),
    (dict(solver_order=3, use_karras_sigmas=True), 20),
    (dict(solver_order=3, use_lu_lambdas=True, final_sigmas_type="sigma_min", euler_at_final=True), 10),
    (dict(thresholding=True), 10),
    (dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5, solver_order=3), 10),
    (dict(thresholding=True, dynamic_thresholding_ratio=0.87, sample_max_value=0.5, use_karras_sigmas=True,
          final_sigmas_type="sigma_min"), 20),
]


def _case_id(case):
    options, steps = case
    return "-".join(f"{k}={v}" for k, v in options.items()) + f"-{steps}"


# The options are the chain's table, not kernel variants: the interpreter's run takes each with ε alone (the step
# kernel's prediction types are proven against float64 in test_dpm_solver.py).
@pytest.mark.parametrize("prediction_type", ["epsilon", pytest.param("sample", marks=pytest.mark.torch_references),
                                             pytest.param("v_prediction", marks=pytest.mark.torch_references)])
@pytest.mark.parametrize("options, steps", CHAIN_CASES, ids=[_case_id(case) for case in CHAIN_CASES])
def test_chains_equal_diffusers_on_the_dummy_model(options, steps, prediction_type):
    """fp32, ODE and SDE (generator= noise, drawn as diffusers' loop draws it), on whichever CPU path this run takes
    (the DPM step kernel under the interpreter, or its torch reference): within 1e-4 of diffusers' scheduler beyond
    its own float32 error, and within 5e-5 of the float64 solver, no further from it than 2x diffusers. (diffusers'
    own error reaches 7e-4 on third-order SDE chains ending at σ_min, whose last step it computes in float32.)"""
    schedule = df.NoiseSchedule.from_diffusers(LINEAR)
    sampler = df.FastSampler(dummy_model, schedule, SHAPE, compile=False, prediction_type=prediction_type, **options)
    for method in ALGORITHMS:
        with cpu_reference() if prediction_type != "epsilon" else contextlib.nullcontext():  # as the marks say
            ours = sampler.sample(BATCH, latents=latents(), generator=torch.Generator().manual_seed(1), method=method,
                                  num_inference_steps=steps)
        raw = last_x(sampler)  # before the clamp of the images (the dummy model leaves [-1, 1])
        theirs, timesteps = diffusers_chain(dummy_model, latents(), method, steps, prediction_type, options,
                                            torch.Generator().manual_seed(1))
        generator = torch.Generator().manual_seed(1)
        noises = [torch.randn(latents().shape, generator=generator) for _ in range(steps)]
        exact = float64_chain(dummy_model, schedule, method, steps, prediction_type, options, latents(), noises,
                              clamp=False)
        assert sampler.timesteps(steps, method) == timesteps
        torch.testing.assert_close(ours, raw.clamp(-1.0, 1.0), rtol=0, atol=0)
        ours_error, their_error = (raw.double() - exact).abs().max(), (theirs.double() - exact).abs().max()
        assert ours_error < 5e-5 and ours_error <= 2 * their_error + 1e-6, (method, ours_error, their_error)
        torch.testing.assert_close(raw, theirs, rtol=1e-4, atol=1e-4 + float(their_error))


@pytest.mark.torch_references  # runner caching is the same on both paths; the seeded kernels are tested above
def test_seeded_chains_of_every_option_share_one_runner():
    """The options are data (the chain's table): chains of every order, end and spacing run on one runner, and a
    seeded chain is deterministic."""
    schedule = df.NoiseSchedule.from_diffusers(LINEAR)
    samplers = [df.FastSampler(dummy_model, schedule, SHAPE, compile=False, **options) for options, _ in CHAIN_CASES]
    with cpu_reference():
        for sampler, (_, steps) in zip(samplers, CHAIN_CASES):
            first = sampler.sample(BATCH, seed=4, method="sde_dpm_solver++", num_inference_steps=steps)
            again = sampler.sample(BATCH, seed=4, method="sde_dpm_solver++", num_inference_steps=steps)
            assert torch.equal(first, again)
            sampler.sample(BATCH, seed=4, method="dpm_solver++", num_inference_steps=steps + 3)
            assert len(sampler.fast_path.runners) == 2  # one per method, whatever the chain


@pytest.mark.torch_references
def test_the_compiled_step_equals_the_eager_one_with_a_longer_history_and_thresholding():
    """torch.compile(fullgraph=True) of the whole step — model, thresholding (its quantile from torch.topk, no host
    sync: a .item() would break the graph) and the third-order fused update of DPM-Solver++ (a second x0 history)
    and of UniPC (a third, and its corrected sample) — equals the eager step."""
    schedule = df.NoiseSchedule.from_diffusers(LINEAR)
    options = dict(solver_order=3, thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5,
                   prediction_type="v_prediction")
    eager = df.FastSampler(dummy_model, schedule, SHAPE, compile=False, **options)
    compiled = df.FastSampler(dummy_model, schedule, SHAPE, compile=True, **options)
    with cpu_reference():
        for method in (*ALGORITHMS, "unipc"):
            expected = eager.sample(BATCH, latents=latents(), seed=2, method=method, num_inference_steps=6)
            got = compiled.sample(BATCH, latents=latents(), seed=2, method=method, num_inference_steps=6)
            assert compiled.last_report.compiled and not compiled.last_report.fell_back
            torch.testing.assert_close(last_x(compiled), last_x(eager), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("options", [dict(solver_order=3, use_karras_sigmas=True, final_sigmas_type="sigma_min"),
                                     dict(thresholding=True, use_lu_lambdas=True, solver_order=1)],
                         ids=["order3-karras-sigma_min", "thresholding-lu-order1"])
def test_cuda_graphs_equal_the_eager_loop_across_lengths(options):
    """One captured set per (batch, method) serves every chain length of these options (not run on the CPU-only
    machines; written for the lent GPU)."""
    schedule = df.NoiseSchedule.from_diffusers(LINEAR)
    common = dict(dtype=torch.float32, compile=False, prediction_type="v_prediction", **options)
    eager = df.FastSampler(DummyModule().cuda(), schedule, SHAPE, cuda_graphs=False, **common)
    graphed = df.FastSampler(DummyModule().cuda(), schedule, SHAPE, cuda_graphs=True, steps_per_graph=4, **common)
    for method in ALGORITHMS:
        for steps in (10, 25, 7):
            torch.testing.assert_close(graphed.sample(3, seed=1, method=method, num_inference_steps=steps),
                                       eager.sample(3, seed=1, method=method, num_inference_steps=steps),
                                       rtol=1e-5, atol=1e-5)
            assert graphed.last_report.cuda_graphs
    assert len(graphed.fast_path.runners) == 2


# A small U-Net, on the torch references (the interpreter would take minutes per chain).

SMALL_MODEL = {"block_out_channels": (16, 32), "down_attention": (False, False), "up_attention": (False, True)}


def small_unet(seed=0):
    torch.manual_seed(seed)
    return df.UNet.from_preset("tiny", sample_size=8, **SMALL_MODEL).eval()


def float64_chain(model, schedule, method, steps, prediction_type, options, x, noises, clamp=True):
    """The solver in float64: diffusers' update formulas on the chain's float64 points, the model in float64 (a small
    U-Net's copy, or the dummy model as it is)."""
    if isinstance(model, nn.Module):
        model64 = small_unet().double()
        model64.load_state_dict(model.state_dict())
    else:
        model64 = model
    options = SolverOptions(**options)
    chain, alpha, sigma = dpm_solver_chain(schedule.alphas_cumprod, steps, "linspace", 0, options)
    lam = [math.log(a) - math.log(s) if s > 0 else math.inf for a, s in zip(alpha, sigma)]
    sde = method.startswith("sde")
    x, previous, previous2 = x.double(), None, None
    with torch.no_grad():
        for i, (t, order) in enumerate(zip(chain.tolist(), step_orders(steps, options))):
            output = model64(x, torch.full((x.shape[0],), t))
            if prediction_type == "epsilon":
                x0 = (x - sigma[i] * output) / alpha[i]
            elif prediction_type == "sample":
                x0 = output
            else:
                x0 = alpha[i] * x - sigma[i] * output
            if options.thresholding:  # diffusers' _threshold_sample, in float64
                s = torch.quantile(x0.reshape(x0.shape[0], -1).abs(), options.dynamic_thresholding_ratio, dim=1)
                s = torch.clamp(s, min=1, max=options.sample_max_value).view(-1, 1, 1, 1)
                x0 = torch.clamp(x0, -s, s) / s
            d = x0 if order == 1 else x0 + 0.5 * (lam[i + 1] - lam[i]) / (lam[i] - lam[i - 1]) * (x0 - previous)
            if sigma[i + 1] == 0:
                new = d
            elif order == 3 and lam[i + 1] - lam[i] <= 0:  # a step of zero length: every term vanishes
                new = x
            elif order == 3:  # diffusers' multistep_dpm_solver_third_order_update, as written there
                h, h_0, h_1 = lam[i + 1] - lam[i], lam[i] - lam[i - 1], lam[i - 1] - lam[i - 2]
                r0, r1 = h_0 / h, h_1 / h
                d1_0, d1_1 = (x0 - previous) / r0, (previous - previous2) / r1
                d1, d2 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1), (d1_0 - d1_1) / (r0 + r1)
                a_t, e = alpha[i + 1], math.exp(-h)
                if sde:
                    e2 = math.exp(-2 * h)
                    new = (sigma[i + 1] / sigma[i] * e * x + a_t * (1 - e2) * x0
                           + a_t * ((1 - e2) / (-2 * h) + 1) * d1 + a_t * ((1 - e2 - 2 * h) / (2 * h) ** 2 - 0.5) * d2
                           + sigma[i + 1] * math.sqrt(1 - e2) * noises[i].double())
                else:
                    new = (sigma[i + 1] / sigma[i] * x - a_t * (e - 1) * x0 + a_t * ((e - 1) / h + 1) * d1
                           - a_t * ((e - 1 + h) / h**2 - 0.5) * d2)
            elif sde:
                h = lam[i + 1] - lam[i]
                new = (sigma[i + 1] / sigma[i] * math.exp(-h) * x + alpha[i + 1] * -math.expm1(-2 * h) * d
                       + sigma[i + 1] * math.sqrt(-math.expm1(-2 * h)) * noises[i].double())
            else:
                h = lam[i + 1] - lam[i]
                new = sigma[i + 1] / sigma[i] * x + alpha[i + 1] * -math.expm1(-h) * d
            x, previous, previous2 = new, x0, previous
    return x.clamp(-1, 1) if clamp else x


@pytest.mark.torch_references
@pytest.mark.parametrize("options", [dict(use_karras_sigmas=True), dict(use_lu_lambdas=True),
                                     dict(use_exponential_sigmas=True),
                                     dict(final_sigmas_type="sigma_min", lower_order_final=False),
                                     dict(solver_order=1, use_karras_sigmas=True, final_sigmas_type="sigma_min"),
                                     dict(solver_order=3),
                                     dict(solver_order=3, use_karras_sigmas=True, final_sigmas_type="sigma_min",
                                          lower_order_final=False)],
                         ids=["karras", "lu", "exponential", "sigma_min", "order1-karras-sigma_min", "order3",
                              "order3-karras-sigma_min"])
@pytest.mark.parametrize("method", list(ALGORITHMS))
def test_unet_chains_equal_diffusers_and_float64(options, method):
    """A small U-Net: ours within 1e-4 of the float64 solver (diffusers' formulas on float64 points, the model in
    float64) and no further from it than 2x diffusers; ours within 1e-4 of diffusers beyond diffusers' own error."""
    pytest.importorskip("diffusers")
    model = small_unet()
    schedule = df.NoiseSchedule.from_diffusers(LINEAR)
    # ε at 10 steps; v at 25 (a random ε-model's 25-step chain ends near ±500, where float32 rounding is all one sees)
    for steps, prediction_type in ((10, "epsilon"), (25, "v_prediction"), (10, "sample")):
        sampler = df.FastSampler(model, schedule, compile=False, channels_last=False, prediction_type=prediction_type,
                                 **options)
        x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        generator = torch.Generator().manual_seed(2)
        noises = [torch.randn(x_T.shape, generator=generator) for _ in range(steps)]
        with cpu_reference():
            ours = sampler.sample(2, latents=x_T, generator=torch.Generator().manual_seed(2), method=method,
                                  num_inference_steps=steps)
            theirs, _ = diffusers_chain(model, x_T, method, steps, prediction_type, options,
                                        torch.Generator().manual_seed(2))
            exact = float64_chain(model, schedule, method, steps, prediction_type, options, x_T, noises)
        theirs = theirs.clamp(-1, 1)
        ours_error = (ours.double() - exact).abs().max()
        if options.get("solver_order") == 3 and options.get("use_karras_sigmas") and \
                options.get("final_sigmas_type") == "sigma_min":
            # A Karras chain ends on σ_min, so its last step to σ_min has h = 0 (up to rounding): diffusers' third-order
            # update divides by h² there, in float32, and returns NaN; ours is that step's limit, x unchanged.
            assert torch.isnan(theirs).any() and ours.isfinite().all() and ours_error < 1e-4, ours_error
            continue
        their_error = (theirs.double() - exact).abs().max()
        # Both chains call the same float32 model: each one's distance to the float64 chain has a floor of that
        # model's float32 rounding (measured up to 2.4e-5 here), on either side by chance; 2x is compared above it.
        assert ours_error <= 2 * their_error + 3e-5, (steps, ours_error, their_error)
        assert ours_error < 1e-4, (steps, prediction_type, ours_error)
        # Within 1e-4 of diffusers, beyond diffusers' own float32 error (its σ grid and its x0 at σ_max: up to 3e-4
        # on the Lu and exponential spacings here, where ours stays within 6e-6 of the float64 solver).
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4 + float(their_error))


# ------------------------------------------------------------------------------------------ the setup they travel in

OPTIONS = dict(solver_order=1, lower_order_final=False, final_sigmas_type="sigma_min", euler_at_final=True,
               use_lu_lambdas=True)


def test_the_options_travel_with_the_setup(tmp_path):
    schedule = df.NoiseSchedule.from_diffusers(LINEAR)
    sampler = df.FastSampler(dummy_model, schedule, SHAPE, compile=False, **OPTIONS)
    setup = sampler.setup
    assert {name: getattr(setup, name) for name in OPTIONS} == OPTIONS
    stored = setup.to_dict()
    assert {name: stored[name] for name in OPTIONS} == OPTIONS and "use_karras_sigmas" not in stored  # defaults left out
    setup.save(tmp_path)
    assert df.DiffusionSetup.load(tmp_path) == setup
    default = df.FastSampler(dummy_model, schedule, SHAPE, compile=False).setup.to_dict()
    assert not {"solver_order", "final_sigmas_type", "use_lu_lambdas"} & set(default)  # an old reader reads it
    from ddpm_fast.interop.diffusers_scheduler import setup_from_diffusers_config

    config = setup.to_diffusers_config()
    assert config["use_lu_lambdas"] is True and "use_karras_sigmas" not in config
    assert {name: getattr(setup_from_diffusers_config(config), name) for name in OPTIONS} == OPTIONS
    with pytest.raises(ValueError, match="solver_order must be one of 1, 2, 3, got 4"):
        setup_from_diffusers_config(dict(config, solver_order=4))
    # thresholding travels in setup.json and ONNX metadata, not in a diffusers config: a DDPMScheduler would
    # threshold its own steps with it
    thresholded = dataclasses.replace(setup, thresholding=True, dynamic_thresholding_ratio=0.9)
    assert df.DiffusionSetup.from_dict(thresholded.to_dict()) == thresholded
    assert "thresholding" not in thresholded.to_dict() or thresholded.to_dict()["thresholding"] is True
    assert thresholded.to_diffusers_config()["thresholding"] is False
    assert "dynamic_thresholding_ratio" not in thresholded.to_diffusers_config()


def test_a_given_option_is_checked_against_the_stored_one(tmp_path):
    model = small_unet()
    setup = df.DiffusionSetup.from_schedule(df.NoiseSchedule.linear(50), sample_shape=(3, 8, 8), **OPTIONS)
    model.save(tmp_path / "unet", setup=setup)
    sampler = df.FastSampler.from_pretrained(tmp_path / "unet", device="cpu", compile=False, solver_order=1)
    assert {name: getattr(sampler, name) for name in OPTIONS} == OPTIONS
    with pytest.raises(df.SetupConflict, match=r"solver_order=2 contradicts the setup stored .*solver_order=1"):
        df.FastSampler.from_pretrained(tmp_path / "unet", device="cpu", compile=False, solver_order=2)
    overridden = df.FastSampler.from_pretrained(tmp_path / "unet", device="cpu", compile=False, solver_order=2,
                                                use_lu_lambdas=False, use_karras_sigmas=True, override_setup=True)
    assert overridden.solver_order == 2 and overridden.use_karras_sigmas and not overridden.use_lu_lambdas


@pytest.mark.torch_references
def test_cli_samples_with_the_options(tmp_path, capsys):
    from safetensors.torch import load_file

    from ddpm_fast.cli import main as cli

    model = small_unet(seed=3)
    stored = dict(solver_order=1, final_sigmas_type="sigma_min", lower_order_final=False, use_karras_sigmas=True)
    setup = df.DiffusionSetup.from_schedule(df.NoiseSchedule.linear(200), prediction_type="v_prediction",
                                            sample_shape=(3, 8, 8), **stored)
    model.save(tmp_path / "unet", setup=setup)
    common = ["sample", "--checkpoint", str(tmp_path / "unet"), "--device", "cpu", "--no-compile", "--num-samples",
              "2", "--method", "sde_dpm_solver++", "--steps", "8"]
    out = tmp_path / "x.safetensors"
    flags = ["--solver-order", "1", "--final-sigmas-type", "sigma_min", "--no-lower-order-final",
             "--use-karras-sigmas"]  # as stored: no conflict
    with cpu_reference():
        assert cli.main(common + flags + ["--out", str(out)]) == 0
        sampler = df.FastSampler.from_pretrained(tmp_path / "unet", device="cpu", compile=False)
        assert {name: getattr(sampler, name) for name in stored} == stored  # read back from the folder
        expected = sampler.sample(2, seed=0, method="sde_dpm_solver++", num_inference_steps=8)
    torch.testing.assert_close(load_file(str(out))["images"], expected, rtol=1e-4, atol=1e-4)
    capsys.readouterr()
    assert cli.main(common + ["--solver-order", "2", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "--solver-order 2 contradicts the solver_order stored with" in error and "--override-setup" in error
    assert error.count("\n") == 1
    assert cli.main(common + ["--no-use-karras-sigmas", "--out", str(out)]) == 2
    assert "--no-use-karras-sigmas contradicts the use_karras_sigmas stored with" in capsys.readouterr().err
    assert cli.main(common + ["--use-lu-lambdas", "--override-setup", "--out", str(out)]) == 2
    assert "use_karras_sigmas=True and use_lu_lambdas=True: choose at most one σ spacing" in capsys.readouterr().err
    with cpu_reference():
        assert cli.main(common + ["--thresholding", "--dynamic-thresholding-ratio", "0.9", "--sample-max-value", "1.5",
                                  "--override-setup", "--out", str(out)]) == 0
        expected = df.FastSampler.from_pretrained(
            tmp_path / "unet", device="cpu", compile=False, thresholding=True, dynamic_thresholding_ratio=0.9,
            sample_max_value=1.5, override_setup=True).sample(2, seed=0, method="sde_dpm_solver++",
                                                              num_inference_steps=8)
    torch.testing.assert_close(load_file(str(out))["images"], expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------- OnnxSampler


ONNX_OPTIONS = {"order2-karras": dict(final_sigmas_type="sigma_min", lower_order_final=False, use_karras_sigmas=True),
                "order3": dict(solver_order=3, use_lu_lambdas=True),
                "thresholding": dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.2)}


@pytest.mark.parametrize("variant", list(ONNX_OPTIONS))
@pytest.mark.parametrize("graph", ["model", "dpm_solver_step"])
def test_onnx_sampler_runs_the_options(tmp_path, graph, variant):
    """The options stored in the file: a model graph (the update fused in torch) and a dpm_solver_step graph (each
    step's column of the chain's table an input) run FastSampler's chains, ODE and SDE; solver_order=3 (a second x0
    history) and thresholding (a step of its own) from a model graph only, the step graph refusing them by name."""
    pytest.importorskip("onnxruntime")
    from ddpm_fast.export import OnnxSampler, export_onnx

    schedule = df.NoiseSchedule.from_diffusers(LINEAR)
    options = ONNX_OPTIONS[variant]
    path = export_onnx(DummyModule(), tmp_path / f"{graph}.onnx", SHAPE, graph=graph, schedule=schedule,
                       prediction_type="v_prediction", **options)
    onnx_sampler = OnnxSampler(path)
    assert onnx_sampler.solver_options == SolverOptions(**options)
    fast = df.FastSampler(dummy_model, schedule, SHAPE, compile=False, prediction_type="v_prediction", **options)
    assert onnx_sampler.timesteps(10, "dpm_solver++") == fast.timesteps(10, "dpm_solver++")
    if graph == "dpm_solver_step" and variant != "order2-karras":
        refusal = "solver_order=3 needs two" if variant == "order3" else "thresholding=True thresholds it"
        with pytest.raises(ValueError, match=f"{refusal}.*export a model graph"):
            onnx_sampler.sample(BATCH, seed=3, num_inference_steps=10)
        return
    for method in ALGORITHMS:
        expected = fast.sample(BATCH, latents=latents(), seed=3, method=method, num_inference_steps=10)
        got = onnx_sampler.sample(BATCH, latents=latents(), seed=3, method=method, num_inference_steps=10)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
