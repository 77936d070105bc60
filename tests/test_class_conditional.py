"""Class-conditional training and classifier-free guidance, end to end: dataset labels, label dropout, the Trainer,
FastSampler and OnnxSampler with class labels and guidance against a reference loop of two model calls per step,
the stored setup, the CLI, and TensorBoard events.

Whole-model runs use the torch references of the fused ops (cpu_reference); the guided kernels themselves are
proven against a float64 statement in test_guidance_step.py.
"""

import dataclasses
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import ddpm_fast as df
from ddpm_fast.cli import main as cli
from ddpm_fast.data.datasets import (Cifar10Dataset, ImageFolderDataset, LabelledImages, NpzDataset, ShapesDataset,
                                     _top_shape_kinds, dataset_labels)
from ddpm_fast.kernels import cpu_reference
from ddpm_fast.vocabulary import STREAM_INITIAL
from ddpm_fast.training.batches import label_drops
from ddpm_fast.training.config import TrainingConfig
from ddpm_fast.training.trainer import Trainer

# Left to the TRITON_INTERPRET=0 run (tests/conftest.py checks no test here reaches a kernel): every test runs inside
# cpu_reference() (an autouse fixture); the guided kernels are proven in test_guidance_step.py.
pytestmark = pytest.mark.torch_references

SMALL_MODEL = {"block_out_channels": (16, 32), "down_attention": (False, False), "up_attention": (False, True)}


@pytest.fixture(autouse=True)
def _torch_references():
    with cpu_reference():
        yield


def small_config(**changes):
    settings = dict(model_overrides=SMALL_MODEL, image_size=16, steps=4, batch_size=8, learning_rate=1e-3,
                    warmup_steps=1, num_train_timesteps=50, log_every=2, checkpoint_every=4, class_conditional=True)
    settings.update(changes)
    return TrainingConfig(**settings)


def conditional_unet(classes=4, out_channels=3, seed=0):
    torch.manual_seed(seed)
    return df.UNet.from_preset("tiny", sample_size=8, num_class_embeds=classes, out_channels=out_channels,
                               **SMALL_MODEL)


# ------------------------------------------------------------------------------------------------ dataset labels


def test_shapes_labels_are_the_top_shape_kind():
    data = ShapesDataset(num_images=300, image_size=16, seed=3)
    labels, names = dataset_labels(data)
    assert names == ("circle", "square", "triangle")
    assert labels.dtype == torch.int64 and labels.shape == (300,) and set(labels.tolist()) == {0, 1, 2}
    draws = np.random.default_rng([3, 0]).random((300, 12))
    single = draws[:, 1] >= 0.5  # one shape: its kind; two: the second's, drawn on top
    expected = np.where(single, np.minimum((draws[:, 2] * 3).astype(int), 2), np.minimum((draws[:, 7] * 3).astype(int), 2))
    assert labels.tolist() == expected.tolist() == _top_shape_kinds(draws).tolist()
    assert torch.equal(dataset_labels(ShapesDataset(num_images=300, image_size=16, seed=3))[0], labels)


def test_a_single_square_is_labelled_square():
    # Read the label back from pixels where that is easy: a lone shape's filled area tells a square from a circle.
    data = ShapesDataset(num_images=400, image_size=32, seed=0)
    draws = np.random.default_rng([0, 0]).random((400, 12))
    for index in np.flatnonzero(draws[:, 1] >= 0.5)[:40]:
        image = data.images[index].permute(1, 2, 0).reshape(-1, 3)
        background = torch.mode(image, dim=0).values
        shape_pixels = (image != background).any(dim=1).nonzero().squeeze(1)
        ys, xs = shape_pixels // 32, shape_pixels % 32
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fill = len(shape_pixels) / float(box)  # square ~1, circle ~pi/4, triangle ~1/2
        kind = 1 if fill > 0.9 else (0 if fill > 0.65 else 2)
        assert data.labels[index] == kind, (index, fill)


def test_image_folder_classes_are_its_sub_folders(tmp_path):
    for name, count in (("cats", 2), ("dogs", 3)):
        (tmp_path / name / "deeper").mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / name / ("deeper" if i else "") / f"{i}.png")
    data = ImageFolderDataset(tmp_path, 8)
    labels, names = dataset_labels(data)
    assert names == ("cats", "dogs") and labels.tolist() == [0, 0, 1, 1, 1]
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    with pytest.raises(ValueError, match="lie directly in .* no class sub-folder"):
        dataset_labels(ImageFolderDataset(tmp_path, 8))


def test_cifar_labels_and_a_dataset_without_classes(tmp_path):
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": [7, 0, 9]}, protocol=2))
    labels, names = dataset_labels(Cifar10Dataset(tmp_path, "test"))
    assert labels.tolist() == [7, 0, 9] and names[7] == "horse" and len(names) == 10
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": [7, 0, 10]}, protocol=2))
    with pytest.raises(ValueError, match="b'labels'"):
        Cifar10Dataset(tmp_path, "test")
    np.savez(tmp_path / "x.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="class-conditional training needs a dataset with classes.*NpzDataset"):
        dataset_labels(NpzDataset(tmp_path / "x.npz"))
    pair = LabelledImages(ShapesDataset(4, 8), torch.tensor([2, 1, 0, 2]))[1]
    assert pair[0].shape == (3, 8, 8) and pair[1] == 1


# ------------------------------------------------------------------------------------------------ label dropout


def test_label_dropout_rate_and_determinism():
    drops = torch.stack([label_drops(5, step, 256, 0.1) for step in range(200)])
    assert abs(drops.float().mean().item() - 0.1) < 0.006  # 51,200 draws: ~5 standard errors
    assert torch.equal(drops[17], label_drops(5, 17, 256, 0.1))
    assert not torch.equal(drops[17], label_drops(6, 17, 256, 0.1))
    assert not label_drops(5, 3, 256, 0.0).any()


def test_training_labels_reach_the_model_with_the_null_class(tmp_path):
    data = ShapesDataset(num_images=32, image_size=16, seed=0)
    trainer = Trainer(small_config(cond_drop_prob=0.5), tmp_path / "run", dataset=data, progress=False)
    assert trainer.model.config.num_class_embeds == 4 and trainer.null_class_label == 3
    seen = []
    forward = trainer.model.forward

    def spy(sample, timestep, class_labels=None):
        seen.append(class_labels.clone())
        return forward(sample, timestep, class_labels=class_labels)

    trainer.model.forward = spy
    summary = trainer.train()
    trainer.model.forward = forward
    assert summary.step == 4 and len(seen) == 4
    batches = trainer._loader(0).batch_sampler
    for step, (indices, labels) in enumerate(zip(batches, seen)):
        drop = label_drops(0, step, 8, 0.5)
        assert torch.equal(labels, torch.where(drop, 3, data.labels[indices]))
        if step == 3:
            break
    assert any((labels == 3).any() for labels in seen) and any((labels < 3).any() for labels in seen)
    setup = df.FastSampler.from_pretrained(tmp_path / "run", device="cpu").setup
    assert (setup.num_class_embeds, setup.null_class_label) == (4, 3)
    state = json.loads((summary.checkpoint / "state.json").read_text())
    assert state["setup"]["null_class_label"] == 3 and state["training_config"]["class_conditional"] is True


def test_class_conditional_needs_classes_and_owns_the_embedding(tmp_path):
    np.savez(tmp_path / "x.npz", images=np.zeros((16, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="needs a dataset with classes"):
        Trainer(small_config(data=str(tmp_path / "x.npz")), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="num_class_embeds"):
        small_config(model_overrides={**SMALL_MODEL, "num_class_embeds": 5})
    with pytest.raises(ValueError, match="cond_drop_prob"):
        small_config(cond_drop_prob=1.0)


# ------------------------------------------------------------------------------------------------ sampling


def reference_guided_chain(model, schedule, labels, null, w, timesteps, prediction_type, method="ddpm", seed=0,
                           prev=None):
    """Sampling as diffusers' pipelines write it: two model calls per step (conditional, then unconditional), the
    combination u + w·(c − u) in torch, then the unguided public step; the noise as FastSampler's seed= draws it."""
    batch = len(labels)
    shape = (batch, *model.config.sample_shape)
    x = torch.ops.ddpm_fast.philox_normal(torch.tensor([seed]), torch.zeros(batch, dtype=torch.int64), list(shape),
                                          0, STREAM_INITIAL, False)
    labels = torch.tensor(labels)
    for i, t in enumerate(timesteps):
        tt = torch.full((batch,), t)
        cond = model(x, tt, class_labels=labels)
        output = cond
        if w is not None:
            uncond = model(x, tt, class_labels=torch.full_like(labels, null))
            output = uncond + w * (cond - uncond)
        if method == "ddpm":
            x = df.p_step(output, tt, x, schedule, seed=seed, prediction_type=prediction_type)
        else:
            x = df.ddim_step(output, tt, prev[i], x, schedule, prediction_type=prediction_type)
    return x.clamp(-1, 1)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_guided_ddpm_equals_a_loop_of_two_model_calls(prediction_type):
    model = conditional_unet()
    schedule = df.NoiseSchedule.cosine(20)
    # NCHW, as the reference loop runs: the CPU layout a sampler times for itself depends on the machine's load.
    sampler = df.FastSampler(model, schedule, prediction_type=prediction_type, null_class_label=3, compile=False,
                             channels_last=False)
    images = sampler.sample(3, seed=4, class_labels=[0, 2, 1], guidance_scale=2.5)
    expected = reference_guided_chain(model, schedule, [0, 2, 1], 3, 2.5, range(19, -1, -1), prediction_type,
                                      seed=4)
    torch.testing.assert_close(images, expected, rtol=1e-4, atol=2e-4)  # 2B vs B convolutions round apart


def test_guided_respaced_ddpm_and_ddim_equal_the_reference_loop():
    model = conditional_unet(seed=1)
    schedule = df.NoiseSchedule.linear(40)
    sampler = df.FastSampler(model, schedule, null_class_label=3, compile=False, channels_last=False)  # as above
    timesteps = sampler.timesteps(8, "ddim")
    prev = timesteps[1:] + [-1]
    images = sampler.sample(2, seed=2, class_labels=[1, 0], guidance_scale=4.0, method="ddim",
                            num_inference_steps=8)
    expected = reference_guided_chain(model, schedule, [1, 0], 3, 4.0, timesteps, "epsilon", "ddim", seed=2,
                                      prev=prev)
    torch.testing.assert_close(images, expected, rtol=1e-4, atol=2e-4)  # 2B vs B convolutions round apart
    # respaced DDPM: the same guidance on a respaced chain equals sampling the respaced schedule directly
    respaced = sampler.sample(2, seed=2, class_labels=[1, 0], guidance_scale=4.0, num_inference_steps=8)
    assert respaced.shape == (2, 3, 8, 8) and torch.isfinite(respaced).all()
    unguided = sampler.sample(2, seed=2, class_labels=[1, 0], num_inference_steps=8)
    assert not torch.equal(respaced, unguided)


def test_guidance_scale_one_is_the_conditional_model_and_labels_steer():
    model = conditional_unet(seed=2)
    sampler = df.FastSampler(model, df.NoiseSchedule.linear(15), null_class_label=3, compile=False)
    conditional = sampler.sample(3, seed=0, class_labels=[0, 1, 2])
    assert torch.equal(sampler.sample(3, seed=0, class_labels=[0, 1, 2], guidance_scale=1.0), conditional)
    assert sampler.last_report.batch_size == 3
    expected = reference_guided_chain(model, df.NoiseSchedule.linear(15), [0, 1, 2], 3, None, range(14, -1, -1),
                                      "epsilon")
    torch.testing.assert_close(conditional, expected, rtol=1e-5, atol=2e-5)
    assert not torch.equal(sampler.sample(3, seed=0, class_labels=[2, 1, 0]), conditional)
    # w = 0 is the unconditional model: the null class's own samples (the null class is no label a caller may ask for)
    null_chain = reference_guided_chain(model, df.NoiseSchedule.linear(15), [3, 3, 3], 3, None, range(14, -1, -1),
                                        "epsilon")
    torch.testing.assert_close(sampler.sample(3, seed=0, class_labels=[0, 1, 2], guidance_scale=0.0), null_chain,
                               rtol=1e-4, atol=2e-4)
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 3\) \(the model's 3 classes\), got values "
                                         r"in \[0, 3\] \(3 is the null class.*guidance_scale=0"):
        sampler.sample(3, seed=0, class_labels=[0, 3, 3])


def test_guided_sampling_is_prefix_invariant_and_takes_a_generator():
    model = conditional_unet(seed=3, out_channels=6)  # a learned-variance model: the variance from the cond half
    sampler = df.FastSampler(model, df.NoiseSchedule.linear(12), variance_type="learned_range", null_class_label=3,
                             compile=False)
    full = sampler.sample(4, seed=9, class_labels=[0, 1, 2, 0], guidance_scale=3.0)
    assert torch.equal(full[:2], sampler.sample(2, seed=9, class_labels=[0, 1], guidance_scale=3.0))
    assert torch.equal(full[2:], sampler.sample(2, seed=9, class_labels=[2, 0], guidance_scale=3.0,
                                                sample_offset=2))
    a = sampler.sample(2, generator=torch.Generator().manual_seed(1), class_labels=[0, 1], guidance_scale=3.0)
    b = sampler.sample(2, generator=torch.Generator().manual_seed(1), class_labels=[0, 1], guidance_scale=3.0)
    assert torch.equal(a, b)


@pytest.mark.parametrize("call, error, match", [
    (dict(), ValueError, "class_labels is required.*for unconditional samples give any label with "
                         "guidance_scale=0"),
    (dict(class_labels=[0, 1]), ValueError, "one label per sample: \\[3\\]"),
    (dict(class_labels=[0, 1, 4]), ValueError, "lie in \\[0, 3\\)"),
    (dict(class_labels=3), ValueError, "lie in \\[0, 3\\).*3 is the null class"),
    (dict(class_labels=[-1, 0, 1]), ValueError, r"lie in \[0, 3\) \(the model's 3 classes\), got values in \[-1, 1\]$"),
    (dict(class_labels=[0.0, 1, 2]), TypeError, "class_labels"),
    (dict(class_labels=torch.zeros(3)), TypeError, "integer tensor"),
    (dict(class_labels=[0, 1, 2], guidance_scale="2"), TypeError, "guidance_scale"),
    (dict(class_labels=[0, 1, 2], guidance_scale=float("inf")), ValueError, "finite"),
])
def test_sampling_argument_errors(call, error, match):
    sampler = df.FastSampler(conditional_unet(), df.NoiseSchedule.linear(5), null_class_label=3, compile=False)
    with pytest.raises(error, match=match):
        sampler.sample(3, seed=0, **call)


def test_guidance_needs_a_null_class_and_a_conditional_model():
    no_null = df.FastSampler(conditional_unet(), df.NoiseSchedule.linear(5), compile=False)
    with pytest.raises(ValueError, match="null class"):
        no_null.sample(2, seed=0, class_labels=[0, 1], guidance_scale=2.0)
    assert no_null.sample(2, seed=0, class_labels=[0, 1]).shape == (2, 3, 8, 8)  # plain conditional is fine
    with pytest.raises(ValueError, match="null_class_label must be a class index in \\[0, 4\\)"):
        df.FastSampler(conditional_unet(), df.NoiseSchedule.linear(5), null_class_label=4)
    unconditional = df.UNet.from_preset("tiny", sample_size=8, **SMALL_MODEL)
    with pytest.raises(ValueError, match="no class embedding"):
        df.FastSampler(unconditional, df.NoiseSchedule.linear(5), null_class_label=0)
    sampler = df.FastSampler(unconditional, df.NoiseSchedule.linear(5), compile=False)
    with pytest.raises(ValueError, match="no class embedding"):
        sampler.sample(2, seed=0, class_labels=[0, 1])
    with pytest.raises(ValueError, match="class_labels is required"):
        df.FastSampler(conditional_unet(), df.NoiseSchedule.linear(5), null_class_label=3,
                       compile=False).sample(2, seed=0, guidance_scale=2.0)


def test_a_plain_callable_takes_class_labels_and_guidance():
    model = conditional_unet()
    calls = []

    def eps_model(x, t, class_labels=None):
        calls.append(len(class_labels))
        return model(x, t, class_labels=class_labels)

    sampler = df.FastSampler(eps_model, df.NoiseSchedule.linear(6), (3, 8, 8), null_class_label=3, compile=False)
    guided = sampler.sample(2, seed=0, class_labels=[0, 1], guidance_scale=2.0)
    assert set(calls) == {4}  # one call of 2B per step
    reference = df.FastSampler(model, df.NoiseSchedule.linear(6), null_class_label=3, compile=False)
    torch.testing.assert_close(guided, reference.sample(2, seed=0, class_labels=[0, 1], guidance_scale=2.0),
                               rtol=1e-4, atol=2e-4)


def test_class_names_travel_with_the_setup_and_name_the_grid_rows(tmp_path):
    setup = df.DiffusionSetup.from_schedule(df.NoiseSchedule.linear(10), num_class_embeds=4, null_class_label=3,
                                            class_names=["cat", "dog", "fox"])
    assert setup.class_names == ("cat", "dog", "fox")
    setup.save(tmp_path)
    assert df.DiffusionSetup.load(tmp_path) == setup
    assert setup.class_indices(["fox", 0, "cat"]) == [2, 0, 0]
    with pytest.raises(ValueError, match=r"class_labels 'cow' is not a class of this model \(its classes: 0 cat, "
                                         r"1 dog, 2 fox\)"):
        setup.class_indices(["cow"])
    unnamed = dataclasses.replace(setup, class_names=None)
    assert "class_names" not in unnamed.to_dict()  # a record without names reads as before
    with pytest.raises(ValueError, match=r"stores no class names; give class indices \(0 to 2\)"):
        unnamed.class_indices(["cat"])
    with pytest.raises(ValueError, match="class_names holds 4 names for a model of 3 classes"):
        dataclasses.replace(setup, class_names=("a", "b", "c", "d"))
    with pytest.raises(ValueError, match="class_names must be distinct"):
        dataclasses.replace(setup, class_names=("a", "a", "b"))

    from ddpm_fast.data.images import png_class_grid

    images = torch.linspace(-1, 1, 5).view(5, 1, 1, 1).expand(5, 1, 2, 2)  # image i is one grey level
    grid = np.array(Image.open(io.BytesIO(png_class_grid(images, [1, 0, 1, 1, 0], ("cat", "dog"), min_pixels=0))))
    margin = grid.shape[1] - 3 * 2
    assert grid.shape[0] == 2 * 2 and margin > 0  # rows: class 0 (samples 1, 4), class 1 (samples 0, 2, 3)
    tiles = grid[:, margin:]
    expected = ((images[:, 0, 0, 0] + 1) * 127.5).round().to(torch.uint8).tolist()
    assert [tiles[0, 0], tiles[0, 2], tiles[0, 4]] == [expected[1], expected[4], 0]  # black where cat runs short
    assert [tiles[2, 0], tiles[2, 2], tiles[2, 4]] == [expected[0], expected[2], expected[3]]


def test_setup_round_trip_of_the_null_class(tmp_path):
    model = conditional_unet()
    setup = df.DiffusionSetup.from_schedule(df.NoiseSchedule.linear(10), num_class_embeds=4, null_class_label=3,
                                            sample_shape=(3, 8, 8))
    model.save(tmp_path / "unet", setup=setup)
    sampler = df.FastSampler.from_pretrained(tmp_path / "unet", device="cpu")
    assert sampler.null_class_label == 3 and sampler.setup == setup
    with pytest.raises(df.SetupConflict, match="null_class_label=2 contradicts"):
        df.FastSampler.from_pretrained(tmp_path / "unet", null_class_label=2)
    with pytest.raises(ValueError, match="no class embedding"):
        dataclasses.replace(setup, num_class_embeds=None)
    with pytest.raises(ValueError, match="in \\[0, 4\\)"):
        dataclasses.replace(setup, null_class_label=4)


# ------------------------------------------------------------------------------------------------ ONNX


@pytest.fixture(scope="module")
def conditional_onnx(tmp_path_factory):
    """A class-conditional v-prediction UNet with its null class, exported as each graph."""
    pytest.importorskip("onnxruntime")
    from ddpm_fast.export import export_onnx

    folder = tmp_path_factory.mktemp("conditional_onnx")
    model = conditional_unet(seed=5)
    setup = df.DiffusionSetup.from_schedule(df.NoiseSchedule.cosine(16), prediction_type="v_prediction",
                                            num_class_embeds=4, null_class_label=3, sample_shape=(3, 8, 8),
                                            class_names=("cat", "dog", "fox"))
    model.save(folder / "unet", setup=setup)
    with cpu_reference():
        # static H, W: a third less export time; dynamic graphs are test_onnx_export's subject
        paths = {graph: export_onnx(folder / "unet", folder / f"{graph}.onnx", graph=graph, dynamic_spatial=False)
                 for graph in ("model", "ddpm_step", "ddim_step", "dpm_solver_step")}
    return folder / "unet", paths


@pytest.mark.torch_references
def test_python_samplers_take_class_names(conditional_onnx):
    """class_labels may name classes in Python too, where the sampler knows them (its setup's class_names): the same
    images as their indices, on FastSampler and on OnnxSampler of a file exported from it."""
    from ddpm_fast.export import OnnxSampler

    folder, paths = conditional_onnx
    sampler = df.FastSampler.from_pretrained(folder, compile=False)
    onnx = OnnxSampler(paths["model"])
    assert sampler.class_names == onnx.class_names == ("cat", "dog", "fox")
    assert sampler.setup.class_names == ("cat", "dog", "fox")  # what an export of this sampler stores
    for run in (sampler.sample, onnx.sample):
        chain = dict(seed=1, num_inference_steps=3, guidance_scale=2.0)
        assert torch.equal(run(3, class_labels=["cat", "fox", 1], **chain), run(3, class_labels=[0, 2, 1], **chain))
        assert torch.equal(run(2, class_labels="dog", **chain), run(2, class_labels=1, **chain))
        with pytest.raises(ValueError, match=r"class_labels 'wolf' is not a class of this model \(its classes: 0 cat"):
            run(2, class_labels=["cat", "wolf"], **chain)
    unnamed = df.FastSampler(conditional_unet(seed=5), df.NoiseSchedule.cosine(16), compile=False)
    assert unnamed.class_names is None
    with pytest.raises(ValueError, match="class_labels 'cat': this model stores no class names"):
        unnamed.sample(2, class_labels="cat")
    with pytest.raises(ValueError, match="class_names holds 2 names for a model of 4 classes"):
        df.FastSampler(conditional_unet(seed=5), df.NoiseSchedule.cosine(16), class_names=["a", "b"])
    with pytest.raises(TypeError, match="class_names must be a sequence of names"):
        df.FastSampler(conditional_unet(seed=5), df.NoiseSchedule.cosine(16), class_names="abc")


@pytest.mark.torch_references
def test_onnx_graphs_take_class_labels_and_guidance(conditional_onnx):
    import onnx

    from ddpm_fast.export.metadata import read_metadata
    from ddpm_fast.export.onnx_export import input_names

    _, paths = conditional_onnx
    for graph, path in paths.items():
        proto = onnx.load(str(path))
        names = [node.name for node in proto.graph.input]
        assert names == list(input_names(graph, True, True)) == read_metadata(proto)["inputs"]
        assert "class_labels" in names and (("guidance_scale" in names) == (graph != "model"))
        assert read_metadata(proto)["setup"]["null_class_label"] == 3


@pytest.mark.torch_references
@pytest.mark.parametrize("graph", ["model", "ddpm_step", "ddim_step", "dpm_solver_step"])
def test_onnx_sampler_equals_fast_sampler_with_labels_and_guidance(conditional_onnx, graph):
    from ddpm_fast.export import OnnxSampler

    unet_folder, paths = conditional_onnx
    fast = df.FastSampler.from_pretrained(unet_folder, device="cpu", compile=False)
    onnx_sampler = OnnxSampler(paths[graph])
    labels = [2, 0, 1]
    ddim = {"ddpm_step": {}, "dpm_solver_step": dict(method="sde_dpm_solver++", num_inference_steps=5)}.get(
        graph, dict(method="ddim", num_inference_steps=5))
    for guidance in (None, 3.0):
        with cpu_reference():  # the subject is the graph: the guided kernels are proven in test_guidance_step.py
            expected = fast.sample(3, seed=7, class_labels=labels, guidance_scale=guidance, **ddim)
            got = onnx_sampler.sample(3, seed=7, class_labels=labels, guidance_scale=guidance, **ddim)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="class_labels is required"):
        onnx_sampler.sample(2, seed=0)
    with pytest.raises(ValueError, match="lie in \\[0, 3\\) \\(the model's 3 classes\\)"):  # 3 is the null class
        onnx_sampler.sample(2, seed=0, class_labels=[0, 7])
    with pytest.raises(ValueError, match="3 is the null class"):
        onnx_sampler.sample(2, seed=0, class_labels=[0, 3])


@pytest.mark.torch_references
def test_onnx_step_graph_runs_one_guided_call(conditional_onnx):
    from ddpm_fast.export import OnnxSampler

    _, paths = conditional_onnx
    sampler = OnnxSampler(paths["ddpm_step"])
    x, noise = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    t, labels = torch.tensor([5, 9]), torch.tensor([0, 1])
    with cpu_reference():
        model = df.UNet.load(paths["ddpm_step"].parent / "unet")
        output = model(torch.cat([x, x]), torch.cat([t, t]), class_labels=torch.tensor([0, 1, 3, 3]))
        expected = df.p_step(output, t, x, df.NoiseSchedule.cosine(16), noise=noise, prediction_type="v_prediction",
                             guidance_scale=2.0)
    got = sampler.run(sample=x, timestep=t, noise=noise, class_labels=labels, guidance_scale=torch.tensor([2.0]))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="guidance_scale must have shape \\(1,\\)"):
        sampler.run(sample=x, timestep=t, noise=noise, class_labels=labels, guidance_scale=torch.tensor([2.0, 1.0]))


# ------------------------------------------------------------------------------------------------ CLI, logging


def test_cli_trains_a_class_conditional_model_and_samples_it_guided(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--run-dir", str(run), "--model", "tiny", "--image-size", "16", "--steps", "2",
                     "--batch-size", "8", "--train-timesteps", "20", "--class-conditional", "--cond-drop-prob",
                     "0.2", "--no-progress"]) == 0
    setup = json.loads(next((run / "checkpoints").iterdir()).joinpath("state.json").read_text())["setup"]
    assert (setup["num_class_embeds"], setup["null_class_label"]) == (4, 3)
    assert setup["class_names"] == ["circle", "square", "triangle"]  # the dataset's, stored with the setup
    out = tmp_path / "guided.safetensors"
    common = ["sample", "--checkpoint", str(run), "--device", "cpu", "--no-compile", "--steps", "4"]
    assert cli.main(common + ["--class-labels", "0,1,2", "--guidance-scale", "2", "--out", str(out)]) == 0
    from safetensors import safe_open

    with safe_open(str(out), "pt") as file:
        images, metadata = file.get_tensor("images"), file.metadata()
    assert images.shape == (3, 3, 16, 16)
    assert (metadata["class_labels"], metadata["guidance_scale"]) == ("0,1,2", "2.0")
    sampler = df.FastSampler.from_pretrained(run, device="cpu", compile=False)
    torch.testing.assert_close(images, sampler.sample(3, seed=0, num_inference_steps=4, class_labels=[0, 1, 2],
                                                      guidance_scale=2.0), rtol=1e-4, atol=3e-4)  # timed layouts
    assert cli.main(common + ["--class-labels", "1", "--num-samples", "2", "--out", str(tmp_path / "one.png")]) == 0
    # names as the setup stores them; a grid of several classes has one named row per class (16 px enlarged 11x)
    named = tmp_path / "named.png"
    assert cli.main(common + ["--class-labels", "triangle,circle,2,square", "--guidance-scale", "2", "--out",
                              str(named)]) == 0
    width, height = Image.open(named).size
    assert height == 3 * 16 * 11 and width > 2 * 16 * 11  # rows: circle, square, triangle (2); a margin of names
    capsys.readouterr()
    for flags, message in ((["--guidance-scale", "2"], "--guidance-scale needs --class-labels"),
                           (["--class-labels", "0,1", "--num-samples", "3"], "2 labels for --num-samples 3"),
                           (["--class-labels", "0,x"], "--class-labels 'x' is not a class of this model (its "
                                                       "classes: 0 circle, 1 square, 2 triangle)"),
                           (["--class-labels", "0,,1"], "comma-separated class indices or names"),
                           (["--class-labels", "0,9"], "--class-labels must lie in [0, 3) (the model's 3 classes)"),
                           (["--class-labels", "3,3"], "3 is the null class, internal to classifier-free "
                                                       "guidance: for unconditional samples give any class with "
                                                       "--guidance-scale 0"),
                           (["--class-labels", "-1,0"], "class indices must be >= 0, got -1"),
                           ([], "--class-labels is required")):
        assert exit_status(common + flags + ["--out", str(tmp_path / "x.png")]) == 2
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error and error.count("\n") == 1, error
    assert not (tmp_path / "x.png").exists()


def exit_status(argv):
    """The CLI's exit status, whether its parser exits (usage errors) or main returns it."""
    try:
        return cli.main(argv)
    except SystemExit as exit:
        return exit.code


def test_tensorboard_events_hold_the_scalars_and_grids(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = small_config(steps=4, log_every=2, sample_every=4, sample_count=3, sample_steps=3, tensorboard=True)
    Trainer(config, tmp_path / "run", dataset=ShapesDataset(32, 16), progress=False).train()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "train/grad_norm", "train/images_per_second"} <= set(tags["scalars"])
    assert [event.step for event in events.Scalars("train/loss")] == [2, 4]
    logged = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [event.value for event in events.Scalars("train/loss")] == pytest.approx(logged, rel=1e-6)
    assert {"samples", "data"} <= set(tags["images"])
    assert events.Images("samples")[0].step == 4


def test_tensorboard_missing_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ImportError("no tensorboard")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ValueError, match="pip install tensorboard"):
        Trainer(small_config(tensorboard=True), tmp_path / "run", dataset=ShapesDataset(32, 16), progress=False)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ compiled, graphed


class ConditionalConv(torch.nn.Module):
    """A cheap class-conditional ε(x, t, class_labels)."""

    def __init__(self, classes=4, width=8):
        super().__init__()
        self.inp = torch.nn.Conv2d(3, width, 3, padding=1)
        self.out = torch.nn.Conv2d(width, 3, 3, padding=1)
        self.time = torch.nn.Embedding(64, width)
        self.label = torch.nn.Embedding(classes, width)

    def forward(self, x, t, class_labels):
        return self.out(torch.tanh(self.inp(x) + (self.time(t) + self.label(class_labels))[:, :, None, None]))


def test_the_compiled_guided_step_equals_the_eager_one():
    model = ConditionalConv().eval()
    schedule = df.NoiseSchedule.linear(6)
    common = dict(dtype=torch.float32, null_class_label=3)
    eager = df.FastSampler(model, schedule, (3, 6, 6), compile=False, **common)
    compiled = df.FastSampler(model, schedule, (3, 6, 6), compile=True, **common)
    for w in (2.0, -1.5):  # the scale is a buffer: one compiled step serves both
        torch.testing.assert_close(compiled.sample(2, seed=1, class_labels=[0, 2], guidance_scale=w),
                                   eager.sample(2, seed=1, class_labels=[0, 2], guidance_scale=w),
                                   rtol=1e-5, atol=1e-5)
        assert compiled.last_report.compiled and not compiled.last_report.fell_back
    assert len(compiled.fast_path.runners) == 1


@pytest.mark.gpu
@pytest.mark.parametrize("method,steps", [("ddpm", None), ("ddpm", 7), ("ddim", 7)])
def test_guided_cuda_graphs_equal_the_eager_loop_for_any_scale_and_labels(method, steps):
    model = ConditionalConv().cuda()
    schedule = df.NoiseSchedule.linear(40)
    common = dict(dtype=torch.float32, compile=False, null_class_label=3)
    eager = df.FastSampler(model, schedule, (3, 16, 16), cuda_graphs=False, **common)
    graphed = df.FastSampler(model, schedule, (3, 16, 16), cuda_graphs=True, steps_per_graph=4, **common)
    for labels, w in (([0, 1, 2], 3.0), ([2, 2, 0], 0.5)):
        call = dict(seed=1, method=method, num_inference_steps=steps, class_labels=labels, guidance_scale=w)
        torch.testing.assert_close(graphed.sample(3, **call), eager.sample(3, **call), rtol=1e-5, atol=1e-5)
        assert graphed.last_report.cuda_graphs
    assert len(graphed.fast_path.runners) == 1  # one captured set served both scales and label sets


@pytest.mark.gpu
def test_the_guided_graphed_loop_never_syncs_with_the_host():
    sampler = df.FastSampler(ConditionalConv().cuda(), df.NoiseSchedule.linear(50), (3, 16, 16), compile=False,
                             null_class_label=3)
    sampler.sample(4, seed=0, class_labels=[0, 1, 2, 0], guidance_scale=2.0)  # warm-up and capture
    runner = next(iter(sampler.fast_path.runners.values()))
    runner.state.step_index.zero_()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        runner.run(50, None, sampler.device, None)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(runner.state.x).all()


def saved_without_null_class(folder, seed: int, num_timesteps: int) -> None:
    """A class-conditional UNet (4 classes, null class 3) saved in folder/unet with its setup, and as a diffusers
    pipeline in folder/pipeline, whose scheduler config stores no null class."""
    model = conditional_unet(seed=seed)
    setup = df.DiffusionSetup.from_schedule(df.NoiseSchedule.linear(num_timesteps), num_class_embeds=4,
                                            null_class_label=3, sample_shape=(3, 8, 8))
    model.save(folder / "unet", setup=setup)
    df.save_diffusers_pipeline(folder / "unet", folder / "pipeline")


def test_a_diffusers_folder_keeps_the_classes_and_takes_the_null_class_as_an_argument(tmp_path):
    pytest.importorskip("diffusers")
    saved_without_null_class(tmp_path, seed=6, num_timesteps=10)
    original = df.FastSampler.from_pretrained(tmp_path / "unet", device="cpu", compile=False)
    read_back = df.FastSampler.from_pretrained(tmp_path / "pipeline", device="cpu", compile=False)
    assert read_back.num_class_embeds == 4 and read_back.null_class_label is None
    with pytest.raises(ValueError, match="null class"):
        read_back.sample(2, seed=0, class_labels=[0, 1], guidance_scale=2.0)
    given = df.FastSampler.from_pretrained(tmp_path / "pipeline", device="cpu", compile=False, null_class_label=3)
    torch.testing.assert_close(given.sample(2, seed=0, class_labels=[0, 1], guidance_scale=2.0),
                               original.sample(2, seed=0, class_labels=[0, 1], guidance_scale=2.0),
                               rtol=1e-4, atol=3e-4)  # each sampler times its own CPU layout


# ------------------------------------------------------------------------------------------------ what a trial found


def test_a_guidance_scale_beyond_float32_is_refused_everywhere():
    sampler = df.FastSampler(conditional_unet(), df.NoiseSchedule.linear(5), null_class_label=3, compile=False)
    for w in (1e40, -3.5e38):
        with pytest.raises(ValueError, match="finite in float32"):
            sampler.sample(2, seed=0, class_labels=[0, 1], guidance_scale=w)
        with pytest.raises(ValueError, match="finite in float32"):
            df.p_step(torch.zeros(4, 3, 4, 4), 2, torch.zeros(2, 3, 4, 4), df.NoiseSchedule.linear(5), seed=0,
                      guidance_scale=w)


def test_numpy_labels_and_scales_are_accepted():
    sampler = df.FastSampler(conditional_unet(), df.NoiseSchedule.linear(5), null_class_label=3, compile=False)
    expected = sampler.sample(2, seed=0, class_labels=[0, 1], guidance_scale=2.0)
    for labels in (np.array([0, 1]), [np.int64(0), np.int64(1)]):
        assert torch.equal(sampler.sample(2, seed=0, class_labels=labels, guidance_scale=np.float32(2.0)), expected)
    assert torch.equal(sampler.sample(2, seed=0, class_labels=np.int64(1)),
                       sampler.sample(2, seed=0, class_labels=[1, 1]))
    with pytest.raises(TypeError, match="element of type float"):
        sampler.sample(2, seed=0, class_labels=[0, 1.0])


def test_guidance_on_an_unconditional_model_names_the_model_first():
    sampler = df.FastSampler(df.UNet.from_preset("tiny", sample_size=8, **SMALL_MODEL), df.NoiseSchedule.linear(5),
                             compile=False)
    with pytest.raises(ValueError, match="guidance_scale given, but this model has no class embedding"):
        sampler.sample(2, seed=0, guidance_scale=2.0)


def test_no_label_dropout_trains_no_null_class(tmp_path):
    trainer = Trainer(small_config(cond_drop_prob=0.0, steps=1), tmp_path / "run", dataset=ShapesDataset(16, 16),
                      progress=False)
    assert trainer.model.config.num_class_embeds == 3 and trainer.null_class_label is None
    trainer.train()
    sampler = df.FastSampler.from_pretrained(tmp_path / "run", device="cpu", compile=False)
    assert sampler.setup.null_class_label is None
    with pytest.raises(ValueError, match="null class"):
        sampler.sample(2, seed=0, class_labels=[0, 1], guidance_scale=2.0)
    with pytest.raises(ValueError, match="cond_drop_prob applies to class_conditional=True"):
        small_config(class_conditional=False, cond_drop_prob=0.3)


def test_cli_drop_probability_needs_class_conditional_and_the_banner_names_the_classes(tmp_path, capsys):
    common = ["train", "--model", "tiny", "--image-size", "16", "--steps", "1", "--batch-size", "4",
              "--train-timesteps", "10", "--no-progress"]
    assert cli.main(common + ["--run-dir", str(tmp_path / "a"), "--cond-drop-prob", "0.3"]) == 2
    assert "--cond-drop-prob applies to --class-conditional" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert cli.main(common + ["--run-dir", str(tmp_path / "b"), "--class-conditional"]) == 0
    assert "class-conditional: 3 classes (0 circle, 1 square, 2 triangle); null class 3" in capsys.readouterr().out


def test_tensorboard_keeps_the_checkpoint_steps_events_on_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = small_config(steps=4, log_every=2, checkpoint_every=4, tensorboard=True)
    Trainer(config, tmp_path / "run", dataset=ShapesDataset(32, 16), progress=False).train()
    Trainer(config.replace(steps=6), tmp_path / "run", dataset=ShapesDataset(32, 16), resume=True,
            progress=False).train()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == [2, 4, 6]


@pytest.mark.torch_references
def test_null_class_label_flag_and_argument_for_a_folder_that_stores_none(tmp_path, capsys):
    pytest.importorskip("diffusers")
    from ddpm_fast.export import OnnxSampler, export_onnx

    saved_without_null_class(tmp_path, seed=7, num_timesteps=8)
    out = tmp_path / "g.safetensors"
    common = ["sample", "--checkpoint", str(tmp_path / "pipeline"), "--device", "cpu", "--no-compile",
              "--class-labels", "0,1", "--guidance-scale", "2", "--out", str(out)]
    assert cli.main(common) == 2 and "--null-class-label" in capsys.readouterr().err
    with cpu_reference():  # the subject is the null class's plumbing; the guided kernels have their own tests
        assert cli.main(common + ["--null-class-label", "3"]) == 0
    from safetensors.torch import load_file

    with cpu_reference():
        expected = df.FastSampler.from_pretrained(tmp_path / "unet", device="cpu", compile=False).sample(
            2, seed=0, class_labels=[0, 1], guidance_scale=2.0)
    torch.testing.assert_close(load_file(str(out))["images"], expected, rtol=1e-4, atol=3e-4)  # layouts may differ
    with cpu_reference():
        export_onnx(tmp_path / "pipeline", tmp_path / "m.onnx", dynamic_spatial=False)  # a third less export time
    with pytest.raises(ValueError, match="null class"):
        OnnxSampler(tmp_path / "m.onnx").sample(2, seed=0, class_labels=[0, 1], guidance_scale=2.0)
    with cpu_reference():
        guided = OnnxSampler(tmp_path / "m.onnx", null_class_label=3).sample(2, seed=0, class_labels=[0, 1],
                                                                             guidance_scale=2.0)
    # ONNX Runtime's convolutions sum in another order than torch's; guidance at w = 2 takes ε_u + 2(ε_c − ε_u), which
    # triples that difference, and 8 steps carry it (seen: 4.6e-4 on an Intel Xeon with AVX-512)
    torch.testing.assert_close(guided, expected, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="class_labels must lie in \\[0, 4\\)"):
        OnnxSampler(tmp_path / "m.onnx").run(sample=torch.zeros(2, 3, 8, 8), timestep=torch.tensor([1, 2]),
                                            class_labels=torch.tensor([0, 9]))
