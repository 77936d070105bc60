"""DPM-Solver++ (Lu et al. 2022), multistep order 2, ODE and SDE: the fused step against a float64 statement, the
per-step table against the solver's formulas, whole chains against diffusers' DPMSolverMultistepScheduler, and the
sampler's guarantees (determinism, prefix invariance, guidance, graphs).

Whole-model chains run on the torch references (cpu_reference); the kernel itself runs under the interpreter.
"""


import pytest
import torch

import ddpm_fast as df
from ddpm_fast.sampling.plan import build_plan
from ddpm_fast.kernels import PREDICTION_TYPES, cpu_reference
from ddpm_fast.vocabulary import STREAM_REVERSE_STEP
from ddpm_fast.sampling.dpm_solver import dpm_solver_table, dpm_solver_timesteps
from dummy_chains import SHAPE, dummy_model
from float64_reference import philox_noise64, predicted_x0

SMALL_MODEL = {"block_out_channels": (16, 32), "down_attention": (False, False), "up_attention": (False, True)}
PREDICTIONS = ["epsilon", "sample", "v_prediction"]
METHODS = {"dpm_solver++": "dpmsolver++", "sde_dpm_solver++": "sde-dpmsolver++"}


def solver_coefficients64(alphas_cumprod, chain, sde):
    """The solver's per-step scalars straight from diffusers' formulas, in float64 (α, σ from ᾱ; λ; h; r0)."""
    a = alphas_cumprod.double()
    alpha, sigma = a.sqrt(), (1 - a).sqrt()
    lam = alpha.log() - sigma.log()
    rows = []
    n = len(chain)
    for i, s0 in enumerate(chain):
        if i == n - 1:
            rows.append([alpha[s0], sigma[s0], 0.0, 1.0, 0.0, 0.0, 0.0])
            continue
        t = chain[i + 1]
        h = lam[t] - lam[s0]
        if sde:
            x_coef, d, noise = sigma[t] / sigma[s0] * torch.exp(-h), alpha[t] * (1 - torch.exp(-2 * h)), \
                sigma[t] * torch.sqrt(1 - torch.exp(-2 * h))
        else:
            x_coef, d, noise = sigma[t] / sigma[s0], -alpha[t] * (torch.exp(-h) - 1), 0.0
        if i == 0:
            rows.append([alpha[s0], sigma[s0], x_coef, d, 0.0, noise, 0.0])
        else:
            r0 = (lam[s0] - lam[chain[i - 1]]) / h
            rows.append([alpha[s0], sigma[s0], x_coef, d + 0.5 * d / r0, -0.5 * d / r0, noise, 0.0])
    return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64).T


@pytest.mark.parametrize("sde", [False, True])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_the_table_is_the_solvers_formulas(sde, schedule):
    s = getattr(df.NoiseSchedule, schedule)(1000)
    chain = dpm_solver_timesteps(1000, 15, "linspace")
    table = dpm_solver_table(s.alphas_cumprod, chain, sde)
    assert table.dtype == torch.float32 and table.shape == (7, 15)
    torch.testing.assert_close(table.double(), solver_coefficients64(s.alphas_cumprod, chain.tolist(), sde),
                               rtol=2e-7, atol=1e-9)


def test_timesteps_match_diffusers_spacings():
    diffusers = pytest.importorskip("diffusers")
    for spacing in ("linspace", "leading", "trailing"):
        for steps in (1, 2, 10, 15, 25, 50, 999):
            scheduler = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
            scheduler.set_timesteps(steps)
            try:
                ours = dpm_solver_timesteps(1000, steps, spacing).tolist()
            except ValueError:  # a spacing that repeats timesteps at this count: refused, where diffusers repeats
                assert len(set(scheduler.timesteps.tolist())) < steps or steps == 999
                continue
            assert ours == scheduler.timesteps.tolist(), (spacing, steps)
    with pytest.raises(ValueError, match="repeated"):
        dpm_solver_timesteps(1000, 1000, "linspace")


def _step_inputs(shape, dtype, channels_last, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 1.3
    output = torch.randn(shape, generator=g).to(dtype)
    prev = torch.randn(shape, generator=g)
    if channels_last and len(shape) == 4:
        x, output = (v.contiguous(memory_format=torch.channels_last) for v in (x, output))
    return x, output, prev


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("sde", [False, True])
@pytest.mark.parametrize("clip", [False, True])
def test_fused_step_vs_float64(device, prediction, sde, clip):
    s = df.NoiseSchedule.cosine(1000)
    chain = dpm_solver_timesteps(1000, 10, "trailing")
    table = dpm_solver_table(s.alphas_cumprod, chain, sde).to(device)
    shape = (4, 3, 5, 7)
    x, output, prev = (v.to(device) for v in _step_inputs(shape, torch.float32, False))
    columns = torch.tensor([0, 3, 7, 9], device=device)  # first order, second order, second order, the last step
    t = torch.from_numpy(chain)[columns.cpu()].to(device)
    seed = torch.tensor([3], device=device) if sde else None
    x_new, x0 = torch.ops.ddpm_fast.dpm_solver_step(output, t, columns, x, prev, table, None, seed, 0,
                                                    PREDICTION_TYPES[prediction], clip, 0.9)
    x64, prev64 = x.double().cpu(), prev.double().cpu()
    expected_x0 = predicted_x0(output.double().cpu(), x64, t.cpu(), s, prediction)
    if clip:
        expected_x0 = expected_x0.clamp(-0.9, 0.9)
    coef = table.double().cpu()[:, columns.cpu()].view(7, -1, 1, 1, 1)
    expected = coef[2] * x64 + coef[3] * expected_x0 + coef[4] * prev64
    if sde:
        expected = expected + coef[5] * philox_noise64(3, 4, t.cpu(), STREAM_REVERSE_STEP, shape, "cpu")
    torch.testing.assert_close(x0.double().cpu(), expected_x0, rtol=1e-5, atol=3e-5)
    torch.testing.assert_close(x_new.double().cpu(), expected, rtol=1e-5, atol=3e-5)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 5, 3, 7), (2, 4), (2, 3, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_step_layouts_dtypes_and_the_reference(device, shape, dtype, channels_last):
    s = df.NoiseSchedule.linear(1000)
    chain = dpm_solver_timesteps(1000, 10, "linspace")
    table = dpm_solver_table(s.alphas_cumprod, chain, True).to(device)
    x, output, prev = (v.to(device) for v in _step_inputs(shape, dtype, channels_last))
    columns = torch.arange(shape[0], device=device) + 1
    t = torch.from_numpy(chain)[columns.cpu()].to(device)
    seed = torch.tensor([5], device=device)
    got = torch.ops.ddpm_fast.dpm_solver_step(output, t, columns, x, prev, table, None, seed, 0, 2, False, 1.0)
    with cpu_reference():
        expected = torch.ops.ddpm_fast.dpm_solver_step(output.cpu().float().contiguous(), t.cpu(), columns.cpu(),
                                                       x.cpu().contiguous(), prev.cpu(), table.cpu(), None,
                                                       seed.cpu(), 0, 2, False, 1.0)
    for a, b in zip(got, expected):
        assert a.dtype == torch.float32 and a.shape == x.shape
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=3e-5)
    if channels_last and len(shape) == 4:
        assert got[0].is_contiguous(memory_format=torch.channels_last)


def test_a_first_order_step_ignores_a_non_finite_previous_estimate(device):
    s = df.NoiseSchedule.linear(100)
    chain = dpm_solver_timesteps(100, 5, "linspace")
    table = dpm_solver_table(s.alphas_cumprod, chain, False).to(device)
    x, output, prev = (v.to(device) for v in _step_inputs((2, 3, 4, 4), torch.float32, False))
    columns = torch.zeros(2, dtype=torch.int64, device=device)
    t = torch.full((2,), int(chain[0]), device=device)
    clean = torch.ops.ddpm_fast.dpm_solver_step(output, t, columns, x, prev, table, None, None, 0, 0, False, 1.0)
    dirty = torch.ops.ddpm_fast.dpm_solver_step(output, t, columns, x, torch.full_like(prev, float("nan")), table,
                                                None, None, 0, 0, False, 1.0)
    assert torch.equal(clean[0], dirty[0])


# ---------------------------------------------------------------------------------------------------------------
# chains


def small_unet(seed=0):
    torch.manual_seed(seed)
    return df.UNet.from_preset("tiny", sample_size=8, **SMALL_MODEL).eval()


def diffusers_chain(model, algorithm, steps, spacing, prediction_type, generator, dtype=torch.float32):
    import diffusers

    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, algorithm_type=algorithm,
        solver_order=2, timestep_spacing=spacing, final_sigmas_type="zero", prediction_type=prediction_type)
    scheduler.set_timesteps(steps)
    x = torch.randn(2, 3, 8, 8, generator=generator)
    noises = []
    with torch.no_grad():
        for t in scheduler.timesteps:
            output = model(x, t.expand(2))
            noise = torch.randn(x.shape, generator=generator) if algorithm.startswith("sde") else None
            noises.append(noise)
            x = scheduler.step(output, t, x, variance_noise=noise).prev_sample
    return x.clamp(-1, 1), scheduler.timesteps.tolist(), noises


def float64_chain(model, schedule, chain, sde, prediction_type, x, noises):
    """The solver in float64 from its formulas (solver_coefficients64), the model in float64 too."""
    model64 = small_unet().double()
    model64.load_state_dict(model.state_dict())
    coef = solver_coefficients64(schedule.alphas_cumprod, chain, sde)
    x = x.double()
    previous = None
    with torch.no_grad():
        for i, t in enumerate(chain):
            output = model64(x, torch.full((x.shape[0],), t))
            x0 = predicted_x0(output, x, torch.full((x.shape[0],), t), schedule, prediction_type)
            new = coef[2, i] * x + coef[3, i] * x0
            if coef[4, i] != 0:
                new = new + coef[4, i] * previous
            if sde:
                new = new + coef[5, i] * noises[i].double()
            x, previous = new, x0
    return x.clamp(-1, 1)


@pytest.mark.torch_references
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_chains_equal_diffusers_scheduler(method, steps, spacing):
    pytest.importorskip("diffusers")
    model = small_unet()
    prediction_type = "v_prediction" if spacing == "trailing" else "epsilon"
    schedule = df.NoiseSchedule.linear(1000)
    sampler = df.FastSampler(model, schedule, compile=False, channels_last=False, timestep_spacing=spacing,
                             prediction_type=prediction_type)
    with cpu_reference():
        ours = sampler.sample(2, generator=torch.Generator().manual_seed(1), method=method,
                              num_inference_steps=steps)
        theirs, timesteps, noises = diffusers_chain(model, METHODS[method], steps, spacing, prediction_type,
                                                    torch.Generator().manual_seed(1))
    assert sampler.timesteps(steps, method) == timesteps
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    if steps == 10:  # our error against the float64 solver is no worse than 2x diffusers'
        x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        with cpu_reference():
            exact = float64_chain(model, schedule, timesteps, method.startswith("sde"), prediction_type, x_T, noises)
        ours_error, their_error = (ours.double() - exact).abs().max(), (theirs.double() - exact).abs().max()
        assert ours_error <= 2 * their_error + 1e-6, (ours_error, their_error)


@pytest.mark.torch_references
def test_seeded_dpm_chains_are_deterministic_and_prefix_invariant():
    # v-prediction keeps a random model's x0 bounded, so the images are not all clamped to ±1
    sampler = df.FastSampler(small_unet(), df.NoiseSchedule.cosine(200), compile=False, prediction_type="v_prediction")
    with cpu_reference():
        for method in METHODS:
            full = sampler.sample(4, seed=3, method=method, num_inference_steps=12)
            assert torch.equal(full, sampler.sample(4, seed=3, method=method, num_inference_steps=12))
            # per-sample noise: a prefix or a shard draws the same images (up to batch-size-dependent convolution
            # rounding)
            close = dict(rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(full[:2], sampler.sample(2, seed=3, method=method, num_inference_steps=12),
                                       **close)
            torch.testing.assert_close(full[2:], sampler.sample(2, seed=3, method=method, num_inference_steps=12,
                                                                sample_offset=2), **close)
        ode = sampler.sample(2, seed=3, method="dpm_solver++", num_inference_steps=12)
        sde = sampler.sample(2, seed=3, method="sde_dpm_solver++", num_inference_steps=12)
        assert not torch.equal(ode, sde)
        # the runner of a (batch, method) serves every chain length (the table is data)
        runners = len(sampler.fast_path.runners)
        sampler.sample(2, seed=3, method="dpm_solver++", num_inference_steps=7)
    assert len(sampler.fast_path.runners) == runners


@pytest.mark.torch_references
@pytest.mark.parametrize("method", ["sde_dpm_solver++", "unipc"])
def test_guidance_works_with_the_multistep_solvers(method):
    """The guided step (one model call of 2B, the halves combined as the fused step reads them) equals the same
    combination done outside, as a plain ε-model, for the SDE DPM-Solver++ (with its noise) and UniPC."""
    torch.manual_seed(0)
    model = df.UNet.from_preset("tiny", sample_size=8, num_class_embeds=4, **SMALL_MODEL).eval()
    labels, w = torch.tensor([0, 2]), 2.5

    def guided_eps(x, t):  # the combination done outside, as a plain ε-model
        cond = model(x, t, class_labels=labels)
        uncond = model(x, t, class_labels=torch.full_like(labels, 3))
        return uncond + w * (cond - uncond)

    schedule = df.NoiseSchedule.linear(100)
    with cpu_reference():
        fused = df.FastSampler(model, schedule, null_class_label=3, compile=False).sample(
            2, seed=0, class_labels=labels, guidance_scale=w, method=method, num_inference_steps=8)
        outside = df.FastSampler(guided_eps, schedule, (3, 8, 8), compile=False).sample(
            2, seed=0, method=method, num_inference_steps=8)
    # One 2B model call against two B calls: the convolutions round differently per batch size, and guidance scales
    # that difference by 1 + 2w = 6 (measured up to 2.2e-4 after 8 steps); a wrong combination is off by O(1).
    torch.testing.assert_close(fused, outside, rtol=1e-4, atol=5e-4)


def test_dpm_solver_argument_errors():
    sampler = df.FastSampler(small_unet(), df.NoiseSchedule.linear(50), compile=False)
    with pytest.raises(ValueError, match="needs num_inference_steps"):
        sampler.sample(1, seed=0, method="dpm_solver++")
    with pytest.raises(ValueError, match="eta applies to method='ddim' only"):
        sampler.sample(1, seed=0, method="sde_dpm_solver++", num_inference_steps=5, eta=0.5)
    with pytest.raises(ValueError, match="method must be one of"):
        sampler.sample(1, seed=0, method="dpm_solver", num_inference_steps=5)
    with pytest.raises(ValueError, match="repeated"):
        sampler.sample(1, seed=0, method="dpm_solver++", num_inference_steps=50)


@pytest.mark.torch_references
def test_the_compiled_dpm_step_equals_the_eager_one():
    # The step core (model call, fused update, noise) under torch.compile, with the default options. The model is
    # diffusers' dummy one: the U-Net's own compile is test_unet's, and compiling it here too cost half a minute.
    schedule = df.NoiseSchedule.linear(100)
    eager = df.FastSampler(dummy_model, schedule, SHAPE, compile=False)
    compiled = df.FastSampler(dummy_model, schedule, SHAPE, compile=True)
    with cpu_reference():
        for method in METHODS:
            torch.testing.assert_close(compiled.sample(2, seed=1, method=method, num_inference_steps=6),
                                       eager.sample(2, seed=1, method=method, num_inference_steps=6),
                                       rtol=1e-4, atol=1e-4)
            assert compiled.last_report.compiled and not compiled.last_report.fell_back


@pytest.mark.gpu
@pytest.mark.parametrize("method", list(METHODS))
def test_dpm_cuda_graphs_equal_the_eager_loop(method):
    model = small_unet().cuda()
    schedule = df.NoiseSchedule.linear(1000)
    common = dict(dtype=torch.float32, compile=False)
    eager = df.FastSampler(model, schedule, cuda_graphs=False, **common)
    graphed = df.FastSampler(model, schedule, cuda_graphs=True, steps_per_graph=4, **common)
    for steps in (10, 25, 7):  # one captured set serves every length
        torch.testing.assert_close(graphed.sample(3, seed=1, method=method, num_inference_steps=steps),
                                   eager.sample(3, seed=1, method=method, num_inference_steps=steps),
                                   rtol=1e-5, atol=1e-5)
        assert graphed.last_report.cuda_graphs
    assert len(graphed.fast_path.runners) == 1


@pytest.mark.torch_references
@pytest.mark.parametrize("graph", ["model", "dpm_solver_step"])
def test_onnx_sampler_runs_dpm_solver(tmp_path, graph):
    """A model graph (the update fused in torch) and the dpm_solver_step graph (the whole step in ONNX Runtime, the
    step's solver column an input) both equal FastSampler, ODE and SDE, seed= and generator= noise."""
    pytest.importorskip("onnxruntime")
    from ddpm_fast.export import OnnxSampler, export_onnx

    model = small_unet(seed=2)
    schedule = df.NoiseSchedule.cosine(300)
    path = tmp_path / f"{graph}.onnx"
    with cpu_reference():
        export_onnx(model, path, graph=graph, schedule=schedule, prediction_type="v_prediction", clip_sample=True,
                    dynamic_spatial=False)  # a third less export time; dynamic graphs are test_onnx_export's
        fast = df.FastSampler(model, schedule, prediction_type="v_prediction", clip_sample=True, compile=False)
        onnx_sampler = OnnxSampler(path)
        for method in METHODS:
            for noise in (dict(seed=4), dict(generator=torch.Generator().manual_seed(4))):
                expected = fast.sample(3, method=method, num_inference_steps=12, **dict(
                    noise, generator=torch.Generator().manual_seed(4)) if "generator" in noise else noise)
                got = onnx_sampler.sample(3, method=method, num_inference_steps=12, **noise)
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        if graph == "dpm_solver_step":
            # Its default method is the ODE solver; other methods are refused by name.
            torch.testing.assert_close(onnx_sampler.sample(2, seed=1, num_inference_steps=8),
                                       fast.sample(2, seed=1, method="dpm_solver++", num_inference_steps=8),
                                       rtol=1e-4, atol=1e-4)
            with pytest.raises(ValueError, match="method='ddim' is not available"):
                onnx_sampler.sample(1, seed=0, method="ddim", num_inference_steps=4)
            with pytest.raises(ValueError, match="needs num_inference_steps"):
                onnx_sampler.sample(1, seed=0)
            # timesteps() plans the chain sample() runs by default for this file.
            assert onnx_sampler.timesteps(4) == fast.timesteps(4, "dpm_solver++")
            # run() gives both outputs: the step and the x0 estimate the next step takes.
            x, x0_prev = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
            column = build_plan(fast.schedule, "dpm_solver++", 12, fast.timestep_spacing).solver_table[:7, 1]
            prev_sample, x0 = onnx_sampler.run(sample=x, timestep=torch.tensor([200, 200]),
                                               solver_coefficients=column[:6], prev_pred_original_sample=x0_prev,
                                               noise=torch.zeros_like(x))
            expected_step, expected_x0 = torch.ops.ddpm_fast.dpm_solver_step(
                fast.model(x, torch.tensor([200, 200])), torch.tensor([200, 200]), torch.zeros(2, dtype=torch.int64),
                x, x0_prev, column.view(-1, 1).contiguous(), None, None, 0, PREDICTION_TYPES["v_prediction"], True, 1.0)
            torch.testing.assert_close(prev_sample, expected_step, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(x0, expected_x0, rtol=1e-4, atol=1e-4)
            with pytest.raises(ValueError, match=r"solver_coefficients must have shape \(6,\)"):
                onnx_sampler.run(sample=torch.zeros(1, 3, 8, 8), timestep=torch.tensor([5]),
                                 solver_coefficients=torch.zeros(5), prev_pred_original_sample=torch.zeros(1, 3, 8, 8),
                                 noise=torch.zeros(1, 3, 8, 8))
    assert onnx_sampler.timesteps(12, "dpm_solver++") == fast.timesteps(12, "dpm_solver++")


@pytest.mark.torch_references
def test_cli_samples_with_dpm_solver(tmp_path, capsys):
    with cpu_reference():  # whole-model runs (the interpreter would take minutes)
        _cli_samples_with_dpm_solver(tmp_path, capsys)


def _cli_samples_with_dpm_solver(tmp_path, capsys):
    from ddpm_fast.cli import main as cli
    from safetensors.torch import load_file

    model = small_unet(seed=3)
    setup = df.DiffusionSetup.from_schedule(df.NoiseSchedule.linear(200), prediction_type="v_prediction",
                                            sample_shape=(3, 8, 8))
    model.save(tmp_path / "unet", setup=setup)
    common = ["sample", "--checkpoint", str(tmp_path / "unet"), "--device", "cpu", "--no-compile",
              "--num-samples", "2"]
    out = tmp_path / "x.safetensors"
    assert cli.main(common + ["--method", "sde_dpm_solver++", "--steps", "10", "--out", str(out)]) == 0
    expected = df.FastSampler.from_pretrained(tmp_path / "unet", device="cpu", compile=False).sample(
        2, seed=0, method="sde_dpm_solver++", num_inference_steps=10)
    torch.testing.assert_close(load_file(str(out))["images"], expected, rtol=1e-4, atol=1e-4)
    capsys.readouterr()
    assert cli.main(common + ["--method", "dpm_solver++", "--out", str(tmp_path / "y.png")]) == 2
    error = capsys.readouterr().err
    assert "needs --steps" in error and error.count("\n") == 1


# ---------------------------------------------------------------------------------------------------------------
# solver_order=3: the table and the step with a second x0 history (its chains against diffusers:
# tests/test_dpm_solver_options.py)


def third_order_coefficients64(alphas_cumprod, chain, i, sde):
    """Step i's coefficients of x0, x0_prev, x0_prev2 from diffusers' third-order update, applied in float64 to the
    unit vectors (the update is linear in the three estimates)."""
    a = alphas_cumprod.double()
    lam = [(a[t].sqrt().log() - (1 - a[t]).sqrt().log()).item() for t in chain]
    alpha_t = a[chain[i + 1]].sqrt().item()
    h, h_0, h_1 = lam[i + 1] - lam[i], lam[i] - lam[i - 1], lam[i - 1] - lam[i - 2]
    r0, r1 = h_0 / h, h_1 / h
    m0, m1, m2 = torch.eye(3, dtype=torch.float64)
    d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
    d1, d2 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1), (d1_0 - d1_1) / (r0 + r1)
    e = torch.tensor(-h, dtype=torch.float64).exp()
    if sde:
        e2 = e * e
        return (alpha_t * (1 - e2) * m0 + alpha_t * ((1 - e2) / (-2 * h) + 1) * d1
                + alpha_t * ((1 - e2 - 2 * h) / (2 * h) ** 2 - 0.5) * d2)
    return -alpha_t * (e - 1) * m0 + alpha_t * ((e - 1) / h + 1) * d1 - alpha_t * ((e - 1 + h) / h ** 2 - 0.5) * d2


@pytest.mark.parametrize("sde", [False, True])
def test_the_third_order_table_is_diffusers_formula(sde):
    from ddpm_fast.sampling.dpm_solver import SolverOptions, step_orders

    s = df.NoiseSchedule.linear(1000)
    chain = dpm_solver_timesteps(1000, 20, "trailing")
    options = SolverOptions(solver_order=3)
    table = dpm_solver_table(s.alphas_cumprod, chain, sde, options).double()
    orders = step_orders(20, options)
    assert orders[:3] == [1, 2, 3] and orders[-1] == 1 and set(orders[2:-1]) == {3}
    second = dpm_solver_table(s.alphas_cumprod, chain, sde).double()  # the same chain at order 2
    torch.testing.assert_close(table[:, :2], second[:, :2])  # steps 0 and 1: orders 1 and 2 either way
    for i in range(2, 19):
        expected = third_order_coefficients64(s.alphas_cumprod, chain.tolist(), i, sde)
        torch.testing.assert_close(table[[3, 4, 6], i], expected, rtol=2e-6, atol=1e-8)
        torch.testing.assert_close(table[[0, 1, 2, 5], i], second[[0, 1, 2, 5], i])  # α_s, σ_s, x and z as order 2
    assert (table[6, :2] == 0).all() and table[6, -1] == 0


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("sde", [False, True])
def test_third_order_fused_step_vs_float64(device, prediction, sde):
    from ddpm_fast.sampling.dpm_solver import SolverOptions

    s = df.NoiseSchedule.cosine(1000)
    chain = dpm_solver_timesteps(1000, 10, "trailing")
    table = dpm_solver_table(s.alphas_cumprod, chain, sde, SolverOptions(solver_order=3)).to(device)
    shape = (4, 3, 5, 7)
    x, output, prev = (v.to(device) for v in _step_inputs(shape, torch.float32, False))
    prev2 = torch.randn(shape, generator=torch.Generator().manual_seed(9)).to(device)
    columns = torch.tensor([0, 1, 5, 9], device=device)  # orders 1, 2, 3 and the last (first order, to σ = 0)
    t = torch.from_numpy(chain)[columns.cpu()].to(device)
    seed = torch.tensor([3], device=device) if sde else None
    x_new, x0 = torch.ops.ddpm_fast.dpm_solver_step(output, t, columns, x, prev, table, None, seed, 0,
                                                    PREDICTION_TYPES[prediction], False, 1.0, None, prev2)
    x64, prev64, prev2_64 = x.double().cpu(), prev.double().cpu(), prev2.double().cpu()
    expected_x0 = predicted_x0(output.double().cpu(), x64, t.cpu(), s, prediction)
    coef = table.double().cpu()[:, columns.cpu()].view(7, -1, 1, 1, 1)
    expected = coef[2] * x64 + coef[3] * expected_x0 + coef[4] * prev64 + coef[6] * prev2_64
    if sde:
        expected = expected + coef[5] * philox_noise64(3, 4, t.cpu(), STREAM_REVERSE_STEP, shape, "cpu")
    torch.testing.assert_close(x0.double().cpu(), expected_x0, rtol=1e-5, atol=3e-5)
    torch.testing.assert_close(x_new.double().cpu(), expected, rtol=1e-5, atol=3e-5)
    # a history the column does not use is not read: NaN there changes nothing
    nan = torch.full_like(prev2, float("nan"))
    again = torch.ops.ddpm_fast.dpm_solver_step(output[:2], t[:2], columns[:2], x[:2], prev[:2], table, None, seed, 0,
                                                PREDICTION_TYPES[prediction], False, 1.0, None, nan[:2])
    assert torch.equal(again[0], x_new[:2])
