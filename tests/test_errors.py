"""Every bad input gets a ValueError / TypeError that names the argument."""

import json

import numpy as np
import pytest
import torch

import ddpm_fast as df
from ddpm_fast.kernels import cpu_reference

S = df.NoiseSchedule.linear(100)


def _x(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype)


@pytest.mark.parametrize("call, error, match", [
    (lambda: df.q_sample(_x(2, 3, 4, 4), torch.tensor([0, 100]), S), ValueError, r"t contains 100, outside \[0, 100\)"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), torch.tensor([-1, 0]), S), ValueError, r"t contains -1"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), 100, S), ValueError, r"t=100 is outside"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), torch.tensor([1.0, 2.0]), S), TypeError, "t must be an integer tensor"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), torch.tensor([1, 2, 3]), S), ValueError, r"t must have shape \[2\]"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), "5", S), TypeError, "t must be an int"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), True, S), TypeError, "t must be an int"),
    (lambda: df.q_sample(torch.ones(2, 3, 4, 4, dtype=torch.int64), 1, S), TypeError, "x0 must have dtype"),
    (lambda: df.q_sample(_x(2, 3, 4, 4, dtype=torch.float64), 1, S), TypeError, "x0 must have dtype"),
    (lambda: df.q_sample([[1.0]], 1, S), TypeError, "x0 must be a torch.Tensor"),
    (lambda: df.q_sample(_x(2), 1, S), ValueError, "x0 must have shape"),
    (lambda: df.q_sample(_x(2, 3, 4, 4, 4), 1, S), ValueError, "x0 must have shape"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), 1, S, noise=_x(2, 3, 4, 5)), ValueError, "noise has shape"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), 1, S, noise=torch.ones(2, 3, 4, 4, dtype=torch.int32)), TypeError,
     "noise must have dtype"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), 1, S, noise=_x(2, 3, 4, 4), seed=0), ValueError, "noise= or seed=, not both"),
    (lambda: df.p_step(_x(2, 3, 4, 4), 1, _x(2, 3, 4, 4), S, noise=_x(2, 3, 4, 4), seed=3), ValueError,
     "noise= or seed=, not both"),
    (lambda: df.ddim_step(_x(2, 3, 4, 4), 5, 1, _x(2, 3, 4, 4), S, eta=1.0, noise=_x(2, 3, 4, 4), seed=3), ValueError,
     "noise= or seed=, not both"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), 1, S, seed=-1), ValueError, "seed must lie in"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), 1, S, seed=2**63), ValueError, "seed must lie in"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), 1, S, seed=1.5), TypeError, "seed must be an int"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), 1, S, seed=torch.tensor([1.0])), TypeError, "seed tensor must be int64"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), 1, S, sample_offset=-2), ValueError, "sample_offset must lie in"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), 1, S, sample_offset=2**64), ValueError, "sample_offset must lie in"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), 1, S, sample_offset=1.0), TypeError, "sample_offset must be an int"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), 1, S, sample_offset=2**31 - 1), ValueError,
     r"sample_offset \+ batch_size must not exceed 2\*\*31"),
    (lambda: df.p_step(_x(2, 3, 4, 4), 1, _x(2, 3, 4, 4), S, sample_offset=2**31 - 1), ValueError,
     r"sample_offset \+ batch_size"),
    (lambda: df.ddim_step(_x(2, 3, 4, 4), 5, 1, _x(2, 3, 4, 4), S, eta=1.0, sample_offset=2**31 - 1), ValueError,
     r"sample_offset \+ batch_size"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), 1, S, seed=torch.tensor([1, 2])), ValueError, "seed tensor must hold one"),
    (lambda: df.q_sample(_x(2, 3, 4, 4), 1, "linear"), TypeError, "schedule must be a ddpm_fast.NoiseSchedule"),
    (lambda: df.p_step(_x(2, 3, 4, 4), 1, _x(2, 3, 4, 4, dtype=torch.bfloat16), S), TypeError,
     "x_t must have dtype float32"),
    (lambda: df.p_step(_x(2, 3, 4, 4), 1, _x(2, 3, 4, 4), S, prediction_type="eps"), ValueError,
     "prediction_type must be one of"),
    (lambda: df.p_step(_x(2, 3, 4, 4), 1, _x(2, 3, 4, 4), S, variance_type="learned"), ValueError,
     "variance_type must be one of"),
    (lambda: df.p_step(_x(2, 3, 4, 4), 1, _x(2, 3, 4, 4), S, variance_type="learned_range"), ValueError,
     "model_output has shape .*2C channels"),
    (lambda: df.p_step(_x(2, 6, 4, 4), 1, _x(2, 3, 4, 4), S), ValueError, "model_output has shape"),
    (lambda: df.p_step(_x(3, 3, 4, 4), 1, _x(2, 3, 4, 4), S), ValueError, "model_output has shape"),
    (lambda: df.p_step(_x(2, 3, 4, 4).int(), 1, _x(2, 3, 4, 4), S), TypeError, "model_output must have dtype"),
    (lambda: df.p_step(_x(2, 3, 4, 4), 1, _x(2, 3, 4, 4), S, clip_sample=True, clip_sample_range=0), ValueError,
     "clip_sample_range must be positive"),
    (lambda: df.p_step(_x(2, 3, 4, 4), 1, _x(2, 3, 4, 4), S, clip_sample_range=float("nan")), ValueError,
     "clip_sample_range"),
    (lambda: df.ddim_step(_x(2, 3, 4, 4), 5, 5, _x(2, 3, 4, 4), S), ValueError, "t_prev must be smaller than t"),
    (lambda: df.ddim_step(_x(2, 3, 4, 4), 5, -2, _x(2, 3, 4, 4), S), ValueError, r"t_prev=-2 is outside \[-1, 100\)"),
    (lambda: df.ddim_step(_x(2, 3, 4, 4), 5, 1, _x(2, 3, 4, 4), S, eta=-0.5), ValueError, "eta must be non-negative"),
    (lambda: df.ddim_step(_x(2, 3, 4, 4), 5, 1, _x(2, 3, 4, 4), S, eta="1"), TypeError, "eta must be a number"),
    (lambda: df.ddim_step(_x(2, 5, 4, 4), 5, 1, _x(2, 3, 4, 4), S), ValueError, "model_output has shape"),
])
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.gpu
def test_device_mismatch_is_named():
    x_cpu, x_gpu = _x(2, 3, 4, 4), _x(2, 3, 4, 4).cuda()
    with pytest.raises(ValueError, match="noise is on"):
        df.q_sample(x_gpu, 1, S, noise=x_cpu)
    with pytest.raises(ValueError, match="t is on"):
        df.q_sample(x_gpu, torch.tensor([1, 2]), S)
    with pytest.raises(ValueError, match="model_output is on"):
        df.p_step(x_cpu, 1, x_gpu, S)
    with pytest.raises(ValueError, match="seed is on"):
        df.q_sample(x_gpu, 1, S, seed=torch.tensor([1]))


def test_device_mismatch_is_named_on_cpu_via_meta():
    # Without a GPU, a meta tensor stands in for "another device": the same checks must fire.
    x_cpu, x_meta = _x(2, 3, 4, 4), torch.empty(2, 3, 4, 4, device="meta")
    with pytest.raises(ValueError, match="noise is on meta"):
        df.q_sample(x_cpu, 1, S, noise=x_meta)
    with pytest.raises(ValueError, match="t is on meta"):
        df.q_sample(x_cpu, torch.tensor([1, 2], device="meta"), S)
    with pytest.raises(ValueError, match="model_output is on meta"):
        df.p_step(x_meta, 1, x_cpu, S)
    with pytest.raises(ValueError, match="seed is on meta"):
        df.q_sample(x_cpu, 1, S, seed=torch.tensor([1], device="meta"))


def test_seed_function_errors():
    terms = df.reference.schedule_terms(df.reference.linear_beta_schedule(10))
    model = lambda x, t: x  # noqa: E731
    args = (terms["betas"], terms["sqrt_recip_alphas"], terms["sqrt_one_minus_alphas_cumprod"],
            terms["posterior_variance"])
    with pytest.raises(ValueError, match="timesteps"):
        df.sample(model, 2, 4, 0, *args)
    with pytest.raises(ValueError, match="betas must be 1-D with at least 20 entries"):
        df.sample(model, 2, 4, 20, *args)
    with pytest.raises(ValueError, match="num_samples"):
        df.sample(model, -1, 4, 10, *args)
    with pytest.raises(TypeError, match="num_samples must be an int"):
        df.sample(model, 2.0, 4, 10, *args)
    with pytest.raises(ValueError, match="img_size"):
        df.sample(model, 2, (3, 4), 10, *args)
    with pytest.raises(ValueError, match="posterior_variance contains NaN"):
        df.sample(model, 2, 4, 10, *args[:3], torch.full((10,), float("nan")))
    with pytest.raises(TypeError, match="model\\(x, t\\) must return"):
        df.sample(lambda x, t: x[:, :1], 2, 4, 10, *args)
    with pytest.raises(TypeError, match="betas must be"):
        df.sample(model, 2, 4, 10, [0.1] * 10, *args[1:])
    with pytest.raises(ValueError, match="t contains 10"):
        df.forward_diffusion_sample(_x(2, 3, 4, 4), torch.tensor([0, 10]), terms["sqrt_recip_alphas"],
                                    terms["sqrt_one_minus_alphas_cumprod"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_fast_sampler_on_cuda_without_cuda_is_a_value_error(device):
    with pytest.raises(ValueError, match="CUDA is not available"):
        df.FastSampler(lambda x, t: x, S, (3, 4, 4), device=device)


@pytest.mark.parametrize("device", ["gpu", 3.5])
def test_fast_sampler_names_a_bad_device(device):
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
        df.FastSampler(lambda x, t: x, S, (3, 4, 4), device=device)


# ----------------------------------------------------------------------- spatial sizes the U-Net cannot take


def test_a_size_the_unet_cannot_take_is_named_before_any_work(tmp_path, capsys):
    unet = df.UNet.from_preset("tiny")  # 3 levels: H and W must be multiples of 4
    with pytest.raises(ValueError, match=r"sample: H and W must be multiples of 4 .* got 30x30"):
        unet(torch.zeros(1, 3, 30, 30), 0)
    with pytest.raises(ValueError, match=r"sample_shape: H and W must be multiples of 4 .* got 30x28"):
        df.FastSampler(unet, S, (3, 30, 28))
    config = df.TrainingConfig(image_size=30, steps=1, batch_size=2)
    with pytest.raises(ValueError, match=r"image_size: H and W must be multiples of 4"):
        df.Trainer(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # nothing half-made

    from ddpm_fast.cli import main as cli

    assert cli.main(["train", "--run-dir", str(tmp_path / "cli"), "--image-size", "30", "--steps", "1",
                     "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "multiples of 4" in err and "Traceback" not in err
    assert not (tmp_path / "cli").exists()


def test_a_run_dir_that_is_a_file_is_named(tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        df.Trainer(df.TrainingConfig(steps=1, batch_size=2), file, progress=False)

    from ddpm_fast.cli import main as cli

    assert cli.main(["train", "--run-dir", str(file), "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a folder" in err and file.read_text() == "mine"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", [["train", "--run-dir", "{tmp}/run", "--steps", "1"],
                                     ["demo", "--run-dir", "{tmp}/demo", "--steps", "1"]])
def test_cli_device_cuda_without_cuda_is_one_line(command, tmp_path, capsys):
    from ddpm_fast.cli import main as cli

    assert cli.main([part.replace("{tmp}", str(tmp_path)) for part in command] + ["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA is not available" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


@pytest.mark.torch_references  # a CLI message: the interpreter's run would only train slower
def test_an_unreadable_image_met_while_training_is_one_line_naming_it(tmp_path, capsys):
    from PIL import Image

    from ddpm_fast.cli import main as cli

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(7):
        Image.new("RGB", (16, 16), (index * 30, 0, 0)).save(folder / f"good{index}.png")
    (folder / "zz-broken.jpg").write_bytes(b"not a jpeg")
    command = ["train", "--run-dir", str(tmp_path / "run"), "--data", str(folder), "--image-size", "16",
               "--model", "tiny", "--steps", "2", "--batch-size", "4", "--no-progress"]
    code = cli.main(command)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "zz-broken.jpg" in err and "Traceback" not in err
    assert "--skip-unreadable" in err
    assert not (tmp_path / "run").exists()  # found before the run folder is made
    assert cli.main(command + ["--skip-unreadable", "--batch-size", "8"]) == 2  # 7 readable images: no batch of 8
    assert "fewer than one batch of 8" in capsys.readouterr().err and not (tmp_path / "run").exists()
    with cpu_reference():
        assert cli.main(command + ["--skip-unreadable"]) == 0
    out = capsys.readouterr().out
    assert "7 images of 3x16x16 (1 unreadable skipped)" in out
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert records[0] == {"step": 0, "event": "data", "images": 7, "unreadable_skipped": 1,
                          "unreadable": [str(folder / "zz-broken.jpg")]}
    assert records[-1]["step"] == 2 and all("loss" in record for record in records[1:])


# ---------------------------------------------------------------------------------------------------------------
# One table per public entry point: the mistakes users make, each a ValueError / TypeError naming the argument.


class _Eps(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x, t):
        return self.conv(x)


def _conditional_sampler():
    model = df.UNet.from_preset("tiny", sample_size=8, num_class_embeds=4)  # 3 classes and the null class, 3
    return df.FastSampler(model, df.NoiseSchedule.linear(10), null_class_label=3, compile=False)


def _sampler(**options):
    return df.FastSampler(_Eps(), df.NoiseSchedule.linear(10), (3, 4, 4), compile=False, **options)


@pytest.mark.parametrize("call, error, match", [
    (lambda: df.FastSampler("model", S, (3, 4, 4)), TypeError, "model must be an nn.Module or a callable"),
    (lambda: df.FastSampler(_Eps(), "linear", (3, 4, 4)), TypeError, "schedule must be a ddpm_fast.NoiseSchedule"),
    (lambda: df.FastSampler(_Eps(), S), ValueError, r"sample_shape=\(C, H, W\) is required"),
    (lambda: df.FastSampler(_Eps(), S, (3, 4)), ValueError, "sample_shape must be"),
    (lambda: df.FastSampler(_Eps(), S, (3, 0, 4)), ValueError, "sample_shape must be"),
    (lambda: df.FastSampler(_Eps(), S, (3, 4.0, 4)), ValueError, "sample_shape must be"),
    (lambda: df.FastSampler(df.UNet.from_preset("tiny"), S, (3, 30, 30)), ValueError,
     "sample_shape: H and W must be multiples of 4"),
    (lambda: _sampler(prediction_type="noise"), ValueError, "prediction_type must be one of"),
    (lambda: _sampler(variance_type=None), ValueError, "variance_type must be one of"),
    (lambda: _sampler(timestep_spacing="even"), ValueError, "timestep_spacing must be one of"),
    (lambda: _sampler(steps_offset=-1), ValueError, "steps_offset must be a non-negative int"),
    (lambda: _sampler(steps_per_graph=0), ValueError, "steps_per_graph must be a positive int"),
    (lambda: _sampler(max_cached_graphs=1.5), ValueError, "max_cached_graphs must be a positive int"),
    (lambda: _sampler(clip_sample="yes"), TypeError, "clip_sample must be True, False or None"),
    (lambda: _sampler(channels_last=1), TypeError, "channels_last must be True, False or None"),
    (lambda: _sampler(clip_sample_range=-1.0), ValueError, "clip_sample_range must be positive"),
    (lambda: _sampler(solver_order=4), ValueError, "solver_order must be one of 1, 2, 3, got 4"),
    (lambda: _sampler(solver_order="2"), TypeError, "solver_order must be an int, got str"),
    (lambda: _sampler(solver_order=True), TypeError, "solver_order must be an int, got bool"),
    (lambda: _sampler(final_sigmas_type="min"), ValueError, "final_sigmas_type must be one of zero, sigma_min"),
    (lambda: _sampler(lower_order_final=None), TypeError, "lower_order_final must be True or False, got None"),
    (lambda: _sampler(euler_at_final=1), TypeError, "euler_at_final must be True or False, got 1"),
    (lambda: _sampler(use_karras_sigmas="yes"), TypeError, "use_karras_sigmas must be True or False"),
    (lambda: _sampler(use_karras_sigmas=True, use_exponential_sigmas=True), ValueError,
     "use_karras_sigmas=True and use_exponential_sigmas=True: choose at most one σ spacing"),
    (lambda: _sampler(thresholding=True, clip_sample=True), ValueError,
     "clip_sample=True and thresholding=True both bound the predicted x0: choose one"),
    (lambda: _sampler(thresholding=1), TypeError, "thresholding must be True or False, got 1"),
    (lambda: _sampler(dynamic_thresholding_ratio=1.5), ValueError, r"dynamic_thresholding_ratio must lie in \[0, 1\]"),
    (lambda: _sampler(dynamic_thresholding_ratio="0.9"), TypeError, "dynamic_thresholding_ratio must be a number"),
    (lambda: _sampler(sample_max_value=0.0), ValueError, "sample_max_value must be positive and finite"),
    (lambda: _sampler(thresholding=True).sample(1, method="ddim", num_inference_steps=5), ValueError,
     "thresholding=True applies to the multistep solvers only; method='ddim' does not threshold"),
    (lambda: _sampler(use_lu_lambdas=True).sample(1, method="dpm_solver++", timesteps=[5, 2]), ValueError,
     "timesteps cannot be given with use_lu_lambdas=True: the σ spacing picks the chain"),
    (lambda: _sampler(use_karras_sigmas=True).sample(1, method="dpm_solver++", num_inference_steps=11), ValueError,
     r"num_inference_steps must lie in \[1, 10\], got 11"),
    (lambda: _sampler(use_karras_sigmas=True).sample(1, seed=0, method="sde_dpm_solver++", num_inference_steps=10),
     ValueError, r"calls the model at timestep .* more than once, and its noise is keyed by timestep"),
    (lambda: _sampler(use_karras_sigmas=True).sample(1, method="dpm_solver++"), ValueError,
     "method='dpm_solver\\+\\+' needs num_inference_steps"),
    (lambda: _sampler(dtype=torch.float64), TypeError, "dtype must be torch.float32"),
    (lambda: _sampler(dtype="float32"), TypeError, "dtype must be torch.float32"),
    (lambda: _sampler(device="gpu"), ValueError, "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    (lambda: _sampler(device="mps"), ValueError, "device must be auto, cpu, cuda or cuda:N, got 'mps'"),
    (lambda: _sampler(device=torch.device("meta")), ValueError, "got 'meta'"),
    (lambda: df.FastSampler(_Eps().to("meta"), S, (3, 4, 4)), ValueError, "got 'meta'"),  # the model's device
    (lambda: df.FastSampler(df.UNet.from_preset("tiny", sample_size=8), S, (4, 8, 8)), ValueError,
     r"sample_shape \(4, 8, 8\): the model takes 3 channels"),
    (lambda: _sampler().sample(2, progress="yes"), TypeError, "progress must be True or False"),
    (lambda: _sampler(cuda_graphs=True, device="cpu"), ValueError, "cuda_graphs=True needs a CUDA device"),
    (lambda: _sampler().sample(-1), ValueError, "batch_size must be a non-negative int"),
    (lambda: _sampler().sample(2.0), ValueError, "batch_size must be a non-negative int"),
    (lambda: _sampler().sample(True), ValueError, "batch_size must be a non-negative int"),
    (lambda: _sampler().sample(2, seed=-1), ValueError, "seed must lie in"),
    (lambda: _sampler().sample(2, seed="0"), TypeError, "seed must be an int"),
    (lambda: _sampler().sample(2, seed=0, generator=torch.Generator()), ValueError, "seed= or generator=, not both"),
    (lambda: _sampler().sample(2, generator=0), TypeError, "generator must be a torch.Generator"),
    (lambda: _sampler().sample(2, num_inference_steps=0), ValueError, "num_inference_steps"),
    (lambda: _sampler().sample(2, num_inference_steps=11), ValueError, "num_inference_steps"),
    (lambda: _sampler().sample(2, num_inference_steps=2.5), TypeError, "num_inference_steps"),
    (lambda: _sampler().sample(2, method="euler"), ValueError, "method must be one of"),
    (lambda: _sampler().sample(2, eta=0.5), ValueError, "eta applies to method='ddim' only"),
    (lambda: _sampler().sample(2, method="ddim", eta=float("nan")), ValueError, "eta must be non-negative"),
    (lambda: _sampler().sample(2, output_type="numpy"), ValueError, "output_type must be one of"),
    (lambda: _sampler().sample(2, sample_offset=-1), ValueError, "sample_offset must lie in"),
    (lambda: _sampler().warm_up(0), ValueError, "batch_size must be a positive int"),
    (lambda: _sampler(variance_type="learned_range").sample(1), ValueError,
     r"expected a float tensor of shape \[1, 6, 4, 4\] \(variance_type='learned_range' needs .* 2C channels\)"),
    (lambda: df.FastSampler(lambda x, t: x[:, :1], S, (3, 4, 4), compile=False).sample(1), ValueError,
     r"the model returned \(1, 1, 4, 4\); expected a float tensor"),
    (lambda: df.FastSampler(lambda x, t: "noise", S, (3, 4, 4), compile=False).sample(1), ValueError,
     "the model returned str"),
    (lambda: df.FastSampler.from_diffusers(42), TypeError, "DDPMPipeline"),
    (lambda: _conditional_sampler().sample(2, class_labels=[0, 3]), ValueError,
     r"class_labels must lie in \[0, 3\) \(the model's 3 classes\).*3 is the null class.*guidance_scale=0"),
    (lambda: _conditional_sampler().sample(2, class_labels=[0, -1]), ValueError, r"got values in \[-1, 0\]$"),
])
def test_fast_sampler_mistakes(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    (lambda: df.NoiseSchedule.linear(0), ValueError, "num_timesteps"),
    (lambda: df.NoiseSchedule.linear(-5), ValueError, "num_timesteps"),
    (lambda: df.NoiseSchedule.linear(10.0), TypeError, "num_timesteps"),
    (lambda: df.NoiseSchedule.linear(10, beta_start=0.5, beta_end=1.5), ValueError, "betas"),
    (lambda: df.NoiseSchedule.cosine(10, s=-1.0), ValueError, r"^s must be a number in \(0, inf\)"),
    (lambda: df.NoiseSchedule.cosine(10, max_beta=1.0), ValueError, r"^max_beta must be a number in \(0, 1.0\)"),
    (lambda: df.NoiseSchedule.from_betas([]), ValueError, "betas"),
    (lambda: df.NoiseSchedule.from_betas([0.1, 1.0]), ValueError, "betas"),
    (lambda: df.NoiseSchedule.from_betas([0.1, float("nan")]), ValueError, "betas"),
    (lambda: df.NoiseSchedule.from_betas([[0.1, 0.2]]), ValueError, "betas"),
    (lambda: df.NoiseSchedule.from_betas("0.1"), TypeError, "betas"),
    (lambda: df.NoiseSchedule.from_diffusers(3), TypeError, "scheduler"),
    (lambda: S.buffers("tpu"), ValueError, "device"),
])
def test_noise_schedule_mistakes(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    (lambda: df.UNet.from_preset("huge"), ValueError, "preset"),
    (lambda: df.UNet.from_preset("tiny", no_such_field=1), (TypeError, ValueError), "no_such_field"),
    (lambda: df.UNet(df.UNetConfig(sample_size=-8)), ValueError, "sample_size"),
    (lambda: df.UNet("tiny"), TypeError, "config"),
    (lambda: df.UNet.from_preset("tiny")(torch.randn(1, 3, 30, 30), torch.tensor([1])), ValueError,
     "multiples of 4"),
    (lambda: df.UNet.from_preset("tiny")(torch.randn(1, 4, 32, 32), torch.tensor([1])), ValueError,
     r"sample must be \[B, 3, H, W\]"),
    (lambda: df.UNet.from_preset("tiny")(torch.randn(3, 32, 32), torch.tensor([1])), ValueError, "sample"),
    (lambda: df.UNet.load("/no/such/folder"), FileNotFoundError, "/no/such/folder"),
    (lambda: df.UNet.from_preset("tiny", sample_size=8)(torch.randn(1, 3, 8, 8), 5.5), ValueError,
     "timestep must be an integer step, got 5.5"),
    (lambda: df.UNet.from_preset("tiny", sample_size=8)(torch.randn(2, 3, 8, 8), torch.tensor([1.0, 2.5])),
     ValueError, r"timestep must hold integer steps, got a torch.float32 tensor with non-integral values \(e.g. 2.5\)"),
    (lambda: df.UNet.from_preset("tiny", sample_size=8)(torch.randn(1, 3, 8, 8), torch.tensor([True])), TypeError,
     "timestep must be an integer tensor"),
])
def test_unet_mistakes(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_unet_load_of_the_wrong_kind_of_path_is_named(tmp_path):
    (tmp_path / "file.safetensors").write_bytes(b"junk")
    with pytest.raises((ValueError, FileNotFoundError), match="file.safetensors"):
        df.UNet.load(tmp_path / "file.safetensors")  # a file where a folder is expected
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        df.UNet.load(tmp_path / "folder")


@pytest.mark.parametrize("changes, error, match", [
    (dict(model="huge"), ValueError, "model must be one of"),
    (dict(data=3), TypeError, "data must be"),
    (dict(data=""), TypeError, "data must be"),
    (dict(data_range=(1, 0)), ValueError, "data_range must be finite numbers"),
    (dict(data_range="0,1"), TypeError, "data_range must be a pair"),
    (dict(data_key=3), TypeError, "data_key must be the name of an array"),
    (dict(schedule="quadratic"), ValueError, "schedule must be one of"),
    (dict(prediction_type="eps"), ValueError, "prediction_type must be one of"),
    (dict(min_snr_gamma=0), ValueError, "min_snr_gamma"),
    (dict(steps=0), ValueError, "steps must be at least 1"),
    (dict(batch_size=8.0), TypeError, "batch_size must be an int"),
    (dict(learning_rate=float("nan")), ValueError, "learning_rate"),
    (dict(learning_rate=-1e-4), ValueError, "learning_rate"),
    (dict(grad_clip=0), ValueError, "grad_clip"),
    (dict(adam_betas=(0.9,)), ValueError, "adam_betas"),
    (dict(ema_decay=1.0), ValueError, "ema_decay"),
    (dict(dtype="float16"), ValueError, "dtype must be one of"),
    (dict(compile="yes"), TypeError, "compile must be True, False or None"),
    (dict(skip_unreadable_images=1), TypeError, "skip_unreadable_images must be True or False"),
    (dict(num_workers=-1), ValueError, "num_workers"),
    (dict(variance_type="learned"), ValueError, "variance_type must be one of fixed_small, fixed_large"),
    (dict(variance_type="learned_range", vlb_weight=0), ValueError, "vlb_weight"),
    (dict(variance_type="learned_range", min_snr_gamma=5.0), ValueError, "min_snr_gamma weights L_simple alone"),
])
def test_training_config_mistakes(changes, error, match):
    with pytest.raises(error, match=match):
        df.TrainingConfig(**changes)


@pytest.mark.parametrize("make, error, match", [
    (lambda tmp: df.Trainer({"steps": 1}, tmp / "run"), TypeError, "config must be a TrainingConfig"),
    (lambda tmp: df.Trainer(df.TrainingConfig(data=str(tmp / "missing")), tmp / "run"), FileNotFoundError,
     "missing"),
    (lambda tmp: df.Trainer(df.TrainingConfig(image_size=30), tmp / "run"), ValueError, "image_size.*multiples of 4"),
    (lambda tmp: df.Trainer(df.TrainingConfig(batch_size=3), tmp / "run", device="tpu"), ValueError, "device"),
    (lambda tmp: df.Trainer(df.TrainingConfig(), tmp / "run").train(steps=-1), ValueError, "steps must be"),
    (lambda tmp: df.Trainer(None, tmp / "run"), TypeError, "config must be a TrainingConfig .*with resume=True"),
    (lambda tmp: df.Trainer({"no_such": 1}, tmp / "run", resume=True), TypeError, "no_such"),
])
def test_trainer_mistakes(make, error, match, tmp_path):
    with pytest.raises(error, match=match):
        make(tmp_path)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize("make, error, match", [
    (lambda tmp: open_dataset(str(tmp / "missing")), FileNotFoundError, "missing"),
    (lambda tmp: open_dataset(str(tmp / "notes.txt")), ValueError, "not a dataset"),
    (lambda tmp: open_dataset(str(tmp / "empty")), ValueError, "no .* images"),
    (lambda tmp: open_dataset("shapes", image_size=0), ValueError, "image_size"),
    (lambda tmp: open_dataset(str(tmp / "bad.npz")), ValueError, "bad.npz"),
    (lambda tmp: open_dataset(3), TypeError, "source"),
    (lambda tmp: open_dataset(str(tmp / "unit.npz")), ValueError,
     r"unit.npz: the float images lie in \[0, 1\].*value_range=\(0, 1\)"),
    (lambda tmp: open_dataset(str(tmp / "unit.npz"), value_range=(0, 0.25)), ValueError, "outside the value range"),
    (lambda tmp: open_dataset(str(tmp / "unit.npz"), value_range=(0, 255)), ValueError,
     r"spans only \[.*\], under an eighth of the value range \[0, 255\]"),
    (lambda tmp: open_dataset(str(tmp / "unit.npz"), value_range=(1, 1)), ValueError, "value_range must be finite"),
    (lambda tmp: open_dataset(str(tmp / "unit.npz"), key="images"), ValueError, "no array named 'images'"),
    (lambda tmp: open_dataset("shapes", value_range=(0, 1)), ValueError, "applies to a .npz file"),
    (lambda tmp: open_dataset("shapes", key="x"), ValueError, "applies to a .npz file"),
])
def test_dataset_mistakes(make, error, match, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "unit.npz", np.full((2, 4, 4, 3), 0.5, dtype=np.float32))
    with pytest.raises(error, match=match):
        make(tmp_path)


def open_dataset(*args, **kwargs):
    from ddpm_fast.data.datasets import open_dataset as open_

    return open_(*args, **kwargs)


@pytest.mark.parametrize("make, error, match", [
    (lambda tmp: _export(tmp, graph="step"), ValueError, "graph must be one of"),
    (lambda tmp: _export(tmp, dtype=torch.bfloat16), TypeError, "dtype must be torch.float32 or torch.float16"),
    (lambda tmp: _export(tmp, prediction_type="eps"), ValueError, "prediction_type must be one of"),
    (lambda tmp: _export(tmp, eta=-1.0), ValueError, "eta must be non-negative"),
    (lambda tmp: _export(tmp, opset=10), ValueError, "opset must be an int >= 18"),
    (lambda tmp: _export(tmp, solver_order=4), ValueError, "solver_order must be one of 1, 2, 3, got 4"),
    (lambda tmp: _export(tmp, final_sigmas_type="none"), ValueError, "final_sigmas_type must be one of"),
    (lambda tmp: _export(tmp, use_lu_lambdas=True, use_exponential_sigmas=True), ValueError,
     "choose at most one σ spacing"),
    (lambda tmp: _export(tmp, graph="ddpm_step"), ValueError, "bakes the schedule into the file: pass schedule="),
    (lambda tmp: _export(tmp, schedule="linear"), TypeError, "schedule must be a ddpm_fast.NoiseSchedule"),
    (lambda tmp: _export(tmp, sample_shape=(3, 30, 30)), ValueError, "H and W must be multiples of 4"),
    (lambda tmp: _export(tmp, model=42), TypeError, "model must be an nn.Module, a model folder or a Hub id"),
    (lambda tmp: _export(tmp, model=tmp / "missing"), FileNotFoundError, "missing"),
    (lambda tmp: _export(tmp, path=tmp), ValueError, "is a folder"),
    (lambda tmp: _export(tmp, path=tmp / "out.pt"), ValueError, r"out\.pt: expected a file name ending in \.onnx"),
    (lambda tmp: _onnx_sampler(tmp / "missing.onnx"), FileNotFoundError, "missing.onnx"),
    (lambda tmp: _onnx_sampler(tmp), ValueError, "is a folder"),
    (lambda tmp: _onnx_sampler(tmp / "junk.onnx"), ValueError, "junk.onnx: not a loadable ONNX model"),
])
def test_onnx_export_and_sampler_mistakes(make, error, match, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(error, match=match):
        make(tmp_path)
    assert not (tmp_path / "out.onnx").exists()


def _export(tmp, model=None, path=None, **options):
    from ddpm_fast.export import export_onnx

    model = df.UNet.from_preset("tiny", sample_size=8) if model is None else model
    return export_onnx(model, tmp / "out.onnx" if path is None else path, **options)


def _onnx_sampler(path):
    from ddpm_fast.export import OnnxSampler

    return OnnxSampler(path)


@pytest.fixture(scope="module")
def onnx_model_graph(tmp_path_factory):
    """One exported model graph (tiny U-Net, 8×8, T = 10) for OnnxSampler.sample's refusals: each is raised before
    the file runs, so one export serves every row."""
    pytest.importorskip("onnxruntime")
    from ddpm_fast.export import OnnxSampler, export_onnx

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(df.UNet.from_preset("tiny", sample_size=8), path, schedule=df.NoiseSchedule.linear(10),
                dynamic_spatial=False)  # a third less export time; the refusals do not depend on it
    return OnnxSampler(path)


ONNX_SAMPLE_MISTAKES = [
    (dict(batch_size=0), ValueError, "batch_size must be a positive int"),
    (dict(seed=0, generator=torch.Generator()), ValueError, "seed= or generator=, not both"),
    (dict(generator=0), TypeError, "generator must be a torch.Generator"),
    (dict(method="euler"), ValueError, "method must be one of"),
    (dict(eta=0.5), ValueError, "eta applies to method='ddim' only"),
    (dict(method="ddim", eta=-1.0), ValueError, "eta must be"),
    (dict(num_inference_steps=0), ValueError, "num_inference_steps"),
    (dict(timesteps=[9, 5, 5]), ValueError, "timesteps"),
    (dict(timesteps=[9, 5], num_inference_steps=2), ValueError, "not both"),
    (dict(timesteps="9,5"), TypeError, "timesteps must be a sequence of ints"),
    (dict(method="ddim", num_inference_steps=2, use_clipped_model_output="yes"), TypeError,
     "use_clipped_model_output must be True or False"),
    (dict(use_clipped_model_output=True), ValueError, "use_clipped_model_output applies to method='ddim' only"),
    (dict(latents=torch.zeros(2, 3, 4, 4)), ValueError, "latents"),
    (dict(class_labels=[0, 1]), ValueError, "class_labels"),
    (dict(sample_offset=-1), ValueError, "sample_offset must lie in"),
]


@pytest.mark.torch_references  # every row is refused before the file or a step runs: no kernel is reached
@pytest.mark.parametrize("options, error, match", ONNX_SAMPLE_MISTAKES,
                         ids=[",".join(options) for options, _, _ in ONNX_SAMPLE_MISTAKES])
def test_onnx_sampler_sample_mistakes(options, error, match, onnx_model_graph):
    options = {"batch_size": 2, **options}
    with pytest.raises(error, match=match):
        onnx_model_graph.sample(options.pop("batch_size"), **options)


@pytest.mark.parametrize("call, error, match", [
    (lambda: df.FastDDPMScheduler(num_train_timesteps=0), ValueError, "num_train_timesteps"),
    (lambda: df.FastDDPMScheduler(beta_schedule="quadratic"), ValueError, "beta_schedule"),
    (lambda: df.FastDDPMScheduler(prediction_type="eps"), ValueError, "prediction_type"),
    (lambda: df.FastDDPMScheduler(variance_type="learned"), ValueError, "variance_type"),
    (lambda: df.FastDDPMScheduler(timestep_spacing="even"), ValueError, "timestep_spacing"),
    (lambda: df.FastDDPMScheduler.from_config(3), TypeError, "config must be a mapping or a scheduler"),
    (lambda: df.FastDDPMScheduler.from_pretrained("/no/such/scheduler"), FileNotFoundError, "/no/such/scheduler"),
    (lambda: df.FastDDPMScheduler().set_timesteps(0), ValueError, "num_inference_steps"),
    (lambda: df.FastDDPMScheduler().set_timesteps(1001), ValueError, "num_inference_steps"),
    (lambda: df.FastDDPMScheduler().set_timesteps(timesteps=[5, 10]), ValueError, "timesteps"),
    (lambda: df.FastDDPMScheduler().step([0.0], 5, _x(1, 3, 4, 4)), TypeError, "model_output"),
    (lambda: df.FastDDPMScheduler().step(_x(1, 3, 4, 4), 1000, _x(1, 3, 4, 4)), ValueError, "1000"),
    (lambda: df.FastDDPMScheduler().step(_x(1, 3, 4, 5), 5, _x(1, 3, 4, 4)), ValueError, "model_output has shape"),
])
def test_fast_ddpm_scheduler_mistakes(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    (lambda: _quality([[0.0]], _img(8, 3, 8, 8)), TypeError, "samples must be"),
    (lambda: _quality(_img(8, 3, 8, 8), _img(8, 1, 8, 8)), ValueError, "held_out"),
    (lambda: _quality(_img(1, 3, 8, 8), _img(8, 3, 8, 8)), ValueError, "2"),
    (lambda: _quality(_img(8, 3, 8, 8).int(), _img(8, 3, 8, 8)), TypeError, "samples must be a floating-point tensor"),
    (lambda: _quality(torch.full((8, 3, 8, 8), float("nan")), _img(8, 3, 8, 8)), ValueError, "samples"),
    (lambda: _quality(_img(8, 3, 8, 8), _img(8, 3, 8, 8), seed=-1), ValueError, "seed"),
    (lambda: _quality(_img(8, 3, 8, 8), _img(8, 3, 8, 8), num_projections=0), ValueError, "num_projections"),
    # the likelihood bound is a per-image figure: one image is enough, none is refused
    (lambda: _nll(_img(0, 3, 8, 8)), ValueError, r"images holds 0 image\(s\); needs at least 1"),
    (lambda: _nll(_img(1, 3, 8, 8) * 3), ValueError, r"images must hold images in \[-1, 1\]"),
])
def test_quality_report_mistakes(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _img(*shape):
    return torch.rand(*shape) * 2 - 1


def _quality(*args, **options):
    from ddpm_fast.evaluation.metrics import quality_report

    return quality_report(*args, **options)


def _nll(images):
    from ddpm_fast.evaluation.metrics import nll_bits_per_dim

    return nll_bits_per_dim(lambda x, t: x, images, df.NoiseSchedule.linear(4))


# ---------------------------------------------------------------------------------------------------------------
# The command line: each mistake is one line on stderr naming the option or path, exit status 2, no traceback, and
# nothing written. {run}: a new run folder; {file}: a text file; {empty}: an empty folder; {unet}: a UNet.save folder.

CLI_MISTAKES = [
    (["train"], "the following arguments are required: --run-dir"),
    (["train", "--run-dir", "{run}", "--steps", "0"], "--steps"),
    (["train", "--run-dir", "{run}", "--steps", "ten"], "--steps"),
    (["train", "--run-dir", "{run}", "--lr", "nan"], "--lr"),
    (["train", "--run-dir", "{run}", "--lr", "-1"], "--lr"),
    (["train", "--run-dir", "{run}", "--data", "{run}-missing"], "missing"),
    (["train", "--run-dir", "{run}", "--data", "{file}"], "not a dataset"),
    (["train", "--run-dir", "{run}", "--data", "{empty}"], "no .* images"),
    (["train", "--run-dir", "{run}", "--data", "{unit_npz}", "--image-size", "4"],
     "lie in \\[0, 1\\].*--data-range 0,1"),
    (["train", "--run-dir", "{run}", "--data", "{unit_npz}", "--data-range", "0,0.25"], "outside the value range"),
    (["train", "--run-dir", "{run}", "--data-range", "1,0"], "--data-range: expected LOW,HIGH"),
    (["train", "--run-dir", "{run}", "--data-range", "-1"], "--data-range: expected LOW,HIGH"),
    (["train", "--run-dir", "{run}", "--key", "images"], "--key\\) applies to a .npz file"),
    (["train", "--run-dir", "{run}", "--image-size", "30"], "image_size: H and W must be multiples of 4"),
    (["train", "--run-dir", "{file}"], "is a file, not a folder"),
    (["train", "--run-dir", "{run}", "--resume"], "--resume: .*new-run is no run folder"),
    (["train", "--run-dir", "{run}", "--model", "huge"], "model must be one of"),
    (["train", "--run-dir", "{run}", "--device", "tpu"], "device"),
    (["train", "--run-dir", "{run}", "--prediction-type", "eps"], "--prediction-type"),
    (["sample", "--checkpoint", "{run}"], "--checkpoint .*: no such folder"),
    (["sample", "--checkpoint", "{file}"], "--checkpoint .*: is a file; expected a folder"),
    (["sample", "--checkpoint", "{empty}"], "config.json"),
    (["sample", "--checkpoint", "{unet}", "--out", "{run}.jpg"], "--out .*: expected a .png or .safetensors path"),
    (["sample", "--checkpoint", "{unet}", "--out", "{empty}.png"], "--out .*: is a folder"),
    (["sample", "--checkpoint", "{unet}", "--num-samples", "-1"], "--num-samples"),
    (["sample", "--checkpoint", "{unet}", "--eta", "0.5"], "--eta applies to --method ddim only"),
    (["sample", "--checkpoint", "{unet}", "--steps", "2000"], r"--steps must lie in \[1, 1000\], got 2000"),  # the flag, not the Python name
    (["sample", "--checkpoint", "{unet}", "--weights", "model"], "unet holds one set of weights"),
    (["sample", "--diffusers", "{empty}", "--schedule", "cosine"], "empty: not a training run, training checkpoint"),
    (["sample", "--checkpoint", "{unet}", "--diffusers", "{empty}"], "not allowed with argument"),
    (["sample", "--checkpoint", "{unet}", "--device", "tpu"], "device"),
    (["sample", "--checkpoint", "{unet}", "--dtype", "float64"], "--dtype"),
    (["sample", "--checkpoint", "{unet}", "--class-labels", "cat"], "--class-labels 'cat': this model has no classes"),
    (["sample", "--checkpoint", "{unet}", "--class-labels", "-1,0"], "--class-labels: class indices must be >= 0"),
    (["sample", "--checkpoint", "{unet}", "--class-labels", "0,,1"], "--class-labels: expected comma-separated"),
    # classes named by numbers (folders 3/, 7/, 9/): a number is a name, never an index
    (["sample", "--checkpoint", "{numbered}", "--class-labels", "1", "--out", "{run}.png"],
     r"--class-labels 1: this model's classes are named by numbers \(3, 7, 9\)"),
    (["export", "--checkpoint", "{unet}"], "the following arguments are required: --out"),
    (["export", "--checkpoint", "{unet}", "--out", "{run}.png"], "--out .*: expected a .onnx path"),
    (["export", "--checkpoint", "{run}", "--out", "{run}.onnx"], "no such folder"),
    (["export", "--checkpoint", "{unet}", "--out", "{empty}.onnx"], "--out .*: is a folder"),
    (["export", "--checkpoint", "{unet}", "--out", "{run}.onnx", "--eta", "1"], "--eta applies to --graph ddim_step"),
    (["export", "--diffusers", "{empty}", "--out", "{run}.onnx", "--graph", "ddpm_step"], "scheduler_config.json"),
    (["export", "--checkpoint", "{empty}", "--out", "{run}.onnx"], "config.json"),
    (["demo", "--steps", "0"], "--steps"),
    (["demo", "--run-dir", "{file}"], "is a file, not a folder"),
    (["demo", "--device", "tpu"], "device"),
    (["bench", "--suite", "nope"], "--suite"),
    (["smaple"], "invalid choice: 'smaple'"),
    # a flag only as written (no prefix matching), and no two flags that contradict each other
    (["sample", "--checkpoint", "{unet}", "--num-sample", "3"], "unrecognized arguments: --num-sample 3"),
    (["train", "--run-dir", "{run}", "--grad-clip", "1", "--no-grad-clip"],
     "argument --no-grad-clip: not allowed with argument --grad-clip"),
]


@pytest.fixture(scope="module")
def cli_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "notes.txt").write_text("not a dataset")
    (root / "empty").mkdir()
    (root / "empty.png").mkdir()  # a folder named like an output file
    (root / "empty.onnx").mkdir()
    np.savez(root / "unit.npz", np.full((2, 4, 4, 3), 0.5, dtype=np.float32))  # float images in [0, 1]
    df.UNet.from_preset("tiny", sample_size=8).save(root / "unet")
    numbered = df.DiffusionSetup.from_schedule(df.NoiseSchedule.linear(10), num_class_embeds=3,
                                               class_names=("3", "7", "9"), sample_shape=(3, 8, 8))
    df.UNet.from_preset("tiny", sample_size=8, num_class_embeds=3).save(root / "numbered", setup=numbered)
    return root


@pytest.mark.parametrize("argv, match", CLI_MISTAKES, ids=[" ".join(argv) for argv, _ in CLI_MISTAKES])
def test_cli_mistakes(argv, match, cli_paths, capsys):
    import re

    from ddpm_fast.cli import main as cli

    paths = {"run": str(cli_paths / "new-run"), "file": str(cli_paths / "notes.txt"),
             "empty": str(cli_paths / "empty"), "unet": str(cli_paths / "unet"),
             "numbered": str(cli_paths / "numbered"),
             "unit_npz": str(cli_paths / "unit.npz")}
    before = sorted(cli_paths.rglob("*"))
    try:
        code = cli.main([part.format(**paths) for part in argv])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(match, err), err
    assert sorted(cli_paths.rglob("*")) == before  # nothing written, not even an empty run folder
