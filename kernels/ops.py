"""Import this module to register every ``torch.ops.ddpm_fast`` op: q_sample, q_sample_philox, p_step, ddim_step,
dpm_solver_step, unipc_step, philox_normal and group_norm_act. It imports torch and Triton; modules that call the
ops import it first."""

# each module registers its ops on import
from . import dpm_solver, group_norm, philox, q_sample, reverse_step, unipc  # noqa: F401
