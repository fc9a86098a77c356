"""Tests of the evaluation metrics (flax_style.metrics, flax_style.lpips): each metric against
hand-computed values or numpy, and the LPIPS plumbing on random weights against a PyTorch
reference written from the lpips package's forward."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data

from flax_style import image_io, metrics, ops
from flax_style import lpips as lpips_metric

torch = pytest.importorskip("torch")

EPS = ops.EPS


def feats_with(layer_values: dict[int, np.ndarray], base: list[np.ndarray]) -> list[jax.Array]:
    """Copy of `base` (five feature maps) with some layers (1-based) replaced."""
    out = [jnp.asarray(f) for f in base]
    for k, value in layer_values.items():
        out[k - 1] = jnp.asarray(value, jnp.float32)
    return out


def random_feats(seed: int, size: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(1, size, size, c)).astype(np.float32) for c in (2, 3, 4, 5, 6)]


# ----------------------------------------------------------------------------------- SSIM


def test_ssim_of_an_image_with_itself_is_one_and_with_a_shifted_copy_below_one():
    image = skimage.data.astronaut()[::8, ::8].astype(np.float32) / 255.0  # 64x64x3
    assert metrics.ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    shifted = np.roll(image, 2, axis=1)
    value = metrics.ssim(shifted, image)
    assert 0.0 < value < 0.95


def test_ssim_uses_bt601_luminance_only():
    # Two images with the same luma and different colours have SSIM 1.
    rng = np.random.default_rng(0)
    grey = rng.uniform(0.2, 0.8, size=(16, 16)).astype(np.float32)
    as_grey = np.repeat(grey[..., None], 3, axis=-1)
    # Move 0.05 of "red" into "blue" with the luma kept: 0.299 dr + 0.114 db = 0.
    coloured = as_grey + np.array([0.05, 0.0, -0.05 * 0.299 / 0.114], np.float32)
    assert image_io.luminance(coloured) == pytest.approx(grey, abs=1e-6)
    assert metrics.ssim(coloured, as_grey) == pytest.approx(1.0, abs=1e-9)
    assert image_io.luminance(np.array([[[1.0, 0.0, 0.0]]]))[0, 0] == pytest.approx(0.299)


def test_ssim_matches_a_hand_computed_constant_image_case():
    # Constant images a, b: mu = a, b; sigmas 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    # with C1 = (0.01 * 1)^2, everywhere in the map.
    a, b = 0.25, 0.75
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    image_a = np.full((16, 16, 3), a, np.float32)
    image_b = np.full((16, 16, 3), b, np.float32)
    assert metrics.ssim(image_a, image_b) == pytest.approx(expected, rel=1e-6)


def test_ssim_refuses_images_smaller_than_its_window():
    tiny = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(metrics.EvaluationError, match="raise --size"):
        metrics.ssim(tiny, tiny)


# ------------------------------------------------------------------------------ style loss


def test_style_loss_is_zero_for_identical_statistics():
    base = random_feats(0)
    # Same pixels in another order: every channel's mean and std are unchanged.
    shuffled = [f[:, ::-1, ::-1] for f in base]
    assert metrics.style_loss(feats_with({}, shuffled), feats_with({}, base)) == pytest.approx(
        0.0, abs=1e-10
    )


def test_style_loss_hand_computed_simple_case():
    base = random_feats(1)
    # relu3_1 differs: stylized all zeros; style one channel holding 0, 1, 2, 3 (per channel).
    style3 = np.broadcast_to(np.arange(4.0).reshape(1, 2, 2, 1), (1, 2, 2, 4))
    stylized3 = np.zeros((1, 2, 2, 4))
    # style: mean 1.5, unbiased var (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3.
    # stylized: mean 0, var 0. eps = 1e-5 inside the sqrt.
    expected = 1.5**2 + (math.sqrt(5 / 3 + EPS) - math.sqrt(EPS)) ** 2
    value = metrics.style_loss(feats_with({3: stylized3}, base), feats_with({3: style3}, base))
    assert value == pytest.approx(expected, rel=1e-5)
    # Restricted to the other layers, it is zero.
    other = metrics.style_loss(
        feats_with({3: stylized3}, base), feats_with({3: style3}, base), layers=(1, 2, 4, 5)
    )
    assert other == pytest.approx(0.0, abs=1e-10)


def test_style_loss_compares_images_of_different_sizes():
    small, large = random_feats(2, size=4), random_feats(2, size=8)
    assert np.isfinite(metrics.style_loss(feats_with({}, small), feats_with({}, large)))


# ---------------------------------------------------------------------------- content loss


def _numpy_mvn(x: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True, ddof=1)
    return (x - mean) / np.sqrt(var + EPS)


def test_content_loss_hand_computed_simple_case():
    base = random_feats(3)
    # One channel, content 0, 1, 2, 3; stylized swaps the last two. mvn divides by
    # s = sqrt(5/3 + eps); two elements differ by 1/s each: MSE = 2 / (4 s^2).
    content4 = np.arange(4.0).reshape(1, 2, 2, 1)
    stylized4 = np.array([0.0, 1.0, 3.0, 2.0]).reshape(1, 2, 2, 1)
    expected = 2 / (4 * (5 / 3 + EPS))
    base4 = {4: content4}
    value = metrics.content_loss(feats_with({4: stylized4}, base), feats_with(base4, base))
    assert value == pytest.approx(expected, rel=1e-5)


def test_content_loss_matches_numpy_on_relu4_and_relu5_only():
    stylized, content = random_feats(4), random_feats(5)
    expected = sum(
        np.mean((_numpy_mvn(stylized[k - 1].astype(np.float64)) - _numpy_mvn(content[k - 1])) ** 2)
        for k in (4, 5)
    )
    value = metrics.content_loss(feats_with({}, stylized), feats_with({}, content))
    assert value == pytest.approx(expected, rel=1e-5)
    # Layers 1-3 do not count.
    mixed = feats_with({k: stylized[k - 1] for k in (4, 5)}, content)
    assert metrics.content_loss(mixed, feats_with({}, content)) == pytest.approx(expected, rel=1e-5)
    # mvn makes it blind to a per-channel affine change of brightness/contrast.
    affine = [2.0 * f + 1.0 for f in content]
    assert metrics.content_loss(feats_with({}, affine), feats_with({}, content)) < 1e-8


# ----------------------------------------------------------------------------------- LPIPS

LPIPS_WIDTHS = (4, 6, 8, 8, 8)  # tiny stand-ins for VGG16's 64, 128, 256, 512, 512


def write_random_lpips(directory, widths=LPIPS_WIDTHS, seed=0) -> tuple[str, str]:
    """Random weights under the real file layouts: lpips lin file and torchvision VGG16."""
    gen = torch.Generator().manual_seed(seed)
    vgg, channels = {}, 3
    for stage, convs in enumerate(lpips_metric.LPIPS_VGG16_STAGES):
        for index in convs:
            std = math.sqrt(2.0 / (9 * channels))
            vgg[f"features.{index}.weight"] = (
                torch.randn(widths[stage], channels, 3, 3, generator=gen) * std
            )
            vgg[f"features.{index}.bias"] = torch.randn(widths[stage], generator=gen) * 0.1
            channels = widths[stage]
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's file has it; it is ignored
    lin = {
        f"lin{k}.model.1.weight": torch.rand(1, w, 1, 1, generator=gen)
        for k, w in enumerate(widths)
    }
    paths = (os.path.join(directory, "vgg.pth"), os.path.join(directory, "vgg16.pth"))
    torch.save(lin, paths[0])
    torch.save(vgg, paths[1])
    return paths


def torch_lpips(lin_path: str, vgg_path: str, a: np.ndarray, b: np.ndarray) -> float:
    """LPIPS written from the lpips package's forward, in PyTorch (NCHW), as a reference."""
    import torch.nn.functional as F

    lin = torch.load(lin_path)
    vgg = torch.load(vgg_path)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(x):
        x = torch.from_numpy(x).permute(2, 0, 1)[None].float()
        x = (x * 2 - 1 - shift) / scale
        out = []
        for stage, convs in enumerate(lpips_metric.LPIPS_VGG16_STAGES):
            if stage:
                x = F.max_pool2d(x, 2, 2)
            for i in convs:
                x = F.relu(
                    F.conv2d(x, vgg[f"features.{i}.weight"], vgg[f"features.{i}.bias"], padding=1)
                )
            out.append(x)
        return out

    total = 0.0
    for k, (fa, fb) in enumerate(zip(taps(a), taps(b), strict=True)):
        na = fa / (torch.sqrt(torch.sum(fa**2, dim=1, keepdim=True)) + 1e-10)
        nb = fb / (torch.sqrt(torch.sum(fb**2, dim=1, keepdim=True)) + 1e-10)
        total += F.conv2d((na - nb) ** 2, lin[f"lin{k}.model.1.weight"]).mean(dim=(2, 3)).item()
    return total


def test_lpips_plumbing_on_random_weights_matches_a_torch_reference(tmp_path):
    lin_path, vgg_path = write_random_lpips(str(tmp_path))
    lpips = lpips_metric.LPIPS(lin_path, vgg_path)
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(37, 45, 3)).astype(np.float32)  # odd sizes: floor-mode pooling
    b = np.clip(a + rng.normal(scale=0.2, size=a.shape), 0, 1).astype(np.float32)
    assert lpips(a, a) == pytest.approx(0.0, abs=1e-7)
    value = lpips(a, b)
    assert value > 0
    assert value == pytest.approx(torch_lpips(lin_path, vgg_path, a, b), rel=1e-4)


def test_lpips_names_a_wrong_file(tmp_path):
    lin_path, vgg_path = write_random_lpips(str(tmp_path))
    with pytest.raises(metrics.EvaluationError, match=r"vgg\.pth: missing key 'features\.0"):
        lpips_metric.LPIPS(lin_path, lin_path)
    torch.save({"lin0.model.1.weight": torch.rand(1, 3, 1, 1)}, str(tmp_path / "bad.pth"))
    with pytest.raises(metrics.EvaluationError, match=r"lin0 has shape \(1, 3, 1, 1\)"):
        lpips_metric.LPIPS(str(tmp_path / "bad.pth"), vgg_path)
