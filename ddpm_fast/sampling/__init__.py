"""Sampling: FastSampler, the chain plan, the graphed step loop, timestep spacings and multi-process sampling."""
