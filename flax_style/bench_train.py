"""Training throughput: our data-parallel train step vs the PyTorch reference step.

    python -m flax_style.bench_train --variant proposed --size 256 --batch 8 --steps 5

Run from the repository root (the PyTorch reference lives in `tests/torch_reference.py`). Both
steps do the same work: encode content and style with a frozen VGG, run the network, encode the
output, the three AdaAttN losses, backward, Adam (lr 2e-4, beta1 0.5). Random weights and
images; compile / first-call time is excluded by warm-up steps. Prints images/s of each.
"""

import argparse
import time

import jax
import numpy as np
import optax


def bench_jax(
    variant: str, widths, size: int, batch: int, steps: int, warmup: int, dtype: str = "float32"
) -> tuple[float, float]:
    """(images/s, FLOPs per step from XLA's cost model) of `training.train_step` compiled over
    all local devices, in compute `dtype`."""
    import ml_collections

    from flax_style import models, training

    model = ml_collections.ConfigDict(
        {
            "variant": variant,
            "widths": widths,
            "fusion_weights": (0.1, 0.3, 0.6),
            "max_sample_3": 64 * 64,
            "max_sample_45": 256 * 256,
            "dtype": dtype,
            "vgg_path": "",
            "random_encoder": True,
        }
    )
    config = ml_collections.ConfigDict({"model": model})
    encoder_params, widths = training.load_encoder(model, 1)
    model_config = training.model_config_from(config, widths)
    state = training.create_train_state(0, model_config, optax.adam(2e-4, b1=0.5))
    loss_config = {
        "content": 0.0,
        "global_style": 10.0,
        "local_style": 3.0,
        "key_mode": "shallow",
        "max_sample": 64 * 64,
    }
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    replicated = jax.NamedSharding(mesh, jax.P())
    sharded = jax.NamedSharding(mesh, jax.P("data"))
    step = training.make_train_step(mesh, models.build_encoder(model_config), loss_config)
    rng = np.random.default_rng(0)
    batch = {
        name: jax.device_put(rng.integers(0, 256, (batch, size, size, 3), np.uint8), sharded)
        for name in ("content", "style")
    }
    state = jax.device_put(state, replicated)
    encoder_params = jax.device_put(encoder_params, replicated)
    key = jax.random.key(0)
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
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=("proposed", "adaattn"), default="proposed")
    parser.add_argument("--size", type=int, default=256, help="square crop size")
    parser.add_argument("--batch", type=int, default=8, help="global batch")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compile)")
    parser.add_argument("--tiny", action="store_true", help="tiny widths (8, 16, 32, 64, 64)")
    parser.add_argument("--skip-torch", action="store_true", help="time only the JAX step")
    args = parser.parse_args(argv)
    widths = (8, 16, 32, 64, 64) if args.tiny else (64, 128, 256, 512, 512)
    setting = (
        f"{args.variant}, widths {widths}, {args.size}x{args.size}, batch {args.batch}, "
        f"{args.steps} timed steps"
    )
    print(f"train step: {setting}")
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}")
    ours, _ = bench_jax(args.variant, widths, args.size, args.batch, args.steps, args.warmup)
    print(f"flax-style (jit(shard_map)) : {ours:8.2f} images/s")
    if not args.skip_torch:
        import torch

        theirs = bench_torch(args.variant, widths, args.size, args.batch, args.steps, args.warmup)
        threads = torch.get_num_threads()
        print(f"PyTorch reference (eager, {threads} threads): {theirs:8.2f} images/s")
        print(f"ratio flax-style / PyTorch: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
