"""Checks of plain (non-tensor) arguments, shared by every entry point. Imports neither torch nor Triton, so
configs and the command line use them too. Each raises a ValueError / TypeError that names the argument."""

from __future__ import annotations

import math
from typing import Callable, Optional

from .vocabulary import (FINAL_SIGMAS_TYPES, PREDICTION_TYPES, SIGMA_SPACINGS, SOLVER_ORDERS, SPACINGS,
                         UNIPC_SOLVER_TYPES, VARIANCE_TYPES)

# How a front end names a parameter ("num_inference_steps") or a parameter given a value ("compile=True"): the
# Python API as is, the command line by its flag ("--steps", "--compile").
Naming = Callable[[str], str]


def python_name(parameter: str) -> str:
    return parameter


class _ParameterMessage:
    """An error about one parameter whose text is written once, for every front end: `parameter` names it in the
    Python API, message(naming) renders the text with each parameter it mentions named by `naming` (the command line
    passes its flag table; str(error) is message(python_name))."""

    def __init__(self, parameter: str, text: Callable[[Naming], str]):
        self.parameter = parameter
        self._text = text
        super().__init__(text(python_name))

    def message(self, naming: Naming = python_name) -> str:
        return self._text(naming)


class ParameterError(_ParameterMessage, ValueError):
    """A ValueError about `parameter` (see _ParameterMessage)."""


class ParameterTypeError(_ParameterMessage, TypeError):
    """A TypeError about `parameter` (see _ParameterMessage)."""


def check_choice(name: str, value: object, choices: dict[str, int]) -> int:
    """choices[value]; ValueError naming `name` and the choices when value is not one of them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return choices[value]


def check_value_range(value_range: object, name: str = "value_range") -> Optional[tuple[float, float]]:
    """None, or (low, high) as two floats: finite numbers with low < high (a data set's value range, such as (0, 1)).
    TypeError / ValueError naming `name`."""
    if value_range is None:
        return None
    if isinstance(value_range, (str, bytes)) or not hasattr(value_range, "__len__") or len(value_range) != 2:
        raise TypeError(f"{name} must be a pair (low, high) such as (0, 1), got {value_range!r}")
    if any(isinstance(v, bool) or not hasattr(v, "__float__") or isinstance(v, complex) for v in value_range):
        raise TypeError(f"{name} must be a pair of numbers (low, high) such as (0, 1), got {value_range!r}")
    low, high = float(value_range[0]), float(value_range[1])
    if not (abs(low) < math.inf and abs(high) < math.inf and low < high):
        raise ValueError(f"{name} must be finite numbers (low, high) with low < high, got {value_range!r}")
    return low, high


def check_positive_float(name: str, value: object, allow_zero: bool = False) -> float:
    """value as a float: TypeError unless a real number, ValueError unless finite and > 0 (≥ 0 with allow_zero)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    # Plain comparisons, not math.isfinite: under torch.compile the value may be a symbolic float.
    if value != value or abs(value) == math.inf or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'} and finite, got {value}")
    return float(value)


def check_step_setup(prediction_type: object, variance_type: object, clip_sample_range: object,
                     timestep_spacing: object, steps_offset: object, set_alpha_to_one: object) -> float:
    """The setup a sampler's steps take (what DiffusionSetup stores and FastSampler is given), checked: a known
    prediction and variance type, a positive finite clip range (returned as a float), the chain options."""
    check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
    check_choice("variance_type", variance_type, VARIANCE_TYPES)
    check_chain_options(timestep_spacing, steps_offset, set_alpha_to_one)
    return check_positive_float("clip_sample_range", clip_sample_range)


def check_prediction_type(prediction_type: object) -> str:
    """"epsilon", "sample" or "v_prediction" (diffusers' names); ValueError otherwise."""
    check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
    return prediction_type  # type: ignore[return-value]


def check_min_snr_gamma(min_snr_gamma: object) -> Optional[float]:
    """None, or Min-SNR-γ as a positive float; ValueError otherwise."""
    if min_snr_gamma is None:
        return None
    if isinstance(min_snr_gamma, bool) or not isinstance(min_snr_gamma, (int, float)) or not min_snr_gamma > 0:
        raise ValueError(f"min_snr_gamma must be a positive number or None, got {min_snr_gamma!r}")
    return float(min_snr_gamma)


def check_chain_options(timestep_spacing: object = None, steps_offset: object = None,
                        set_alpha_to_one: object = None) -> None:
    """The options that pick a chain's timesteps and end DDIM, each checked unless None (not given): a known
    spacing, a non-negative int offset, a bool. ValueError / TypeError naming the argument."""
    if timestep_spacing is not None and timestep_spacing not in SPACINGS:
        raise ValueError(f"timestep_spacing must be one of {', '.join(SPACINGS)}, got {timestep_spacing!r}")
    if steps_offset is not None and (isinstance(steps_offset, bool) or not isinstance(steps_offset, int)
                                     or steps_offset < 0):
        raise ValueError(f"steps_offset must be a non-negative int, got {steps_offset!r}")
    if set_alpha_to_one is not None and not isinstance(set_alpha_to_one, bool):
        raise TypeError(f"set_alpha_to_one must be True or False, got {set_alpha_to_one!r}")


def check_solver_options(solver_order: object, lower_order_final: object, final_sigmas_type: object,
                         euler_at_final: object, use_karras_sigmas: object, use_lu_lambdas: object,
                         use_exponential_sigmas: object, thresholding: object = False,
                         dynamic_thresholding_ratio: object = 0.995, sample_max_value: object = 1.0,
                         solver_type: object = "bh2", disable_corrector: object = ()) -> None:
    """The multistep solvers' options (diffusers' DPMSolverMultistepScheduler and UniPCMultistepScheduler names,
    sampling/dpm_solver.py, sampling/unipc.py): solver_order one of SOLVER_ORDERS, final_sigmas_type one of
    FINAL_SIGMAS_TYPES, dynamic_thresholding_ratio a number in [0, 1], sample_max_value a positive finite number,
    solver_type one of UNIPC_SOLVER_TYPES, disable_corrector step indices (check_disable_corrector), the rest True or
    False, and at most one σ spacing. TypeError / ValueError naming the argument."""
    if isinstance(solver_order, bool) or not isinstance(solver_order, int):
        raise TypeError(f"solver_order must be an int, got {type(solver_order).__name__}")
    if solver_order not in SOLVER_ORDERS:
        raise ValueError(f"solver_order must be one of {', '.join(map(str, SOLVER_ORDERS))}, got {solver_order}")
    if final_sigmas_type not in FINAL_SIGMAS_TYPES:
        raise ValueError(f"final_sigmas_type must be one of {', '.join(FINAL_SIGMAS_TYPES)}, got "
                         f"{final_sigmas_type!r}")
    flags = {"lower_order_final": lower_order_final, "euler_at_final": euler_at_final, "thresholding": thresholding,
             "use_karras_sigmas": use_karras_sigmas, "use_lu_lambdas": use_lu_lambdas,
             "use_exponential_sigmas": use_exponential_sigmas}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if isinstance(dynamic_thresholding_ratio, bool) or not isinstance(dynamic_thresholding_ratio, (int, float)):
        raise TypeError(f"dynamic_thresholding_ratio must be a number, got {type(dynamic_thresholding_ratio).__name__}")
    if not 0 <= dynamic_thresholding_ratio <= 1:
        raise ValueError(f"dynamic_thresholding_ratio must lie in [0, 1] (a quantile of |x0|), got "
                         f"{dynamic_thresholding_ratio}")
    check_positive_float("sample_max_value", sample_max_value)
    chosen = [name for name in SIGMA_SPACINGS if flags[name]]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(f'{name}=True' for name in chosen)}: choose at most one σ spacing")
    if solver_type not in UNIPC_SOLVER_TYPES:
        raise ValueError(f"solver_type must be one of {', '.join(UNIPC_SOLVER_TYPES)} (UniPC's B(h)), got "
                         f"{solver_type!r}")
    check_disable_corrector(disable_corrector)


def check_disable_corrector(disable_corrector: object) -> tuple[int, ...]:
    """UniPC's disable_corrector as a sorted tuple of distinct step indices: a list, tuple or set of ints ≥ 0 (the
    corrector is skipped after each listed step, diffusers' meaning). TypeError / ValueError naming the argument."""
    if isinstance(disable_corrector, (str, bytes)) or not isinstance(disable_corrector, (list, tuple, set, frozenset)):
        raise TypeError(f"disable_corrector must be a list of step indices, got {type(disable_corrector).__name__}")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in disable_corrector):
        raise TypeError(f"disable_corrector must hold ints (step indices), got {list(disable_corrector)!r}")
    if any(i < 0 for i in disable_corrector):
        raise ValueError(f"disable_corrector must hold step indices >= 0, got {sorted(disable_corrector)}")
    return tuple(sorted(set(disable_corrector)))
