"""`python -m flax_style.export`: one artifact for every size, equal to `infer.py`'s output.

A tiny random model saved as a real checkpoint and exported through the CLI. The artifact runs
in a fresh process that imports only jax and numpy; the reference is `infer.py --output x.npy`
on the same images. The model keeps fewer style positions than the styles have, so a subset is
drawn and the seed matters (checked: another seed gives another image).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import infer
from flax_style import export, image_io, models, ops
from tests.test_parity import RESIZE_PAIRS
from tests.test_stylize import CONFIG, make_stylizer, random_image

# (content, style) sizes; the first content is not a multiple of 16 (nor of 2), the second is.
PAIRS = (((41, 53), (29, 40)), ((48, 64), (70, 33)))
RUN_ARTIFACT = """
import sys, jax, numpy as np
exported = jax.export.deserialize(open(sys.argv[1], "rb").read())
for content, style, out in zip(*[iter(sys.argv[2:])] * 3):
    np.save(out, np.asarray(exported.call(np.load(content), np.load(style))))
assert "flax" not in sys.modules and "flax_style" not in sys.modules, sorted(sys.modules)
"""


@pytest.fixture(scope="module")
def artifact(ckpt, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("export") / "model.jaxexport")
    assert export.main(["--checkpoint", ckpt, "--out", path]) == 0
    return path


def test_artifact_equals_infer_in_a_process_without_flax(ckpt, artifact, tmp_path):
    """Two sizes the export never saw: the jax+numpy-only call gives infer.py's .npy."""
    args, expected, other_seed = [], [], []
    for i, (content_hw, style_hw) in enumerate(PAIRS):
        content, style = str(tmp_path / f"c{i}.png"), str(tmp_path / f"s{i}.png")
        image_io.save_image(content, random_image(20 + i, content_hw))
        image_io.save_image(style, random_image(30 + i, style_hw))
        for seed, outputs in ((0, expected), (1, other_seed)):
            out = str(tmp_path / f"infer{i}_{seed}.npy")
            flags = ["--content", content, "--style", style, "--output", out, "--seed", str(seed)]
            assert infer.main(["--checkpoint", ckpt, *flags]) == 0
            outputs.append(np.load(out))
        for name, path in (("content", content), ("style", style)):
            np.save(tmp_path / f"{name}{i}.npy", image_io.load_image(path))
        args += [tmp_path / f"content{i}.npy", tmp_path / f"style{i}.npy", tmp_path / f"a{i}.npy"]
    subprocess.run(
        [sys.executable, "-c", RUN_ARTIFACT, artifact, *map(str, args)],
        check=True,
        cwd=tmp_path,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    for i, (content_hw, _) in enumerate(PAIRS):
        result = np.load(tmp_path / f"a{i}.npy")
        assert result.shape == (*content_hw, 3) and result.dtype == np.float32
        np.testing.assert_allclose(result, expected[i], rtol=0, atol=1e-4)
        # The drawn subset matters at these sizes, so the match above checks the seed too.
        assert np.abs(result - other_seed[i]).max() > 1e-2


@pytest.mark.parametrize("variant", ["adaattn", "adaattn-video"])
def test_other_variants_export_exactly(variant):
    """The other networks' size-dependent paths (shallow keys resized from relu1_1, the relu5_1
    branch upsampled onto relu4_1 and the relu3_1 skip; the video model's relu3_1 decoder) at a
    size that is not a multiple of 16, with style subsets drawn."""
    config = {"variant": variant, "widths": models.TINY_WIDTHS, "max_sample_3": 64}
    config.update(max_sample_45=16, max_sample_video=64)
    stylizer = make_stylizer(config, calibrate=False)
    exported = export.export_stylizer(stylizer, seed=0, platforms=("cpu",))
    content, style = random_image(60, (41, 53)), random_image(61, (45, 38))
    expected = stylizer.stylize(content, style)
    atol = 1e-4 * max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(exported.call(content, style), expected, rtol=0, atol=atol)
    assert np.abs(stylizer.stylize(content, style, seed=1) - expected).max() > 100 * atol


def test_artifact_metadata_and_inspect(artifact, capsys):
    exported, info = export.read_artifact(artifact)
    assert exported.platforms == ("cpu", "cuda")
    assert info["jax"] == jax.__version__ and info["platforms"] == ["cpu", "cuda"]
    assert info["model"]["widths"] == list(CONFIG["widths"]) and info["seed"] == 0
    assert export.main(["--inspect", artifact]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "cpu, cuda" in out and f"JAX {jax.__version__}" in out


@pytest.mark.parametrize(
    "damage",
    ["truncated", "flipped byte", "not an artifact", "bad metadata", "missing"],
)
def test_corrupt_artifact_is_one_line(artifact, tmp_path, capsys, damage):
    blob = open(artifact, "rb").read()
    bad = tmp_path / "bad.jaxexport"
    if damage == "truncated":
        bad.write_bytes(blob[: len(blob) // 2])
    elif damage == "flipped byte":
        middle = len(blob) // 3
        bad.write_bytes(blob[:middle] + bytes([blob[middle] ^ 0xFF]) + blob[middle + 1 :])
    elif damage == "not an artifact":
        image_io.save_image(str(bad.with_suffix(".png")), random_image(0))
        os.rename(bad.with_suffix(".png"), bad)
    elif damage == "bad metadata":
        bad.write_bytes(blob[:-30] + b"}" * 18 + blob[-12:])
    assert export.main(["--inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {bad}: "), err
    if damage != "missing":
        assert "python -m flax_style.export --checkpoint" in err


def test_incompatible_jax_is_one_line(artifact, monkeypatch):
    """An artifact from a JAX this one cannot run: deserialization fails, or the calling
    convention is newer than this JAX supports; both name the two versions."""
    exported, info = export.read_artifact(artifact)
    too_new = exported.calling_convention_version - 1
    monkeypatch.setattr(jax.export, "maximum_supported_calling_convention_version", too_new)
    with pytest.raises(export.ArtifactError) as error:
        export.read_artifact(artifact)
    assert "\n" not in str(error.value) and f"JAX {jax.__version__}" in str(error.value)
    monkeypatch.undo()

    def refuse(blob):
        raise ValueError("Unsupported serialization version 99\nmore detail")

    monkeypatch.setattr(jax.export, "deserialize", refuse)
    with pytest.raises(export.ArtifactError) as error:
        export.read_artifact(artifact)
    message = str(error.value)
    assert "\n" not in message and "serialization version 99" in message
    assert f"exported with JAX {info['jax']}, this is JAX {jax.__version__}" in message


def test_artifact_for_another_platform_is_one_line(tmp_path, capsys):
    stylizer = make_stylizer(calibrate=False)
    exported = export.export_stylizer(stylizer, seed=0, platforms=("cuda",))
    path = tmp_path / "cuda.jaxexport"
    path.write_bytes(export.artifact_bytes(exported, export.metadata(exported, stylizer, 0)))
    assert export.main(["--inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exported for cuda, but JAX runs on cpu" in err, err
    assert "--platforms=cuda,cpu" in err


def test_bad_checkpoint_or_flag_is_one_line(tmp_path, capsys):
    out = tmp_path / "m.jaxexport"
    assert export.main(["--checkpoint", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and not out.exists()
    args = ["--checkpoint", str(tmp_path), "--out", str(out), "--platforms=cpu,gpu"]
    assert export.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--platforms=cpu,gpu" in err and "cuda" in err


def _symbolic(fn, *lengths):
    """`fn` of 1-D arrays, exported with symbolic lengths and called at `lengths`."""
    names = ", ".join(f"n{i}" for i in range(len(lengths)))
    dims = jax.export.symbolic_shape(names)
    specs = [jax.ShapeDtypeStruct((d,), jnp.float32) for d in dims]
    exported = jax.export.export(jax.jit(fn))(*specs)
    return np.asarray(exported.call(*[np.zeros(n, np.float32) for n in lengths]))


@pytest.mark.parametrize("n", [17, 64, 1625, 1626, 5000])
def test_symbolic_style_subset_is_jax_random_permutation(n):
    """At a symbolic size the subset is `jax.random.permutation(key, n)[:max_sample]` when n
    exceeds max_sample (1625/1626: the one-/two-round boundary of its shuffle), else all
    positions in order."""
    key, max_sample = jax.random.key(3), 64
    got = _symbolic(lambda x: ops.sample_positions(key, x.shape[0], max_sample), n)
    if n > max_sample:
        expected = np.asarray(jax.random.permutation(key, n))[:max_sample]
    else:
        expected = np.arange(n)
    np.testing.assert_array_equal(got, expected)


def test_symbolic_nearest_indices_are_pytorch_indices():
    """At symbolic sizes, the source indices of PyTorch's nearest interpolation (its own output
    on an arange) for every pair of the resize parity test: one export, called at each pair."""
    n_in, n_out = jax.export.symbolic_shape("n_in, n_out")
    specs = [jax.ShapeDtypeStruct((n,), jnp.float32) for n in (n_in, n_out)]
    indices = jax.export.export(jax.jit(lambda a, b: ops.nearest_indices(a.shape[0], b.shape[0])))(
        *specs
    )
    for in_size, out_size in RESIZE_PAIRS:
        source = torch.arange(in_size, dtype=torch.float32)[None, None]
        expected = F.interpolate(source, size=out_size, mode="nearest")[0, 0].numpy()
        got = indices.call(np.zeros(in_size, np.float32), np.zeros(out_size, np.float32))
        np.testing.assert_array_equal(np.asarray(got), expected, err_msg=f"{in_size}->{out_size}")


def test_metadata_is_json_after_the_program(artifact):
    """The documented layout: program bytes, JSON, uint32 length, magic."""
    blob = open(artifact, "rb").read()
    assert blob.endswith(export.MAGIC)
    length = int.from_bytes(blob[-12:-8], "little")
    info = json.loads(blob[-12 - length : -12])
    assert info["format"] == export.FORMAT and len(info["sha256"]) == 64
    jax.export.deserialize(blob[: -12 - length])  # the program alone is a jax.export artifact


def test_readme_snippet_runs_with_jax_and_numpy_only(artifact, tmp_path):
    """The README's five lines, as written, on this artifact."""
    readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")).read()
    serve = readme[readme.index("## Serve") :]
    start = serve.index("```python\n") + len("```python\n")
    snippet = serve[start : serve.index("```\n", start)]
    assert len(snippet.strip().splitlines()) == 5 and "model.jaxexport" in snippet
    check = 'assert result.shape == content.shape and "flax" not in __import__("sys").modules'
    script = snippet.replace("model.jaxexport", artifact) + check
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env=env)
