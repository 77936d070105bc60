"""ddpm_fast: fast, trustworthy Denoising Diffusion Probabilistic Models.

    import ddpm_fast as df
    s = df.NoiseSchedule.linear(1000)
    x_t, eps = df.q_sample(x0, t, s, seed=0)
    x_prev = df.p_step(eps_pred, t, x_t, s, seed=0)

``ddpm_fast.reference`` holds the seed algorithm (naive, fp32, eager); the top-level functions of the same names
(forward_diffusion_sample, train_step, sample) are its fast twins.
"""

import os as _os

# In a source checkout (PYTHONPATH=<repo>), kernels/ and export/ sit beside this folder; installs map them into
# the package (setuptools package-dir). Let the checkout resolve ddpm_fast.kernels / ddpm_fast.export the same way.
_repo_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(_os.path.dirname(__file__), "kernels")) and _os.path.isdir(
        _os.path.join(_repo_root, "kernels")):
    __path__.append(_repo_root)  # type: ignore[name-defined]

from ._lazy import lazy_names as _lazy_names  # noqa: E402

# Each public name and the module it lives in. They load on first use (PEP 562), so `import ddpm_fast` (and the
# command line's --help) imports neither torch nor Triton; the kernels import Triton when first used.
_MODULE_OF = {
    "DiffusionSetup": "diffusion_setup",
    "FastDDPMScheduler": "interop.diffusers_scheduler",
    "FastPathFallbackWarning": "sampling.sampler",
    "FastSampler": "sampling.sampler",
    "NoiseSchedule": "schedule",
    "Trainer": "training.trainer",
    "TrainingConfig": "training.config",
    "UNet": "models.unet",
    "UNetConfig": "models.config",
    "ddim_step": "diffusion",
    "forward_diffusion_sample": "seed_functions",
    "p_step": "diffusion",
    "q_sample": "diffusion",
    "sample": "seed_functions",
    "save_diffusers_pipeline": "interop.diffusers_pipeline",
    "SetupConflict": "diffusion_setup",
    "train_step": "seed_functions",
}
_SUBMODULES = ("kernels", "reference")

__version__ = "0.1.0"

__all__ = [
    "DiffusionSetup",
    "FastDDPMScheduler",
    "FastPathFallbackWarning",
    "FastSampler",
    "NoiseSchedule",
    "Trainer",
    "TrainingConfig",
    "UNet",
    "UNetConfig",
    "ddim_step",
    "forward_diffusion_sample",
    "kernels",
    "p_step",
    "q_sample",
    "reference",
    "sample",
    "save_diffusers_pipeline",
    "SetupConflict",
    "train_step",
]


__getattr__, __dir__ = _lazy_names(__name__, _MODULE_OF, _SUBMODULES)
