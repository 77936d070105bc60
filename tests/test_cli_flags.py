"""The command line names parameters by its flags through one table (ddpm_fast/cli/flags.py), never by editing the
library's messages: a library error carries its parameter and renders its text with the names it is given."""

import pytest

import ddpm_fast as df
from ddpm_fast.checks import ParameterError, ParameterTypeError, python_name
from ddpm_fast.cli.flags import PARAMETER_FLAGS, error_text, flag_of
from ddpm_fast.cli.main import build_parser


def _all_flags() -> set[str]:
    parser = build_parser()
    flags = set()
    for command in parser.subcommands.values():
        for action in command._actions:
            flags.update(action.option_strings)
    return flags


def test_every_flag_in_the_table_exists():
    flags = _all_flags()
    for term, flag in PARAMETER_FLAGS.items():
        assert all(part in flags for part in flag.split("/")), (term, flag)


@pytest.mark.parametrize("term, flag", [("num_inference_steps", "--steps"), ("class_labels=3", "--class-labels 3"),
                                        ("compile=True", "--compile"), ("clip_sample=False", "--no-clip-sample"),
                                        ("sample_shape", "sample_shape"), ("solver_order=3", "--solver-order 3"),
                                        ("use_karras_sigmas=True", "--use-karras-sigmas"),
                                        ("use_karras_sigmas=False", "--no-use-karras-sigmas"),
                                        ("thresholding=True", "--thresholding"),
                                        ("dynamic_thresholding_ratio", "--dynamic-thresholding-ratio")])
def test_flag_of(term, flag):
    assert flag_of(term) == flag


def test_a_parameter_error_names_its_parameter_in_each_front_ends_words():
    error = ParameterError("guidance_scale", lambda name: f"{name('guidance_scale')} needs {name('class_labels')}")
    assert isinstance(error, ValueError) and error.parameter == "guidance_scale"
    assert str(error) == error.message(python_name) == "guidance_scale needs class_labels"
    assert error_text(error) == "--guidance-scale needs --class-labels"
    type_error = ParameterTypeError("num_inference_steps", lambda name: f"{name('num_inference_steps')} must be an int")
    assert isinstance(type_error, TypeError) and error_text(type_error) == "--steps must be an int"


def test_the_samplers_errors_carry_their_parameter():
    sampler = df.FastSampler(lambda x, t: x, df.NoiseSchedule.linear(10), (1, 2, 2), compile=False)
    with pytest.raises(ParameterError, match="^num_inference_steps must lie in") as caught:
        sampler.sample(1, seed=0, num_inference_steps=11)
    assert caught.value.parameter == "num_inference_steps"
    assert error_text(caught.value) == "--steps must lie in [1, 10], got 11"
    with pytest.raises(ParameterError, match="needs num_inference_steps") as caught:
        sampler.sample(1, seed=0, method="dpm_solver++")
    assert "needs --steps" in error_text(caught.value)
    with pytest.raises(ParameterError) as caught:
        sampler.sample(1, seed=0, guidance_scale=2.0)
    assert error_text(caught.value).startswith("--guidance-scale needs --class-labels")


def test_a_setup_conflict_names_the_flag_and_both_values():
    from ddpm_fast.diffusion_setup import SetupConflict

    text = error_text(SetupConflict("prediction_type", "epsilon", "v_prediction", "runs/x"))
    assert text == ("--prediction-type epsilon contradicts the prediction_type stored with runs/x (v_prediction); "
                    "pass --override-setup to use it anyway")
    assert error_text(SetupConflict("clip_sample", False, True, "runs/x")).startswith("--no-clip-sample contradicts")
