"""Every kernel built for sm_90 with this triton and its ptxas: the launch configurations real models get, checked for
registers and spills, and the option variants no model launches, checked to compile.

Run as a script with TRITON_INTERPRET unset (tests/test_gpu_compile.py does, once for both of its tests): it asks the
launchers' own host-side planners (`launch.tile_config`, `group_norm.default_plan`) which tiles and warps they pick for
the GroupNorm sites of ddpm-cifar10 (32×32) and ddpm-256 (256×256) at batch 1, 16, 128 and 512, in both layouts, forward
and backward, and for the elementwise kernels on their images (every option product; UniPC with clipping, its most
registers); compiles each distinct configuration with triton.compile (no GPU needed) and reads the cubin's resource
usage (registers, stack frame), and ptxas's own report (`ptxas -v`: spill stores and loads) where the frame is not
empty. Then the variants: every GroupNorm flag set and the float64 build (gradcheck's), and the elementwise kernels on a
tile that is not spatially flat (strided images), each option value once: the option products are built on the flat
tiles above, and flatness changes only the address arithmetic. Prints one line per build and exits 1 if any fails to
compile or any launch configuration uses a stack frame (a spill, or local memory of another kind: neither belongs in
these kernels).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import itertools
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import ddpm_fast as df
from ddpm_fast.kernels import launch
from ddpm_fast.kernels import group_norm as gn
from ddpm_fast.kernels.philox import philox_normal_kernel
from ddpm_fast.kernels.q_sample import q_sample_kernel
from ddpm_fast.kernels.dpm_solver import dpm_solver_step_kernel
from ddpm_fast.kernels.reverse_step import ddim_step_kernel, p_step_kernel
from ddpm_fast.kernels.unipc import unipc_step_kernel
from ddpm_fast.models.blocks import GroupNormAct

MODELS = (("ddpm-cifar10", 32), ("ddpm-256", 256))
BATCHES = (1, 16, 128, 512)
CAPABILITY = 90
FLOATS = {"clip_range", "eta", "eps"}


def group_norm_pointers(element: str) -> dict:
    """Pointer types of a GroupNorm launch whose tensors are `element` (statistics are always float32)."""
    tensors = ("x_ptr", "emb_ptr", "weight_ptr", "bias_ptr", "scale_ptr", "shift_ptr", "y_ptr", "dy_ptr", "dx_ptr")
    statistics = ("mean_ptr", "rstd_ptr", "part_count_ptr", "part_mean_ptr", "part_m2_ptr", "group_coef_ptr",
                  "part_ptr")
    return {**{name: element for name in tensors}, **{name: "*fp32" for name in statistics}}


# The GPU default (bf16) and float32 models (dtype=torch.float32); fp16 holds the same registers as bf16.
GROUP_NORM_DTYPES = ("*bf16", "*fp32")
P_STEP_POINTERS = dict(model_ptr="*bf16", model_var_ptr="*bf16", x_ptr="*fp32", noise_ptr="*fp32", out_ptr="*fp32",
                       t_ptr="*i64", table_ptr="*fp32", seed_ptr="*i64", guidance_ptr="*fp32")
DDIM_POINTERS = dict(model_ptr="*bf16", x_ptr="*fp32", noise_ptr="*fp32", out_ptr="*fp32", t_ptr="*i64",
                     t_prev_ptr="*i64", alphas_cumprod_ptr="*fp64", seed_ptr="*i64", guidance_ptr="*fp32")
DPM_POINTERS = dict(model_ptr="*bf16", x_ptr="*fp32", x0_prev_ptr="*fp32", x0_prev2_ptr="*fp32", noise_ptr="*fp32",
                    out_ptr="*fp32",
                    x0_out_ptr="*fp32", t_ptr="*i64", column_ptr="*i64", table_ptr="*fp32", seed_ptr="*i64",
                    guidance_ptr="*fp32")
UNIPC_POINTERS = dict(model_ptr="*bf16", x_ptr="*fp32", last_ptr="*fp32", prev_ptr="*fp32", prev2_ptr="*fp32",
                      prev3_ptr="*fp32", out_ptr="*fp32", corrected_ptr="*fp32", x0_out_ptr="*fp32",
                      column_ptr="*i64", table_ptr="*fp32", guidance_ptr="*fp32")
Q_SAMPLE_POINTERS = dict(x0_ptr="*fp32", noise_ptr="*fp32", x_t_ptr="*fp32", eps_out_ptr="*fp32", t_ptr="*i64",
                         sqrt_ac_ptr="*fp32", sqrt_1m_ac_ptr="*fp32", seed_ptr="*i64")
PHILOX_POINTERS = dict(out_ptr="*fp32", seed_ptr="*i64", step_ptr="*i64")


def group_norm_sites(preset: str, size: int) -> set[tuple]:
    """(channels, H*W, groups, silu, has_emb, has_film) of every GroupNorm the U-Net runs, with the time embedding
    added (the preset's "default") or as FiLM scale and shift ("scale_shift"), from forwards on the meta device."""
    sites = set()

    def record(module, args, kwargs, output):
        inputs = dict(zip(("x", "emb", "scale", "shift"), args), **kwargs)
        x = inputs["x"]
        sites.add((x.shape[1], x.shape[2] * x.shape[3], module.num_groups, module.silu,
                   inputs.get("emb") is not None, inputs.get("scale") is not None))

    for time_mode in ("default", "scale_shift"):
        with torch.device("meta"):
            model = df.UNet.from_preset(preset, resnet_time_scale_shift=time_mode)
        for module in model.modules():
            if isinstance(module, GroupNormAct):
                module.register_forward_hook(record, with_kwargs=True)
        model(torch.zeros(1, 3, size, size, device="meta"), torch.zeros(1, dtype=torch.long, device="meta"))
    return sites


def config_key(kernel, pointers: dict, constants: dict, warps: int) -> tuple:
    """One build's key, the same for a launch configuration and a variant (main judges spills by it)."""
    return kernel, tuple(sorted(pointers.items())), tuple(sorted(constants.items(), key=str)), warps


def configurations():
    """{(kernel, pointer types, constants, num_warps): where it is launched} for every launch the planners choose."""
    found: dict[tuple, str] = {}

    def add(kernel, pointers, constants, warps, where):
        found.setdefault(config_key(kernel, pointers, constants, warps), where)

    for preset, size in MODELS:
        for (channels, spatial, groups, silu, emb, film), batch, channels_last, element in itertools.product(
                sorted(group_norm_sites(preset, size)), BATCHES, (True, False), GROUP_NORM_DTYPES):
            flags = dict(HAS_EMB=emb, HAS_WEIGHT=True, HAS_BIAS=True, HAS_SCALE=film, HAS_SHIFT=film, SILU=silu,
                         ACC=tl.float32)
            pointers = group_norm_pointers(element)
            where = (f"{preset} C={channels} HW={spatial} batch {batch} {'NHWC' if channels_last else 'NCHW'} "
                     f"{element[1:]}")
            plan = gn.default_plan(batch, channels, spatial, groups, channels_last)
            tile = dict(BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw)
            add(gn.group_norm_forward_kernel, pointers,
                dict(SINGLE_TILE=plan.single_tile, BLOCK_S=triton.next_power_of_2(plan.num_splits), **flags, **tile),
                plan.num_warps, where)
            if not plan.single_tile:
                add(gn.group_norm_stats_kernel, pointers, dict(HAS_EMB=emb, ACC=tl.float32, **tile),
                    plan.num_warps, where)
            plan = gn.default_plan(batch, channels, spatial, groups, channels_last, backward=True)
            tile = dict(BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw)
            modes = (gn.BACKWARD_SINGLE_TILE,) if plan.single_tile else (gn.BACKWARD_SUMS, gn.BACKWARD_DX)
            for mode in modes:
                add(gn.group_norm_backward_kernel, pointers, dict(MODE=mode, **flags, **tile),
                    plan.num_warps, where + " backward")
        for channels_last in (True, False):
            block_c, block_q, warps, _ = launch.tile_config(3, size * size, channels_last)
            heavy_warps = launch.tile_config(3, size * size, channels_last, heavy=True)[2]  # DPM, UniPC, guided steps
            tile = dict(SPATIAL_FLAT=True, CHANNELS_LAST=channels_last, BLOCK_C=block_c, BLOCK_Q=block_q)
            where = f"3x{size}x{size} {'NHWC' if channels_last else 'NCHW'}"
            for prediction, variance, noise, clip, guided in itertools.product(
                    (0, 1, 2), (0, 1, 2), (0, 1, 2), (False, True), (False, True)):
                add(p_step_kernel, P_STEP_POINTERS, dict(PREDICTION=prediction, VARIANCE=variance, CLIP=clip,
                                                         NOISE=noise, GUIDED=guided, **tile),
                    heavy_warps if guided else warps, where)
            ddim_clips = ((False, False), (True, False), (True, True))  # (CLIP, CLIPPED_EPS)
            for prediction, noise, (clip, clipped_eps), guided in itertools.product(
                    (0, 1, 2), (0, 1, 2), ddim_clips, (False, True)):
                add(ddim_step_kernel, DDIM_POINTERS, dict(PREDICTION=prediction, CLIP=clip, CLIPPED_EPS=clipped_eps,
                                                          NOISE=noise, GUIDED=guided, **tile),
                    heavy_warps if guided else warps, where)
            for prediction, noise, clip, guided, history2 in itertools.product((0, 1, 2), (0, 1, 2), (False, True),
                                                                               (False, True), (False, True)):
                add(dpm_solver_step_kernel, DPM_POINTERS, dict(PREDICTION=prediction, CLIP=clip, NOISE=noise,
                                                               GUIDED=guided, HISTORY2=history2, **tile),
                    heavy_warps, where)
            # UniPC with clipping (its most registers) and each history length a chain's first steps use
            for prediction, guided, history in itertools.product((0, 1, 2), (False, True), (1, 2, 3)):
                add(unipc_step_kernel, UNIPC_POINTERS, dict(PREDICTION=prediction, CLIP=True, GUIDED=guided,
                                                            HISTORY=history, **tile),
                    heavy_warps, where)
            for seeded in (False, True):
                add(q_sample_kernel, Q_SAMPLE_POINTERS, dict(NOISE_FROM_SEED=seeded, **tile), warps, where)
            add(philox_normal_kernel, PHILOX_POINTERS, dict(STREAM=2, **tile), warps, where)
    return found


# Elementwise kernels: their pointer types and option axes (the values each constexpr takes). The strided builds also
# take the other model and image dtypes (fp16 model output, bf16 images for q-sample).
ELEMENTWISE_OPTIONS = (
    (p_step_kernel, P_STEP_POINTERS, dict(PREDICTION=(0, 1, 2), VARIANCE=(0, 1, 2), NOISE=(0, 1, 2),
                                          CLIP=(False, True), GUIDED=(False, True))),
    (ddim_step_kernel, dict(DDIM_POINTERS, model_ptr="*fp16"), dict(PREDICTION=(0, 1, 2), NOISE=(0, 1, 2),
                                                                    CLIP=(False, True), CLIPPED_EPS=(False, True),
                                                                    GUIDED=(False, True))),
    (dpm_solver_step_kernel, DPM_POINTERS, dict(PREDICTION=(0, 1, 2), NOISE=(0, 1, 2), CLIP=(False, True),
                                                GUIDED=(False, True), HISTORY2=(False, True))),
    (unipc_step_kernel, UNIPC_POINTERS, dict(PREDICTION=(0, 1, 2), CLIP=(False, True), GUIDED=(False, True),
                                             HISTORY=(1, 2, 3))),
    (q_sample_kernel, dict(Q_SAMPLE_POINTERS, x0_ptr="*bf16", x_t_ptr="*bf16"), dict(NOISE_FROM_SEED=(False, True))),
    (philox_normal_kernel, PHILOX_POINTERS, dict(STREAM=(2,))),
)
# A tile whose images are not spatially flat (a strided view: position hw is split into h and w per element).
STRIDED_TILE = dict(SPATIAL_FLAT=False, CHANNELS_LAST=True, BLOCK_C=1, BLOCK_Q=1)


def each_value(axes: dict) -> list[dict]:
    """The fewest option sets that give every axis each of its values once (the longest axis sets their number)."""
    count = max(len(values) for values in axes.values())
    return [{name: values[i % len(values)] for name, values in axes.items()} for i in range(count)]


def variants():
    """{(kernel, pointers, constants, num_warps): what it is} for the builds no model launches, compiled only."""
    found: dict[tuple, str] = {}

    def add(kernel, pointers, constants, where):
        found.setdefault(config_key(kernel, pointers, constants, 4), where)

    for kernel, pointers, axes in ELEMENTWISE_OPTIONS:
        for options in each_value(axes):
            add(kernel, pointers, dict(**options, **STRIDED_TILE), "strided images")
    # GroupNorm: every flag combination in bf16 (fp32 statistics), both plans, and the float64 build.
    for element, acc in (("*bf16", tl.float32), ("*fp64", tl.float64)):
        pointers = group_norm_pointers(element)
        if acc is tl.float64:
            pointers.update({name: "*fp64" for name, kind in pointers.items() if kind == "*fp32"})
        flag_sets = itertools.product((False, True), repeat=4) if acc is tl.float32 else [(True,) * 4]
        for emb, affine, film, silu in flag_sets:
            flags = dict(HAS_EMB=emb, HAS_WEIGHT=affine, HAS_BIAS=affine, HAS_SCALE=film, HAS_SHIFT=film, SILU=silu,
                         ACC=acc, BLOCK_C=4, BLOCK_HW=256)
            where = f"flags {element[1:]}"
            for single in (False, True):
                add(gn.group_norm_forward_kernel, pointers, dict(SINGLE_TILE=single, BLOCK_S=8, **flags), where)
            for mode in (0, 1, 2):
                add(gn.group_norm_backward_kernel, pointers, dict(MODE=mode, **flags), where)
        add(gn.group_norm_stats_kernel, pointers, dict(HAS_EMB=True, ACC=acc, BLOCK_C=16, BLOCK_HW=64), where)
    return found


def compile_for_sm90(kernel, pointers: dict, constants: dict, warps: int):
    """triton.compile of one configuration for sm_90 (from Triton's cache when built before)."""
    signature = {name: ("constexpr" if name in constants else pointers.get(name)
                        or ("fp32" if name in FLOATS else "i32")) for name in kernel.arg_names}
    return triton.compile(ASTSource(kernel, signature, constants), target=GPUTarget("cuda", CAPABILITY, 32),
                          options={"num_warps": warps})


def resources(compiled) -> tuple[int, int]:
    """(registers, stack frame bytes) per thread of a compiled kernel, from its cubin (`cuobjdump
    --dump-resource-usage`, the tool Triton's wheel ships beside ptxas; a few ms, where running ptxas again costs
    tens). ptxas puts spilled registers in the stack frame: a frame of 0 bytes means nothing spilled."""
    tool = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as folder:
        cubin = pathlib.Path(folder) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        report = subprocess.run([str(tool), "--dump-resource-usage", str(cubin)], capture_output=True, text=True,
                                check=True).stdout
    usage = re.search(r"REG:(\d+) STACK:(\d+)", report)
    return int(usage.group(1)), int(usage.group(2))


def spills(compiled, kernel, warps: int) -> tuple[int, int]:
    """(spill store bytes, spill load bytes) per thread, from ptxas's own `-v` report on the kernel's PTX for sm_90
    (the same ptxas and flags as at run time): the detail behind a stack frame that is not empty."""
    from triton import knobs
    from triton.backends.nvidia.compiler import CUDABackend

    backend = CUDABackend(GPUTarget("cuda", CAPABILITY, 32))
    log = io.StringIO()
    knobs.nvidia.dump_ptxas_log = True  # make_cubin prints ptxas's report
    try:
        with contextlib.redirect_stdout(log):
            backend.make_cubin(compiled.asm["ptx"], {}, backend.parse_options({"num_warps": warps}), CAPABILITY)
    finally:
        knobs.nvidia.dump_ptxas_log = False
    report = log.getvalue().split(f"Function properties for {kernel.__name__}", 1)[1]
    stores, loads = map(int, re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report).groups())
    return stores, loads


KERNELS = {kernel.__name__: kernel for kernel in (
    p_step_kernel, ddim_step_kernel, dpm_solver_step_kernel, unipc_step_kernel, q_sample_kernel, philox_normal_kernel,
    gn.group_norm_forward_kernel, gn.group_norm_stats_kernel, gn.group_norm_backward_kernel)}


def build(name: str, pointers: tuple, constants: tuple, warps: int) -> tuple:
    """("ok", registers, stack, spill stores, spill loads) of one configuration, or ("FAILED", message)."""
    kernel = KERNELS[name]
    try:
        compiled = compile_for_sm90(kernel, dict(pointers), dict(constants), warps)
    except Exception as error:  # report every failing build, not only the first
        return "FAILED", str(error).splitlines()[-1:]
    registers, stack = resources(compiled)
    stores, loads = spills(compiled, kernel, warps) if stack else (0, 0)
    return "ok", registers, stack, stores, loads


def main() -> int:
    launches, extra = configurations(), variants()
    extra = {key: where for key, where in extra.items() if key not in launches}  # none today; a launch if both
    print(f"{len(launches)} launch configurations, {len(extra)} option variants")
    everything = list(itertools.chain(launches.items(), extra.items()))
    # One process per core this process may use: a build is single-threaded (MLIR passes, then ptxas), and under
    # pytest-xdist the other worker's core is free again once its files are done.
    with concurrent.futures.ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        results = pool.map(build, *zip(*((kernel.__name__, pointers, constants, warps)
                                         for (kernel, pointers, constants, warps), _ in everything)))
        spilled = failed = built = 0
        for (key, where), result in zip(everything, results):
            kernel, _, constants, warps = key
            constants = dict(constants)
            if result[0] == "FAILED":
                failed += 1
                print("FAILED", kernel.__name__, constants, f"warps={warps}:", result[1])
                continue
            built += 1
            registers, stack, stores, loads = result[1:]
            tile = {k: v for k, v in constants.items() if k.startswith("BLOCK") or k in ("SINGLE_TILE", "MODE")}
            line = (f"{kernel.__name__} {tile} warps={warps}: {registers} registers, stack frame {stack} bytes, "
                    f"spills {stores}/{loads} bytes (e.g. {where})")
            if stack and key in launches:  # a variant's frame is reported, not judged: no model launches it
                spilled += 1
                print("SPILLS", line, {k: v for k, v in constants.items() if k not in tile})
            else:
                print("ok", line)
    print(f"built {built}, {failed} failed")
    print(f"{spilled} configuration(s) spill")
    return 1 if spilled or failed else 0


if __name__ == "__main__":
    sys.exit(main())
