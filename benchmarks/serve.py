"""Serving benchmark: the exported artifact's size, load time and per-call time against the
library call `infer.py` runs for one pair.

    python -m benchmarks.serve                       # proposed model, full widths, 512x512
    python -m benchmarks.serve --size=256 --repeats=1

Random weights at full widths (as `benchmarks.bench_infer`), exported with
`flax_style.export` for CPU and CUDA. The artifact is timed in a fresh process that imports
only jax and numpy, as a deployment runs it: load = reading the file and
`jax.export.deserialize`; first call = compilation for that shape plus one call; per call = the
median of `--repeats` further calls. The library side is `Stylizer.stylize` (first call and
median the same way). The largest difference between the two outputs is reported too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import flags

from flax_style import cli, errors

PROGRAM = "python -m benchmarks.serve"


def _flags() -> flags.FlagValues:
    values = flags.FlagValues()
    define = {"flag_values": values}
    flags.DEFINE_enum("variant", "proposed", ["proposed", "adaattn"], "Model variant.", **define)
    flags.DEFINE_integer("size", 512, "Content and style size (px, square).", **define)
    flags.DEFINE_integer("repeats", 3, "Timed calls after the first.", **define)
    flags.DEFINE_string("artifact", None, "(internal) the artifact worker's file.", **define)
    return values


def _artifact_worker(path: str, size: int, repeats: int) -> dict:
    """Load and call the artifact with jax and numpy only; timings and the output."""
    import jax
    import numpy as np

    from benchmarks.bench_infer import _time_calls, sample_images

    tic = time.perf_counter()
    with open(path, "rb") as f:
        exported = jax.export.deserialize(f.read())
    load = time.perf_counter() - tic
    content, style = sample_images(size)
    outputs = []
    timing = _time_calls(lambda: outputs.append(np.asarray(exported.call(content, style))), repeats)
    np.save(path + ".out.npy", outputs[-1])
    return {"load_s": load, **timing, "flax_imported": "flax" in sys.modules}


def _library(args, path: str) -> dict:
    """Export a random full-width model to `path`; time `Stylizer.stylize` on the same pair."""
    import numpy as np

    from benchmarks.bench_infer import _time_calls, model_config, random_stylizer, sample_images
    from flax_style import export, stylize

    stylizer = random_stylizer(model_config(args.variant, "float32"), stylize.DEFAULT_QUERY_CHUNK)
    tic = time.perf_counter()
    exported = export.export_stylizer(stylizer, seed=0)
    blob = export.artifact_bytes(exported, export.metadata(exported, stylizer, 0))
    export_s = time.perf_counter() - tic
    with open(path, "wb") as f:
        f.write(blob)
    content, style = sample_images(args.size)
    outputs = []
    timing = _time_calls(lambda: outputs.append(stylizer.stylize(content, style)), args.repeats)
    np.save(path + ".lib.npy", outputs[-1])
    return {"export_s": export_s, "bytes": len(blob), **timing}


@errors.reports_user_errors
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(_flags(), argv, PROGRAM, __doc__.split("\n\n")[0])
    if args.artifact:
        print(json.dumps(_artifact_worker(args.artifact, args.size, args.repeats)))
        return 0
    import numpy as np

    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "model.jaxexport")
        library = _library(args, path)
        command = [sys.executable, "-m", "benchmarks.serve", f"--artifact={path}"]
        command += [f"--size={args.size}", f"--repeats={args.repeats}"]
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        proc = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        artifact = json.loads(proc.stdout.strip().splitlines()[-1])
        reference = np.load(path + ".lib.npy")
        diff = np.abs(np.load(path + ".out.npy") - reference).max()
    load = os.getloadavg()
    print(
        f"{args.variant} model, full widths, {args.size}x{args.size} content and style, "
        f"{os.cpu_count()} CPU cores, load average {load[0]:.1f} (1 min)\n"
        f"artifact: {library['bytes'] / 2**20:.1f} MiB, exported in {library['export_s']:.1f} s; "
        f"load {artifact['load_s']:.2f} s; first call {artifact['first_s']:.1f} s; "
        f"per call {artifact['seconds']:.2f} s (flax imported: {artifact['flax_imported']})\n"
        f"library (Stylizer.stylize, infer.py's program): first call {library['first_s']:.1f} s; "
        f"per call {library['seconds']:.2f} s\n"
        f"largest |artifact - library|: {diff:.2e} "
        f"(largest |library|: {np.abs(reference).max():.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
