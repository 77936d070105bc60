"""The environment for tests that start `ddpm-fast` / torchrun in a subprocess."""

import os


def subprocess_env() -> dict:
    """The test's environment without the interpreter (the subprocess's CPU tensors take the torch references),
    one thread per process (two ranks share two cores), no progress bars, and no torchrun variables of our own."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["OMP_NUM_THREADS"] = "1"
    env["TQDM_DISABLE"] = "1"
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env
