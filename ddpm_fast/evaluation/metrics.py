"""Sample quality: distances between generated and real images, with floor and ceiling to read them against.

    from ddpm_fast.evaluation.metrics import quality_report
    report = quality_report(samples, held_out, train=train_images, seed=0)
    print(report.format())           # samples vs held-out, real vs real (floor), noise vs real (ceiling)
    report.primary                   # "rf_kid" of samples vs held-out

Images everywhere are float tensors [N, C, H, W] in [-1, 1] (what the samplers return, and datasets normalised the
same way), on the CPU or a GPU. Nothing here downloads weights:

- `sliced_wasserstein` — sliced Wasserstein-1 distance between two sets of vectors (pixels or features).
- `RandomFeatures` — a fixed, seeded random conv net with multi-scale pooling: an embedding that sees local
  structure (edges, texture, shapes) where raw pixels mostly see colour, with no weights to download.
- `kernel_distance` — KID's unbiased MMD² with the cubic polynomial kernel, on any features.
- `quality_report` — all of these for samples vs held-out data, with the same figures for real vs real (the floor
  a perfect model would reach at this sample size) and for noise vs real (the ceiling), at equal set sizes.

- `nll_bits_per_dim` — the test-set negative log-likelihood (the variational bound, bits/dim) of any model, fixed or
  learned variance, as improved-diffusion reports it.

FID and KID proper need Inception weights, which we neither ship nor download, and we never unpickle a user's file:
point `InceptionFeatures` at a local ONNX feature extractor (run by ONNX Runtime), then call `fid` / `kid`.
`frechet_distance` is the usual Fréchet distance between Gaussians fitted to two feature sets, in float64 numpy.

Absolute figures depend on the embedding, the set size and the data; compare figures computed the same way at the
same N, which is why the report carries its own floor and ceiling.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..diffusion import q_sample
from ..models.output import unwrap_model_output
from ..schedule import NoiseSchedule
from ..vocabulary import PREDICTION_TYPES
from .likelihood import (model_log_variance, posterior_mean, predicted_x0, prior_bpd, split_learned_output,
                         vb_terms_bpd)

PathLike = Union[str, os.PathLike]
FeaturesLike = Union[torch.Tensor, np.ndarray]

PRIMARY = "rf_kid"  # the figure quality_report names as its headline (see QualityReport)
FIGURES = ("pixel_sw", "rf_sw", "rf_kid")
_IMAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_RANGE_TOLERANCE = 1e-3  # images may overshoot [-1, 1] by rounding, not by more
_DIRECTION_BUDGET = 1 << 22  # float64s of random directions held at once (32 MiB), whatever the dimension
_ROW_CHUNK = 4096  # rows projected / kernel blocks computed this many at a time
_ACTIVATION_BUDGET = 1 << 26  # RandomFeatures: at most this many floats in one layer's activations per batch


# ---------------------------------------------------------------------------------------------------------------
# argument checks


def _check_images(name: str, images: object, channels: Optional[int] = None, minimum: int = 2) -> torch.Tensor:
    """A float [N, C, H, W] batch with N >= minimum (2: the set metrics; 1: a per-image figure), finite and in
    [-1, 1] (catches [0, 255] or [0, 1]-shifted data)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of images [N, C, H, W], got {type(images).__name__}")
    if images.dtype not in _IMAGE_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor (float32, float16, bfloat16 or float64), "
                        f"got {str(images.dtype).replace('torch.', '')}")
    if images.dim() != 4:
        raise ValueError(f"{name} must have shape [N, C, H, W], got {tuple(images.shape)}")
    if images.shape[0] < minimum:
        raise ValueError(f"{name} holds {images.shape[0]} image(s); " + (
            "a distance between sets needs at least 2" if minimum == 2 else f"needs at least {minimum}"))
    if channels is not None and images.shape[1] != channels:
        raise ValueError(f"{name} has {images.shape[1]} channels; expected {channels}")
    if images.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(images.shape)})")
    low, high = images.aminmax()
    low, high = float(low), float(high)  # one sync at the public boundary, never in a loop
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if low < -1.0 - _RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
        raise ValueError(f"{name} must hold images in [-1, 1]; its values span [{low:.4g}, {high:.4g}]")
    return images


def _check_same_image_shape(name: str, images: torch.Tensor, reference_name: str, reference: torch.Tensor) -> None:
    if images.shape[1:] != reference.shape[1:]:
        raise ValueError(f"{name} has images of shape {tuple(images.shape[1:])} but {reference_name} has "
                         f"{tuple(reference.shape[1:])}; compare images of one shape")


def _as_vectors(name: str, value: object) -> torch.Tensor:
    """A set of N >= 2 vectors: a float tensor/array [N, D] or images [N, C, H, W] (flattened), finite."""
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.floating):
            raise TypeError(f"{name} must be a floating-point array, got dtype {value.dtype}")
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array [N, D], got {type(value).__name__}")
    if value.dtype not in _IMAGE_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor, got {str(value.dtype).replace('torch.', '')}")
    if value.dim() < 2:
        raise ValueError(f"{name} must have shape [N, D] (or [N, C, H, W]), got {tuple(value.shape)}")
    if value.shape[0] < 2:
        raise ValueError(f"{name} holds {value.shape[0]} vector(s); a distance between sets needs at least 2")
    value = value.flatten(1)
    if value.shape[1] == 0:
        raise ValueError(f"{name} has vectors of dimension 0")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return value


def _check_pair(name_a: str, a: object, name_b: str, b: object) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as_vectors(name_a, a), _as_vectors(name_b, b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} has vectors of dimension {a.shape[1]} but {name_b} has {b.shape[1]}")
    if a.device != b.device:
        b = b.to(a.device)
    return a, b


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _generator(seed: object) -> torch.Generator:
    """A CPU generator: draws do not depend on torch's global RNG nor on the device the data lives on."""
    seed = _check_int("seed", seed, 0)
    return torch.Generator(device="cpu").manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
# sliced Wasserstein


def sliced_wasserstein(a: FeaturesLike, b: FeaturesLike, num_projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between two sets of vectors ([N, D] features, or images flattened to vectors).

    The mean, over `num_projections` random unit directions (drawn from a CPU generator seeded with `seed`, so a
    fixed seed gives a fixed figure), of the exact 1-D Wasserstein-1 distance between the two sets' projections
    onto the direction. The unit is that of the vectors (for [-1, 1] pixels: pixel values along a unit direction).

    Sets of different sizes are compared through their quantile functions, exactly: both empirical quantile
    functions are step functions, constant between the breakpoints i/N_a and j/N_b, so the integral of their
    absolute difference is a finite sum over the merged breakpoints (equal sizes reduce to the mean absolute
    difference of the sorted projections). Symmetric, 0 for identical sets; like any finite-sample distance it is
    biased upwards at small N, so compare figures at equal set sizes. Computed in float64.
    """
    a, b = _check_pair("a", a, "b", b)
    num_projections = _check_int("num_projections", num_projections, 1)
    generator = _generator(seed)
    dim = a.shape[1]
    steps, weights_a, weights_b = _quantile_grid(a.shape[0], b.shape[0], a.device)
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    chunk = max(1, _DIRECTION_BUDGET // dim)  # fixed for a given dim, so the draws (and the figure) are too
    for start in range(0, num_projections, chunk):
        count = min(chunk, num_projections - start)
        directions = torch.randn(count, dim, generator=generator, dtype=torch.float64)
        directions = (directions / directions.norm(dim=1, keepdim=True)).to(a.device)
        projected_a = _project(a, directions).sort(dim=0).values  # [N_a, count]
        projected_b = _project(b, directions).sort(dim=0).values
        gap = (projected_a[weights_a] - projected_b[weights_b]).abs()  # quantiles on the merged grid
        total += (gap * steps[:, None]).sum()
    return float(total) / num_projections


def _project(vectors: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """vectors [N, D] @ directions.T in float64, a block of rows at a time (a float64 copy of all rows may not fit)."""
    return torch.cat([rows.double() @ directions.T for rows in vectors.split(_ROW_CHUNK)])


def _quantile_grid(size_a: int, size_b: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The merged breakpoints of two empirical quantile functions: interval widths and, per interval, the order
    statistic of each set that is the quantile there."""
    breaks = torch.cat([torch.arange(size_a + 1, dtype=torch.float64) / size_a,
                        torch.arange(size_b + 1, dtype=torch.float64) / size_b]).unique()  # sorted, from 0 to 1
    widths = breaks.diff()
    middles = (breaks[:-1] + breaks[1:]) / 2
    index_a = (middles * size_a).floor().long().clamp(max=size_a - 1)
    index_b = (middles * size_b).floor().long().clamp(max=size_b - 1)
    return widths.to(device), index_a.to(device), index_b.to(device)


# ---------------------------------------------------------------------------------------------------------------
# random-feature embedding


class RandomFeatures:
    """A fixed random-feature embedding of images: no downloaded weights, the same numbers in every run.

    Why: distances on raw pixels are dominated by colour and position, and barely see blur or grain. A random conv
    net with a nonlinearity responds to local structure (edges, corners, texture, noise), and pooling its responses
    over space makes the figure insensitive to where an object sits. Random conv features are a weight-free
    stand-in for a trained embedding when ranking generative models; they rank, they are not comparable to
    published Inception figures.

    Net: `len(widths)` stages of 3×3 conv (replicate padding, no bias) → ReLU, each stage after the first at half
    the resolution of the previous one (2×2 average pooling). Weights are Gaussian, drawn from a CPU generator
    seeded with `seed` (never torch's global RNG), He-scaled, and have zero spatial mean per input channel: a filter
    then answers only to change across space, so a flat region gives 0 at every stage. Without that, every random
    filter's response is mostly the flat colour under it, which varies far more between images than structure
    does, and blur or grain drown in it.
    Features, per image: the per-channel spatial mean and standard deviation (two-pass) of the pixels themselves
    (stage 0: colour and contrast) and of every stage's output (how much of each pattern, and how unevenly it is
    spread): 2·(channels + sum(widths)) values (902 for RGB and the default widths), float32.

    batch_size: images per forward pass; None bounds each stage's activations to about 2**26 floats (256 MiB).
    Call with images [N, channels, H, W] in [-1, 1] (H, W >= 2**(stages-1)) on any device: features [N, dim],
    float32, on that device.
    """

    def __init__(self, channels: int = 3, seed: int = 0, widths: Sequence[int] = (64, 128, 256),
                 batch_size: Optional[int] = None):
        self.channels = _check_int("channels", channels, 1)
        self.seed = _check_int("seed", seed, 0)
        widths = tuple(widths)
        if not widths:
            raise ValueError("widths must name at least one stage")
        for width in widths:
            _check_int("each entry of widths", width, 1)
        self.widths = widths
        self.batch_size = None if batch_size is None else _check_int("batch_size", batch_size, 1)
        generator = _generator(seed)
        self.weights = []  # float32 CPU tensors; copies on other devices are cached in _device_weights
        in_channels = channels
        for width in widths:
            weight = torch.randn(width, in_channels, 3, 3, generator=generator, dtype=torch.float64)
            weight -= weight.mean(dim=(2, 3), keepdim=True)  # zero spatial mean: answers to change only
            # He scaling for ReLU; each centred 3×3 kernel keeps 8 of its 9 degrees of freedom
            self.weights.append((weight * math.sqrt(2.0 / (in_channels * 8))).float())
            in_channels = width
        self.dim = 2 * (channels + sum(widths))
        self._device_weights: dict[torch.device, list[torch.Tensor]] = {torch.device("cpu"): self.weights}

    def __repr__(self) -> str:
        return f"RandomFeatures(channels={self.channels}, seed={self.seed}, widths={self.widths}, dim={self.dim})"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = _check_images("images", images, self.channels)
        smallest = 2 ** (len(self.widths) - 1)
        if min(images.shape[2:]) < smallest:
            raise ValueError(f"images must be at least {smallest}x{smallest} pixels for {len(self.widths)} stages, "
                             f"got {tuple(images.shape[2:])}")
        weights = self._weights_on(images.device)
        batch_size = self.batch_size or max(1, _ACTIVATION_BUDGET // (max(self.widths) * images[0, 0].numel()))
        return torch.cat([self._embed(batch.float(), weights) for batch in images.split(batch_size)])

    def _weights_on(self, device: torch.device) -> list[torch.Tensor]:
        if device not in self._device_weights:
            self._device_weights[device] = [weight.to(device) for weight in self.weights]
        return self._device_weights[device]

    @staticmethod
    def _embed(images: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        x = images
        moments = list(_spatial_moments(x))
        for stage, weight in enumerate(weights):
            if stage:
                x = F.avg_pool2d(x, 2)
            x = F.relu(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight))
            moments += _spatial_moments(x)
        return torch.cat(moments, dim=1)


def _spatial_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation over space of [N, C, H, W] (two-pass, not E[x²] − E[x]²)."""
    variance, mean = torch.var_mean(x, dim=(2, 3), correction=0)
    return mean, variance.sqrt()


# ---------------------------------------------------------------------------------------------------------------
# kernel distance (KID's estimator)


def kernel_distance(features_a: FeaturesLike, features_b: FeaturesLike, *, subset_size: Optional[int] = None,
                    num_subsets: int = 100, seed: int = 0) -> float:
    """Unbiased MMD² between two feature sets with KID's kernel k(x, y) = (x·y/d + 1)³ (d = feature dimension).

    This is the Kernel Inception Distance estimator (Bińkowski et al., 2018) on whatever features it is given.
    Unbiased: its expectation is 0 when both sets come from one distribution, whatever N, so a figure can be
    slightly negative; a set against itself gives about −(2/N)·(mean k(x,x) − mean k(x,y)), a small negative
    number, not 0. Scale: raw MMD², which grows with the features' magnitude (k ≈ (1 + |x|²/d)³). On Inception
    pool-3 features KID is usually quoted ×1000 ("KID 5.2" is 0.0052 here); on RandomFeatures of 32×32 images real
    vs real is ~1e-5, mild blur ~5e-4 and noise ~0.1 at N = 128. Only compare figures from one embedding.

    subset_size: None — one estimate on the full sets (any sizes; kernel sums are computed in blocks, so memory
    stays bounded). An int — the mean over `num_subsets` estimates, each on `subset_size` rows drawn without
    replacement from each set (capped at the set's size) with a generator seeded by `seed`: KID's usual protocol
    (subsets of 1000, 100 of them) that keeps the cost linear in N. Computed in float64.
    """
    a, b = _check_pair("features_a", features_a, "features_b", features_b)
    num_subsets = _check_int("num_subsets", num_subsets, 1)
    if subset_size is None or (subset_size >= a.shape[0] and subset_size >= b.shape[0]):
        if subset_size is not None:
            _check_int("subset_size", subset_size, 2)
        return _mmd2_unbiased(a, b)
    subset_size = _check_int("subset_size", subset_size, 2)
    generator = _generator(seed)
    size_a, size_b = min(subset_size, a.shape[0]), min(subset_size, b.shape[0])
    estimates = []
    for _ in range(num_subsets):
        rows_a = torch.randperm(a.shape[0], generator=generator)[:size_a].to(a.device)
        rows_b = torch.randperm(b.shape[0], generator=generator)[:size_b].to(b.device)
        estimates.append(_mmd2_unbiased(a[rows_a], b[rows_b]))
    return float(np.mean(estimates))


def _mmd2_unbiased(a: torch.Tensor, b: torch.Tensor) -> float:
    m, n = a.shape[0], b.shape[0]
    sum_aa = _kernel_sum(a, a, exclude_diagonal=True)
    sum_bb = _kernel_sum(b, b, exclude_diagonal=True)
    sum_ab = _kernel_sum(a, b, exclude_diagonal=False)
    return sum_aa / (m * (m - 1)) + sum_bb / (n * (n - 1)) - 2.0 * sum_ab / (m * n)


def _kernel_sum(x: torch.Tensor, y: torch.Tensor, exclude_diagonal: bool) -> float:
    """Σ_ij (x_i·y_j/d + 1)³ in float64, block by block (never the whole N×N matrix); without i = j if asked."""
    dim = x.shape[1]
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for rows_x in x.split(_ROW_CHUNK):
        rows_x = rows_x.double()
        for rows_y in y.split(_ROW_CHUNK):
            total += ((rows_x @ rows_y.double().T) / dim + 1.0).pow(3).sum()
    if exclude_diagonal:
        for rows in x.split(_ROW_CHUNK):
            rows = rows.double()
            total -= ((rows * rows).sum(1) / dim + 1.0).pow(3).sum()
    return float(total)


# ---------------------------------------------------------------------------------------------------------------
# the report: samples vs held-out, with floor and ceiling


@dataclasses.dataclass(frozen=True)
class QualityReport:
    """Distances of three comparisons, each at n images per side (see quality_report for the rule).

    figures[comparison][figure], comparison in ("samples", "real", "noise"):
      samples — generated samples vs held-out images;
      real    — real vs real, the floor: what a perfect model would score at this n (held-out vs train images when
                train was given, else one half of held_out vs the other);
      noise   — Gaussian noise clamped to [-1, 1] vs held-out images, the ceiling: a model that learnt nothing.
    figure in FIGURES: "pixel_sw" (sliced Wasserstein-1 on pixels), "rf_sw" (sliced Wasserstein-1 on
    RandomFeatures), "rf_kid" (kernel_distance on RandomFeatures; the PRIMARY figure).
    relative[figure] = (samples − real) / (noise − real): 0 at the floor, 1 at the ceiling. Noise is very far from
    any image distribution in the random-feature figures, so visibly flawed samples (blurred, colour-shifted) can
    sit at a relative rf_kid of ~0.01: read the samples figure against the floor as well.
    """

    n: int
    seed: int
    figures: dict
    primary_name: str = PRIMARY

    @property
    def primary(self) -> float:
        """The headline figure: rf_kid of samples vs held-out (lower is better; compare with floor and ceiling)."""
        return self.figures["samples"][self.primary_name]

    @property
    def relative(self) -> dict:
        relative = {}
        for figure in FIGURES:
            floor, ceiling = self.figures["real"][figure], self.figures["noise"][figure]
            span = ceiling - floor
            relative[figure] = (self.figures["samples"][figure] - floor) / span if span > 0 else float("nan")
        return relative

    def as_dict(self) -> dict:
        return {"n": self.n, "seed": self.seed, "primary": self.primary_name, "primary_value": self.primary,
                "figures": {comparison: dict(values) for comparison, values in self.figures.items()},
                "relative": self.relative}

    def format(self) -> str:
        """A small table: one row per figure, columns samples / floor / ceiling / relative position."""
        relative = self.relative
        lines = [f"Sample quality at n = {self.n} images per side (seed {self.seed}); lower is better. "
                 f"floor = real vs real, ceiling = noise vs real; primary figure: {self.primary_name}.",
                 "relative = (samples - floor) / (ceiling - floor): 0 is as good as real images, 1 as bad as noise.",
                 f"{'figure':<10}{'samples':>12}{'floor':>12}{'ceiling':>12}{'relative':>10}"]
        for figure in FIGURES:
            marker = " *" if figure == self.primary_name else ""
            lines.append(f"{figure:<10}{self.figures['samples'][figure]:>12.5g}{self.figures['real'][figure]:>12.5g}"
                         f"{self.figures['noise'][figure]:>12.5g}{relative[figure]:>10.3f}{marker}")
        return "\n".join(lines)


def quality_report(samples: torch.Tensor, held_out: torch.Tensor, train: Optional[torch.Tensor] = None, *,
                   seed: int = 0, num_projections: int = 256,
                   features: Optional[RandomFeatures] = None) -> QualityReport:
    """Samples vs held-out images, next to real vs real (floor) and noise vs real (ceiling), at one set size.

    Set-size rule (small-N bias: every figure here depends on N, so all three comparisons use the same n per side):
      n = len(samples), capped at len(held_out) and, with train, at len(train); without train, at len(held_out)//2.
      R = n held-out images chosen at random (the reference side of every comparison);
      floor: R vs n random train images (train given: the distance a model that reproduced its training set exactly
             would score) or vs n other held-out images (no train: the two halves of the held-out data);
      samples: n random samples (all of them unless capped) vs R;  ceiling: n noise images vs R.
    Random choices, the noise, the projections and the RandomFeatures net (unless `features` is given) all derive
    from `seed`: a fixed seed gives fixed figures. Needs n >= 2.
    """
    samples = _check_images("samples", samples)
    held_out = _check_images("held_out", held_out)
    _check_same_image_shape("held_out", held_out, "samples", samples)
    if train is not None:
        train = _check_images("train", train)
        _check_same_image_shape("train", train, "samples", samples)
    seed = _check_int("seed", seed, 0)
    if features is None:
        features = RandomFeatures(channels=samples.shape[1], seed=seed)
    elif not isinstance(features, RandomFeatures):
        raise TypeError(f"features must be a RandomFeatures, got {type(features).__name__}")
    if train is None:
        n = min(samples.shape[0], held_out.shape[0] // 2)
        if n < 2:
            raise ValueError(f"held_out holds {held_out.shape[0]} images; without train it is split in two halves "
                             "of at least 2 images each, so it needs at least 4")
    else:
        n = min(samples.shape[0], held_out.shape[0], train.shape[0])

    generator = _generator(seed)
    device = samples.device
    held_out_order = torch.randperm(held_out.shape[0], generator=generator)
    reference = held_out[held_out_order[:n].to(held_out.device)].to(device)
    if train is None:
        other_real = held_out[held_out_order[n:2 * n].to(held_out.device)].to(device)
    else:
        other_real = train[torch.randperm(train.shape[0], generator=generator)[:n].to(train.device)].to(device)
    chosen_samples = samples[torch.randperm(samples.shape[0], generator=generator)[:n].to(device)]
    noise = torch.randn((n, *samples.shape[1:]), generator=generator).clamp(-1.0, 1.0).to(device)

    embedded = {name: features(images) for name, images in
                (("reference", reference), ("samples", chosen_samples), ("real", other_real), ("noise", noise))}
    pixels = {"samples": chosen_samples, "real": other_real, "noise": noise}
    figures = {}
    for comparison in ("samples", "real", "noise"):
        figures[comparison] = {
            "pixel_sw": sliced_wasserstein(pixels[comparison], reference, num_projections, seed),
            "rf_sw": sliced_wasserstein(embedded[comparison], embedded["reference"], num_projections, seed),
            "rf_kid": kernel_distance(embedded[comparison], embedded["reference"]),
        }
    return QualityReport(n=n, seed=seed, figures=figures)


# ---------------------------------------------------------------------------------------------------------------
# FID / KID with a user's local Inception network (ONNX)


class InceptionFeatures:
    """Features from a local ONNX feature extractor (e.g. an Inception-v3 pool-3 export), run by ONNX Runtime.

    We ship and download no weights, and never unpickle a user's file: the network comes as an ONNX file (a
    protobuf graph), so FID/KID can use the exact Inception the user trusts. The model's first input takes
    images [N, C, S, S]; its first output (or `output_name`) gives features, flattened to [N, D].

    input_size: the side S the network expects; None takes the model's static H×W when it declares one, else 299.
        Images are resized to S×S bilinearly (align_corners=False, as pytorch-fid does) when they differ.
    input_range: the value range the network's input expects; our [-1, 1] images are mapped linearly onto it.
        Default (-1, 1): what the bare Inception-v3 network takes (TF-FID's graph and torchvision's
        transform_input both rescale to [-1, 1] before its first conv), i.e. an export without a preprocessing
        step. Use (0, 1) for a pytorch-fid InceptionV3 exported with normalize_input=True (it rescales [0, 1]
        itself), (0, 255) for an export that takes raw pixel values (TF-FID's or torch-fidelity's entry points).
    providers: ONNX Runtime providers; default CUDA when onnxruntime has it and torch sees a GPU, else CPU.
    Single-channel images are repeated to 3 channels when the model takes 3 (FID on grayscale data).
    """

    def __init__(self, path: PathLike, input_size: Optional[int] = None, *,
                 input_range: tuple[float, float] = (-1.0, 1.0), batch_size: int = 64,
                 output_name: Optional[str] = None, providers: Optional[Sequence] = None):
        import onnxruntime as ort

        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file (InceptionFeatures needs a local ONNX feature "
                                    "extractor)")
        if providers is None:
            cuda = "CUDAExecutionProvider"
            available = ort.get_available_providers()
            providers = [cuda, "CPUExecutionProvider"] if cuda in available and torch.cuda.is_available() \
                else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), providers=list(providers))
        except Exception as error:  # onnxruntime raises its own exception types for unreadable files
            raise ValueError(f"{path}: not a loadable ONNX model ({type(error).__name__}: {error})") from None
        self.path = path
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        if model_input.type not in ("tensor(float)", "tensor(float16)"):
            raise ValueError(f"{path}: input {model_input.name!r} has type {model_input.type}; expected a float "
                             "image tensor")
        self._input_dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32
        shape = model_input.shape
        if len(shape) != 4:
            raise ValueError(f"{path}: input {model_input.name!r} has shape {shape}; expected [N, C, H, W]")
        self.channels = shape[1] if isinstance(shape[1], int) else 3
        static_size = shape[2] if isinstance(shape[2], int) and shape[2] == shape[3] else None
        if input_size is None:
            input_size = static_size or 299
        input_size = _check_int("input_size", input_size, 1)
        if static_size is not None and input_size != static_size:
            raise ValueError(f"input_size={input_size}, but {path} takes {static_size}x{static_size} images")
        self.input_size = input_size
        outputs = [node.name for node in self.session.get_outputs()]
        if output_name is None:
            output_name = outputs[0]
        elif output_name not in outputs:
            raise ValueError(f"output_name {output_name!r} is not an output of {path} (it has {', '.join(outputs)})")
        self.output_name = output_name
        low, high = (float(value) for value in input_range)
        if not high > low:
            raise ValueError(f"input_range must be (low, high) with high > low, got {input_range!r}")
        self.input_range = (low, high)
        self.batch_size = _check_int("batch_size", batch_size, 1)

    def __repr__(self) -> str:
        return (f"InceptionFeatures({str(self.path)!r}, input_size={self.input_size}, input_range={self.input_range},"
                f" output={self.output_name!r})")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] → features [N, D], float32 on the CPU."""
        images = _check_images("images", images)
        if images.shape[1] != self.channels and not (images.shape[1] == 1 and self.channels == 3):
            raise ValueError(f"images has {images.shape[1]} channels; {self.path} takes {self.channels}")
        low, high = self.input_range
        batches = []
        for batch in images.split(self.batch_size):
            batch = batch.float()
            if batch.shape[1] == 1 and self.channels == 3:
                batch = batch.expand(-1, 3, -1, -1)
            if batch.shape[2:] != (self.input_size, self.input_size):
                batch = F.interpolate(batch, size=(self.input_size, self.input_size), mode="bilinear",
                                      align_corners=False)
            batch = (batch + 1.0) * ((high - low) / 2.0) + low
            array = np.ascontiguousarray(batch.cpu().numpy(), dtype=self._input_dtype)
            output = self.session.run([self.output_name], {self.input_name: array})[0]
            batches.append(torch.from_numpy(np.asarray(output, dtype=np.float32).reshape(output.shape[0], -1)))
        return torch.cat(batches)


def frechet_distance(features_a: FeaturesLike, features_b: FeaturesLike) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID, given Inception features).

    ‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr (Σ_a^½ Σ_b Σ_a^½)^½, in float64 numpy. tr sqrtm(Σ_a Σ_b) is computed as
    the sum of square roots of the eigenvalues of the symmetric matrix Σ_a^½ Σ_b Σ_a^½ (same spectrum as Σ_a Σ_b),
    with symmetric eigendecompositions only and tiny negative eigenvalues (rounding) clipped to 0: no complex parts
    to discard, no scipy. Covariances are unbiased (N − 1), as in pytorch-fid. Biased upwards at small N.
    """
    a, b = _check_pair("features_a", features_a, "features_b", features_b)
    a, b = a.detach().cpu().double().numpy(), b.detach().cpu().double().numpy()
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    eigenvalues, eigenvectors = np.linalg.eigh(cov_a)
    sqrt_cov_a = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T
    middle = sqrt_cov_a @ cov_b @ sqrt_cov_a
    middle = (middle + middle.T) / 2.0
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)).sum()
    distance = float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)
    return max(distance, 0.0)  # rounding can leave -1e-12 for identical sets


def _inception(inception: object) -> InceptionFeatures:
    if isinstance(inception, InceptionFeatures):
        return inception
    if isinstance(inception, (str, os.PathLike)):
        return InceptionFeatures(inception)
    raise TypeError(f"inception must be an InceptionFeatures or a path to an ONNX file, got {type(inception).__name__}")


def fid(images_a: torch.Tensor, images_b: torch.Tensor, inception: Union[InceptionFeatures, PathLike]) -> float:
    """FID: frechet_distance of the two image sets' features under `inception` (an InceptionFeatures or an ONNX
    path). Standard practice compares 10k–50k images; fewer give a larger (biased) figure."""
    inception = _inception(inception)
    images_a, images_b = _check_images("images_a", images_a), _check_images("images_b", images_b)
    _check_same_image_shape("images_b", images_b, "images_a", images_a)
    return frechet_distance(inception(images_a), inception(images_b))


def kid(images_a: torch.Tensor, images_b: torch.Tensor, inception: Union[InceptionFeatures, PathLike], *,
        subset_size: int = 1000, num_subsets: int = 100, seed: int = 0) -> float:
    """KID: kernel_distance of the two image sets' features under `inception`, with KID's usual protocol (mean over
    100 subsets of 1000 images, or of all images when there are fewer). Raw MMD², not ×1000."""
    inception = _inception(inception)
    images_a, images_b = _check_images("images_a", images_a), _check_images("images_b", images_b)
    _check_same_image_shape("images_b", images_b, "images_a", images_a)
    return kernel_distance(inception(images_a), inception(images_b), subset_size=subset_size,
                           num_subsets=num_subsets, seed=seed)


# ---------------------------------------------------------------------------------------------------------------
# likelihood


@torch.no_grad()
def nll_bits_per_dim(model, images: torch.Tensor, schedule, *, prediction_type: str = "epsilon",
                     variance_type: str = "fixed_small", clip_denoised: bool = True, batch_size: int = 64,
                     seed: int = 0) -> float:
    """Test-set negative log-likelihood in bits per dimension, as improved-diffusion reports it (Nichol & Dhariwal
    2021, Table 2): the variational bound Σ_t L_t + L_prior of each image, averaged over `images`.

    images: float [N, C, H, W] in [-1, 1], N >= 1, 8-bit data (the t = 0 term is a discretized likelihood with bins of
    2/255). model(x_t, t): ε, x0 or v per prediction_type, with C more channels for variance_type "learned_range";
    fixed variances are "fixed_small" / "fixed_large". clip_denoised clamps the predicted x0 to [-1, 1] as
    improved-diffusion's evaluation does. Costs T model calls per batch; the noise of each term is torch.randn from
    a generator seeded with `seed`. Runs on the model's device (the images move there). Raises ValueError / TypeError
    naming the argument.
    """

    images = _check_images("images", images, minimum=1)  # the bound is a per-image figure: one image has it
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a ddpm_fast.NoiseSchedule, got {type(schedule).__name__}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {prediction_type!r}")
    if variance_type not in ("fixed_small", "fixed_large", "learned_range"):
        raise ValueError(f"variance_type must be fixed_small, fixed_large or learned_range, got {variance_type!r}")
    batch_size = _check_int("batch_size", batch_size, 1)
    parameter = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    device = parameter.device if parameter is not None else images.device
    generator = torch.Generator(device).manual_seed(_check_int("seed", seed, 0))
    channels, total = images.shape[1], []
    for start in range(0, images.shape[0], batch_size):
        x0 = images[start:start + batch_size].to(device, torch.float32)
        bpd = prior_bpd(x0, schedule)
        for step in range(schedule.num_timesteps):
            t = torch.full((x0.shape[0],), step, dtype=torch.int64, device=device)
            x_t, _ = q_sample(x0, t, schedule, noise=torch.randn(x0.shape, generator=generator, device=device))
            output = unwrap_model_output(model(x_t, t)).float()
            values = None
            if variance_type == "learned_range":
                output, values = split_learned_output(output, channels)
            x0_pred = predicted_x0(output, x_t, t, schedule, prediction_type)
            if clip_denoised:
                x0_pred = x0_pred.clamp(-1, 1)
            mean = posterior_mean(x0_pred, x_t, t, schedule)
            bpd = bpd + vb_terms_bpd(mean, model_log_variance(variance_type, t, schedule, mean, values), x0, x_t, t,
                                     schedule)
        total.append(bpd.cpu())
    return float(torch.cat(total).double().mean())
