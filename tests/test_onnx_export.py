"""export_onnx and `ddpm-fast export`: valid ONNX (checker, strict shape inference, standard ops only, no
GroupNormalization), ONNX Runtime (CPU provider) against torch at two batch sizes and two resolutions, the step graphs
against p_step / ddim_step, fp16, diffusers models and folders, checkpoints, metadata, atomic writes, clear errors.

One export of the tiny U-Net costs ~25 s on 2 cores, so every file is exported once per module and shared; the
exports that only need *a* U-Net use a smaller one (~15 s), and the write-path tests a toy module (~4 s).
"""

import contextlib
import logging
import os
import re
import warnings

import pytest
import torch
from torch import nn

import ddpm_fast as df
from ddpm_fast.cli import main as cli
from ddpm_fast.diffusion_setup import SetupConflict
from ddpm_fast.export import GRAPHS, OPSET, export_onnx, onnx_export, pt2_export, read_metadata
from ddpm_fast.kernels import cpu_reference
from ddpm_fast.models.config import config_to_diffusers
from ddpm_fast.vocabulary import EXPORT_DTYPES, EXPORT_FORMATS

# Left to the TRITON_INTERPRET=0 run (tests/conftest.py checks no test here reaches a kernel): the exported graphs hold
# the torch references only (export/step_graphs.py), and the ops they are held to run on the references too (below).
pytestmark = pytest.mark.torch_references


@pytest.fixture(autouse=True)
def _torch_references():
    """The subject is the graph: the fused steps it is compared with are proven against their references in their
    own files, under the interpreter as well."""
    with cpu_reference():
        yield

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

T = 50
SIZE = 16
FLOAT, FLOAT16, INT64 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT64


def small_unet(seed: int = 0) -> df.UNet:
    """Two levels (H, W multiples of 2), attention at the lower one and in the mid block."""
    torch.manual_seed(seed)
    return df.UNet(sample_size=8, block_out_channels=(8, 16), layers_per_block=1, down_attention=(False, True),
                   up_attention=(True, False), norm_num_groups=4).eval()


class ToyModel(nn.Module):
    """An ε-model that is no UNet (static H, W) and exports in seconds: for the write path and the generic case."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, sample, timestep):
        return self.conv(sample) * (1 + timestep.to(sample.dtype)[:, None, None, None] / 1000)


@contextlib.contextmanager
def untraced():
    """pytest (9) attaches its log capture to every non-propagating logger, torch's structured-trace log among them,
    and torch then renders every trace payload (graph dumps) for it: a third of an export's time. Detached here."""
    trace_log = logging.getLogger("torch.__trace")
    handlers = list(trace_log.handlers)
    for handler in handlers:
        trace_log.removeHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            trace_log.addHandler(handler)


def export(model, path, *args, **kwargs):
    with untraced():
        return export_onnx(model, path, *args, **kwargs)


def run_onnx(path, **inputs) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {name: value.numpy() for name, value in inputs.items()})[0])


def assert_close(actual, expected, rtol=1e-3):
    """Relative to the output's scale: elementwise rtol, and an atol of rtol × max|expected|."""
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max().item())


def value_info(value):
    tensor = value.type.tensor_type
    return tensor.elem_type, [d.dim_param or d.dim_value for d in tensor.shape.dim]


def torch_forward(model, x, t):
    with torch.no_grad(), cpu_reference():
        output = model(x, t)
    return output.sample if hasattr(output, "sample") else output


# ------------------------------------------------------------------------------------------- exported files


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return df.UNet.from_preset("tiny", sample_size=SIZE).eval()


@pytest.fixture(scope="module")
def schedule():
    return df.NoiseSchedule.cosine(T)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def model_file(unet, schedule, folder):
    return export(unet, folder / "model.onnx", schedule=schedule)


@pytest.fixture(scope="module")
def ddpm_file(unet, schedule, folder):
    return export(unet, folder / "ddpm.onnx", schedule=schedule, graph="ddpm_step")


@pytest.fixture(scope="module")
def ddim_file(schedule, folder):
    return export(small_unet(), folder / "ddim.onnx", schedule=schedule, graph="ddim_step", eta=0.5)


@pytest.fixture(scope="module")
def fp16_file(unet, folder):
    return export(unet, folder / "fp16.onnx", dtype=torch.float16)


# ------------------------------------------------------------------------------------------------ the model graph


def test_model_graph_is_valid_standard_onnx(model_file):
    proto = onnx.load(model_file)
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    onnx_export.check_model(proto)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)]
    assert {node.domain for node in proto.graph.node} == {""} and not proto.functions  # standard ops only
    ops = {node.op_type for node in proto.graph.node}
    assert "GroupNormalization" not in ops and "InstanceNormalization" in ops  # the pattern ORT fuses
    (sample, timestep), (output,) = proto.graph.input, proto.graph.output
    assert (sample.name, timestep.name, output.name) == ("sample", "timestep", "model_output")
    (sample_type, sample_dims), (t_type, t_dims), (out_type, out_dims) = map(value_info, (sample, timestep, output))
    assert (sample_type, t_type, out_type) == (FLOAT, INT64, FLOAT)
    batch = sample_dims[0]
    assert isinstance(batch, str) and t_dims == [batch] and out_dims[0] == batch  # one dynamic batch size
    assert sample_dims[1] == out_dims[1] == 3
    assert all(isinstance(d, str) for d in sample_dims[2:])  # dynamic H and W
    assert "model_output" in proto.doc_string


@pytest.mark.parametrize("batch,height,width", [(1, 16, 16), (3, 16, 16), (3, 8, 24)])
def test_model_graph_matches_torch(model_file, unet, batch, height, width):
    x = torch.randn(batch, 3, height, width)
    t = torch.tensor([0, 999, 417][:batch])
    assert_close(run_onnx(model_file, sample=x, timestep=t), torch_forward(unet, x, t))


def test_metadata_rebuilds_the_model_and_schedule(model_file, unet, schedule):
    metadata = read_metadata(onnx.load(model_file))
    assert metadata["graph"] == "model" and metadata["dtype"] == "float32" and metadata["opset"] == OPSET
    assert metadata["inputs"] == ["sample", "timestep"] and metadata["outputs"] == ["model_output"]
    assert metadata["sample_shape"] == [3, SIZE, SIZE]
    assert metadata["dynamic_spatial"] is True and metadata["spatial_factor"] == 4  # three levels
    assert metadata["prediction_type"] == "epsilon" and metadata["clip_sample"] is False
    assert metadata["schedule"]["name"] == schedule.name
    assert torch.equal(torch.tensor(metadata["schedule"]["betas"], dtype=torch.float64), schedule.betas)
    config = df.UNetConfig.from_dict(metadata["unet_config"])
    assert config == unet.config
    rebuilt = df.UNet(config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in unet.state_dict().items()}


def test_ort_refuses_inputs_outside_the_contract(model_file):
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, SIZE, SIZE).numpy()
    with pytest.raises(Exception, match="(?i)type"):
        session.run(None, {"sample": x, "timestep": torch.tensor([1, 2], dtype=torch.int32).numpy()})
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"sample": torch.randn(2, 4, SIZE, SIZE).numpy(), "timestep": torch.tensor([1, 2]).numpy()})


# ------------------------------------------------------------------------------------------------ the step graphs


@pytest.mark.parametrize("timesteps,height,width", [([0], 16, 16), ([T - 1, 17, 1], 16, 16), ([0, 3, 40], 8, 24)])
def test_ddpm_step_graph_matches_p_step(ddpm_file, unet, schedule, timesteps, height, width):
    batch = len(timesteps)
    x, z, t = torch.randn(batch, 3, height, width), torch.randn(batch, 3, height, width), torch.tensor(timesteps)
    expected = df.p_step(torch_forward(unet, x, t), t, x, schedule, noise=z)
    got = run_onnx(ddpm_file, sample=x, timestep=t, noise=z)
    assert got.dtype == torch.float32
    assert_close(got, expected)


def test_ddpm_step_adds_no_noise_at_t0(ddpm_file, unet, schedule):
    x, t = torch.randn(2, 3, SIZE, SIZE), torch.tensor([0, 0])
    a = run_onnx(ddpm_file, sample=x, timestep=t, noise=torch.randn_like(x))
    b = run_onnx(ddpm_file, sample=x, timestep=t, noise=torch.randn_like(x))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert_close(a, df.p_step(torch_forward(unet, x, t), t, x, schedule, noise=None, seed=0))


def test_step_graph_files(ddpm_file, ddim_file):
    for path, inputs in ((ddpm_file, ["sample", "timestep", "noise"]),
                         (ddim_file, ["sample", "timestep", "prev_timestep", "noise"])):
        proto = onnx.load(path)
        onnx_export.check_model(proto)
        assert [i.name for i in proto.graph.input] == inputs and [o.name for o in proto.graph.output] == ["prev_sample"]
        types = {i.name: value_info(i)[0] for i in proto.graph.input}
        assert types == {name: INT64 if "timestep" in name else FLOAT for name in inputs}
        assert "GroupNormalization" not in {node.op_type for node in proto.graph.node}
    metadata = read_metadata(onnx.load(ddim_file))
    assert metadata["graph"] == "ddim_step" and metadata["eta"] == 0.5 and metadata["spatial_factor"] == 2


@pytest.mark.parametrize("timesteps,previous,height,width", [
    ([T - 1, 30, 5], [30, 5, -1], 8, 8),  # -1 ends the chain at ᾱ = 1
    ([12], [11], 4, 10),
])
def test_ddim_step_graph_matches_ddim_step(ddim_file, schedule, timesteps, previous, height, width):
    model = small_unet()
    batch = len(timesteps)
    x, z = torch.randn(batch, 3, height, width), torch.randn(batch, 3, height, width)
    t, t_prev = torch.tensor(timesteps), torch.tensor(previous)
    expected = df.ddim_step(torch_forward(model, x, t), t, t_prev, x, schedule, eta=0.5, noise=z)
    assert_close(run_onnx(ddim_file, sample=x, timestep=t, prev_timestep=t_prev, noise=z), expected)


# ---------------------------------------------------------------------------------------------------------- fp16


def test_fp16_graph_is_close_to_fp32_torch(fp16_file, unet):
    proto = onnx.load(fp16_file)
    onnx_export.check_model(proto)
    assert read_metadata(proto)["dtype"] == "float16"
    (sample, timestep), (output,) = proto.graph.input, proto.graph.output
    assert (value_info(sample)[0], value_info(timestep)[0], value_info(output)[0]) == (FLOAT16, INT64, FLOAT16)
    for shape in ((1, 3, 16, 16), (3, 3, 8, 24)):
        x, t = torch.randn(shape), torch.tensor([999, 5, 250][: shape[0]])
        got = run_onnx(fp16_file, sample=x.half(), timestep=t)
        assert got.dtype == torch.float16
        expected = torch_forward(unet, x, t)
        error = (got.float() - expected).norm() / expected.norm()
        assert error < 1e-2, error


# ------------------------------------------------------------------------------------------------------ diffusers


@pytest.fixture(scope="module")
def diffusers_unet():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(1)
    config = config_to_diffusers(small_unet().config)
    model = diffusers.UNet2DModel.from_config(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return model.eval()


def test_diffusers_unet2dmodel_exports(diffusers_unet, folder):
    path = export(diffusers_unet, folder / "diffusers.onnx")
    assert read_metadata(onnx.load(path))["unet_config"] == small_unet().config.to_dict()
    for shape, timesteps in (((1, 3, 8, 8), [3]), ((3, 3, 12, 4), [0, 500, 999])):
        x, t = torch.randn(shape), torch.tensor(timesteps)
        assert_close(run_onnx(path, sample=x, timestep=t), torch_forward(diffusers_unet, x, t))


def test_diffusers_pipeline_folder_brings_its_schedule_and_options(diffusers_unet, tmp_path_factory):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2",
                                        prediction_type="v_prediction", variance_type="fixed_large",
                                        clip_sample=True, clip_sample_range=1.5)
    pipeline_folder = tmp_path_factory.mktemp("pipe")
    diffusers.DDPMPipeline(unet=diffusers_unet, scheduler=scheduler).save_pretrained(pipeline_folder)
    path = export(pipeline_folder, pipeline_folder / "step.onnx", graph="ddpm_step")
    metadata = read_metadata(onnx.load(path))
    assert (metadata["prediction_type"], metadata["variance_type"], metadata["clip_sample"],
            metadata["clip_sample_range"]) == ("v_prediction", "fixed_large", True, 1.5)
    schedule = df.NoiseSchedule.from_diffusers(scheduler)
    assert torch.equal(torch.tensor(metadata["schedule"]["betas"], dtype=torch.float64), schedule.betas)
    x, z, t = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8), torch.tensor([0, 7, T - 1])
    x[0] *= 3  # clipping at ±1.5 matters
    expected = df.p_step(torch_forward(diffusers_unet, x, t), t, x, schedule, noise=z,
                         prediction_type="v_prediction", variance_type="fixed_large", clip_sample=True,
                         clip_sample_range=1.5)
    assert_close(run_onnx(path, sample=x, timestep=t, noise=z), expected)


def test_arguments_override_a_pipeline_folders_options(diffusers_unet, tmp_path, monkeypatch):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T, prediction_type="v_prediction", clip_sample=True)
    diffusers.DDPMPipeline(unet=diffusers_unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    seen = {}

    class Stop(Exception):
        pass

    def capture(graph, unet, schedule, dtype, prediction_type, variance_type, clip_sample, clip_sample_range, eta,
                null_class_label=None):
        seen.update(schedule=schedule, options=(prediction_type, variance_type, clip_sample, clip_sample_range))
        raise Stop  # before the (slow) export

    monkeypatch.setattr(onnx_export, "_graph_module", capture)
    with pytest.raises(Stop):
        export(tmp_path / "pipe", tmp_path / "a.onnx", graph="ddpm_step")
    assert seen["options"] == ("v_prediction", "fixed_small", True, 1.0) and seen["schedule"].num_timesteps == T
    cosine = df.NoiseSchedule.cosine(10)
    with pytest.raises(SetupConflict, match="prediction_type='epsilon' contradicts the setup stored with"):
        export(tmp_path / "pipe", tmp_path / "a.onnx", graph="ddpm_step", prediction_type="epsilon")
    with pytest.raises(SetupConflict, match="schedule=cosine, T=10 contradicts"):
        export(tmp_path / "pipe", tmp_path / "a.onnx", graph="ddpm_step", schedule=cosine)
    with pytest.raises(Stop):  # asked for: the given values replace the stored ones
        export(tmp_path / "pipe", tmp_path / "a.onnx", graph="ddpm_step", schedule=cosine, override_setup=True,
               prediction_type="epsilon", clip_sample=False, clip_sample_range=2.0)
    assert seen["options"] == ("epsilon", "fixed_small", False, 2.0)
    assert torch.equal(seen["schedule"].betas, cosine.betas)
    assert sorted(os.listdir(tmp_path)) == ["pipe"]


# ------------------------------------------------------------------------------------------ other models, writes


def test_a_module_that_is_no_unet_exports_with_static_spatial_size(tmp_path):
    torch.manual_seed(0)
    toy = ToyModel().eval()
    path = export(toy, tmp_path / "toy.onnx", (3, 5, 7))
    proto = onnx.load(path)
    metadata = read_metadata(proto)
    assert metadata["unet_config"] is None and metadata["schedule"] is None and metadata["dynamic_spatial"] is False
    assert value_info(proto.graph.input[0])[1][1:] == [3, 5, 7]
    for batch in (1, 4):
        x, t = torch.randn(batch, 3, 5, 7), torch.arange(batch) * 100
        with torch.no_grad():
            assert_close(run_onnx(path, sample=x, timestep=t), toy(x, t))
    with pytest.raises(ValueError, match="dynamic_spatial"):
        export(toy, tmp_path / "toy2.onnx", (3, 8, 8), dynamic_spatial=True)
    with pytest.raises(ValueError, match="sample_shape"):
        export(toy, tmp_path / "toy2.onnx")  # no config to take it from


def test_only_the_exporters_own_notes_are_silenced(caplog):
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with onnx_export._quiet_exporter():
            registration.warning("torchvision is not installed. Skipping %s", "torchvision::nms")
            registration.warning("a note of another kind")
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
            warnings.warn("another FutureWarning", FutureWarning)
        registration.warning("torchvision is not installed. Skipping %s", "torchvision::roi_align")  # after: as usual
    assert [record.getMessage() for record in caplog.records] == [
        "a note of another kind", "torchvision is not installed. Skipping torchvision::roi_align"]
    assert [str(w.message) for w in caught] == ["another FutureWarning"]


def test_the_path_is_a_onnx_file_whose_missing_folders_are_made(tmp_path):
    with pytest.raises(ValueError, match=r"path .*toy\.txt: expected a file name ending in \.onnx"):
        export(ToyModel(), tmp_path / "toy.txt", (3, 4, 4))
    assert not os.listdir(tmp_path)  # refused before the export's work
    path = export(ToyModel(), tmp_path / "new" / "folders" / "toy.ONNX", (3, 4, 4))  # the CLI's rule: made
    assert path.is_file() and os.listdir(tmp_path / "new" / "folders") == ["toy.ONNX"]


def test_writes_are_atomic(tmp_path, monkeypatch):
    torch.manual_seed(0)
    path = tmp_path / "toy.onnx"
    path.write_bytes(b"an older, longer file " * 10_000)
    export(ToyModel(), path, (3, 4, 4))  # replaced whole
    onnx_export.check_model(onnx.load(path))
    old = path.read_bytes()

    def failing_export(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    with monkeypatch.context() as patch:
        patch.setattr(torch.onnx, "export", failing_export)
        with pytest.raises(RuntimeError, match="exporter crashed"):
            export(ToyModel(), path, (3, 4, 4))
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["toy.onnx"]

    def failing_rename(source, target):  # the crash between writing the temp file and renaming it
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", failing_rename)
    with pytest.raises(OSError, match="disk gone"):
        export(ToyModel(), path, (3, 4, 4))
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["toy.onnx"]  # no temp file left behind


# ---------------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("kwargs,error,match", [
    ({"graph": "nope"}, ValueError, "graph must be one of model, ddpm_step, ddim_step, dpm_solver_step"),
    ({"graph": "ddpm_step", "schedule": None}, ValueError, "schedule"),
    ({"graph": "ddim_step", "schedule": None}, ValueError, "schedule"),
    ({"schedule": "linear"}, TypeError, "schedule must be a ddpm_fast.NoiseSchedule"),
    ({"dtype": torch.bfloat16}, TypeError, "dtype must be torch.float32 or torch.float16"),
    ({"sample_shape": (3, 16)}, ValueError, "sample_shape"),
    ({"sample_shape": (3, 0, 16)}, ValueError, "sample_shape"),
    ({"sample_shape": (3, 16.0, 16)}, ValueError, "sample_shape"),
    ({"sample_shape": (3, 18, 16)}, ValueError, "multiples of 4"),
    ({"sample_shape": (3, 16, 10), "dynamic_spatial": True}, ValueError, "multiples of 4"),
    ({"prediction_type": "score"}, ValueError, "prediction_type"),
    ({"variance_type": "learned"}, ValueError, "variance_type"),
    ({"clip_sample": "yes"}, TypeError, "clip_sample"),
    ({"clip_sample_range": 0.0}, ValueError, "clip_sample_range"),
    ({"eta": -0.5}, ValueError, "eta"),
    ({"opset": 17}, ValueError, "opset"),
])
def test_bad_arguments_are_refused_before_exporting(unet, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        export(unet, tmp_path / "x.onnx", **kwargs)
    assert not os.listdir(tmp_path)


def test_bad_models_and_files(tmp_path):
    with pytest.raises(TypeError, match="model must be an nn.Module, a model folder or a Hub id"):
        export(42, tmp_path / "x.onnx")
    with pytest.raises(FileNotFoundError, match="missing: no such folder"):
        export(tmp_path / "missing", tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="not a training run.*config.json"):
        export(tmp_path, tmp_path / "x.onnx")  # an empty folder
    checkpoint = small_unet().save(tmp_path / "ckpt")
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="model.safetensors"):
        export(checkpoint, tmp_path / "x.onnx")
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_read_metadata_of_a_foreign_onnx_file(tmp_path):
    helper = onnx.helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "plain",
                              [helper.make_tensor_value_info("x", FLOAT, [1])],
                              [helper.make_tensor_value_info("y", FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "plain.onnx")
    with pytest.raises(ValueError, match="no ddpm_fast metadata"):
        read_metadata(onnx.load(tmp_path / "plain.onnx"))


# ------------------------------------------------------------------------------------------------------------ CLI


def test_cli_export_from_a_checkpoint(tmp_path, capsys, caplog):
    model = small_unet(seed=3)
    checkpoint = model.save(tmp_path / "ckpt")
    out = tmp_path / "out" / "unet.onnx"
    out.parent.mkdir()
    out.write_bytes(b"not onnx")  # replaced whole
    caplog.set_level(logging.INFO)
    with untraced(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--schedule", "sigmoid",
                         "--train-timesteps", "30", "--prediction-type", "sample", "--static-spatial"]) == 0
    printed = capsys.readouterr()
    line = printed.out
    assert line.count("\n") == 1 and str(out) in line and "model graph" in line and "float32" in line
    # torch's notes on its own exporter stay off the user's stderr: its LeafSpec FutureWarning, "The axis name: batch
    # will not be used" for each axis two inputs share, and a "torchvision is not installed. Skipping
    # torchvision::nms" log line for each torchvision op it knows
    noise = [str(w.message) for w in caught if "LeafSpec" in str(w.message) or "axis name" in str(w.message)]
    noise += [record.getMessage() for record in caplog.records if "torchvision" in record.getMessage()]
    assert not noise and "torchvision" not in printed.err and "LeafSpec" not in printed.err
    assert "axis name" not in printed.err
    assert os.listdir(out.parent) == ["unet.onnx"]
    proto = onnx.load(out)
    metadata = read_metadata(proto)
    assert metadata["graph"] == "model" and metadata["prediction_type"] == "sample"
    assert metadata["dynamic_spatial"] is False and value_info(proto.graph.input[0])[1][1:] == [3, 8, 8]
    assert metadata["unet_config"] == model.config.to_dict()
    assert torch.equal(torch.tensor(metadata["schedule"]["betas"], dtype=torch.float64),
                       df.NoiseSchedule.sigmoid(30).betas)
    for shape, timesteps in (((1, 3, 8, 8), [29]), ((4, 3, 8, 8), [0, 11, 3, 17])):
        x, t = torch.randn(shape), torch.tensor(timesteps)
        assert_close(run_onnx(out, sample=x, timestep=t), torch_forward(model, x, t))


@pytest.fixture
def captured_export(monkeypatch):
    """`ddpm-fast export` with export_onnx replaced by a recorder: what the flags become, without an export."""
    import ddpm_fast.export

    calls = []

    def record(source, path, **kwargs):
        calls.append((source, path, kwargs))
        return path

    monkeypatch.setattr(ddpm_fast.export, "export_onnx", record)
    return calls


def test_cli_flags_become_export_arguments(tmp_path, captured_export, capsys):
    from ddpm_fast.diffusion_setup import DiffusionSetup

    unet = df.UNet.from_preset("tiny", sample_size=8)
    unet.save(tmp_path / "ckpt")  # no stored setup: the defaults, said in a warning
    stored = DiffusionSetup.from_schedule(df.NoiseSchedule.cosine(20), prediction_type="v_prediction",
                                          clip_sample=True, timestep_spacing="trailing", sample_shape=(3, 8, 8))
    df.save_diffusers_pipeline(unet, tmp_path / "pipe", setup=stored)
    out = str(tmp_path / "x.onnx")
    with pytest.warns(UserWarning, match="ckpt stores no diffusion setup; using schedule=linear, T=1000"):
        assert cli.main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--out", out]) == 0
    _, _, kwargs = captured_export[-1]
    assert kwargs["graph"] == "model" and kwargs["dtype"] is torch.float32 and kwargs["dynamic_spatial"] is None
    setup = kwargs["setup"]
    assert setup.schedule_name == "linear" and setup.num_train_timesteps == 1000  # as `sample`
    assert (setup.prediction_type, setup.variance_type, setup.clip_sample) == ("epsilon", "fixed_small", False)
    # a pipeline folder: its own schedule and options; a flag that agrees with them is fine
    assert cli.main(["export", "--diffusers", str(tmp_path / "pipe"), "--out", out, "--graph", "ddim_step",
                     "--eta", "0.3", "--dtype", "float16", "--static-spatial", "--clip-sample"]) == 0
    _, _, kwargs = captured_export[-1]
    assert kwargs["eta"] == 0.3 and kwargs["dtype"] is torch.float16 and kwargs["dynamic_spatial"] is False
    assert kwargs["setup"].prediction_type == "v_prediction" and kwargs["setup"].timestep_spacing == "trailing"
    assert kwargs["setup"].same_betas(df.NoiseSchedule.cosine(20)) and kwargs["setup"].clip_sample
    assert cli.main(["export", "--diffusers", str(tmp_path / "pipe"), "--out", out, "--graph", "ddpm_step",
                     "--schedule", "linear", "--train-timesteps", "20", "--variance-type", "fixed_large",
                     "--override-setup"]) == 0
    _, _, kwargs = captured_export[-1]
    assert kwargs["setup"].schedule_name == "linear" and kwargs["setup"].num_train_timesteps == 20
    assert kwargs["setup"].variance_type == "fixed_large" and kwargs["contrib_ops"] is False
    assert kwargs["setup"].prediction_type == "v_prediction"  # what no flag replaced stays
    assert "ddpm_step graph (sample, timestep, noise -> prev_sample)" in capsys.readouterr().out
    with pytest.warns(UserWarning):
        assert cli.main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--out", out, "--contrib-ops"]) == 0
    assert captured_export[-1][2]["contrib_ops"] is True and "CUDA contrib ops" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, match", [
    (["--checkpoint", "{tmp}"], "the following arguments are required: --out"),
    (["--checkpoint", "{tmp}", "--out", "{tmp}/x.pt"], r"--out .*x\.pt: expected a \.onnx path"),
    (["--checkpoint", "{tmp}", "--out", "{tmp}/folder.onnx"], "folder.onnx: is a folder"),
    (["--checkpoint", "{tmp}/missing", "--out", "{tmp}/x.onnx"], r"--checkpoint .*missing: no such folder"),
    (["--diffusers", "{tmp}/missing", "--out", "{tmp}/x.onnx"], r"--diffusers .*missing: no such folder"),
    (["--out", "{tmp}/x.onnx"], "one of the arguments --checkpoint --diffusers is required"),
    (["--checkpoint", "{tmp}", "--out", "{tmp}/x.onnx", "--eta", "0.5"], "--eta applies to --graph ddim_step only"),
    (["--checkpoint", "{tmp}", "--out", "{tmp}/x.onnx", "--graph", "step"], "invalid choice"),
    (["--checkpoint", "{tmp}", "--out", "{tmp}/x.onnx", "--dtype", "bfloat16"],
     "--dtype bfloat16: an ONNX file takes float32 or float16"),
    (["--checkpoint", "{tmp}", "--out", "{tmp}/x.onnx", "--dtype", "float64"], "invalid choice"),
    (["--checkpoint", "{tmp}", "--out", "{tmp}/x.onnx", "--train-timesteps", "0"], "expected a positive integer"),
])
def test_cli_argument_errors(arguments, match, tmp_path, capsys):
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", *(a.replace("{tmp}", str(tmp_path)) for a in arguments)])
    assert exit_info.value.code == 2
    assert re.search(match, capsys.readouterr().err)


def test_cli_export_of_a_folder_that_is_no_model_is_an_error_naming_the_file(tmp_path, capsys):
    out = tmp_path / "x.onnx"
    assert cli.main(["export", "--checkpoint", str(tmp_path), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "ddpm-fast export: error:" in error and str(tmp_path / "config.json") in error
    assert not out.exists()


def test_cli_choices_follow_the_exporter():
    export_parser = cli.build_parser()._subparsers._group_actions[0].choices["export"]
    choices = {action.dest: tuple(action.choices) for action in export_parser._actions if action.choices}
    assert choices["graph"] == GRAPHS
    # --dtype lists both formats' dtypes; --format onnx takes the exporter's (bfloat16 is a pt2 package's only)
    assert set(choices["dtype"]) == set(onnx_export.DTYPES.values()) | set(pt2_export.DTYPES.values())
    assert set(EXPORT_DTYPES) == set(onnx_export.DTYPES.values())
    assert choices["format"] == EXPORT_FORMATS
