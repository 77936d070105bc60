"""The main job end to end in a reduced mode, and the quality metric on a model trained on the embedded shapes."""

import pytest
import torch
from PIL import Image

from ddpm_fast.cli.demo import run_demo
from ddpm_fast.data.datasets import ShapesDataset
from ddpm_fast.evaluation.metrics import quality_report
from ddpm_fast.kernels import cpu_reference
from ddpm_fast.training.config import TrainingConfig
from ddpm_fast.training.trainer import Trainer

# Left to the TRITON_INTERPRET=0 run (tests/conftest.py checks no test here reaches a kernel): every test runs inside
# cpu_reference() (an autouse fixture).
pytestmark = pytest.mark.torch_references


@pytest.fixture(autouse=True)
def _torch_references():
    with cpu_reference():  # whole-model runs: the fused ops' torch references (the kernels are proven elsewhere)
        yield


def test_demo_trains_samples_both_ways_and_writes_its_pictures(tmp_path, capsys):
    result = run_demo(tmp_path, steps=12, batch_size=8, timesteps=20, num_samples=4, device="cpu", progress=False,
                      compile=False)
    out = capsys.readouterr().out
    assert result["train_steps"] == 12 and result["speedup"] > 0
    assert result["max_abs_difference"] < 1e-4  # same noise, fp32: the same chain as the seed's loop
    for line in ("trained 12 steps", "naive reference", "FastSampler", "speed-up", "Sample quality", "rf_kid",
                 "relative = (samples - floor)", "the two grids differ image by image"):  # what a reader asks
        assert line in out, line
    # The two DDPM pictures: the shipped photograph noised by q_sample, and one chain of the trained model.
    for name in ("samples.png", "naive_samples.png", "data.png", "loss.png", "forward_process.png", "reverse_walk.png"):
        assert Image.open(tmp_path / name).format == "PNG", name
    assert set(result["quality"]["figures"]) == {"samples", "real", "noise"}
    # The short quality-against-time table: full DDPM, then fewer model calls (capped at T // 2 = 10 here).
    assert [(row["method"], row["model_calls"]) for row in result["fewer_steps"]] == [
        ("ddpm", 20), ("ddim", 10), ("dpm_solver++", 10), ("sde_dpm_solver++", 10)]
    assert all(row["seconds"] > 0 and row["rf_kid"] == row["rf_kid"] for row in result["fewer_steps"])
    assert "fewer model calls" in out and "DPM-Solver++" in out and "less time" in out
    assert "forward_process.png" in out and "reverse_walk.png" in out
    again = run_demo(tmp_path, steps=12, batch_size=8, timesteps=20, num_samples=4, device="cpu", progress=False,
                     compile=False)  # a second run reuses the trained checkpoint
    assert again["train_steps"] == 0 and "already holds a run trained to step 12" in capsys.readouterr().out


def test_demo_edge_sizes(tmp_path, capsys):
    from ddpm_fast.cli import main as cli

    # A chain of one timestep samples (its naive loop's warm-up stays within t = 0).
    result = run_demo(tmp_path / "one", steps=2, batch_size=4, timesteps=1, num_samples=2, device="cpu",
                      progress=False, compile=False)
    assert result["fewer_steps"][0]["model_calls"] == 1
    # One sample cannot be compared as a set: refused up front, naming the flag.
    with pytest.raises(SystemExit) as exited:  # argparse's usage error: one line on stderr, status 2
        cli.main(["demo", "--run-dir", str(tmp_path / "n1"), "--num-samples", "1", "--device", "cpu"])
    assert exited.value.code == 2
    assert "--num-samples must be at least 2" in capsys.readouterr().err
    assert not (tmp_path / "n1").exists()


def test_demo_refuses_a_run_folder_of_another_setup(tmp_path, capsys):
    from ddpm_fast.cli import main as cli

    arguments = ["demo", "--run-dir", str(tmp_path), "--steps", "2", "--timesteps", "5", "--num-samples", "2",
                 "--device", "cpu", "--no-compile", "--no-progress"]
    assert cli.main(arguments + ["--batch-size", "4"]) == 0
    assert cli.main(arguments + ["--batch-size", "8"]) == 2
    assert "batch_size: checkpoint 4, given 8" in capsys.readouterr().err
    # Left out, the settings are the run's own: a second demo samples it again, training nothing.
    assert cli.main(["demo", "--run-dir", str(tmp_path), "--num-samples", "2", "--device", "cpu", "--no-compile",
                     "--no-progress"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "already holds a run trained to step 2" in out and "  trained " not in out and "T=5" in out


def test_demo_refuses_a_training_run_of_other_data(tmp_path, capsys):
    from ddpm_fast.cli import main as cli

    assert cli.main(["train", "--run-dir", str(tmp_path), "--class-conditional", "--image-size", "16", "--batch-size",
                     "4", "--steps", "1", "--train-timesteps", "5", "--no-progress", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert cli.main(["demo", "--run-dir", str(tmp_path), "--num-samples", "2", "--device", "cpu", "--no-compile",
                     "--no-progress"]) == 2
    assert "holds a training run of other data (shapes, class-conditional), not a demo run" in capsys.readouterr().err


def test_a_signal_stops_the_demo_before_it_samples(tmp_path, capsys, monkeypatch):
    import signal

    from ddpm_fast.cli import main as cli
    from ddpm_fast.training.trainer import Trainer

    step = Trainer.train_step

    def interrupted_step(self, batch):  # Ctrl-C during the first training step
        if self.step == 0:
            signal.raise_signal(signal.SIGINT)
        return step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    assert cli.main(["demo", "--run-dir", str(tmp_path), "--steps", "20", "--timesteps", "5", "--num-samples", "2",
                     "--device", "cpu", "--no-compile", "--no-progress"]) == 130
    captured = capsys.readouterr()
    assert "naive reference" not in captured.out and not (tmp_path / "samples.png").exists()
    assert captured.err.count("\n") == 1 and "training stopped at step 1 by a signal" in captured.err, captured.err


def test_metric_ranks_real_below_trained_samples_below_noise(tmp_path):
    config = TrainingConfig(model_overrides={"block_out_channels": (16, 32), "down_attention": (False, False),
                                             "up_attention": (False, True)},
                            image_size=16, steps=150, batch_size=16, learning_rate=1e-3, warmup_steps=10,
                            num_train_timesteps=100, log_every=50, checkpoint_every=150,
                            prediction_type="v_prediction", min_snr_gamma=5.0)  # the demo's objective
    trainer = Trainer(config, tmp_path, dataset=ShapesDataset(512, 16, seed=0), progress=False)
    trainer.train()
    samples = trainer.sampler(dtype=torch.float32, compile=False).sample(64, seed=0)  # v-prediction, from config
    report = quality_report(samples, torch.stack(list(ShapesDataset.held_out(256, 16, seed=0))), seed=0)
    floor, ceiling = report.figures["real"]["rf_kid"], report.figures["noise"]["rf_kid"]
    assert floor < report.primary < ceiling, report.format()
    assert report.figures["real"]["pixel_sw"] < report.figures["samples"]["pixel_sw"] < report.figures["noise"][
        "pixel_sw"], report.format()
