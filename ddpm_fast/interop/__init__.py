"""Other libraries: drop-in diffusers scheduler and pipeline arguments, diffusers U-Net weights."""
