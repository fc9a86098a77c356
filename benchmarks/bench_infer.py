"""Inference benchmark: stylization seconds and peak resident memory, ours against PyTorch.

    python -m benchmarks.bench_infer                      # 256/512/1024 s; RSS at 1024/2048
    python -m benchmarks.bench_infer --sizes=64,128 --memory_sizes=128 --repeats=1   # quick

Run from the repository root: the PyTorch side is the independent reference
`tests/torch_reference.py` (written from docs/model.md; the official algorithm, attention in
one pass); ours is `Stylizer.stylize`, the program `infer.py` runs for one pair. Both sides use
random weights at full widths, square content and style images of the same size (which is
what makes the one-pass attention quadratic), float32, all CPU cores. Each (implementation,
size) runs in its own subprocess, so peak RSS figures do not mix; the PyTorch worker runs under
an address-space limit (`--torch_memory_limit_gib`) so that running out of memory fails cleanly
instead of invoking the kernel's OOM killer on a machine others use.

Seconds are the median of `--repeats` calls after one warm-up call (ours: the warm-up compiles;
its time is shown as "first"). Peak RSS is the whole process (Python, libraries, weights,
compilation included); "base" is the RSS after loading the model, before the first call.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from absl import flags

from flax_style import cli, errors  # light: the PyTorch workers must not load JAX

PROGRAM = "python -m benchmarks.bench_infer"
_MIB = 1024  # ru_maxrss is in KiB on Linux


def _rss_mib() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, not inherited from a
    large parent through fork/exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / _MIB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / _MIB


def sample_images(size: int) -> list:
    """Content and style (size x size x 3, float32): 8x8 random colour blocks plus noise."""
    import numpy as np

    rng = np.random.default_rng(size)
    out = []
    for _ in range(2):
        low = rng.random((8, 8, 3))
        reps = -(-size // 8)
        image = np.kron(low, np.ones((reps, reps, 1)))[:size, :size]
        image = image + 0.05 * rng.standard_normal(image.shape)
        out.append(np.clip(image, 0, 1).astype(np.float32))
    return out


def _time_calls(call, repeats: int) -> dict:
    tic = time.perf_counter()
    call()
    first = time.perf_counter() - tic
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        call()
        times.append(time.perf_counter() - tic)
    return {"first_s": first, "seconds": statistics.median(times) if times else None}


def _gpu_peak_gib_jax() -> float | None:
    import jax

    stats = jax.devices()[0].memory_stats() if jax.default_backend() == "gpu" else None
    return stats["peak_bytes_in_use"] / 2**30 if stats else None


def model_config(variant: str, dtype: str) -> dict:
    """The model config of `configs/default.py` with another variant and compute dtype."""
    from configs import default
    from flax_style import models

    config = default.get_config()
    config.model.variant, config.model.dtype = variant, dtype
    return models.model_config({name: config.model[name] for name in models.DEFAULT_MODEL_CONFIG})


def random_stylizer(config: dict, query_chunk: int | None):
    """A `Stylizer` with He-normal random weights of `config`'s shapes (no checkpoint needed)."""
    import flax
    import jax.numpy as jnp
    import numpy as np

    from flax_style import models, stylize

    shapes, encoder_shapes = models.abstract_params(config)
    rng = np.random.default_rng(0)

    def draw(tree):
        flat = flax.traverse_util.flatten_dict(tree)
        values = {
            path: jnp.asarray(
                rng.standard_normal(leaf.shape) * (2.0 / max(1, np.prod(leaf.shape[:-1]))) ** 0.5,
                jnp.float32,
            )
            for path, leaf in flat.items()
        }
        return flax.traverse_util.unflatten_dict(values)

    return stylize.Stylizer(draw(shapes), draw(encoder_shapes), config, query_chunk)


def _worker_ours(
    variant: str, size: int, repeats: int, query_chunk: int, dtype: str = "float32"
) -> dict:
    import jax

    stylizer = random_stylizer(model_config(variant, dtype), query_chunk or None)
    content, style = sample_images(size)
    base = _rss_mib()
    result = _time_calls(lambda: stylizer.stylize(content, style), repeats)
    flops = _stylize_flops(stylizer, content, style)
    return {
        **result,
        "base_mib": base,
        "peak_mib": _rss_mib(),
        "gpu_peak_gib": _gpu_peak_gib_jax(),
        "flops": flops,
        "device": str(jax.devices()[0].device_kind),
    }


def _stylize_flops(stylizer, content, style) -> float:
    """FLOPs of one stylization by XLA's cost model (what TFLOP/s figures divide)."""
    cost = stylizer.lower(content, [style]).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float((cost or {}).get("flops", 0.0))


def _worker_torch(variant: str, size: int, repeats: int) -> dict:
    import torch

    from tests import torch_reference as ref

    torch.set_num_threads(os.cpu_count() or 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    vgg = ref.init_vgg_(ref.make_vgg(ref.VGG_WIDTHS)).eval().to(device)
    model = ref.init_model_(ref.make_model(variant, ref.VGG_WIDTHS)).eval().to(device)
    content, style = (
        torch.from_numpy(x.transpose(2, 0, 1)[None].copy()).to(device) for x in sample_images(size)
    )
    base = _rss_mib()

    def call():
        with torch.no_grad():
            ref.stylize(vgg, model, content, style)
        if device == "cuda":
            torch.cuda.synchronize()

    try:
        result = _time_calls(call, repeats)
    except (RuntimeError, MemoryError) as error:  # the address-space limit was hit
        message = str(error).splitlines()[0][:120]
        return {"error": f"out of memory ({message})", "base_mib": base, "peak_mib": _rss_mib()}
    gpu = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {
        **result,
        "base_mib": base,
        "peak_mib": _rss_mib(),
        "gpu_peak_gib": gpu,
        "device": f"{device} (torch)",
    }


def run_worker(impl: str, settings: dict, size: int, repeats: int) -> dict:
    """Runs one (implementation, size) measurement in a fresh subprocess; its result dict.

    `settings`: {"variant", "dtype", "query_chunk", "torch_memory_limit_gib"}.
    """
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_infer",
        f"--worker={impl}",
        f"--variant={settings['variant']}",
        f"--size={size}",
        f"--repeats={repeats}",
        f"--query_chunk={settings['query_chunk']}",
        f"--dtype={settings['dtype']}",
        f"--torch_memory_limit_gib={settings['torch_memory_limit_gib']}",
    ]
    return run_json_worker(command)


def run_json_worker(command: list[str]) -> dict:
    """Runs a benchmark worker in a fresh process (so its peak RSS is its own) and returns the
    JSON dict it printed last, or {"error": ...} naming how it failed."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # no fake devices from a test environment
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        killed = " (killed: out of memory?)" if proc.returncode < 0 else ""
        return {"error": f"worker exit {proc.returncode}{killed}: {tail}"}
    return json.loads(lines[-1])


def _fmt_s(result: dict) -> str:
    if "error" in result:
        return "failed"
    if result.get("seconds") is None:
        return f"{result['first_s']:.2f} (first)"
    return f"{result['seconds']:.2f} (first {result['first_s']:.1f})"


def _fmt_mib(result: dict) -> str:
    if "peak_mib" not in result:
        return "failed"
    peak = f"{result['peak_mib'] / 1024:.2f} GiB (base {result['base_mib'] / 1024:.2f})"
    return peak + (" OOM" if "error" in result else "")


def _flags() -> flags.FlagValues:
    values = flags.FlagValues()
    define = {"flag_values": values}
    flags.DEFINE_enum("variant", "proposed", ["proposed", "adaattn"], "Model variant.", **define)
    flags.DEFINE_list("sizes", ["256", "512", "1024"], "Sizes to time (px, square).", **define)
    flags.DEFINE_list("memory_sizes", ["1024", "2048"], "Sizes for peak RSS only.", **define)
    flags.DEFINE_integer("repeats", 3, "Timed calls after a warm-up.", **define)
    flags.DEFINE_integer("query_chunk", None, "Ours: attention chunk (0: one pass).", **define)
    flags.DEFINE_bool("torch", True, "Also time the PyTorch reference.", **define)
    flags.DEFINE_float("torch_memory_limit_gib", 20.0, "PyTorch address-space cap.", **define)
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Our compute dtype.", **define)
    flags.DEFINE_enum("worker", None, ["ours", "torch"], "(internal) one measurement.", **define)
    flags.DEFINE_integer("size", None, "(internal) the worker's size.", **define)
    return values


def _worker(args) -> int:
    if args.worker == "ours":
        result = _worker_ours(args.variant, args.size, args.repeats, args.query_chunk, args.dtype)
        print(json.dumps(result))
        return 0
    # An address-space cap on a CUDA process would break the driver's mappings.
    if not os.path.exists("/dev/nvidia0"):
        limit = int(args.torch_memory_limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    print(json.dumps(_worker_torch(args.variant, args.size, args.repeats)))
    return 0


@errors.reports_user_errors
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(_flags(), argv, PROGRAM, __doc__.split("\n\n")[0])
    if args.query_chunk is None:
        from flax_style.stylize import DEFAULT_QUERY_CHUNK

        args.query_chunk = DEFAULT_QUERY_CHUNK
    if args.worker:
        return _worker(args)
    settings = {
        name: args[name].value
        for name in ("variant", "dtype", "query_chunk", "torch_memory_limit_gib")
    }
    sizes, memory_sizes = (
        cli.int_list(args.sizes, "sizes"),
        cli.int_list(args.memory_sizes, "memory_sizes"),
    )
    impls = ["ours"]
    if args.torch:
        if os.path.isfile(os.path.join("tests", "torch_reference.py")):
            impls.append("torch")
        else:
            print("tests/torch_reference.py not found (run from the repository root); ours only")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(
        f"variant {args.variant}, float32, {os.cpu_count()} CPU cores, {mem:.0f} GiB RAM, "
        f"{platform.processor() or platform.machine()}; ours: query chunk {args.query_chunk}; "
        f"torch: address-space limit {args.torch_memory_limit_gib:g} GiB"
    )
    header = f"{'size':>6} | {'impl':5} | {'seconds (median; first call)':30} | peak RSS"
    print(header)
    print("-" * len(header))
    ok = True
    for size in sorted(set(sizes) | set(memory_sizes)):
        repeats = args.repeats if size in sizes else 0
        for impl in impls:
            result = run_worker(impl, settings, size, repeats)
            seconds = result["error"][:60] if "error" in result else _fmt_s(result)
            if impl == "ours" and "error" in result:
                ok = False
            print(f"{size:>6} | {impl:5} | {seconds:30} | {_fmt_mib(result)}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
