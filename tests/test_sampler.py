"""FastSampler: determinism, per-sample noise, parity with the naive reference and with diffusers (DDPMPipeline,
respaced; DDIMScheduler), every model kind, options, the graph cache, errors; CUDA graphs on a GPU (marked `gpu`).

Whole-U-Net runs take the GroupNorm references (`cpu_reference`): the interpreter runs Triton programs one at a time.
The small conv model below runs the interpreted step and noise kernels themselves.
"""

import logging
import time

import pytest
import torch
from torch import nn

import ddpm_fast as df
from ddpm_fast import reference
from ddpm_fast.kernels import cpu_reference
from ddpm_fast.sampling import fast_path as fast_path_module
from ddpm_fast.seed_functions import _seed_coefficient_table, sample_with_fast_sampler

T = 12
FP32 = dict(dtype=torch.float32, compile=False)  # exact comparisons: no bf16, no compile time


class ConvEpsModel(nn.Module):
    """A cheap ε(x, t) with a time embedding; out_channels=2C gives a learned-variance model."""

    def __init__(self, channels=3, out_channels=None, width=8, num_timesteps=1000):
        super().__init__()
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.out = nn.Conv2d(width, out_channels or channels, 3, padding=1)
        self.time = nn.Embedding(num_timesteps, width)

    def forward(self, x, t):
        return self.out(torch.tanh(self.inp(x) + self.time(t)[:, :, None, None]))


def tiny_unet(seed=0):
    torch.manual_seed(seed)
    return df.UNet.from_preset("tiny").eval()


def seed_linear(num_timesteps):
    """1e-4 → 0.02 at any T: the seed's linear_beta_schedule and diffusers' "linear" (NoiseSchedule.linear scales β by
    1000/T where these are left out)."""
    return df.NoiseSchedule.linear(num_timesteps, beta_start=1e-4, beta_end=0.02)


def schedule_terms(num_timesteps):
    terms = reference.schedule_terms(reference.linear_beta_schedule(num_timesteps))
    return (terms["betas"], terms["sqrt_recip_alphas"], terms["sqrt_one_minus_alphas_cumprod"],
            terms["posterior_variance"])


# ------------------------------------------------------------------------------------------ core properties


def test_same_seed_same_images_and_prefix_invariance():
    sampler = df.FastSampler(ConvEpsModel(), seed_linear(T), (3, 8, 8), **FP32)
    five = sampler.sample(5, seed=3)
    assert torch.equal(five, sampler.sample(5, seed=3))
    torch.testing.assert_close(sampler.sample(2, seed=3), five[:2], rtol=1e-5, atol=1e-5)
    assert not torch.equal(five, sampler.sample(5, seed=4))
    assert five.dtype == torch.float32 and five.abs().max() <= 1
    assert five.is_contiguous()  # NCHW, whatever layout the model ran in


def test_a_shard_draws_its_part_of_the_batch_noise():
    sampler = df.FastSampler(ConvEpsModel(), seed_linear(T), (3, 8, 8), **FP32)
    whole = sampler.sample(4, seed=9)
    torch.testing.assert_close(sampler.sample(2, seed=9, sample_offset=2), whole[2:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_ddpm_equals_the_naive_reference_with_generator_noise(channels_last):
    # The interpreted p_step kernel on a small model; noise from one generator stream in the reference's order.
    model = ConvEpsModel(num_timesteps=T).eval()
    sampler = df.FastSampler(model, seed_linear(T), (3, 6, 6), channels_last=channels_last, **FP32)
    got = sampler.sample(3, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(7)
    with torch.no_grad():
        expected = reference.sample(model, 3, (3, 6, 6), T, *schedule_terms(T))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.torch_references
def test_unet_sampling_equals_the_naive_reference():
    model = tiny_unet()
    with cpu_reference():
        sampler = df.FastSampler(model, seed_linear(T), **FP32)
        got = sampler.sample(2, generator=torch.Generator().manual_seed(1))
        torch.manual_seed(1)
        with torch.no_grad():
            expected = reference.sample(model, 2, 32, T, *schedule_terms(T))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method,steps,eta", [("ddpm", 4, 0.0), ("ddim", 4, 0.0), ("ddim", 5, 1.0),
                                              ("ddim", None, 0.5)])
def test_respaced_and_ddim_chains_give_finite_images(method, steps, eta):
    sampler = df.FastSampler(ConvEpsModel(), df.NoiseSchedule.cosine(T), (3, 5, 7), **FP32)
    images = sampler.sample(3, seed=2, num_inference_steps=steps, method=method, eta=eta)
    assert images.shape == (3, 3, 5, 7) and torch.isfinite(images).all()
    assert sampler.last_report.num_steps == (steps or T)
    assert images.abs().max() <= 1


def test_printed_report_shows_sampling_time_and_images_per_second():
    sampler = df.FastSampler(ConvEpsModel(), seed_linear(T), (3, 6, 6), **FP32)
    sampler.sample(2, seed=0, num_inference_steps=3, method="ddim")
    report = sampler.last_report
    shown = str(report)
    assert shown == repr(report) and shown.startswith("SamplingReport(batch_size=2, num_steps=3,")
    assert f"sampling_seconds={report.sampling_seconds:.4g}" in shown
    assert f"images_per_second={report.images_per_second:.4g}" in shown and report.images_per_second > 0
    assert shown.index("setup_seconds=") < shown.index("sampling_seconds=") and "_start" not in shown


def test_ddim_eta_zero_is_deterministic_given_x_T():
    sampler = df.FastSampler(ConvEpsModel(), seed_linear(T), (3, 6, 6), **FP32)
    first = sampler.sample(2, seed=5, method="ddim", num_inference_steps=4)
    assert torch.equal(first, sampler.sample(2, seed=5, method="ddim", num_inference_steps=4))


def test_ddim_equals_diffusers_ddim_scheduler():
    diffusers = pytest.importorskip("diffusers")
    model = ConvEpsModel().eval()
    steps, total = 5, 50
    sampler = df.FastSampler(model, seed_linear(total), (3, 6, 6), timestep_spacing="leading", **FP32)
    got = sampler.sample(2, generator=torch.Generator().manual_seed(3), method="ddim", num_inference_steps=steps)

    scheduler = diffusers.DDIMScheduler(num_train_timesteps=total, clip_sample=False, set_alpha_to_one=True)
    scheduler.set_timesteps(steps)
    x = torch.randn((2, 3, 6, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t.expand(2)), t, x, eta=0.0).prev_sample
    assert sampler.last_report.num_steps == steps
    torch.testing.assert_close(got, x.clamp(-1, 1), rtol=1e-4, atol=1e-4)


def test_learned_range_model():
    sampler = df.FastSampler(ConvEpsModel(out_channels=6), seed_linear(T), (3, 6, 6), **FP32,
                             variance_type="learned_range")
    for method in ("ddpm", "ddim"):
        images = sampler.sample(2, seed=1, method=method, num_inference_steps=6)
        assert images.shape == (2, 3, 6, 6) and torch.isfinite(images).all()


def test_prediction_types_and_clipping():
    for prediction_type in ("sample", "v_prediction"):
        sampler = df.FastSampler(ConvEpsModel(), seed_linear(T), (3, 6, 6), **FP32,
                                 prediction_type=prediction_type, clip_sample=True, variance_type="fixed_large")
        assert torch.isfinite(sampler.sample(2, seed=0)).all()


# ------------------------------------------------------------------------------------------------ diffusers


def _pipeline(unet_config):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel.from_config(unet_config).eval()
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T, clip_sample=True)
    return diffusers.DDPMPipeline(unet=unet, scheduler=scheduler)


TINY_DIFFUSERS = {"sample_size": 8, "in_channels": 3, "out_channels": 3, "block_out_channels": [16, 32],
                  "layers_per_block": 1, "norm_num_groups": 8,
                  "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
                  "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]}


@pytest.mark.torch_references
@pytest.mark.parametrize("steps", [T, 4])
def test_from_diffusers_pipeline_gives_the_pipeline_images(steps, tmp_path):
    pipe = _pipeline(TINY_DIFFUSERS)
    expected = pipe(batch_size=2, generator=torch.Generator().manual_seed(4), num_inference_steps=steps,
                    output_type="np").images
    for source in (pipe, tmp_path):
        if source is tmp_path:
            pipe.save_pretrained(tmp_path)
        # The instance with every default: on a CPU the drop-in gives the pipeline's own (float32) images.
        sampler = df.FastSampler.from_diffusers(source, **({} if source is pipe else FP32))
        assert sampler.dtype == torch.float32 and not sampler.cuda_graphs
        assert sampler.clip_sample and sampler.sample_shape == (3, 8, 8) and sampler.timestep_spacing == "leading"
        with cpu_reference():
            images = sampler.sample(2, generator=torch.Generator().manual_seed(4), num_inference_steps=steps)
        got = (images / 2 + 0.5).permute(0, 2, 3, 1).numpy()
        assert abs(got - expected).max() < 2e-4


@pytest.mark.torch_references
def test_a_diffusers_unet_directly_and_our_conversion_agree():
    pipe = _pipeline(TINY_DIFFUSERS)
    schedule = seed_linear(T)
    theirs = df.FastSampler(pipe.unet, schedule, **FP32)  # UNet2DModel: config gives the shape, .sample is unwrapped
    ours = df.FastSampler(df.UNet.from_diffusers(pipe.unet), schedule, **FP32)
    with cpu_reference():
        torch.testing.assert_close(theirs.sample(2, seed=1), ours.sample(2, seed=1), rtol=1e-4, atol=1e-4)


def test_from_diffusers_refuses_what_it_cannot_sample(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such pipeline folder"):
        df.FastSampler.from_diffusers(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="scheduler"):
        df.FastSampler.from_diffusers(tmp_path)
    with pytest.raises(TypeError, match="DDPMPipeline"):
        df.FastSampler.from_diffusers(42)


# ------------------------------------------------------------------------------------------ model kinds, options


def test_model_kinds_give_the_same_images():
    model = ConvEpsModel().eval()
    schedule = seed_linear(T)
    expected = df.FastSampler(model, schedule, (3, 6, 6), channels_last=False, **FP32).sample(2, seed=8)

    def function(x, t):
        return model(x, t)

    class TupleModel(nn.Module):  # diffusers' return_dict=False style
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x, t):
            return (self.inner(x, t),)

    for kind in (function, TupleModel()):
        torch.testing.assert_close(df.FastSampler(kind, schedule, (3, 6, 6), **FP32).sample(2, seed=8), expected,
                                   rtol=1e-5, atol=1e-5)


def test_the_model_passed_in_is_left_alone():
    model = ConvEpsModel().train()
    sampler = df.FastSampler(model, seed_linear(T), (3, 6, 6), dtype=torch.bfloat16, compile=False)
    assert model.training and model.inp.weight.dtype == torch.float32 and model.inp.weight.requires_grad
    assert model.inp.weight.is_contiguous()
    assert sampler.model.inp.weight.dtype == torch.bfloat16 and not sampler.model.training
    images = sampler.sample(2, seed=0)
    assert images.dtype == torch.float32  # x_t stays float32 whatever the model computes in
    fp32 = df.FastSampler(model, seed_linear(T), (3, 6, 6), **FP32).sample(2, seed=0)
    assert (images - fp32).abs().max() < 0.1


def test_compiled_model_matches_eager():
    model = ConvEpsModel().eval()
    schedule = seed_linear(4)
    eager = df.FastSampler(model, schedule, (3, 6, 6), **FP32)
    compiled = df.FastSampler(model, schedule, (3, 6, 6), dtype=torch.float32, compile=True)
    assert compiled.compiled
    torch.testing.assert_close(compiled.sample(2, seed=1), eager.sample(2, seed=1), rtol=1e-5, atol=1e-5)
    report = compiled.last_report
    assert report.compiled and not report.cuda_graphs and report.graph_replays == 0 and not report.fell_back
    assert not eager.last_report.compiled and not eager.last_report.fell_back


def test_a_model_torch_compile_cannot_take_runs_eagerly_with_a_warning(monkeypatch):
    monkeypatch.setattr(fast_path_module, "CPU_COMPILE_MIN_EAGER_SECONDS", 0.0)  # the CPU policy compiles
    model = ConvEpsModel().eval()

    def breaks_the_graph(x, t):
        torch._dynamo.graph_break()
        return model(x, t)

    schedule = seed_linear(4)
    sampler = df.FastSampler(breaks_the_graph, schedule, (3, 6, 6), dtype=torch.float32)
    with pytest.warns(df.FastPathFallbackWarning, match="runs it eagerly"):
        got = sampler.sample(2, seed=1)
    assert not sampler.compiled
    report = sampler.last_report  # after the fact: what ran, and why the fast path did not
    assert not report.compiled and report.fell_back and "torch.compile failed" in report.fallbacks[0]
    assert sampler.fallbacks == list(report.fallbacks)
    text = repr(report)
    assert "fallbacks=" in text and not any(f", {field}=" in text for field in ("_start", "_end", "_seconds"))
    torch.testing.assert_close(got, df.FastSampler(model, schedule, (3, 6, 6), **FP32).sample(2, seed=1),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception):  # asked for explicitly, a compile failure is the caller's to see
        df.FastSampler(breaks_the_graph, schedule, (3, 6, 6), dtype=torch.float32, compile=True).sample(2, seed=1)


def test_a_fallback_is_reported_for_the_batch_sizes_that_run_without_the_fast_path(monkeypatch):
    monkeypatch.setattr(fast_path_module, "CPU_COMPILE_MIN_EAGER_SECONDS", 0.0)  # the CPU policy compiles
    model = ConvEpsModel().eval()

    def breaks_at_batch_3(x, t):
        if x.shape[0] == 3:  # shapes are static under the sampler's compile: only batch 3 breaks the graph
            torch._dynamo.graph_break()
        return model(x, t)

    sampler = df.FastSampler(breaks_at_batch_3, seed_linear(4), (3, 6, 6), dtype=torch.float32)
    sampler.sample(2, seed=0)
    assert sampler.last_report.compiled and not sampler.last_report.fell_back
    with pytest.warns(df.FastPathFallbackWarning, match="torch.compile failed"):
        sampler.sample(3, seed=0)
    assert not sampler.last_report.compiled and sampler.last_report.fell_back
    sampler.sample(2, seed=0)  # its compiled steps are cached and still run compiled: not a fallback
    assert sampler.last_report.compiled and not sampler.last_report.fell_back
    sampler.sample(4, seed=0)  # a new batch size after the fallback runs eagerly, and says why
    report = sampler.last_report
    assert not report.compiled and report.fallbacks == tuple(sampler.fallbacks) and len(sampler.fallbacks) == 1


def _steps_cost(monkeypatch, seconds, load_factor=1.0):
    """Make every eager step time as `seconds`, so the CPU compile policy's estimate is steps x seconds, on a machine
    `load_factor` times busier than its cores (1: quiet, whatever the machine running the test is doing)."""
    monkeypatch.setattr(fast_path_module.Runner, "time_eager_step", lambda runner: runner.check() or seconds)
    monkeypatch.setattr(fast_path_module, "cpu_load_factor", lambda: load_factor)


@pytest.mark.parametrize("step_seconds,steps,load,compiles", [
    (0.5, 100, 1.0, False),   # 50 s of eager work: below the quiet 60 s
    (0.7, 100, 1.0, True),    # 70 s: a quiet machine compiles
    (0.7, 100, 3.0, False),   # the same 70 s timed under load 3: the compile would cost 3x too, stays eager
    (4.5, 100, 3.0, True),    # 450 s under load 3: still worth a compile
])
def test_the_cpu_compile_decision_weighs_the_compile_at_the_load_the_timing_saw(step_seconds, steps, load, compiles):
    decision, reason = fast_path_module.cpu_compile_decision(step_seconds, steps, load)
    assert decision is compiles
    threshold = fast_path_module.CPU_COMPILE_MIN_EAGER_SECONDS * load
    assert f"the {threshold:.0f} s a CPU compile needs to pay off" in reason
    assert ("load factor 3.0" in reason) is (load > 1)


def test_a_busy_machine_keeps_a_chain_eager_that_a_quiet_one_compiles(monkeypatch):
    """The issue's case: a timing inflated by the load must not start a compile the same load makes cost more."""
    sampler = df.FastSampler(ConvEpsModel().eval(), seed_linear(100), (3, 6, 6))
    monkeypatch.setattr(sampler.fast_path, "compile_step", lambda core: pytest.fail("compiled under load"))
    _steps_cost(monkeypatch, 0.8, load_factor=4.0)  # 80 s estimated, under a 240 s bar
    sampler.sample(2, seed=0)
    report = sampler.last_report
    assert not report.compiled and report.compile_decision.startswith(
        "eager: 100 steps take about 80.0 s eagerly, below the 240 s a CPU compile needs to pay off on this machine "
        "now (60 s quiet x load factor 4.0")


class NhwcFasterModel(ConvEpsModel):
    """ConvEpsModel that costs 20 ms more per call on an NCHW input: eagerly, NHWC is clearly its faster layout."""

    def forward(self, x, t):
        if x.is_contiguous():
            time.sleep(0.02)
        return super().forward(x, t)


@pytest.mark.torch_references
@pytest.mark.parametrize("compile_option, num_steps, nhwc", [
    (None, fast_path_module.LAYOUT_MIN_STEPS, True), (None, fast_path_module.LAYOUT_MIN_STEPS - 1, False),
    (None, 10**12, False), (True, fast_path_module.LAYOUT_MIN_STEPS, False)],
    ids=["eager-chain", "chain-too-short-to-pay-for-the-timing", "chain-the-policy-compiles", "compile-true"])
def test_the_cpu_layout_is_the_faster_eager_one_unless_the_chain_will_run_compiled(compile_option, num_steps, nhwc):
    """The eager timing picks NHWC for a model that runs faster NHWC; a chain that will run compiled (compile=True,
    or one long enough for the CPU policy) keeps NCHW, the layout inductor's CPU code ran as fast or faster, and a
    chain too short to pay for the timing keeps NCHW untimed."""
    sampler = df.FastSampler(NhwcFasterModel().eval(), seed_linear(100), (3, 6, 6), compile=compile_option)
    timed, denoise = [], sampler.fast_path.denoise
    sampler.fast_path.denoise = lambda *args: timed.append(args) or denoise(*args)
    sampler.fast_path.settle_layout(2, num_steps=num_steps)
    assert sampler.fast_path.channels_last is nhwc
    assert sampler.model.inp.weight.is_contiguous(memory_format=torch.channels_last) is nhwc
    assert bool(timed) is (compile_option is None and num_steps >= fast_path_module.LAYOUT_MIN_STEPS)


def test_the_load_factor_is_the_load_average_per_cpu_at_least_one(monkeypatch):
    monkeypatch.setattr(fast_path_module.os, "cpu_count", lambda: 2)
    for load, factor in ((6.0, 3.0), (1.0, 1.0), (0.1, 1.0)):
        monkeypatch.setattr(fast_path_module.os, "getloadavg", lambda load=load: (load, 0.0, 0.0))
        assert fast_path_module.cpu_load_factor() == factor
    monkeypatch.delattr(fast_path_module.os, "getloadavg")  # a platform without one: taken as quiet
    assert fast_path_module.cpu_load_factor() == 1.0


def test_cpu_default_runs_a_short_chain_eagerly_and_says_why(monkeypatch):
    model = ConvEpsModel().eval()
    sampler = df.FastSampler(model, seed_linear(10), (3, 6, 6))
    assert sampler.compiled  # compile allowed; whether it pays is decided per chain
    _steps_cost(monkeypatch, 0.5)  # 10 steps x 0.5 s = 5 s, far below the policy's 60 s
    compiles = []
    monkeypatch.setattr(sampler.fast_path, "compile_step", lambda core: compiles.append(core) or core)
    images = sampler.sample(2, seed=0)
    report = sampler.last_report
    assert not compiles and not report.compiled and not report.fell_back
    assert report.compile_decision == ("eager: 10 steps take about 5.0 s eagerly, below the 60 s a CPU compile needs "
                                       "to pay off (compile=True forces it)")
    plain = df.FastSampler(model, seed_linear(10), (3, 6, 6), **FP32)
    torch.testing.assert_close(images, plain.sample(2, seed=0))


def test_cpu_default_compiles_a_long_chain_announces_it_and_reports_it_as_setup(monkeypatch, caplog):
    model = ConvEpsModel().eval()
    schedule = seed_linear(100)
    sampler = df.FastSampler(model, schedule, (3, 6, 6))
    _steps_cost(monkeypatch, 1.0)
    sampler.sample(2, seed=0, num_inference_steps=10)  # 10 s estimated: eager
    assert not sampler.last_report.compiled and sampler.last_report.compile_decision.startswith("eager: 10 steps")
    with caplog.at_level(logging.INFO, logger="ddpm_fast"):
        images = sampler.sample(2, seed=0)  # the same runner, now 100 steps: 100 s estimated, compiled
    report = sampler.last_report
    assert report.compiled and not report.fell_back
    assert report.compile_decision.startswith("compiled (100 steps take about 100 s eagerly, at least the 60 s")
    notes = [record.getMessage() for record in caplog.records]
    assert notes[0].startswith("compiling the ddpm step for batch 2 with torch.compile (100 steps take about 100 s")
    assert notes[1].startswith("compiled the ddpm step for batch 2 in ")
    assert report.setup_seconds > 0  # the compile is setup, not sampling
    eager = df.FastSampler(model, schedule, (3, 6, 6), **FP32).sample(2, seed=0)
    torch.testing.assert_close(images, eager, rtol=1e-5, atol=1e-5)
    sampler.sample(2, seed=0, num_inference_steps=10)  # once compiled, a runner stays compiled
    assert sampler.last_report.compiled and sampler.last_report.setup_seconds < report.setup_seconds


def test_compile_true_and_false_override_the_cpu_policy(monkeypatch):
    _steps_cost(monkeypatch, 1e-6)
    forced = df.FastSampler(ConvEpsModel().eval(), seed_linear(4), (3, 6, 6), compile=True)
    forced.sample(1, seed=0)
    assert forced.last_report.compiled and forced.last_report.compile_decision.startswith("compiled (compile=True")
    _steps_cost(monkeypatch, 1e6)
    never = df.FastSampler(ConvEpsModel().eval(), seed_linear(4), (3, 6, 6), compile=False)
    never.sample(1, seed=0)
    assert not never.last_report.compiled and never.last_report.compile_decision == "eager (compile=False)"


def test_sample_shape_from_the_model_config_and_defaults_on_cpu():
    sampler = df.FastSampler(tiny_unet(), seed_linear(T))
    assert sampler.sample_shape == (3, 32, 32)
    assert sampler.device.type == "cpu" and sampler.dtype == torch.float32  # least surprise: the model's images
    assert sampler.channels_last and sampler.compiled and not sampler.cuda_graphs


def test_output_types():
    sampler = df.FastSampler(ConvEpsModel(), seed_linear(T), (3, 6, 5), **FP32)
    tensor = sampler.sample(2, seed=0)
    pixels = sampler.sample(2, seed=0, output_type="uint8")
    assert pixels.shape == (2, 6, 5, 3) and pixels.dtype == torch.uint8
    assert torch.equal(pixels, ((tensor + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1))
    images = sampler.sample(2, seed=0, output_type="pil", progress=True)
    assert len(images) == 2 and images[0].size == (5, 6) and images[0].mode == "RGB"
    assert sampler.sample(0, seed=0).shape == (0, 3, 6, 5)


def test_the_runner_cache_is_bounded_and_reports_setup_separately():
    sampler = df.FastSampler(ConvEpsModel(), seed_linear(T), (3, 6, 6), max_cached_graphs=2, **FP32)
    for batch in (1, 2, 3, 2):
        sampler.sample(batch, seed=0)
    assert len(sampler.fast_path.runners) == 2 and [key[0] for key in sampler.fast_path.runners] == [3, 2]
    report = sampler.last_report
    assert report.batch_size == 2 and report.num_steps == T and report.sampling_seconds > 0
    assert report.images_per_second > 0 and report.setup_seconds < report.sampling_seconds + 1.0
    assert sampler.warm_up(2) >= 0


def test_seed_sample_on_the_sampler_machinery_equals_the_eager_seeded_loop():
    # What ddpm_fast.sample(seed=...) runs on a GPU, here without graphs.
    model = ConvEpsModel(num_timesteps=T).eval()
    vectors = schedule_terms(T)
    expected = df.sample(model, 3, 6, T, *vectors, seed=21)
    table = _seed_coefficient_table(T, *vectors, torch.device("cpu"))
    got = sample_with_fast_sampler(model, [3, 3, 6, 6], vectors[0], table, torch.tensor([21]))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------- errors


def test_bad_arguments_are_clear_errors():
    schedule = seed_linear(T)
    model = ConvEpsModel()
    with pytest.raises(TypeError, match="schedule"):
        df.FastSampler(model, "linear", (3, 6, 6))
    with pytest.raises(TypeError, match="model"):
        df.FastSampler(3, schedule, (3, 6, 6))
    with pytest.raises(ValueError, match="sample_shape"):
        df.FastSampler(model, schedule)
    with pytest.raises(ValueError, match="sample_shape"):
        df.FastSampler(model, schedule, (3, 0, 6))
    with pytest.raises(ValueError, match="prediction_type"):
        df.FastSampler(model, schedule, (3, 6, 6), prediction_type="noise")
    with pytest.raises(ValueError, match="cuda_graphs"):
        df.FastSampler(model, schedule, (3, 6, 6), cuda_graphs=True)
    with pytest.raises(TypeError, match="dtype"):
        df.FastSampler(model, schedule, (3, 6, 6), dtype=torch.int32)
    with pytest.raises(ValueError, match="timestep_spacing"):
        df.FastSampler(model, schedule, (3, 6, 6), timestep_spacing="uniform")
    sampler = df.FastSampler(model, schedule, (3, 6, 6), **FP32)
    with pytest.raises(ValueError, match="batch_size"):
        sampler.sample(-1)
    with pytest.raises(ValueError, match="output_type"):
        sampler.sample(1, output_type="png")
    with pytest.raises(ValueError, match="not both"):
        sampler.sample(1, seed=0, generator=torch.Generator())
    with pytest.raises(ValueError, match="eta"):
        sampler.sample(1, eta=0.5)
    with pytest.raises(ValueError, match="method"):
        sampler.sample(1, method="plms")
    with pytest.raises(ValueError, match="num_inference_steps"):
        sampler.sample(1, num_inference_steps=T + 1)
    with pytest.raises(ValueError, match="eta"):
        sampler.warm_up(1, eta=0.5)
    with pytest.raises(ValueError, match="sample_offset"):
        sampler.sample(2, seed=0, sample_offset=2**31 - 1)
    with pytest.raises(ValueError, match="the model returned"):
        df.FastSampler(lambda x, t: x[:, :1], schedule, (3, 6, 6), **FP32).sample(1, seed=0)


# ---------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("method,steps", [("ddpm", None), ("ddpm", 7), ("ddim", 7)])
def test_cuda_graphs_equal_the_eager_loop(method, steps):
    model = ConvEpsModel().cuda()
    schedule = seed_linear(40)
    common = dict(dtype=torch.float32, compile=False)
    eager = df.FastSampler(model, schedule, (3, 16, 16), cuda_graphs=False, **common)
    for per_graph in (1, 8):
        graphed = df.FastSampler(model, schedule, (3, 16, 16), cuda_graphs=True, steps_per_graph=per_graph, **common)
        for _ in range(2):  # the second call replays cached graphs
            torch.testing.assert_close(graphed.sample(3, seed=1, method=method, num_inference_steps=steps),
                                       eager.sample(3, seed=1, method=method, num_inference_steps=steps),
                                       rtol=1e-5, atol=1e-5)
        assert graphed.last_report.setup_seconds < 0.5


@pytest.mark.gpu
def test_cuda_graphs_with_generator_noise_equal_the_reference():
    model = ConvEpsModel(num_timesteps=30).cuda()
    sampler = df.FastSampler(model, seed_linear(30), (3, 8, 8), dtype=torch.float32, compile=False,
                             channels_last=False)  # the reference's layout, so cuDNN picks the same convolutions
    got = sampler.sample(2, generator=torch.Generator("cuda").manual_seed(3))
    betas = reference.linear_beta_schedule(30).cuda()
    terms = reference.schedule_terms(betas)
    torch.cuda.manual_seed(3)
    expected = reference.sample(model, 2, 8, 30, terms["betas"], terms["sqrt_recip_alphas"],
                                terms["sqrt_one_minus_alphas_cumprod"], terms["posterior_variance"])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_the_graphed_loop_never_syncs_with_the_host():
    sampler = df.FastSampler(ConvEpsModel().cuda(), seed_linear(50), (3, 16, 16), compile=False)
    sampler.sample(4, seed=0)  # warm-up and capture
    runner = next(iter(sampler.fast_path.runners.values()))
    runner.state.step_index.zero_()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        runner.run(50, None, sampler.device, None)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(runner.state.x).all()


@pytest.mark.gpu
def test_compiled_bf16_unet_with_graphs_is_close_to_fp32():
    model = tiny_unet().cuda()
    schedule = seed_linear(20)
    fast = df.FastSampler(model, schedule)
    assert fast.dtype == torch.bfloat16
    exact = df.FastSampler(model, schedule, dtype=torch.float32, compile=False, cuda_graphs=False)
    got, expected = fast.sample(4, seed=0), exact.sample(4, seed=0)
    report = fast.last_report  # what ran, not what was asked for: a fallback fails here
    assert report.compiled and report.cuda_graphs and not report.fell_back, report
    assert report.graphs_captured == 1 and report.graph_replays == 2  # 20 steps: one 10-step graph, replayed twice
    assert ((got - expected).norm() / expected.norm()).item() < 5e-2
    assert fast.last_report.setup_seconds > 0 and fast.last_report.sampling_seconds > 0


@pytest.mark.gpu
def test_seeded_sample_routes_through_cuda_graphs():
    model = ConvEpsModel(num_timesteps=20).cuda()
    terms = reference.schedule_terms(reference.linear_beta_schedule(20).cuda())
    args = (terms["betas"], terms["sqrt_recip_alphas"], terms["sqrt_one_minus_alphas_cumprod"],
            terms["posterior_variance"])
    got = df.sample(model, 3, 8, 20, *args, seed=4)
    table = _seed_coefficient_table(20, *args, torch.device("cuda"))
    eager = sample_with_fast_sampler(model, [3, 3, 8, 8], args[0], table, torch.tensor([4], device="cuda"),
                                     cuda_graphs=False)
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_a_step_that_cannot_be_captured_runs_without_graphs():
    model = ConvEpsModel().cuda()

    def syncs(x, t):
        if t[0].item() < 0:  # a host sync: illegal while a CUDA graph is being captured
            raise AssertionError
        return model(x, t)

    schedule = seed_linear(10)
    sampler = df.FastSampler(syncs, schedule, (3, 8, 8), dtype=torch.float32, compile=False)
    with pytest.warns(RuntimeWarning, match="without graphs"):
        got = sampler.sample(2, seed=0)
    assert not sampler.cuda_graphs
    expected = df.FastSampler(model, schedule, (3, 8, 8), dtype=torch.float32, compile=False, cuda_graphs=False,
                              channels_last=False).sample(2, seed=0)  # the layout the function's sampler uses
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method, steps, eta", [("ddpm", None, 0.0), ("ddpm", 7, 0.0), ("ddim", 9, 0.5),
                                                ("ddim", 9, 0.0)])
def test_eager_cpu_prefetched_noise_is_the_noise_each_step_draws(method, steps, eta):
    # An eager CPU runner draws a seeded chain's z 16 steps at a time (PhiloxPrefetch); the images must be those of
    # steps that draw their own z in the op. T = 40: the full chain crosses two chunk boundaries.
    model = ConvEpsModel().eval()
    schedule = seed_linear(40)
    prefetched = df.FastSampler(model, schedule, (3, 6, 6), **FP32)
    in_op = df.FastSampler(model, schedule, (3, 6, 6), **FP32)
    in_op.warm_up(3, method=method, eta=eta, num_inference_steps=steps, sample_offset=5)
    for runner in in_op.fast_path.runners.values():
        assert runner.prefetch is not None or (method == "ddim" and eta == 0.0)
        runner.prefetch, runner.core = None, runner.compile_source  # the step's own Philox draw
    with cpu_reference():
        expected = in_op.sample(3, seed=11, method=method, eta=eta, num_inference_steps=steps, sample_offset=5)
        got = prefetched.sample(3, seed=11, method=method, eta=eta, num_inference_steps=steps, sample_offset=5)
    assert torch.equal(got, expected)


@pytest.mark.torch_references
@pytest.mark.parametrize("set_alpha_to_one", [True, False])
def test_ddim_ends_where_diffusers_ddim_scheduler_ends(set_alpha_to_one):
    # diffusers' DDIMScheduler ends its chain at ᾱ = 1 (set_alpha_to_one=True) or at ᾱ_0 (False); so does ours.
    diffusers = pytest.importorskip("diffusers")
    model = ConvEpsModel(num_timesteps=100).eval()
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=100, clip_sample=False,
                                        set_alpha_to_one=set_alpha_to_one)
    scheduler.set_timesteps(10)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn((2, 3, 6, 6), generator=generator)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t.expand(2)), t, x, eta=0.0).prev_sample
    sampler = df.FastSampler(model, df.NoiseSchedule.from_diffusers(scheduler), (3, 6, 6), **FP32,
                             timestep_spacing="leading", set_alpha_to_one=set_alpha_to_one)
    with cpu_reference():
        ours = sampler.sample(2, generator=torch.Generator().manual_seed(3), num_inference_steps=10, method="ddim")
    torch.testing.assert_close(ours, x.clamp(-1, 1), rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="set_alpha_to_one must be True or False"):
        df.FastSampler(model, seed_linear(10), (3, 6, 6), set_alpha_to_one=0)


def test_from_diffusers_reads_a_ddim_schedulers_final_alpha_rule():
    diffusers = pytest.importorskip("diffusers")
    pipe = _pipeline(TINY_DIFFUSERS)
    for value in (False, True):
        pipe.scheduler = diffusers.DDIMScheduler(num_train_timesteps=T, set_alpha_to_one=value)
        assert df.FastSampler.from_diffusers(pipe, **FP32).set_alpha_to_one is value
