"""An independent float64 statement of DDPM's math (Ho et al. 2020, improved DDPM, DDIM), written from the formulas
(not from the kernels)."""

import torch

from ddpm_fast.kernels.philox import philox_normal_reference


def per_sample(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    return values.to(t.device)[t].view((-1,) + (1,) * (ndim - 1))


def q_sample64(x0, t, schedule, eps):
    n = x0.dim()
    a = schedule.alphas_cumprod.to(x0.device)
    return per_sample(a.sqrt(), t, n) * x0.double() + per_sample((1 - a).sqrt(), t, n) * eps.double()


def philox_noise64(seed: int, batch: int, step: torch.Tensor, stream: int, shape4, device, sample_offset=0):
    """The kernels' Philox noise with the Box-Muller transform done in float64."""
    index = torch.arange(batch, device=device) + sample_offset
    return philox_normal_reference(torch.tensor(seed, device=device), index, step.to(device), stream, shape4,
                                   dtype=torch.float64)


def predicted_x0(out, x, t, schedule, prediction_type):
    n = x.dim()
    a = schedule.alphas_cumprod
    if prediction_type == "epsilon":
        return (x - per_sample((1 - a).sqrt(), t, n) * out) / per_sample(a.sqrt(), t, n)
    if prediction_type == "sample":
        return out
    return per_sample(a.sqrt(), t, n) * x - per_sample((1 - a).sqrt(), t, n) * out  # v


def p_step64(model_output, t, x_t, schedule, z, prediction_type="epsilon", variance_type="fixed_small",
             clip=False, clip_range=1.0):
    n = x_t.dim()
    c = x_t.shape[1]
    t = t.cpu()
    x = x_t.double().cpu()
    out = model_output[:, :c].double().cpu()
    betas, a = schedule.betas, schedule.alphas_cumprod
    a_prev = torch.cat([torch.ones(1, dtype=torch.float64), a[:-1]])
    if prediction_type == "epsilon" and not clip:
        mean = (x - per_sample(betas / (1 - a).sqrt(), t, n) * out) / per_sample((1 - betas).sqrt(), t, n)
    else:
        x0 = predicted_x0(out, x, t, schedule, prediction_type)
        if clip:
            x0 = x0.clamp(-clip_range, clip_range)
        coef1 = betas * a_prev.sqrt() / (1 - a)
        coef2 = (1 - a_prev) * (1 - betas).sqrt() / (1 - a)
        mean = per_sample(coef1, t, n) * x0 + per_sample(coef2, t, n) * x
    posterior_var = betas * (1 - a_prev) / (1 - a)
    if variance_type.startswith("fixed_small"):
        sigma = per_sample(posterior_var.sqrt(), t, n)
    elif variance_type.startswith("fixed_large"):
        sigma = per_sample(betas.sqrt(), t, n)
    else:  # learned_range
        clipped = torch.cat([posterior_var[1:2], posterior_var[1:]]).log()
        frac = (model_output[:, c:].double().cpu() + 1) / 2
        log_var = frac * per_sample(betas.log(), t, n) + (1 - frac) * per_sample(clipped, t, n)
        sigma = (0.5 * log_var).exp()
    if z is None:
        return mean
    sigma = sigma * (t > 0).view((-1,) + (1,) * (n - 1))
    return mean + sigma * z.double().cpu()


def ddim_step64(model_output, t, t_prev, x_t, schedule, eta, z, prediction_type="epsilon", clip=False,
                clip_range=1.0, use_clipped_model_output=False):
    n = x_t.dim()
    t, t_prev = t.cpu(), t_prev.cpu()
    x = x_t.double().cpu()
    out = model_output[:, : x_t.shape[1]].double().cpu()
    a = schedule.alphas_cumprod
    a_t = per_sample(a, t, n)
    a_prev = torch.where((t_prev < 0).view((-1,) + (1,) * (n - 1)), torch.ones((), dtype=torch.float64),
                         per_sample(a, t_prev.clamp(min=0), n))
    x0 = predicted_x0(out, x, t, schedule, prediction_type)
    eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    if clip:
        x0 = x0.clamp(-clip_range, clip_range)
        if use_clipped_model_output:  # Song et al. (2021) eq. 12 with the clipped x0 in both terms
            eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp(min=0).sqrt()
    result = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
    if z is not None:
        result = result + sigma * z.double().cpu()
    return result
