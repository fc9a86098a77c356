"""Whole-process benchmark of a small job: one content/style pair through `infer.py`, start-up and
compilation included, against the official algorithm's whole process in the same run.

    python -m benchmarks.startup                 # 512x512 pair, proposed model, full widths
    python -m benchmarks.startup --size=256 --variant=adaattn --repeats=1

Set-up (not timed): random official-layout `.pth` weights at full widths (the PyTorch reference
`tests/torch_reference.py`), converted once with `python -m flax_style.convert`, and a content and
a style PNG. Then, each in a fresh process, wall-clock from `exec` to exit:
  ours, first run    `python infer.py ... --output out.png` with an empty compilation cache
  ours, second run   the same command again: the persistent cache holds every program
  PyTorch            import torch, build the reference networks, load the `.pth` files, read the
                     two images, one forward pass, write the PNG (what the official test script
                     does for one pair)
Each is run `--repeats` times (the first run with a new, empty cache each time); the medians are
compared. Python's bytecode cache is on for every run, as on a usual machine (a
PYTHONDONTWRITEBYTECODE in the environment is dropped).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags

from flax_style import cli, errors

PROGRAM = "python -m benchmarks.startup"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The PyTorch whole process, run as `python -c`: argv = torch_dir, content, style, output.
TORCH_JOB = """
import sys
import numpy as np, torch
from PIL import Image
from tests import torch_reference as ref
torch_dir, variant, content, style, output = sys.argv[1:]
vgg = ref.make_vgg(ref.VGG_WIDTHS).eval()
vgg.load_state_dict(torch.load(f"{torch_dir}/{ref.VGG_FILE}"))
model = ref.make_model(variant, ref.VGG_WIDTHS).eval()
model.transformer.load_state_dict(torch.load(f"{torch_dir}/{ref.TRANSFORMER_FILE}"))
model.decoder.load_state_dict(torch.load(f"{torch_dir}/{ref.DECODER_FILE}"))
if variant == "adaattn":
    model.adaattn_3.load_state_dict(torch.load(f"{torch_dir}/{ref.ADAATTN_3_FILE}"))
load = lambda p: torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), np.float32) / 255)
with torch.no_grad():
    out = ref.stylize(vgg, model, *(load(p).permute(2, 0, 1)[None] for p in (content, style)))
pixels = (out[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
Image.fromarray(pixels).save(output)
"""


def _flags() -> flags.FlagValues:
    values = flags.FlagValues()
    define = {"flag_values": values}
    flags.DEFINE_integer("size", 512, "Side of the square content and style.", **define)
    flags.DEFINE_enum(
        "variant", "proposed", ["proposed", "adaattn"], "Model variant.", flag_values=values
    )
    flags.DEFINE_integer("repeats", 3, "Runs of each process (medians compared).", **define)
    return values


def prepare(directory: str, variant: str, size: int) -> dict[str, str]:
    """Random official weights, their converted checkpoint and two images under `directory`."""
    import numpy as np
    import torch

    from benchmarks.bench_infer import sample_images
    from flax_style import image_io
    from tests import torch_reference as ref

    torch_dir = os.path.join(directory, "torch")
    with torch.no_grad():
        ref.save_official(torch_dir, variant, ref.init_model_(ref.make_model(variant)))
    ref.save_vgg(torch_dir, ref.init_vgg_(ref.make_vgg(ref.VGG_WIDTHS)))
    paths = {"torch_dir": torch_dir, "ckpt": os.path.join(directory, "ckpt")}
    for name, image in zip(("content", "style"), sample_images(size), strict=True):
        paths[name] = os.path.join(directory, f"{name}.png")
        image_io.save_image(paths[name], np.clip(image, 0, 1))
    _run(
        [
            sys.executable,
            "-m",
            "flax_style.convert",
            f"--model={variant}",
            f"--torch_dir={torch_dir}",
            f"--vgg={os.path.join(torch_dir, ref.VGG_FILE)}",
            f"--out={paths['ckpt']}",
        ],
        {},
    )
    return paths


def _run(command: list[str], env_update: dict[str, str]) -> float:
    """Seconds from start to exit of `command` (run from the repository root)."""
    env = {**os.environ, **env_update}
    env.pop("XLA_FLAGS", None)  # no fake devices from a test environment
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{' '.join(command[:3])} failed ({proc.returncode}): {tail}")
    return seconds


@errors.reports_user_errors
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(_flags(), argv, PROGRAM, __doc__.split("\n\n")[0])
    with tempfile.TemporaryDirectory() as directory:
        paths = prepare(directory, args.variant, args.size)
        infer = [
            sys.executable,
            "infer.py",
            f"--checkpoint={paths['ckpt']}",
            f"--content={paths['content']}",
            f"--style={paths['style']}",
            f"--output={os.path.join(directory, 'ours.png')}",
        ]
        torch_job = [
            sys.executable,
            "-c",
            TORCH_JOB,
            paths["torch_dir"],
            args.variant,
            paths["content"],
            paths["style"],
            os.path.join(directory, "torch.png"),
        ]
        runs = {"first": [], "second": [], "torch": []}
        for repeat in range(args.repeats):
            cache = {cli.CACHE_ENV: os.path.join(directory, f"jax_cache_{repeat}")}
            runs["first"].append(_run(infer, cache))
            runs["second"].append(_run(infer, cache))
            runs["torch"].append(_run(torch_job, {}))
    first, second, reference = (statistics.median(runs[k]) for k in ("first", "second", "torch"))
    shown = {k: ", ".join(f"{t:.2f}" for t in v) for k, v in runs.items()}
    print(
        f"whole process, one {args.size}x{args.size} pair, {args.variant}, full widths, "
        f"{os.cpu_count()} CPU cores; median of {args.repeats}"
    )
    print(
        f"  PyTorch reference (import, build, load, forward, save): {reference:6.2f} s  "
        f"({shown['torch']})"
    )
    print(
        f"  ours, first run (empty compilation cache): {first:6.2f} s  "
        f"= {first / reference:.2f}x (target <= 1.0x)  ({shown['first']})"
    )
    print(
        f"  ours, second run (cache filled):           {second:6.2f} s  "
        f"= {second / reference:.2f}x (target <= 0.5x)  ({shown['second']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
