"""The stylization library (`flax_style.stylize`): memory-bounded attention and the controls.

Tiny widths and small images; random weights (the numbers against PyTorch are in
test_parity.py and test_convert.py). Style subsets are exercised on purpose: `max_sample` is
set below the style's positions, so a seed really picks positions.
"""

import json
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax_style import image_io, models, ops, stylize, stylize_files

ATOL = 1e-5
# Content and style share one odd size (not a multiple of 16: the resize rule), so most tests
# reuse one compilation.
HW = (37, 45)
CONFIG = {"variant": "proposed", "widths": models.TINY_WIDTHS, "max_sample_3": 64}
CONFIG["max_sample_45"] = 16  # relu4_1 of 37x45 has 5 x 6 positions: a subset is drawn


def random_image(seed: int, hw=HW) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low = rng.random((5, 5, 3))
    image = np.kron(low, np.ones((hw[0] // 5 + 1, hw[1] // 5 + 1, 1)))[: hw[0], : hw[1]]
    return np.clip(image + 0.05 * rng.standard_normal((*hw, 3)), 0, 1).astype(np.float32)


def informative_params(shapes, seed: int):
    """Random weights that keep outputs informative (as `tests/torch_reference.init_model_`):
    He-normal ReLU convs, attention logits of std ~2, variance-keeping h / merge / last convs.
    Drawn with numpy from the shapes alone: no initialisation to compile."""
    rng = np.random.default_rng(seed)
    out = {}
    for path, leaf in flax.traverse_util.flatten_dict(shapes).items():
        if path[-1] == "bias":
            std = 0.02
        elif path[-2] in ("f", "g"):
            std = (2.0 / leaf.shape[-2] ** 1.5) ** 0.5
        elif path[-2] in ("h", "merge_conv", "layer_2_24", "conv0"):
            std = (1.0 / np.prod(leaf.shape[:-1])) ** 0.5
        else:
            std = (2.0 / np.prod(leaf.shape[:-1])) ** 0.5
        out[path] = jnp.asarray(std * rng.standard_normal(leaf.shape), jnp.float32)
    return flax.traverse_util.unflatten_dict(out)


def make_stylizer(config=CONFIG, query_chunk=32, seed=0, calibrate=True) -> stylize.Stylizer:
    """A tiny model with random weights, its output calibrated to mean 0.5, std 0.15 (so that
    images are not clipped); shares the compilations of every other Stylizer of `config`."""
    config = models.model_config(config)
    encoder, network = models.build_encoder(config), models.build_network(config)
    image = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    encoder_shapes = jax.eval_shape(encoder.init, jax.random.key(0), image)
    feats = jax.eval_shape(encoder.apply, encoder_shapes, image)
    shapes = jax.eval_shape(network.init, jax.random.key(0), feats, feats)
    encoder_params = informative_params(encoder_shapes, seed)
    params = informative_params(shapes, seed + 1)
    if calibrate:
        calibration = make_stylizer(config, query_chunk, seed, calibrate=False)
        out = calibration.stylize(random_image(seed + 7), random_image(seed + 8))
        scale = 0.15 / out.std(axis=(0, 1))
        last = params["params"]["decoder"]["layer_2_24"]
        last["kernel"] = last["kernel"] * scale
        last["bias"] = (last["bias"] - out.mean(axis=(0, 1))) * scale + 0.5
    return stylize.Stylizer(params, encoder_params, config, query_chunk=query_chunk)


@pytest.fixture(scope="module")
def stylizer():
    return make_stylizer()


@pytest.fixture(scope="module")
def images():
    return {name: random_image(i) for i, name in enumerate(["content", "style", "style2"])}


@pytest.fixture(scope="module")
def plain(stylizer, images):
    return stylizer.stylize(images["content"], images["style"], seed=0)


def assert_close(a, b, atol=ATOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=atol)


def assert_differs(a, b, by=1e-3):
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > by


# ----------------------------------------------------------------------------- attention
@pytest.mark.parametrize("n_q", [100, 128])
def test_chunked_attention_equals_unchunked(n_q):
    """Chunks of 32 (with a padded last chunk for 100 queries) against one pass."""
    keys = jax.random.split(jax.random.key(0), 3)
    # Logits of std ~2 (as trained models have): the softmax is neither uniform nor one-hot.
    query = jax.random.normal(keys[0], (2, n_q, 24)) * 0.6
    key = jax.random.normal(keys[1], (2, 50, 24)) * 0.6
    value = jax.random.normal(keys[2], (2, 50, 16))
    mean, std = ops.attention_mean_std(query, key, value)
    mean_c, std_c = ops.attention_mean_std(query, key, value, query_chunk=32)
    assert_close(mean_c, mean)
    assert_close(std_c, std)
    assert float(std.min()) >= 0.0 and float(std.mean()) > 0.1  # not a degenerate softmax


_RSS_WORKER = """
import json, resource, sys
import jax, jax.numpy as jnp
from flax_style import ops
n_q, n_k, chunk = map(int, sys.argv[1:])
f = jax.jit(lambda q, k, v: ops.attention_mean_std(q, k, v, query_chunk=chunk or None))
q, k, v = jnp.ones((1, n_q, 64)), jnp.ones((1, n_k, 64)), jnp.ones((1, n_k, 64))
f.lower(q, k, v).compile()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
jax.block_until_ready(f(q, k, v))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps((after - before) * 1024))
"""


def _attention_rss(n_q: int, n_k: int, chunk: int) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _RSS_WORKER, str(n_q), str(n_k), str(chunk)],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_chunked_attention_memory_is_linear():
    """Peak RSS of the chunked attention (8192 style positions, chunks of 1024): 4x the
    queries costs about 4x the memory of the outputs, far below the (n_q x n_k) logits that
    one pass holds (2 GiB at 65,536 queries)."""
    n_k, chunk = 8192, 1024
    small, large = _attention_rss(16384, n_k, chunk), _attention_rss(65536, n_k, chunk)
    logits_large = 65536 * n_k * 4
    outputs_large = 65536 * 64 * 4 * 4  # [mean, second moment] plus mean and std, float32
    assert large < logits_large / 8, f"chunked attention grew by {large / 2**20:.0f} MiB"
    assert large - small < 2 * outputs_large + (64 << 20), (small, large)


# ----------------------------------------------------------------------------- the model
def test_chunked_network_equals_unchunked(stylizer, images, plain):
    unchunked = make_stylizer(query_chunk=None)
    out = unchunked.stylize(images["content"], images["style"], seed=0)
    assert_close(plain, out)


def test_seed_fixes_the_style_subset(stylizer, images, plain):
    assert_close(stylizer.stylize(images["content"], images["style"], seed=0), plain, atol=0)
    assert_differs(stylizer.stylize(images["content"], images["style"], seed=1), plain)


def test_compiled_once_per_shape(stylizer, images, plain):
    before = dict(stylizer.traces)
    for seed in (3, 4):
        stylizer.stylize(images["content"], images["style"], seed=seed)
    assert dict(stylizer.traces) == before


def test_odd_sizes_give_exact_output_size(plain):
    """37x45 content and style: relu5_1 is 3x3, relu4_1 5x6; the output is 37x45 again.
    (Other sizes and the adaattn skip path: test_infer.py, test_convert.py.)"""
    assert plain.shape == (*HW, 3) and plain.dtype == np.float32
    assert np.isfinite(plain).all()
    assert 0.05 < plain.std() and ((plain > 0) & (plain < 1)).mean() > 0.9  # informative


def test_alpha(stylizer, images, plain):
    content, style = images["content"], images["style"]
    assert_close(stylizer.stylize(content, style, alpha=1.0), plain, atol=0)
    own = stylizer.stylize(content, content)  # T(c, c)
    assert_close(stylizer.stylize(content, style, alpha=0.0), own)
    half = stylizer.stylize(content, style, alpha=0.5)
    assert_differs(half, plain)
    assert_differs(half, own)


def test_style_weights(stylizer, images, plain):
    content, style, style2 = images["content"], images["style"], images["style2"]
    assert_close(stylizer.stylize_mix(content, [style, style2], weights=[1, 0]), plain)
    assert_close(
        stylizer.stylize_mix(content, [style, style2], weights=[0, 3]),
        stylizer.stylize(content, style2),
    )
    assert_differs(stylizer.stylize_mix(content, [style, style2], weights=[1, 1]), plain)
    with pytest.raises(stylize.StylizeError, match="style weight"):
        stylizer.stylize_mix(content, [style, style2], weights=[1, -1])


def test_mask(stylizer, images, plain):
    content, style, style2 = images["content"], images["style"], images["style2"]
    other = stylizer.stylize(content, style2)
    ones = np.ones(HW, np.float32)
    assert_close(stylizer.stylize_mix(content, [style, style2], mask=ones), plain)
    assert_close(stylizer.stylize_mix(content, [style, style2], mask=0 * ones), other)
    left = ones.copy()
    left[:, HW[1] // 2 :] = 0.0
    out = stylizer.stylize_mix(content, [style, style2], mask=left)
    # The soft seam spans about one relu4_1 cell (8 px) each side; the outer quarters are
    # nearer their own style's result than the other style's.
    quarter = HW[1] // 4
    near = lambda a, b: np.abs(a - b).mean()  # noqa: E731
    left, right = slice(0, quarter), slice(HW[1] - quarter, HW[1])
    assert near(out[:, left], plain[:, left]) < 0.5 * near(out[:, left], other[:, left])
    assert near(out[:, right], other[:, right]) < 0.5 * near(out[:, right], plain[:, right])
    with pytest.raises(stylize.StylizeError, match="two styles"):
        stylizer.stylize_mix(content, [style], mask=ones)


def test_preserve_color_keeps_content_chroma(stylizer, images, plain):
    content, style = images["content"], images["style"]
    out = stylizer.stylize(content, style, preserve_color=True)

    def luma(x):
        return x @ np.asarray(image_io.LUMA, np.float32)

    def chroma(x):  # (Cb, Cr) up to constant factors: B - Y, R - Y
        return np.stack([x[..., 2] - luma(x), x[..., 0] - luma(x)], axis=-1)

    assert_close(chroma(out), chroma(content))
    assert_close(luma(out), luma(plain))
    assert_differs(chroma(plain), chroma(content), by=0.05)  # the plain output's colours differ


def test_user_errors_are_one_line(stylizer, images):
    with pytest.raises(stylize.StylizeError, match="at least 17 per side"):
        stylizer.stylize(images["content"][:16], images["style"])
    with pytest.raises(stylize.StylizeError, match="alpha"):
        stylizer.stylize(images["content"], images["style"], alpha=1.5)


# ----------------------------------------------------------------------------- files
def test_files_encode_each_image_once_and_batch(stylizer, tmp_path, monkeypatch):
    """3 contents x 2 styles: one batch of 3 contents, each style encoded once; the batched,
    cached-feature results equal single `stylize` calls."""
    contents = [tmp_path / f"c{i}.png" for i in range(3)]
    styles = [tmp_path / f"s{i}.png" for i in range(2)]
    for i, path in enumerate(contents + styles):
        image_io.save_image(str(path), random_image(i))
    encoded = []
    encode = stylizer.encode
    monkeypatch.setattr(stylizer, "encode", lambda x: encoded.append(np.shape(x)) or encode(x))
    report = stylize_files.stylize_files(
        stylizer,
        [str(p) for p in contents],
        [str(p) for p in styles],
        stylize_files.FileOptions(output_dir=str(tmp_path / "out"), ext="npy", batch_size=3),
    )
    assert not report.errors and len(report.written) == 6
    assert sorted(encoded) == sorted([(*HW, 3), (*HW, 3), (3, *HW, 3)])
    for c in contents:
        for s in styles:
            single = stylizer.stylize(image_io.load_image(str(c)), image_io.load_image(str(s)))
            batched = np.load(tmp_path / "out" / f"{c.stem}_stylized_{s.stem}.npy")
            assert_close(batched, single, atol=1e-4)  # other programs round differently
