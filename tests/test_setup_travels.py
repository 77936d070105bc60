"""A model's diffusion setup travels with it (issue 14): train → sample → export → ONNX Runtime → diffusers, with no
silent drift. The one record (DiffusionSetup), the one loader (load_pretrained / FastSampler.from_pretrained), the
command line end to end, conflicts, one meaning of "linear", and the spacings of every n.

Exports cost seconds each, so the CLI runs are trained and exported once per module.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import ddpm_fast as df
from ddpm_fast.diffusion_setup import DiffusionSetup, SetupConflict
from ddpm_fast.kernels import cpu_reference
from ddpm_fast.interop.pretrained import load_pretrained

from subprocess_env import subprocess_env

T = 250
SIZE = 8
FP32 = dict(dtype=torch.float32, compile=False, device="cpu")

# Its subject is the setup record, not the kernels: whole-model work runs on the torch references, so the
# interpreter's run would repeat the other path's (tests/conftest.py checks that no test here reaches a kernel).
pytestmark = pytest.mark.torch_references


def cli(argv):
    """`ddpm-fast ...` in this process, whole-model work on the torch references (the interpreter would take minutes;
    the kernels are proven against the references elsewhere). Its exit status."""
    from ddpm_fast.cli import main as entry

    with cpu_reference():
        try:
            return entry.main([str(part) for part in argv])
        except SystemExit as exit:
            return exit.code


# ---------------------------------------------------------------------------------------------------- the record


def test_record_round_trips_and_refuses_what_it_does_not_know(tmp_path):
    setup = DiffusionSetup.from_schedule(df.NoiseSchedule.cosine(T), prediction_type="v_prediction",
                                         variance_type="fixed_large", clip_sample=True, clip_sample_range=2.0,
                                         timestep_spacing="trailing", steps_offset=1, set_alpha_to_one=False,
                                         sample_shape=(3, 8, 8), num_class_embeds=10)
    assert DiffusionSetup.from_dict(json.loads(json.dumps(setup.to_dict()))) == setup
    setup.save(tmp_path)
    assert DiffusionSetup.load(tmp_path) == setup
    assert torch.equal(setup.schedule().betas, df.NoiseSchedule.cosine(T).betas)  # β as numbers, exactly
    assert setup.schedule().name == "cosine" and setup.num_train_timesteps == T
    with pytest.raises(ValueError, match="x.json: unknown setup keys colour"):
        DiffusionSetup.from_dict({**setup.to_dict(), "colour": "red"}, "x.json")
    with pytest.raises(ValueError, match="not a ddpm_fast.DiffusionSetup record"):
        DiffusionSetup.from_dict({"betas": [0.1]})
    with pytest.raises(ValueError, match="x.json: prediction_type"):
        DiffusionSetup.from_dict({**setup.to_dict(), "prediction_type": "noise"}, "x.json")
    with pytest.raises(ValueError, match="betas"):
        DiffusionSetup(betas=(0.1, 1.5))


def test_given_settings_are_checked_against_the_stored_ones():
    setup = DiffusionSetup.from_schedule(df.NoiseSchedule.cosine(T), prediction_type="v_prediction")
    same = setup.with_given({"prediction_type": "v_prediction", "schedule": df.NoiseSchedule.cosine(T),
                             "clip_sample": None}, source="run")
    assert same == setup
    with pytest.raises(SetupConflict, match=r"prediction_type='epsilon' contradicts the setup stored with run "
                                            r"\(prediction_type='v_prediction'\)") as info:
        setup.with_given({"prediction_type": "epsilon"}, source="run")
    assert (info.value.name, info.value.given, info.value.stored) == ("prediction_type", "epsilon", "v_prediction")
    with pytest.raises(SetupConflict, match=r"schedule=linear, T=250 contradicts .* \(schedule=cosine, T=250\)"):
        setup.with_given({"schedule": df.NoiseSchedule.linear(T)}, source="run")
    replaced = setup.with_given({"schedule": df.NoiseSchedule.linear(T), "clip_sample": True}, source="run",
                                override=True)
    assert replaced.schedule_name == "linear" and replaced.clip_sample and replaced.prediction_type == "v_prediction"
    with pytest.raises(TypeError, match="unknown setup setting 'eta'"):
        setup.with_given({"eta": 0.5}, source="run")


def test_linear_has_one_meaning_at_every_T():
    from ddpm_fast.training.trainer import build_schedule

    at_1000 = df.NoiseSchedule.linear(1000)
    assert at_1000.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert at_1000.betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    for total in (50, 250, 1000, 4000):
        ours = df.NoiseSchedule.linear(total)
        trained = build_schedule(df.TrainingConfig(schedule="linear", num_train_timesteps=total))
        assert torch.equal(ours.betas, trained.betas), total
        # improved-diffusion's rule: β scaled by 1000/T, so ᾱ ends near 0 at any T
        assert ours.betas[0].item() == pytest.approx(1e-4 * 1000 / total, rel=1e-12)
        assert ours.alphas_cumprod[-1].item() < 1e-4
    explicit = df.NoiseSchedule.linear(250, beta_start=1e-4, beta_end=0.02)  # diffusers' "linear" at T = 250
    assert explicit.betas[-1].item() == pytest.approx(0.02)


# -------------------------------------------------------------------------------------------------- spacings


@pytest.mark.parametrize("total", [1000, 999])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_every_spacing_gives_n_distinct_in_range_timesteps_in_all_three_samplers(spacing, total, runs):
    from ddpm_fast.export import OnnxSampler

    schedule = df.NoiseSchedule.linear(total)
    fast = df.FastSampler(lambda x, t: x, schedule, (3, 2, 2), timestep_spacing=spacing, **FP32)
    scheduler = df.FastDDPMScheduler(num_train_timesteps=total, timestep_spacing=spacing)
    onnx_sampler = OnnxSampler(runs["cosine"]["model"], schedule=schedule)  # a model graph takes any schedule
    onnx_sampler.timestep_spacing = spacing  # as a file of this spacing would say; the file is of another schedule
    for n in range(1, total + 1):
        chain = fast.timesteps(n)
        assert len(chain) == n and len(set(chain)) == n and 0 <= min(chain) and max(chain) < total, (n, chain[:4])
        assert all(a > b for a, b in zip(chain, chain[1:])), n
        scheduler.set_timesteps(n)
        assert scheduler.timesteps.tolist() == chain, n
        assert onnx_sampler.timesteps(n) == chain, n


def test_spacings_match_diffusers_except_where_its_floats_round_a_half_the_other_way():
    diffusers = pytest.importorskip("diffusers")
    from ddpm_fast.sampling.timesteps import spaced_timesteps

    for spacing in ("linspace", "trailing", "leading"):
        theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
        differing = []
        for n in range(2, 1000, 7):
            theirs.set_timesteps(n)
            ours = spaced_timesteps(1000, n, spacing)
            if len(theirs.timesteps) == n + 1 and spacing == "trailing":  # diffusers' own bug: one more, ending in -1
                assert theirs.timesteps[-1] == -1 and len(ours) == n, n
                continue
            if not np.array_equal(ours, theirs.timesteps.numpy()):
                assert len(theirs.timesteps) == n, (spacing, n)
                assert np.abs(ours - theirs.timesteps.numpy()).max() == 1, (spacing, n)
                differing.append(n)
        assert len(differing) < 20, (spacing, differing)
        if spacing == "leading":
            assert not differing  # integer arithmetic in diffusers too


# -------------------------------------------------------------------------------------------- the one loader


def test_unet_save_folder_with_and_without_its_setup(tmp_path):
    torch.manual_seed(0)
    unet = df.UNet.from_preset("tiny", sample_size=SIZE)
    setup = DiffusionSetup.from_schedule(df.NoiseSchedule.cosine(40), prediction_type="sample", clip_sample=True,
                                         sample_shape=(3, SIZE, SIZE))
    unet.save(tmp_path / "with", setup=setup)
    sampler = df.FastSampler.from_pretrained(tmp_path / "with", **FP32)
    assert sampler.setup == setup
    direct = df.FastSampler(unet, setup.schedule(), prediction_type="sample", clip_sample=True, **FP32)
    with cpu_reference():
        # the same model and setup (each sampler times its own layout choice: NCHW and NHWC round differently)
        torch.testing.assert_close(sampler.sample(2, seed=0, num_inference_steps=5),
                                   direct.sample(2, seed=0, num_inference_steps=5), rtol=1e-5, atol=1e-5)
    unet.save(tmp_path / "without")
    with pytest.warns(UserWarning, match=r"without stores no diffusion setup; using schedule=linear, T=1000, "
                                         r"prediction_type='epsilon'"):
        bare = df.FastSampler.from_pretrained(tmp_path / "without", **FP32)
    assert bare.setup.schedule_name == "linear" and bare.prediction_type == "epsilon"
    with pytest.raises(ValueError, match="holds one set of weights"):
        load_pretrained(tmp_path / "with", weights="model")
    unet.save(tmp_path / "with")  # saved again without a setup: the stale record goes
    assert not (tmp_path / "with" / "setup.json").exists()
    with pytest.raises(ValueError, match="num_class_embeds"):
        unet.save(tmp_path / "bad", setup=DiffusionSetup.from_schedule(df.NoiseSchedule.cosine(4), num_class_embeds=3))


def test_loader_errors_name_the_source(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a training run, training checkpoint, UNet.save, diffusers pipeline"):
        load_pretrained(tmp_path / "plain")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_pretrained(tmp_path / "missing")
    with pytest.raises(TypeError, match="source must be a folder path or a Hugging Face Hub id"):
        load_pretrained(3)
    with pytest.raises(ValueError, match="weights must be 'ema' or 'model'"):
        load_pretrained(tmp_path / "plain", weights="best")
    with pytest.raises(TypeError, match="override_setup must be True or False"):
        df.FastSampler.from_pretrained(tmp_path / "plain", override_setup="yes")


# ------------------------------------------------------------------------------------- the CLI, end to end


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two short training runs, T = 250: cosine + v-prediction, and linear + ε; each exported as three graphs."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, schedule, prediction in (("cosine", "cosine", "v_prediction"), ("linear", "linear", "epsilon")):
        run = root / name
        assert cli(["train", "--run-dir", run, "--steps", 24, "--batch-size", 8, "--image-size", SIZE,
                    "--schedule", schedule, "--train-timesteps", T, "--prediction-type", prediction,
                    "--checkpoint-every", 24, "--warmup-steps", 2, "--lr", "2e-3", "--no-progress"]) == 0
        made[name] = {"run": run}
        graphs = ("model", "ddpm_step", "ddim_step") if name == "cosine" else ("ddpm_step",)
        for graph in graphs:
            out = root / f"{name}-{graph}.onnx"
            # --static-spatial: a third less export time; dynamic H, W are test_onnx_export's subject
            assert cli(["export", "--checkpoint", run, "--graph", graph, "--out", out, "--static-spatial"]) == 0
            made[name][graph] = out
    out = root / "cosine-model-raw.onnx"
    assert cli(["export", "--checkpoint", made["cosine"]["run"], "--weights", "model", "--out", out,
                "--static-spatial"]) == 0
    made["cosine"]["model-raw"] = out
    return made


CHAINS = [("cosine", "model", "ddpm", None), ("cosine", "model", "ddim", 10), ("cosine", "ddpm_step", "ddpm", None),
          ("cosine", "ddim_step", "ddim", 10), ("cosine", "model-raw", "ddpm", 25), ("linear", "ddpm_step", "ddpm", None)]


@pytest.mark.parametrize("name, graph, method, steps", CHAINS, ids=["-".join(map(str, c)) for c in CHAINS])
def test_a_run_exported_by_the_cli_samples_what_the_run_samples(runs, name, graph, method, steps):
    from ddpm_fast.export import OnnxSampler

    weights = "model" if graph == "model-raw" else None
    fast = df.FastSampler.from_pretrained(runs[name]["run"], weights=weights, **FP32)
    trained = load_pretrained(runs[name]["run"]).setup
    assert fast.setup == trained and trained.num_train_timesteps == T
    assert trained.schedule_name == name
    assert trained.prediction_type == ("v_prediction" if name == "cosine" else "epsilon")
    onnx_sampler = OnnxSampler(runs[name][graph])
    assert DiffusionSetup.from_dict(onnx_sampler.metadata["setup"]) == trained
    with cpu_reference():
        expected = fast.sample(2, seed=5, method=method, num_inference_steps=steps)
        got = onnx_sampler.sample(2, seed=5, method=method, num_inference_steps=steps)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    if graph == "model-raw":  # the raw weights differ from the EMA's: the flag was honoured, not ignored
        with cpu_reference():
            ema = df.FastSampler.from_pretrained(runs[name]["run"], **FP32).sample(2, seed=5, num_inference_steps=25)
        assert (ema - got).abs().max() > 1e-3


def test_cli_sample_of_a_run_equals_from_pretrained(runs, tmp_path):
    from ddpm_fast import files

    out = tmp_path / "s.safetensors"
    assert cli(["sample", "--checkpoint", runs["cosine"]["run"], "--num-samples", 3, "--seed", 2, "--steps", 20,
                "--no-compile", "--out", out]) == 0
    fast = df.FastSampler.from_pretrained(runs["cosine"]["run"], **FP32)
    with cpu_reference():
        expected = fast.sample(3, seed=2, num_inference_steps=20)
    torch.testing.assert_close(files.load_tensors(out)["images"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("argv, match", [
    (["--schedule", "linear"], r"--schedule/--train-timesteps linear, T=250 contradicts the schedule stored with "
                               r".*cosine \(cosine, T=250\); pass --override-setup"),
    (["--train-timesteps", "1000"], r"cosine, T=1000 contradicts the schedule stored with .*\(cosine, T=250\)"),
    (["--prediction-type", "epsilon"], r"--prediction-type epsilon contradicts the prediction_type stored with .*"
                                       r"\(v_prediction\)"),
    (["--clip-sample"], r"--clip-sample contradicts the clip_sample stored with .*\(False\)"),
])
@pytest.mark.parametrize("command", ["sample", "export"])
def test_a_flag_that_contradicts_the_run_is_a_one_line_error(runs, tmp_path, capsys, command, argv, match):
    import re

    out = tmp_path / ("x.png" if command == "sample" else "x.onnx")
    code = cli([command, "--checkpoint", runs["cosine"]["run"], "--out", out, *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and re.search(match, err), err
    assert not out.exists()


def test_override_setup_lets_a_flag_replace_the_stored_value(runs, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    assert cli(["sample", "--checkpoint", runs["cosine"]["run"], "--prediction-type", "epsilon", "--override-setup",
                "--steps", 5, "--num-samples", 2, "--no-compile", "--out", out]) == 0
    assert out.exists()


# ------------------------------------------------------------------------------------------------ diffusers


def tiny_pipeline(folder, **scheduler_config):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"))
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=40, **scheduler_config)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return folder


def test_run_to_diffusers_folder_to_ddpm_pipeline(runs, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    folder = df.save_diffusers_pipeline(runs["cosine"]["run"], tmp_path / "pipe")
    pipe = diffusers.DDPMPipeline.from_pretrained(folder)
    assert isinstance(pipe.scheduler, diffusers.DDPMScheduler)
    fast = df.FastSampler.from_pretrained(runs["cosine"]["run"], **FP32)
    again = df.FastSampler.from_pretrained(folder, **FP32)  # the folder reads back to the run's setup
    assert again.setup.prediction_type == "v_prediction" and again.setup.num_train_timesteps == T
    assert torch.allclose(again.schedule.betas, fast.schedule.betas, rtol=1e-6)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=25,
                  output_type="np").images
    theirs = torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1  # diffusers' [0, 1] NHWC back to [-1, 1]
    with cpu_reference():
        ours = fast.sample(2, generator=torch.Generator().manual_seed(0), num_inference_steps=25)
    torch.testing.assert_close(ours.clamp(-1, 1), theirs, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="not empty and not a pipeline folder"):
        df.save_diffusers_pipeline(runs["cosine"]["run"], runs["cosine"]["run"])


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_diffusers_folder_to_onnx_equals_from_diffusers(tmp_path, spacing):
    from ddpm_fast.export import OnnxSampler, export_onnx

    folder = tiny_pipeline(tmp_path / "pipe", timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0,
                           prediction_type="v_prediction")
    path = export_onnx(folder, tmp_path / "model.onnx", dynamic_spatial=False)  # a third less export time
    onnx_sampler = OnnxSampler(path)
    fast = df.FastSampler.from_diffusers(folder, dtype=torch.float32, compile=False)
    assert DiffusionSetup.from_dict(onnx_sampler.metadata["setup"]) == fast.setup
    for method, steps in (("ddpm", 7), ("ddim", 6)):
        with cpu_reference():
            expected = fast.sample(2, seed=4, method=method, num_inference_steps=steps)
            got = onnx_sampler.sample(2, seed=4, method=method, num_inference_steps=steps)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(SetupConflict, match="prediction_type='epsilon' contradicts"):
        export_onnx(folder, tmp_path / "bad.onnx", prediction_type="epsilon")


# ------------------------------------------------------------------------------------------- Hugging Face Hub


def test_a_hub_id_resolves_from_the_local_cache_offline(tmp_path):
    pytest.importorskip("huggingface_hub")
    folder = tiny_pipeline(tmp_path / "pipe", timestep_spacing="trailing")
    # A cache as huggingface_hub lays it out: models--ORG--NAME/{refs/main, snapshots/<commit>/...}
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--ddpm-fast-tests--tiny-pipe"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.parent.mkdir()
    import shutil

    shutil.copytree(folder, snapshot)
    code = (
        "import torch, ddpm_fast as df\n"
        "from ddpm_fast.kernels import cpu_reference\n"
        # NCHW for both: left to default, each sampler times the two layouts, and a busy machine may pick differently
        "hub = df.FastSampler.from_pretrained('ddpm-fast-tests/tiny-pipe', dtype=torch.float32, compile=False,\n"
        "                                     channels_last=False)\n"
        f"local = df.FastSampler.from_diffusers({str(folder)!r}, dtype=torch.float32, compile=False,\n"
        "                                       channels_last=False)\n"
        "assert hub.setup == local.setup and hub.timestep_spacing == 'trailing', hub.setup\n"
        "with cpu_reference():\n"
        "    assert torch.equal(hub.sample(2, seed=1, num_inference_steps=5), "
        "local.sample(2, seed=1, num_inference_steps=5))\n"
        "try:\n"
        "    df.FastSampler.from_pretrained('ddpm-fast-tests/not-cached')\n"
        "except FileNotFoundError as error:\n"
        "    print('refused:', error)\n"
    )
    env = {**subprocess_env(), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: ddpm-fast-tests/not-cached: no such folder, and no Hugging Face Hub model" in result.stdout


# ----------------------------------------------------------------------------------- what a new user ran into


def test_the_stored_T_alone_is_no_conflict_whatever_the_schedule_is_called(tmp_path, capsys):
    torch.manual_seed(0)
    unet = df.UNet.from_preset("tiny", sample_size=SIZE)
    custom = DiffusionSetup(betas=tuple(np.linspace(1e-3, 0.2, 40)), sample_shape=(3, SIZE, SIZE))
    unet.save(tmp_path / "custom", setup=custom)
    out = tmp_path / "x.safetensors"
    common = ["--steps", 3, "--num-samples", 2, "--no-compile", "--out", out]
    assert cli(["sample", "--checkpoint", tmp_path / "custom", "--train-timesteps", 40, *common]) == 0
    capsys.readouterr()
    assert cli(["sample", "--checkpoint", tmp_path / "custom", "--train-timesteps", 50, *common]) == 2
    assert "--schedule/--train-timesteps T=50 contradicts the schedule stored with" in capsys.readouterr().err
    assert cli(["sample", "--checkpoint", tmp_path / "custom", "--train-timesteps", 50, "--override-setup",
                *common]) == 2
    assert "alone cannot rebuild the stored schedule (custom, T=40)" in capsys.readouterr().err


def test_one_name_two_meanings_shows_the_betas():
    # diffusers' "linear" at T = 50 (1e-4 → 0.02) against ours (scaled by 1000/T): the same words, other β
    diffusers_linear = DiffusionSetup.from_schedule(df.NoiseSchedule.linear(50, beta_start=1e-4, beta_end=0.02))
    with pytest.raises(SetupConflict, match=r"linear, T=50, β 0.002 … 0.4 contradicts .*linear, T=50, β 0.0001 … 0.02"):
        diffusers_linear.with_given({"schedule": df.NoiseSchedule.linear(50)}, source="pipe")


def test_from_pretrained_takes_another_sample_shape_and_a_guessed_setup_is_not_saved_to_diffusers(tmp_path):
    torch.manual_seed(0)
    unet = df.UNet.from_preset("tiny", sample_size=SIZE)
    unet.save(tmp_path / "with", setup=DiffusionSetup.from_schedule(df.NoiseSchedule.cosine(10),
                                                                    sample_shape=(3, SIZE, SIZE)))
    sampler = df.FastSampler.from_pretrained(tmp_path / "with", sample_shape=(3, 16, 16), **FP32)
    with cpu_reference():
        assert sampler.sample(1, seed=0, num_inference_steps=2).shape == (1, 3, 16, 16)
    unet.save(tmp_path / "without")
    with pytest.raises(ValueError, match="stores no diffusion setup; save it with UNet.save"):
        df.save_diffusers_pipeline(tmp_path / "without", tmp_path / "pipe")
    assert not (tmp_path / "pipe").exists()
    with pytest.raises(ValueError, match="trained_betas holds 10 values; num_train_timesteps is 50"):
        df.FastDDPMScheduler(num_train_timesteps=50, trained_betas=[0.01] * 10)


def test_a_checkpoint_written_before_the_setup_record_still_loads(runs, tmp_path):
    # older checkpoints stored only {"schedule": {name, betas}} and the training config's prediction type
    import shutil

    from ddpm_fast import files

    step = next((runs["cosine"]["run"] / "checkpoints").iterdir())
    old = shutil.copytree(step, tmp_path / "old")
    state = files.read_json(old / "state.json")
    setup = DiffusionSetup.from_dict(state.pop("setup"))
    state["schedule"] = {"name": setup.schedule_name, "betas": list(setup.betas)}
    files.atomic_write_json(old / "state.json", state)
    assert load_pretrained(old).setup == setup
