"""The optional progress bar of a sampling loop (tqdm), shared by FastSampler and OnnxSampler."""

from __future__ import annotations


def progress_bar(enabled: bool, total: int, description: str):
    """A tqdm bar of the steps launched, or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="step")
