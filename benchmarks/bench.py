"""The one benchmark: training throughput and stylization time/memory, ours against PyTorch.

    python -m benchmarks.bench                       # the full run (train 256 x 8; 512/1024/2048)
    python -m benchmarks.bench --dtype=bfloat16      # ours in bf16 (PyTorch stays float32)
    python -m benchmarks.bench --train_size=64 --sizes=64,128 --notrain_torch   # quick
    python -m benchmarks.bench --notrain --sizes= --folder=3 --folder_size=512  # N x N folder

Run from the repository root: the PyTorch side is the independent reference
`tests/torch_reference.py` (the official algorithm, attention in one pass, float32 with
PyTorch's defaults). Random weights, content and style of the same size. Unchanged on a GPU:
both sides then run on it, memory is the device's peak, and our figures include the achieved
TFLOP/s (XLA's FLOP count / time) against the card's dense peak for the dtype. Each
stylization size runs in its own subprocess (`bench_infer`) so peaks do not mix. Ours is timed
on the programs users run: `Stylizer.stylize` for one pair (infer.py's `--output`),
`stylize_files` for a folder (infer.py's `--output_dir`).
"""

import os
import platform
import sys

import jax
from absl import flags

from benchmarks import bench_infer, bench_train
from configs import default
from flax_style import cli, errors, image_io, stylize, stylize_files

PROGRAM = "python -m benchmarks.bench"

# Dense peak TFLOP/s per device kind: (float32 as run by default: TF32 on NVIDIA, bfloat16).
PEAK_TFLOPS = {
    "NVIDIA H100 80GB HBM3": (494.7, 989.4),
    "NVIDIA H100": (494.7, 989.4),
    "NVIDIA H200": (494.7, 989.4),
    "NVIDIA A100-SXM4-80GB": (156.0, 312.0),
}


def _peak(dtype: str) -> float | None:
    kind = jax.devices()[0].device_kind
    peaks = PEAK_TFLOPS.get(kind)
    return None if peaks is None else peaks[dtype == "bfloat16"]


def _utilisation(flops: float, seconds: float, dtype: str) -> str:
    if jax.default_backend() != "gpu" or not flops or not seconds:
        return ""
    achieved = flops / seconds / 1e12
    peak = _peak(dtype)
    share = f" = {100 * achieved / peak:.0f}% of {peak:g}" if peak else ""
    return f"  {achieved:.1f} TFLOP/s{share}"


def _memory(result: dict) -> str:
    if result.get("gpu_peak_gib") is not None:
        return f"{result['gpu_peak_gib']:.2f} GiB device peak"
    if "peak_mib" in result:
        return f"{result['peak_mib'] / 1024:.2f} GiB peak RSS"
    return "-"


def bench_folder(variant: str, dtype: str, n: int, size: int) -> tuple[float, float]:
    """Seconds for n contents x n styles of size x size image files: ours through
    `stylize_files.stylize_files` (the path of `infer.py`: each image encoded once, contents
    batched), the PyTorch reference stylizing pair by pair as the official test script does."""
    import tempfile
    import time

    import torch

    from tests import torch_reference as ref

    with tempfile.TemporaryDirectory() as folder:
        paths = {"c": [], "s": []}
        for kind in paths:
            for i in range(n):
                paths[kind].append(os.path.join(folder, f"{kind}{i}.png"))
                image = bench_infer.sample_images(size + i)[0][:size, :size]
                image_io.save_image(paths[kind][-1], image)
        config = bench_infer.model_config(variant, dtype)
        stylizer = bench_infer.random_stylizer(config, stylize.DEFAULT_QUERY_CHUNK)
        out = os.path.join(folder, "out")
        options = stylize_files.FileOptions(output_dir=out)
        # Untimed first run: compiles for the folder's batch shapes (as every timing here
        # excludes compilation; a first run on a new shape pays ~5 s more).
        stylize_files.stylize_files(stylizer, paths["c"], paths["s"], options)
        start = time.perf_counter()
        report = stylize_files.stylize_files(stylizer, paths["c"], paths["s"], options)
        ours = time.perf_counter() - start
        assert not report.errors, report.errors

        device = "cuda" if torch.cuda.is_available() else "cpu"
        vgg = ref.init_vgg_(ref.make_vgg(ref.VGG_WIDTHS)).eval().to(device)
        model = ref.init_model_(ref.make_model(variant, ref.VGG_WIDTHS)).eval().to(device)

        def load(path):
            image = image_io.load_image(path).transpose(2, 0, 1)[None].copy()
            return torch.from_numpy(image).to(device)

        start = time.perf_counter()
        with torch.no_grad():
            for content in paths["c"]:
                for style in paths["s"]:
                    result = ref.stylize(vgg, model, load(content), load(style))
                    image_io.save_image(out + ".png", ref.to_nhwc(result.cpu())[0])
        theirs = time.perf_counter() - start
    return ours, theirs


def _flags() -> flags.FlagValues:
    values = flags.FlagValues()
    define = {"flag_values": values}
    flags.DEFINE_enum("variant", "proposed", ["proposed", "adaattn"], "Model variant.", **define)
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Our compute dtype.", **define)
    flags.DEFINE_integer("train_size", 256, "Training crop size.", **define)
    flags.DEFINE_integer("train_batch", 8, "Training global batch.", **define)
    flags.DEFINE_integer("train_steps", 3, "Timed training steps.", **define)
    flags.DEFINE_bool("train", True, "Time the train step.", **define)
    flags.DEFINE_bool("train_torch", True, "Also time the PyTorch train step.", **define)
    flags.DEFINE_list("sizes", ["512", "1024", "2048"], "Stylization sizes (px).", **define)
    flags.DEFINE_integer("repeats", 2, "Timed stylizations per size.", **define)
    flags.DEFINE_bool("torch", True, "Also time PyTorch stylization.", **define)
    flags.DEFINE_float("torch_memory_limit_gib", 20.0, "PyTorch address-space cap.", **define)
    flags.DEFINE_integer("folder", 0, "Also N contents x N styles of files.", **define)
    flags.DEFINE_integer("folder_size", 512, "Image size of the folder run.", **define)
    return values


def _bench_train(args) -> None:
    widths = default.get_config().model.widths
    setting = f"{args.train_size}x{args.train_size}, global batch {args.train_batch}"
    shape = (args.train_size, args.train_batch, args.train_steps, 1)
    ours, flops = bench_train.bench_jax(args.variant, widths, *shape, args.dtype)
    step_s = args.train_batch / ours
    print(f"train step {setting}:")
    rate = _utilisation(flops, step_s, args.dtype)
    print(f"  ours    {ours:8.2f} images/s  ({step_s:.3f} s/step){rate}")
    if args.train_torch:
        theirs = bench_train.bench_torch(args.variant, widths, *shape)
        print(f"  PyTorch {theirs:8.2f} images/s  ({args.train_batch / theirs:.3f} s/step)")
        print(f"  ours / PyTorch: {ours / theirs:.2f}x images/s ({theirs / ours:.2f}x time)")


def _bench_stylize(args, size: int) -> None:
    settings = {
        "variant": args.variant,
        "dtype": args.dtype,
        "query_chunk": stylize.DEFAULT_QUERY_CHUNK,
        "torch_memory_limit_gib": args.torch_memory_limit_gib,
    }
    ours = bench_infer.run_worker("ours", settings, size, args.repeats)
    line = f"  {size:>5}  ours    "
    if "error" in ours:
        print(line + ours["error"][:100])
        return
    print(
        line
        + f"{1e3 * ours['seconds']:9.1f} ms  {_memory(ours)}"
        + _utilisation(ours.get("flops", 0.0), ours["seconds"], args.dtype)
    )
    if not args.torch:
        return
    theirs = bench_infer.run_worker("torch", settings, size, args.repeats)
    if "error" in theirs or theirs.get("seconds") is None:
        print(f"  {size:>5}  PyTorch failed: {theirs.get('error', '?')[:90]}; {_memory(theirs)}")
        return
    ratio = theirs["seconds"] / ours["seconds"]
    print(
        f"  {size:>5}  PyTorch {1e3 * theirs['seconds']:9.1f} ms  {_memory(theirs)}"
        f"  -> ours {ratio:.2f}x faster ({1 / ratio:.2f}x the time)"
    )


@errors.reports_user_errors
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(_flags(), argv, PROGRAM, __doc__.split("\n\n")[0])
    sizes = cli.int_list(args.sizes, "sizes")
    device = jax.devices()[0]
    print(
        f"{device.platform}: {jax.device_count()} x {device.device_kind}; host "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}; jax "
        f"{jax.__version__}; variant {args.variant}; ours {args.dtype}, PyTorch float32"
    )
    if args.train:
        _bench_train(args)
    print("stylization of one pair (content = style size), median of timed calls:")
    for size in sizes:
        _bench_stylize(args, size)
    if args.folder:
        n, size = args.folder, args.folder_size
        ours, theirs = bench_folder(args.variant, args.dtype, n, size)
        print(f"folder of {n} contents x {n} styles at {size}x{size}, PNG files in and out:")
        ratio = ours / theirs
        print(f"  ours {ours:.1f} s, PyTorch pair by pair {theirs:.1f} s -> {ratio:.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
