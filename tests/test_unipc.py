"""UniPC (Zhao et al. 2023), data prediction, UniP predictor + UniC corrector, bh1 / bh2, orders 1-3: the per-step
table against diffusers' UniPCMultistepScheduler's own arithmetic run in float64, the fused step against a float64
statement, whole chains against diffusers in float32 and against the float64 solver, and the sampler's guarantees
(one runner for every chain, OnnxSampler ≡ FastSampler, the options stored with the setup). Compiled ≡ eager and
guidance fused ≡ guidance outside are tested with DPM-Solver++'s, one test for both solvers (test_dpm_solver_options.py,
test_dpm_solver.py).

diffusers' own full-loop numbers for UniPC are in tests/test_latents.py. The table and chain tests run on the torch
references; the fused step runs on whichever CPU path the run takes (the interpreter's kernel, or its reference).
"""

import contextlib
import itertools

import numpy as np
import pytest
import torch

import ddpm_fast as df
from ddpm_fast.kernels import PREDICTION_TYPES, cpu_reference
from ddpm_fast.sampling.dpm_solver import SolverOptions, dpm_solver_chain
from ddpm_fast.sampling.plan import build_plan
from ddpm_fast.sampling.unipc import unipc_orders, unipc_table
from ddpm_fast.vocabulary import UNIPC_ROW_INDEX, UNIPC_ROWS
from dummy_chains import BATCH, LINEAR, SHAPE, DummyModule, dummy_model, last_x, latents

TERMS = ("x_coef", "last_coef", "x0_coef", "x0_prev_coef", "x0_prev2_coef", "x0_prev3_coef")


def diffusers_unipc(options: dict, steps: int, prediction_type: str = "epsilon", float64: bool = False):
    """diffusers' scheduler with these options; float64=True replaces its float32 σ grid by the chain's float64 one
    (the same points: dpm_solver_chain computes diffusers' set_timesteps in float64), so its own arithmetic runs in
    float64 on float64 inputs."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.UniPCMultistepScheduler(**LINEAR, prediction_type=prediction_type, **options)
    scheduler.set_timesteps(steps)
    if float64:
        _, alpha, sigma = dpm_solver_chain(df.NoiseSchedule.from_diffusers(LINEAR).alphas_cumprod, steps,
                                           options.get("timestep_spacing", "linspace"),
                                           options=SolverOptions(**_solver_options(options)))
        scheduler.sigmas = torch.from_numpy(sigma / alpha)
    return scheduler


def _solver_options(options: dict) -> dict:
    """The SolverOptions among a case's FastSampler keywords (timestep_spacing is the plan's)."""
    return {k: tuple(v) if k == "disable_corrector" else v for k, v in options.items() if k != "timestep_spacing"}


def diffusers_loop(model, options, steps, prediction_type, x, float64=False):
    scheduler = diffusers_unipc(options, steps, prediction_type, float64)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t.expand(x.shape[0])), t, x).prev_sample
    return x, scheduler.timesteps.tolist()


def table_chain(model, options, steps, prediction_type, x):
    """A chain from the float64 table alone (its two outputs as the module docstring writes them)."""
    schedule = df.NoiseSchedule.from_diffusers(LINEAR)
    solver = SolverOptions(**_solver_options(options))
    chain, alpha, sigma = dpm_solver_chain(schedule.alphas_cumprod, steps, options=solver)
    orders = unipc_orders(steps, solver.solver_order, solver.lower_order_final, sigma[-1] == 0)
    table = unipc_table(alpha, sigma, orders, solver.solver_type, solver.disable_corrector, torch.float64)
    last, history = torch.zeros_like(x), [torch.zeros_like(x)] * 3
    for i, t in enumerate(chain.tolist()):
        column = {name: table[UNIPC_ROW_INDEX[name], i] for name in UNIPC_ROWS}
        output = model(x, torch.full((x.shape[0],), t))
        a, s = column["alpha_s"], column["sigma_s"]
        x0 = {"epsilon": (x - s * output) / a, "sample": output, "v_prediction": a * x - s * output}[prediction_type]
        inputs = (x, last, x0, *history)
        corrected = sum(column["corrected_" + name] * value for name, value in zip(TERMS, inputs))
        x = sum(column[name] * value for name, value in zip(TERMS, inputs))
        last, history = corrected, [x0] + history[:2]
    return x, chain.tolist()


# ---------------------------------------------------------------------------------------------------- the table

GRID = list(itertools.product((6, 11), (1, 2, 3), ("bh1", "bh2"), (True, False), ("zero", "sigma_min"),
                              ((), (1, 3)), (None, "use_karras_sigmas", "use_exponential_sigmas")))


@pytest.mark.torch_references  # host arithmetic: no kernel
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_the_table_is_diffusers_arithmetic_in_float64(prediction_type):
    """Every order, B(h), lower_order_final, end, disable_corrector and σ spacing: a chain from the float64 table
    equals diffusers' own step() run in float64 to 1e-9, wherever diffusers' arithmetic is finite. Where it is not
    (bh1 to σ = 0: B(h) = −∞ times 0; order ≥ 2 into σ = 0: r_k = 0; Karras chains ending on σ_min: h = 0 in the
    solve), ours is that step's limit, finite."""
    torch.manual_seed(0)
    weight = torch.randn(3, 3, dtype=torch.float64) * 0.2

    def model(x, t):  # a smooth toy model, float64
        return torch.tanh(torch.einsum("ij,bjhw->bihw", weight, x) + 1e-3 * t.reshape(-1, 1, 1, 1))

    x_T = torch.randn(BATCH, 3, 4, 4, dtype=torch.float64)
    compared = non_finite = 0
    for steps, order, solver_type, lower_order_final, final, disable, spacing in GRID:
        options = dict(solver_order=order, solver_type=solver_type, lower_order_final=lower_order_final,
                       final_sigmas_type=final, disable_corrector=list(disable),
                       **({spacing: True} if spacing else {}))
        ours, chain = table_chain(model, options, steps, prediction_type, x_T)
        assert ours.isfinite().all(), options
        try:
            theirs, their_chain = diffusers_loop(model, options, steps, prediction_type, x_T, float64=True)
        except RuntimeError:  # diffusers' singular solve at r_k = 0
            non_finite += 1
            continue
        assert chain == their_chain, options
        if not theirs.isfinite().all():
            non_finite += 1
            continue
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9, msg=lambda m: f"{options}: {m}")
        compared += 1
    assert compared > 0.6 * len(GRID) and non_finite > 0, (compared, non_finite)


def test_orders_follow_diffusers_rule():
    assert unipc_orders(6, 3, True, True) == [1, 2, 3, 3, 2, 1]
    assert unipc_orders(6, 3, False, False) == [1, 2, 3, 3, 3, 3]
    assert unipc_orders(6, 3, False, True) == [1, 2, 3, 3, 3, 1]  # σ = 0 ends first order, whatever the options
    assert unipc_orders(2, 2, True, False) == [1, 1]


# ------------------------------------------------------------------------------------------------ the fused step


def _table(order=3, solver_type="bh2", steps=8):
    schedule = df.NoiseSchedule.cosine(1000)
    _, alpha, sigma = dpm_solver_chain(schedule.alphas_cumprod, steps, "trailing")
    return unipc_table(alpha, sigma, unipc_orders(steps, order, True, True), solver_type)


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("history", [1, 2, 3])
@pytest.mark.parametrize("guided", [False, True])
def test_fused_step_vs_float64(device, prediction, history, guided):
    table = _table(order=history).to(device)
    shape = (3, 4, 5, 7)
    generator = torch.Generator().manual_seed(history)
    x, last, *earlier = (torch.randn(shape, generator=generator).to(device) for _ in range(2 + history))
    output = torch.randn((2 * shape[0] if guided else shape[0], *shape[1:]), generator=generator).to(device)
    w = torch.tensor([2.5], device=device) if guided else None
    columns = torch.tensor([0, 3, 7], device=device)  # the first step, a full-order one, the last (to σ = 0)
    clip = prediction == "sample"
    padded = earlier + [None] * (3 - history)
    x_next, corrected, x0 = torch.ops.ddpm_fast.unipc_step(output, columns, x, last, *padded, table,
                                                           PREDICTION_TYPES[prediction], clip, 0.8, w)
    coef = table.double().cpu()[:, columns.cpu()].view(len(UNIPC_ROWS), -1, 1, 1, 1)
    out64 = output.double().cpu()
    if guided:
        out64 = out64[3:] + 2.5 * (out64[:3] - out64[3:])
    x64 = x.double().cpu()
    a, s = coef[UNIPC_ROW_INDEX["alpha_s"]], coef[UNIPC_ROW_INDEX["sigma_s"]]
    expected_x0 = {"epsilon": (x64 - s * out64) / a, "sample": out64, "v_prediction": a * x64 - s * out64}[prediction]
    if clip:
        expected_x0 = expected_x0.clamp(-0.8, 0.8)
    inputs = [x64, last.double().cpu(), expected_x0] + [h.double().cpu() for h in earlier]
    for got, prefix in ((x_next, ""), (corrected, "corrected_")):
        expected = sum(coef[UNIPC_ROW_INDEX[prefix + name]] * value for name, value in zip(TERMS, inputs))
        torch.testing.assert_close(got.double().cpu(), expected, rtol=1e-5, atol=3e-5)
    torch.testing.assert_close(x0.double().cpu(), expected_x0, rtol=1e-5, atol=3e-5)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 5, 3, 7), (2, 4), (2, 3, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_step_layouts_dtypes_and_the_reference(device, shape, dtype, channels_last):
    table = _table().to(device)
    layout = torch.channels_last if channels_last and len(shape) == 4 else torch.contiguous_format
    generator = torch.Generator().manual_seed(1)
    x, last, h1, h2, h3 = (torch.randn(shape, generator=generator).to(device).contiguous(memory_format=layout)
                           for _ in range(5))
    output = torch.randn(shape, generator=generator).to(device, dtype).contiguous(memory_format=layout)
    columns = torch.arange(shape[0], device=device) + 2
    got = torch.ops.ddpm_fast.unipc_step(output, columns, x, last, h1, h2, h3, table, 2, False, 1.0)
    with cpu_reference():
        expected = torch.ops.ddpm_fast.unipc_step(output.cpu().float().contiguous(), columns.cpu(),
                                                  x.cpu().contiguous(), last.cpu(), h1.cpu(), h2.cpu(), h3.cpu(),
                                                  table.cpu(), 2, False, 1.0)
    for a, b in zip(got, expected):
        assert a.dtype == torch.float32 and a.shape == x.shape
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=3e-5)
    if channels_last and len(shape) == 4:
        assert all(out.is_contiguous(memory_format=torch.channels_last) for out in got)


def test_a_term_whose_coefficients_are_zero_is_not_read(device):
    """The first step has no corrector and no history: NaN in those buffers (an earlier run's, anything) stays out."""
    table = _table().to(device)
    generator = torch.Generator().manual_seed(2)
    x, output = (torch.randn(2, 3, 4, 4, generator=generator).to(device) for _ in range(2))
    nan = torch.full_like(x, float("nan"))
    first = torch.zeros(2, dtype=torch.int64, device=device)
    clean = torch.ops.ddpm_fast.unipc_step(output, first, x, torch.zeros_like(x), torch.zeros_like(x),
                                           torch.zeros_like(x), torch.zeros_like(x), table, 0, False, 1.0)
    dirty = torch.ops.ddpm_fast.unipc_step(output, first, x, nan, nan, nan, nan, table, 0, False, 1.0)
    for a, b in zip(clean, dirty):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------------ chains

CHAIN_CASES = [
    dict(),  # diffusers' defaults: order 2, bh2, lower_order_final, ending at σ = 0
    dict(solver_order=3, final_sigmas_type="sigma_min"),
    dict(solver_order=1, solver_type="bh1", final_sigmas_type="sigma_min"),
    dict(solver_order=3, solver_type="bh1", lower_order_final=False, final_sigmas_type="sigma_min"),
    dict(use_karras_sigmas=True, disable_corrector=[0, 2]),
    dict(solver_order=3, use_exponential_sigmas=True, final_sigmas_type="sigma_min"),
    dict(solver_order=3, thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5),
    dict(timestep_spacing="leading", solver_type="bh1", final_sigmas_type="sigma_min"),
    dict(timestep_spacing="trailing", solver_order=3),
]


def _case_id(options):
    return "-".join(f"{k}={v}" for k, v in options.items()) or "defaults"


@pytest.mark.parametrize("prediction_type", ["epsilon", pytest.param("sample", marks=pytest.mark.torch_references),
                                             pytest.param("v_prediction", marks=pytest.mark.torch_references)])
@pytest.mark.parametrize("options", CHAIN_CASES, ids=[_case_id(case) for case in CHAIN_CASES])
def test_chains_equal_diffusers_and_float64(options, prediction_type):
    """fp32 on the dummy model, 10 steps from the same latents: within 1e-4 of diffusers' float32 loop beyond its own
    error, within 5e-5 of diffusers' arithmetic in float64, and no further from that than 2x diffusers."""
    schedule = df.NoiseSchedule.from_diffusers(LINEAR)
    sampler = df.FastSampler(dummy_model, schedule, SHAPE, compile=False, prediction_type=prediction_type,
                             **options)
    with cpu_reference() if prediction_type != "epsilon" else contextlib.nullcontext():  # as the marks say
        ours = sampler.sample(BATCH, latents=latents(), seed=0, method="unipc", num_inference_steps=10)
    raw = last_x(sampler)
    theirs, timesteps = diffusers_loop(dummy_model, options, 10, prediction_type, latents())
    exact, _ = diffusers_loop(dummy_model, options, 10, prediction_type, latents().double(), float64=True)
    assert sampler.timesteps(10, "unipc") == timesteps
    torch.testing.assert_close(ours, raw.clamp(-1.0, 1.0), rtol=0, atol=0)
    ours_error, their_error = (raw.double() - exact).abs().max(), (theirs.double() - exact).abs().max()
    assert ours_error < 5e-5 and ours_error <= 2 * their_error + 1e-6, (ours_error, their_error)
    torch.testing.assert_close(raw, theirs, rtol=1e-4, atol=1e-4 + float(their_error))


SMALL_MODEL = {"block_out_channels": (16, 32), "down_attention": (False, False), "up_attention": (False, True)}


def small_unet(seed=0):
    torch.manual_seed(seed)
    return df.UNet.from_preset("tiny", sample_size=8, **SMALL_MODEL).eval()


@pytest.mark.torch_references  # a small U-Net's chains: the interpreter would take minutes
@pytest.mark.parametrize("options", [dict(), dict(solver_order=3, solver_type="bh1", final_sigmas_type="sigma_min")],
                         ids=["defaults", "order3-bh1-sigma_min"])
def test_unet_chains_equal_diffusers_and_float64(options):
    """A small U-Net, ε and v: ours within 1e-4 of diffusers (beyond its own error) and no further from the float64
    solver (diffusers' arithmetic in float64, the model in float64) than 2x diffusers, above the float32 model's own
    rounding."""
    model = small_unet()
    model64 = small_unet().double()
    schedule = df.NoiseSchedule.from_diffusers(LINEAR)
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for prediction_type in ("epsilon", "v_prediction"):
        sampler = df.FastSampler(model, schedule, compile=False, channels_last=False, prediction_type=prediction_type,
                                 **options)
        with cpu_reference():
            ours = sampler.sample(2, latents=x_T, seed=0, method="unipc", num_inference_steps=10)
            theirs, _ = diffusers_loop(model, options, 10, prediction_type, x_T)
            exact, _ = diffusers_loop(model64, options, 10, prediction_type, x_T.double(), float64=True)
        exact, theirs = exact.clamp(-1, 1), theirs.clamp(-1, 1)
        ours_error, their_error = (ours.double() - exact).abs().max(), (theirs.double() - exact).abs().max()
        assert ours_error <= 2 * their_error + 3e-5 and ours_error < 1e-4, (prediction_type, ours_error, their_error)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4 + float(their_error))


@pytest.mark.torch_references  # runner caching is the same on both paths
def test_every_chain_shares_one_runner_and_is_deterministic():
    sampler = df.FastSampler(dummy_model, df.NoiseSchedule.from_diffusers(LINEAR), SHAPE, compile=False,
                             solver_order=3)
    with cpu_reference():
        first = sampler.sample(BATCH, seed=4, method="unipc", num_inference_steps=12)
        assert torch.equal(first, sampler.sample(BATCH, seed=4, method="unipc", num_inference_steps=12))
        for steps in (5, 7, 20):
            sampler.sample(BATCH, seed=4, method="unipc", num_inference_steps=steps)
    assert len(sampler.fast_path.runners) == 1


@pytest.mark.gpu
@pytest.mark.parametrize("options", [dict(), dict(solver_order=3, use_karras_sigmas=True, solver_type="bh1",
                                                  final_sigmas_type="sigma_min")], ids=["defaults", "order3-karras"])
def test_cuda_graphs_equal_the_eager_loop_across_lengths(options):
    """One captured set serves every chain length (written for the lent GPU)."""
    model = small_unet().cuda()
    schedule = df.NoiseSchedule.linear(1000)
    common = dict(dtype=torch.float32, compile=False, **options)
    eager = df.FastSampler(model, schedule, cuda_graphs=False, **common)
    graphed = df.FastSampler(model, schedule, cuda_graphs=True, steps_per_graph=4, **common)
    for steps in (10, 25, 7):
        torch.testing.assert_close(graphed.sample(3, seed=1, method="unipc", num_inference_steps=steps),
                                   eager.sample(3, seed=1, method="unipc", num_inference_steps=steps),
                                   rtol=1e-5, atol=1e-5)
        assert graphed.last_report.cuda_graphs
    assert len(graphed.fast_path.runners) == 1


# --------------------------------------------------------------------------------------- setup, errors, the CLI


def test_the_options_travel_with_the_setup(tmp_path):
    from ddpm_fast.interop.diffusers_scheduler import setup_from_diffusers_config

    schedule = df.NoiseSchedule.from_diffusers(LINEAR)
    sampler = df.FastSampler(dummy_model, schedule, SHAPE, compile=False, solver_type="bh1",
                             disable_corrector=[3, 1, 3])
    setup = sampler.setup
    assert (setup.solver_type, setup.disable_corrector) == ("bh1", (1, 3))
    stored = setup.to_dict()
    assert stored["solver_type"] == "bh1" and stored["disable_corrector"] == [1, 3]
    assert "solver_type" not in df.FastSampler(dummy_model, schedule, SHAPE, compile=False).setup.to_dict()
    setup.save(tmp_path)
    assert df.DiffusionSetup.load(tmp_path) == setup
    read = setup_from_diffusers_config(setup.to_diffusers_config())
    assert (read.solver_type, read.disable_corrector) == ("bh1", (1, 3))
    # a UniPCMultistepScheduler's own config, as diffusers writes it
    unipc = diffusers_unipc(dict(solver_type="bh1", disable_corrector=[2], solver_order=3), 10)
    read = setup_from_diffusers_config(dict(unipc.config))
    assert (read.solver_type, read.disable_corrector, read.solver_order) == ("bh1", (2,), 3)
    # DPMSolverMultistepScheduler's solver_type of the same name means its second-order form
    dpm = pytest.importorskip("diffusers").DPMSolverMultistepScheduler(**LINEAR)
    assert setup_from_diffusers_config(dict(dpm.config)).solver_type == "bh2"
    with pytest.raises(ValueError, match="solver_type='heun'"):
        setup_from_diffusers_config(dict(dpm.config, solver_type="heun"))


def test_from_pretrained_reads_the_stored_options_and_checks_given_ones(tmp_path):
    setup = df.DiffusionSetup.from_schedule(df.NoiseSchedule.linear(50), sample_shape=(3, 8, 8), solver_type="bh1",
                                            disable_corrector=(0, 2))
    small_unet().save(tmp_path / "unet", setup=setup)
    sampler = df.FastSampler.from_pretrained(tmp_path / "unet", device="cpu", compile=False,
                                             disable_corrector=[2, 0])
    assert (sampler.solver_type, sampler.disable_corrector) == ("bh1", (0, 2)) and sampler.setup.solver_type == "bh1"
    with pytest.raises(df.SetupConflict, match=r"solver_type='bh2' contradicts the setup stored .*solver_type='bh1'"):
        df.FastSampler.from_pretrained(tmp_path / "unet", device="cpu", solver_type="bh2")
    assert df.FastSampler.from_pretrained(tmp_path / "unet", device="cpu", compile=False, solver_type="bh2",
                                          override_setup=True).solver_type == "bh2"
    # a model whose setup leaves the solver options at their defaults (a fresh training run's): the caller chooses
    small_unet().save(tmp_path / "plain", setup=df.DiffusionSetup.from_schedule(df.NoiseSchedule.linear(50),
                                                                                sample_shape=(3, 8, 8)))
    chosen = df.FastSampler.from_pretrained(tmp_path / "plain", device="cpu", compile=False, solver_type="bh1",
                                            solver_order=3, disable_corrector=[1], use_karras_sigmas=True)
    assert (chosen.solver_type, chosen.solver_order, chosen.disable_corrector, chosen.use_karras_sigmas) == \
        ("bh1", 3, (1,), True)


def test_option_errors_name_the_argument():
    schedule = df.NoiseSchedule.linear(50)
    with pytest.raises(ValueError, match="solver_type must be one of bh1, bh2"):
        df.FastSampler(dummy_model, schedule, SHAPE, solver_type="midpoint")
    with pytest.raises(TypeError, match="disable_corrector must be a list of step indices"):
        df.FastSampler(dummy_model, schedule, SHAPE, disable_corrector=3)
    with pytest.raises(TypeError, match="disable_corrector must hold ints"):
        df.FastSampler(dummy_model, schedule, SHAPE, disable_corrector=[1.0])
    with pytest.raises(ValueError, match="disable_corrector must hold step indices >= 0"):
        df.FastSampler(dummy_model, schedule, SHAPE, disable_corrector=[-1])
    sampler = df.FastSampler(dummy_model, schedule, SHAPE, compile=False)
    with pytest.raises(ValueError, match="needs num_inference_steps"):
        sampler.sample(1, seed=0, method="unipc")
    with pytest.raises(ValueError, match="eta applies to method='ddim' only"):
        sampler.sample(1, seed=0, method="unipc", num_inference_steps=5, eta=0.3)


def test_the_plan_puts_the_unipc_table_in_the_solver_rows():
    schedule = df.NoiseSchedule.linear(100)
    plan = build_plan(schedule, "unipc", 7, solver_options=SolverOptions(solver_order=3))
    _, alpha, sigma = dpm_solver_chain(schedule.alphas_cumprod, 7)
    expected = unipc_table(alpha, sigma, unipc_orders(7, 3, True, True))
    assert torch.equal(plan.solver_table[:len(UNIPC_ROWS), :7], expected)
    assert not plan.solver_table[:, 7:].any()
    assert np.array_equal(plan.timesteps, dpm_solver_chain(schedule.alphas_cumprod, 7)[0])


@pytest.mark.torch_references
def test_onnx_sampler_runs_unipc_with_a_model_graph(tmp_path):
    """OnnxSampler's model graph with the fused update in torch equals FastSampler, the options read from the file."""
    pytest.importorskip("onnxruntime")
    from ddpm_fast.export import OnnxSampler, export_onnx

    schedule = df.NoiseSchedule.from_diffusers(LINEAR)
    path = tmp_path / "model.onnx"
    options = dict(solver_order=3, solver_type="bh1", disable_corrector=[1])
    with cpu_reference():
        export_onnx(DummyModule(), path, SHAPE, schedule=schedule, prediction_type="v_prediction", **options)
        fast = df.FastSampler(dummy_model, schedule, SHAPE, prediction_type="v_prediction", compile=False, **options)
        onnx_sampler = OnnxSampler(path)
        assert (onnx_sampler.solver_options.solver_type, onnx_sampler.solver_options.disable_corrector) == \
            ("bh1", (1,))
        expected = fast.sample(3, latents=latents().repeat(2, 1, 1, 1)[:3], seed=4, method="unipc",
                               num_inference_steps=9)
        got = onnx_sampler.sample(3, latents=latents().repeat(2, 1, 1, 1)[:3], seed=4, method="unipc",
                                  num_inference_steps=9)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert onnx_sampler.timesteps(9, "unipc") == fast.timesteps(9, "unipc")


def test_cli_samples_with_unipc(tmp_path, capsys):
    from ddpm_fast.cli import main as cli

    folder = tmp_path / "unet"  # a model whose setup stores UniPC's options: the flags may repeat them
    small_unet().save(folder, setup=df.DiffusionSetup.from_schedule(
        df.NoiseSchedule.linear(100), sample_shape=(3, 8, 8), solver_type="bh1", solver_order=3,
        disable_corrector=(0, 2)))
    out = tmp_path / "grid.png"
    with cpu_reference():
        code = cli.main(["sample", "--checkpoint", str(folder), "--method", "unipc", "--steps", "6",
                         "--solver-type", "bh1", "--solver-order", "3", "--disable-corrector", "0,2",
                         "--num-samples", "2", "--out", str(out), "--device", "cpu", "--no-compile"])
    assert code == 0 and out.is_file(), capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        cli.main(["sample", "--checkpoint", str(folder), "--method", "unipc", "--steps", "6",
                  "--disable-corrector", "0,x", "--out", str(out)])
    code, err = exit.value.code, capsys.readouterr().err
    assert code == 2 and "--disable-corrector" in err and "Traceback" not in err


@pytest.mark.torch_references
def test_the_unipc_step_graph_equals_fast_sampler(tmp_path):
    """The whole UniPC step in ONNX Runtime (the step's column of the chain's table an input): one graph serves every
    order, B(h) and chain length (they are the column), guided too; other methods and thresholding are refused by
    name."""
    pytest.importorskip("onnxruntime")
    from ddpm_fast.export import OnnxSampler, export_onnx

    torch.manual_seed(0)
    model = df.UNet.from_preset("tiny", sample_size=8, num_class_embeds=4, **SMALL_MODEL).eval()
    schedule = df.NoiseSchedule.cosine(300)
    path = tmp_path / "unipc.onnx"
    stored = dict(solver_order=3, solver_type="bh1", final_sigmas_type="sigma_min")
    with cpu_reference():
        export_onnx(model, path, graph="unipc_step", schedule=schedule, prediction_type="v_prediction",
                    dynamic_spatial=False,  # a third less export time; dynamic graphs are test_onnx_export's
                    null_class_label=3, **stored)
        onnx_sampler = OnnxSampler(path)
        assert onnx_sampler.solver_options == SolverOptions(**stored)
        for options in (stored, {}):
            # the same graph under other options, as a file storing them would run it
            onnx_sampler.solver_options = SolverOptions(**options)
            fast = df.FastSampler(model, schedule, prediction_type="v_prediction", null_class_label=3,
                                  compile=False, **options)
            for steps, guidance in ((9, None), (5, 2.0)):
                common = dict(seed=4, num_inference_steps=steps, class_labels=[0, 2], guidance_scale=guidance)
                torch.testing.assert_close(onnx_sampler.sample(2, **common),
                                           fast.sample(2, method="unipc", **common), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="method='ddim' is not available"):
        onnx_sampler.sample(1, seed=0, method="ddim", num_inference_steps=4, class_labels=[0])
    onnx_sampler.solver_options = SolverOptions(thresholding=True)
    with pytest.raises(ValueError, match="this unipc_step graph computes the update from the model's own x0"):
        onnx_sampler.sample(1, seed=0, num_inference_steps=4, class_labels=[0])
