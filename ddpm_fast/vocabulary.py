"""The kernels' names and numbers that the rest of the package needs without Triton: which prediction and variance
types the reverse steps take, the rows of their coefficient table, the Philox stream ids and ranges.

Importing this module imports neither torch nor Triton, so configs and the command line's parser can use them.
"""

# What the model predicts, as the kernels' integer codes.
PREDICTION_TYPES = {"epsilon": 0, "sample": 1, "v_prediction": 2}
# σ_t of the DDPM step. The `_log` forms (diffusers' names) give the same σ computed through its logarithm.
VARIANCE_TYPES = {"fixed_small": 0, "fixed_small_log": 0, "fixed_large": 1, "fixed_large_log": 1,
                  "learned_range": 2}

# Rows of the coefficient table, named as NoiseSchedule names them (it builds the table from these names).
COEFFICIENT_ROWS = (
    "sqrt_recip_alphas",  # 1/sqrt(α_t)
    "eps_coef",  # β_t / sqrt(1-ᾱ_t)
    "sqrt_recip_alphas_cumprod",  # 1/sqrt(ᾱ_t)
    "sqrt_recipm1_alphas_cumprod",  # sqrt(1/ᾱ_t - 1)
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "posterior_mean_coef1",  # multiplies x0
    "posterior_mean_coef2",  # multiplies x_t
    "posterior_std",  # sqrt(β̃_t), "fixed_small"
    "sqrt_betas",  # sqrt(β_t), "fixed_large"
    "posterior_log_variance_clipped",
    "log_betas",
)
ROW_INDEX = {name: i for i, name in enumerate(COEFFICIENT_ROWS)}

# Rows of the DPM-Solver++ step's per-step table (ddpm_fast/sampling/dpm_solver.py computes them): the data
# prediction's α_s and σ_s, then the coefficients of x_t, x0, the previous step's x0 and z.
SOLVER_ROWS = ("alpha_s", "sigma_s", "x_coef", "x0_coef", "x0_prev_coef", "noise_coef")
SOLVER_ROW_INDEX = {name: i for i, name in enumerate(SOLVER_ROWS)}

# Philox streams keep the noise of different uses independent under the same seed.
STREAM_Q_SAMPLE = 0  # training noise ε of q-sample
STREAM_REVERSE_STEP = 1  # the z of a DDPM / DDIM reverse step (step = the sample's timestep t)
STREAM_INITIAL = 2  # x_T, the starting noise of a sampling run
MAX_SEED = 2**63  # seeds live in [0, 2**63): an int64 tensor holds them without sign tricks
MAX_CHANNELS = 2**24  # the channel shares Philox's counter word c3 with the stream id
