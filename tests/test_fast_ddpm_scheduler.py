"""FastDDPMScheduler against diffusers' DDPMScheduler: every step of full and respaced chains, and whole pipelines."""

import contextlib
import itertools
import json

import pytest
import torch

import ddpm_fast as df
from ddpm_fast.kernels import cpu_reference

diffusers = pytest.importorskip("diffusers")

T = 24  # a short training chain keeps the interpreted full chains quick; the math does not depend on T
COMBOS = list(itertools.product(
    ["linear", "scaled_linear", "squaredcos_cap_v2"],
    ["epsilon", "sample", "v_prediction"],
    ["fixed_small", "fixed_small_log", "fixed_large", "learned_range"],
    [False, True],
))


def pair(**config):
    config = {"num_train_timesteps": T, **config}
    return diffusers.DDPMScheduler(**config), df.FastDDPMScheduler(**config)


def run_chain(theirs, ours, channels_out, steps=None, timesteps=None, shape=(2, 3, 4, 4)):
    for scheduler in (theirs, ours):
        scheduler.set_timesteps(num_inference_steps=steps, timesteps=timesteps)
    assert torch.equal(theirs.timesteps, ours.timesteps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    for t in ours.timesteps:
        model_output = 0.8 * torch.randn((shape[0], channels_out, *shape[2:]), generator=g)
        a = theirs.step(model_output, t, x, generator=torch.Generator().manual_seed(int(t)))
        b = ours.step(model_output, t, x, generator=torch.Generator().manual_seed(int(t)))
        # diffusers computes 1-ᾱ in float32 (it cancels near t = 0); ours comes from float64.
        torch.testing.assert_close(b.prev_sample, a.prev_sample, rtol=1e-3, atol=2e-3, msg=lambda m: f"t={t}: {m}")
        torch.testing.assert_close(b.pred_original_sample, a.pred_original_sample, rtol=1e-3, atol=2e-3,
                                   msg=lambda m: f"x0 t={t}: {m}")
        x = a.prev_sample


# The full chains visit the same kernel variants as the respaced ones: the interpreter's run takes the respaced ones.
@pytest.mark.parametrize("chain", [pytest.param("full", marks=pytest.mark.torch_references), "respaced"])
@pytest.mark.parametrize("beta_schedule,prediction,variance,clip", COMBOS)
def test_every_step_matches_diffusers(beta_schedule, prediction, variance, clip, chain):
    theirs, ours = pair(beta_schedule=beta_schedule, prediction_type=prediction, variance_type=variance,
                        clip_sample=clip)
    channels = 6 if variance == "learned_range" else 3
    with cpu_reference() if chain == "full" else contextlib.nullcontext():  # as the marks say
        run_chain(theirs, ours, channels, steps=T if chain == "full" else 10)


@pytest.mark.parametrize("config,steps,timesteps", [
    (dict(timestep_spacing="trailing"), 7, None),
    (dict(timestep_spacing="linspace"), 9, None),
    (dict(timestep_spacing="leading", steps_offset=1), 10, None),
    (dict(variance_type="fixed_large", timestep_spacing="trailing"), 5, None),  # noise at the last kept step
    ({}, None, [21, 15, 14, 7, 3]),
])
def test_spacings_and_custom_timesteps(config, steps, timesteps):
    theirs, ours = pair(**config)
    run_chain(theirs, ours, 3, steps=steps, timesteps=timesteps)


def test_without_set_timesteps_the_chain_is_every_step():
    theirs, ours = pair()
    assert torch.equal(theirs.timesteps, ours.timesteps)
    x, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    for t in (T - 1, 20, 1, 0):
        a = theirs.step(eps, t, x, generator=torch.Generator().manual_seed(t), return_dict=False)
        b = ours.step(eps, t, x, generator=torch.Generator().manual_seed(t), return_dict=False)
        torch.testing.assert_close(b[0], a[0], rtol=1e-3, atol=2e-3)


def test_generator_lists_draw_per_sample():
    theirs, ours = pair()
    x, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(2)]  # noqa: E731
    torch.testing.assert_close(ours.step(eps, 20, x, generator=gens()).prev_sample,
                               theirs.step(eps, 20, x, generator=gens()).prev_sample, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("steps", [T, 10])
def test_ddpm_pipeline_gives_the_same_images(steps):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, block_out_channels=(16, 32), norm_num_groups=8, layers_per_block=1,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D")).eval()
    theirs_scheduler = diffusers.DDPMScheduler(num_train_timesteps=T)
    images = []
    for scheduler in (theirs_scheduler, df.FastDDPMScheduler.from_config(theirs_scheduler.config)):
        pipe = diffusers.DDPMPipeline(unet=unet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            images.append(pipe(batch_size=2, generator=torch.Generator().manual_seed(1), num_inference_steps=steps,
                               output_type="np").images)
    assert abs(images[0] - images[1]).max() < 2e-3


def test_add_noise_and_velocity_match():
    theirs, ours = pair(beta_schedule="squaredcos_cap_v2")
    x0, noise = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    t = torch.tensor([0, 17, T - 1])
    torch.testing.assert_close(ours.add_noise(x0, noise, t), theirs.add_noise(x0, noise, t), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.get_velocity(x0, noise, t), theirs.get_velocity(x0, noise, t),
                               rtol=1e-5, atol=1e-5)
    assert ours.init_noise_sigma == 1.0 and ours.scale_model_input(x0, 3) is x0 and len(ours) == T


def test_config_round_trips_through_both_libraries(tmp_path):
    ours = df.FastDDPMScheduler(num_train_timesteps=T, beta_schedule="scaled_linear", prediction_type="v_prediction")
    ours.save_config(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "FastDDPMScheduler" and saved["prediction_type"] == "v_prediction"
    theirs = diffusers.DDPMScheduler.from_pretrained(tmp_path)
    assert theirs.config.beta_schedule == "scaled_linear" and theirs.config.num_train_timesteps == T
    again = df.FastDDPMScheduler.from_pretrained(tmp_path)

    def public(config):  # diffusers adds _class_name, _diffusers_version, _use_default_values
        return {key: value for key, value in config.items() if not key.startswith("_")}

    assert public(again.config) == public(ours.config)
    assert again.config.prediction_type == "v_prediction"  # attribute access, as diffusers' config


@pytest.mark.parametrize("config,match", [
    (dict(thresholding=True), "thresholding"),
    (dict(variance_type="learned"), "variance_type"),
    (dict(prediction_type="flow"), "prediction_type"),
    (dict(timestep_spacing="karras"), "timestep_spacing"),
    (dict(rescale_betas_zero_snr=True), "rescale_betas_zero_snr"),
])
def test_unsupported_options_are_clear_errors(config, match):
    with pytest.raises(ValueError, match=match):
        df.FastDDPMScheduler(**config)


def test_bad_calls():
    ours = df.FastDDPMScheduler(num_train_timesteps=T)
    with pytest.raises(ValueError, match="outside"):
        ours.step(torch.randn(1, 3, 4, 4), T, torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="num_inference_steps"):
        ours.set_timesteps(T + 1)
    with pytest.raises(ValueError, match="descending"):
        ours.set_timesteps(timesteps=[3, 7])
    ours.set_timesteps(5)
    with pytest.raises(ValueError, match="not in this scheduler's timesteps"):
        ours.step(torch.randn(1, 3, 4, 4), 11, torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        ours.step(torch.randn(1, 4, 4, 4), int(ours.timesteps[0]), torch.randn(1, 3, 4, 4))
    with pytest.raises(TypeError, match="set_alpha_to_one"):  # as DDPMScheduler(set_alpha_to_one=False)
        df.FastDDPMScheduler(set_alpha_to_one=False)
    # from a config, a compatible scheduler's key (DDIMScheduler's) is kept aside, unused, as diffusers keeps it
    ours = df.FastDDPMScheduler.from_config({"set_alpha_to_one": False})
    theirs = diffusers.DDPMScheduler.from_config({"set_alpha_to_one": False})
    assert ours.config.get("set_alpha_to_one") == theirs.config.get("set_alpha_to_one")


def test_trailing_spacing_gives_exactly_n_timesteps_for_every_n():
    import numpy as np

    from ddpm_fast.sampling.timesteps import spaced_timesteps

    total = 1000
    for steps in range(1, total + 1):
        chain = spaced_timesteps(total, steps, "trailing")
        assert len(chain) == steps and chain[0] == total - 1 and chain[-1] >= 0, steps
        assert (np.diff(chain) < 0).all(), steps
    # the issue's case: diffusers' float stride gave 62 timesteps ending in -1
    chain = spaced_timesteps(total, 61, "trailing")
    assert list(chain[:2]) == [999, 983] and list(chain[-2:]) == [32, 15]


def test_trailing_spacing_matches_diffusers_wherever_diffusers_is_right():
    import numpy as np

    diffusers = pytest.importorskip("diffusers")
    from ddpm_fast.sampling.timesteps import spaced_timesteps

    theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    checked = 0
    for steps in range(1, 1001, 3):
        try:
            theirs.set_timesteps(steps)
        except ValueError:  # diffusers' own bug for these counts (n + 1 timesteps, one of them -1)
            continue
        if len(theirs.timesteps) == steps:
            ours, reference = spaced_timesteps(1000, steps, "trailing"), theirs.timesteps.numpy()
            k = np.arange(steps)
            tie = 2 * (1000 * (steps - k) % steps) == steps  # (n - k)·T/n is an exact x.5
            # equal, except at exact halves that diffusers' float error rounded the other way: off by one there
            assert (ours[~tie] == reference[~tie]).all(), steps
            assert (np.abs(ours[tie] - reference[tie]) <= 1).all(), steps
            checked += 1
    assert checked > 100


def test_sixty_one_trailing_steps_sample():
    import torch as _torch

    conv = _torch.nn.Conv2d(3, 3, 1)
    sampler = df.FastSampler(lambda x, t: conv(x), df.NoiseSchedule.linear(1000), (3, 4, 4), compile=False,
                             timestep_spacing="trailing")
    images = sampler.sample(1, seed=0, num_inference_steps=61)
    assert sampler.last_report.num_steps == 61 and _torch.isfinite(images).all()
    scheduler = df.FastDDPMScheduler(timestep_spacing="trailing")
    scheduler.set_timesteps(61)
    assert len(scheduler.timesteps) == 61 and scheduler.timesteps[-1] == 15


# ------------------------------------------------------------------------------------ a real diffusers scheduler


def test_it_is_a_diffusers_scheduler(tmp_path):
    ours = df.FastDDPMScheduler(num_train_timesteps=T, prediction_type="v_prediction")
    ours.save_pretrained(tmp_path)
    assert df.FastDDPMScheduler.load_config(tmp_path)["prediction_type"] == "v_prediction"
    assert isinstance(ours, (diffusers.DDPMScheduler, diffusers.SchedulerMixin, diffusers.ConfigMixin))
    assert type(ours).__name__ == "FastDDPMScheduler" and "DDIMScheduler" in {c.__name__ for c in ours.compatibles}
    ours.register_to_config(prediction_type="epsilon")
    assert ours.config.prediction_type == "epsilon"
    assert json.loads(ours.to_json_string())["_class_name"] == "FastDDPMScheduler"
    theirs = diffusers.DDPMScheduler(num_train_timesteps=T)
    for scheduler in (ours, theirs):
        scheduler.set_timesteps(6)
    for t in ours.timesteps:
        prev_ours, prev_theirs = ours.previous_timestep(t), theirs.previous_timestep(t)
        assert isinstance(prev_ours, torch.Tensor) and int(prev_ours) == int(prev_theirs)
        torch.testing.assert_close(ours._get_variance(int(t)), theirs._get_variance(int(t)), rtol=1e-5, atol=1e-7)
    fresh = df.FastDDPMScheduler(num_train_timesteps=T)  # before set_timesteps: t - 1
    assert fresh.previous_timestep(5) == 4 == diffusers.DDPMScheduler(num_train_timesteps=T).previous_timestep(5)


def test_step_output_is_diffusers_output():
    ours = df.FastDDPMScheduler(num_train_timesteps=T)
    x = torch.randn(1, 3, 4, 4)
    out = ours.step(torch.randn_like(x), 5, x, generator=torch.Generator().manual_seed(0))
    assert type(out).__name__ == "DDPMSchedulerOutput" and list(out.keys()) == ["prev_sample", "pred_original_sample"]
    assert out.to_tuple()[0] is out.prev_sample and out["pred_original_sample"] is list(out.values())[1]


def test_trained_betas_as_an_array_save_and_load(tmp_path):
    import numpy as np

    betas = np.linspace(1e-4, 0.05, T)
    ours = df.FastDDPMScheduler(num_train_timesteps=T, trained_betas=betas)
    ours.save_pretrained(tmp_path)  # was "ndarray is not JSON serializable"
    again = df.FastDDPMScheduler.from_pretrained(tmp_path)
    assert again.config.trained_betas == betas.tolist()
    theirs = diffusers.DDPMScheduler.from_pretrained(tmp_path)
    torch.testing.assert_close(theirs.betas, torch.tensor(betas, dtype=torch.float32))


def test_a_pipeline_holding_it_saves_and_loads_back(tmp_path):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"))
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=df.FastDDPMScheduler(num_train_timesteps=T,
                                                                               timestep_spacing="trailing"))
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())["_class_name"] == \
        "FastDDPMScheduler"
    loaded = diffusers.DDPMPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.scheduler, df.FastDDPMScheduler)
    assert loaded.scheduler.config.timestep_spacing == "trailing"

    def images(p):
        return p(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=7,
                 output_type="np").images

    torch.testing.assert_close(torch.from_numpy(images(loaded)), torch.from_numpy(images(pipe)), rtol=0, atol=1e-6)
    # diffusers' own DDPMScheduler reads the same folder (and, asked for, ours reads a DDPMScheduler's)
    theirs = diffusers.DDPMPipeline.from_pretrained(
        tmp_path, scheduler=diffusers.DDPMScheduler.from_pretrained(tmp_path, subfolder="scheduler"))
    torch.testing.assert_close(torch.from_numpy(images(theirs)), torch.from_numpy(images(pipe)), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.torch_references
def test_without_diffusers_the_scheduler_still_works_standalone():
    import subprocess
    import sys

    from subprocess_env import subprocess_env

    code = (
        "import sys, json, tempfile, torch\n"
        "sys.modules['diffusers'] = None  # as if not installed: `import diffusers` raises ImportError\n"
        "import ddpm_fast as df\n"
        "from ddpm_fast.interop.diffusers_scheduler import HAS_DIFFUSERS\n"
        "assert not HAS_DIFFUSERS\n"
        "s = df.FastDDPMScheduler(num_train_timesteps=24, timestep_spacing='trailing')\n"
        "s.set_timesteps(61 // 8)\n"
        "x = torch.randn(1, 3, 4, 4)\n"
        "for t in s.timesteps:\n"
        "    out = s.step(0.1 * x, t, x, generator=torch.Generator().manual_seed(0))\n"
        "    x = out.prev_sample\n"
        "assert out.keys() == ['prev_sample', 'pred_original_sample'] and torch.isfinite(x).all()\n"
        "assert int(s.previous_timestep(s.timesteps[-1])) == -1\n"
        "d = tempfile.mkdtemp(); s.save_pretrained(d)\n"
        "assert df.FastDDPMScheduler.from_pretrained(d).config == s.config\n"
        "print('standalone ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "standalone ok" in result.stdout, result.stderr[-2000:]
