"""The "How DDPM works" pictures: the forward process is q_sample's x_t with one ε, the reverse walk is the chain
FastSampler runs, and each figure is a PNG. Toy models and small images; the demo's test checks the demo writes them."""

import torch
from PIL import Image

from ddpm_fast import FastSampler, NoiseSchedule, q_sample
from ddpm_fast.evaluation import pictures


def test_the_shipped_photo_is_a_128_pixel_rgb_image_in_the_model_range():
    image = pictures.photo()
    assert image.shape == (3, 128, 128) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1 and image.std() > 0.1  # a photograph, not a flat tile


def test_forward_process_is_q_sample_with_one_noise_for_every_timestep():
    image = pictures.photo()[:, :8, :8]
    schedule = NoiseSchedule.cosine(1000)
    x_t = pictures.forward_process(image, schedule, (0, 500, 999), seed=3)
    _, eps = q_sample(image.unsqueeze(0), 0, schedule, seed=3)
    expected = (schedule.sqrt_alphas_cumprod[[0, 500, 999]].view(-1, 1, 1, 1).float() * image
                + schedule.sqrt_one_minus_alphas_cumprod[[0, 500, 999]].view(-1, 1, 1, 1).float() * eps)
    torch.testing.assert_close(x_t, expected, atol=1e-5, rtol=1e-5)


class _Toy(torch.nn.Module):
    """The ε that x_t would hold if x0 were 0.3 everywhere: a chain that stays in range, its noise still visible."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def forward(self, x, t):
        alpha_bar = self.schedule.buffers(x.device)["alphas_cumprod"][t].view(-1, 1, 1, 1)
        return (x - alpha_bar.sqrt() * 0.3) / (1 - alpha_bar).sqrt()


def test_reverse_walk_ends_at_fast_samplers_sample_of_the_same_seed():
    schedule = NoiseSchedule.linear(12)
    keep, x_t, x0 = pictures.reverse_walk(_Toy(schedule), schedule, (3, 4, 4), seed=5, frames=4)
    assert keep == [11, 7, 4, 0] and x_t.shape == (5, 3, 4, 4) and x0.shape == (4, 3, 4, 4)
    # The model's x0 estimate at each kept step (float32 rounding near ᾱ = 0 at t = T-1).
    torch.testing.assert_close(x0, torch.full_like(x0, 0.3), atol=2e-3, rtol=0)
    sample = FastSampler(_Toy(schedule), schedule, (3, 4, 4), dtype=torch.float32, compile=False).sample(1, seed=5)
    assert 0 < x_t[-1].std() and x_t[-1].abs().max() < 1  # not a clamped, exploded chain
    torch.testing.assert_close(x_t[-1], sample[0], atol=1e-5, rtol=1e-5)


def test_each_figure_is_a_png(tmp_path):
    schedule = NoiseSchedule.linear(6)
    paths = [pictures.forward_process_figure(pictures.photo()[:, :16, :16], tmp_path / "forward.png",
                                             timesteps=(0, 10, 99)),
             pictures.reverse_walk_figure(_Toy(schedule), schedule, (3, 4, 4), tmp_path / "walk.png", frames=3),
             pictures.snr_figure(tmp_path / "snr.png", num_timesteps=50)]
    for path in paths:
        assert Image.open(path).format == "PNG", path
