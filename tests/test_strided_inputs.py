"""Property test: any batch/channel/spatial size and any strided view (slices, permutes) reads in place, correctly.

Views with stride_h != W * stride_w take the kernels' general addressing path (hw // W), which the dense NCHW and
channels-last cases never reach.
"""

import pytest
import torch

pytest.importorskip("hypothesis")  # a dev dependency; the lent GPU machine does not carry it
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import ddpm_fast as df
from ddpm_fast.vocabulary import STREAM_REVERSE_STEP
from float64_reference import p_step64, philox_noise64, q_sample64

S = df.NoiseSchedule.linear(1000)


@st.composite
def strided_batches(draw):
    batch = draw(st.integers(0, 3))
    channels = draw(st.integers(1, 6))
    height, width = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    step_h, step_w = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    layout = draw(st.sampled_from(["nchw", "channels_last", "hw_transposed"]))
    seed = draw(st.integers(0, 2**31))
    g = torch.Generator().manual_seed(seed)

    def make(channel_count):
        base = torch.randn(batch, channel_count, height * step_h, width * step_w, generator=g)
        if layout == "channels_last":
            base = base.contiguous(memory_format=torch.channels_last)
        elif layout == "hw_transposed":
            base = base.transpose(2, 3).contiguous().transpose(2, 3)  # W-major storage
        return base[:, :, ::step_h, ::step_w]

    t = torch.randint(0, 1000, (batch,), generator=g)
    return make(channels), make(channels), make(channels), t


@settings(max_examples=40, deadline=None)
@given(strided_batches())
def test_q_sample_on_strided_views(inputs):
    x0, noise, _, t = inputs
    x_t, _ = df.q_sample(x0, t, S, noise=noise)
    torch.testing.assert_close(x_t.double(), q_sample64(x0, t, S, noise), rtol=2e-6, atol=2e-6)


@settings(max_examples=40, deadline=None)
@given(strided_batches())
def test_p_step_on_strided_views(inputs):
    x_t, model_output, _, t = inputs
    out = df.p_step(model_output, t, x_t, S, seed=8)
    z = philox_noise64(8, x_t.shape[0], t, STREAM_REVERSE_STEP, tuple(x_t.shape), "cpu")
    torch.testing.assert_close(out.double(), p_step64(model_output, t, x_t, S, z), rtol=1e-5, atol=3e-5)
