"""Parity of the JAX models with the independent PyTorch reference (`tests/torch_reference.py`).

The PyTorch models get seeded random weights (official architecture, full widths), are written
in the official file layout and read back with the real converter
(`flax_style.convert.load_official`). Both sides run in float32 on the CPU (a float64 copy of
the PyTorch model serves as the exact oracle for gradients). Checked, on a 64x64 image
(multiples of 16: the official code's domain) and on 72x56 and 50x38 (the resize rule):
the nearest-resize rule, encoder features, one AdaAttN block (also with a sampled style
subset), the transformer outputs and the image of both variants, the three losses, and the
gradient of the total loss with respect to every trainable parameter.
Errors are per tensor: ||jax - torch|| / ||torch|| and max|jax - torch| / max|torch|; run with
`-s` to see the largest of each category.
"""

import copy
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from configs import default
from flax_style import losses, models, ops
from flax_style.convert import load_official
from tests import torch_reference as ref

torch.set_num_threads(2)
torch.set_default_dtype(torch.float32)

RTOL = 1e-4  # ||jax - torch|| / ||torch|| per tensor
MAX_RTOL = 5e-4  # max|jax - torch| / max|torch| per tensor
# Through the VGG and the decoder, float32 gradients carry a noise of ~1e-3 whatever the
# implementation: round-off moves a few of the ~4M ReLU inputs and max-pool near-ties to the
# other side of their kink (counted: 2 ReLU sign flips between float32 and float64 PyTorch),
# and each flip shifts the gradient by ~1/sqrt(units in its layer). Measured per tensor: float32
# PyTorch vs float64 PyTorch up to 4e-3, JAX vs float32 PyTorch up to 5e-3 (max-abs 1.5e-2).
# The kink-free part (attention blocks, merge_conv) is held to RTOL by
# `test_transformer_gradient`.
GRAD_RTOL, GRAD_MAX_RTOL = 2e-2, 5e-2
# The local style loss attends with raw shallow keys (logits up to ~K = 448..1472), so its
# softmax is nearly one-hot and a logit's round-off moves the loss: inside the jitted
# value_and_grad program XLA evaluates it ~6e-5 (relative) away from PyTorch, against ~2e-6 for
# the same forward jitted alone (checked to RTOL in `test_network_forward`).
LOSS_IN_GRAD_RTOL = 3e-4
# Both sides in float64 (`test_total_loss_gradient_float64`): no kink noise, the equations alone.
FLOAT64_RTOL = 1e-6
SIZES = [(64, 64), (72, 56), (50, 38)]
GRAD_SIZES = [(64, 64), (72, 56)]
VARIANTS = ["adaattn", "proposed"]
BATCH = 2
LOSS = default.get_config().loss  # key mode and style-position budget of the training loss
# content weight 1 (official default 0) so that every loss term reaches the gradient.
GRAD_WEIGHTS = {"content": 1.0, "global_style": LOSS.global_style, "local_style": LOSS.local_style}
LOSS_ARGS = (GRAD_WEIGHTS, LOSS.key_mode, LOSS.max_sample)
TRAINABLE = {"adaattn": 13_629_891, "proposed": 7_999_811}  # docs/model.md

# Largest errors seen per category, printed at the end of the module (pytest -s shows them).
WORST: dict[str, float] = {}


def rel_errors(actual, expected) -> tuple[float, float]:
    a = np.asarray(actual, np.float64)
    b = np.asarray(expected, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = a - b
    rel = float(np.linalg.norm(diff) / max(np.linalg.norm(b), 1e-30))
    max_rel = float(np.abs(diff).max() / max(np.abs(b).max(), 1e-30)) if b.size else 0.0
    return rel, max_rel


def assert_close(actual, expected, what: str, category: str, rtol=RTOL, max_rtol=MAX_RTOL):
    rel, max_rel = rel_errors(actual, expected)
    WORST[category] = max(WORST.get(category, 0.0), rel)
    WORST[category + " (max-abs)"] = max(WORST.get(category + " (max-abs)", 0.0), max_rel)
    assert np.isfinite(rel) and rel <= rtol, f"{what}: relative error {rel:.3g} > {rtol}"
    assert max_rel <= max_rtol, f"{what}: max abs error / max |ref| = {max_rel:.3g} > {max_rtol}"


def nchw(x) -> np.ndarray:
    """NHWC JAX array -> NCHW numpy (to compare with torch)."""
    return np.transpose(np.asarray(x), (0, 3, 1, 2))


def nhwc(x: torch.Tensor) -> jax.Array:
    return jnp.asarray(ref.to_nhwc(x))


def assert_image_informative(img_nchw: np.ndarray, what: str):
    """A parity check on a constant or clipped image would prove nothing."""
    std = float(img_nchw.std(axis=(2, 3)).min())
    inside = float(((img_nchw > 0.0) & (img_nchw < 1.0)).mean())
    assert std > 0.05, f"{what}: per-channel std {std:.3g}, output nearly constant"
    assert inside > 0.9, f"{what}: only {inside:.1%} of the values lie inside (0, 1)"


@pytest.fixture(scope="module", autouse=True)
def report_worst():
    yield
    print("\nlargest errors per category (||a-b||/||b||; max|a-b|/max|b|):")
    for name in sorted(WORST):
        print(f"  {name:40s} {WORST[name]:.3g}")


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def images():
    """{size: (content, style)} NCHW torch batches."""
    return {
        size: (ref.smooth_images(BATCH, *size, seed=1), ref.smooth_images(BATCH, *size, seed=2))
        for size in SIZES
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory, images):
    """Torch models with random weights, written in the official layout and converted."""
    root = tmp_path_factory.mktemp("official")
    vgg = ref.init_vgg_(ref.make_vgg(ref.VGG_WIDTHS), seed=0).eval()
    for p in vgg.parameters():
        p.requires_grad_(False)
    vgg_path = ref.save_vgg(str(root / ref.VGG_FILE), vgg)
    c, s = images[(64, 64)]
    with torch.no_grad():
        c_feats, s_feats = ref.encode(vgg, c), ref.encode(vgg, s)
    out = {"vgg": vgg, "vgg_path": vgg_path, "root": root}
    for seed, variant in enumerate(VARIANTS, start=1):
        model = ref.init_model_(ref.make_model(variant, ref.VGG_WIDTHS), seed=seed)
        ref.calibrate_output_(model, c_feats, s_feats)
        torch_dir = str(root / variant)
        ref.save_official(torch_dir, variant, model)
        params, encoder_params, config = load_official(variant, torch_dir, vgg_path)
        assert config["variant"] == variant
        assert tuple(config["widths"]) == ref.VGG_WIDTHS
        out[variant] = {"model": model, "params": params, "config": config}
        out["encoder_params"] = encoder_params
        out["config"] = config
    return out


@pytest.fixture(scope="module")
def features(world, images):
    """{size: (torch c_feats, torch s_feats, jax c_feats, jax s_feats)}."""
    encoder = models.build_encoder(world["config"])
    encode = jax.jit(lambda x: encoder.apply({"params": world["encoder_params"]}, x))
    out = {}
    for size, (c, s) in images.items():
        with torch.no_grad():
            tc, ts = ref.encode(world["vgg"], c), ref.encode(world["vgg"], s)
        out[size] = (tc, ts, encode(nhwc(c)), encode(nhwc(s)))
    return out


# ----------------------------------------------------------------------------- resize rule
RESIZE_PAIRS = [
    (7, 3), (3, 7), (5, 13), (13, 5), (9, 7), (7, 9), (17, 5), (5, 17), (10, 4), (4, 10),
    (16, 9), (9, 16), (33, 14), (14, 33), (100, 37), (37, 100), (7, 14), (14, 7), (6, 6),
    (1, 5), (5, 1), (999, 1000), (1000, 999), (257, 513), (513, 257), (641, 97),
]  # fmt: skip


@pytest.mark.parametrize(("in_size", "out_size"), RESIZE_PAIRS)
def test_resize_nearest_matches_torch(in_size, out_size):
    # Height and width take different ratios; values encode the source position exactly.
    in_h, in_w, out_h, out_w = in_size, max(in_size // 2, 1) + 3, out_size, out_size + 2
    rows = np.arange(in_h, dtype=np.float32)[:, None] * 4096.0
    grid = (rows + np.arange(in_w, dtype=np.float32)[None, :])[None, None]
    x = np.concatenate([grid, -grid], axis=1)  # (1, 2, h, w)
    expected = F.interpolate(torch.from_numpy(x), size=(out_h, out_w), mode="nearest").numpy()
    actual = ops.resize_nearest(jnp.asarray(x.transpose(0, 2, 3, 1)), (out_h, out_w))
    np.testing.assert_array_equal(nchw(actual), expected)


def test_resize_nearest_is_exact_on_random_maps():
    rng = np.random.default_rng(0)
    for (h, w), (oh, ow) in [((9, 7), (4, 11)), ((5, 4), (9, 7)), ((18, 13), (7, 5))]:
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        expected = F.interpolate(torch.from_numpy(x), size=(oh, ow), mode="nearest").numpy()
        actual = ops.resize_nearest(jnp.asarray(x.transpose(0, 2, 3, 1)), (oh, ow))
        np.testing.assert_array_equal(nchw(actual), expected)


# ----------------------------------------------------------------------------- encoder
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_encoder_features(features, size):
    tc, ts, jc, js = features[size]
    expected_hw = [size]
    for _ in range(4):  # ceil-mode pooling
        h, w = expected_hw[-1]
        expected_hw.append((-(-h // 2), -(-w // 2)))
    for k in range(5):
        assert tuple(jc[k].shape[1:3]) == expected_hw[k] == tuple(tc[k].shape[2:])
        assert float(tc[k].std()) > 1e-2, f"relu{k + 1}_1 is nearly constant"
        assert_close(nchw(jc[k]), tc[k].numpy(), f"content relu{k + 1}_1", "encoder features")
        assert_close(nchw(js[k]), ts[k].numpy(), f"style relu{k + 1}_1", "encoder features")


# ----------------------------------------------------------------------------- AdaAttN block
def block_params(block: torch.nn.Module) -> dict:
    """Flax params of a torch 1x1-conv AdaAttN block (OIHW -> HWIO)."""
    return {
        name: {
            "kernel": jnp.asarray(conv.weight.detach().numpy().transpose(2, 3, 1, 0)),
            "bias": jnp.asarray(conv.bias.detach().numpy()),
        }
        for name, conv in (("f", block.f), ("g", block.g), ("h", block.h))
    }


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_adaattn_block(world, features, size):
    """The official relu3_1 block (C=256, K=448 shallow keys) on real features."""
    tc, ts, _, _ = features[size]
    torch_block = world["adaattn"]["model"].adaattn_3
    with torch.no_grad():
        expected = torch_block(
            tc[2], ts[2], ref.get_key(tc, 3, "shallow"), ref.get_key(ts, 3, "shallow")
        ).numpy()
    block = models.AdaAttN(256, 448, 64 * 64)
    actual = block.apply(
        {"params": block_params(torch_block)},
        nhwc(tc[2]),
        nhwc(ts[2]),
        nhwc(ref.get_key(tc, 3, "shallow")),
        nhwc(ref.get_key(ts, 3, "shallow")),
    )
    assert float(expected.std()) > 1e-2
    assert_close(nchw(actual), expected, f"adaattn_3 block {size}", "AdaAttN block")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_adaattn_block_output_size(world, features, size):
    """`output_size` (how the proposed model computes D(F_cs^3)) equals the whole block output
    resized with PyTorch's nearest rule, also on odd sizes."""
    tc, ts, _, _ = features[size]
    torch_block = world["proposed"]["model"].transformer.attn_adain_2_3_1
    keys = ref.get_key(tc, 3, "pair"), ref.get_key(ts, 3, "pair")
    out_size = tuple(tc[3].shape[2:])  # the relu4_1 grid
    with torch.no_grad():
        whole = torch_block(tc[2], ts[2], *keys)
        expected = F.interpolate(whole, size=out_size, mode="nearest").numpy()
    block = models.AdaAttN(256, 384, 64 * 64)
    args = nhwc(tc[2]), nhwc(ts[2]), *(nhwc(k) for k in keys)
    actual = block.apply({"params": block_params(torch_block)}, *args, out_size)
    assert actual.shape[1:3] == out_size
    assert_close(nchw(actual), expected, f"relu3_1 pair block onto {out_size}", "AdaAttN block")


@pytest.mark.parametrize("hw", [(5, 7), (8, 8)])
def test_upsampled_conv_matches_torch(hw):
    """The decoder's conv after an upsampling, computed at the low resolution, against
    PyTorch's conv of the reflection-padded, nearest-upsampled map."""
    from flax_style.models.decoder import UpsampledConv

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, *hw)).astype(np.float32)
    weight = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    with torch.no_grad():
        upsampled = F.interpolate(torch.from_numpy(x), scale_factor=2, mode="nearest")
        padded = F.pad(upsampled, (1, 1, 1, 1), mode="reflect")
        expected = F.conv2d(padded, torch.from_numpy(weight), torch.from_numpy(bias)).numpy()
    params = {"kernel": jnp.asarray(weight.transpose(2, 3, 1, 0)), "bias": jnp.asarray(bias)}
    actual = UpsampledConv(8).apply({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert_close(nchw(actual), expected, f"upsampled conv {hw}", "decoder conv")


def _recover_subset(block: models.AdaAttN, rng: jax.Array, height: int, width: int):
    """The style positions a JAX block keeps for `rng`, read off its output.

    With f = 0 every kept position gets the same attention weight; with h = identity and a
    one-hot style value per position, the output's channel p is 1/M exactly when position p is
    kept; a constant content makes mvn(content) = 0, so the output is that mean alone.
    """
    n = height * width
    k = block.key_planes
    params = {
        "f": {"kernel": jnp.zeros((1, 1, k, k)), "bias": jnp.zeros((k,))},
        "g": {"kernel": jnp.eye(k).reshape(1, 1, k, k), "bias": jnp.zeros((k,))},
        "h": {"kernel": jnp.eye(n).reshape(1, 1, n, n), "bias": jnp.zeros((n,))},
    }
    style = jnp.eye(n).reshape(1, height, width, n)
    content = jnp.ones((1, 2, 2, n))
    keys = jnp.ones((1, 2, 2, k)), jnp.ones((1, height, width, k))
    out = block.apply({"params": params}, content, style, *keys, rngs={"sample": rng})
    weights = np.asarray(out[0, 0, 0])
    kept = np.flatnonzero(weights > 0.5 / block.max_sample)
    np.testing.assert_allclose(weights[kept], 1.0 / block.max_sample, rtol=1e-5)
    return kept


def test_adaattn_block_style_subset():
    """More style positions than max_sample: a key-determined subset, same as torch on it."""
    height, width, channels, key_planes, max_sample = 8, 8, 64, 16, 24
    block = models.AdaAttN(channels, key_planes, max_sample)
    key_a, key_b = jax.random.key(3), jax.random.key(4)
    subset_a = _recover_subset(block, key_a, height, width)
    assert len(subset_a) == max_sample
    np.testing.assert_array_equal(subset_a, _recover_subset(block, key_a, height, width))
    subset_b = _recover_subset(block, key_b, height, width)
    assert len(subset_b) == max_sample and set(subset_a) != set(subset_b)

    torch_block = ref.AdaAttN(channels, key_planes, max_sample)
    ref.init_model_(torch.nn.ModuleDict({"blk": torch_block}), seed=7)
    gen = torch.Generator().manual_seed(11)
    content = torch.randn(BATCH, channels, 6, 5, generator=gen)
    style = torch.randn(BATCH, channels, height, width, generator=gen)
    c_key = ref.mvn(torch.randn(BATCH, key_planes, 6, 5, generator=gen))
    s_key = ref.mvn(torch.randn(BATCH, key_planes, height, width, generator=gen))
    args = [nhwc(t) for t in (content, style, c_key, s_key)]
    variables = {"params": block_params(torch_block)}
    out_a = block.apply(variables, *args, rngs={"sample": key_a})
    out_a2 = block.apply(variables, *args, rngs={"sample": key_a})
    out_b = block.apply(variables, *args, rngs={"sample": key_b})
    np.testing.assert_array_equal(np.asarray(out_a), np.asarray(out_a2))
    assert float(jnp.abs(out_a - out_b).max()) > 1e-3
    with torch.no_grad():
        for out, subset in ((out_a, subset_a), (out_b, subset_b)):
            expected = torch_block(content, style, c_key, s_key, torch.from_numpy(subset))
            assert_close(nchw(out), expected.numpy(), "sampled block", "AdaAttN block (subset)")


# ----------------------------------------------------------------------------- networks
def torch_forward(world, variant, features_size, size):
    tc, ts, _, _ = features_size
    model = world[variant]["model"]
    with torch.no_grad():
        t = model.transform(tc, ts)
        image = model(tc, ts, output_size=size)
    return t, image


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("variant", VARIANTS)
def test_network_forward(world, features, variant, size):
    _, _, jc, js = features[size]
    net = models.build_network(world[variant]["config"])
    variables = {"params": world[variant]["params"]}
    t, expected = torch_forward(world, variant, features[size], size)

    encoder = models.build_encoder(world[variant]["config"])

    def forward(variables, c_feats, s_feats):
        image = net.apply(variables, c_feats, s_feats, output_size=size)
        stylized = encoder.apply({"params": world["encoder_params"]}, image)
        _, terms = losses.style_transfer_losses(
            stylized, c_feats, s_feats, jax.random.key(0), *LOSS_ARGS
        )
        return net.apply(variables, c_feats, s_feats, method="transform"), image, terms

    jt, actual, terms = jax.jit(forward)(variables, jc, js)
    actual = nchw(actual)
    assert_close(nchw(jt["features"]), t["transformer"].numpy(), "transformer", "transformer out")
    if variant == "adaattn":
        assert_close(nchw(jt["skip"]), t["adaattn_3"].numpy(), "adaattn_3", "transformer out")

    assert actual.shape == (BATCH, 3, *size) == expected.shape
    assert_image_informative(expected.numpy(), f"torch {variant} {size}")
    assert_image_informative(actual, f"jax {variant} {size}")
    assert_close(actual, expected.numpy(), f"{variant} image {size}", "network image")

    with torch.no_grad():
        tc, ts, _, _ = features[size]
        _, t_terms = ref.total_loss(ref.encode(world["vgg"], expected), tc, ts, GRAD_WEIGHTS)
    for name in ("content", "global_style", "local_style", "total"):
        assert_close(terms[name], t_terms[name].numpy(), f"{name} loss", "losses (end to end)")


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_losses_on_same_features(world, features, size):
    """The loss functions alone, on the torch features of a torch-stylized image."""
    tc, ts, _, _ = features[size]
    _, image = torch_forward(world, "adaattn", features[size], size)
    with torch.no_grad():
        tcs = ref.encode(world["vgg"], image)
        _, expected = ref.total_loss(tcs, tc, ts, GRAD_WEIGHTS)
    jcs, jc, js = ([nhwc(f) for f in feats] for feats in (tcs, tc, ts))
    all_terms = jax.jit(
        lambda a, b, c: losses.style_transfer_losses(a, b, c, jax.random.key(0), *LOSS_ARGS)[1]
    )
    terms = all_terms(jcs, jc, js)
    for name in ("content", "global_style", "local_style", "total"):
        assert float(expected[name]) > 1e-6, f"{name} loss is ~0: the check proves nothing"
        assert_close(terms[name], expected[name].numpy(), f"{name} loss", "losses (same input)")
    assert_close(losses.content_loss(jcs, jc), expected["content"].numpy(), "content", "losses")
    assert_close(losses.global_style_loss(jcs, js), expected["global_style"].numpy(), "g", "losses")


def test_local_style_loss_subset(features):
    """More style positions than max_sample: torch on the subset the JAX loss draws.

    White-box on the draw: `local_style_loss` splits `rng` once per loss layer and keeps
    `ops.sample_positions(layer_rng, n, max_sample)`.
    """
    tc, ts, _, _ = features[(64, 64)]
    stylized = [f.flip(-1) for f in tc]  # any features of the content's sizes
    max_sample, rng = 100, jax.random.key(5)
    indices = {}
    for k, layer_rng in zip(ref.LOSS_LAYERS, jax.random.split(rng, 4), strict=True):
        n = tc[k - 1].shape[2] * tc[k - 1].shape[3]
        keep = ops.sample_positions(layer_rng, n, max_sample)
        if keep is not None:
            indices[k] = torch.from_numpy(np.array(keep))
    assert set(indices) == {2, 3}  # relu4_1 (8x8) and relu5_1 (4x4) keep all positions
    with torch.no_grad():
        expected = ref.local_style_loss(stylized, tc, ts, "shallow", max_sample, indices)
    jax_feats = ([nhwc(f) for f in feats] for feats in (stylized, tc, ts))
    actual = losses.local_style_loss(*jax_feats, rng, "shallow", max_sample)
    assert_close(actual, expected.numpy(), "local style loss (subset)", "losses (same input)")


# ----------------------------------------------------------------------------- gradients
def torch_grads(vgg, model, variant, images_size, size, dtype=torch.float32):
    """Image, loss terms and {file: {key: grad}} of the torch total loss, in `dtype`."""
    c, s = (x.to(dtype) for x in images_size)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        tc, ts = ref.encode(vgg, c), ref.encode(vgg, s)
    image = model(tc, ts, output_size=size)
    total, terms = ref.total_loss(ref.encode(vgg, image), tc, ts, GRAD_WEIGHTS)
    total.backward()
    files = {ref.TRANSFORMER_FILE: model.transformer, ref.DECODER_FILE: model.decoder}
    if variant == "adaattn":
        files[ref.ADAATTN_3_FILE] = model.adaattn_3
    grads = {
        name: {k: v.float() for k, v in ref.grads_state_dict(module).items()}
        for name, module in files.items()
    }
    model.zero_grad(set_to_none=True)
    return image.detach(), {k: v.detach() for k, v in terms.items()}, grads


def as_flax_tree(grads, variant, directory, vgg_path) -> dict[str, np.ndarray]:
    """Torch gradients in the Flax layout, via the converter (gradients share the weights'
    layout), flattened to {"['decoder']['layer_2_24']['kernel']": array}."""
    os.makedirs(directory, exist_ok=True)
    for file, state in grads.items():
        torch.save(state, os.path.join(directory, file))
    tree, _, _ = load_official(variant, str(directory), vgg_path)
    return flatten(tree)


def flatten(tree) -> dict[str, np.ndarray]:
    return {
        jax.tree_util.keystr(p): np.asarray(v)
        for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def global_rel(a: dict, b: dict) -> float:
    """||a - b|| / ||b|| over all tensors together."""
    num = sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in b)
    den = sum(float(np.sum(b[k].astype(np.float64) ** 2)) for k in b)
    return (num / den) ** 0.5


@pytest.mark.parametrize("size", GRAD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("variant", VARIANTS)
def test_transformer_gradient(world, features, variant, size):
    """Gradient of a random linear read-out of the transformer outputs with respect to every
    attention and merge_conv parameter: no ReLU or max-pool on this path, so no kink noise and
    the full RTOL applies. Both sides get the same (torch) features."""
    tc, ts, _, _ = features[size]
    model = world[variant]["model"]
    net = models.build_network(world[variant]["config"])
    with torch.no_grad():
        shapes = {k: v.shape for k, v in model.transform(tc, ts).items()}
    gen = torch.Generator().manual_seed(3)
    readout = {k: torch.randn(shape, generator=gen) for k, shape in shapes.items()}
    names = {"transformer": "features", "adaattn_3": "skip"}

    model.zero_grad(set_to_none=True)
    out = model.transform(tc, ts)
    sum((out[k] * readout[k]).sum() for k in out).backward()
    files = {ref.TRANSFORMER_FILE: model.transformer}
    if variant == "adaattn":
        files[ref.ADAATTN_3_FILE] = model.adaattn_3
    t_grads = {name: ref.grads_state_dict(module) for name, module in files.items()}
    t_grads[ref.DECODER_FILE] = {
        k: torch.zeros_like(v) for k, v in model.decoder.state_dict().items()
    }
    model.zero_grad(set_to_none=True)

    def readout_fn(params, c_feats, s_feats):
        out = net.apply({"params": params}, c_feats, s_feats, method="transform")
        return sum(jnp.sum(out[names[k]] * nhwc(r)) for k, r in readout.items())

    grads = flatten(jax.jit(jax.grad(readout_fn))(
        world[variant]["params"], [nhwc(f) for f in tc], [nhwc(f) for f in ts]
    ))  # fmt: skip
    expected = as_flax_tree(t_grads, variant, world["root"] / f"readout_{variant}_{size[0]}",
                            world["vgg_path"])  # fmt: skip
    checked = 0
    for name, want in expected.items():
        if name.startswith("['decoder']"):
            assert not np.any(grads[name]), name
            continue
        if "['g']['bias']" in name:  # zero in exact arithmetic (see test_total_loss_gradient)
            scale = float(np.linalg.norm(expected[name.replace("['bias']", "['kernel']")]))
            assert float(np.linalg.norm(grads[name])) < 1e-4 * scale, name
            continue
        assert float(np.linalg.norm(want)) > 0, f"{name}: zero torch gradient"
        assert_close(grads[name], want, f"grad {name}", "gradients (transformer read-out)")
        checked += 1
    assert checked == {"adaattn": 3 * 5 + 2, "proposed": 4 * 5 + 2}[variant]


@pytest.mark.parametrize("size", GRAD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("variant", VARIANTS)
def test_total_loss_gradient(world, images, variant, size, tmp_path):
    config = world[variant]["config"]
    encoder, net = models.build_encoder(config), models.build_network(config)
    enc_vars = {"params": world["encoder_params"]}
    c, s = (x[:1] for x in images[size])  # batch 1: the costliest test of the module

    def loss_fn(params, c_img, s_img):
        c_feats, s_feats = encoder.apply(enc_vars, c_img), encoder.apply(enc_vars, s_img)
        image = net.apply({"params": params}, c_feats, s_feats, output_size=size)
        stylized = encoder.apply(enc_vars, image)
        total, terms = losses.style_transfer_losses(
            stylized, c_feats, s_feats, jax.random.key(0), *LOSS_ARGS
        )
        return total, (terms, image)

    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    (_, (terms, image)), grads = grad_fn(world[variant]["params"], nhwc(c), nhwc(s))
    model = world[variant]["model"]
    t_image, t_terms, t_grads = torch_grads(world["vgg"], model, variant, (c, s), size)
    # float64 oracle: how far float32 PyTorch itself is from the exact gradient.
    vgg64, model64 = copy.deepcopy(world["vgg"]).double(), copy.deepcopy(model).double()
    _, _, t_grads64 = torch_grads(vgg64, model64, variant, (c, s), size, torch.float64)

    assert_image_informative(t_image.numpy(), f"torch {variant} {size}")
    assert_close(nchw(image), t_image.numpy(), f"{variant} image", "network image")
    for name in ("content", "global_style", "local_style", "total"):
        assert_close(
            terms[name], t_terms[name].numpy(), f"{name} loss",
            "losses (in the gradient program)", LOSS_IN_GRAD_RTOL, LOSS_IN_GRAD_RTOL,
        )  # fmt: skip

    expected = as_flax_tree(t_grads, variant, tmp_path / "fp32", world["vgg_path"])
    oracle = as_flax_tree(t_grads64, variant, tmp_path / "fp64", world["vgg_path"])
    actual = flatten(grads)
    assert actual.keys() == expected.keys()
    assert sum(int(np.size(v)) for v in actual.values()) == TRAINABLE[variant]

    for name, want in expected.items():
        got = actual[name]
        assert np.isfinite(got).all(), name
        if "['g']['bias']" in name:
            # softmax is invariant to a per-query shift, so d loss / d g.bias = 0 in exact
            # arithmetic: both sides hold round-off only, small against g.kernel's gradient.
            scale = float(np.linalg.norm(expected[name.replace("['bias']", "['kernel']")]))
            assert float(np.linalg.norm(got)) < 1e-4 * scale, name
            assert float(np.linalg.norm(want)) < 1e-4 * scale, name
            continue
        assert float(np.linalg.norm(want)) > 0, f"{name}: zero torch gradient"
        assert_close(got, want, f"grad {name}", "gradients", GRAD_RTOL, GRAD_MAX_RTOL)
        assert_close(got, oracle[name], f"grad {name} vs fp64", "gradients vs torch fp64",
                     GRAD_RTOL, GRAD_MAX_RTOL)  # fmt: skip
        rel_errors_t32 = rel_errors(want, oracle[name])
        WORST["gradients torch fp32 vs fp64"] = max(
            WORST.get("gradients torch fp32 vs fp64", 0.0), rel_errors_t32[0]
        )
    smooth = [n for n in expected if "['g']['bias']" not in n]
    pick = lambda d: {n: d[n] for n in smooth}  # noqa: E731
    jax_vs_exact = global_rel(pick(actual), pick(oracle))
    torch_vs_exact = global_rel(pick(expected), pick(oracle))
    print(f"\n{variant} {size}: all-parameter gradient error vs float64 torch: "
          f"jax {jax_vs_exact:.2e}, float32 torch {torch_vs_exact:.2e}")  # fmt: skip
    assert jax_vs_exact <= GRAD_RTOL


@pytest.mark.parametrize("variant", VARIANTS)
def test_total_loss_gradient_float64(world, images, variant, tmp_path):
    """The issue's 1e-4 on every trainable parameter's gradient of the total loss, with the
    float32 kink noise (see GRAD_RTOL) taken out: both sides in float64, same weights (the
    converted float32 values, widened), same images, on the non-multiple-of-16 size. What is
    left is the difference of the two implementations' equations: held to FLOAT64_RTOL, 100x
    inside the issue's 1e-4 (measured ~3e-8; the float32 rounding of the converted oracle)."""
    size = (72, 56)
    c, s = (x[:1].double() for x in images[size])
    model64 = copy.deepcopy(world[variant]["model"]).double()
    vgg64 = copy.deepcopy(world["vgg"]).double()
    _, t_terms, t_grads = torch_grads(vgg64, model64, variant, (c, s), size, torch.float64)
    expected = as_flax_tree(t_grads, variant, tmp_path / "fp64", world["vgg_path"])

    with jax.enable_x64(True):
        config = {**world[variant]["config"], "dtype": "float64"}
        encoder, net = models.build_encoder(config), models.build_network(config)
        widen = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)  # noqa: E731
        enc_vars = {"params": widen(world["encoder_params"])}

        def loss_fn(params, c_img, s_img):
            c_feats, s_feats = encoder.apply(enc_vars, c_img), encoder.apply(enc_vars, s_img)
            image = net.apply({"params": params}, c_feats, s_feats, output_size=size)
            total, terms = losses.style_transfer_losses(
                encoder.apply(enc_vars, image), c_feats, s_feats, jax.random.key(0), *LOSS_ARGS
            )
            return total, terms

        grad_fn = jax.jit(jax.grad(loss_fn, has_aux=True))
        grads, terms = grad_fn(widen(world[variant]["params"]), nhwc(c), nhwc(s))
        assert jax.tree.leaves(grads)[0].dtype == jnp.float64
        actual = flatten(grads)
        terms = {k: float(v) for k, v in terms.items()}

    for name in ("content", "global_style", "local_style", "total"):
        assert_close(
            terms[name], t_terms[name].numpy(), f"{name} loss", "losses (float64)",
            FLOAT64_RTOL, FLOAT64_RTOL,
        )  # fmt: skip
    assert sum(int(np.size(v)) for v in actual.values()) == TRAINABLE[variant]
    for name, want in expected.items():
        if "['g']['bias']" in name:  # zero in exact arithmetic (see test_total_loss_gradient)
            scale = float(np.linalg.norm(expected[name.replace("['bias']", "['kernel']")]))
            assert float(np.linalg.norm(actual[name])) < 1e-6 * scale, name
            continue
        assert float(np.linalg.norm(want)) > 0, f"{name}: zero torch gradient"
        assert_close(
            actual[name], want, f"grad {name}", "gradients (float64)", FLOAT64_RTOL, FLOAT64_RTOL
        )
