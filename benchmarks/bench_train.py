"""Training throughput: our data-parallel train step vs the PyTorch reference step.

    python -m benchmarks.bench_train --variant=proposed --size=256 --batch=8 --steps=5

Run from the repository root (the PyTorch reference lives in `tests/torch_reference.py`). Both
steps do the same work: encode content and style with a frozen VGG, run the network, encode the
output, the three AdaAttN losses, backward, Adam (the optimiser of `configs/default.py`). Random
weights and images; compile / first-call time is excluded by warm-up steps. Prints images/s.
"""

import sys
import time

import jax
import numpy as np
from absl import flags

from configs import default
from flax_style import cli, errors, models, training

PROGRAM = "python -m benchmarks.bench_train"


def train_config(variant: str, widths, dtype: str = "float32"):
    """`configs/default.py` with a random encoder of `widths`, another variant and dtype."""
    config = default.get_config()
    config.model.variant = variant
    config.model.widths = tuple(widths)
    config.model.dtype = dtype
    config.model.random_encoder = True
    return config


def bench_jax(
    variant: str, widths, size: int, batch: int, steps: int, warmup: int, dtype: str = "float32"
) -> tuple[float, float]:
    """(images/s, FLOPs per step from XLA's cost model) of `training.train_step` compiled over
    all local devices, in compute `dtype`."""
    config = train_config(variant, widths, dtype)
    config.global_batch_size = batch
    setup = training.setup_train(config)  # the set-up `python train.py` runs
    rng = np.random.default_rng(0)
    batch = setup.device_batch(
        {
            name: rng.integers(0, 256, (batch, size, size, 3), np.uint8)
            for name in ("content", "style")
        }
    )
    step, key = setup.train_step, setup.rng
    state, encoder_params = setup.state, setup.encoder_params
    cost = step.lower(state, encoder_params, batch, key).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float((cost or {}).get("flops", 0.0)) * jax.device_count()  # per-device program
    for _ in range(warmup):
        state, metrics = step(state, encoder_params, batch, key)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, encoder_params, batch, key)
    jax.block_until_ready((state, metrics))
    return steps * batch["content"].shape[0] / (time.perf_counter() - start), flops


def bench_torch(variant: str, widths, size: int, batch: int, steps: int, warmup: int) -> float:
    """Images/s of the same step written with `tests/torch_reference.py`."""
    import torch

    from tests import torch_reference as ref

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    vgg = ref.make_vgg(widths).eval().to(device)
    for p in vgg.parameters():
        p.requires_grad_(False)
    model = ref.make_model(variant, widths).to(device)
    optim = default.get_config().optim
    optimizer = torch.optim.Adam(model.parameters(), lr=optim.lr, betas=(optim.b1, optim.b2))
    content = torch.rand(batch, 3, size, size, device=device)
    style = torch.rand(batch, 3, size, size, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None

    def one_step():
        with torch.no_grad():
            c_feats = ref.encode(vgg, content)
            s_feats = ref.encode(vgg, style)
        stylized = model(c_feats, s_feats, output_size=(size, size))
        loss, _ = ref.total_loss(ref.encode(vgg, stylized), c_feats, s_feats)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        one_step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    sync()
    return steps * batch / (time.perf_counter() - start)


def _flags() -> flags.FlagValues:
    values = flags.FlagValues()
    define = {"flag_values": values}
    flags.DEFINE_enum("variant", "proposed", ["proposed", "adaattn"], "Model variant.", **define)
    flags.DEFINE_integer("size", 256, "Square crop size.", **define)
    flags.DEFINE_integer("batch", 8, "Global batch.", **define)
    flags.DEFINE_integer("steps", 5, "Timed steps.", **define)
    flags.DEFINE_integer("warmup", 2, "Untimed steps (compile).", **define)
    flags.DEFINE_bool("tiny", False, "Tiny widths (models.TINY_WIDTHS).", **define)
    flags.DEFINE_bool("torch", True, "Also time the PyTorch reference step.", **define)
    return values


@errors.reports_user_errors
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(_flags(), argv, PROGRAM, __doc__.split("\n\n")[0])
    widths = models.TINY_WIDTHS if args.tiny else default.get_config().model.widths
    setting = (
        f"{args.variant}, widths {tuple(widths)}, {args.size}x{args.size}, batch {args.batch}, "
        f"{args.steps} timed steps"
    )
    print(f"train step: {setting}")
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}")
    ours, _ = bench_jax(args.variant, widths, args.size, args.batch, args.steps, args.warmup)
    print(f"flax-style (jit(shard_map)) : {ours:8.2f} images/s")
    if args.torch:
        import torch

        theirs = bench_torch(args.variant, widths, args.size, args.batch, args.steps, args.warmup)
        threads = torch.get_num_threads()
        print(f"PyTorch reference (eager, {threads} threads): {theirs:8.2f} images/s")
        print(f"ratio flax-style / PyTorch: {ours / theirs:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
