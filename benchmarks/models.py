"""The models the U-Net benchmarks share: FLOPs per image, and the diffusers peers built with the same weights."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ddpm_fast.models.config import config_to_diffusers

CIFAR_GFLOP_PER_IMAGE = 12.4  # one ddpm-cifar10 forward at 32x32: 6.22 GMAC (2 FLOP each)


def counted_gflop_per_image(model, shape) -> float:
    """torch's FlopCounterMode over one forward of a single image of `shape` ([B, C, H, W] or [C, H, W])."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *shape[-3:]), torch.tensor([1]))
    return counter.get_total_flops() / 1e9


def gflop_per_image(model, preset: str, shape) -> tuple[float, float]:
    """(GFLOP per image used for the figures, GFLOP per image counted by torch): the fixed 12.4 for ddpm-cifar10 at
    32x32, the counted figure otherwise."""
    counted = counted_gflop_per_image(model, shape)
    return (CIFAR_GFLOP_PER_IMAGE if preset == "ddpm-cifar10" and tuple(shape[-2:]) == (32, 32) else counted), counted


def diffusers_unet(model, device: torch.device, dtype: torch.dtype):
    """diffusers' UNet2DModel of the same architecture holding the same weights (our UNet keeps its names)."""
    import diffusers

    unet = diffusers.UNet2DModel.from_config(config_to_diffusers(model.config))
    unet.load_state_dict(model.state_dict(), strict=True)
    return unet.to(device=device, dtype=dtype).eval().requires_grad_(False)


def diffusers_pipeline(model, device: torch.device, dtype: torch.dtype, compile: bool, num_train_timesteps: int):
    """diffusers' DDPMPipeline around diffusers_unet (compiled if asked) with the linear fixed_small scheduler."""
    import diffusers

    unet = diffusers_unet(model, device, dtype)
    if compile:
        unet = torch.compile(unet)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear",
                                        beta_start=1e-4, beta_end=0.02, variance_type="fixed_small",
                                        clip_sample=False)
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_images(pipe, batch: int, steps: int, generator=None) -> torch.Tensor:
    """DDPMPipeline's own call (output_type="np": [B, H, W, C] in [0, 1]) mapped back to [-1, 1] NCHW."""
    output = pipe(batch_size=batch, generator=generator, num_inference_steps=steps, output_type="np").images
    return torch.from_numpy(output).permute(0, 3, 1, 2) * 2.0 - 1.0


def diffusers_compiled_dtype(device: torch.device) -> torch.dtype:
    """The compiled diffusers peer's dtype: fp16 on a GPU (the usual recipe); fp32 on a CPU, where fp16 convolutions
    are no recipe at all (so the CPU's compiled peer is the compiled fp32 model)."""
    return torch.float16 if device.type == "cuda" else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
