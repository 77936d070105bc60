"""Class labels and classifier-free guidance at sampling time: what a call asks for, checked once, before the loop.

Shared by FastSampler and OnnxSampler so both accept and refuse the same things. Guidance follows Ho & Salimans
(2022): each step runs the model on the conditional batch and on the same samples with the null class, and takes
u + w·(c − u) of the two predictions (in the model's own parameterisation, as diffusers does).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch

from ..checks import ParameterError
from ..diffusion import check_guidance_scale
from ..diffusion_setup import DiffusionSetup, user_class_count


def conditioning_for(class_labels: Any, guidance_scale: Any, num_class_embeds: Optional[int],
                     null_class_label: Optional[int], says_unconditional: bool) -> str:
    """"none", "labels" or "guided" for a call with these arguments to a model of num_class_embeds classes (None:
    unconditional, or a model that does not say; says_unconditional: its config says it has no class embedding).
    guidance_scale None or 1 is plain conditional sampling: w = 1 is the conditional model itself."""
    guidance_scale = check_guidance_scale(guidance_scale)
    if says_unconditional and (class_labels is not None or guidance_scale is not None):
        given = "class_labels" if class_labels is not None else "guidance_scale"
        raise ParameterError(given, lambda name: f"{name(given)} given, but this model has no class embedding "
                             "(num_class_embeds is None): class labels and classifier-free guidance need a "
                             "class-conditional model")
    if class_labels is None:
        if num_class_embeds is not None:
            raise ParameterError("class_labels", lambda name: f"{name('class_labels')} is required: this model is "
                                 f"class-conditional ({num_class_embeds} class embeddings)" + (
                                     "" if null_class_label is None else
                                     f"; for unconditional samples give any label with "
                                     f"{name('guidance_scale=0')}"))
        if guidance_scale is not None:
            raise ParameterError("guidance_scale", lambda name: f"{name('guidance_scale')} needs "
                                 f"{name('class_labels')} (classifier-free guidance steers towards them)")
        return "none"
    if guidance_scale is None or guidance_scale == 1.0:
        return "labels"
    if null_class_label is None:
        raise ParameterError("guidance_scale", lambda name: f"{name('guidance_scale')} needs the model's null class "
                             f"({name('null_class_label')}): a model trained by ddpm_fast with class_conditional=True "
                             "and cond_drop_prob > 0 stores it in its setup; for another model, give it")
    return "guided"


def named_labels(class_labels: Any, setup_of: Callable[[], Optional[DiffusionSetup]]) -> Any:
    """class_labels with class names (one str for every sample, or strs among the ints of a list or tuple) turned
    into indices by the class_names of the sampler's setup (setup_of(), asked only when names are given;
    DiffusionSetup.class_indices); anything else as it is. ParameterError naming class_labels for a name the setup
    does not hold, or any name where no setup is stored."""
    names_given = isinstance(class_labels, str) or (
        isinstance(class_labels, (list, tuple)) and any(isinstance(label, str) for label in class_labels))
    if not names_given:
        return class_labels
    setup = setup_of()
    if setup is None:
        raise ParameterError("class_labels", lambda term: f"{term('class_labels')} {class_labels!r}: this model "
                             "stores no class names; give class indices")
    if isinstance(class_labels, str):
        return setup.class_indices([class_labels])[0]
    return setup.class_indices(class_labels)


def checked_labels(class_labels: Any, batch_size: int, num_class_embeds: Optional[int],
                   device: torch.device, null_class_label: Optional[int] = None) -> torch.Tensor:
    """class_labels (an int for every sample, a sequence of ints, or an integer tensor [B]) as int64 [batch_size] on
    `device`, each checked to be one of the model's classes when num_class_embeds is known (one host check, before
    the loop): in [0, num_class_embeds), and never the null class. The null class is internal to classifier-free
    guidance (the label dropped in training): asked for directly it would sample unconditionally without a word, so
    it is a ParameterError that says how to sample unconditionally (guidance_scale=0)."""
    kinds = "an int, a sequence of ints or an integer tensor or array"
    if isinstance(class_labels, (bool, np.bool_)):
        raise TypeError(f"class_labels must be {kinds}, got bool")
    if isinstance(class_labels, (int, np.integer)):
        class_labels = [int(class_labels)] * batch_size
    if isinstance(class_labels, (list, tuple)):
        bad = [v for v in class_labels if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))]
        if bad:
            raise TypeError(f"class_labels must be {kinds}, got an element of type {type(bad[0]).__name__}")
        class_labels = torch.tensor([int(v) for v in class_labels], dtype=torch.int64)
    if isinstance(class_labels, np.ndarray):
        class_labels = torch.from_numpy(class_labels)
    if not isinstance(class_labels, torch.Tensor):
        raise TypeError(f"class_labels must be {kinds}, got {type(class_labels).__name__}")
    if class_labels.is_floating_point() or class_labels.is_complex() or class_labels.dtype == torch.bool:
        raise TypeError(f"class_labels must be an integer tensor, got {class_labels.dtype}")
    if class_labels.dim() != 1 or class_labels.shape[0] != batch_size:
        raise ParameterError("class_labels", lambda name: f"{name('class_labels')} must hold one label per sample: "
                             f"[{batch_size}], got {tuple(class_labels.shape)}")
    if batch_size and num_class_embeds is not None:
        low, high = int(class_labels.min()), int(class_labels.max())
        count = user_class_count(num_class_embeds, null_class_label)

        def null_note(name) -> str:
            return ("" if null_class_label is None else
                    f" ({null_class_label} is the null class, internal to classifier-free guidance: for unconditional "
                    f"samples give any class with {name('guidance_scale=0')})")

        if low < 0 or high >= count:
            raise ParameterError("class_labels", lambda name: f"{name('class_labels')} must lie in [0, {count}) (the "
                                 f"model's {count} classes), got values in [{low}, {high}]" + (
                                     null_note(name) if null_class_label is not None and high >= count else ""))
        if null_class_label is not None and bool((class_labels == null_class_label).any()):
            raise ParameterError("class_labels", lambda name: f"{name('class_labels')} holds {null_class_label}"
                                 + null_note(name))
    return class_labels.to(device=device, dtype=torch.int64)
