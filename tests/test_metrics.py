"""ddpm_fast.evaluation.metrics: sliced Wasserstein, random features, kernel distance, the quality report, FID/KID via ONNX.

The ranking tests use synthetic images built here (solid squares on plain backgrounds, 32×32), real sets drawn
with different seeds, and two controlled degradations: blur alone (which pixel distances cannot see) and blur
plus a brightness shift of 0.15 (the "mildly perturbed" set every figure must place between floor and ceiling).
The margins quoted in comments were measured over 8 seeds at n = 128; the tests use one fixed seed.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddpm_fast.evaluation.metrics import (FIGURES, PRIMARY, InceptionFeatures, QualityReport, RandomFeatures, fid,
                                    frechet_distance, kernel_distance, kid, quality_report, sliced_wasserstein)

# Left to the TRITON_INTERPRET=0 run (tests/conftest.py checks no test here reaches a kernel): image metrics: no kernel.
pytestmark = pytest.mark.torch_references

N = 128  # images per set in the ranking tests


def shapes(n, seed, size=32):
    """One or two solid-colour squares (sides 6–14 at 32×32, scaled with size) on a plain background, colours
    uniform in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, 1, 1, generator=generator) * 2 - 1).expand(n, 3, size, size).clone()
    grid = torch.arange(size)
    for square in range(2):
        side = torch.randint(max(1, 6 * size // 32), 15 * size // 32, (n, 1, 1), generator=generator)
        top = (torch.rand(n, 1, 1, generator=generator) * (size - side + 1)).long()
        left = (torch.rand(n, 1, 1, generator=generator) * (size - side + 1)).long()
        present = torch.rand(n, 1, 1, generator=generator) < (1.0 if square == 0 else 0.5)
        rows = (grid[None, :, None] >= top) & (grid[None, :, None] < top + side)
        columns = (grid[None, None, :] >= left) & (grid[None, None, :] < left + side)
        colour = torch.rand(n, 3, 1, 1, generator=generator) * 2 - 1
        images = torch.where((rows & columns & present)[:, None], colour, images)
    return images


def blur(images):
    """3×3 binomial blur, replicate borders."""
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None]) / 16
    channels = images.shape[1]
    return F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"),
                    kernel.expand(channels, 1, 3, 3).contiguous(), groups=channels)


def perturbed(images):
    """The mildly perturbed set: blurred and brightened by 0.15."""
    return (blur(images) + 0.15).clamp(-1, 1)


def noise_images(n, seed, size=32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)


@pytest.fixture(scope="module")
def image_sets():
    reference, other_real, degraded = shapes(N, 1), shapes(N, 2), shapes(N, 3)
    return {"reference": reference, "real": other_real, "blur": blur(degraded), "perturbed": perturbed(degraded),
            "noise": noise_images(N, 4)}


@pytest.fixture(scope="module")
def embedded(image_sets):
    features = RandomFeatures(channels=3, seed=0)
    return {name: features(images) for name, images in image_sets.items()}


# ---------------------------------------------------------------------------------------------------------------
# sliced Wasserstein


def test_sliced_wasserstein_deterministic_symmetric_zero_on_identical_sets():
    a, b = torch.randn(40, 7, dtype=torch.float64), torch.randn(40, 7, dtype=torch.float64) + 0.5
    assert sliced_wasserstein(a, b, seed=3) == sliced_wasserstein(a, b, seed=3)
    assert sliced_wasserstein(a, b, seed=3) != sliced_wasserstein(a, b, seed=4)
    assert sliced_wasserstein(a, b, seed=3) == pytest.approx(sliced_wasserstein(b, a, seed=3), rel=1e-12)
    assert sliced_wasserstein(a, a) == 0.0
    assert sliced_wasserstein(a, b) > 0.1
    torch.manual_seed(123)  # the global RNG plays no part
    first = sliced_wasserstein(a, b)
    torch.manual_seed(456)
    assert sliced_wasserstein(a, b) == first


def test_sliced_wasserstein_translation_matches_sphere_average():
    # For vectors in R³, W1 of a set and its translate by c along direction u is |u·c|, and the mean of |u·c| over
    # the unit sphere is |c|/2 (u·c/|c| is uniform on [-1, 1]).
    a = torch.randn(64, 3, dtype=torch.float64)
    shift = torch.tensor([0.3, -1.2, 0.4], dtype=torch.float64)
    value = sliced_wasserstein(a, a + shift, num_projections=8192, seed=1)
    assert value == pytest.approx(float(shift.norm()) / 2, rel=0.03)


def _w1_from_cdfs(x, y):
    """1-D Wasserstein-1 between two samples as ∫|F_x − F_y| (the CDF form; independent of the quantile code)."""
    points = np.sort(np.concatenate([x, y]))
    cdf_x = np.searchsorted(np.sort(x), points[:-1], side="right") / len(x)
    cdf_y = np.searchsorted(np.sort(y), points[:-1], side="right") / len(y)
    return float(np.sum(np.abs(cdf_x - cdf_y) * np.diff(points)))


@pytest.mark.parametrize("sizes", [(2, 2), (5, 3), (17, 40), (64, 64)])
def test_sliced_wasserstein_one_dimension_is_exact_w1_for_any_sizes(sizes):
    # In one dimension every direction is ±1, so the sliced distance is the exact W1 of the samples.
    generator = np.random.default_rng(sum(sizes))
    x, y = generator.normal(size=sizes[0]), generator.normal(0.7, 2.0, size=sizes[1])
    value = sliced_wasserstein(torch.from_numpy(x[:, None]), torch.from_numpy(y[:, None]), num_projections=5)
    assert value == pytest.approx(_w1_from_cdfs(x, y), rel=1e-10, abs=1e-12)


def test_sliced_wasserstein_unequal_sizes_same_distribution_is_zero():
    # A set and the same set with every vector repeated are one empirical distribution: distance 0 exactly.
    a = torch.randn(9, 5, dtype=torch.float64)
    assert sliced_wasserstein(a, a.repeat_interleave(3, dim=0)) == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(a, a[:-1]) > 0.0


def test_sliced_wasserstein_accepts_images_numpy_and_mixed_dtypes():
    images = shapes(6, 0)
    flat = images.flatten(1)
    assert sliced_wasserstein(images, blur(images)) == pytest.approx(
        sliced_wasserstein(flat.numpy(), blur(images).flatten(1).double()), rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# random features


def test_random_features_deterministic_and_seeded():
    images = shapes(10, 5)
    first = RandomFeatures(seed=7)
    torch.manual_seed(99)  # initialisation must not use the global RNG
    second = RandomFeatures(seed=7)
    assert torch.equal(first(images), second(images))
    features = first(images)
    assert features.shape == (10, first.dim) and first.dim == 2 * (3 + 64 + 128 + 256)
    assert features.dtype == torch.float32
    assert not torch.allclose(RandomFeatures(seed=8)(images), features)


def test_random_features_batching_and_dtypes_do_not_change_features():
    images = shapes(11, 6)
    features = RandomFeatures()
    reference = features(images)
    torch.testing.assert_close(RandomFeatures(batch_size=3)(images), reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(features(images.double()), reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(features(images[:5]), reference[:5], rtol=1e-5, atol=1e-6)


def test_random_features_see_structure_not_flat_colour():
    # Zero-mean filters and replicate padding: a flat image has no structure, so only stage 0 (its colour) is
    # non-zero; one edge lights the later stages up.
    features = RandomFeatures(channels=3)
    flat = torch.linspace(-0.9, 0.9, 3)[None, :, None, None].expand(2, 3, 16, 16).clone()
    out = features(flat)
    torch.testing.assert_close(out[:, :3], flat[:, :, 0, 0])  # per-channel means
    assert out[:, 6:].abs().max() < 1e-6  # 0 but for float32 rounding of the centred weights
    edge = flat.clone()
    edge[:, :, :, 8:] = -0.5
    assert features(edge)[:, 6:].abs().max() > 0.01


def test_random_features_rank_blur_above_real_where_pixels_cannot(embedded, image_sets):
    # The reason for the embedding: blur is invisible to pixel distances at this n (the blurred set even scores
    # below the real floor: over 8 seeds 0.080 vs 0.084 mean), but not to the random features
    # (rf_sw 0.0117 vs a floor of at most 0.0078; rf_kid 5.5e-4 vs at most 1.5e-4).
    reference = embedded["reference"]
    assert sliced_wasserstein(embedded["blur"], reference) > 1.3 * sliced_wasserstein(embedded["real"], reference)
    assert kernel_distance(embedded["blur"], reference) > 2 * max(kernel_distance(embedded["real"], reference), 1e-4)


# ---------------------------------------------------------------------------------------------------------------
# kernel distance


def _mmd2_direct(x, y):
    """Unbiased MMD² with the cubic polynomial kernel, written out with full kernel matrices (numpy, float64)."""
    d = x.shape[1]
    k_xx, k_yy, k_xy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return ((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
            - 2 * k_xy.mean())


def test_kernel_distance_matches_direct_formula_and_is_symmetric():
    generator = np.random.default_rng(0)
    x, y = generator.normal(size=(23, 6)), generator.normal(1.0, 1.0, size=(31, 6))
    value = kernel_distance(torch.from_numpy(x), torch.from_numpy(y))
    assert value == pytest.approx(_mmd2_direct(x, y), rel=1e-10)
    assert kernel_distance(y, x) == pytest.approx(value, rel=1e-10)
    assert value > 0


def test_kernel_distance_blocks_agree_with_one_block(monkeypatch):
    from ddpm_fast.evaluation import metrics

    generator = np.random.default_rng(1)
    x, y = generator.normal(size=(50, 4)), generator.normal(size=(37, 4))
    whole = kernel_distance(x, y)
    monkeypatch.setattr(metrics, "_ROW_CHUNK", 8)
    assert kernel_distance(x, y) == pytest.approx(whole, rel=1e-10, abs=1e-14)


def test_kernel_distance_near_zero_for_same_distribution_positive_for_shift():
    generator = np.random.default_rng(2)
    a, b = generator.normal(size=(400, 16)), generator.normal(size=(400, 16))
    shifted = kernel_distance(a, b + 0.5)
    assert shifted > 0.05
    assert abs(kernel_distance(a, b)) < 0.05 * shifted
    # a set against itself: −(2/N)(mean k(x, x) − mean k(x, y)) up to O(1/N²), a small negative number
    own = kernel_distance(a, a)
    assert -0.05 * shifted < own < 0


def test_kernel_distance_subsets_deterministic():
    generator = np.random.default_rng(3)
    a, b = generator.normal(size=(60, 8)), generator.normal(0.2, 1.0, size=(50, 8))
    first = kernel_distance(a, b, subset_size=20, num_subsets=10, seed=5)
    assert first == kernel_distance(a, b, subset_size=20, num_subsets=10, seed=5)
    assert first != kernel_distance(a, b, subset_size=20, num_subsets=10, seed=6)
    assert first == pytest.approx(kernel_distance(a, b), abs=0.1)
    # subsets at least as large as both sets: the full-set estimate
    assert kernel_distance(a, b, subset_size=1000) == pytest.approx(kernel_distance(a, b), rel=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# ranking on controlled data: real vs real < mildly perturbed vs real < noise vs real


def test_ranking_pixels(image_sets):
    # Over 8 seeds at n = 128: floor 0.066–0.105, perturbed 0.131–0.160, noise 0.194–0.216.
    reference = image_sets["reference"]
    floor, middle, ceiling = (sliced_wasserstein(image_sets[name], reference)
                              for name in ("real", "perturbed", "noise"))
    assert floor < middle < ceiling


def test_ranking_random_features(embedded):
    # Over 8 seeds at n = 128: rf_sw floor ≤ 0.0078, perturbed 0.013–0.016, noise ≈ 0.15;
    # rf_kid floor −6e-5…1.5e-4, perturbed 7e-4…1.1e-3, noise ≈ 0.107.
    reference = embedded["reference"]
    for distance in (sliced_wasserstein, kernel_distance):
        floor, middle, ceiling = (distance(embedded[name], reference) for name in ("real", "perturbed", "noise"))
        assert floor < middle < ceiling, distance.__name__
        assert middle < 0.5 * ceiling


# ---------------------------------------------------------------------------------------------------------------
# quality report


def test_quality_report_floor_samples_ceiling(image_sets):
    held_out = shapes(2 * N, 10)
    report = quality_report(perturbed(shapes(N, 11)), held_out, seed=0)
    assert isinstance(report, QualityReport) and report.n == N
    for figure in FIGURES:
        floor, samples, ceiling = (report.figures[comparison][figure] for comparison in ("real", "samples", "noise"))
        assert floor < samples < ceiling, figure
    assert report.primary_name == PRIMARY == "rf_kid"
    assert report.primary == report.figures["samples"]["rf_kid"]
    data = report.as_dict()
    assert data["primary"] == "rf_kid" and data["n"] == N and set(data["figures"]) == {"samples", "real", "noise"}
    text = report.format()
    assert "rf_kid" in text and "floor" in text and "ceiling" in text and f"n = {N}" in text
    assert "relative = (samples - floor) / (ceiling - floor)" in text  # the column is explained where it is printed


def test_quality_report_relative_positions():
    held_out = shapes(2 * 64, 20)
    good = quality_report(shapes(64, 21), held_out, seed=1)  # samples from the data distribution itself
    bad = quality_report(noise_images(64, 22), held_out, seed=1)  # an untrained model
    assert abs(good.relative["rf_kid"]) < 0.05 and abs(good.relative["rf_sw"]) < 0.1
    assert 0.9 < bad.relative["rf_kid"] < 1.1 and 0.9 < bad.relative["rf_sw"] < 1.1


def test_quality_report_deterministic_and_set_size_rule():
    held_out, samples, train = shapes(20, 30, size=8), perturbed(shapes(12, 31, size=8)), shapes(15, 32, size=8)
    first = quality_report(samples, held_out, seed=4)
    assert first.as_dict() == quality_report(samples, held_out, seed=4).as_dict()
    assert first.as_dict() != quality_report(samples, held_out, seed=5).as_dict()
    assert first.n == 10  # without train: half of held_out
    assert quality_report(samples, held_out, train, seed=4).n == 12  # with train: all the samples
    assert quality_report(samples, held_out[:8], train, seed=4).n == 8  # capped by held_out


# ---------------------------------------------------------------------------------------------------------------
# Fréchet distance


def _hadamard(size):
    matrix = np.ones((1, 1))
    while matrix.shape[0] < size:
        matrix = np.block([[matrix, matrix], [matrix, -matrix]])
    return matrix


def test_frechet_distance_closed_form_for_diagonal_covariances():
    # Columns 2.. of a Hadamard matrix are orthogonal with zero mean, so these sets have exactly the given means
    # and diagonal sample covariances σ²·N/(N−1): FID = ‖μ_a − μ_b‖² + Σ (σ_a − σ_b)²·N/(N−1).
    columns = _hadamard(16)[:, 1:6]
    mean_a, mean_b = np.array([0.1, -2.0, 0.5, 3.0, 0.0]), np.array([1.0, 0.0, 0.5, -1.0, 0.2])
    sigma_a, sigma_b = np.array([1.0, 0.5, 2.0, 0.1, 3.0]), np.array([0.3, 0.5, 1.0, 2.0, 0.01])
    a, b = mean_a + columns * sigma_a, mean_b + columns * sigma_b
    expected = ((mean_a - mean_b) ** 2).sum() + ((sigma_a - sigma_b) ** 2).sum() * 16 / 15
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(torch.from_numpy(b).float(), torch.from_numpy(a).float()) == pytest.approx(expected,
                                                                                                        rel=1e-5)


def test_frechet_distance_matches_general_eigenvalue_route():
    generator = np.random.default_rng(4)
    a = generator.normal(size=(200, 6)) @ generator.normal(size=(6, 6))
    b = generator.normal(size=(150, 6)) @ generator.normal(size=(6, 6)) + 0.3
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    trace_sqrt = np.sqrt(np.linalg.eigvals(cov_a @ cov_b).real.clip(0)).sum()  # the non-symmetric route
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_identical_sets_is_zero_even_when_singular():
    a = np.random.default_rng(5).normal(size=(16, 64))  # 64 dimensions, 16 points: rank-15 covariance
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8 * np.trace(np.cov(a, rowvar=False)))
    assert frechet_distance(a, a + 1.0) == pytest.approx(64.0, rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# FID / KID through an ONNX feature extractor


def _tiny_extractor(path, spatial):
    """An ONNX conv → ReLU → global-average-pool → flatten net (8 features), weights from a seeded numpy RNG.

    spatial: an int (static H = W) or None (dynamic H and W). Returns the weights for the torch reference."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    generator = np.random.default_rng(0)
    weight = generator.normal(0, 0.3, size=(8, 3, 3, 3)).astype(np.float32)
    bias = generator.normal(0, 0.1, size=8).astype(np.float32)
    height = spatial if spatial is not None else "height"
    width = spatial if spatial is not None else "width"
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "weight", "bias"], ["conv"], pads=[1, 1, 1, 1], strides=[2, 2]),
         helper.make_node("Relu", ["conv"], ["relu"]),
         helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["features"], axis=1)],
        "tiny_extractor",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, height, width])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return torch.from_numpy(weight), torch.from_numpy(bias)


def _tiny_reference(images, weights):
    weight, bias = weights
    return F.relu(F.conv2d(images, weight, bias, stride=2, padding=1)).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    static, dynamic = folder / "static.onnx", folder / "dynamic.onnx"
    weights = _tiny_extractor(static, 32)
    _tiny_extractor(dynamic, None)
    return {"static": static, "dynamic": dynamic, "weights": weights}


def test_inception_features_resize_range_and_shape_match_torch(extractor):
    inception = InceptionFeatures(extractor["static"], input_range=(0.0, 255.0), batch_size=4)
    assert inception.input_size == 32 and inception.input_name == "images" and inception.output_name == "features"
    images = shapes(10, 40, size=16)
    features = inception(images)
    resized = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    expected = _tiny_reference((resized + 1) * 127.5, extractor["weights"])
    assert features.shape == (10, 8) and features.dtype == torch.float32
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-3)
    # default range [-1, 1]: images go in as they are (32×32: no resize)
    images = shapes(5, 41)
    torch.testing.assert_close(InceptionFeatures(extractor["static"])(images),
                               _tiny_reference(images, extractor["weights"]), rtol=1e-4, atol=1e-5)


def test_inception_features_dynamic_size_and_grayscale(extractor):
    assert InceptionFeatures(extractor["dynamic"]).input_size == 299  # no static size: Inception's
    inception = InceptionFeatures(extractor["dynamic"], input_size=24)
    gray = shapes(4, 42)[:, :1]
    torch.testing.assert_close(inception(gray), inception(gray.expand(-1, 3, -1, -1).contiguous()))
    expected = _tiny_reference(F.interpolate(gray.expand(-1, 3, -1, -1), size=(24, 24), mode="bilinear",
                                             align_corners=False), extractor["weights"])
    torch.testing.assert_close(inception(gray), expected, rtol=1e-4, atol=1e-5)


def test_fid_and_kid_through_onnx(extractor):
    inception = InceptionFeatures(extractor["static"])
    a, b = shapes(64, 43), shapes(64, 44)
    assert fid(a, a, inception) == pytest.approx(0.0, abs=1e-9)
    reference_a, reference_b = (_tiny_reference(images, extractor["weights"]) for images in (a, b))
    assert fid(a, b, extractor["static"]) == pytest.approx(frechet_distance(reference_a, reference_b), rel=1e-3)
    noise = noise_images(64, 45)
    assert fid(a, noise, inception) > 10 * fid(a, b, inception) > 0
    noise_kid = kid(a, noise, inception)
    assert noise_kid > 0
    # a set against itself: not 0 but the unbiased estimator's small negative value (see kernel_distance)
    own = kid(a, a, inception)
    assert own == pytest.approx(_mmd2_direct(reference_a.double().numpy(), reference_a.double().numpy()), rel=1e-3)
    assert -0.25 * noise_kid < own < 0
    assert abs(kid(a, b, inception)) < 0.1 * noise_kid
    assert kid(a, b, inception, subset_size=32, num_subsets=5, seed=1) == kid(a, b, inception, subset_size=32,
                                                                              num_subsets=5, seed=1)


def test_inception_errors(extractor, tmp_path):
    missing = tmp_path / "no_such_inception.onnx"
    with pytest.raises(FileNotFoundError, match="no_such_inception.onnx"):
        InceptionFeatures(missing)
    with pytest.raises(FileNotFoundError, match="no_such_inception.onnx"):
        fid(shapes(4, 0), shapes(4, 1), missing)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all \x00\x01\x02")
    with pytest.raises(ValueError, match="garbage.onnx"):
        InceptionFeatures(garbage)
    with pytest.raises(ValueError, match="input_size"):
        InceptionFeatures(extractor["static"], input_size=64)
    with pytest.raises(ValueError, match="output_name"):
        InceptionFeatures(extractor["static"], output_name="logits")
    with pytest.raises(ValueError, match="input_range"):
        InceptionFeatures(extractor["static"], input_range=(1.0, -1.0))
    with pytest.raises(ValueError, match="channels"):
        InceptionFeatures(extractor["static"])(torch.zeros(4, 2, 32, 32))
    with pytest.raises(TypeError, match="inception"):
        fid(shapes(4, 0), shapes(4, 1), object())


def test_import_does_not_need_onnxruntime():
    code = "import sys, ddpm_fast.evaluation.metrics; print('onnxruntime' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------------------------
# argument checks


def test_image_argument_errors():
    good = shapes(4, 0)
    with pytest.raises(TypeError, match="samples"):
        quality_report(good.numpy(), good)
    with pytest.raises(TypeError, match="held_out"):
        quality_report(good, (good * 100).long())
    with pytest.raises(ValueError, match="samples"):
        quality_report(good[0], good)
    with pytest.raises(ValueError, match="at least 2"):
        quality_report(good[:1], good)
    with pytest.raises(ValueError, match=r"held_out.*\[-1, 1\]"):
        quality_report(good, (good + 1) * 127.5)
    with pytest.raises(ValueError, match="NaN"):
        quality_report(torch.full_like(good, float("nan")), good)
    with pytest.raises(ValueError, match="held_out"):
        quality_report(good, shapes(4, 1, size=16))
    with pytest.raises(ValueError, match="train"):
        quality_report(good, good, shapes(4, 1)[:, :1])
    with pytest.raises(ValueError, match="at least 4"):
        quality_report(good, good[:3])
    with pytest.raises(ValueError, match="channels"):
        RandomFeatures(channels=1)(good)
    with pytest.raises(ValueError, match="pixels"):
        RandomFeatures()(torch.zeros(2, 3, 3, 3))


def test_vector_argument_errors():
    a = torch.randn(5, 4)
    with pytest.raises(ValueError, match="dimension"):
        sliced_wasserstein(a, torch.randn(5, 3))
    with pytest.raises(ValueError, match="features_b"):
        kernel_distance(a, torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], a)
    with pytest.raises(TypeError, match="a must"):
        sliced_wasserstein([[0.0, 1.0]], a)
    with pytest.raises(TypeError, match="features_a"):
        kernel_distance(torch.ones(5, 4, dtype=torch.int64), a)
    with pytest.raises(ValueError, match="NaN"):
        kernel_distance(torch.full((5, 4), float("inf")), a)
    with pytest.raises(ValueError, match="num_projections"):
        sliced_wasserstein(a, a, num_projections=0)
    with pytest.raises(ValueError, match="seed"):
        sliced_wasserstein(a, a, seed=-1)
    with pytest.raises(ValueError, match="subset_size"):
        kernel_distance(a, a, subset_size=1)
    with pytest.raises(TypeError, match="num_subsets"):
        kernel_distance(a, a, subset_size=2, num_subsets=2.5)
