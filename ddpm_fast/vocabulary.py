"""The words of the field and the numbers every layer shares: prediction and variance types, sampling methods,
timestep spacings, schedule names, ONNX graphs, dtypes, the default sampler options, the rows of the coefficient
tables and the Philox stream ids.

The bottom of the package: it imports nothing (neither torch nor Triton), so configs, checks and the command line's
parser use it as the kernels do. A list of choices is written here once; every other module imports it.
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
# prediction's α_s and σ_s, then the coefficients of x_t, x0, the previous step's x0 and z, then (third order) of the
# x0 two steps back. The first STEP_GRAPH_SOLVER_ROWS are a dpm_solver_step ONNX graph's solver_coefficients input.
SOLVER_ROWS = ("alpha_s", "sigma_s", "x_coef", "x0_coef", "x0_prev_coef", "noise_coef", "x0_prev2_coef")
STEP_GRAPH_SOLVER_ROWS = 6
SOLVER_ROW_INDEX = {name: i for i, name in enumerate(SOLVER_ROWS)}
# Rows of the UniPC step's per-step table (ddpm_fast/sampling/unipc.py computes them): α_s and σ_s, then the
# coefficients of x_t, the previous corrected sample and this call's and the three previous x0 estimates in the next
# sample, then the same in this point's corrected sample. A multistep plan's solver table has SOLVER_TABLE_ROWS rows;
# each method reads its leading ones.
_UNIPC_TERMS = ("x_coef", "last_coef", "x0_coef", "x0_prev_coef", "x0_prev2_coef", "x0_prev3_coef")
UNIPC_ROWS = ("alpha_s", "sigma_s") + _UNIPC_TERMS + tuple("corrected_" + name for name in _UNIPC_TERMS)
UNIPC_ROW_INDEX = {name: i for i, name in enumerate(UNIPC_ROWS)}
SOLVER_TABLE_ROWS = max(len(SOLVER_ROWS), len(UNIPC_ROWS))

# Philox streams keep the noise of different uses independent under the same seed.
STREAM_Q_SAMPLE = 0  # training noise ε of q-sample
STREAM_REVERSE_STEP = 1  # the z of a DDPM / DDIM reverse step (step = the sample's timestep t)
STREAM_INITIAL = 2  # x_T, the starting noise of a sampling run
MAX_SEED = 2**63  # seeds live in [0, 2**63): an int64 tensor holds them without sign tricks
MAX_CHANNELS = 2**24  # the channel shares Philox's counter word c3 with the stream id

# Sampling methods: ancestral DDPM (Ho et al. 2020), DDIM (Song et al. 2020), DPM-Solver++ 2M and its SDE variant
# (Lu et al. 2022), UniPC (Zhao et al. 2023). The multistep solvers carry earlier x0 estimates between steps.
DPM_METHODS = ("dpm_solver++", "sde_dpm_solver++")
MULTISTEP_METHODS = DPM_METHODS + ("unipc",)
METHODS = ("ddpm", "ddim") + MULTISTEP_METHODS
# How a chain shorter than T picks its timesteps (diffusers' names).
SPACINGS = ("leading", "trailing", "linspace")
# The multistep solvers' options, as diffusers' DPMSolverMultistepScheduler and UniPCMultistepScheduler name them
# (sampling/dpm_solver.py, sampling/unipc.py): the solver's order, where the chain ends (σ = 0, or σ_min: the
# schedule's σ at t = 0), and the σ spacings that replace the timestep spacing (Karras et al. 2022; Lu et al. 2022's
# uniform λ; uniform log σ), each a boolean of that name; euler_at_final is DPM-Solver++'s, solver_type (UniPC's
# B(h)) and disable_corrector (the steps after which UniPC's corrector is off) UniPC's.
SOLVER_ORDERS = (1, 2, 3)
FINAL_SIGMAS_TYPES = ("zero", "sigma_min")
SIGMA_SPACINGS = ("use_karras_sigmas", "use_lu_lambdas", "use_exponential_sigmas")
UNIPC_SOLVER_TYPES = ("bh1", "bh2")
# Dynamic thresholding (Saharia et al. 2022) of the multistep solvers' x0: on/off, the quantile of |x0| per sample,
# the largest threshold.
THRESHOLDING_DEFAULTS = {"thresholding": False, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0}
SOLVER_DEFAULTS = {"solver_order": 2, "lower_order_final": True, "final_sigmas_type": "zero",
                   "euler_at_final": False, "use_karras_sigmas": False, "use_lu_lambdas": False,
                   "use_exponential_sigmas": False, **THRESHOLDING_DEFAULTS, "solver_type": "bh2",
                   "disable_corrector": ()}
# The named β schedules NoiseSchedule builds and a training run takes.
SCHEDULES = ("linear", "cosine", "scaled_linear", "sigmoid")
# The variance types a training run learns or fixes (the `_log` spellings are read from diffusers configs only).
TRAINED_VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")
# The ONNX graphs export_onnx writes: the U-Net alone, or one whole reverse step of a method (a multistep solver's
# step takes its column of the chain's table as an input).
GRAPHS = ("model", "ddpm_step", "ddim_step", "dpm_solver_step", "unipc_step")
# Compute dtypes by name: a sampler's model ("auto": the device's default), a training run's autocast, an ONNX file.
SAMPLER_DTYPES = ("auto", "float32", "bfloat16", "float16")
TRAINING_DTYPES = ("auto", "float32", "bfloat16")
EXPORT_DTYPES = ("float32", "float16")
# What `ddpm-fast export` writes: an ONNX file, or a pt2 package (the U-Net compiled ahead of time by AOTInductor), and
# the compute dtypes a pt2 package takes (bfloat16: CPUs with AMX / AVX512-BF16, and GPUs).
EXPORT_FORMATS = ("onnx", "pt2")
PT2_DTYPES = ("float32", "bfloat16", "float16")
# What FastSampler.sample returns: float32 [B, C, H, W] in [-1, 1], uint8 [B, H, W, C], or PIL images.
OUTPUT_TYPES = ("tensor", "uint8", "pil")
# What a sampler uses for a setting that nothing stores and nobody gives (FastSampler's defaults).
DEFAULTS = {"prediction_type": "epsilon", "variance_type": "fixed_small", "clip_sample": False,
            "clip_sample_range": 1.0, "timestep_spacing": "linspace", "steps_offset": 0, "set_alpha_to_one": True,
            "null_class_label": None, **SOLVER_DEFAULTS}
