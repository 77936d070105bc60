"""Every bad input gets a ValueError / TypeError that names the argument."""

import pytest
import torch

import ddpm_fast as df

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
    with pytest.raises(ValueError, match="device must be cpu, cuda or cuda:N"):
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


def test_an_unreadable_image_met_while_training_is_one_line_naming_it(tmp_path, capsys):
    from PIL import Image

    from ddpm_fast.cli import main as cli

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(7):
        Image.new("RGB", (16, 16), (index * 30, 0, 0)).save(folder / f"good{index}.png")
    (folder / "zz-broken.jpg").write_bytes(b"not a jpeg")
    code = cli.main(["train", "--run-dir", str(tmp_path / "run"), "--data", str(folder), "--image-size", "16",
                     "--model", "tiny", "--steps", "2", "--batch-size", "8", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "zz-broken.jpg" in err and "Traceback" not in err
