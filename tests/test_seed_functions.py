"""The top-level seed functions are fast twins of ddpm_fast.reference: same noise stream, same values."""

import pytest
import torch
import torch.nn.functional as F

import ddpm_fast as df
from ddpm_fast import reference


class TinyEpsModel(torch.nn.Module):
    """A small ε-model(x, t) with a timestep dependence, enough to make every step differ."""

    def __init__(self, channels=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.embed = torch.nn.Embedding(1000, channels)

    def forward(self, x, t):
        return torch.tanh(self.conv(x) + self.embed(t)[:, :, None, None])


def _terms(T, device):
    return reference.schedule_terms(reference.linear_beta_schedule(T).to(device))


def test_forward_diffusion_sample_equals_reference(device):
    terms = _terms(300, device)
    x0 = torch.randn(4, 3, 9, 7, device=device)
    t = torch.tensor([0, 1, 150, 299], device=device)
    torch.manual_seed(3)
    expected = reference.forward_diffusion_sample(x0, t, terms["sqrt_alphas_cumprod"],
                                                  terms["sqrt_one_minus_alphas_cumprod"])
    torch.manual_seed(3)
    got = df.forward_diffusion_sample(x0, t, terms["sqrt_alphas_cumprod"], terms["sqrt_one_minus_alphas_cumprod"])
    assert torch.equal(got[1], expected[1])  # the same noise stream
    torch.testing.assert_close(got[0], expected[0], rtol=1e-6, atol=1e-6)


def test_forward_diffusion_sample_with_seed_uses_philox(device):
    terms = _terms(300, device)
    x0 = torch.randn(4, 3, 8, 8, device=device)
    t = torch.tensor([0, 1, 150, 299], device=device)
    a = df.forward_diffusion_sample(x0, t, terms["sqrt_alphas_cumprod"], terms["sqrt_one_minus_alphas_cumprod"],
                                    seed=5)
    b = df.forward_diffusion_sample(x0[:2], t[:2], terms["sqrt_alphas_cumprod"],
                                    terms["sqrt_one_minus_alphas_cumprod"], seed=5)
    assert torch.equal(a[1][:2], b[1])


def test_train_step_equals_reference(device):
    terms = _terms(100, device)
    model = TinyEpsModel().to(device)
    x0 = torch.randn(3, 3, 8, 8, device=device)
    t = torch.tensor([2, 50, 99], device=device)
    losses, grads = [], []
    for fn in (reference.train_step, df.train_step):
        model.zero_grad()
        torch.manual_seed(7)
        loss = fn(model, x0, t, terms["sqrt_alphas_cumprod"], terms["sqrt_one_minus_alphas_cumprod"], F.l1_loss)
        loss.backward()
        losses.append(loss.detach())
        grads.append(model.conv.weight.grad.clone())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("img_size", [8, (1, 5, 7)])
def test_sample_equals_reference(device, img_size):
    T = 40
    terms = _terms(T, device)
    channels = 3 if isinstance(img_size, int) else img_size[0]
    model = TinyEpsModel(channels).to(device)
    args = (model, 3, img_size, T, terms["betas"], terms["sqrt_recip_alphas"], terms["sqrt_one_minus_alphas_cumprod"],
            terms["posterior_variance"])
    torch.manual_seed(1)
    expected = reference.sample(*args)
    torch.manual_seed(1)
    got = df.sample(*args)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert got.abs().max() <= 1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_sample_with_seed_is_per_sample(device):
    T = 20
    terms = _terms(T, device)
    model = TinyEpsModel().to(device)
    args = (terms["betas"], terms["sqrt_recip_alphas"], terms["sqrt_one_minus_alphas_cumprod"],
            terms["posterior_variance"])
    four = df.sample(model, 4, 6, T, *args, seed=11)
    two = df.sample(model, 2, 6, T, *args, seed=11)
    torch.testing.assert_close(two, four[:2], rtol=1e-5, atol=1e-5)
    assert torch.equal(four, df.sample(model, 4, 6, T, *args, seed=11))
    assert not torch.equal(four, df.sample(model, 4, 6, T, *args, seed=12))


def test_sample_keeps_the_reference_rng_order_with_a_stochastic_model(device):
    # A model that draws from the global RNG (like dropout in train mode) must see the same stream in both paths.
    T = 8
    terms = _terms(T, device)
    model = TinyEpsModel().to(device)

    def noisy_model(x, t):
        return model(x, t) + 0.1 * torch.randn_like(x)

    args = (noisy_model, 2, 6, T, terms["betas"], terms["sqrt_recip_alphas"], terms["sqrt_one_minus_alphas_cumprod"],
            terms["posterior_variance"])
    torch.manual_seed(4)
    expected = reference.sample(*args)
    torch.manual_seed(4)
    torch.testing.assert_close(df.sample(*args), expected, rtol=1e-4, atol=1e-4)


def test_seed_functions_accept_strided_schedule_vectors(device):
    terms = _terms(50, device)
    strided = {k: torch.stack([v, v], dim=1)[:, 0] for k, v in terms.items()}  # same values, stride 2
    x0 = torch.randn(2, 3, 4, 4, device=device)
    t = torch.tensor([3, 40], device=device)
    noise = df.forward_diffusion_sample(x0, t, strided["sqrt_alphas_cumprod"],
                                        strided["sqrt_one_minus_alphas_cumprod"], seed=1)
    dense = df.forward_diffusion_sample(x0, t, terms["sqrt_alphas_cumprod"], terms["sqrt_one_minus_alphas_cumprod"],
                                        seed=1)
    assert torch.equal(noise[0], dense[0])
    with pytest.raises(ValueError, match="same length"):
        df.forward_diffusion_sample(x0, t, terms["sqrt_alphas_cumprod"], terms["sqrt_one_minus_alphas_cumprod"][:10])
