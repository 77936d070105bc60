import pytest
import torch

from ddpm_fast.kernels import philox as px
from ddpm_fast.vocabulary import STREAM_INITIAL, STREAM_REVERSE_STEP
from float64_reference import philox_noise64


def _kat_seed(key0: int, key1: int) -> torch.Tensor:
    value = (key1 << 32) | key0
    return torch.tensor(value - 2**64 if value >= 2**63 else value, dtype=torch.int64)


@pytest.mark.parametrize("counter, key, expected", [
    # Known-answer vectors of Random123 (kat_vectors, philox4x32 with 10 rounds).
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_reference_philox_known_answers(counter, key, expected):
    words = [torch.tensor([c], dtype=torch.int64) for c in counter]
    result = px.philox4x32_reference(_kat_seed(*key), *words)
    assert tuple(int(r) for r in result) == expected


def _kernel_noise(device, seed, shape, step=None, sample_offset=0, stream=STREAM_INITIAL, channels_last=False):
    step = torch.zeros(shape[0], dtype=torch.int64, device=device) if step is None else step.to(device)
    return torch.ops.ddpm_fast.philox_normal(torch.tensor([seed], device=device), step, list(shape), sample_offset,
                                            stream, channels_last)


@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 1, 1, 1), (3, 5, 4, 4), (2, 48, 3, 5), (0, 3, 4, 4)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_kernel_noise_matches_float64_reference(device, shape, channels_last):
    step = torch.arange(shape[0], dtype=torch.int64) * 37
    z = _kernel_noise(device, 1234, shape, step=step, sample_offset=5, channels_last=channels_last)
    assert z.dtype == torch.float32 and z.shape == shape
    assert z.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    expected = philox_noise64(1234, shape[0], step, STREAM_INITIAL, shape, device, sample_offset=5)
    torch.testing.assert_close(z.double(), expected, rtol=0, atol=2e-5)


def test_noise_is_layout_and_batch_invariant_and_deterministic(device):
    shape = (6, 3, 5, 7)
    full = _kernel_noise(device, 7, shape)
    assert torch.equal(full, _kernel_noise(device, 7, shape))
    assert torch.equal(full, _kernel_noise(device, 7, shape, channels_last=True))
    assert torch.equal(full[:2], _kernel_noise(device, 7, (2, 3, 5, 7)))
    assert torch.equal(full[2:5], _kernel_noise(device, 7, (3, 3, 5, 7), sample_offset=2))
    assert not torch.equal(full, _kernel_noise(device, 8, shape))


def test_noise_statistics(device):
    shape = (64, 3, 32, 32)
    z = _kernel_noise(device, 2024, shape).double().cpu()
    flat = z.flatten()
    assert abs(flat.mean().item()) < 0.01
    assert abs(flat.std().item() - 1) < 0.01
    assert abs((flat.abs() < 1).double().mean().item() - 0.6827) < 0.005
    assert abs((flat.abs() < 2).double().mean().item() - 0.9545) < 0.003
    assert abs((flat**4).mean().item() - 3) < 0.05  # kurtosis of a normal
    # Independence: across samples, channels, neighbouring positions (the four lanes of one Philox call),
    # steps and streams.
    def corr(a, b):
        return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].abs().item()
    assert corr(z[:32], z[32:]) < 0.02
    assert corr(z[:, 0], z[:, 1]) < 0.02
    assert corr(z[..., 0::2], z[..., 1::2]) < 0.02
    other_step = _kernel_noise(device, 2024, shape, step=torch.ones(64, dtype=torch.int64)).double().cpu()
    assert corr(z, other_step) < 0.02
    other_stream = _kernel_noise(device, 2024, shape, stream=STREAM_REVERSE_STEP).double().cpu()
    assert corr(z, other_stream) < 0.02
