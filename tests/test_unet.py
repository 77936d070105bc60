"""ddpm_fast.UNet: preset sizes, parity with diffusers' UNet2DModel, checkpoints, bf16 channels-last, torch.compile.

Whole-model parity at full width runs the GroupNorm references (`cpu_reference`): the interpreter executes Triton
programs one at a time and would take minutes per forward. The tiny model runs the interpreted kernels themselves,
forward and backward, so the fused op is also proven inside the network.
"""

import json
import os

import pytest
import torch

import ddpm_fast as df
from ddpm_fast.kernels import launch
from ddpm_fast.models import config as unet_config
from ddpm_fast.models.config import UNetConfig, config_to_diffusers

CIFAR_CONFIG = {  # google/ddpm-cifar10-32 config.json, as published
    "_class_name": "UNet2DModel", "_diffusers_version": "0.0.4", "act_fn": "silu", "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256], "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"], "downsample_padding": 0,
    "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3, "layers_per_block": 2, "mid_block_scale_factor": 1,
    "norm_eps": 1e-06, "norm_num_groups": 32, "out_channels": 3, "sample_size": 32,
    "time_embedding_type": "positional", "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
LSUN_256_CONFIG = {  # google/ddpm-{celebahq,church,bedroom,cat}-256
    **CIFAR_CONFIG, "block_out_channels": [128, 128, 256, 256, 512, 512], "sample_size": 256,
    "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
}


def diffusers_model(config: dict, seed: int = 0):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(seed)
    model = diffusers.UNet2DModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    with torch.no_grad():  # random, non-trivial weights everywhere (diffusers zero-inits nothing, but be sure)
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return model.eval()


def assert_same_outputs(theirs, ours, shape, timesteps, class_labels=None, rtol=1e-4):
    x = torch.randn(shape)
    t = torch.tensor(timesteps)
    with torch.no_grad():
        expected = theirs(x, t, class_labels=class_labels).sample
        actual = ours(x, t, class_labels=class_labels)
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.torch_references
def test_preset_parameter_counts():
    assert df.UNet.from_preset("ddpm-cifar10").num_parameters() == 35_746_307
    assert df.UNet.from_preset("ddpm-256").num_parameters() == 113_673_219
    assert df.UNet.from_preset("tiny").num_parameters() < 2_000_000
    with pytest.raises(ValueError, match="unknown preset"):
        df.UNet.from_preset("ddpm-cifar100")


@pytest.mark.torch_references
def test_presets_match_the_published_diffusers_configs():
    assert unet_config.config_from_diffusers(CIFAR_CONFIG) == UNetConfig()
    assert unet_config.config_from_diffusers(LSUN_256_CONFIG) == df.UNet.from_preset("ddpm-256").config


@pytest.mark.torch_references
def test_attention_levels_from_resolutions():
    down, up = UNetConfig.attention_at(32, 4, [16])  # ddpm-cifar10: attention at 16×16
    assert (down, up) == (UNetConfig().down_attention, UNetConfig().up_attention)
    preset = df.UNet.from_preset("ddpm-256").config
    assert UNetConfig.attention_at(256, 6, [16]) == (preset.down_attention, preset.up_attention)


@pytest.mark.torch_references
@pytest.mark.parametrize("layout,shape", [(CIFAR_CONFIG, (2, 3, 32, 32)), (LSUN_256_CONFIG, (1, 3, 64, 64))],
                         ids=["cifar10", "256"])
def test_parity_with_diffusers_saved_and_loaded(tmp_path, layout, shape):
    theirs = diffusers_model(layout)
    theirs.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    ours = df.UNet.from_diffusers(tmp_path).eval()
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
    with launch.cpu_reference():
        assert_same_outputs(theirs, ours, shape, [3, 999][: shape[0]])


def test_parity_with_interpreted_kernels_in_the_network(tmp_path):
    theirs = diffusers_model(config_to_diffusers(df.UNet.from_preset("tiny").config))
    ours = df.UNet.from_diffusers(theirs).eval()
    assert_same_outputs(theirs, ours, (2, 3, 16, 16), [0, 500])


def test_scale_shift_multihead_class_conditional_parity():
    config = {**CIFAR_CONFIG, "block_out_channels": [32, 64], "norm_num_groups": 8, "attention_head_dim": 8,
              "down_block_types": ["AttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "AttnUpBlock2D"],
              "resnet_time_scale_shift": "scale_shift", "num_class_embeds": 10, "flip_sin_to_cos": True,
              "freq_shift": 0, "downsample_padding": 1, "center_input_sample": True, "mid_block_scale_factor": 2.0}
    theirs = diffusers_model(config)
    ours = df.UNet.from_diffusers(theirs).eval()
    assert ours.config.resnet_time_scale_shift == "scale_shift" and ours.config.num_class_embeds == 10
    assert_same_outputs(theirs, ours, (2, 3, 8, 8), [7, 123], class_labels=torch.tensor([1, 9]))


@pytest.mark.torch_references
def test_attn_norm_num_groups_applies_to_the_mid_attention_only():
    config = {**CIFAR_CONFIG, "block_out_channels": [16, 32], "norm_num_groups": 8, "attn_norm_num_groups": 4,
              "down_block_types": ["AttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "AttnUpBlock2D"]}
    theirs = diffusers_model(config)
    ours = df.UNet.from_diffusers(theirs).eval()
    with launch.cpu_reference():
        assert_same_outputs(theirs, ours, (2, 3, 8, 8), [7, 123])


def test_old_attention_key_names_and_bin_weights(tmp_path):
    # google/ddpm-* checkpoints name attention weights query/key/value/proj_attn; .bin files load weights_only.
    theirs = diffusers_model(config_to_diffusers(df.UNet.from_preset("tiny").config))
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for key, value in theirs.state_dict().items():
        for new, old in renames.items():
            if ".attentions." in key and f".{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
        state[key] = value
    torch.save(state, tmp_path / "diffusion_pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(dict(theirs.config)))
    ours = df.UNet.from_diffusers(tmp_path).eval()
    with launch.cpu_reference():
        assert_same_outputs(theirs, ours, (1, 3, 16, 16), [42])


def test_pipeline_folder_with_unet_subfolder(tmp_path):
    theirs = diffusers_model(config_to_diffusers(df.UNet.from_preset("tiny").config))
    theirs.save_pretrained(tmp_path / "unet")
    ours = df.UNet.from_diffusers(tmp_path)
    assert ours.config == df.UNet.from_preset("tiny").config


@pytest.mark.parametrize("field,value,match", [
    ("time_embedding_type", "fourier", "time_embedding_type"),
    ("down_block_types", ["CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"], "down_block_types"),
    ("up_block_types", ["UpBlock2D", "UpBlock2D", "SkipUpBlock2D", "UpBlock2D"], "up_block_types"),
    ("resnet_time_scale_shift", "spatial", "resnet_time_scale_shift"),
    ("act_fn", "gelu", "act_fn"),
    ("downsample_type", "resnet", "downsample_type"),
    ("cross_attention_dim", 768, "cross_attention_dim"),
    ("_class_name", "UNet2DConditionModel", "_class_name"),
])
def test_unrepresentable_diffusers_config_names_the_field(tmp_path, field, value, match):
    (tmp_path / "config.json").write_text(json.dumps({**CIFAR_CONFIG, field: value}))
    with pytest.raises(ValueError, match=match):
        df.UNet.from_diffusers(tmp_path)


def test_missing_or_mismatched_weights_are_clear_errors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(config_to_diffusers(df.UNet.from_preset("tiny").config)))
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model"):
        df.UNet.from_diffusers(tmp_path)
    from safetensors.torch import save_file
    save_file({"conv_in.weight": torch.zeros(1)}, tmp_path / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ValueError, match="missing: .*wrong shape: conv_in.weight"):
        df.UNet.from_diffusers(tmp_path)
    with pytest.raises(FileNotFoundError):
        df.UNet.from_diffusers(tmp_path / "absent")


@pytest.mark.torch_references
def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = df.UNet.from_preset("tiny", num_class_embeds=3).eval()
    directory = model.save(tmp_path / "ckpt")
    assert sorted(os.listdir(directory)) == ["config.json", "model.safetensors"]  # no temp files left behind
    umask = os.umask(0)
    os.umask(umask)
    assert (directory / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    loaded = df.UNet.load(directory).eval()
    assert loaded.config == model.config
    x, t, labels = torch.randn(2, 3, 16, 16), torch.tensor([1, 2]), torch.tensor([0, 2])
    with torch.no_grad(), launch.cpu_reference():
        assert torch.equal(model(x, t, labels), loaded(x, t, labels))


def test_corrupt_checkpoint_is_refused_naming_the_file(tmp_path):
    directory = df.UNet.from_preset("tiny").save(tmp_path / "ckpt")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match="model.safetensors"):
        df.UNet.load(directory)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        df.UNet.load(directory)


@pytest.mark.torch_references
def test_bf16_channels_last_close_to_fp32():
    torch.manual_seed(0)
    model = df.UNet.from_preset("ddpm-cifar10").eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 700])
    fast = df.UNet.from_preset("ddpm-cifar10").eval()
    fast.load_state_dict(model.state_dict())
    fast = fast.to(torch.bfloat16, memory_format=torch.channels_last)
    with torch.no_grad(), launch.cpu_reference():
        expected = model(x, t)
        actual = fast(x.contiguous(memory_format=torch.channels_last), t)
    assert actual.dtype == torch.bfloat16 and actual.is_contiguous(memory_format=torch.channels_last)
    relative = ((actual.float() - expected).norm() / expected.norm()).item()
    assert relative < 2e-2, relative


def test_bf16_channels_last_through_interpreted_kernels():
    torch.manual_seed(0)
    model = df.UNet.from_preset("tiny").eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 700])
    with torch.no_grad():
        expected = model(x, t)
        actual = model.to(torch.bfloat16, memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last), t)
    relative = ((actual.float() - expected).norm() / expected.norm()).item()
    assert relative < 2e-2, relative


def test_backward_through_interpreted_kernels_matches_reference():
    torch.manual_seed(0)
    model = df.UNet.from_preset("tiny")
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 600])

    def gradients():
        model.zero_grad()
        model(x, t).square().mean().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    kernel_grads = gradients()
    with launch.cpu_reference():
        reference_grads = gradients()
    for name, grad in kernel_grads.items():
        torch.testing.assert_close(grad, reference_grads[name], rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.torch_references
def test_compile_fullgraph_on_cpu():
    torch.manual_seed(0)
    model = df.UNet.from_preset("tiny").eval()
    compiled = torch.compile(model, fullgraph=True)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 400])
    with torch.no_grad():
        actual = compiled(x, t)
        with launch.cpu_reference():
            expected = model(x, t)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.torch_references
def test_timestep_forms_and_bad_inputs():
    model = df.UNet.from_preset("tiny").eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad(), launch.cpu_reference():
        batch = model(x, torch.tensor([7, 7]))
        assert torch.equal(model(x, 7), batch)
        assert torch.equal(model(x, torch.tensor(7)), batch)
        assert torch.equal(model(x, 7.0), batch)  # an integral Python float is that step
        assert torch.equal(model(x, torch.tensor([7.0, 7.0])), batch)
        # diffusers truncates 7.6 to step 7 without a word; a DDPM timestep is an integer step, so it is refused
        with pytest.raises(ValueError, match="timestep must be an integer step, got 7.6"):
            model(x, 7.6)
        with pytest.raises(ValueError, match="timestep must hold integer steps"):
            model(x, torch.tensor([7.0, 7.5]))
        with pytest.raises(ValueError, match="timestep"):
            model(x, torch.tensor([1, 2, 3]))
        with pytest.raises(TypeError, match="timestep"):
            model(x, "7")
        with pytest.raises(ValueError, match="sample must be"):
            model(torch.randn(2, 4, 8, 8), 1)
        with pytest.raises(ValueError, match="class_labels"):
            model(x, 1, class_labels=torch.tensor([0, 1]))


@pytest.mark.parametrize("overrides,match", [
    (dict(block_out_channels=(30, 60)), "divisible by norm_num_groups"),
    (dict(down_attention=(True,)), "one entry per level"),
    (dict(resnet_time_scale_shift="film"), "resnet_time_scale_shift"),
    (dict(attention_head_dim=7), "attention_head_dim"),
    (dict(dropout=1.5), "dropout"),
])
def test_bad_config_is_a_value_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        df.UNet.from_preset("ddpm-cifar10", **overrides)


@pytest.mark.gpu
def test_cuda_bf16_channels_last_compiled_matches_fp32():
    torch.manual_seed(0)
    model = df.UNet.from_preset("ddpm-cifar10").cuda().eval()
    fast = df.UNet.from_preset("ddpm-cifar10").cuda().eval()
    fast.load_state_dict(model.state_dict())
    fast = torch.compile(fast.to(torch.bfloat16, memory_format=torch.channels_last), fullgraph=True)
    x, t = torch.randn(64, 3, 32, 32, device="cuda"), torch.randint(0, 1000, (64,), device="cuda")
    with torch.no_grad():
        expected = model(x, t)
        actual = fast(x.contiguous(memory_format=torch.channels_last), t)
    relative = ((actual.float() - expected).norm() / expected.norm()).item()
    assert relative < 2e-2, relative
