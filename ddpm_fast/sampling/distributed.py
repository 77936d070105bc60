"""Multi-process sampling: shard one batch across torch.distributed ranks and gather it on rank 0.

    torchrun --nproc_per_node 4 -m ddpm_fast sample --checkpoint ckpt/ --num-samples 1024 --out grid.png

    rank, world_size, device = init_from_environment()
    images = sample_sharded(sampler, 1024, seed=0)     # rank 0: float32 [1024, C, H, W]; other ranks: None
    teardown()

Rank r samples the contiguous slice shard_bounds(N, r, world_size) of the batch with `sample_offset` set to the
slice's start. seed= noise is per sample (Philox keyed by seed, sample index, step), so every rank draws exactly the
noise its samples would get in one batch of N, and the gathered union equals the single-process result.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional, Union

import torch
import torch.distributed as dist

from ..checks import ParameterError
from ..diffusion import check_sample_offset, check_sample_range

SEED_LIMIT = 2**62  # as FastSampler's own key draws; within the seed's [0, 2**63) range
_OWNED_GROUP = False  # whether init_from_environment created the process group (teardown destroys only that one)
GLOO_SETTLE_SECONDS = 0.2  # teardown's pause before destroying the group (see there)


def shard_bounds(num_samples: int, rank: int, world_size: int) -> tuple[int, int]:
    """(start, stop) of rank's contiguous shard of `num_samples`: sizes differ by at most one, the first
    num_samples % world_size ranks take the extra sample, and ranks beyond num_samples get an empty shard."""
    for name, value, low in (("num_samples", num_samples, 0), ("world_size", world_size, 1), ("rank", rank, 0)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if rank >= world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    base, extra = divmod(num_samples, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def is_distributed() -> bool:
    """Whether a torch.distributed process group with more than one rank is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


# --------------------------------------------------------------------------------------------------- sampling


def sample_sharded(sampler: Any, num_samples: int, seed: Optional[int] = None, *, sample_offset: int = 0,
                   **sample_kwargs: Any) -> Optional[torch.Tensor]:
    """`num_samples` samples of `sampler` (a FastSampler), split across the ranks of the default process group.

    Every rank must call it with the same arguments. Rank 0 returns the float32 [N, C, H, W] tensor on the sampler's
    device, identical (up to the last bits of batch-size-dependent convolutions) to sampler.sample(N, seed=seed);
    the other ranks return None. Without a process group (or with one rank) it is sampler.sample(N, seed=seed).

    seed: an int; None lets rank 0 draw one from torch's global generator and broadcast it, so the shards still
        share one key. generator= noise is a sequential stream and cannot be split: a ValueError.
    sample_offset: the global index of sample 0 (the batch itself may be a slice of a larger one).
    sample_kwargs: passed on to sampler.sample (num_inference_steps, method, eta, progress, guidance_scale,
        class_labels: [num_samples] labels, of which each rank takes its shard's).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be a non-negative int, got {num_samples!r}")
    if sample_kwargs.get("generator") is not None:
        raise ValueError("generator= cannot be sharded (its noise is one sequential stream); pass seed= instead")
    sample_kwargs.pop("generator", None)
    if sample_kwargs.get("output_type", "tensor") != "tensor":
        raise ValueError(f"output_type must be 'tensor' for sharded sampling, got {sample_kwargs['output_type']!r}")
    sample_kwargs.pop("output_type", None)
    sample_offset = check_sample_offset(sample_offset)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")

    if not is_distributed():
        return sampler.sample(num_samples, seed=seed, sample_offset=sample_offset, **sample_kwargs)

    seed = shared_seed(seed, sampler.device)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    start, stop = shard_bounds(num_samples, rank, world_size)
    check_sample_range(sample_offset, num_samples)  # the last global index, on every rank alike
    labels = sample_kwargs.get("class_labels")
    if isinstance(labels, (list, tuple, torch.Tensor)):  # one label per sample: this rank's part
        if len(labels) != num_samples:
            raise ValueError(f"class_labels must hold one label per sample: {num_samples}, got {len(labels)}")
        sample_kwargs["class_labels"] = labels[start:stop]
    shard = sampler.sample(stop - start, seed=seed, sample_offset=sample_offset + start, **sample_kwargs)
    gathered = gather_shards(shard, num_samples)
    return gathered.to(sampler.device) if gathered is not None else None


def shared_seed(seed: Optional[int], device: Optional[torch.device] = None) -> int:
    """`seed`, or for None one drawn on rank 0 from torch's global generator and broadcast to every rank.
    device: the ranks' sampling device (the broadcast goes through NCCL from there)."""
    if seed is not None:
        return seed
    if not is_distributed():
        return int(torch.randint(0, SEED_LIMIT, (1,)).item())
    value = torch.zeros(1, dtype=torch.int64, device=communication_device(device))
    if dist.get_rank() == 0:
        value.fill_(int(torch.randint(0, SEED_LIMIT, (1,)).item()))
    dist.broadcast(value, src=0)
    return int(value.item())


def gather_shards(shard: torch.Tensor, num_samples: int) -> Optional[torch.Tensor]:
    """Concatenate every rank's shard (rank order, sizes from shard_bounds) on rank 0; None elsewhere.

    Collectives need equal sizes, so each shard travels zero-padded to the largest shard's size."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    start, stop = shard_bounds(num_samples, rank, world_size)
    if shard.dim() < 1 or shard.shape[0] != stop - start:
        raise ValueError(f"shard must hold rank {rank}'s {stop - start} samples, got shape {tuple(shard.shape)}")
    device = communication_device(shard.device)
    largest = shard_bounds(num_samples, 0, world_size)  # rank 0's shard is never smaller than another's
    padded = torch.zeros((largest[1] - largest[0], *shard.shape[1:]), dtype=torch.float32, device=device)
    padded[: shard.shape[0]] = shard.to(device=device, dtype=torch.float32)
    pieces = [torch.empty_like(padded) for _ in range(world_size)] if rank == 0 else None
    dist.gather(padded, gather_list=pieces, dst=0)
    if rank != 0:
        return None
    sizes = [stop - start for start, stop in (shard_bounds(num_samples, r, world_size) for r in range(world_size))]
    return torch.cat([piece[:size] for piece, size in zip(pieces, sizes)])


def communication_device(preferred: Optional[torch.device] = None) -> torch.device:
    """Where the default group's tensors must live: for NCCL a CUDA device (`preferred` when it is one, else the
    current one), the CPU otherwise (gloo)."""
    if dist.get_backend() == "nccl":
        if preferred is not None and preferred.type == "cuda":
            return preferred
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ------------------------------------------------------------------------------------------- process group


def init_from_environment(device: Union[str, torch.device, None] = None) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT in the environment);
    returns (rank, world_size, device).

    device: None or "auto" picks cuda when available, else cpu. Under more than one rank, "cuda" (no index) means
    cuda:LOCAL_RANK, made the current device. The backend follows the device: NCCL for CUDA, gloo for the CPU.
    With WORLD_SIZE unset or 1 no group is created: (0, 1, device). A group already up is used as it is.
    """
    world_size = _environment_int("WORLD_SIZE", 1)
    local_rank = _environment_int("LOCAL_RANK", 0)
    device = resolve_device(device, local_rank if world_size > 1 else None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not (dist.is_available() and dist.is_initialized()):
        if not dist.is_available():
            raise RuntimeError(f"WORLD_SIZE={world_size}, but this torch build has no torch.distributed")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
        global _OWNED_GROUP
        _OWNED_GROUP = True
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), device
    return 0, 1, device


def teardown() -> None:
    """Destroy the process group init_from_environment created (one made by the caller is left alone)."""
    global _OWNED_GROUP
    if _OWNED_GROUP and dist.is_initialized():
        # gloo's worker threads free each finished collective's tensors, which needs the GIL, a moment after the
        # caller has moved on. The group's last reference (DDP's reducer, freed with the model) joins those threads
        # while holding the GIL: right after the last collective that waited forever (seen: a rank hung at exit after
        # its final checkpoint barrier). A pause with the GIL released lets them finish first.
        time.sleep(GLOO_SETTLE_SECONDS)
        dist.destroy_process_group()
    _OWNED_GROUP = False


def _environment_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an int, got {text!r}") from None
    if value < 0:
        raise ValueError(f"environment variable {name} must be non-negative, got {value}")
    return value


def resolve_device(device: Union[str, torch.device, None], local_rank: Optional[int] = None) -> torch.device:
    """auto / None → cuda when available, else cpu; "cuda" without an index → cuda:local_rank (or the current
    device). A ValueError for anything else that is not a usable device."""
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        given = device
        raise ParameterError("device", lambda name: f"{name('device')} must be auto, cpu, cuda or cuda:N, got "
                             f"{given!r}") from None
    if device.type not in ("cpu", "cuda"):  # meta, mps, xpu...: not a device ddpm_fast samples or trains on
        raise ParameterError("device", lambda name: f"{name('device')} must be auto, cpu, cuda or cuda:N, got "
                             f"{str(device)!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError("device", lambda name: f"{name(f'device={str(device)!r}')}, but CUDA is not "
                                 "available")
        if device.index is None:
            device = torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
    return device
