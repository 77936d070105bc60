"""lucidrains' denoising-diffusion-pytorch as a source: FastSampler.from_denoising_diffusion_pytorch gives its
p_sample_loop / ddim_sample images for the same noise (every objective, DDIM with and without η, auto_normalize on
and off), reads its Trainer checkpoints with weights_only=True, and refuses what it cannot reproduce, by name.
Also the two sampler options that made it possible: custom timesteps= and DDIM's use_clipped_model_output.

The library is a test dependency installed without its dependencies (tests/requirements-no-deps.txt: its
torchvision would replace the CPU torch); its torchvision imports get empty stand-ins where the real one cannot load
(import_library(stand_in_torchvision=True)), which its GaussianDiffusion and Unet never call.
"""

import pytest
import torch

import ddpm_fast as df
from ddpm_fast import FastSampler
from ddpm_fast.interop import denoising_diffusion_pytorch as lucidrains
from ddpm_fast.kernels import cpu_reference

try:
    ddp = lucidrains.import_library(stand_in_torchvision=True)
except ImportError:  # CI installs it; say how where it is missing
    pytest.skip("denoising-diffusion-pytorch is not installed: pip install --no-deps -r "
                "tests/requirements-no-deps.txt", allow_module_level=True)

T = 20
FP32 = dict(dtype=torch.float32, compile=False)


def make_diffusion(objective="pred_v", seed=0, timesteps=T, **kwargs):
    """A small GaussianDiffusion whose Unet gives non-trivial outputs (its zero-initialised last conv would not)."""
    torch.manual_seed(seed)
    unet = ddp.Unet(dim=8, dim_mults=(1, 2), flash_attn=False)
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return ddp.GaussianDiffusion(unet, image_size=8, timesteps=timesteps, objective=objective, **kwargs)


def theirs(diffusion, batch, seed):
    torch.manual_seed(seed)
    return diffusion.sample(batch)


def ours(diffusion, batch, seed, **options):
    sampler = FastSampler.from_denoising_diffusion_pytorch(diffusion, **FP32, **options)
    with cpu_reference():
        images = sampler.sample(batch, generator=torch.Generator().manual_seed(seed),
                                **lucidrains.sample_arguments(diffusion))
    return lucidrains.unnormalize(images, diffusion)


@pytest.mark.torch_references
@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_p_sample_loop_images(objective):
    diffusion = make_diffusion(objective)
    assert lucidrains.sample_arguments(diffusion) == {}
    torch.testing.assert_close(ours(diffusion, 3, seed=1), theirs(diffusion, 3, seed=1), rtol=0, atol=1e-4)


@pytest.mark.torch_references
@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_sample_images(objective, eta):
    # 7 of 20 steps: its truncated linspace, not one of diffusers' spacings.
    diffusion = make_diffusion(objective, sampling_timesteps=7, ddim_sampling_eta=eta)
    arguments = lucidrains.sample_arguments(diffusion)
    assert arguments["timesteps"] == [19, 16, 13, 10, 7, 4, 1] and arguments["use_clipped_model_output"]
    expected = theirs(diffusion, 3, seed=2)
    torch.testing.assert_close(ours(diffusion, 3, seed=2), expected, rtol=0, atol=1e-4)
    # The re-derived ε matters: x0 leaves [-1, 1] on these weights, and DDIM without it gives other images.
    sampler = FastSampler.from_denoising_diffusion_pytorch(diffusion, **FP32)
    with cpu_reference():
        plain = sampler.sample(3, generator=torch.Generator().manual_seed(2),
                               **{**arguments, "use_clipped_model_output": False})
    assert (lucidrains.unnormalize(plain, diffusion) - expected).abs().max() > 1e-3


@pytest.mark.torch_references
def test_without_auto_normalize_the_images_are_its_own():
    diffusion = make_diffusion("pred_noise", auto_normalize=False)
    expected = theirs(diffusion, 2, seed=3)
    assert expected.min() < 0  # its [-1, 1] range, not [0, 1]
    torch.testing.assert_close(ours(diffusion, 2, seed=3), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "sigmoid"])
def test_setup_is_read_from_the_object(schedule):
    diffusion = make_diffusion("pred_x0", timesteps=30, beta_schedule=schedule)
    sampler = FastSampler.from_denoising_diffusion_pytorch(diffusion, **FP32)
    assert torch.equal(sampler.schedule.betas, diffusion.betas.double())
    assert (sampler.prediction_type, sampler.variance_type, sampler.clip_sample) == ("sample", "fixed_small", True)
    assert sampler.sample_shape == (3, 8, 8)
    assert len(sampler.setup.betas) == 30 and sampler.setup.clip_sample  # what export_onnx and diffusers get


@pytest.mark.torch_references
def test_seeded_sampling_is_batch_invariant():
    sampler = FastSampler.from_denoising_diffusion_pytorch(make_diffusion("pred_noise"), **FP32)
    with cpu_reference():
        four = sampler.sample(4, seed=5)
        two = sampler.sample(2, seed=5)
    torch.testing.assert_close(four[:2], two, rtol=0, atol=1e-5)


@pytest.mark.torch_references
def test_its_unet_samples_in_bf16():
    # Its time embedding is float32 whatever the weights: the Unet runs under autocast to the sampler's dtype.
    diffusion = make_diffusion("pred_noise")
    with cpu_reference():
        bf16 = FastSampler.from_denoising_diffusion_pytorch(diffusion, dtype=torch.bfloat16, compile=False)
        fp32 = FastSampler.from_denoising_diffusion_pytorch(diffusion, **FP32)
        low, full = bf16.sample(2, seed=3), fp32.sample(2, seed=3)
    assert next(bf16.model.parameters()).dtype == torch.bfloat16 and low.dtype == torch.float32
    assert (low - full).abs().mean() < 0.05


def test_ddim_timesteps_are_its_own():
    assert lucidrains.ddim_timesteps(1000, 250)[:3] == [999, 995, 991]
    assert lucidrains.ddim_timesteps(1000, 3) == [999, 665, 332]  # diffusers' trailing: 999, 666, 332
    assert lucidrains.ddim_timesteps(10, 10) == list(range(9, -1, -1))
    with pytest.raises(ValueError, match="sampling_timesteps"):
        lucidrains.ddim_timesteps(10, 11)
    with pytest.raises(ValueError, match="num_timesteps"):
        lucidrains.ddim_timesteps(0, 1)


@pytest.mark.torch_references
def test_its_trainer_checkpoint_loads_with_weights_only(tmp_path):
    from ema_pytorch import EMA

    trained = make_diffusion("pred_v", seed=0)
    ema = EMA(trained, beta=0.9, update_every=1)
    with torch.no_grad():  # the EMA copy now differs from the online weights
        for parameter in ema.ema_model.parameters():
            parameter.mul_(0.9)
    optimizer = torch.optim.Adam(trained.parameters(), lr=1e-4)
    # The layout of its Trainer.save (results/model-N.pt).
    path = tmp_path / "model-1.pt"
    torch.save({"step": 1, "model": trained.state_dict(), "opt": optimizer.state_dict(), "ema": ema.state_dict(),
                "scaler": None, "version": ddp.version.__version__}, path)

    fresh = make_diffusion("pred_v", seed=7)  # other weights, same setup
    for weights, source in (("ema", ema.ema_model), ("model", trained)):
        sampler = FastSampler.from_denoising_diffusion_pytorch(fresh, checkpoint=path, weights=weights, **FP32)
        with cpu_reference():
            images = sampler.sample(2, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(lucidrains.unnormalize(images, fresh), theirs(source, 2, seed=4), rtol=0,
                                   atol=1e-4)

    with pytest.raises(ValueError, match="other β"):
        FastSampler.from_denoising_diffusion_pytorch(make_diffusion("pred_v", timesteps=30), checkpoint=path)
    with pytest.raises(ValueError, match="weights must be"):
        FastSampler.from_denoising_diffusion_pytorch(fresh, checkpoint=path, weights="online")
    with pytest.raises(FileNotFoundError):
        FastSampler.from_denoising_diffusion_pytorch(fresh, checkpoint=tmp_path / "missing.pt")
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)  # a module object: refused by weights_only
    with pytest.raises(ValueError, match="could not be read as tensors"):
        FastSampler.from_denoising_diffusion_pytorch(fresh, checkpoint=pickled)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": trained.state_dict()}, other)
    with pytest.raises(ValueError, match="holds no 'ema' weights"):
        FastSampler.from_denoising_diffusion_pytorch(fresh, checkpoint=other)
    with pytest.raises(ValueError, match="is a folder"):
        FastSampler.from_denoising_diffusion_pytorch(fresh, checkpoint=tmp_path)
    with pytest.raises(TypeError, match="checkpoint must be a path"):
        FastSampler.from_denoising_diffusion_pytorch(fresh, checkpoint=123)
    torch.manual_seed(0)
    wider = ddp.GaussianDiffusion(ddp.Unet(dim=16, dim_mults=(1, 2), flash_attn=False), image_size=8, timesteps=T,
                                  objective="pred_v")
    with pytest.raises(ValueError, match="does not fit the given GaussianDiffusion"):
        FastSampler.from_denoising_diffusion_pytorch(wider, checkpoint=path)


def test_refusals_name_what_is_unsupported():
    torch.manual_seed(0)
    self_conditioned = ddp.GaussianDiffusion(ddp.Unet(dim=8, dim_mults=(1, 2), self_condition=True,
                                                      flash_attn=False), image_size=8, timesteps=T)
    with pytest.raises(ValueError, match="self-conditioning"):
        FastSampler.from_denoising_diffusion_pytorch(self_conditioned)
    learned = ddp.LearnedGaussianDiffusion(ddp.Unet(dim=8, dim_mults=(1, 2), learned_variance=True,
                                                    flash_attn=False), image_size=8, timesteps=T)
    with pytest.raises(TypeError, match="LearnedGaussianDiffusion"):
        FastSampler.from_denoising_diffusion_pytorch(learned)
    with pytest.raises(TypeError, match="expected denoising_diffusion_pytorch's GaussianDiffusion"):
        FastSampler.from_denoising_diffusion_pytorch(torch.nn.Linear(2, 2))
    diffusion = make_diffusion("pred_v")
    with pytest.raises(ValueError, match="prediction_type='epsilon' contradicts the GaussianDiffusion"):
        FastSampler.from_denoising_diffusion_pytorch(diffusion, prediction_type="epsilon")
    with pytest.raises(ValueError, match="clip_sample=False contradicts"):
        FastSampler.from_denoising_diffusion_pytorch(diffusion, clip_sample=False)
    with pytest.raises(ValueError, match="schedule=.* contradicts"):
        FastSampler.from_denoising_diffusion_pytorch(diffusion, schedule=df.NoiseSchedule.linear(T))
    with pytest.raises(TypeError, match="model comes from the GaussianDiffusion"):
        FastSampler.from_denoising_diffusion_pytorch(diffusion, model=diffusion.model)
    with pytest.raises(TypeError, match="expected denoising_diffusion_pytorch's GaussianDiffusion"):
        lucidrains.unnormalize(torch.zeros(1, 3, 8, 8), None)
    # Its linear schedule scales β by 1000 / T, reaching β = 1 at T = 20: refused with the reason.
    with pytest.raises(ValueError, match=r"β reach 1 \(T = 20\)"):
        FastSampler.from_denoising_diffusion_pytorch(make_diffusion("pred_v", beta_schedule="linear"))
    # Agreeing values are accepted.
    sampler = FastSampler.from_denoising_diffusion_pytorch(
        diffusion, prediction_type="v_prediction", schedule=df.NoiseSchedule.from_betas(diffusion.betas.double()),
        sample_shape=[3, 8, 8], **FP32)
    assert sampler.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match=r"sample_shape=\(3, 16, 16\) contradicts"):
        FastSampler.from_denoising_diffusion_pytorch(diffusion, sample_shape=(3, 16, 16))


# ------------------------------------------------------------------------ the sampler options it builds on


def _conv_sampler(**options):
    from test_sampler import ConvEpsModel

    torch.manual_seed(0)
    return FastSampler(ConvEpsModel(num_timesteps=50), df.NoiseSchedule.linear(50), (3, 8, 8), clip_sample=True,
                       **FP32, **options)


@pytest.mark.parametrize("method, spacing", [("ddpm", "linspace"), ("ddim", "trailing"), ("dpm_solver++", "leading")])
def test_custom_timesteps_equal_the_spacing_they_copy(method, spacing):
    sampler = _conv_sampler(timestep_spacing=spacing)
    chain = sampler.timesteps(9, method)
    spaced = sampler.sample(2, seed=1, num_inference_steps=9, method=method)
    for given in (chain, torch.tensor(chain), tuple(chain)):
        assert torch.equal(sampler.sample(2, seed=1, timesteps=given, method=method), spaced)
    assert sampler.last_report.num_steps == 9


def test_custom_timesteps_errors():
    sampler = _conv_sampler()
    with pytest.raises(ValueError, match="not both"):
        sampler.sample(1, seed=0, num_inference_steps=3, timesteps=[5, 2, 0])
    for bad in ([5, 5, 0], [0, 5], [50, 3], [3, -1], []):
        with pytest.raises((ValueError, TypeError), match="timesteps"):
            sampler.sample(1, seed=0, timesteps=bad)
    for bad in ([5.0, 2.0], "5,2", [True, False], 7):
        with pytest.raises(TypeError, match="timesteps"):
            sampler.sample(1, seed=0, timesteps=bad)


def test_use_clipped_model_output_applies_to_ddim_only():
    sampler = _conv_sampler()
    with pytest.raises(ValueError, match="use_clipped_model_output applies to method='ddim' only"):
        sampler.sample(1, seed=0, use_clipped_model_output=True)
    with pytest.raises(TypeError, match="use_clipped_model_output must be True or False"):
        sampler.sample(1, seed=0, method="ddim", num_inference_steps=4, use_clipped_model_output=1)
    with pytest.raises(TypeError, match="use_clipped_model_output must be True or False"):
        df.ddim_step(torch.zeros(1, 3, 4, 4), 5, 2, torch.zeros(1, 3, 4, 4), df.NoiseSchedule.linear(10),
                     use_clipped_model_output="yes")
    # Without clipping there is nothing to re-derive: the option changes nothing.
    unclipped = FastSampler(sampler.model, sampler.schedule, (3, 8, 8), **FP32)
    plain = unclipped.sample(2, seed=3, method="ddim", num_inference_steps=5)
    assert torch.equal(unclipped.sample(2, seed=3, method="ddim", num_inference_steps=5,
                                        use_clipped_model_output=True), plain)


def test_use_clipped_model_output_equals_diffusers_ddim():
    from diffusers import DDIMScheduler

    sampler = _conv_sampler()
    scheduler = DDIMScheduler(num_train_timesteps=50, trained_betas=sampler.schedule.betas.numpy(), clip_sample=True,
                              timestep_spacing="trailing")
    scheduler.set_timesteps(5)  # T // n = 10: its prev_timestep (t - T // n) is the next timestep of the list
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(2, 3, 8, 8, generator=generator)
    with torch.no_grad():
        for t in scheduler.timesteps:
            output = sampler.model(x, torch.full((2,), int(t)))
            x = scheduler.step(output, t, x, eta=0.5, use_clipped_model_output=True, generator=generator).prev_sample
    images = sampler.sample(2, generator=torch.Generator().manual_seed(8), method="ddim", eta=0.5,
                            timesteps=scheduler.timesteps.tolist(), use_clipped_model_output=True)
    torch.testing.assert_close(images, x.clamp(-1, 1), rtol=0, atol=1e-4)


@pytest.mark.gpu
def test_compiled_graphed_cuda_sampler_matches_its_loop_on_cuda():
    diffusion = make_diffusion("pred_v", sampling_timesteps=10).cuda()
    expected = theirs(diffusion, 4, seed=6)
    sampler = FastSampler.from_denoising_diffusion_pytorch(diffusion, dtype=torch.float32)
    images = sampler.sample(4, generator=torch.Generator("cuda").manual_seed(6),
                            **lucidrains.sample_arguments(diffusion))
    assert sampler.last_report.compiled and not sampler.last_report.fell_back
    torch.testing.assert_close(lucidrains.unnormalize(images, diffusion), expected, rtol=0, atol=1e-3)
    # The card's defaults (bf16 under autocast, channels-last, compile, CUDA graphs) run it without a fallback.
    fast = FastSampler.from_denoising_diffusion_pytorch(diffusion)
    images = fast.sample(4, generator=torch.Generator("cuda").manual_seed(6), **lucidrains.sample_arguments(diffusion))
    assert fast.dtype == torch.bfloat16 and fast.last_report.cuda_graphs and not fast.last_report.fell_back
    assert (lucidrains.unnormalize(images, diffusion) - expected).abs().mean() < 0.05


@pytest.mark.torch_references  # a fresh process, as a reader runs it (the subprocess drops TRITON_INTERPRET)
def test_the_documented_snippet_runs_as_written(tmp_path):
    """docs/interop.md's example, verbatim, in a fresh Python beside the CPU torch (where its own import of
    torchvision fails), given a Trainer checkpoint at the path it names."""
    import pathlib
    import re
    import subprocess
    import sys

    from subprocess_env import subprocess_env

    page = (pathlib.Path(__file__).parents[1] / "docs" / "interop.md").read_text()
    section = page[page.index("## lucidrains' denoising-diffusion-pytorch"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    build = re.search(r"^diffusion = .*$", snippet, re.M).group(0)  # the model its checkpoint must fit
    # Its Trainer.save layout: the model's weights, and the EMA wrapper's (the same here) under ema_model.
    prelude = ("import torch\nfrom ddpm_fast.interop.denoising_diffusion_pytorch import import_library\n"
               "ddp = import_library(stand_in_torchvision=True)\n" + build + "\n"
               "state = diffusion.state_dict()\n"
               "torch.save({'step': 10, 'model': state, 'ema': {'ema_model.' + k: v for k, v in state.items()}},"
               " 'results/model-10.pt')\n")
    (tmp_path / "results").mkdir()
    check = "\nassert images.shape[1:] == (3, 32, 32) and 0 <= images.min() and images.max() <= 1, images.shape\n"
    for script in (prelude, snippet + check):
        done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=subprocess_env(),
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
