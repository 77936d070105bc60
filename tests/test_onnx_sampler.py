"""OnnxSampler: the ONNX Runtime loop equals FastSampler on the same noise (every graph kind, seed= and generator=),
what each graph can sample, and clear errors for bad files and bad inputs. CPU provider; CUDA marked `gpu`.

Each export of the tiny U-Net costs ~20 s, so the files are exported once per module.
"""

import warnings

import onnx
import pytest
import torch

import ddpm_fast as df
from ddpm_fast.export import OnnxProviderFallbackWarning, OnnxSampler, export_onnx
from ddpm_fast.export.metadata import METADATA_KEY
from ddpm_fast.kernels import cpu_reference

# Its subject is ONNX Runtime's side: FastSampler's chains run on the torch references (cpu_reference), so the
# interpreter's run would repeat the other path's (tests/conftest.py checks that no test here reaches a kernel).
pytestmark = pytest.mark.torch_references

T = 20
SIZE = 16


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return df.UNet.from_preset("tiny", sample_size=SIZE).eval()


@pytest.fixture(scope="module")
def schedule():
    return df.NoiseSchedule.cosine(T)


@pytest.fixture(scope="module")
def exported(unet, schedule, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    options = dict(schedule=schedule, prediction_type="v_prediction", clip_sample=True)
    # The step graphs with static H, W (a third less export time); the model graph runs at another resolution
    return {
        "model": export_onnx(unet, folder / "model.onnx", graph="model", **options),
        "ddpm_step": export_onnx(unet, folder / "ddpm.onnx", graph="ddpm_step", variance_type="fixed_large",
                                 dynamic_spatial=False, **options),
        "ddim_step": export_onnx(unet, folder / "ddim.onnx", graph="ddim_step", eta=0.5, dynamic_spatial=False,
                                 **options),
    }


def fast_sampler(unet, schedule, graph):
    variance = "fixed_large" if graph == "ddpm_step" else "fixed_small"
    return df.FastSampler(unet, schedule, prediction_type="v_prediction", clip_sample=True, variance_type=variance,
                          dtype=torch.float32, compile=False)


CASES = [("model", "ddpm", None, 0.0), ("model", "ddpm", 6, 0.0), ("model", "ddim", 5, 0.0),
         ("ddpm_step", "ddpm", None, 0.0), ("ddim_step", "ddim", 5, 0.5), ("ddim_step", "ddim", None, 0.5)]


@pytest.mark.parametrize("graph,method,steps,eta", CASES)
@pytest.mark.parametrize("noise", ["seed", "generator"])
def test_onnx_sampler_equals_fast_sampler(exported, unet, schedule, graph, method, steps, eta, noise):
    onnx_sampler = OnnxSampler(exported[graph])
    fast = fast_sampler(unet, schedule, graph)
    kwargs = dict(method=method, num_inference_steps=steps, eta=eta)
    with cpu_reference():
        if noise == "seed":
            got, expected = onnx_sampler.sample(3, seed=4, **kwargs), fast.sample(3, seed=4, **kwargs)
        else:
            got = onnx_sampler.sample(3, generator=torch.Generator().manual_seed(4), **kwargs)
            expected = fast.sample(3, generator=torch.Generator().manual_seed(4), **kwargs)
    assert got.shape == (3, 3, SIZE, SIZE) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("graph,eta,clipped", [("model", 0.0, True), ("ddim_step", 0.5, False)])
def test_a_custom_ddim_chain_equals_fast_sampler(exported, unet, schedule, graph, eta, clipped):
    """lucidrains' DDIM: its own timesteps, ε re-derived from the clipped x0 (the files clip): a model graph runs it
    with the update in torch; a DDIM step graph runs custom timesteps with its own ε."""
    onnx_sampler = OnnxSampler(exported[graph])
    fast = fast_sampler(unet, schedule, graph)
    kwargs = dict(method="ddim", eta=eta, timesteps=[19, 14, 9, 4, 0], use_clipped_model_output=clipped)
    with cpu_reference():
        got, expected = onnx_sampler.sample(2, seed=3, **kwargs), fast.sample(2, seed=3, **kwargs)
        unclipped = fast.sample(2, seed=3, **{**kwargs, "use_clipped_model_output": False})
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    if clipped:  # the option changes the chain: the comparison above pins it, not a no-op
        assert not torch.allclose(expected, unclipped, rtol=1e-4, atol=1e-4)


def test_a_cuda_provider_onnx_runtime_cannot_start_is_a_fallback_warning(exported, unet, schedule, monkeypatch):
    """Asked for the CUDA provider, ONNX Runtime drops it without an error when it cannot start it (here: no GPU, or
    onnxruntime-gpu without its CUDA libraries); the sampler says so and keeps sampling, on the CPU."""
    ort = pytest.importorskip("onnxruntime")
    asked = []
    real_session = ort.InferenceSession

    def session_without_cuda(path, sess_options=None, providers=None):  # what ONNX Runtime does when CUDA fails
        asked.append([name if isinstance(name, str) else name[0] for name in providers])
        return real_session(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # no side stream: the CPU test path
    monkeypatch.setattr(ort, "InferenceSession", session_without_cuda)
    with pytest.warns(OnnxProviderFallbackWarning, match="could not start the CUDAExecutionProvider") as caught:
        sampler = OnnxSampler(exported["model"], providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert len(caught) == 1 and issubclass(OnnxProviderFallbackWarning, df.FastPathFallbackWarning)
    assert asked == [["CUDAExecutionProvider", "CPUExecutionProvider"]]
    assert sampler.provider == "CPUExecutionProvider" and not sampler.uses_cuda and sampler.device.type == "cpu"
    (reason,) = sampler.fallbacks
    assert "model.onnx" in reason and "sampling runs on the CPU" in reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CPU provider asked for is no fallback
        assert OnnxSampler(exported["model"]).fallbacks == ()


def test_the_schedule_and_options_come_from_the_file(exported, schedule):
    sampler = OnnxSampler(exported["ddpm_step"])
    assert torch.equal(sampler.schedule.betas, schedule.betas)
    assert sampler.sample_shape == (3, SIZE, SIZE) and sampler.graph == "ddpm_step"
    assert sampler.device.type == "cpu" and not sampler.cuda_graph
    assert sampler.metadata["variance_type"] == "fixed_large"


def test_run_calls_the_graph_once_and_checks_its_inputs(exported, unet):
    sampler = OnnxSampler(exported["model"])
    x, t = torch.randn(2, 3, 8, 24), torch.tensor([0, 19])  # another resolution: the file's H and W are dynamic
    with cpu_reference():
        expected = unet(x, t)
    torch.testing.assert_close(sampler.run(sample=x, timestep=t), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="timestep must have dtype torch.int64"):
        sampler.run(sample=x, timestep=t.float())
    with pytest.raises(TypeError, match="sample must have dtype torch.float32"):
        sampler.run(sample=x.double(), timestep=t)
    with pytest.raises(ValueError, match="sample must have size 3 in dimension 1"):
        sampler.run(sample=torch.randn(2, 4, 8, 8), timestep=t)
    with pytest.raises(ValueError, match="batch size"):
        sampler.run(sample=x, timestep=torch.tensor([1]))
    with pytest.raises(ValueError, match="multiples of 4"):
        sampler.run(sample=torch.randn(2, 3, 10, 8), timestep=t)
    with pytest.raises(ValueError, match="missing"):
        sampler.run(sample=x)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        sampler.run(sample=x, timestep=[0, 1])
    for bad in ([0, T], [-1, 3]):  # values as well as shapes: the graph would read past its schedule
        with pytest.raises(ValueError, match=rf"timestep must lie in \[0, {T}\)"):
            sampler.run(sample=x, timestep=torch.tensor(bad))
    ddim = OnnxSampler(exported["ddim_step"])
    x16 = torch.randn(2, 3, SIZE, SIZE)
    for prev in ([5, 5], [-2, 3]):
        with pytest.raises(ValueError, match=r"prev_timestep must lie in \[-1, timestep\)"):
            ddim.run(sample=x16, timestep=torch.tensor([5, 7]), prev_timestep=torch.tensor(prev), noise=x16)


def test_what_each_graph_cannot_sample_is_a_clear_error(exported):
    ddpm = OnnxSampler(exported["ddpm_step"])
    with pytest.raises(ValueError, match="full chain"):
        ddpm.sample(1, seed=0, num_inference_steps=5)
    with pytest.raises(ValueError, match="method"):
        ddpm.sample(1, seed=0, method="ddim")
    with pytest.raises(ValueError, match="bakes eta"):
        OnnxSampler(exported["ddim_step"]).sample(1, seed=0, eta=0.0)
    model = OnnxSampler(exported["model"])
    with pytest.raises(ValueError, match="eta"):
        model.sample(1, seed=0, eta=0.5)
    with pytest.raises(ValueError, match="batch_size"):
        model.sample(0)
    with pytest.raises(ValueError, match="not both"):
        model.sample(1, seed=0, generator=torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        model.sample(1, generator=3)
    with pytest.raises(ValueError, match="eta"):
        model.sample(1, seed=0, method="ddim", eta=-1.0)
    with pytest.raises(ValueError, match="sample_offset"):
        model.sample(2, seed=0, sample_offset=2**31 - 1)
    with pytest.raises(ValueError, match="schedule baked in"):
        OnnxSampler(exported["ddpm_step"], schedule=df.NoiseSchedule.linear(T))
    # timesteps= and use_clipped_model_output: FastSampler.sample's rules, and what a step graph bakes
    with pytest.raises(ValueError, match="timesteps must be None"):
        ddpm.sample(1, seed=0, timesteps=[9, 4, 0])
    with pytest.raises(ValueError, match="use_clipped_model_output with its clip_sample needs a model graph"):
        OnnxSampler(exported["ddim_step"]).sample(1, seed=0, timesteps=[9, 0], use_clipped_model_output=True)
    with pytest.raises(ValueError, match="use_clipped_model_output applies to method='ddim' only"):
        model.sample(1, seed=0, use_clipped_model_output=True)
    with pytest.raises(TypeError, match="use_clipped_model_output must be True or False"):
        model.sample(1, seed=0, method="ddim", use_clipped_model_output=1)
    with pytest.raises(ValueError, match=r"timesteps must be strictly descending ints in \[0, 20\)"):
        model.sample(1, seed=0, method="ddim", timesteps=[4, 9])
    with pytest.raises(ValueError, match="pass num_inference_steps or timesteps, not both"):
        model.sample(1, seed=0, method="ddim", num_inference_steps=3, timesteps=[9, 4])


def _rewrite_metadata(source, target, change):
    proto = onnx.load(source)
    props = {p.key: p.value for p in proto.metadata_props}
    del proto.metadata_props[:]
    for key, value in change(props).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, target)
    return target


def test_bad_files_are_clear_errors(exported, schedule, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxSampler(tmp_path / "missing.onnx")
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    with pytest.raises(ValueError, match="notes.onnx: not a loadable ONNX model"):
        OnnxSampler(text)
    data = exported["model"].read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.onnx: not a loadable ONNX model"):
        OnnxSampler(truncated)
    bare = _rewrite_metadata(exported["model"], tmp_path / "bare.onnx", lambda props: {})
    with pytest.raises(ValueError, match="no ddpm_fast metadata"):
        OnnxSampler(bare)

    import json

    def without_schedule(props):
        metadata = json.loads(props[METADATA_KEY])
        metadata["schedule"] = None
        return {METADATA_KEY: json.dumps(metadata)}

    unscheduled = _rewrite_metadata(exported["model"], tmp_path / "unscheduled.onnx", without_schedule)
    with pytest.raises(ValueError, match="stores no schedule"):
        OnnxSampler(unscheduled)
    assert OnnxSampler(unscheduled, schedule=schedule).schedule is schedule
    with pytest.raises(TypeError, match="schedule"):
        OnnxSampler(unscheduled, schedule="cosine")


# ---------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("graph", ["model", "ddpm_step", "ddim_step"])
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_cuda_provider_with_io_binding_equals_fast_sampler(exported, unet, schedule, graph, cuda_graph):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider")
    sampler = OnnxSampler(exported[graph], cuda_graph=cuda_graph)
    assert sampler.uses_cuda and sampler.device.type == "cuda"
    method = "ddim" if graph == "ddim_step" else "ddpm"
    eta = 0.5 if graph == "ddim_step" else 0.0
    fast = df.FastSampler(unet.cuda(), schedule, prediction_type="v_prediction", clip_sample=True,
                          variance_type="fixed_large" if graph == "ddpm_step" else "fixed_small",
                          dtype=torch.float32, compile=False, cuda_graphs=False, channels_last=False)
    with torch.backends.cudnn.flags(allow_tf32=False):
        got = sampler.sample(4, seed=2, method=method, eta=eta)
        expected = fast.sample(4, seed=2, method=method, eta=eta)
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)


def test_contrib_op_fusion_rewrites_every_group_norm(exported, tmp_path):
    import json

    from ddpm_fast.export.contrib_ops import fuse_contrib_ops
    from ddpm_fast.export.metadata import read_metadata

    standard = onnx.load(exported["model"])
    norms = sum(node.op_type == "InstanceNormalization" for node in standard.graph.node)
    counts = fuse_contrib_ops(exported["model"], tmp_path / "contrib.onnx")
    fused = onnx.load(tmp_path / "contrib.onnx")
    assert counts["GroupNorm"] + counts["SkipGroupNorm"] == norms > 0
    assert not any(node.op_type in ("InstanceNormalization", "GroupNormalization") for node in fused.graph.node)
    assert read_metadata(fused)["contrib_ops"] is True
    with pytest.raises(ValueError, match="CUDAExecutionProvider"):  # the contrib kernels are CUDA-only
        OnnxSampler(tmp_path / "contrib.onnx", providers=["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="already"):
        fuse_contrib_ops(tmp_path / "contrib.onnx", tmp_path / "again.onnx")
    assert json.loads({p.key: p.value for p in fused.metadata_props}["ddpm_fast"])["graph"] == "model"


@pytest.mark.gpu
def test_contrib_ops_on_the_cuda_provider_equal_the_standard_graph(exported, tmp_path):
    import onnxruntime as ort

    from ddpm_fast.export.contrib_ops import fuse_contrib_ops

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider")
    fuse_contrib_ops(exported["ddpm_step"], tmp_path / "contrib.onnx")
    got = OnnxSampler(tmp_path / "contrib.onnx").sample(2, seed=1)
    expected = OnnxSampler(exported["ddpm_step"]).sample(2, seed=1)
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)


def test_a_pipeline_folders_spacing_travels_in_the_file(tmp_path):
    # diffusers' default spacing is "leading": a 5-step DDIM from the file must visit the pipeline's timesteps, as
    # FastSampler.from_diffusers does (before the spacing was stored, OnnxSampler used "linspace" and differed by 2).
    diffusers = pytest.importorskip("diffusers")
    import json

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"))
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T, timestep_spacing="leading", steps_offset=1)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    path = export_onnx(tmp_path / "pipe", tmp_path / "model.onnx", graph="model",
                       dynamic_spatial=False)  # a third less export time
    onnx_sampler = OnnxSampler(path)
    assert (onnx_sampler.timestep_spacing, onnx_sampler.steps_offset, onnx_sampler.set_alpha_to_one) == (
        "leading", 1, True)
    fast = df.FastSampler.from_diffusers(tmp_path / "pipe", dtype=torch.float32, compile=False)
    with cpu_reference():
        got = onnx_sampler.sample(2, seed=3, method="ddim", num_inference_steps=5)
        expected = fast.sample(2, seed=3, method="ddim", num_inference_steps=5)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)

    def without_chain_options(props):  # a file written before the chain options were stored
        metadata = json.loads(props[METADATA_KEY])
        for name in ("timestep_spacing", "steps_offset", "set_alpha_to_one"):
            del metadata[name]
        return {**props, METADATA_KEY: json.dumps(metadata)}

    old = OnnxSampler(_rewrite_metadata(path, tmp_path / "old.onnx", without_chain_options))
    assert (old.timestep_spacing, old.steps_offset, old.set_alpha_to_one) == ("linspace", 0, True)
    with cpu_reference():  # what the spacing is worth: without it the chain visits other timesteps
        assert (old.sample(2, seed=3, method="ddim", num_inference_steps=5) - expected).abs().max() > 0.01
    with pytest.raises(ValueError, match="timestep_spacing must be one of"):
        export_onnx(tmp_path / "pipe", tmp_path / "bad.onnx", timestep_spacing="even")
