"""Every refusal a public docstring or the documentation (README.md, docs/) promises, where no other test checks it.

One row per refusal: the call, the exception type the promise names, and a regex of the message; the comment on each
row says where the promise is made. Promises already checked elsewhere (tests/test_errors.py, test_datasets.py,
test_unet.py, test_trainer.py, test_onnx_*.py, ...) are not repeated here.
"""

import argparse
import json
import pathlib

import pytest
import torch

import ddpm_fast as df


# ------------------------------------------------------------------------------------------------------- helpers


def _tiny_unet():
    return df.UNet.from_preset("tiny", sample_size=8)


def _unet_folder_without_weights(tmp):
    folder = _tiny_unet().save(tmp / "unet")
    (folder / "model.safetensors").unlink()
    return df.UNet.load(folder)


def _unet_folder_with_foreign_config(tmp):
    (tmp / "diffusers").mkdir()
    (tmp / "diffusers" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 8}))
    return df.UNet.load(tmp / "diffusers")


def _unet_load_of_a_file(tmp):
    (tmp / "weights.safetensors").write_bytes(b"junk")
    return df.UNet.load(tmp / "weights.safetensors")


def _unet_load_of_an_empty_folder(tmp):
    (tmp / "empty").mkdir()
    return df.UNet.load(tmp / "empty")


def _load_state_with_an_unexpected_key():
    model = _tiny_unet()
    return model.load_state_dict_checked({**model.state_dict(), "extra.weight": torch.zeros(1)}, "SOURCE.safetensors")


def _diffusers_config(**changes):
    from ddpm_fast.models.config import config_from_diffusers, config_to_diffusers

    return config_from_diffusers({**config_to_diffusers(_tiny_unet().config), **changes})


class _TouchesAFile:
    """Unpickled by plain pickle, this would create `path` (a stand-in for os.system)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (self.path,)


def _diffusers_bin_with_a_pickled_object(tmp):
    from ddpm_fast.models.config import config_to_diffusers

    folder, marker = tmp / "unet-bin", tmp / "pwned"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config_to_diffusers(_tiny_unet().config)))
    torch.save({"conv_in.weight": torch.zeros(1), "payload": _TouchesAFile(marker)},
               folder / "diffusion_pytorch_model.bin")
    try:
        return df.UNet.from_diffusers(folder)
    finally:
        assert not marker.exists(), "the pickled object ran"


def _checkpoint_missing_a_file(tmp):
    from ddpm_fast.models import checkpoints

    folder = checkpoints.save_checkpoint(tmp / "run", 1, unet_config={}, model_state={"w": torch.zeros(1)},
                                         ema_state={"w": torch.zeros(1)}, optimizer_tensors={}, state={})
    (folder / "optimizer.safetensors").unlink()
    return checkpoints.load_checkpoint(folder)


def _run_folder_without_checkpoints(tmp):
    from ddpm_fast.models.checkpoints import resolve_checkpoint

    (tmp / "run" / "checkpoints").mkdir(parents=True)
    return resolve_checkpoint(tmp / "run")


def _resolve_checkpoint(path):
    from ddpm_fast.models.checkpoints import resolve_checkpoint

    return resolve_checkpoint(path)


def _onnx_model_with_a_group_normalization_node():
    import onnx
    from ddpm_fast.export.onnx_export import check_model
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [4], [1.0] * 4)
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [4], [0.0] * 4)
    node = helper.make_node("GroupNormalization", ["x", "scale", "bias"], ["y"], num_groups=2, name="gn0")
    graph = helper.make_graph([node], "one_group_norm", [x], [y], initializer=[scale, bias])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(proto, full_check=True)  # a valid model: only our own rule may refuse it
    return check_model(proto)


def _group_norm(**inputs):
    from ddpm_fast.kernels.group_norm import group_norm_act

    return group_norm_act(torch.randn(2, 4, 3, 3), 2, **inputs)


def _check(name, *args, **kwargs):
    from ddpm_fast import checks

    return getattr(checks, name)(*args, **kwargs)


def _argument_type(name, text):
    from ddpm_fast.cli import arguments

    return getattr(arguments, name)(text)


def _resolve_device(device):
    from ddpm_fast.sampling.distributed import resolve_device

    return resolve_device(device)


def _load_tensors(path):
    from ddpm_fast import files

    return files.load_tensors(path)


def _capture_fails_with_cuda_graphs_requested():
    model = torch.nn.Conv2d(3, 3, 1).cuda()

    def syncs(x, t):
        if t[0].item() < 0:  # a host sync: illegal while a CUDA graph is being captured
            raise AssertionError
        return model(x)

    return df.FastSampler(syncs, df.NoiseSchedule.linear(10), (3, 8, 8), dtype=torch.float32, compile=False,
                          cuda_graphs=True).sample(2, seed=0)


# ----------------------------------------------------------------------------------------------------- the table


@pytest.mark.parametrize("make, error, match", [
    # ddpm_fast/checks.py: check_positive_float docstring ("TypeError unless a real number, ValueError unless finite")
    (lambda tmp: _check("check_positive_float", "eta", True), TypeError, "eta must be a number, got bool"),
    (lambda tmp: _check("check_positive_float", "eta", float("inf"), allow_zero=True), ValueError,
     "eta must be non-negative and finite, got inf"),
    # ddpm_fast/checks.py: check_min_snr_gamma docstring ("None, or ... a positive float; ValueError otherwise")
    (lambda tmp: _check("check_min_snr_gamma", "5"), ValueError, "min_snr_gamma must be a positive number or None"),
    (lambda tmp: _check("check_min_snr_gamma", True), ValueError, "min_snr_gamma must be a positive number or None"),
    # ddpm_fast/cli/arguments.py: module docstring ("each rejects bad text with a message naming it")
    (lambda tmp: _argument_type("seed", "-1"), argparse.ArgumentTypeError, r"expected an integer in \[0, 2\*\*63\)"),
    (lambda tmp: _argument_type("seed", str(2**63)), argparse.ArgumentTypeError, r"in \[0, 2\*\*63\), got 9223"),
    (lambda tmp: _argument_type("non_negative_int", "-1"), argparse.ArgumentTypeError, "integer >= 0, got -1"),
    (lambda tmp: _argument_type("non_negative_float", "inf"), argparse.ArgumentTypeError,
     "finite number >= 0, got inf"),
    # ddpm_fast/schedule.py: NoiseSchedule.from_betas docstring ("β_t in (0, 1)": 0 and negatives are outside)
    (lambda tmp: df.NoiseSchedule.from_betas([0.0, 0.1]), ValueError, "betas must lie strictly between 0 and 1"),
    (lambda tmp: df.NoiseSchedule.from_betas([0.1, -0.2]), ValueError, "betas must lie strictly between 0 and 1"),
    # ddpm_fast/files.py: load_tensors docstring ("a missing ... file is a ... FileNotFoundError naming it")
    (lambda tmp: _load_tensors(tmp / "absent.safetensors"), FileNotFoundError, r"absent\.safetensors: no such file"),
    # ddpm_fast/models/unet.py: UNet.load docstring ("FileNotFoundError for a missing folder or file")
    (lambda tmp: _unet_load_of_an_empty_folder(tmp), FileNotFoundError, r"empty/config\.json: no such file"),
    (lambda tmp: _unet_folder_without_weights(tmp), FileNotFoundError, r"unet/model\.safetensors: no such file"),
    # ddpm_fast/models/unet.py: UNet.load docstring ("ValueError for a path that is not such a folder or holds a
    # config of another kind")
    (lambda tmp: _unet_load_of_a_file(tmp), ValueError, r"weights\.safetensors is a file; expected a UNet\.save"),
    (lambda tmp: _unet_folder_with_foreign_config(tmp), ValueError,
     r"diffusers/config\.json: not a ddpm_fast\.UNet checkpoint config"),
    # ddpm_fast/models/unet.py: UNet.load_state_dict_checked docstring ("naming the source and every missing,
    # unexpected or misshapen key")
    (lambda tmp: _load_state_with_an_unexpected_key(), ValueError,
     r"SOURCE\.safetensors: weights do not fit the config — unexpected: extra\.weight"),
    # ddpm_fast/models/config.py: config_from_diffusers docstring ("ValueError naming a field we cannot represent")
    (lambda tmp: _diffusers_config(sample_size=[8, 16]), ValueError, "sample_size=.*only square samples"),
    (lambda tmp: _diffusers_config(freq_shift=0.5), ValueError, "freq_shift=0.5 must be an integer"),
    (lambda tmp: _diffusers_config(norm_num_groups=None), ValueError, "norm_num_groups=None is not supported"),
    (lambda tmp: _diffusers_config(norm_eps="small"), ValueError, "norm_eps='small' must be a number"),
    (lambda tmp: _diffusers_config(dropout=None), ValueError, "dropout=None must be a number"),
    (lambda tmp: _diffusers_config(flip_sin_to_cos="no"), ValueError, "flip_sin_to_cos='no' must be true or false"),
    # ddpm_fast/interop/diffusers_unet.py: module docstring (".bin ... tensors only, never arbitrary pickled objects")
    (lambda tmp: _diffusers_bin_with_a_pickled_object(tmp), ValueError,
     r"diffusion_pytorch_model\.bin: not a readable tensors-only checkpoint"),
    # ddpm_fast/sampling/distributed.py: resolve_device docstring ("A ValueError for anything else that is not a
    # usable device")
    (lambda tmp: _resolve_device("meta"), ValueError, "device must be auto, cpu, cuda or cuda:N, got 'meta'"),
    (lambda tmp: _resolve_device("mps"), ValueError, "device must be auto, cpu, cuda or cuda:N, got 'mps'"),
    # ddpm_fast/sampling/loop.py: check_model_output docstring ("The model's output must be a float tensor")
    (lambda tmp: df.FastSampler(lambda x, t: x.long(), df.NoiseSchedule.linear(10), (3, 4, 4),
                                compile=False).sample(1), ValueError,
     r"the model returned \(1, 3, 4, 4\); expected a float tensor"),
    # ddpm_fast/sampling/sampler.py: FastSampler docstring ("cuda_graphs=True raises" when a step cannot be captured)
    pytest.param(lambda tmp: _capture_fails_with_cuda_graphs_requested(), RuntimeError, "(?i)captur",
                 marks=pytest.mark.gpu),
    # ddpm_fast/models/checkpoints.py: resolve_checkpoint docstring ("a clear error when there is none")
    (lambda tmp: _resolve_checkpoint(tmp / "nowhere"), FileNotFoundError,
     "nowhere: no such checkpoint or run folder"),
    (lambda tmp: _run_folder_without_checkpoints(tmp), FileNotFoundError, r"run: no usable checkpoint"),
    # ddpm_fast/models/checkpoints.py: load_checkpoint docstring ("verify ...: every file present")
    (lambda tmp: _checkpoint_missing_a_file(tmp), ValueError,
     r"optimizer\.safetensors: missing from the checkpoint"),
    # kernels/group_norm.py: check_group_norm_inputs docstring ("TypeError/ValueError naming the argument")
    (lambda tmp: _group_norm(weight=torch.ones(8)[::2]), ValueError, r"weight must be dense \(stride 1\)"),
    (lambda tmp: _group_norm(bias=torch.ones(4, device="meta")), ValueError, "bias is on meta, but x is on cpu"),
    # export/onnx_export.py: check_model docstring ("no GroupNormalization node")
    (lambda tmp: _onnx_model_with_a_group_normalization_node(), RuntimeError,
     r"GroupNormalization nodes \['gn0'\]"),
])
def test_documented_refusal(make, error, match, tmp_path):
    with pytest.raises(error, match=match):
        make(tmp_path)
