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

from . import kernels, reference  # noqa: E402
from .diffusion import ddim_step, p_step, q_sample  # noqa: E402
from .interop.diffusers_scheduler import FastDDPMScheduler  # noqa: E402
from .models.config import UNetConfig  # noqa: E402
from .models.unet import UNet  # noqa: E402
from .sampling.sampler import FastPathFallbackWarning, FastSampler  # noqa: E402
from .schedule import NoiseSchedule  # noqa: E402
from .seed_functions import forward_diffusion_sample, sample, train_step  # noqa: E402
from .training.config import TrainingConfig  # noqa: E402
from .training.trainer import Trainer  # noqa: E402

__version__ = "0.1.0"

__all__ = [
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
    "train_step",
]
