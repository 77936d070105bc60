"""Learned variances (issue 18, part 1): improved DDPM's hybrid loss against an independent float64 statement of its
terms, the stop-gradient on the mean, a short learned-variance training run sampled with learned_range, and the
test-set NLL in bits/dim on a case whose answer is known in closed form."""

import math

import pytest
import torch

import ddpm_fast as df
from ddpm_fast.evaluation.metrics import nll_bits_per_dim
from ddpm_fast.kernels import cpu_reference
from ddpm_fast.training.config import TrainingConfig
from ddpm_fast.training.trainer import Trainer
from ddpm_fast.training.objectives import hybrid_loss
from ddpm_fast.evaluation.likelihood import (model_log_variance, posterior_mean, predicted_x0, prior_bpd,
                                   vb_terms_bpd)

# Left to the TRITON_INTERPRET=0 run (tests/conftest.py checks no test here reaches a kernel): every test runs inside
# cpu_reference() (an autouse fixture); the learned-range step kernels are proven in test_reverse_step.py.
pytestmark = pytest.mark.torch_references

T = 40


@pytest.fixture(autouse=True)
def _torch_references():
    with cpu_reference():
        yield


# ---------------------------------------------------------------------------------- a float64 statement


def ref_schedule(T):
    betas = df.NoiseSchedule.cosine(T).betas  # float64
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    posterior_variance = betas * (1 - prev) / (1 - alphas_cumprod)
    log_clipped = torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]]))
    return betas, alphas_cumprod, prev, log_clipped


def ref_phi(x):
    return 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def ref_vb_bpd(eps_pred, v, x0, x_t, t):
    """Improved DDPM's L_t (bits/dim) for an ε-model with learned_range variance, in float64, written out."""
    betas, a, prev, log_clipped = ref_schedule(T)
    eps_pred, v, x0, x_t = (z.double() for z in (eps_pred, v, x0, x_t))
    out = []
    for i in range(x0.shape[0]):
        k = int(t[i])
        x0_hat = (x_t[i] - (1 - a[k]).sqrt() * eps_pred[i]) / a[k].sqrt()
        coef1 = betas[k] * prev[k].sqrt() / (1 - a[k])
        coef2 = (1 - prev[k]) * (1 - betas[k]).sqrt() / (1 - a[k])
        mean = coef1 * x0_hat + coef2 * x_t[i]
        frac = (v[i] + 1) / 2
        logvar = frac * torch.log(betas[k]) + (1 - frac) * log_clipped[k]
        true_mean = coef1 * x0[i] + coef2 * x_t[i]
        if k > 0:
            kl = 0.5 * (-1 + logvar - log_clipped[k] + torch.exp(log_clipped[k] - logvar)
                        + (true_mean - mean) ** 2 * torch.exp(-logvar))
            out.append(kl.mean() / math.log(2))
        else:
            inv = torch.exp(-0.5 * logvar)
            c = x0[i] - mean
            plus, minus = ref_phi(inv * (c + 1 / 255)), ref_phi(inv * (c - 1 / 255))
            log_p = torch.where(x0[i] < -0.999, torch.log(plus.clamp(min=1e-12)),
                                torch.where(x0[i] > 0.999, torch.log((1 - minus).clamp(min=1e-12)),
                                            torch.log((plus - minus).clamp(min=1e-12))))
            out.append(-log_p.mean() / math.log(2))
    return torch.stack(out)


def test_vb_terms_match_the_float64_statement():
    torch.manual_seed(0)
    schedule = df.NoiseSchedule.cosine(T)
    x0 = (torch.randint(0, 256, (6, 3, 5, 7)) / 127.5 - 1).float()  # 8-bit values, the ends included
    x0[0, 0, 0, :2] = torch.tensor([-1.0, 1.0])
    t = torch.tensor([0, 0, 1, 7, 20, T - 1])
    a = schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn_like(x0)
    eps_pred, v = torch.randn_like(x0), torch.rand_like(x0) * 2 - 1
    mean = posterior_mean(predicted_x0(eps_pred, x_t, t, schedule, "epsilon"), x_t, t, schedule)
    ours = vb_terms_bpd(mean, model_log_variance("learned_range", t, schedule, mean, v), x0, x_t, t, schedule)
    expected = ref_vb_bpd(eps_pred, v, x0, x_t, t)
    torch.testing.assert_close(ours.double(), expected, rtol=2e-4, atol=2e-5)
    assert (ours > 0).all()


def test_hybrid_loss_is_simple_plus_lambda_T_vlb():
    torch.manual_seed(1)
    schedule = df.NoiseSchedule.cosine(T)
    x0 = (torch.randint(0, 256, (4, 3, 6, 6)) / 127.5 - 1).float()
    t = torch.tensor([0, 3, 17, T - 2])
    seen = {}
    head = torch.randn(4, 6, 6, 6)

    def model(x_t, steps):
        seen["x_t"] = x_t.clone()
        return head.clone().tanh()

    loss, terms = hybrid_loss(model, x0, t, schedule, seed=torch.tensor([5]), vlb_weight=0.001)
    output = head.tanh()
    a = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    eps = (seen["x_t"].double() - a.sqrt() * x0.double()) / (1 - a).sqrt()  # the noise q_sample drew
    mse = (output[:, :3].double() - eps).pow(2).flatten(1).mean(1)
    vb = ref_vb_bpd(output[:, :3], output[:, 3:], x0, seen["x_t"], t) * T
    torch.testing.assert_close(terms["mse"].double(), mse, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(terms["vb"].double(), vb, rtol=2e-4, atol=1e-4)
    torch.testing.assert_close(loss.double(), (mse + 0.001 * vb).mean(), rtol=2e-4, atol=1e-5)


def test_the_vlb_term_moves_only_the_variance():
    torch.manual_seed(2)
    schedule = df.NoiseSchedule.cosine(T)
    x0 = torch.rand(3, 3, 4, 4) * 2 - 1
    t = torch.tensor([0, 5, 30])
    grads = {}
    for weight in (0.001, 10.0):
        head = torch.randn(3, 6, 4, 4, generator=torch.Generator().manual_seed(3)).requires_grad_()
        loss, _ = hybrid_loss(lambda x, s: head.tanh(), x0, t, schedule, seed=torch.tensor([1]), vlb_weight=weight)
        loss.backward()
        grads[weight] = head.grad
    # the prediction's gradient comes from L_simple alone; the variance's from L_vlb alone
    torch.testing.assert_close(grads[0.001][:, :3], grads[10.0][:, :3], rtol=0, atol=0)
    assert grads[0.001][:, 3:].abs().sum() > 0
    torch.testing.assert_close(grads[10.0][:, 3:], grads[0.001][:, 3:] * 10000, rtol=1e-4, atol=1e-8)


# ------------------------------------------------------------------------------------------------- training


def test_a_learned_variance_run_trains_and_samples_with_learned_range(tmp_path):
    config = TrainingConfig(model_overrides={"block_out_channels": (16, 32), "down_attention": (False, False),
                                             "up_attention": (False, False)},
                            image_size=8, steps=40, batch_size=16, learning_rate=2e-3, warmup_steps=2,
                            num_train_timesteps=T, schedule="cosine", variance_type="learned_range",
                            log_every=1, checkpoint_every=40)
    trainer = Trainer(config, tmp_path / "run", dataset=_shapes(), progress=False)
    assert trainer.model.config.out_channels == 6  # prediction and variance
    trainer.train()
    from ddpm_fast.training.log import read_jsonl

    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "log.jsonl") if "loss" in r]
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8  # it learns
    sampler = df.FastSampler.from_pretrained(tmp_path / "run", dtype=torch.float32, compile=False, device="cpu")
    assert sampler.setup.variance_type == "learned_range" and sampler.variance_type == "learned_range"
    images = sampler.sample(4, seed=0, num_inference_steps=10)
    assert images.shape == (4, 3, 8, 8) and torch.isfinite(images).all()
    with pytest.raises(ValueError, match="min_snr_gamma"):
        config.replace(min_snr_gamma=5.0)


def _shapes():
    from ddpm_fast.data.datasets import ShapesDataset

    return ShapesDataset(num_images=64, image_size=8, seed=0)


# ---------------------------------------------------------------------------------------------------- NLL


def test_nll_of_a_point_mass_with_the_exact_denoiser_is_known_in_closed_form():
    # Data: one image, c everywhere. The exact ε-denoiser of that data is (x_t − sqrt(ᾱ)c)/sqrt(1−ᾱ): every KL term
    # of the bound is then 0 (same mean, and fixed_small is the posterior's variance), leaving the prior term and
    # the discretized likelihood of c under N(c, β̃_1) at t = 0.
    schedule = df.NoiseSchedule.cosine(T)
    c = 0.5
    images = torch.full((2, 3, 4, 4), c)

    def exact(x_t, t):
        a = schedule.buffers(x_t.device)["alphas_cumprod"][t].view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * c) / (1 - a).sqrt()

    got = nll_bits_per_dim(exact, images, schedule, batch_size=2)
    betas, a, prev, log_clipped = ref_schedule(T)
    sigma = math.exp(0.5 * float(log_clipped[0]))
    delta = 1 / 255 / sigma
    decoder = -math.log(float(ref_phi(torch.tensor(delta, dtype=torch.float64))
                              - ref_phi(torch.tensor(-delta, dtype=torch.float64)))) / math.log(2)
    var_T = 1 - float(a[-1])
    prior = 0.5 * (-1 - math.log(var_T) + var_T + float(a[-1]) * c * c) / math.log(2)
    assert got == pytest.approx(decoder + prior, rel=1e-4)
    assert float(prior_bpd(images, schedule)[0]) == pytest.approx(prior, rel=1e-4)
    # a worse denoiser has a larger bound
    assert nll_bits_per_dim(lambda x, t: exact(x, t) + 0.3, images, schedule, batch_size=2) > got + 0.01
    # the bound is each image's: one image alone has the same figure (no set of at least 2 needed)
    assert nll_bits_per_dim(exact, images[:1], schedule) == pytest.approx(got, rel=1e-4)


def test_nll_takes_learned_variance_models_and_refuses_bad_arguments():
    schedule = df.NoiseSchedule.cosine(8)
    images = torch.rand(2, 3, 4, 4) * 2 - 1
    value = nll_bits_per_dim(lambda x, t: torch.zeros(x.shape[0], 6, 4, 4), images, schedule,
                             variance_type="learned_range")
    assert math.isfinite(value) and value > 0
    with pytest.raises(ValueError, match="variance_type"):
        nll_bits_per_dim(lambda x, t: x, images, schedule, variance_type="learned")
    with pytest.raises(ValueError, match="2 x 3 channels"):
        nll_bits_per_dim(lambda x, t: x, images, schedule, variance_type="learned_range")
    with pytest.raises(TypeError, match="schedule"):
        nll_bits_per_dim(lambda x, t: x, images, "cosine")
    with pytest.raises(ValueError, match="images holds 0 image"):
        nll_bits_per_dim(lambda x, t: x, images[:0], schedule)
