"""torch.library.opcheck on every custom op of torch.ops.ddpm_fast: the schema is honest (no output aliases an input
or another output, no input is mutated unannounced), fake tensors and AOT dispatch agree with the real op, and the
autograd registration is complete.

The cases cover the options that change an op's output path (prediction and variance types, clipping, noise given,
drawn from a Philox seed or absent, guidance, a learned-variance output, layouts and dtypes). CI runs this file on
both CPU paths: the torch references (TRITON_INTERPRET=0, what a CPU user gets) and the Triton kernels in the
interpreter (TRITON_INTERPRET=1); on a GPU the CUDA cases run the compiled kernels.
"""

import os

import pytest
import torch

import ddpm_fast as df
from ddpm_fast.kernels import PREDICTION_TYPES, VARIANCE_TYPES, launch
from ddpm_fast.kernels import ops as _ops  # noqa: F401 — registers torch.ops.ddpm_fast.*
from ddpm_fast.vocabulary import STREAM_INITIAL, STREAM_REVERSE_STEP
from ddpm_fast.sampling.dpm_solver import SolverOptions, dpm_solver_chain, dpm_solver_table, dpm_solver_timesteps
from ddpm_fast.sampling.unipc import unipc_orders, unipc_table

T = 50
SHAPE = (2, 3, 5, 6)  # odd sizes: partial tiles and a spatial size that is not a multiple of 4
EPS, SAMPLE, V = PREDICTION_TYPES["epsilon"], PREDICTION_TYPES["sample"], PREDICTION_TYPES["v_prediction"]
FIXED_SMALL, FIXED_LARGE = VARIANCE_TYPES["fixed_small"], VARIANCE_TYPES["fixed_large"]
LEARNED = VARIANCE_TYPES["learned_range"]


def _randn(shape, device, dtype=torch.float32, channels_last=False, seed=0):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device=device, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _schedule(device):
    return df.NoiseSchedule.linear(T).buffers(device)


def _t(device, batch=SHAPE[0]):
    return torch.tensor([0, 37, 12, 49][:batch], dtype=torch.int64, device=device)  # t = 0: no noise


def _seed(device):
    return torch.tensor([1234], device=device)


# --------------------------------------------------------------------------------------------- cases per op


def q_sample_cases(device):
    rows = _schedule(device)
    ac, one_minus = rows["sqrt_alphas_cumprod"], rows["sqrt_one_minus_alphas_cumprod"]
    x0 = _randn(SHAPE, device).requires_grad_()
    noise = _randn(SHAPE, device, seed=1).requires_grad_()
    x0_nhwc_bf16 = _randn(SHAPE, device, torch.bfloat16, channels_last=True)
    yield "fp32", (x0, _t(device), ac, one_minus, noise)
    yield "bf16-channels-last", (x0_nhwc_bf16, _t(device), ac, one_minus, _randn(SHAPE, device, seed=1))
    yield "2d-empty", (torch.empty(0, 4, device=device), _t(device, 0), ac, one_minus, torch.empty(0, 4, device=device))


def q_sample_philox_cases(device):
    rows = _schedule(device)
    ac, one_minus = rows["sqrt_alphas_cumprod"], rows["sqrt_one_minus_alphas_cumprod"]
    yield "fp32-grad", (_randn(SHAPE, device).requires_grad_(), _t(device), ac, one_minus, _seed(device), 3)
    yield "bf16-channels-last", (_randn(SHAPE, device, torch.bfloat16, channels_last=True), _t(device), ac,
                                 one_minus, _seed(device), 0)


def p_step_cases(device):
    table = _schedule(device)["coefficient_table"]
    x, t, seed = _randn(SHAPE, device, seed=1), _t(device), _seed(device)
    out = _randn(SHAPE, device, seed=2)
    noise = _randn(SHAPE, device, seed=3)
    learned = _randn((SHAPE[0], 2 * SHAPE[1], *SHAPE[2:]), device, seed=4).clamp(-1, 1)
    guided = _randn((2 * SHAPE[0], *SHAPE[1:]), device, seed=5)
    w = torch.tensor([3.0], device=device)
    yield "epsilon-given-noise", (out, t, x, table, noise, None, 0, EPS, FIXED_SMALL, False, 1.0)
    yield "epsilon-clip-philox", (out, t, x, table, None, seed, 2, EPS, FIXED_LARGE, True, 1.0)
    yield "sample-no-noise", (out, t, x, table, None, None, 0, SAMPLE, FIXED_SMALL, False, 1.0)
    yield "v-learned-range-philox", (learned, t, x, table, None, seed, 0, V, LEARNED, False, 1.0)
    yield "sample-guided-philox", (guided, t, x, table, None, seed, 0, SAMPLE, FIXED_SMALL, True, 1.0, w)
    yield "epsilon-bf16-channels-last", (_randn(SHAPE, device, torch.bfloat16, True, seed=2), t,
                                         _randn(SHAPE, device, channels_last=True, seed=1), table, None, seed, 0,
                                         EPS, FIXED_SMALL, False, 1.0)


def ddim_step_cases(device):
    alphas = _schedule(device)["alphas_cumprod_float64"]
    x, t, seed = _randn(SHAPE, device, seed=1), _t(device), _seed(device)
    t_prev = torch.tensor([-1, 20], device=device)  # -1: the chain's end (ᾱ = 1)
    out = _randn(SHAPE, device, seed=2)
    guided = _randn((2 * SHAPE[0], *SHAPE[1:]), device, seed=5)
    w = torch.tensor([2.0], device=device)
    yield "epsilon-eta0", (out, t, t_prev, x, alphas, None, seed, 0, EPS, 0.0, False, 1.0)
    yield "sample-given-noise", (out, t, t_prev, x, alphas, _randn(SHAPE, device, seed=3), None, 0, SAMPLE, 1.0,
                                 False, 1.0)
    yield "v-clip-clipped-eps-philox", (out, t, t_prev, x, alphas, None, seed, 1, V, 0.5, True, 1.0, None, True)
    yield "sample-guided", (guided, t, t_prev, x, alphas, None, seed, 0, SAMPLE, 0.5, False, 1.0, w)


def dpm_solver_step_cases(device):
    chain = dpm_solver_timesteps(T, 4, "linspace")
    ode = dpm_solver_table(df.NoiseSchedule.linear(T).alphas_cumprod, chain, False).to(device)
    sde = dpm_solver_table(df.NoiseSchedule.linear(T).alphas_cumprod, chain, True).to(device)
    x, t, seed = _randn(SHAPE, device, seed=1), _t(device), _seed(device)
    column = torch.tensor([3, 1], device=device)  # the last (first-order, to σ = 0) and a second-order column
    prev = _randn(SHAPE, device, seed=6)
    out = _randn(SHAPE, device, seed=2)
    learned = _randn((SHAPE[0], 2 * SHAPE[1], *SHAPE[2:]), device, seed=4)
    guided = _randn((2 * SHAPE[0], *SHAPE[1:]), device, seed=5)
    w = torch.tensor([2.0], device=device)
    # x0-prediction returns the model's own values as its x0 output: the case where a view of an input slipped out.
    yield "sample-ode", (out, t, column, x, prev, ode, None, None, 0, SAMPLE, False, 1.0)
    yield "sample-learned-variance-sde", (learned, t, column, x, prev, sde, None, seed, 0, SAMPLE, False, 1.0)
    yield "sample-bf16-channels-last", (_randn(SHAPE, device, torch.bfloat16, True, seed=2), t, column,
                                        _randn(SHAPE, device, channels_last=True, seed=1), prev, ode, None, None, 0,
                                        SAMPLE, False, 1.0)
    yield "sample-clip-given-noise", (out, t, column, x, prev, sde, _randn(SHAPE, device, seed=3), None, 0, SAMPLE,
                                      True, 1.0)
    yield "epsilon-sde-philox", (out, t, column, x, prev, sde, None, seed, 5, EPS, False, 1.0)
    yield "v-clip-guided", (guided, t, column, x, prev, ode, None, None, 0, V, True, 1.0, w)
    # solver_order=3: a second x0 history (read where the column's x0_prev2_coef is not 0)
    third = dpm_solver_table(df.NoiseSchedule.linear(T).alphas_cumprod, dpm_solver_timesteps(T, 5, "linspace"), True,
                             SolverOptions(solver_order=3)).to(device)
    column3 = torch.tensor([2, 3], device=device)  # two third-order columns
    yield "epsilon-third-order-sde", (out, t, column3, x, prev, third, None, seed, 0, EPS, False, 1.0, None,
                                      _randn(SHAPE, device, seed=7))


def unipc_step_cases(device):
    schedule = df.NoiseSchedule.linear(T)
    _, alpha, sigma = dpm_solver_chain(schedule.alphas_cumprod, 5)
    table = unipc_table(alpha, sigma, unipc_orders(5, 3, True, True)).to(device)
    x, last = _randn(SHAPE, device, seed=1), _randn(SHAPE, device, seed=6)
    history = [_randn(SHAPE, device, seed=seed) for seed in (7, 8, 9)]
    column = torch.tensor([4, 2], device=device)  # the last step (to σ = 0) and a corrected third-order one
    out = _randn(SHAPE, device, seed=2)
    guided = _randn((2 * SHAPE[0], *SHAPE[1:]), device, seed=5)
    w = torch.tensor([2.0], device=device)
    # x0-prediction returns the model's own values as its x0 output: the case where a view of an input slips out.
    yield "sample-order1", (out, column, x, last, history[0], None, None, table, SAMPLE, False, 1.0)
    yield "epsilon-order3", (out, column, x, last, *history, table, EPS, False, 1.0)
    yield "v-clip-guided-order2", (guided, column, x, last, history[0], history[1], None, table, V, True, 1.0, w)
    yield "sample-bf16-channels-last", (_randn(SHAPE, device, torch.bfloat16, True, seed=2), column,
                                        _randn(SHAPE, device, channels_last=True, seed=1), last, *history, table,
                                        SAMPLE, False, 1.0)


def philox_normal_cases(device):
    steps = torch.tensor([7, 0], device=device)
    yield "nchw", (_seed(device), steps, list(SHAPE), 0, STREAM_REVERSE_STEP, False)
    yield "channels-last-offset", (_seed(device), steps, list(SHAPE), 5, STREAM_INITIAL, True)


def _group_norm_inputs(device, channels_last=False, dtype=torch.float32, shape=(2, 4, 3, 5), grad=True):
    batch, channels = shape[:2]
    x = _randn(shape, device, dtype, channels_last and len(shape) == 4)
    rows = [_randn((batch, channels), device, dtype, seed=i) for i in (1, 2, 3)]  # emb, scale, shift
    weight, bias = _randn((channels,), device, dtype, seed=4), _randn((channels,), device, dtype, seed=5)
    if grad:
        for tensor in (x, weight, bias, *rows):
            tensor.requires_grad_()
    return x, rows[0], weight, bias, rows[1], rows[2]


def group_norm_act_cases(device):
    x, emb, weight, bias, scale, shift = _group_norm_inputs(device)
    yield "all-terms-silu", (x, emb, weight, bias, scale, shift, 2, 1e-5, True)
    x, emb, weight, bias, scale, shift = _group_norm_inputs(device, channels_last=True)
    yield "channels-last-affine-only", (x, None, weight, bias, None, None, 4, 1e-5, False)
    x, emb, weight, bias, scale, shift = _group_norm_inputs(device, dtype=torch.bfloat16, shape=(3, 6, 7))
    yield "bf16-1d-film", (x, emb, None, None, scale, shift, 3, 1e-6, True)


def group_norm_act_backward_cases(device):
    for name, (x, emb, weight, bias, scale, shift, groups, eps, silu) in group_norm_act_cases(device):
        inputs = [t.detach() if t is not None else None for t in (x, emb, weight, bias, scale, shift)]
        _, mean, rstd = torch.ops.ddpm_fast.group_norm_act(*inputs, groups, eps, silu)
        dy = _randn(x.shape, device, x.dtype, channels_last=launch.is_channels_last(x) if x.dim() == 4 else False,
                    seed=9)
        yield name, (dy, *inputs, mean, rstd, groups, silu)


CASES = {
    "q_sample": q_sample_cases,
    "q_sample_philox": q_sample_philox_cases,
    "p_step": p_step_cases,
    "ddim_step": ddim_step_cases,
    "dpm_solver_step": dpm_solver_step_cases,
    "unipc_step": unipc_step_cases,
    "philox_normal": philox_normal_cases,
    "group_norm_act": group_norm_act_cases,
    "group_norm_act_backward": group_norm_act_backward_cases,
}


def _case_ids():
    return [(op, name) for op, cases in CASES.items() for name, _ in cases("cpu")]


def test_every_registered_op_is_checked():
    registered = {name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names()
                  if name.startswith("ddpm_fast::")}
    assert registered == set(CASES)


def test_the_path_is_the_one_asked_for():
    # TRITON_INTERPRET=1: the kernels run in the interpreter; explicitly 0: the torch references, as for a CPU user.
    if os.environ.get("TRITON_INTERPRET") in ("0", "1"):
        assert launch.TRITON_INTERPRETED == (os.environ["TRITON_INTERPRET"] == "1")


@pytest.mark.parametrize("op_name,case", _case_ids(), ids=[f"{op}-{case}" for op, case in _case_ids()])
def test_opcheck(device, op_name, case):
    args = dict(CASES[op_name](device))[case]
    torch.library.opcheck(getattr(torch.ops.ddpm_fast, op_name), args)
