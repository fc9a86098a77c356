"""Stylize images with a flax-style checkpoint.

    python infer.py --checkpoint CKPT_DIR --content photo.jpg --style art.jpg --output out.png
    python infer.py --checkpoint CKPT_DIR --content photos/ --style 'styles/*.jpg' \
        --output-dir results/                    # every pair: {content}_stylized_{style}.png

The model variant and its settings come from the checkpoint (`python -m flax_style.convert` or
`python train.py` writes one). The output keeps the content's size unless `--size` is given.
Controls: `--alpha`, `--style-weights` (mix all styles), `--mask` (two styles by region),
`--preserve-color`. See `flax_style/stylize.py` for what each computes.
"""

import argparse
import os
import sys

OUTPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".npy")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python infer.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory")
    parser.add_argument(
        "--content", required=True, nargs="+", help="content image(s): files, folders or globs"
    )
    parser.add_argument(
        "--style", required=True, nargs="+", help="style image(s): files, folders or globs"
    )
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--output", help="output file for one pair (.png/.jpg/.webp, or .npy)")
    out.add_argument("--output-dir", help="folder for {content}_stylized_{style}.EXT files")
    parser.add_argument(
        "--ext", default="png", help="output type in --output-dir: png, jpg, webp, bmp, npy"
    )
    parser.add_argument(
        "--size", type=int, help="resize the shorter side to this (default: native size)"
    )
    parser.add_argument(
        "--style-size", type=int, help="shorter side of the styles (default: as --size)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the style-position subset")
    parser.add_argument(
        "--alpha", type=float, default=1.0, help="content-style trade-off in [0, 1] (1: full)"
    )
    parser.add_argument(
        "--style-weights",
        help="comma-separated weights, one per style: one output mixing all styles",
    )
    parser.add_argument(
        "--mask", help="mask image: the first style where white, the second where black"
    )
    parser.add_argument("--preserve-color", action="store_true", help="keep the content's colours")
    parser.add_argument(
        "--query-chunk",
        type=int,
        default=None,
        help="content positions per attention chunk (bounds memory; 0: no chunks)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="most contents per batch")
    args = parser.parse_args(argv)
    problems = []
    if not 0.0 <= args.alpha <= 1.0:
        problems.append(f"--alpha {args.alpha}: must lie in [0, 1]")
    for flag in ("size", "style_size", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            problems.append(f"--{flag.replace('_', '-')} {value}: must be positive")
    if args.query_chunk is not None and args.query_chunk < 0:
        problems.append(f"--query-chunk {args.query_chunk}: must be >= 0")
    if args.style_weights is not None:
        try:
            args.style_weights = [float(w) for w in args.style_weights.split(",")]
        except ValueError:
            problems.append(f"--style-weights {args.style_weights!r}: expected e.g. 0.7,0.3")
    if args.mask and args.style_weights is not None:
        problems.append("--mask and --style-weights exclude each other")
    args.ext = args.ext.lower().lstrip(".")
    if "." + args.ext not in OUTPUT_EXTENSIONS:
        problems.append(f"--ext {args.ext}: choose one of {', '.join(OUTPUT_EXTENSIONS)}")
    if args.output and not args.output.lower().endswith(OUTPUT_EXTENSIONS):
        problems.append(f"--output {args.output}: end it in one of {', '.join(OUTPUT_EXTENSIONS)}")
    if problems:
        parser.error("; ".join(problems))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax  # after argument parsing: `--help` and flag errors stay fast
    from absl import logging as absl_logging

    from flax_style import checkpoint, stylize

    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's read-only notices are noise here

    errors = []
    contents = stylize.resolve_images(args.content, "content", errors)
    styles = stylize.resolve_images(args.style, "style", errors)
    mix = args.style_weights is not None or args.mask is not None
    if mix:
        needed = 2 if args.mask else len(args.style_weights)
        if len(styles) != needed:
            errors.append(
                f"{'--mask' if args.mask else '--style-weights'} needs {needed} style images, "
                f"found {len(styles)}: {', '.join(styles) or 'none'}"
            )
            styles = []
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if not contents or not styles:
        return 2
    try:
        query_chunk = stylize.DEFAULT_QUERY_CHUNK if args.query_chunk is None else args.query_chunk
        stylizer = stylize.load_stylizer(args.checkpoint, query_chunk or None)
    except checkpoint.CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    config = stylizer.model_config
    pairs = len(contents) * (1 if mix else len(styles))
    print(
        f"{config['variant']} model from {args.checkpoint}; {len(contents)} content x "
        f"{len(styles)} style image(s) -> {pairs} output(s); devices: "
        f"{', '.join(str(d) for d in jax.devices())}",
        file=sys.stderr,
    )
    try:
        report = stylize.stylize_files(
            stylizer,
            contents,
            styles,
            output=args.output,
            output_dir=args.output_dir,
            ext=args.ext,
            mix=mix,
            weights=args.style_weights,
            mask_path=args.mask,
            size=args.size,
            style_size=args.style_size,
            seed=args.seed,
            alpha=args.alpha,
            preserve_color=args.preserve_color,
            batch_size=args.batch_size,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except stylize.StylizeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    where = args.output or os.path.abspath(args.output_dir)
    failed = f"; {len(report.errors)} error(s) above" if report.errors else ""
    print(f"wrote {len(report.written)} of {pairs} output(s) to {where}{failed}", file=sys.stderr)
    return 1 if report.errors or errors else 0


if __name__ == "__main__":
    sys.exit(main())
