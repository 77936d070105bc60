"""pt2 packages: the U-Net compiled ahead of time (AOTInductor) travels with its setup; a fresh process samples it
without compiling and gets the eager sampler's images; a package this process cannot run is a one-line error.

Compiling costs about half a minute, so the module compiles one package, through the command line.
"""

import json
import subprocess
import sys
import zipfile

import pytest
import torch

import ddpm_fast as df
from ddpm_fast.diffusion_setup import SetupConflict
from ddpm_fast.export import export_onnx, export_pt2
from ddpm_fast.interop.pretrained import load_pretrained
from ddpm_fast.kernels import cpu_reference
from ddpm_fast.models.pt2_package import METADATA_KEY, PT2Model, check_pt2_compatible, load_pt2, read_pt2_metadata

from subprocess_env import subprocess_env

# Its subject is the package, not the kernels: the update runs on the torch references in and out of process.
pytestmark = pytest.mark.torch_references

CLASSES = ("cat", "dog", "fox")
GUIDED = dict(class_labels=["cat", "fox", "dog"], guidance_scale=2.5)


def cli(argv):
    from ddpm_fast.cli import main as entry

    with cpu_reference():
        try:
            return entry.main([str(part) for part in argv])
        except SystemExit as exit:
            return exit.code


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A class-conditional U-Net (3 classes + the null class) saved with its setup, and its package, exported by
    `ddpm-fast export --format pt2`."""
    root = tmp_path_factory.mktemp("pt2")
    torch.manual_seed(0)
    unet = df.UNet(sample_size=8, block_out_channels=(8, 16), layers_per_block=1, down_attention=(False, True),
                   up_attention=(True, False), norm_num_groups=4, num_class_embeds=4).eval()
    setup = df.DiffusionSetup.from_schedule(df.NoiseSchedule.cosine(50), prediction_type="v_prediction",
                                            sample_shape=(3, 8, 8), num_class_embeds=4, null_class_label=3,
                                            class_names=CLASSES, timestep_spacing="trailing")
    folder = unet.save(root / "unet", setup=setup)
    package = root / "out" / "unet.pt2"
    assert cli(["export", "--format", "pt2", "--checkpoint", folder, "--out", package]) == 0
    return {"folder": folder, "package": package, "setup": setup, "root": root}


def eager_images(made, **kwargs):
    sampler = df.FastSampler.from_pretrained(made["folder"], compile=False, channels_last=False)
    with cpu_reference():
        return sampler.sample(3, seed=7, **kwargs)


def test_a_package_sampled_in_a_fresh_process_gives_the_eager_images(made, tmp_path):
    # DDPM guided (the model called on 2B: the batch is dynamic), DDIM conditional, DPM-Solver++ at another batch.
    script = f"""
import torch, ddpm_fast as df
from ddpm_fast import files
from torch._dynamo.utils import counters
sampler = df.FastSampler.from_pretrained({str(made["package"])!r})
out = {{}}
out["ddpm"] = sampler.sample(3, seed=7, num_inference_steps=6, **{GUIDED!r})
report = sampler.last_report
out["ddim"] = sampler.sample(3, seed=7, method="ddim", num_inference_steps=5, class_labels=[0, 1, 2])
out["dpm"] = sampler.sample(5, seed=7, method="dpm_solver++", num_inference_steps=5, class_labels=[2] * 5)
files.save_tensors({str(tmp_path / "images.safetensors")!r}, {{k: v.contiguous() for k, v in out.items()}})
print(report.compiled, "|", report.compile_decision, "|", sampler.dtype, sampler.device, "|",
      counters["stats"]["unique_graphs"])
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env(),
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    compiled, decision, where, graphs = run.stdout.strip().splitlines()[-1].split(" | ")
    assert compiled == "False" and "compiled ahead of time (pt2 package unet.pt2)" in decision
    assert where == "torch.float32 cpu"
    assert graphs == "0"  # torch.compile compiled nothing in that process
    from safetensors.torch import load_file

    got = load_file(tmp_path / "images.safetensors")
    expected = {"ddpm": eager_images(made, num_inference_steps=6, **GUIDED),
                "ddim": eager_images(made, method="ddim", num_inference_steps=5, class_labels=[0, 1, 2])}
    sampler = df.FastSampler.from_pretrained(made["folder"], compile=False, channels_last=False)
    with cpu_reference():
        expected["dpm"] = sampler.sample(5, seed=7, method="dpm_solver++", num_inference_steps=5, class_labels=[2] * 5)
    for name, images in expected.items():
        torch.testing.assert_close(got[name], images, rtol=1e-4, atol=1e-4, msg=name)


def test_the_command_line_samples_a_package_as_the_eager_sampler(made, tmp_path):
    out = tmp_path / "samples.safetensors"
    assert cli(["sample", "--checkpoint", made["package"], "--num-samples", 3, "--steps", 6, "--seed", 7,
                "--class-labels", "cat,fox,dog", "--guidance-scale", 2.5, "--out", out]) == 0
    from safetensors.torch import load_file

    torch.testing.assert_close(load_file(out)["images"], eager_images(made, num_inference_steps=6, **GUIDED),
                               rtol=1e-4, atol=1e-4)


def test_the_setup_travels_in_the_package_and_is_checked(made):
    metadata = read_pt2_metadata(made["package"])
    assert df.DiffusionSetup.from_dict(metadata["setup"]) == made["setup"]
    assert (metadata["dtype"], metadata["device"], metadata["torch"]) == ("float32", "cpu", torch.__version__)
    assert metadata["sample_shape"] == [3, 8, 8] and metadata["num_class_embeds"] == 4
    pretrained = load_pretrained(made["package"])
    assert pretrained.kind == "pt2_package" and isinstance(pretrained.model, PT2Model)
    sampler = df.FastSampler.from_pretrained(made["package"])
    assert sampler.setup == made["setup"] and sampler.class_names == CLASSES
    with pytest.raises(SetupConflict, match="prediction_type='epsilon' contradicts"):
        df.FastSampler.from_pretrained(made["package"], prediction_type="epsilon")
    with pytest.raises(ValueError, match="weights=ema: .* is a pt2 package"):
        load_pretrained(made["package"], weights="ema")


def test_what_the_package_fixes_is_refused_as_one_line_naming_the_argument(made):
    model = load_pt2(made["package"])
    with pytest.raises(ValueError, match=r"dtype=bfloat16: unet.pt2 is compiled for float32"):
        df.FastSampler(model, made["setup"].schedule(), dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"compile=True: unet.pt2 is a pt2 package, compiled ahead of time"):
        df.FastSampler(model, made["setup"].schedule(), compile=True)
    with pytest.raises(ValueError, match=r"device='cuda': .*unet.pt2 is compiled for cpu"):
        load_pt2(made["package"], device="cuda")
    with pytest.raises(ValueError, match="sample_shape: this pt2 package is compiled for 8x8 samples, got 16x16"):
        df.FastSampler(model, made["setup"].schedule(), (3, 16, 16))
    x, t = torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"sample: unet.pt2 is compiled for \[B, 3, 8, 8\] samples, got \[2, 3, 8, 4"):
        model(x[..., :4], t, class_labels=t)
    with pytest.raises(ValueError, match="sample: unet.pt2 computes in float32, got torch.float64"):
        model(x.double(), t, class_labels=t)
    with pytest.raises(ValueError, match="class_labels: unet.pt2 is class-conditional"):
        model(x, t)
    with pytest.raises(TypeError, match="timestep must hold integers"):
        model(x, t.float(), class_labels=t)
    with pytest.raises(ValueError, match=r"class_labels must be one value or \[2\] values"):
        model(x, t, class_labels=torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"class_labels must be class indices in \[0, 4\), got \[0, 4\]"):
        model(x, t, class_labels=torch.tensor([0, 4]))
    assert model(x.to(memory_format=torch.channels_last), 4, class_labels=t).shape == (2, 3, 8, 8)


def tampered(made, name, change):
    """A copy of the package whose ddpm_fast metadata (or AOTInductor's, for the AOTI_ keys) is changed."""
    path = made["root"] / f"{name}.pt2"
    with zipfile.ZipFile(made["package"]) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("_metadata.json"):
                document = json.loads(data)
                ours = json.loads(document[METADATA_KEY])
                change(ours, document)
                document[METADATA_KEY] = json.dumps(ours)
                data = json.dumps(document).encode()
            target.writestr(item, data)
    return path


MISMATCHES = {
    "torch": (lambda ours, aoti: ours.update(torch="2.11.0"),
              r"was compiled by torch 2.11.0; this process runs torch .*: export the package again"),
    "cpu": (lambda ours, aoti: aoti.update(AOTI_CPU_ISA="AVX512 AVX512_FP99"),
            r"is compiled for a CPU with avx512_fp99, which this CPU lacks"),
    "machine": (lambda ours, aoti: aoti.update(AOTI_MACHINE="riscv64"), r"is compiled for riscv64; this machine is"),
    "version": (lambda ours, aoti: ours.update(version=9), r"a pt2 package of format version 9"),
}


@pytest.mark.parametrize("mismatch", sorted(MISMATCHES))
def test_a_package_built_for_another_environment_is_a_one_line_error(made, mismatch, capsys):
    change, message = MISMATCHES[mismatch]
    path = tampered(made, mismatch, change)
    with pytest.raises(ValueError, match=message):
        df.FastSampler.from_pretrained(path)
    assert cli(["sample", "--checkpoint", path, "--num-samples", 1, "--steps", 2, "--class-labels", 0,
                "--out", made["root"] / "never.png"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ddpm-fast sample: error: ") and "Traceback" not in err
    assert not (made["root"] / "never.png").exists()


def test_files_that_are_no_package_are_refused(made, tmp_path):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.pt2: not a pt2 package"):
        load_pretrained(junk)
    foreign = tmp_path / "foreign.pt2"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("foreign/data/aotinductor/model/x_metadata.json", json.dumps({"AOTI_DEVICE_KEY": "cpu"}))
    with pytest.raises(ValueError, match="foreign.pt2: not a ddpm_fast pt2 package"):
        df.FastSampler.from_pretrained(foreign)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_pt2_metadata(tmp_path / "missing.pt2")
    with pytest.raises(FileNotFoundError, match="missing.pt2: no such file"):  # a file name, never a Hub id
        df.FastSampler.from_pretrained(str(tmp_path / "missing.pt2"))
    assert cli(["sample", "--checkpoint", tmp_path / "missing.pt2", "--out", tmp_path / "x.png"]) == 2
    # damaged machine code must not load: every member's checksum is checked first
    damaged = tmp_path / "damaged.pt2"
    data = bytearray(made["package"].read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(255 - b for b in data[middle:middle + 64])
    damaged.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged.pt2: a damaged pt2 package"):
        load_pt2(damaged)


def test_a_package_holds_no_weights_to_export_again(made, tmp_path):
    with pytest.raises(ValueError, match="is a pt2 package: it holds compiled code, not weights to export ONNX from"):
        export_onnx(str(made["package"]), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="not weights to compile a pt2 package from"):
        export_pt2(str(made["package"]), tmp_path / "x.pt2")
    with pytest.raises(ValueError, match="not weights to write a diffusers pipeline from"):
        df.save_diffusers_pipeline(str(made["package"]), tmp_path / "pipeline")
    assert cli(["export", "--checkpoint", made["package"], "--out", tmp_path / "x.onnx"]) == 2


def test_export_arguments_are_checked_before_any_compile(made, tmp_path):
    unet = df.UNet.load(made["folder"])
    with pytest.raises(ValueError, match="expected a file name ending in .pt2"):
        export_pt2(unet, tmp_path / "x.onnx", setup=made["setup"])
    with pytest.raises(TypeError, match="dtype must be one of torch.float32, torch.bfloat16, torch.float16"):
        export_pt2(unet, tmp_path / "x.pt2", setup=made["setup"], dtype=torch.float64)
    with pytest.raises(TypeError, match="setup must be the model's ddpm_fast.DiffusionSetup"):
        export_pt2(unet, tmp_path / "x.pt2")
    with pytest.raises(ValueError, match="weights= applies to a training checkpoint folder"):
        export_pt2(unet, tmp_path / "x.pt2", setup=made["setup"], weights="ema")
    bare = df.UNet.from_preset("tiny", sample_size=8).save(tmp_path / "bare")
    with pytest.raises(ValueError, match="stores no diffusion setup"):
        export_pt2(bare, tmp_path / "x.pt2")
    with pytest.raises(ValueError, match="device"):
        export_pt2(unet, tmp_path / "x.pt2", setup=made["setup"], device="mps")
    for argv in (["--graph", "ddpm_step"], ["--static-spatial"], ["--eta", "0.5"], ["--contrib-ops"]):
        assert cli(["export", "--format", "pt2", "--checkpoint", made["folder"], "--out", tmp_path / "y.pt2",
                    *argv]) == 2, argv
    assert cli(["export", "--checkpoint", made["folder"], "--out", tmp_path / "y.onnx", "--dtype", "bfloat16"]) == 2
    # a folder without a stored setup is refused, not packaged with guessed defaults
    assert cli(["export", "--format", "pt2", "--checkpoint", bare, "--out", tmp_path / "z.pt2"]) == 2
    assert not list(tmp_path.glob("*.pt2")) and not list(tmp_path.glob(".*"))


def test_ctrl_c_during_a_command_is_one_line_and_status_130(made, tmp_path, monkeypatch, capsys):
    from ddpm_fast.export import pt2_export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pt2_export, "export_pt2", interrupted)
    assert cli(["export", "--format", "pt2", "--checkpoint", made["folder"], "--out", tmp_path / "x.pt2"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == ("ddpm-fast export: stopped (Ctrl-C); nothing was "
                                                                 "written")
    assert not (tmp_path / "x.pt2").exists()


def test_check_on_a_package_for_another_device_needs_no_gpu(made):
    metadata = read_pt2_metadata(made["package"])
    assert check_pt2_compatible(metadata, made["package"]) == torch.device("cpu")
    cuda = dict(metadata, device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="is compiled for CUDA, and CUDA is not available here"):
            check_pt2_compatible(cuda, "gpu.pt2")


@pytest.mark.gpu
def test_a_cuda_package_samples_what_the_eager_sampler_samples(made, tmp_path):
    package = export_pt2(made["folder"], tmp_path / "cuda.pt2", device="cuda", dtype=torch.bfloat16)
    fast = df.FastSampler.from_pretrained(package)
    assert fast.device.type == "cuda" and fast.dtype == torch.bfloat16
    got = fast.sample(3, seed=7, num_inference_steps=6, **GUIDED)
    eager = df.FastSampler.from_pretrained(made["folder"], device="cuda", dtype=torch.bfloat16, compile=False,
                                           cuda_graphs=False).sample(3, seed=7, num_inference_steps=6, **GUIDED)
    assert (got.float() - eager.float()).abs().max() < 0.1  # bf16 models: the same chain within bf16's rounding
