"""Video benchmark: frames/s of the video model, ours against the release's per-frame loop,
and peak memory against the clip's length.

    python -m benchmarks.bench_video                  # 512x256, 32 frames timed; RSS 100 / 400
    python -m benchmarks.bench_video --frames=8 --memory_frames=20,80 --reference_frames=2

Run from the repository root. Both sides stylize the same synthetic clip (a pan over a bundled
scikit-image photograph, H.264, `--width` x `--height`, the release's 512x256 by default) with
a `--style_size` square style (the release's 512x512), random full-width `adaattn-video`
weights, float32, all CPU cores, and the same I/O: frames decoded and the result encoded with
`flax_style.video` (PyAV). Ours is what `infer.py --content clip.mp4` runs
(`stylize_video.stylize_clip`: style encoded once, frames in batches of `--batch_size`, the
cosine attention in its linear form). The reference is the release's `inference_frame.py` loop
read by `tests/torch_reference_video.py`: one frame at a time, the style re-keyed and the full
(content x style) weight matrix formed each frame. Frames/s exclude compilation (ours runs a
short warm-up clip first) and count decode + stylize + encode.

Peak memory: `stylize_clip` on clips of each `--memory_frames` length, each in a fresh
subprocess; the figure is the process's peak resident set (VmHWM), so a flat line in the clip's
length shows that nothing accumulates per frame.
"""

from __future__ import annotations

import fractions
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator

from absl import flags

from benchmarks.bench_infer import _rss_mib, run_json_worker
from flax_style import cli, errors

PROGRAM = "python -m benchmarks.bench_video"


def write_clip(path: str, frames: int, width: int, height: int) -> str:
    """A pan over a bundled photograph (1 px right, 1 px down every 2 frames), H.264 at 24/s."""
    import numpy as np
    import skimage.data
    import skimage.transform

    from flax_style import video

    scene = skimage.data.coffee().astype(np.float32) / 255.0
    scale = 1.3 * max(width / scene.shape[1], height / scene.shape[0])
    scene = skimage.transform.rescale(scene, scale, channel_axis=-1, anti_aliasing=True)
    room_y, room_x = scene.shape[0] - height, scene.shape[1] - width
    info = video.ClipInfo(path, width, height, fractions.Fraction(24), frames, has_audio=False)
    with video.ClipWriter(path, info) as writer:
        for i in range(frames):
            x, y = (i // 2) % room_x, (i // 2) % room_y
            writer.write(scene[None, y : y + height, x : x + width].astype(np.float32))
    return path


def write_style(path: str, size: int) -> str:
    import numpy as np
    import skimage.data
    import skimage.transform

    from flax_style import image_io

    style = skimage.data.astronaut().astype(np.float32) / 255.0
    image_io.save_image(path, skimage.transform.resize(style, (size, size), anti_aliasing=True))
    return path


def _ours(clip: str, style: str, warmup: str, batch_size: int) -> dict:
    """Frames/s of `stylize_clip` (after a warm-up clip that compiles) and the peak RSS."""
    from benchmarks.bench_infer import model_config, random_stylizer
    from flax_style import stylize_video, video

    stylizer = random_stylizer(model_config("adaattn-video", "float32"), None)
    out_dir = tempfile.mkdtemp()
    options = stylize_video.ClipOptions(output_dir=out_dir, batch_size=batch_size)
    base = _rss_mib()
    stylize_video.stylize_clip(stylizer, warmup, [style], f"{out_dir}/warmup.mp4", options)
    tic = time.perf_counter()
    frames = stylize_video.stylize_clip(stylizer, clip, [style], f"{out_dir}/out.mp4", options)
    seconds = time.perf_counter() - tic
    assert frames == video.probe(clip).num_frames
    return {"fps": frames / seconds, "frames": frames, "base_mib": base, "peak_mib": _rss_mib()}


def _reference(clip: str, style: str) -> dict:
    """Frames/s of the release's per-frame loop (PyTorch), same decode and encode."""
    import numpy as np
    import torch

    from flax_style import image_io, video
    from tests import torch_reference as ref
    from tests import torch_reference_video as vref

    torch.set_num_threads(os.cpu_count() or 1)
    vgg = ref.init_vgg_(ref.make_vgg(ref.VGG_WIDTHS)).eval()
    model = vref.init_video_model_(vref.VideoModel(ref.VGG_WIDTHS)).eval()
    style_image = image_io.load_image(style).transpose(2, 0, 1)[None]
    style_tensor = torch.from_numpy(np.ascontiguousarray(style_image))
    info = video.probe(clip)
    to_torch = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))  # noqa: E731
    tic, frames = time.perf_counter(), 0
    with video.ClipWriter(tempfile.mktemp(suffix=".mp4"), info) as writer:
        batches = video.read_clip(clip, 1)
        images = (to_torch(batch.images[0]) for batch in batches)
        for out in vref.stylize_frames(vgg, model, images, style_tensor):
            writer.write(out.numpy().transpose(0, 2, 3, 1))
            frames += 1
    seconds = time.perf_counter() - tic
    return {"fps": frames / seconds, "frames": frames, "peak_mib": _rss_mib()}


def _run(worker: str, **kwargs) -> dict:
    """One measurement in a fresh subprocess (peak RSS of that process alone)."""
    command = [sys.executable, "-m", "benchmarks.bench_video", f"--worker={worker}"]
    command += [f"--{name}={value}" for name, value in kwargs.items()]
    return run_json_worker(command)


def _flags() -> flags.FlagValues:
    values = flags.FlagValues()
    define = {"flag_values": values}
    flags.DEFINE_integer("width", 512, "Frame width (the release: 512).", **define)
    flags.DEFINE_integer("height", 256, "Frame height (the release: 256).", **define)
    flags.DEFINE_integer("style_size", 512, "Style side (the release: 512).", **define)
    flags.DEFINE_integer("frames", 32, "Frames of the timed clip (ours).", **define)
    flags.DEFINE_integer("reference_frames", 8, "Frames of the timed clip (reference).", **define)
    flags.DEFINE_list("memory_frames", ["100", "400"], "Clip lengths for peak RSS.", **define)
    flags.DEFINE_integer("batch_size", 4, "Ours: frames per compiled call.", **define)
    flags.DEFINE_enum("worker", None, ["ours", "reference"], "(internal)", **define)
    flags.DEFINE_string("clip", None, "(internal) the worker's clip.", **define)
    flags.DEFINE_string("style", None, "(internal) the worker's style.", **define)
    flags.DEFINE_string("warmup", None, "(internal) the warm-up clip.", **define)
    return values


def _measure(args, root: str) -> Iterator[str]:
    """The report's lines, each as soon as its measurement is done."""
    style = write_style(f"{root}/style.png", args.style_size)
    size = {"width": args.width, "height": args.height}
    warmup = write_clip(f"{root}/warmup.mp4", args.batch_size, **size)
    clip = lambda n: write_clip(f"{root}/clip{n}.mp4", n, **size)  # noqa: E731
    common = {"style": style, "warmup": warmup, "batch_size": args.batch_size}
    ours = _run("ours", clip=clip(args.frames), **common)
    reference = _run("reference", clip=clip(args.reference_frames), style=style)
    for name, result in (("ours", ours), ("release loop (PyTorch)", reference)):
        if "error" in result:
            yield f"  {name:24} {result['error']}"
        else:
            figures = f"{result['fps']:.2f} frames/s over {result['frames']} frames"
            yield f"  {name:24} {figures}, peak RSS {result['peak_mib'] / 1024:.2f} GiB"
    if "fps" in ours and "fps" in reference:
        yield f"  ratio ours / release loop: {ours['fps'] / reference['fps']:.2f}x"
    for n in cli.int_list(args.memory_frames, "memory_frames"):
        result = _run("ours", clip=clip(n), **common)
        peak = result.get("error") or f"peak RSS {result['peak_mib'] / 1024:.3f} GiB"
        yield f"  ours, {n:4d}-frame clip: {peak}"


@errors.reports_user_errors
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(_flags(), argv, PROGRAM, __doc__.split("\n\n")[0])
    if args.worker == "ours":
        print(json.dumps(_ours(args.clip, args.style, args.warmup, args.batch_size)))
        return 0
    if args.worker == "reference":
        print(json.dumps(_reference(args.clip, args.style)))
        return 0
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(
        f"adaattn-video, {args.width}x{args.height} frames, {args.style_size}x{args.style_size} "
        f"style, float32, batch {args.batch_size}; {os.cpu_count()} CPU cores, {mem:.0f} GiB RAM, "
        f"{platform.processor() or platform.machine()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as root:
        for line in _measure(args, root):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
