"""Stylize images with a flax-style checkpoint.

    python infer.py --checkpoint CKPT_DIR --content photo.jpg --style art.jpg --output out.png
    python infer.py --checkpoint CKPT_DIR --content photos/ --style 'styles/*.jpg' \
        --output_dir results/                    # every pair: {content}_stylized_{style}.png
    python infer.py --checkpoint CKPT_DIR --content clip.mp4 --style art.jpg --output out.mp4

The model variant and its settings come from the checkpoint (`python -m flax_style.convert` or
`python train.py` writes one). The output keeps the content's size unless `--size` is given.
Controls: `--alpha`, `--style_weights` (mix all styles), `--mask` (two styles by region),
`--preserve_color`; `flax_style/stylize.py` says what each computes. This file is kept short:
the work is in `flax_style.stylize_files` (`flax_style.stylize_video` for clips) and
`flax_style.stylize`.
"""

import os
import sys

from absl import flags

from flax_style import cli, errors, video

PROGRAM = "python infer.py"


def _flags() -> flags.FlagValues:
    values = flags.FlagValues()
    define = {"flag_values": values}
    flags.DEFINE_string("checkpoint", None, "Checkpoint directory.", **define)
    flags.DEFINE_multi_string(
        "content",
        None,
        "Content image(s): files, folders or globs; or video files (repeat the flag)",
        **define,
    )
    flags.DEFINE_multi_string(
        "style", None, "Style image(s): files, folders or globs (repeat the flag)", **define
    )
    flags.DEFINE_string(
        "output",
        None,
        "Output file of one pair (.png/.jpg/.webp, .npy; a video for a clip).",
        **define,
    )
    flags.DEFINE_string("output_dir", None, "Folder of {content}_stylized_{style}.EXT.", **define)
    flags.DEFINE_string(
        "ext", "png", "Output type in --output_dir: png, jpg, webp, bmp, npy.", **define
    )
    flags.DEFINE_integer(
        "size", None, "Resize the shorter side to this (default: native).", **define
    )
    flags.DEFINE_integer(
        "style_size", None, "Shorter side of the styles (default: --size).", **define
    )
    flags.DEFINE_integer("seed", 0, "Seed of the style-position subset.", **define)
    flags.DEFINE_float("alpha", 1.0, "Content-style trade-off in [0, 1] (1: full style).", **define)
    flags.DEFINE_list(
        "style_weights", None, "Weights, one per style: one output mixing all styles.", **define
    )
    flags.DEFINE_string(
        "mask", None, "Mask: first style where white, second where black.", **define
    )
    flags.DEFINE_bool("preserve_color", False, "Keep the content's colours.", **define)
    flags.DEFINE_integer(
        "query_chunk", None, "Content positions per attention chunk (0: no chunks).", **define
    )
    flags.DEFINE_integer("batch_size", 4, "Most contents (or video frames) per batch.", **define)
    flags.mark_flags_as_required(["checkpoint", "content", "style"], flag_values=values)
    return values


def _weights(text: list[str] | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(w) for w in text)
    except ValueError:
        raise cli.UsageError(f"--style_weights {','.join(text)}: expected e.g. 0.7,0.3") from None


@errors.reports_user_errors
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(_flags(), argv, PROGRAM, __doc__.split("\n\n")[0])
    with cli.startup_imports():  # after the flags: `--help` and flag errors stay fast
        cli.enable_compilation_cache()
        import jax
        from absl import logging as absl_logging

        from flax_style import stylize, stylize_files, stylize_video

    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's read-only notices are noise here
    problems = []  # inputs that do not exist: reported, the others still run
    contents = stylize_files.resolve_images(args.content, "content", problems)
    clips = [c for c in contents if video.is_video(c)]
    contents = [c for c in contents if c not in clips]
    # Every option is checked where it enters the library, before the checkpoint loads.
    sizes = {"size": args.size, "style_size": args.style_size, "mask_path": args.mask}
    outputs = {"output": args.output, "output_dir": args.output_dir, "batch_size": args.batch_size}
    options = stylize_files.FileOptions(**outputs, ext=args.ext, **sizes) if contents else None
    clip_options = stylize_video.ClipOptions(**outputs, **sizes) if clips else None
    controls = stylize.Controls(
        alpha=args.alpha,
        weights=_weights(args.style_weights),
        preserve_color=args.preserve_color,
        seed=args.seed,
    )
    styles = stylize_files.resolve_images(args.style, "style", problems)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if not (contents or clips) or not styles:
        return errors.USAGE_EXIT_STATUS
    query_chunk = stylize.DEFAULT_QUERY_CHUNK if args.query_chunk is None else args.query_chunk
    stylizer = stylize.load_stylizer(args.checkpoint, None if query_chunk == 0 else query_chunk)
    mix = controls.weights is not None or args.mask is not None
    pairs = (len(contents) + len(clips)) * (1 if mix else len(styles))
    print(
        f"{stylizer.model_config['variant']} model from {args.checkpoint}; {len(contents)} "
        f"content image(s){f' and {len(clips)} clip(s)' if clips else ''} x {len(styles)} "
        f"style image(s) -> {pairs} output(s); devices: "
        f"{', '.join(str(d) for d in jax.devices())}",
        file=sys.stderr,
    )
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    reports = []
    if clips:
        reports.append(
            stylize_video.stylize_clips(stylizer, clips, styles, clip_options, controls, log)
        )
    if contents:
        reports.append(
            stylize_files.stylize_files(stylizer, contents, styles, options, controls, log)
        )
    where = args.output or os.path.abspath(args.output_dir)
    written, failures = sum(len(r.written) for r in reports), sum(len(r.errors) for r in reports)
    failed = f"; {failures} error(s) above" if failures else ""
    print(f"wrote {written} of {pairs} output(s) to {where}{failed}", file=sys.stderr)
    return 1 if failures or problems else 0


if __name__ == "__main__":
    sys.exit(main())
