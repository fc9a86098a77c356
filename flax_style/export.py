"""One-file serving artifact: a stylizer as a `jax.export` program with its weights inside.

    python -m flax_style.export --checkpoint CKPT_DIR --out model.jaxexport
    python -m flax_style.export --inspect model.jaxexport   # what it holds; can this JAX run it

Running it needs only jax and numpy (README "Serve: one exported file"):

    exported = jax.export.deserialize(open("model.jaxexport", "rb").read())
    result = exported.call(content, style)  # float32 (H, W, 3), (Hs, Ws, 3) in [0, 1]

What it computes: `Stylizer.stylize(content, style)` with the defaults of
`infer.py --output x.npy` (alpha 1, one style, no colour preservation, the same attention
chunking), i.e. float32 (H, W, 3), not clipped.
  Sizes: H, W, Hs and Ws are symbolic (`jax.export.symbolic_shape`), each at least
    `stylize.MIN_SIDE`; images are not padded. Ceil-mode pooling and PyTorch's nearest-resize index
    rule (`ops.nearest_indices`) are computed in the graph for the actual sizes, with the same
    float32 arithmetic, so sizes that are not multiples of 16 match `infer.py` too. A smaller
    size fails the call with JAX's shape-constraint error. Each new shape compiles once.
  Style subset: where a style has more positions than a block keeps (`max_sample_*` of the
    model config), the subset is the one `infer.py --seed 0` draws (`jax.random.key(0)`,
    `--seed` here to choose another), so results are deterministic.
  Platforms: CPU and CUDA in one file (`--platforms`); `call` runs on JAX's default device.

File layout (`*.jaxexport`): the bytes of `jax.export.serialize`, then the metadata as
UTF-8 JSON (`metadata()`: format version, JAX and jaxlib versions, platforms, model config,
seed, minimum side, SHA-256 of the serialized bytes), then 12 bytes: the JSON's length
(uint32, little-endian) and `MAGIC`. `jax.export.deserialize` reads the leading flatbuffer and
ignores what follows, so the file stays a plain `jax.export` artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys

import jax
import jax.numpy as jnp
from absl import flags

from flax_style import atomic, cli, errors, stylize

FORMAT = "flax-style.jaxexport"
FORMAT_VERSION = 1
MAGIC = b"FLXSTYLE"
ARTIFACT_SUFFIX = ".jaxexport"
PLATFORMS = ("cpu", "cuda")
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
PROGRAM = "python -m flax_style.export"
_TRAILER = struct.Struct("<I8s")  # JSON length, magic


class ArtifactError(errors.UserError):
    """An artifact that cannot be read or run by this JAX; the message is one line."""


def export_stylizer(
    stylizer: stylize.Stylizer, seed: int, platforms: tuple[str, ...] = PLATFORMS
) -> jax.export.Exported:
    """`stylizer.stylize(content, style, seed)` exported for every content and style size.

    Args:
      stylizer: the model; its weights become constants of the program.
      seed: seed of the style-position subset (as `infer.py --seed`).
      platforms: lowering platforms, e.g. ("cpu", "cuda").

    Returns:
      The `jax.export.Exported`, taking float32 (H, W, 3) and (Hs, Ws, 3) arrays.
    """
    at_least = stylize.MIN_SIDE
    h, w, hs, ws = jax.export.symbolic_shape(
        "h, w, hs, ws", constraints=[f"{d} >= {at_least}" for d in ("h", "w", "hs", "ws")]
    )
    content = jax.ShapeDtypeStruct((h, w, 3), jnp.float32)
    style = jax.ShapeDtypeStruct((hs, ws, 3), jnp.float32)
    stylize_one = jax.jit(stylizer.stylize_function(seed=seed))
    return jax.export.export(stylize_one, platforms=platforms)(content, style)


def metadata(exported: jax.export.Exported, stylizer: stylize.Stylizer, seed: int) -> dict:
    """What the file records next to the program of `export_stylizer(stylizer, seed)`."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__,
        "calling_convention_version": exported.calling_convention_version,
        "platforms": list(exported.platforms),
        "model": stylizer.model_config,
        "seed": seed,
        "min_side": stylize.MIN_SIDE,
        "query_chunk": stylizer.query_chunk,
        "inputs": "content float32 (H, W, 3), style float32 (Hs, Ws, 3), RGB in [0, 1]",
        "output": "float32 (H, W, 3), not clipped",
    }


def artifact_bytes(exported: jax.export.Exported, info: dict) -> bytes:
    """The file: serialized program, metadata JSON (with the program's SHA-256), trailer."""
    program = bytes(exported.serialize())
    info = {**info, "sha256": hashlib.sha256(program).hexdigest()}
    text = json.dumps(info, sort_keys=True).encode("utf-8")
    return program + text + _TRAILER.pack(len(text), MAGIC)


def read_metadata(blob: bytes, where: str) -> tuple[bytes, dict]:
    """(serialized program, metadata) of artifact bytes; `ArtifactError` if they are not one."""
    hint = f"make one with `{PROGRAM} --checkpoint CKPT --out {where}`"
    if len(blob) < _TRAILER.size or blob[-len(MAGIC) :] != MAGIC:
        raise ArtifactError(
            f"{where}: not a flax-style artifact (no {MAGIC.decode()} trailer); {hint}"
        )
    end = len(blob) - _TRAILER.size
    length, _ = _TRAILER.unpack_from(blob, end)
    try:
        if length > end:
            raise ValueError(f"metadata length {length} exceeds the file")
        info = json.loads(blob[end - length : end].decode("utf-8"))
        sha = info["sha256"]
    except (ValueError, KeyError, TypeError) as error:
        raise ArtifactError(f"{where}: corrupt artifact (metadata: {error}); {hint}") from error
    program = blob[: end - length]
    if hashlib.sha256(program).hexdigest() != sha:
        raise ArtifactError(
            f"{where}: corrupt artifact (checksum mismatch: truncated or altered); {hint}"
        )
    return program, info


def read_artifact(path: str) -> tuple[jax.export.Exported, dict]:
    """The program and metadata of an artifact file, checked against this JAX.

    Raises:
      ArtifactError: missing, corrupt or not an artifact, made by a JAX whose serialization
        or calling convention this JAX cannot run (one line naming both versions), or not
        exported for the platform JAX runs on here.
    """
    if not os.path.isfile(path):
        raise ArtifactError(f"{path}: no such file")
    with open(path, "rb") as f:
        program, info = read_metadata(f.read(), path)
    made_by = f"exported with JAX {info.get('jax', '?')}, this is JAX {jax.__version__}"
    try:
        exported = jax.export.deserialize(bytearray(program))
    except Exception as error:  # flatbuffers and version checks raise many types
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ArtifactError(f"{path}: this JAX cannot read it ({made_by}): {detail}") from error
    lowest = jax.export.minimum_supported_calling_convention_version
    highest = jax.export.maximum_supported_calling_convention_version
    if not lowest <= exported.calling_convention_version <= highest:
        raise ArtifactError(
            f"{path}: calling convention {exported.calling_convention_version} ({made_by}, which "
            f"runs {lowest}..{highest}); re-export it with this JAX or install JAX {info['jax']}"
        )
    backend = jax.default_backend()
    names = {"gpu": ("cuda", "rocm")}.get(backend, (backend,))
    if not set(names) & set(exported.platforms):
        raise ArtifactError(
            f"{path}: exported for {', '.join(exported.platforms)}, but JAX runs on {backend} "
            f"here; re-export it with --platforms={','.join(exported.platforms)},{names[0]}"
        )
    return exported, info


def _flags() -> flags.FlagValues:
    values = flags.FlagValues()
    define = {"flag_values": values}
    flags.DEFINE_string("checkpoint", None, "Checkpoint directory to export.", **define)
    flags.DEFINE_string("out", None, f"Artifact file to write (*{ARTIFACT_SUFFIX}).", **define)
    flags.DEFINE_string("inspect", None, "An artifact to describe and check.", **define)
    flags.DEFINE_integer("seed", 0, "Seed of the style-position subset.", **define)
    flags.DEFINE_list("platforms", list(PLATFORMS), "Lowering platforms.", **define)
    return values


def _inspect(path: str) -> None:
    exported, info = read_artifact(path)
    model = info["model"]
    print(
        f"{path}: {model['variant']} model, widths {model['widths']}; exported with JAX "
        f"{info['jax']} for {', '.join(exported.platforms)}; seed {info['seed']}; sizes >= "
        f"{info['min_side']} px; this JAX ({jax.__version__}, {jax.default_backend()}) runs it"
    )


@errors.reports_user_errors
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(_flags(), argv, PROGRAM, __doc__.split("\n\n")[0])
    if (args.checkpoint is None) == (args.inspect is None):
        raise cli.UsageError(f"give --checkpoint CKPT --out FILE, or --inspect FILE ({PROGRAM})")
    if args.inspect:
        _inspect(args.inspect)
        return 0
    if not args.out:
        raise cli.UsageError(f"--checkpoint needs --out FILE, e.g. --out model{ARTIFACT_SUFFIX}")
    unknown = sorted(set(args.platforms) - set(KNOWN_PLATFORMS))
    if unknown or not args.platforms:
        raise cli.UsageError(
            f"--platforms={','.join(args.platforms)}: choose from {', '.join(KNOWN_PLATFORMS)}"
        )
    stylizer = stylize.load_stylizer(args.checkpoint)
    exported = export_stylizer(stylizer, args.seed, tuple(args.platforms))
    blob = artifact_bytes(exported, metadata(exported, stylizer, args.seed))
    with atomic.write(args.out) as temporary, open(temporary, "wb") as f:
        f.write(blob)
    print(
        f"wrote {args.out} ({len(blob) / 2**20:.1f} MiB): {stylizer.model_config['variant']} "
        f"model for {', '.join(exported.platforms)}, any size >= {stylize.MIN_SIDE} px",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
