"""The fused GroupNorm + time embedding + FiLM + SiLU kernel against an independent float64 statement of it.

The reference is torch's own group_norm in float64 with autograd for every gradient. Both launch plans (one tile per
group; groups split over several programs) are forced on small inputs, so the interpreter covers each code path.
"""

import itertools

import pytest
import torch
import torch.nn.functional as F

from ddpm_fast.kernels import cpu_reference
from ddpm_fast.kernels import group_norm as gn
from ddpm_fast.models import blocks

NAMES = ("emb", "weight", "bias", "scale", "shift")
PLANS = {
    "single_tile": dict(target_programs=1),
    # Three programs per group, each looping over several 16-element tiles (the interpreter pays per program).
    "split": dict(max_single_tile=0, split_tile=16),
}


def wide_tiles(plan):
    """The plan's keywords with 64-element split tiles (fewer interpreted iterations on the larger inputs)."""
    return dict(PLANS[plan], split_tile=64) if plan == "split" else PLANS[plan]


TOLERANCE = {torch.float32: 2e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2, torch.float64: 1e-10}


def make_inputs(shape, groups, present, dtype, device, channels_last=False, offset=0.0, spread=1.0):
    batch, channels = shape[:2]
    x = torch.randn(shape, dtype=torch.float64) * spread + offset
    x = x.to(device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    sizes = {"emb": (batch, channels), "weight": (channels,), "bias": (channels,), "scale": (batch, channels),
             "shift": (batch, channels)}
    extra = {name: (0.5 * torch.randn(sizes[name], dtype=torch.float64)).to(device=device, dtype=dtype)
             if present[name] else None for name in NAMES}
    if extra["weight"] is not None:
        extra["weight"] = extra["weight"] + 1.0
    return x, extra


def float64_reference(x, extra, groups, eps, silu, dy):
    """(y, {name: grad}) in float64 through torch's group_norm and autograd."""
    leaves = {"x": x.detach().double().requires_grad_()}
    leaves.update({k: v.detach().double().requires_grad_() for k, v in extra.items() if v is not None})
    z = leaves["x"]
    if "emb" in leaves:
        z = z + leaves["emb"][:, :, None, None]
    u = F.group_norm(z, groups, None, None, eps)
    if "weight" in leaves:
        u = u * leaves["weight"][:, None, None]
    if "bias" in leaves:
        u = u + leaves["bias"][:, None, None]
    if "scale" in leaves:
        u = u * (1 + leaves["scale"][:, :, None, None])
    if "shift" in leaves:
        u = u + leaves["shift"][:, :, None, None]
    y = F.silu(u) if silu else u
    y.backward(dy.double())
    return y.detach(), {k: v.grad for k, v in leaves.items()}


def assert_matches(actual, expected, dtype, what):
    tol = TOLERANCE[dtype]
    scale = expected.abs().max().item() if expected.numel() else 1.0
    torch.testing.assert_close(actual.double().cpu(), expected.cpu(), rtol=tol, atol=tol * max(scale, 1.0),
                               msg=lambda m: f"{what}: {m}")


def kernel_runs_on(device) -> bool:
    """The kernel runs on CUDA tensors, and on CPU tensors only in the interpreter (TRITON_INTERPRET=1)."""
    return torch.device(device).type == "cuda" or gn.launch.TRITON_INTERPRETED


@pytest.fixture(params=list(PLANS))
def plan(request, device):
    if request.param != "single_tile" and not kernel_runs_on(device):
        pytest.skip("a launch plan of the kernel, which runs on CPU tensors only in the interpreter; the torch "
                    "references of this path have no plans, and the single_tile case checks them")
    return request.param


def run_plan(x, extra, groups, eps, silu, dy, plan_kwargs):
    """(y, grads) of the kernel under a forced launch plan; where the kernel cannot run (CPU tensors without the
    interpreter), of the torch references, the path a CPU user gets."""
    args = [extra[k] for k in NAMES]
    if not kernel_runs_on(x.device):
        y, mean, rstd = gn.group_norm_act_reference(x, *args, groups, eps, silu)
        grads = gn.group_norm_act_backward_reference(dy, x, *args, mean, rstd, groups, silu)
        return y, dict(zip(("x",) + NAMES, grads))
    batch, channels = x.shape[:2]
    spatial = x[0, 0].numel()
    if "max_single_tile" in plan_kwargs:
        plan_kwargs = dict(plan_kwargs, target_programs=3 * batch * groups)
    plan = gn.plan_launch(batch, channels, spatial, groups, gn.launch.is_channels_last(x), **plan_kwargs)
    assert plan.single_tile == ("max_single_tile" not in plan_kwargs)
    y, mean, rstd = gn._launch_forward(x, *args, groups, eps, silu, plan)
    grads = gn._launch_backward(dy, x, *args, mean, rstd, groups, silu, plan)
    return y, dict(zip(("x",) + NAMES, grads))


def check_against_reference(x, extra, groups, eps, silu, dy, y, grads):
    ref_y, ref_grads = float64_reference(x, extra, groups, eps, silu, dy)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert y.is_contiguous(memory_format=torch.channels_last) == x.is_contiguous(memory_format=torch.channels_last)
    assert_matches(y, ref_y, x.dtype, "y")
    for name, expected in ref_grads.items():
        assert grads[name].shape == expected.shape, name
        assert grads[name].dtype == (x.dtype if name == "x" else extra[name].dtype), name
        assert_matches(grads[name], expected, x.dtype, f"d{name}")


@pytest.mark.parametrize("flags", list(itertools.product((False, True), repeat=6)),
                         ids=lambda f: "".join("1" if v else "0" for v in f))
def test_every_option_combination(device, plan, flags):
    present, silu = dict(zip(NAMES, flags[:5])), flags[5]
    x, extra = make_inputs((1, 6, 5, 7), 2, present, torch.float32, device)
    dy = torch.randn_like(x)
    y, grads = run_plan(x, extra, 2, 1e-5, silu, dy, PLANS[plan])
    check_against_reference(x, extra, 2, 1e-5, silu, dy, y, grads)


@pytest.mark.parametrize("flags", list(itertools.product((False, True), repeat=6)),
                         ids=lambda f: "".join("1" if v else "0" for v in f))
@pytest.mark.parametrize("dtype,channels_last", [(torch.float32, True), (torch.bfloat16, False),
                                                 (torch.bfloat16, True), (torch.float16, False),
                                                 (torch.float16, True)], ids=["fp32-nhwc", "bf16-nchw", "bf16-nhwc",
                                                                              "fp16-nchw", "fp16-nhwc"])
def test_every_option_combination_in_every_dtype_and_layout(device, dtype, channels_last, flags):
    # The rest of the cross product (fp32 NCHW is above, with both plans), on the single-tile plan.
    present, silu = dict(zip(NAMES, flags[:5])), flags[5]
    x, extra = make_inputs((1, 6, 3, 5), 2, present, dtype, device, channels_last)
    dy = torch.randn_like(x)
    y, grads = run_plan(x, extra, 2, 1e-5, silu, dy, PLANS["single_tile"])
    check_against_reference(x, extra, 2, 1e-5, silu, dy, y, grads)


ALL = dict.fromkeys(NAMES, True)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_dtypes_and_layouts_odd_shape(device, dtype, channels_last, plan):
    # C = 48 in 16 groups of 3 channels (not a power of two), 7×9 positions.
    x, extra = make_inputs((1, 48, 7, 9), 16, ALL, dtype, device, channels_last)
    dy = torch.randn_like(x)
    y, grads = run_plan(x, extra, 16, 1e-6, True, dy, wide_tiles(plan))
    check_against_reference(x, extra, 16, 1e-6, True, dy, y, grads)


def test_groups_wider_than_one_tile(device):
    # 24 channels in one group: the split plan walks the group's channels in blocks of 16.
    x, extra = make_inputs((1, 24, 5, 5), 1, ALL, torch.float32, device, channels_last=True)
    dy = torch.randn_like(x)
    y, grads = run_plan(x, extra, 1, 1e-5, True, dy, dict(max_single_tile=0, split_tile=32))
    check_against_reference(x, extra, 1, 1e-5, True, dy, y, grads)


def test_gradient_in_another_layout_than_x(device):
    x, extra = make_inputs((1, 8, 6, 5), 2, ALL, torch.float32, device, channels_last=True)
    dy = torch.randn(x.shape, device=device)  # NCHW while x is NHWC
    y, grads = run_plan(x, extra, 2, 1e-5, True, dy, PLANS["split"])
    check_against_reference(x, extra, 2, 1e-5, True, dy, y, grads)


@pytest.mark.parametrize("shape,groups", [((1, 32, 8, 8), 8), ((1, 6, 1, 1), 3), ((2, 4, 9), 2), ((3, 8), 4)],
                         ids=["batch1", "1x1", "3d", "2d"])
def test_public_function_with_autograd(device, shape, groups):
    x, extra = make_inputs(shape, groups, ALL, torch.float32, device)
    leaves = [x.requires_grad_()] + [extra[k].requires_grad_() for k in NAMES]
    y = gn.group_norm_act(x, groups, extra["weight"], extra["bias"], emb=extra["emb"], scale=extra["scale"],
                          shift=extra["shift"], eps=1e-5)
    dy = torch.randn_like(y)
    y.backward(dy)
    x4 = x.detach().reshape(shape[0], shape[1], -1, 1)
    ref_y, ref_grads = float64_reference(x4, extra, groups, 1e-5, True, dy.reshape(x4.shape))
    assert_matches(y.reshape(x4.shape), ref_y, torch.float32, "y")
    for name, leaf in zip(("x",) + NAMES, leaves):
        assert_matches(leaf.grad.reshape(ref_grads[name].shape), ref_grads[name], torch.float32, f"d{name}")


def test_batch_one_splits_each_group_over_many_programs():
    # ddpm-cifar10's first norm at batch 1: 32 (sample, group) pairs must not mean 32 programs.
    plan = gn.plan_launch(1, 128, 32 * 32, 32, channels_last=True)
    assert not plan.single_tile and plan.num_splits * 32 > 32 * 4
    assert gn.plan_launch(512, 128, 32 * 32, 32, channels_last=True).single_tile


def test_backward_plans_keep_to_tiles_that_do_not_spill(monkeypatch):
    # What tests/launch_resources.py measured on sm_90, as the GPU's planner applies it (interpreter off).
    monkeypatch.setattr(gn.launch, "TRITON_INTERPRETED", False)
    wide = gn.default_plan(16, 512, 256, 32, True, backward=True)  # 16 channels x 256 positions per group
    assert not wide.single_tile and wide.block_c * wide.block_hw <= gn.MAX_SPLIT_TILE_BACKWARD
    assert gn.default_plan(16, 512, 256, 32, True).single_tile  # the forward holds it in one tile
    narrow = gn.default_plan(16, 128, 1024, 32, True, backward=True)  # 4 x 1024: one tile, 8 warps
    assert narrow.single_tile and narrow.num_warps == 8
    assert gn.default_plan(16, 128, 256, 32, True, backward=True).num_warps == 16  # 4 x 256
    assert gn.default_plan(16, 128, 256, 32, True).num_warps == 4


def test_large_non_zero_mean_input(device, plan):
    # mean 1e4, std 1: E[x²] − E[x]² would lose every digit of the variance in float32.
    x, extra = make_inputs((1, 8, 9, 7), 2, ALL, torch.float32, device, offset=1e4)
    dy = torch.randn_like(x)
    y, grads = run_plan(x, extra, 2, 1e-6, True, dy, wide_tiles(plan))
    ref_y, ref_grads = float64_reference(x, extra, 2, 1e-6, True, dy)
    torch.testing.assert_close(y.double().cpu(), ref_y.cpu(), rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(grads["x"].double().cpu(), ref_grads["x"].cpu(), rtol=5e-3, atol=5e-3)


def test_empty_batch(device):
    x = torch.randn(0, 8, 4, 4, device=device, requires_grad=True)
    weight = torch.ones(8, device=device, requires_grad=True)
    emb = torch.randn(0, 8, device=device, requires_grad=True)
    y = gn.group_norm_act(x, 4, weight, None, emb=emb)
    assert y.shape == (0, 8, 4, 4)
    y.sum().backward()
    assert x.grad.shape == x.shape and emb.grad.shape == emb.shape
    assert torch.equal(weight.grad, torch.zeros(8, device=device))


def test_deterministic_bits(device, plan):
    x, extra = make_inputs((1, 6, 11, 13), 2, ALL, torch.float32, device)
    dy = torch.randn_like(x)
    first = run_plan(x, extra, 2, 1e-5, True, dy, wide_tiles(plan))
    second = run_plan(x, extra, 2, 1e-5, True, dy, wide_tiles(plan))
    assert torch.equal(first[0], second[0])
    for name in first[1]:
        assert torch.equal(first[1][name], second[1][name]), name


def test_gradcheck_float64(device):
    x, extra = make_inputs((2, 4, 3, 2), 2, ALL, torch.float64, device)
    inputs = [x.requires_grad_()] + [extra[k].requires_grad_() for k in NAMES]

    def fn(x, emb, weight, bias, scale, shift):
        return gn.group_norm_act(x, 2, weight, bias, emb=emb, scale=scale, shift=shift, eps=1e-5)

    # fast_mode checks random projections of the Jacobian: the same failures, far fewer interpreted launches.
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, fast_mode=True)


def test_reference_branch_matches_kernel():
    # The CPU fallback (and torch.compile's traced branch) is the same function.
    if not kernel_runs_on("cpu"):
        pytest.skip("the kernel runs on CPU tensors only under TRITON_INTERPRET=1 (CI's second run sets it)")
    x, extra = make_inputs((2, 12, 5, 7), 4, ALL, torch.float32, "cpu")
    args = [extra[k] for k in NAMES]
    y, mean, rstd = gn.group_norm_act_reference(x, *args, 4, 1e-5, True)
    y_kernel, mean_kernel, rstd_kernel = gn._launch_forward(x, *args, 4, 1e-5, True)
    torch.testing.assert_close(y, y_kernel, rtol=1e-5, atol=1e-5)
    dy = torch.randn_like(x)
    for ours, theirs in zip(gn.group_norm_act_backward_reference(dy, x, *args, mean, rstd, 4, True),
                            gn._launch_backward(dy, x, *args, mean_kernel, rstd_kernel, 4, True)):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_compiles_fullgraph_with_gradients():
    x, extra = make_inputs((2, 8, 4, 4), 4, ALL, torch.float32, "cpu")
    leaves = [x.requires_grad_()] + [extra[k].requires_grad_() for k in NAMES]

    def fn(x, emb, weight, bias, scale, shift):
        return gn.group_norm_act(x, 4, weight, bias, emb=emb, scale=scale, shift=shift)

    compiled = torch.compile(fn, fullgraph=True)
    y = compiled(*leaves)
    grads = torch.autograd.grad(y.square().sum(), leaves)
    y_eager = fn(*leaves)
    eager_grads = torch.autograd.grad(y_eager.square().sum(), leaves)
    torch.testing.assert_close(y, y_eager, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_bad_inputs_name_the_argument():
    x = torch.randn(2, 12, 4, 4)
    with pytest.raises(ValueError, match="not divisible by num_groups=5"):
        gn.group_norm_act(x, 5)
    with pytest.raises(ValueError, match="num_groups"):
        gn.group_norm_act(x, 0)
    with pytest.raises(TypeError, match="num_groups"):
        gn.group_norm_act(x, 4.0)
    with pytest.raises(ValueError, match="emb must have shape"):
        gn.group_norm_act(x, 4, emb=torch.randn(2, 6))
    with pytest.raises(ValueError, match="weight must have shape"):
        gn.group_norm_act(x, 4, torch.randn(6))
    with pytest.raises(TypeError, match="scale must be a floating-point tensor"):
        gn.group_norm_act(x, 4, scale=torch.ones(2, 12, dtype=torch.int64))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        gn.group_norm_act(x.long(), 4)
    with pytest.raises(ValueError, match="x must be"):
        gn.group_norm_act(torch.randn(12), 4)
    with pytest.raises(ValueError, match="eps"):
        gn.group_norm_act(x, 4, eps=0.0)
    # The unchecked backward op still refuses statistics it would index out of bounds.
    y, mean, rstd = gn.group_norm_act_op(x, None, None, None, None, None, 4, 1e-5, True)
    with pytest.raises(ValueError, match="rstd must be"):
        torch.ops.ddpm_fast.group_norm_act_backward(y, x, None, None, None, None, None, mean, rstd[:1], 4, True)


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 64], ids=["split", "single_tile"])
def test_cuda_graph_capture_and_replay(batch):
    # The sampler (issue 4) captures whole steps in CUDA graphs: the op must launch without host syncs.
    x, extra = make_inputs((batch, 128, 32, 32), 32, ALL, torch.bfloat16, "cuda", channels_last=True)
    args = [extra[k] for k in NAMES]
    torch.ops.ddpm_fast.group_norm_act(x, *args, 32, 1e-6, True)  # warm-up: compile the kernels outside capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = torch.ops.ddpm_fast.group_norm_act(x, *args, 32, 1e-6, True)[0]
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    expected = torch.ops.ddpm_fast.group_norm_act(x, *args, 32, 1e-6, True)[0]
    assert torch.equal(captured, expected)


def test_strided_views(device, plan):
    # x a view whose H and W cannot be walked with one stride (copied once); emb/scale/shift as chunk() views of a
    # projection, as the U-Net's FiLM passes them (read in place through their strides).
    base = torch.randn(2, 6, 5, 14, dtype=torch.float64).to(device=device, dtype=torch.float32)
    x = base[:, :, :, ::2]
    projection = torch.randn(2, 18, device=device)
    emb, scale, shift = projection.chunk(3, dim=1)
    extra = {"emb": emb, "weight": torch.randn(6, device=device), "bias": torch.randn(6, device=device),
             "scale": scale, "shift": shift}
    assert not emb.is_contiguous() and not x.is_contiguous()
    dy = torch.randn(x.shape, device=device).transpose(2, 3).contiguous().transpose(2, 3)  # H/W-transposed strides
    y, grads = run_plan(x, extra, 2, 1e-5, True, dy, PLANS[plan])
    check_against_reference(x, extra, 2, 1e-5, True, dy, y, grads)


# ---------------------------------------------------------------------------------- statistics at large means

MEANS = [1e2, 1e3, 1e4]
STAT_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def _large_mean_case(dtype, device, channels_last, mean):
    """x = mean + N(0, 1) in `dtype` (NCHW or channels-last), affine weight and bias, and a dy."""
    generator = torch.Generator().manual_seed(int(mean))
    x = (mean + torch.randn((2, 8, 5, 7), generator=generator, dtype=torch.float64)).to(dtype)
    weight = (1 + 0.5 * torch.randn(8, generator=generator, dtype=torch.float64)).to(dtype)
    bias = (0.5 * torch.randn(8, generator=generator, dtype=torch.float64)).to(dtype)
    dy = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(dtype)
    x, weight, bias, dy = (t.to(device) for t in (x, weight, bias, dy))
    if channels_last:
        x, dy = x.contiguous(memory_format=torch.channels_last), dy.contiguous(memory_format=torch.channels_last)
    return x, weight, bias, dy


def _two_pass_float64(x, weight, bias):
    """GroupNorm (2 groups) in float64 with centred two-pass statistics: torch's own float64 group norm cancels at
    large means (about 1e-7 off at mean 1e4), so it cannot be the yardstick here."""
    z = x.reshape(x.shape[0], 2, -1)
    deviation = z - z.mean(-1, keepdim=True)
    n = deviation * torch.rsqrt(deviation.square().mean(-1, keepdim=True) + 1e-6)
    return n.reshape(x.shape) * weight[:, None, None] + bias[:, None, None]


def _errors(function, x, weight, bias, dy):
    """Largest |y − y64| and |dx − dx64| of function(x, weight, bias) against float64 autograd of a two-pass group
    norm on the same (already rounded) values."""
    x64 = x.detach().double().requires_grad_()
    expected = _two_pass_float64(x64, weight.double(), bias.double())
    expected.backward(dy.double())
    leaf = x.detach().clone().requires_grad_()
    y = function(leaf, weight, bias)
    y.backward(dy)
    return ((y.double() - expected).abs().max().item(), (leaf.grad.double() - x64.grad).abs().max().item())


def _torch_nchw_errors(x, weight, bias, dy):
    """What torch's own group_norm gets in this dtype on NCHW input: the bound (the issue's "2x torch")."""
    return _errors(lambda v, w, b: F.group_norm(v, 2, w, b, 1e-6), x.contiguous(), weight, bias, dy.contiguous())


def _bound(x, weight, bias, dy):
    y_error, dx_error = _torch_nchw_errors(x, weight, bias, dy)
    floor = 1e-12 if x.dtype == torch.float64 else 1e-6
    return 2 * y_error + floor, 2 * dx_error + floor


def _ours(v, w, b):
    return gn.group_norm_act(v, 2, w, b, eps=1e-6, silu=False)


@pytest.mark.parametrize("mean", MEANS)
@pytest.mark.parametrize("dtype", STAT_DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_large_means(device, mean, dtype, channels_last):
    # The path this run takes: the kernel (compiled on a GPU, under the interpreter on a CPU) or, on a CPU without
    # the interpreter, the torch references a CPU user gets.
    x, weight, bias, dy = _large_mean_case(dtype, device, channels_last, mean)
    y_error, dx_error = _errors(_ours, x, weight, bias, dy)
    y_bound, dx_bound = _bound(x.cpu(), weight.cpu(), bias.cpu(), dy.cpu())
    if device.type == "cpu" and dtype == torch.bfloat16 and gn.launch.TRITON_INTERPRETED:
        # The interpreter casts float32 to bf16 by truncation (triton's interpreter _convert_float), compiled Triton
        # rounds to nearest: one more output ulp (|y| < 16 here: 2**-4) on this path only.
        y_bound += 2.0 ** -4
    assert y_error <= y_bound and dx_error <= dx_bound, (y_error, y_bound, dx_error, dx_bound)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_large_means_under_torch_compile_on_cpu(channels_last):
    # torch.compile of a model on a CPU compiles the reference branch (inductor's own reductions).
    x, weight, bias, dy = _large_mean_case(torch.float32, "cpu", channels_last, 1e4)
    compiled = torch.compile(_ours, fullgraph=True, dynamic=False)
    y_error, dx_error = _errors(compiled, x, weight, bias, dy)
    y_bound, dx_bound = _bound(x, weight, bias, dy)
    assert y_error <= y_bound and dx_error <= dx_bound, (y_error, y_bound, dx_error, dx_bound)


@pytest.mark.parametrize("film", [False, True], ids=["emb", "film"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_a_block_trains_through_torch_group_norm_on_the_cpu_path(monkeypatch, film, channels_last):
    """On the CPU path GroupNormAct calls the forward reference and autograd differentiates torch's own group norm
    (faster there than the op's backward reference): its gradients equal the op's, and the op is never called."""
    torch.manual_seed(0)
    module = blocks.GroupNormAct(4, 8).double()
    with torch.no_grad():
        module.weight.normal_()
        module.bias.normal_()
    present = dict(emb=not film, weight=True, bias=True, scale=film, shift=film)
    x, extra = make_inputs((2, 8, 5, 3), 4, present, torch.float64, "cpu", channels_last, offset=3.0)
    inputs = [t.requires_grad_() for t in (x, extra["emb"], extra["scale"], extra["shift"]) if t is not None]
    dy = torch.randn(x.shape, dtype=torch.float64)
    with cpu_reference():
        expected = torch.autograd.grad(
            (gn.group_norm_act_op(x, extra["emb"], module.weight, module.bias, extra["scale"], extra["shift"], 4,
                                  module.eps, True)[0] * dy).sum(), inputs + [module.weight, module.bias])

        def refused(*args):
            raise AssertionError("the custom op was called on the CPU path")

        monkeypatch.setattr(blocks, "group_norm_act_op", refused)
        y = module(x, extra["emb"], scale=extra["scale"], shift=extra["shift"])
        grads = torch.autograd.grad((y * dy).sum(), inputs + [module.weight, module.bias])
    for ours, op in zip(grads, expected):
        torch.testing.assert_close(ours, op, rtol=1e-9, atol=1e-9)


def test_a_block_on_an_image_with_no_positions_has_zero_gradients():
    """Autograd through torch's group norm gives NaN for the weight of an empty image; such a block takes the op."""
    module = blocks.GroupNormAct(4, 8)
    x = torch.zeros(2, 8, 0, 4, requires_grad=True)
    with cpu_reference():
        module(x).sum().backward()
    assert torch.equal(module.weight.grad, torch.zeros(8)) and torch.equal(module.bias.grad, torch.zeros(8))
