"""The Trainer: the objective, EMA, deterministic batches, checkpoints (atomic, verified, resumable), DDP, the CLI.

Whole-model runs use the torch references of the fused ops (cpu_reference, or no interpreter in subprocesses): the
kernels themselves are proven against those references in their own tests. The model is a 2-level U-Net at 16×16.
"""

import contextlib
import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

import ddpm_fast as df
from ddpm_fast.cli import main as cli
from ddpm_fast.data.datasets import ShapesDataset
from ddpm_fast.kernels import cpu_reference
from ddpm_fast.models import checkpoints
from ddpm_fast.training.batches import GlobalBatchSampler, rank_slice, step_draws, step_key
from ddpm_fast.training.config import TrainingConfig
from ddpm_fast.training.ema import EMA
from ddpm_fast.training.log import read_jsonl
from ddpm_fast.training.objectives import diffusion_loss, loss_weights, training_target
from ddpm_fast.training.trainer import Trainer, build_schedule
from subprocess_env import subprocess_env

# Left to the TRITON_INTERPRET=0 run (tests/conftest.py checks no test here reaches a kernel): whole training runs on
# the torch references (cpu_reference); q-sample's and GroupNorm's kernels are proven in their own files.
pytestmark = pytest.mark.torch_references

SMALL_MODEL = {"block_out_channels": (16, 32), "down_attention": (False, False), "up_attention": (False, True)}
SMALL_CLI = ["--model", "tiny", "--image-size", "16"]


def small_config(**changes):
    settings = dict(model_overrides=SMALL_MODEL, image_size=16, steps=6, batch_size=8, learning_rate=1e-3,
                    warmup_steps=2, num_train_timesteps=100, log_every=1, checkpoint_every=3)
    settings.update(changes)
    return TrainingConfig(**settings)


def shapes(num_images=64, size=16):
    return ShapesDataset(num_images=num_images, image_size=size, seed=0)


def losses(run_dir):
    return [record["loss"] for record in read_jsonl(run_dir / "log.jsonl")]


@pytest.fixture(autouse=True)
def _torch_references():
    with cpu_reference():
        yield


# ------------------------------------------------------------------------------------------------ objective


def test_targets_follow_the_parameterisations():
    x0, eps = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    alpha_bar = torch.tensor([0.9, 0.5, 0.1, 0.01])
    v = alpha_bar.sqrt().view(-1, 1, 1, 1) * eps - (1 - alpha_bar).sqrt().view(-1, 1, 1, 1) * x0
    torch.testing.assert_close(training_target(x0, eps, alpha_bar, "epsilon"), eps)
    torch.testing.assert_close(training_target(x0, eps, alpha_bar, "sample"), x0)
    torch.testing.assert_close(training_target(x0, eps, alpha_bar, "v_prediction"), v)


def test_min_snr_weights():
    alpha_bar = torch.tensor([0.99, 0.5, 0.01], dtype=torch.float64)
    snr = alpha_bar / (1 - alpha_bar)  # 99, 1, 0.0101
    torch.testing.assert_close(loss_weights(alpha_bar, "epsilon", 5.0), snr.clamp(max=5) / snr)
    torch.testing.assert_close(loss_weights(alpha_bar, "sample", 5.0), snr.clamp(max=5))
    torch.testing.assert_close(loss_weights(alpha_bar, "v_prediction", 5.0), snr.clamp(max=5) / (snr + 1))
    assert torch.equal(loss_weights(alpha_bar, "epsilon", None), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("gamma", [None, 5.0])
def test_diffusion_loss_is_the_weighted_mse_of_q_sample(prediction_type, gamma):
    schedule = df.NoiseSchedule.linear(50)
    x0 = torch.rand(3, 2, 4, 4) * 2 - 1
    t = torch.tensor([0, 17, 49])
    weight = torch.randn(2, 2)

    def model(x, t):
        return torch.einsum("oc,bchw->bohw", weight, x) + t.view(-1, 1, 1, 1) / 50

    key = torch.tensor([1234])
    loss = diffusion_loss(model, x0, t, schedule, seed=key, sample_offset=5, prediction_type=prediction_type,
                          min_snr_gamma=gamma)
    x_t, eps = df.q_sample(x0, t, schedule, seed=1234, sample_offset=5)
    alpha_bar = schedule.buffers()["alphas_cumprod"][t]
    target = training_target(x0, eps, alpha_bar, prediction_type)
    expected = (loss_weights(alpha_bar, prediction_type, gamma) * (model(x_t, t) - target).pow(2).mean((1, 2, 3)))
    torch.testing.assert_close(loss, expected.mean())


def test_ema_warmup_and_update():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.999)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10**6) == 0.999
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # decay 0.1: 90% of the way to the new weights
    torch.testing.assert_close(ema.model.weight, 0.1 * before["weight"] + 0.9 * model.weight)
    assert not any(p.requires_grad for p in ema.model.parameters())
    assert EMA(model, decay=0.9, warmup=False).decay_at(0) == 0.9
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)


# --------------------------------------------------------------------------------------- batches and keys


def test_global_batches_cover_each_epoch_and_ranks_split_them():
    one = GlobalBatchSampler(20, 6, seed=3)
    batches = [b for _, b in zip(range(6), one)]  # 3 steps per epoch (20 // 6), two epochs
    assert sorted(sum(batches[:3], [])) == sorted(set(sum(batches[:3], [])))  # no repeats within an epoch
    assert batches[:3] != batches[3:]  # a new order each epoch
    ranks = [GlobalBatchSampler(20, 6, seed=3, rank=r, world_size=2) for r in range(2)]
    for step, pieces in zip(range(6), zip(*ranks)):
        assert pieces[0] + pieces[1] == batches[step]  # contiguous halves of the same global batch
    resumed = GlobalBatchSampler(20, 6, seed=3, start_step=4)
    assert [b for _, b in zip(range(2), resumed)] == batches[4:6]
    with pytest.raises(ValueError, match="divisible"):
        GlobalBatchSampler(20, 5, seed=0, world_size=2)
    with pytest.raises(ValueError, match="fewer than one batch"):
        GlobalBatchSampler(4, 6, seed=0)


def test_step_draws_depend_on_seed_and_step_only():
    t1, f1 = step_draws(7, 11, 8, 100)
    t2, f2 = step_draws(7, 11, 8, 100)
    assert torch.equal(t1, t2) and torch.equal(f1, f2)
    assert not torch.equal(step_draws(7, 12, 8, 100)[0], t1)
    assert int(t1.min()) >= 0 and int(t1.max()) < 100
    assert step_key(7, 11) != step_key(7, 12) != step_key(8, 11)
    assert rank_slice(8, 1, 2) == slice(4, 8)


def test_linear_schedule_is_scaled_to_reach_noise_at_any_T():
    for T in (50, 250, 1000):
        alpha_bar_T = float(build_schedule(TrainingConfig(num_train_timesteps=T)).alphas_cumprod[-1])
        assert alpha_bar_T < 1e-3, T


# ------------------------------------------------------------------------------------------------ training


def test_short_run_loss_falls_and_writes_its_files(tmp_path):
    config = small_config(steps=30, batch_size=8, log_every=1, checkpoint_every=15, sample_every=15,
                          sample_count=4, sample_steps=3)
    trainer = Trainer(config, tmp_path, dataset=shapes(), progress=False)
    summary = trainer.train()
    curve = losses(tmp_path)
    assert len(curve) == 30 and summary.step == 30 and not summary.interrupted
    assert sum(curve[-8:]) / 8 < 0.7 * sum(curve[:8]) / 8, curve
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000015", "step-00000030"]
    for name in ("loss.png", "data.png", "samples/step-00000015.png", "samples/step-00000030.png"):
        assert Image.open(tmp_path / name).format == "PNG"
    record = read_jsonl(tmp_path / "log.jsonl")[0]
    assert {"step", "loss", "lr", "grad_norm", "images_per_second", "ema_decay"} <= set(record)
    assert record["lr"] == pytest.approx(5e-4)  # warm-up: step 1 of 2


def test_checkpoint_round_trip(tmp_path):
    trainer = Trainer(small_config(steps=3), tmp_path, dataset=shapes(), progress=False)
    trainer.train()
    checkpoint = checkpoints.load_checkpoint(tmp_path / "checkpoints" / "step-00000003")
    assert checkpoint.step == 3
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(checkpoint.model[name], tensor)
    for name, tensor in trainer.ema.state_dict().items():
        assert torch.equal(checkpoint.ema[name], tensor)
    fresh = Trainer(small_config(steps=3), tmp_path, dataset=shapes(), progress=False, resume=True)
    assert fresh.step == 3 and fresh.ema.num_updates == 3
    saved, loaded = trainer.optimizer.state_dict(), fresh.optimizer.state_dict()
    for index, state in saved["state"].items():
        for key, value in state.items():
            assert torch.equal(loaded["state"][index][key], value), (index, key)
    assert json.loads(json.dumps(loaded["param_groups"])) == json.loads(json.dumps(saved["param_groups"]))
    from ddpm_fast.interop.pretrained import load_pretrained

    pretrained = load_pretrained(tmp_path)  # the run folder → its last checkpoint, EMA weights
    for name, tensor in trainer.ema.state_dict().items():
        assert torch.equal(pretrained.model.state_dict()[name], tensor)
    assert pretrained.setup == trainer.setup and pretrained.weights == "ema"
    assert torch.equal(pretrained.setup.schedule().betas, trainer.schedule.betas)
    assert pretrained.setup.prediction_type == "epsilon"
    assert df.UNet.load(tmp_path / "checkpoints" / "step-00000003").config == trainer.model.config


def test_resume_equals_an_uninterrupted_run(tmp_path):
    config = small_config(steps=6, checkpoint_every=2)
    Trainer(config, tmp_path / "through", dataset=shapes(), progress=False).train()
    first = Trainer(config, tmp_path / "resumed", dataset=shapes(), progress=False)
    first.train(steps=3)  # stops after step 3 (a checkpoint at 2 and at exit, 3)
    second = Trainer(config, tmp_path / "resumed", dataset=shapes(), progress=False, resume=True)
    assert second.step == 3
    second.train()
    assert losses(tmp_path / "through") == losses(tmp_path / "resumed")
    a = checkpoints.load_checkpoint(tmp_path / "through" / "checkpoints" / "step-00000006")
    b = checkpoints.load_checkpoint(tmp_path / "resumed" / "checkpoints" / "step-00000006")
    assert all(torch.equal(a.ema[k], b.ema[k]) for k in a.ema)
    assert all(torch.equal(a.optimizer[k], b.optimizer[k]) for k in a.optimizer)


def test_killed_run_resumes_to_the_same_loss_curve(tmp_path):
    """SIGKILL mid-run (no chance to save), then --resume: the log equals an uninterrupted run's."""
    common = [sys.executable, "-m", "ddpm_fast", "train", *SMALL_CLI, "--batch-size", "4", "--log-every", "1",
              "--checkpoint-every", "3", "--train-timesteps", "100", "--lr", "1e-3", "--warmup-steps", "2",
              "--no-progress"]
    through = subprocess.run(common + ["--run-dir", str(tmp_path / "through"), "--steps", "9"],
                             env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert through.returncode == 0, through.stderr
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(common + ["--run-dir", str(killed_dir), "--steps", "100000"], env=subprocess_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (killed_dir / "checkpoints" / "step-00000006").exists():
        assert process.poll() is None and time.time() < deadline, process.stderr.read() if process.stderr else ""
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    logged_before_kill = len(losses(killed_dir))
    assert logged_before_kill >= 6
    resumed = subprocess.run(common + ["--run-dir", str(killed_dir), "--steps", "9", "--resume"],
                             env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    assert losses(killed_dir) == losses(tmp_path / "through")


def test_sigterm_checkpoints_and_stops(tmp_path):
    command = [sys.executable, "-m", "ddpm_fast", "train", *SMALL_CLI, "--batch-size", "4", "--steps", "100000",
               "--checkpoint-every", "100000", "--log-every", "1", "--no-progress", "--run-dir", str(tmp_path)]
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.time() + 240
    while not (tmp_path / "log.jsonl").exists() or len(losses(tmp_path)) < 2:
        assert process.poll() is None and time.time() < deadline, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err  # stopped, not finished: the shell's status for it
    assert "stopped early" in out
    step = checkpoints.latest_checkpoint(tmp_path).step
    assert step >= 2  # the signal stopped the run between steps and wrote a checkpoint of the last one
    assert [record["step"] for record in read_jsonl(tmp_path / "log.jsonl")] == list(range(1, step + 1))


# ---------------------------------------------------------------------------------------- corrupt files


def test_corrupt_checkpoint_is_named_and_the_last_good_one_used(tmp_path):
    config = small_config(steps=4, checkpoint_every=2)
    Trainer(config, tmp_path, dataset=shapes(), progress=False).train()
    newest = tmp_path / "checkpoints" / "step-00000004"
    ema_file = newest / "ema.safetensors"
    ema_file.write_bytes(ema_file.read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match="ema.safetensors.*corrupt or truncated"):
        checkpoints.load_checkpoint(newest)
    with pytest.warns(RuntimeWarning, match="ema.safetensors"):
        assert checkpoints.latest_checkpoint(tmp_path).step == 2
    good = (tmp_path / "checkpoints" / "step-00000002" / "model.safetensors").read_bytes()
    with pytest.warns(RuntimeWarning):
        resumed = Trainer(config, tmp_path, dataset=shapes(), progress=False, resume=True)
    assert resumed.step == 2
    assert (tmp_path / "checkpoints" / "step-00000002" / "model.safetensors").read_bytes() == good
    # Trained on to step 3 (keep_checkpoints 2): the unusable step 4 is neither counted nor deleted, so the good
    # step 2 stays beside the new step 3 rather than being pruned in favour of it.
    resumed.train(steps=3)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-00000002", "step-00000003", "step-00000004"]
    assert checkpoints.latest_checkpoint(tmp_path, parts=("model.safetensors",)).step == 4
    # sampling reads only the weights it uses: the trained weights of step 4 are intact, and serve --weights model
    from ddpm_fast.interop.pretrained import load_pretrained

    trained = load_pretrained(newest, "model")
    assert trained.path == newest and trained.weights == "model"
    step4 = checkpoints.load_checkpoint(newest, parts=("model.safetensors",))
    assert step4.ema is None and all(torch.equal(trained.model.state_dict()[k], v) for k, v in step4.model.items())
    assert load_pretrained(tmp_path, "model").path == newest  # the run folder: the newest whose model file is good
    with pytest.warns(RuntimeWarning, match="ema.safetensors"):
        assert load_pretrained(tmp_path).path.name == "step-00000003"  # EMA: the newest good EMA file
    with pytest.raises(ValueError, match="ema.safetensors.*corrupt or truncated"):
        load_pretrained(newest)
    out = tmp_path.parent / f"{tmp_path.name}-model.png"
    assert cli.main(["sample", "--checkpoint", str(newest), "--weights", "model", "--num-samples", "2", "--steps",
                     "2", "--device", "cpu", "--no-compile", "--out", str(out)]) == 0 and out.is_file()
    (newest / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match="state.json"):
        checkpoints.load_checkpoint(newest)


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(small_config(steps=2, checkpoint_every=2), tmp_path, dataset=shapes(), progress=False)
    trainer.train()
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints" / "step-00000002").iterdir()}
    trainer.train(steps=3)  # keeps step 2 and adds step 3 (keep_checkpoints=2)
    calls = []

    def failing_write(path, data):
        calls.append(path.name)
        if len(calls) == 3:
            raise OSError("disk full")
        with open(path, "wb") as handle:
            handle.write(data)

    monkeypatch.setattr(checkpoints, "_write_synced", failing_write)
    trainer.step = 4
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000002", "step-00000003"]  # no step 4, no temp folder left
    assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoints" / "step-00000002").iterdir()} == before


def test_refuses_to_overwrite_or_to_resume_a_different_setup(tmp_path):
    Trainer(small_config(steps=2), tmp_path, dataset=shapes(), progress=False).train()
    with pytest.raises(ValueError, match="already holds checkpoints"):
        Trainer(small_config(steps=2), tmp_path, dataset=shapes(), progress=False)
    with pytest.raises(ValueError, match="batch_size: checkpoint 8, given 4"):
        Trainer(small_config(steps=2, batch_size=4), tmp_path, dataset=shapes(), progress=False, resume=True)
    assert Trainer(small_config(steps=9), tmp_path, dataset=shapes(), progress=False, resume=True).config.steps == 9


@pytest.mark.parametrize("changes, match", [
    ({"model": "huge"}, "model must be one of"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"learning_rate": -1.0}, "learning_rate"),
    ({"prediction_type": "noise"}, "prediction_type"),
    ({"min_snr_gamma": 0.0}, "min_snr_gamma"),
    ({"schedule": "quadratic"}, "schedule"),
    ({"dtype": "float16"}, "dtype"),
    ({"ema_decay": 1.5}, "ema_decay"),
    ({"steps": 2.5}, "steps must be an int"),
    ({"compile": "yes"}, "compile must be"),
])
def test_config_errors_name_the_setting(changes, match):
    with pytest.raises((ValueError, TypeError), match=match):
        small_config(**changes)


def test_batch_must_split_over_processes_and_fit_the_data(tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch"):
        Trainer(small_config(batch_size=16), tmp_path, dataset=shapes(num_images=8), progress=False).train()


def test_bf16_autocast_trains(tmp_path):
    trainer = Trainer(small_config(steps=3, dtype="bfloat16"), tmp_path, dataset=shapes(), progress=False)
    summary = trainer.train()
    assert trainer.autocast_dtype == torch.bfloat16 and torch.isfinite(torch.tensor(losses(tmp_path))).all()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay fp32
    assert summary.final_loss is not None


# -------------------------------------------------------------------------------------------- distributed


def test_two_process_ddp_equals_one_process(tmp_path):
    common = [*SMALL_CLI, "--batch-size", "8", "--steps", "5", "--log-every", "1", "--checkpoint-every", "5",
              "--train-timesteps", "100", "--lr", "1e-3", "--warmup-steps", "2", "--no-progress"]
    one = subprocess.run([sys.executable, "-m", "ddpm_fast", "train", "--run-dir", str(tmp_path / "one"), *common],
                         env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                          "-m", "ddpm_fast", "train", "--run-dir", str(tmp_path / "two"), *common],
                         env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stdout + two.stderr
    assert "2 process(es)" in two.stdout
    torch.testing.assert_close(torch.tensor(losses(tmp_path / "two")), torch.tensor(losses(tmp_path / "one")),
                               rtol=1e-5, atol=1e-6)
    a = checkpoints.latest_checkpoint(tmp_path / "one")
    b = checkpoints.latest_checkpoint(tmp_path / "two")
    assert b.state["world_size"] == 2
    # The two runs sum float32 gradients in a different order (two half-batch sums all-reduced vs one sum, and each
    # CPU's own kernels), so each gradient differs by rounding, ~1e-7 relative: the weights agree to rtol 1e-4.
    # Except attention's key bias: softmax is invariant to adding q·b to every score of a query, so its true gradient
    # is exactly 0 and what each run computes is rounding noise alone. Adam divides that noise by its own RMS and moves
    # those weights by up to about lr per step in either direction whatever the noise's size (seen: 1.7e-6 apart on an
    # Intel CPU, 1.06e-5 on an AMD EPYC). Their bound is therefore 2 * lr * steps, not a rounding tolerance.
    # The same holds, more rarely, for any weight whose true gradient is near 0 on some step: on an Intel Xeon
    # (AVX-512) one conv weight of 36864 moved 2.6e-5 apart. So the rounding bound holds for all but 1 in 10^4
    # elements, and Adam's bound for every element.
    noise_only = [name for name in a.ema if name.endswith("to_k.bias")]
    assert noise_only, "the tiny U-Net has attention key biases; this test's bound assumes it"
    adam_bound, apart, total = 2 * 1e-3 * 5, 0, 0
    for name in a.ema:
        torch.testing.assert_close(b.ema[name], a.ema[name], rtol=0, atol=adam_bound)
        if name not in noise_only:
            apart += int((~torch.isclose(b.ema[name], a.ema[name], rtol=1e-4, atol=1e-5)).sum())
            total += a.ema[name].numel()
    assert apart <= total // 10_000, f"{apart} of {total} weights differ by more than rounding"


# --------------------------------------------------------------------------------------------------- CLI


def test_sample_from_a_training_run(tmp_path, capsys):
    Trainer(small_config(steps=2), tmp_path / "run", dataset=shapes(), progress=False).train()
    out = tmp_path / "grid.png"
    assert cli.main(["sample", "--checkpoint", str(tmp_path / "run"), "--num-samples", "4", "--steps", "5",
                     "--device", "cpu", "--dtype", "float32", "--no-compile", "--out", str(out)]) == 0
    assert Image.open(out).size == (2 * 16 * 16, 2 * 16 * 16)  # 32 px enlarged 16x to 512
    capsys.readouterr()
    assert cli.main(["sample", "--checkpoint", str(tmp_path / "run"), "--schedule", "cosine", "--out", str(out)]) == 2
    assert "--schedule/--train-timesteps cosine, T=100 contradicts the schedule stored with" in capsys.readouterr().err


def test_resume_reads_the_stored_setup_and_data_range(tmp_path, capsys):
    """--resume takes the run's stored setup (the README's `--steps N --resume`); a flag may repeat it, not contradict
    it; --steps below the run's step is an error. The .npz's --data-range is stored with the run and read back."""
    import numpy as np

    unit = np.random.default_rng(0).random((8, 8, 8, 3)).astype(np.float32)  # [0, 1] images
    np.savez(tmp_path / "unit.npz", images=unit, labels=np.zeros(8))
    run = str(tmp_path / "run")
    fresh = ["train", "--run-dir", run, "--data", str(tmp_path / "unit.npz"), "--key", "images", "--data-range",
             "0,1", "--image-size", "8", "--train-timesteps", "50", "--batch-size", "4", "--steps", "2",
             "--no-progress", "--device", "cpu"]
    assert cli.main(fresh) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert cli.main(["train", "--run-dir", run, "--steps", "1", "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--steps 1 is below the step the run has reached (2" in err, err
    assert cli.main(["train", "--run-dir", run, "--steps", "3", "--resume", "--image-size", "16"]) == 2
    assert "image_size: checkpoint 8, given 16" in capsys.readouterr().err
    assert cli.main(["train", "--run-dir", run, "--steps", "3", "--resume", "--image-size", "8", "--batch-size",
                     "4", "--no-progress", "--device", "cpu"]) == 0, capsys.readouterr().err
    assert "resumed from" in capsys.readouterr().out
    state = checkpoints.load_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000003").state
    stored = state["training_config"]
    assert (stored["image_size"], stored["num_train_timesteps"], stored["batch_size"]) == (8, 50, 4)
    assert (stored["data_range"], stored["data_key"], stored["steps"]) == ([0.0, 1.0], "images", 3)
    trainer = Trainer(None, tmp_path / "run", progress=False, resume=True)  # the library reads it back too
    assert trainer.step == 3 and trainer.dataset.value_range == (0.0, 1.0)
    assert trainer.dataset[0].min() < 0  # mapped onto [-1, 1]
    with pytest.raises(ValueError, match="steps=2 is below the step this run has reached"):
        trainer.train(steps=2)


def test_train_cli_errors_are_messages(tmp_path, capsys):
    assert cli.main(["train", "--run-dir", str(tmp_path), "--data", str(tmp_path / "missing")]) == 2
    assert str(tmp_path / "missing") in capsys.readouterr().err
    assert cli.main(["train", "--run-dir", str(tmp_path), "--model", "huge"]) == 2
    assert "model must be one of" in capsys.readouterr().err


def test_flip_horizontally_mirrors_exactly_the_chosen_samples():
    from ddpm_fast.training.batches import flip_horizontally

    batch = torch.randn(4, 3, 5, 7)
    flip = torch.tensor([True, False, False, True])
    out = flip_horizontally(batch, flip)
    for sample, result, flipped in zip(batch, out, flip):
        assert torch.equal(result, sample.flip(-1) if flipped else sample)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_epsilon_view_inverts_each_target(prediction_type):
    from ddpm_fast.training.objectives import AsEpsilonModel

    schedule = df.NoiseSchedule.linear(50)
    x0 = torch.rand(3, 2, 4, 4) * 2 - 1
    t = torch.tensor([1, 25, 49])
    x_t, eps = df.q_sample(x0, t, schedule, seed=9)
    alpha_bar = schedule.buffers()["alphas_cumprod"][t]
    oracle = training_target(x0, eps, alpha_bar, prediction_type)  # a perfect model of this target
    view = AsEpsilonModel(lambda x, t: oracle, schedule, prediction_type)
    torch.testing.assert_close(view(x_t, t), eps, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_cuda_defaults_match_fp32_and_train(tmp_path):
    """On a GPU the defaults are bf16 autocast, channels-last and torch.compile with the Triton kernels."""
    x0 = torch.stack([shapes()[i] for i in range(8)])
    fast = Trainer(small_config(steps=5), tmp_path / "fast", dataset=shapes(), device="cuda", progress=False)
    fp32 = Trainer(small_config(steps=5, dtype="float32", compile=False, channels_last=False), tmp_path / "fp32",
                   dataset=shapes(), device="cuda", progress=False)
    assert fast.compiled and fast.channels_last and fast.autocast_dtype == torch.bfloat16
    got, expected = float(fast.train_step(x0)[0]), float(fp32.train_step(x0)[0])
    assert abs(got - expected) <= 5e-2 * expected, (got, expected)
    fast.step = 0
    summary = fast.train()
    assert summary.step == 5 and torch.isfinite(torch.tensor(losses(tmp_path / "fast"))).all()
    images = fast.sample(4, seed=0, num_inference_steps=5)
    assert images.shape == (4, 3, 16, 16) and torch.isfinite(images).all()


@pytest.mark.gpu
def test_sample_grids_are_captured_while_the_pin_memory_thread_runs(tmp_path):
    """num_workers > 0 on CUDA pins memory in a thread of the DataLoader's; the periodic EMA grids capture CUDA
    graphs meanwhile. Both must survive, and the grids must really run from graphs (a fallback fails the test)."""
    config = small_config(steps=6, num_workers=2, sample_every=2, sample_count=4, sample_steps=12)
    trainer = Trainer(config, tmp_path / "run", dataset=shapes(), device="cuda", progress=False)
    summary = trainer.train()
    assert summary.step == 6 and len(list((tmp_path / "run" / "samples").glob("step-*.png"))) == 3
    report = trainer._sampler.last_report
    assert report.compiled and report.cuda_graphs and report.graph_replays > 0 and not report.fell_back, report


def test_sampling_graphs_are_captured_in_thread_local_mode(monkeypatch):
    """The capture mode other threads cannot break (see graphs.CAPTURE_ERROR_MODE), checked without a GPU on the code
    path every capture of the sampler takes (GraphedSteps._graph), with torch.cuda's capture calls recorded."""
    from ddpm_fast.sampling import graphs

    seen = []

    class FakeGraph:
        pass

    @contextlib.contextmanager
    def graph(cuda_graph, pool=None, stream=None, capture_error_mode="global"):
        seen.append((type(cuda_graph), pool, capture_error_mode))
        yield

    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: None)
    steps = []
    graphed = object.__new__(graphs.GraphedSteps)  # skips the CUDA warm-up of __init__
    graphed.step, graphed.pool, graphed.graphs, graphed.capture_seconds = lambda: steps.append(1), "pool", {}, 0.0
    graphed.steps_per_graph = 3
    graphed.prepare(7)  # a 3-step graph and a 1-step graph
    assert seen == [(FakeGraph, "pool", "thread_local")] * 2 and len(steps) == 4


def test_the_progress_bar_says_when_it_waits_for_a_sample_grid(tmp_path):
    trainer = Trainer(small_config(sample_count=2, sample_steps=3), tmp_path / "run", dataset=shapes(), progress=False)

    class Bar:
        said = []

        def set_postfix_str(self, text, refresh=True):
            self.said.append(text)

    trainer._write_sample_grid(Bar())
    assert Bar.said == ["drawing 2 EMA samples x 3 steps for the grid"]
    assert (tmp_path / "run" / "samples" / "step-00000000.png").is_file()


def _image_folder(root, classes, count=4, size=8):
    """A folder of class sub-folders, `count` small PNGs each."""
    import numpy as np

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_a_run_resumes_from_any_directory_and_refuses_changed_classes(tmp_path, capsys, monkeypatch):
    """The run stores its data's absolute path, and --data may spell the same folder another way; a resumed
    class-conditional run must see the classes it was trained on (an added, removed or renamed class folder would
    change what each label means)."""
    import shutil

    images = _image_folder(tmp_path / "work" / "imgs", ["bird", "cat", "dog"])
    monkeypatch.chdir(tmp_path / "work")
    common = ["--no-progress", "--device", "cpu"]
    assert cli.main(["train", "--run-dir", "run", "--data", "imgs", "--class-conditional", "--image-size", "8",
                     "--train-timesteps", "20", "--batch-size", "4", "--steps", "1", *common]) == 0
    stored = json.loads((tmp_path / "work" / "run" / "checkpoints" / "step-00000001" / "state.json").read_text())
    assert stored["training_config"]["data"] == str(images)
    monkeypatch.chdir(tmp_path)  # elsewhere: the stored path, or the same folder spelled from here
    assert cli.main(["train", "--run-dir", "work/run", "--steps", "2", "--resume", *common]) == 0
    assert cli.main(["train", "--run-dir", "work/run", "--steps", "3", "--resume", "--data", "work/imgs/",
                     *common]) == 0, capsys.readouterr().err
    capsys.readouterr()
    (tmp_path / "other").mkdir()
    assert cli.main(["train", "--run-dir", "work/run", "--steps", "4", "--resume", "--data", "other", *common]) == 2
    assert "data: checkpoint" in capsys.readouterr().err
    shutil.move(str(images / "dog"), str(images / "zebra"))  # a renamed class: label 2 would silently change
    assert cli.main(["train", "--run-dir", "work/run", "--steps", "4", "--resume", *common]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the data's classes changed" in err and "(bird, cat, dog)" in err, err
    assert "(bird, cat, zebra)" in err


@pytest.mark.parametrize("signal_number, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_training_with_the_shells_status(signal_number, status, tmp_path, capsys, monkeypatch):
    """Ctrl-C / a kill during `ddpm-fast train` writes the checkpoint and exits 128 + the signal, so a script can
    tell a stopped run from a finished one."""
    step = Trainer.train_step

    def signalled_step(self, batch):  # the signal arrives during the first step, as a user's Ctrl-C would
        if self.step == 0:
            signal.raise_signal(signal_number)
        return step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", signalled_step)
    run = tmp_path / "run"
    assert cli.main(["train", "--run-dir", str(run), *SMALL_CLI, "--train-timesteps", "20", "--batch-size", "4",
                     "--steps", "50", "--no-progress", "--device", "cpu"]) == status
    assert "stopped early at step 1" in capsys.readouterr().out
    assert checkpoints.latest_checkpoint(run).step == 1
