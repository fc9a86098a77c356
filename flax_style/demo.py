"""A local web demo of a checkpoint (Gradio): upload or pick images, set the controls, download.

    pip install -e '.[demo]'
    python -m flax_style.demo --checkpoint CKPT_DIR            # then open http://127.0.0.1:7860

The page takes a content and a style image (uploads, or the scikit-image samples the demo
training config uses), an optional second style with its weight, the content-style trade-off
(alpha) and colour preservation, and shows the result with a download button. It runs
`Stylizer.stylize_mix` (`flax_style/stylize.py`), the library behind `infer.py`.

Model calls run in Gradio's queue workers, one at a time (the model uses every core), never
on the server's event loop. An upload whose longer side exceeds `--max_side` is resized down
to it (Lanczos) with a notice; one under `stylize.MIN_SIDE` pixels per side is refused with a
message. A checkpoint that cannot be loaded stops the program before the server starts.
"""

from __future__ import annotations

import sys

import numpy as np
from absl import flags
from PIL import Image

from flax_style import cli, errors, input_pipeline, stylize

try:
    import gradio as gr
except ImportError:  # the optional `demo` extra; `main` says how to install it
    gr = None

API_NAME = "stylize"  # the client API endpoint: /stylize
PROGRAM = "python -m flax_style.demo"


def fit_image(image: np.ndarray, max_side: int, what: str) -> tuple[np.ndarray, str | None]:
    """An uploaded (h, w, 3) uint8 image as float32 in [0, 1], at most `max_side` per side.

    Returns:
      The image and a notice when it was resized (None otherwise).

    Raises:
      gr.Error: a side shorter than `stylize.MIN_SIDE` (shown on the page).
    """
    h, w = image.shape[:2]
    if min(h, w) < stylize.MIN_SIDE:
        raise gr.Error(f"{what} is {w}x{h} pixels; at least {stylize.MIN_SIDE} per side needed")
    notice = None
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(stylize.MIN_SIDE, round(w * scale)), max(stylize.MIN_SIDE, round(h * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))
        notice = f"{what} {w}x{h} resized to {size[0]}x{size[1]} (--max_side {max_side})"
    return image.astype(np.float32) / 255.0, notice


def stylize_upload(
    stylizer: stylize.Stylizer,
    max_side: int,
    content: np.ndarray | None,
    style: np.ndarray | None,
    style2: np.ndarray | None,
    style2_weight: float,
    alpha: float,
    preserve_color: bool,
) -> np.ndarray:
    """The page's action: uploads (uint8 RGB) -> the result as uint8 RGB, as `infer.py` writes
    images (clipped, x255 truncated). Problems are shown on the page (`gr.Error`)."""
    if content is None or style is None:
        raise gr.Error("give a content and a style image (upload one or pick a sample)")
    content, *notices = fit_image(content, max_side, "content")
    styles = [style] + ([style2] if style2 is not None else [])
    weights = [1.0 - style2_weight, style2_weight] if style2 is not None else None
    fitted = [fit_image(image, max_side, f"style {i + 1}") for i, image in enumerate(styles)]
    notices += [notice for _, notice in fitted]
    for notice in filter(None, notices):
        gr.Warning(notice)
    try:
        out = stylizer.stylize_mix(
            content,
            [image for image, _ in fitted],
            weights=weights,
            alpha=alpha,
            preserve_color=preserve_color,
        )
    except errors.UserError as error:
        raise gr.Error(str(error)) from error
    return (np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def build_demo(stylizer: stylize.Stylizer, max_side: int) -> gr.Blocks:
    """The page, wired to `stylize_upload` (also the client API `/stylize`)."""
    config = stylizer.model_config
    with gr.Blocks(title="flax-style") as demo:
        gr.Markdown(
            f"# flax-style\n{config['variant']} model, widths {config['widths']}. "
            f"Uploads are resized to at most {max_side} px per side."
        )
        with gr.Row():
            content = gr.Image(label="content", type="numpy", image_mode="RGB")
            style = gr.Image(label="style", type="numpy", image_mode="RGB")
            style2 = gr.Image(label="second style (optional)", type="numpy", image_mode="RGB")
        with gr.Row():
            alpha = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="alpha (style strength)")
            style2_weight = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="second style weight")
            preserve_color = gr.Checkbox(value=False, label="preserve the content's colours")
        run = gr.Button("Stylize", variant="primary", elem_id="stylize")
        result = gr.Image(
            label="result", type="numpy", format="png", buttons=["download"], elem_id="result"
        )
        samples = [
            input_pipeline.open_source("demo", role).paths[:4] for role in ("content", "style")
        ]
        gr.Examples(
            examples=[[c, s] for c, s in zip(*samples, strict=True)],
            inputs=[content, style],
            label="samples (scikit-image)",
        )
        run.click(
            lambda *args: stylize_upload(stylizer, max_side, *args),
            inputs=[content, style, style2, style2_weight, alpha, preserve_color],
            outputs=result,
            api_name=API_NAME,
        )
    # One stylization at a time, in a queue worker: the model uses every core.
    demo.queue(default_concurrency_limit=1)
    return demo


def _flags() -> flags.FlagValues:
    values = flags.FlagValues()
    define = {"flag_values": values}
    flags.DEFINE_string("checkpoint", None, "Checkpoint directory.", **define)
    flags.DEFINE_string("host", "127.0.0.1", "Address to serve on.", **define)
    flags.DEFINE_integer("port", 7860, "Port to serve on.", **define)
    flags.DEFINE_integer(
        "max_side", 1024, "Uploads are resized to at most this per side.", **define
    )
    flags.mark_flags_as_required(["checkpoint"], flag_values=values)
    return values


@errors.reports_user_errors
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(_flags(), argv, PROGRAM, __doc__.split("\n\n")[0])
    if gr is None:
        raise errors.UserError("the demo needs gradio: pip install -e '.[demo]'")
    if args.max_side < stylize.MIN_SIDE:
        raise cli.UsageError(f"--max_side {args.max_side}: must be at least {stylize.MIN_SIDE}")
    cli.enable_compilation_cache()
    stylizer = stylize.load_stylizer(args.checkpoint)  # a bad one stops here, before serving
    build_demo(stylizer, args.max_side).launch(server_name=args.host, server_port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
