"""Sharded sampling (torch.distributed, gloo on CPU) and the `ddpm-fast sample` command.

Two-rank runs go through torchrun in subprocesses without TRITON_INTERPRET, so CPU tensors take the kernels' torch
references there; in-process whole-U-Net runs take them through `cpu_reference` (the interpreter runs Triton
programs one at a time). The samples are fp32 and the noise is per sample, so any split of a batch gives the same
images up to the last bits of batch-size-dependent convolutions.
"""

import dataclasses
import io
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import ddpm_fast as df
from ddpm_fast import files
from ddpm_fast.cli import main as cli
from ddpm_fast.cli import sample as sample_command
from ddpm_fast.data.images import png_grid
from ddpm_fast.diffusion_setup import DiffusionSetup
from ddpm_fast.interop.diffusers_scheduler import setup_from_diffusers_config
from ddpm_fast.kernels import PREDICTION_TYPES, VARIANCE_TYPES, cpu_reference
from ddpm_fast.sampling.distributed import init_from_environment, sample_sharded, shard_bounds, teardown
from subprocess_env import subprocess_env

T = 10  # training timesteps of the test checkpoints: short chains keep whole-model runs fast
# 1e-4 → 0.02 (NoiseSchedule.linear(10) scales β by 100, to 0.999 at the end, where float32 noise grows 30-fold)
SCHEDULE = df.NoiseSchedule.linear(T, beta_start=1e-4, beta_end=0.02)
N = 5  # samples: uneven over two ranks (3 + 2)
FP32_EAGER = ["--dtype", "float32", "--no-compile"]  # exact comparisons, and no compile time per CLI call


def _torchrun(*arguments, cwd):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", *arguments]
    result = subprocess.run(command, env=subprocess_env(), cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _images(path):
    return files.load_tensors(path)["images"]


# ------------------------------------------------------------------------------------------------ shard_bounds


@pytest.mark.parametrize("num_samples, world_size, expected", [
    (10, 1, [(0, 10)]),
    (10, 2, [(0, 5), (5, 10)]),
    (10, 3, [(0, 4), (4, 7), (7, 10)]),
    (5, 4, [(0, 2), (2, 3), (3, 4), (4, 5)]),
    (2, 4, [(0, 1), (1, 2), (2, 2), (2, 2)]),  # more ranks than samples: empty shards at the end
    (0, 3, [(0, 0), (0, 0), (0, 0)]),
])
def test_shard_bounds(num_samples, world_size, expected):
    assert [shard_bounds(num_samples, rank, world_size) for rank in range(world_size)] == expected


def test_shards_are_contiguous_balanced_and_cover_the_batch():
    for world_size in range(1, 9):
        for num_samples in range(0, 30):
            bounds = [shard_bounds(num_samples, rank, world_size) for rank in range(world_size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == num_samples
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("arguments, error, match", [
    ((5, 2, 2), ValueError, r"rank must lie in \[0, world_size=2\)"),
    ((5, -1, 2), ValueError, "rank must be at least 0"),
    ((5, 0, 0), ValueError, "world_size must be at least 1"),
    ((-1, 0, 1), ValueError, "num_samples must be at least 0"),
    ((5.0, 0, 1), TypeError, "num_samples must be an int"),
    ((5, True, 2), TypeError, "rank must be an int"),
])
def test_shard_bounds_errors(arguments, error, match):
    with pytest.raises(error, match=match):
        shard_bounds(*arguments)


# ------------------------------------------------------------------------------- sample_sharded, one process


def _toy_sampler():
    """A sampler whose model is a cheap callable: only the step and noise kernels run."""
    return df.FastSampler(lambda x, t: 0.1 * x, df.NoiseSchedule.linear(8), sample_shape=(2, 3, 5),
                          dtype=torch.float32, compile=False)


def test_without_a_process_group_it_is_sampler_sample():
    sampler = _toy_sampler()
    assert init_from_environment("cpu") == (0, 1, torch.device("cpu"))  # WORLD_SIZE unset: no group
    teardown()  # nothing to destroy
    expected = sampler.sample(4, seed=3, method="ddim", num_inference_steps=4, eta=0.5)
    got = sample_sharded(sampler, 4, seed=3, method="ddim", num_inference_steps=4, eta=0.5)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(sample_sharded(sampler, 2, seed=3, sample_offset=2), sampler.sample(4, seed=3)[2:])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"generator": torch.Generator()}, ValueError, "generator= cannot be sharded"),
    ({"output_type": "pil"}, ValueError, "output_type must be 'tensor'"),
    ({"seed": 1.5}, TypeError, "seed must be an int or None"),
    ({"num_samples": -1}, ValueError, "num_samples must be a non-negative int"),
    ({"sample_offset": -1}, ValueError, "sample_offset must lie in"),
])
def test_sample_sharded_errors(kwargs, error, match):
    kwargs = {"num_samples": 2, "seed": 0, **kwargs}
    with pytest.raises(error, match=match):
        sample_sharded(_toy_sampler(), **kwargs)


def test_init_from_environment_errors(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an int"):
        init_from_environment("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ValueError, match="device must be"):
        init_from_environment("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            init_from_environment("cuda")


# ---------------------------------------------------------------------------------- sample_sharded, two ranks

RANKS_SCRIPT = """
import sys
import torch
import torch.distributed as dist
import ddpm_fast as df
from ddpm_fast import files
from ddpm_fast.sampling.distributed import init_from_environment, sample_sharded, shared_seed, teardown

rank, world_size, device = init_from_environment("cpu")
assert (world_size, device, dist.get_backend()) == (2, torch.device("cpu"), "gloo")
sampler = df.FastSampler(lambda x, t: 0.1 * x, df.NoiseSchedule.linear(8), sample_shape=(2, 3, 5),
                         dtype=torch.float32, compile=False)
torch.manual_seed(100 + rank)  # the ranks' global generators differ; a seed=None draw must still be shared
seeds = [None, None]
dist.all_gather_object(seeds, shared_seed(None))
results = {"seeds": torch.tensor(seeds)}
for n in (5, 1, 0, 2):  # uneven, an empty rank 1, nothing at all, even
    results[f"n{n}"] = sample_sharded(sampler, n, seed=7)
results["ddim"] = sample_sharded(sampler, 3, seed=7, method="ddim", num_inference_steps=4, eta=0.5)
results["offset"] = sample_sharded(sampler, 3, seed=7, sample_offset=2)
if rank == 0:
    files.save_tensors(sys.argv[1], results)
else:
    assert all(value is None for name, value in results.items() if name != "seeds")
teardown()
assert not dist.is_initialized()
"""


@pytest.mark.torch_references
def test_two_ranks_gather_what_one_process_samples(tmp_path):
    script, out = tmp_path / "ranks.py", tmp_path / "ranks.safetensors"
    script.write_text(RANKS_SCRIPT)
    _torchrun(str(script), str(out), cwd=tmp_path)
    got = files.load_tensors(out)
    assert got["seeds"][0] == got["seeds"][1]
    sampler = _toy_sampler()
    with cpu_reference():  # as the subprocesses ran
        expected = {f"n{n}": sampler.sample(n, seed=7) for n in (5, 1, 0, 2)}
        expected["ddim"] = sampler.sample(3, seed=7, method="ddim", num_inference_steps=4, eta=0.5)
        expected["offset"] = sampler.sample(5, seed=7)[2:]
    for name, images in expected.items():
        assert got[name].shape == images.shape, name
        torch.testing.assert_close(got[name], images, rtol=0, atol=1e-5, msg=name)


# ------------------------------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    # stored with its setup, so no flag has to name the schedule (the CLI reads setup.json)
    return df.UNet.from_preset("tiny", sample_size=16).save(tmp_path_factory.mktemp("checkpoint") / "unet",
                                                           setup=DiffusionSetup.from_schedule(SCHEDULE))


def _sample(checkpoint, out, *extra):
    """`ddpm-fast sample` in this process (kernels on their torch references)."""
    with cpu_reference():
        return cli.main(["sample", "--checkpoint", str(checkpoint),
                         "--num-samples", str(N), "--seed", "3", "--out", str(out), *FP32_EAGER, *extra])


@pytest.fixture(scope="module")
def one_process(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "samples.safetensors"
    assert _sample(checkpoint, out) == 0
    return out


@pytest.mark.torch_references
def test_sample_writes_the_samplers_tensor(checkpoint, one_process, capsys):
    images = _images(one_process)
    assert images.dtype == torch.float32 and images.shape == (N, 3, 16, 16)
    with safe_open(str(one_process), "pt") as handle:
        assert handle.metadata()["seed"] == "3" and handle.metadata()["method"] == "ddpm"
    sampler = df.FastSampler(df.UNet.load(checkpoint), SCHEDULE, dtype=torch.float32,
                             compile=False)
    with cpu_reference():
        torch.testing.assert_close(images, sampler.sample(N, seed=3), rtol=0, atol=1e-6)


@pytest.mark.torch_references
def test_sample_writes_a_png_grid(checkpoint, one_process, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert _sample(checkpoint, out) == 0
    line = capsys.readouterr().out
    assert str(out) in line and f"{N} samples" in line and "world size 1" in line
    grid = np.asarray(Image.open(out))
    # 5 samples: 3 columns, 2 rows of 16 px, enlarged 11x (the smallest whole factor to 512 px), pixel for pixel
    assert grid.shape == (2 * 16 * 11, 3 * 16 * 11, 3) and grid.dtype == np.uint8
    assert np.array_equal(grid, grid[::11, ::11].repeat(11, 0).repeat(11, 1))
    grid = grid[::11, ::11]
    pixels = ((_images(one_process) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i in range(N):
        row, column = divmod(i, 3)
        tile = grid[row * 16:(row + 1) * 16, column * 16:(column + 1) * 16].astype(int)
        assert np.abs(tile - pixels[i]).max() <= 1  # ±1: a value on a rounding boundary
    assert not grid[16:, 32:].any()  # the missing sixth tile is black
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_png_grid_of_one_channel_images():
    images = torch.linspace(-1, 1, 4 * 2 * 3).reshape(4, 1, 2, 3)
    image = Image.open(io.BytesIO(png_grid(images, min_pixels=0)))
    assert image.mode == "L" and image.size == (2 * 3, 2 * 2)
    enlarged = Image.open(io.BytesIO(png_grid(images)))  # 6 px wide: x86 reaches 512
    assert enlarged.size == (6 * 86, 4 * 86) and enlarged.resize(image.size, Image.Resampling.NEAREST).tobytes() \
        == image.tobytes()


@pytest.mark.torch_references
def test_torchrun_two_ranks_write_the_one_process_samples(checkpoint, one_process, tmp_path):
    out = tmp_path / "two.safetensors"
    result = _torchrun("-m", "ddpm_fast", "sample", "--checkpoint", str(checkpoint),
                       "--num-samples", str(N), "--seed", "3", "--out", str(out), *FP32_EAGER, cwd=tmp_path)
    assert result.stdout.count("wrote") == 1 and "world size 2" in result.stdout  # rank 0 alone reports
    torch.testing.assert_close(_images(out), _images(one_process), rtol=0, atol=1e-5)


@pytest.mark.torch_references
def test_every_rank_reports_its_own_fallbacks(checkpoint, tmp_path, monkeypatch, capsys):
    """Under torchrun rank 0 writes the file and the report, but a fast path that fell back on another rank (its own
    GPU, its own compile) is that rank's to say: rank 1 of 2 here, its shard sampled with a fallback."""
    from ddpm_fast.sampling import distributed

    def rank_one_shard(sampler, num_samples, seed=None, **options):
        sampler.sample(2, seed=seed, **options)  # rank 1's shard of 5 over 2 ranks
        sampler.last_report = dataclasses.replace(sampler.last_report, fallbacks=("torch.compile failed: boom",))
        return None  # what a rank other than 0 gets back

    monkeypatch.setattr(distributed, "init_from_environment", lambda device=None: (1, 2, torch.device("cpu")))
    monkeypatch.setattr(distributed, "sample_sharded", rank_one_shard)
    monkeypatch.setattr(distributed, "teardown", lambda: None)
    out = tmp_path / "samples.safetensors"
    assert _sample(checkpoint, out) == 0
    printed = capsys.readouterr()
    assert "wrote" not in printed.out and not out.exists()  # rank 0's work
    assert printed.err.splitlines()[-1] == "rank 1 of 2: fast path fell back: torch.compile failed: boom"
    assert sample_command.fallback_lines(("x",), 0, 1) == ["fast path fell back: x"]  # one process: no rank


@pytest.mark.torch_references
def test_sample_from_a_diffusers_pipeline_folder(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, block_out_channels=(16, 32), norm_num_groups=8, layers_per_block=1,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D")).eval()
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T, clip_sample=False, timestep_spacing="linspace")
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    # our folder stores the pipeline's setup: the same β (diffusers' float32 ones) and options
    size = unet.config.sample_size
    df.UNet.from_diffusers(unet).save(tmp_path / "ours", setup=setup_from_diffusers_config(
        scheduler.config, sample_shape=(unet.config.in_channels, size, size)))
    common = ["--num-samples", "3", "--seed", "1", "--method", "ddim", "--steps", "4", *FP32_EAGER]
    with cpu_reference():
        assert cli.main(["sample", "--diffusers", str(tmp_path / "pipe"), *common,
                         "--out", str(tmp_path / "a.safetensors")]) == 0
        assert cli.main(["sample", "--checkpoint", str(tmp_path / "ours"), *common,
                         "--out", str(tmp_path / "b.safetensors")]) == 0
    # the same weights and schedule (diffusers builds β in float32, we in float64): the same samples
    torch.testing.assert_close(_images(tmp_path / "a.safetensors"), _images(tmp_path / "b.safetensors"),
                               rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------------------------- CLI errors


@pytest.mark.parametrize("arguments, match", [
    (["--checkpoint", "{tmp}/missing"], r"--checkpoint .*missing: no such folder"),
    (["--diffusers", "{tmp}/missing"], r"--diffusers .*missing: no such folder"),
    (["--checkpoint", "{tmp}", "--diffusers", "{tmp}"], "not allowed with argument"),
    ([], "one of the arguments --checkpoint --diffusers is required"),
    (["--checkpoint", "{tmp}", "--out", "{tmp}/x.jpg"], "expected a .png or .safetensors path"),
    (["--checkpoint", "{tmp}", "--out", "{tmp}/folder.png"], "folder.png: is a folder"),
    (["--checkpoint", "{tmp}", "--eta", "0.5"], "--eta applies to --method ddim only"),
    (["--checkpoint", "{tmp}", "--num-samples", "0"], "expected a positive integer"),
    (["--checkpoint", "{tmp}", "--seed", "-1"], r"expected an integer in \[0, 2\*\*63\)"),
    (["--checkpoint", "{tmp}", "--schedule", "quadratic"], "invalid choice"),
])
def test_sample_argument_errors(arguments, match, tmp_path, capsys):
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["sample", *(a.replace("{tmp}", str(tmp_path)) for a in arguments)])
    assert exit_info.value.code == 2
    assert re.search(match, capsys.readouterr().err)


def test_a_folder_that_is_no_checkpoint_is_an_error_naming_the_file(tmp_path, capsys):
    assert cli.main(["sample", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    error = capsys.readouterr().err
    assert "ddpm-fast sample: error:" in error and str(tmp_path / "config.json") in error
    assert not (tmp_path / "x.png").exists()


def test_cli_choices_follow_the_kernels():
    sample_parser = cli.build_parser()._subparsers._group_actions[0].choices["sample"]
    choices = {action.dest: set(action.choices) for action in sample_parser._actions if action.choices}
    assert choices["prediction_type"] == set(PREDICTION_TYPES)
    assert choices["variance_type"] == set(VARIANCE_TYPES)
