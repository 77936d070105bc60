"""The one table from the library's parameter names to the command line's flags, and the one-line text of an error.

The library's errors carry the parameter they are about (ParameterError / ParameterTypeError, SetupConflict) and
render their text with whatever names a front end gives them; the command line gives its flags from this table. No
message is edited as a string: rewording one in the library cannot break the command line.
"""

from __future__ import annotations

from ..vocabulary import SIGMA_SPACINGS

# The Python API's parameter (or "parameter=value") -> the flag that sets it.
PARAMETER_FLAGS = {
    "num_inference_steps": "--steps",
    "steps": "--steps",
    "timesteps": "--steps",
    "class_labels": "--class-labels",
    "guidance_scale": "--guidance-scale",
    "null_class_label": "--null-class-label",
    "method": "--method",
    "eta": "--eta",
    "seed": "--seed",
    "device": "--device",
    "dtype": "--dtype",
    "weights": "--weights",
    "schedule": "--schedule/--train-timesteps",
    "prediction_type": "--prediction-type",
    "variance_type": "--variance-type",
    "clip_sample=True": "--clip-sample",
    "clip_sample=False": "--no-clip-sample",
    "compile=True": "--compile",
    "override_setup=True": "--override-setup",
    "solver_order": "--solver-order",
    "final_sigmas_type": "--final-sigmas-type",
    "dynamic_thresholding_ratio": "--dynamic-thresholding-ratio",
    "sample_max_value": "--sample-max-value",
    "solver_type": "--solver-type",
    "disable_corrector": "--disable-corrector",
    **{f"{name}{value}": f"--{'' if value == '=True' or not value else 'no-'}{name.replace('_', '-')}"
       for name in ("lower_order_final", "euler_at_final", "thresholding") + SIGMA_SPACINGS
       for value in ("", "=True", "=False")},
}


def flag_of(term: str) -> str:
    """The flag of a parameter ("num_inference_steps" -> "--steps") or of a parameter given a value
    ("class_labels=3" -> "--class-labels 3", "compile=True" -> "--compile"); a term without a flag as it is."""
    if term in PARAMETER_FLAGS:
        return PARAMETER_FLAGS[term]
    name, given, value = term.partition("=")
    if given and name in PARAMETER_FLAGS:
        return f"{PARAMETER_FLAGS[name]} {value}"
    return term


def _flag_value(value: object) -> object:
    """A value as its flag takes it: a list of indices comma-separated ("0,2"), an empty one as "none"."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) or "none"
    return value


def error_text(error: Exception) -> str:
    """An error's one line with the command line's words: a parameter's error names its flag, a setup conflict names
    the flag, both values and --override-setup."""
    import sys

    from ..checks import ParameterError, ParameterTypeError

    # A SetupConflict can only come from a loaded diffusion_setup, which imports torch: an error met before it (a
    # flag checked before the heavy imports) is rendered without importing it.
    setup_module = sys.modules.get("ddpm_fast.diffusion_setup")
    if setup_module is not None and isinstance(error, setup_module.SetupConflict):
        given = (flag_of(f"{error.name}={_flag_value(error.given)}") if error.name != "schedule"
                 else f"{flag_of(error.name)} {error.given}")
        return (f"{given} contradicts the {error.name} stored with {error.source} ({_flag_value(error.stored)}); pass "
                f"{flag_of('override_setup=True')} to use it anyway")
    if isinstance(error, (ParameterError, ParameterTypeError)):
        return error.message(flag_of)
    return str(error)
