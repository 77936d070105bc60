"""The denoising networks: the U-Net, its blocks and its configuration (presets, diffusers layout)."""
