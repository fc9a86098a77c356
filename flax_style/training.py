"""Data-parallel training: train state, the per-device step, and the train loop.

The step follows the pmap programming model: a per-device body that averages gradients with
`lax.pmean(..., "data")`, compiled as `jax.jit(jax.shard_map(...))` over a 1-D `"data"` mesh
of every device of every process. The train state is replicated and donated; the frozen VGG
encoder is passed separately (never donated, never in the optimiser).
"""

import dataclasses
import functools
import json
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import traverse_util
from flax.training import train_state
from jax import lax
from PIL import Image

from flax_style import (
    checkpoint,
    convert,
    errors,
    image_io,
    input_pipeline,
    losses,
    models,
    ops,
    stylize,
)

P = jax.P
SAMPLE_NAMES = ("content", "style", "sheet")  # WORKDIR/samples/NAME.png at the end of a run
VGG_HELP = (
    "the VGG-19 encoder weights `vgg_normalised.pth` come with the official AdaAttN release "
    "(https://github.com/Huage001/AdaAttN, models/) and with pytorch-AdaIN "
    "(https://github.com/naoto0804/pytorch-AdaIN); pass the file with "
    "--config.model.vgg_path=PATH/vgg_normalised.pth (a converted checkpoint dir works too), "
    "or --config.model.random_encoder=True for a smoke run"
)


class TrainingError(errors.UserError):
    """A training run that cannot start or continue; the message says why and what to do."""


class TrainState(train_state.TrainState):
    """params + opt_state + step (`apply_fn` is the network's apply)."""


def model_config_from(config: ml_collections.ConfigDict, widths) -> dict[str, Any]:
    """The model config (stored in checkpoints) of a training config and encoder widths."""
    try:
        return models.model_config(
            {
                "variant": config.model.variant,
                "widths": list(widths),
                "fusion_weights": list(config.model.fusion_weights),
                "max_sample_3": config.model.max_sample_3,
                "max_sample_45": config.model.max_sample_45,
                "dtype": config.model.dtype,
            }
        )
    except ValueError as error:
        raise TrainingError(f"config.model: {error}") from None


def load_encoder(model: ml_collections.ConfigDict, seed: int) -> tuple[Any, list[int]]:
    """Frozen VGG parameters and widths from `model.vgg_path`, or random if explicitly asked.

    Raises:
      TrainingError: no VGG weights configured (the message says where they come from).
    """
    path = model.vgg_path
    if path:
        if os.path.isdir(path):
            _, encoder_params, model_config = checkpoint.load_model(path)
            logging.info("VGG encoder from checkpoint %s", path)
            return encoder_params, model_config["widths"]
        if not os.path.exists(path):
            raise TrainingError(f"config.model.vgg_path={path!r}: no such file; {VGG_HELP}")
        encoder_params, widths = convert.load_vgg(path)
        logging.info("VGG encoder from %s", path)
        return jax.tree.map(jnp.asarray, encoder_params), widths
    if not model.random_encoder:
        raise TrainingError(f"no VGG encoder weights configured: {VGG_HELP}")
    widths = [int(w) for w in model.widths]
    logging.warning(
        "\n%s\nRANDOM VGG ENCODER (config.model.random_encoder=True): the losses measure "
        "random features, so the trained model is NOT a useful stylizer. Smoke/demo runs only."
        "\n%s",
        "!" * 78,
        "!" * 78,
    )
    _, abstract = models.abstract_params(models.model_config({"widths": widths}))
    # He-normal kernels keep random features from vanishing through 14 convs.
    he_std = lambda shape: np.sqrt(2.0 / np.prod(shape[:-1]))  # noqa: E731
    return _numpy_init(abstract, seed, he_std), widths


def _numpy_init(abstract: Any, seed: int, kernel_std: Callable[[tuple], float]) -> Any:
    """Kernels ~ normal(0, kernel_std(shape)), biases 0, drawn with numpy from `seed`.

    Numpy, not jax.random: XLA takes longer to compile the random initialisers of a few dozen
    shapes on CPU than a tiny model takes to train, and initialisation runs once.
    """
    generator = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(abstract)
    out = {}
    for path, value in flat.items():
        if path[-1] == "kernel":
            draw = generator.standard_normal(value.shape, np.float32)
            out[path] = jnp.asarray(draw * np.float32(kernel_std(value.shape)), value.dtype)
        else:
            out[path] = jnp.zeros(value.shape, value.dtype)
    return traverse_util.unflatten_dict(out)


def learning_rate_schedule(
    optim: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.Schedule:
    """Constant, or the official: `constant_epochs` at `lr`, then x`decay_rate` every epoch."""
    if optim.schedule == "constant":
        return optax.constant_schedule(optim.lr)
    if optim.schedule == "official":
        boundaries = {
            steps_per_epoch * (optim.constant_epochs + i): optim.decay_rate
            for i in range(optim.decay_epochs)
        }
        return optax.piecewise_constant_schedule(optim.lr, boundaries)
    raise TrainingError(
        f"config.optim.schedule={optim.schedule!r}: choose 'official' or 'constant'"
    )


@functools.lru_cache(maxsize=8)
def _optimizer(
    optim_items: tuple, steps_per_epoch: int
) -> tuple[optax.Schedule, optax.GradientTransformation]:
    """(schedule, Adam) of the `optim` config section; cached because the optimiser is static
    in the train state's tree structure, so an equal config must give the same object for a
    resumed run in the same process to reuse the compiled step."""
    optim = ml_collections.ConfigDict(dict(optim_items))
    schedule = learning_rate_schedule(optim, steps_per_epoch)
    tx = optax.adam(schedule, b1=optim.b1, b2=optim.b2)
    if optim.skip_nonfinite:
        tx = optax.apply_if_finite(tx, max_consecutive_errors=optim.skip_nonfinite)
    return schedule, tx


def create_train_state(
    seed: int,
    model_config: Mapping[str, Any],
    tx: optax.GradientTransformation,
    init_std: float = 0.02,
) -> TrainState:
    """A fresh train state for the network of `model_config`.

    Args:
      seed: initialisation seed.
      model_config: the model config.
      tx: the optimiser.
      init_std: kernels ~ normal(0, init_std), biases 0 (the official `init_weights`); 0 uses
        flax's default initialisers instead.
    """
    network = _network(json.dumps(dict(model_config), sort_keys=True))
    if init_std > 0:
        params = _numpy_init(models.abstract_params(model_config)[0], seed, lambda _: init_std)
    else:
        encoder = models.build_encoder(model_config)
        image = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)  # parameters are size-free
        feats = jax.eval_shape(encoder.init_with_output, jax.random.key(0), image)[0]
        zeros = [jnp.zeros(f.shape, f.dtype) for f in feats]
        rngs = {"params": jax.random.key(seed), "sample": jax.random.key(seed + 1)}
        params = jax.jit(network.init)(rngs, zeros, zeros)["params"]
    params = params_dtype(params, model_config)  # before the optimiser state, which follows it
    state = TrainState.create(apply_fn=network.apply, params=params, tx=tx)
    # A strongly typed step, like the one a checkpoint restores: a weakly typed 0 would give the
    # resumed state another type, and the train step a second compilation.
    return state.replace(step=jnp.zeros((), jnp.int32))


def params_dtype(params: Any, model_config: Mapping[str, Any]) -> Any:
    """`params` (float32) in the dtype training keeps them in: float64 for a float64 model
    (numerics checks; needs `jax.enable_x64`, see `_check_config`), else unchanged (bfloat16
    computes with float32 parameters)."""
    if model_config["dtype"] != "float64":
        return params
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)


@functools.lru_cache(maxsize=8)
def _network(model_config_json: str) -> Any:
    """One network object per model config: `apply_fn` is static in the train state, and bound
    methods of two equal modules compare unequal, so a second state (a resumed run in the same
    process) would otherwise retrace and recompile the train step."""
    return models.build_network(json.loads(model_config_json))


def train_step(
    state: TrainState,
    encoder_params: Any,
    batch: Mapping[str, jax.Array],
    rng: jax.Array,
    *,
    encoder: Any,
    loss_config: Mapping[str, Any],
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimisation step on this device's shard of the batch (inside `shard_map`).

    Args:
      state: the replicated train state.
      encoder_params: frozen VGG parameters (replicated).
      batch: {"content", "style"}: uint8 (b, h, w, 3), this device's shard.
      rng: the run's key; folded with the step and the device index here.
      encoder: the VGG module.
      loss_config: {"content", "global_style", "local_style", "key_mode", "max_sample"}.

    Returns:
      (new state, metrics): each loss term averaged over devices, and two booleans read by the
      loop before it saves: "finite_update" (the loss and every gradient are finite) and
      "finite_params" (every new parameter is finite), the same on every device.
    """
    rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), lax.axis_index("data"))
    sample_rng, loss_rng = jax.random.split(rng)
    # Images in the encoder's statistics dtype: float32 (also under bfloat16), float64 for a
    # float64 model.
    image_dtype = ops.stat_dtype(encoder.dtype)
    content = batch["content"].astype(image_dtype) / 255.0
    style = batch["style"].astype(image_dtype) / 255.0
    # Content and style go through the frozen encoder once, together (one pass, no gradient).
    feats = encoder.apply({"params": encoder_params}, jnp.concatenate([content, style]))
    c_feats = [f[: content.shape[0]] for f in feats]
    s_feats = [f[content.shape[0] :] for f in feats]
    weights = {name: loss_config[name] for name in ("content", "global_style", "local_style")}

    def loss_fn(params):
        stylized = state.apply_fn(
            {"params": params},
            c_feats,
            s_feats,
            output_size=content.shape[1:3],
            rngs={"sample": sample_rng},
        )
        cs_feats = encoder.apply({"params": encoder_params}, stylized)
        return losses.style_transfer_losses(
            cs_feats,
            c_feats,
            s_feats,
            loss_rng,
            weights,
            loss_config["key_mode"],
            loss_config["max_sample"],
        )

    # Differentiate with respect to a per-device ("varying") copy of the replicated params:
    # gradients of a replicated value would be summed over devices by shard_map's autodiff.
    # The pmap model wants the per-device gradient, averaged explicitly.
    params = lax.pcast(state.params, "data", to="varying")
    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grads = lax.pmean(grads, "data")
    terms = lax.pmean(terms, "data")
    new_state = state.apply_gradients(grads=grads)
    # After the all-reduce, so every device holds the same answer. Element-wise checks, not a
    # norm: the square of a large finite value would overflow to Inf.
    flags = {
        "finite_update": ops.finite_leaves((terms["total"], grads)).all(),
        "finite_params": ops.finite_leaves(new_state.params).all(),
    }
    return new_state, {**terms, **flags}


def make_train_step(
    mesh: jax.sharding.Mesh,
    encoder: Any,
    loss_config: Mapping[str, Any],
    step_fn: Callable[..., Any] = train_step,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """`step_fn` compiled as `jit(shard_map(...))` over the "data" axis; the state is donated.

    The returned function takes (state, encoder_params, batch, rng): state, encoder and rng
    replicated, batch sharded over "data" along its first axis. Cached: the same arguments give
    the same jitted function, so a resumed run in the same process does not recompile.
    """
    return _make_train_step(mesh, encoder, tuple(sorted(loss_config.items())), step_fn)


@functools.lru_cache(maxsize=8)
def _make_train_step(mesh, encoder, loss_items, step_fn):
    body = functools.partial(step_fn, encoder=encoder, loss_config=dict(loss_items))
    sharded = jax.shard_map(
        body,
        mesh=mesh,
        in_specs=(P(), P(), P("data"), P()),
        out_specs=(P(), P()),
    )
    return jax.jit(sharded, donate_argnums=0)


def loss_config_from(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The `loss` section as a plain dict, validated."""
    if config.loss.key_mode not in ("shallow", "single", "pair"):
        raise TrainingError(
            f"config.loss.key_mode={config.loss.key_mode!r}: choose shallow, single or pair"
        )
    return {
        "content": float(config.loss.content),
        "global_style": float(config.loss.global_style),
        "local_style": float(config.loss.local_style),
        "key_mode": config.loss.key_mode,
        "max_sample": int(config.loss.max_sample),
    }


def _check_config(config: ml_collections.ConfigDict) -> None:
    devices, processes = jax.device_count(), jax.process_count()
    batch = config.global_batch_size
    if batch <= 0 or batch % devices:
        raise TrainingError(
            f"config.global_batch_size={batch} must be a positive multiple of the device count "
            f"({devices}); e.g. --config.global_batch_size={max(1, batch // devices) * devices}"
        )
    if batch % processes:
        raise TrainingError(
            f"config.global_batch_size={batch} must divide by the process count ({processes})"
        )
    for name in ("num_steps", "log_every", "image_every"):
        if config[name] < 0:
            raise TrainingError(f"config.{name}={config[name]} must be >= 0")
    if config.optim.skip_nonfinite < 0:
        raise TrainingError(
            f"config.optim.skip_nonfinite={config.optim.skip_nonfinite} must be >= 0 (0: stop)"
        )
    if config.checkpoint.every_steps <= 0 or config.checkpoint.keep <= 0:
        raise TrainingError("config.checkpoint.every_steps and config.checkpoint.keep must be > 0")
    if config.optim.lr <= 0:
        raise TrainingError(f"config.optim.lr={config.optim.lr} must be > 0")
    if config.model.dtype == "float64" and not jax.config.jax_enable_x64:
        raise TrainingError(  # else JAX would silently compute in float32
            "config.model.dtype=float64 needs 64-bit JAX: train.py enables it; in Python, run "
            "inside `with jax.enable_x64(True):`"
        )


class _Preemption:
    """Turns SIGTERM into a flag the loop checks between steps (then saves and exits).

    One process only: with several, JAX's preemption service catches SIGTERM and makes every
    process stop at the same step (`manager.reached_preemption`); a handler here would replace
    its handler, and processes stopping at different steps would wait for each other forever.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if jax.process_count() > 1:
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, rely on orbax's preemption sync
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        logging.warning("SIGTERM: saving a checkpoint after this step, then stopping")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _image_grid(
    batch: Mapping[str, np.ndarray], stylized: np.ndarray, count: int = 4
) -> np.ndarray:
    """uint8 (rows * h, 3 * w, 3): one row per sample, content | style | stylized."""
    rows = [
        np.concatenate([batch["content"][i], batch["style"][i], stylized[i]], axis=1)
        for i in range(min(count, stylized.shape[0]))
    ]
    return np.concatenate(rows, axis=0)


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclasses.dataclass
class TrainSetup:
    """What a training loop needs, built once from a config by `setup_train`.

    The one set-up path of `train`, the training benchmark and the tests (maxtext's
    `setup_train_loop`): a mesh of every device of every process, the frozen encoder and a
    fresh train state replicated over it, and the compiled step.
    """

    mesh: jax.sharding.Mesh
    model_config: dict[str, Any]
    encoder_params: Any  # replicated over the mesh
    state: TrainState  # fresh, replicated over the mesh
    schedule: optax.Schedule
    train_step: Callable[..., tuple[TrainState, dict[str, jax.Array]]]  # `make_train_step`'s
    rng: jax.Array

    def device_batch(self, local: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's rows of a global batch -> the global batch, sharded over "data"."""
        sharding = jax.NamedSharding(self.mesh, P("data"))
        return {
            name: jax.make_array_from_process_local_data(sharding, local[name])
            for name in ("content", "style")
        }


def setup_train(
    config: ml_collections.ConfigDict,
    steps_per_epoch: int = 1,
    step_fn: Callable[..., Any] = train_step,
) -> TrainSetup:
    """Validates `config` and builds the mesh, encoder, fresh state and compiled step.

    Args:
      config: a training config (`configs/default.py`).
      steps_per_epoch: steps per pass over the content images (the official schedule's unit).
      step_fn: the per-device step (tests wrap `train_step` to count its traces).

    Raises:
      errors.UserError: a bad config value or a missing encoder (one-line messages).
    """
    _check_config(config)
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    replicated = jax.NamedSharding(mesh, P())
    encoder_params, widths = load_encoder(config.model, config.seed + 1)
    model_config = model_config_from(config, widths)
    loss_config = loss_config_from(config)
    schedule, tx = _optimizer(tuple(sorted(config.optim.items())), steps_per_epoch)
    state = create_train_state(config.seed, model_config, tx, config.model.init_std)
    encoder = models.build_encoder(model_config)
    return TrainSetup(
        mesh=mesh,
        model_config=model_config,
        encoder_params=replicate(params_dtype(encoder_params, model_config), replicated),
        state=replicate(state, replicated),
        schedule=schedule,
        train_step=make_train_step(mesh, encoder, loss_config, step_fn),
        rng=jax.random.key(config.seed),
    )


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains (or resumes) in `workdir`: set-up, restore, loop, close.

    Checkpoints, TensorBoard logs and the resolved config go to `workdir`; an existing
    checkpoint there is resumed automatically, data position included.

    Args:
      config: a training config (`configs/default.py`).
      workdir: the run directory.

    Returns:
      The final train state.

    Raises:
      errors.UserError: bad paths, config values or data (one-line messages).
    """
    workdir = os.path.abspath(workdir)
    logging.info(
        "%d process(es), %d device(s) (%d local): %s",
        jax.process_count(),
        jax.device_count(),
        jax.local_device_count(),
        jax.devices()[0].device_kind,
    )
    manager_args = (
        os.path.join(workdir, "checkpoints"),
        config.checkpoint.every_steps,
        config.checkpoint.keep,
        config.checkpoint.async_save,
    )
    manager = checkpoint.train_manager(*manager_args)
    # The data order from the newest step's position (reopened below if an older step is
    # resumed): the sources' sizes set the epoch length, which the set-up needs.
    first_guess = _data_position(manager, manager.latest_step())
    dataset, info = _create_dataset(config, first_guess)
    _log_data(info)
    steps_per_epoch = config.optim.steps_per_epoch or max(
        1, -(-info.num_content // config.global_batch_size)
    )
    num_steps = config.num_steps or steps_per_epoch * (
        config.optim.constant_epochs + config.optim.decay_epochs
    )
    setup = setup_train(config, steps_per_epoch)
    manager, state, rng, start_sample, broken = _resume(manager, manager_args, setup)
    if start_sample != first_guess:
        dataset, _ = _create_dataset(config, start_sample)
    train_config = _write_config(config, workdir)
    start_step = int(jax.device_get(state.step))
    logging.info("training steps %d..%d (%d steps/epoch)", start_step, num_steps, steps_per_epoch)

    def save(step: int, state: TrainState, force: bool) -> None:
        if step in broken:  # orbax writes no step over an existing step directory
            logging.warning("step %d not saved: the broken checkpoint of that step is kept", step)
            return
        samples = start_sample + (step - start_step) * config.global_batch_size
        checkpoint.save_train(
            manager,
            step,
            state,
            setup.encoder_params,
            setup.model_config,
            rng,
            samples,
            train_config,
            force,
        )

    progress = _Progress(config, setup, start_step, num_steps, workdir)
    finiteness = _Finiteness(bool(config.optim.skip_nonfinite), broken)
    try:
        state = _train_loop(
            setup, state, rng, iter(dataset), num_steps, progress, finiteness, save, manager
        )
    finally:  # also after an error: in-flight saves complete, no half-written step is left
        manager.wait_until_finished()
        manager.close()
        progress.close()
    if jax.process_index() == 0 and config.sample_side:
        _finish(workdir, config, setup, state, num_steps, already_done=start_step == num_steps)
    return state


def _create_dataset(config: ml_collections.ConfigDict, start_sample: int):
    return input_pipeline.create_dataset(
        config.data,
        config.global_batch_size,
        config.seed,
        jax.process_index(),
        jax.process_count(),
        start_sample,
    )


def _data_position(manager: Any, step: int | None) -> int:
    """The data position of `step`; 0 without a step or when it cannot be read."""
    try:
        return 0 if step is None else checkpoint.restore_data_position(manager, step)
    except checkpoint.CheckpointError:
        return 0  # `restore_newest` reports the step


def _resume(manager: Any, manager_args: tuple, setup: "TrainSetup") -> tuple:
    """(manager, state, rng, data position, broken steps) from the newest step that restores
    completely; the fresh state at sample 0 when there is none. Broken steps are kept: the
    manager is reopened with a retention policy that never deletes them."""

    def restore(step: int) -> tuple[TrainState, jax.Array, int]:
        start_sample = checkpoint.restore_data_position(manager, step)
        state, rng = checkpoint.restore_train(manager, setup.state, setup.rng, step)
        return state, rng, start_sample

    resumed, broken = checkpoint.restore_newest(manager, restore)
    if broken:
        manager.close()
        manager = checkpoint.train_manager(*manager_args, keep_steps=broken)
    if resumed is None:
        return manager, setup.state, setup.rng, 0, broken
    logging.info("resumed from step %d in %s", int(resumed[0].step), manager.directory)
    return (manager, *resumed, broken)


def _finish(workdir, config, setup: TrainSetup, state, num_steps: int, already_done: bool) -> None:
    """Process 0 after the last step: the sample sheet, and what to look at and run next."""
    if int(jax.device_get(state.step)) < num_steps:  # stopped early (SIGTERM): no samples
        return
    paths = sample_paths(workdir)
    if not (already_done and all(map(os.path.isfile, paths.values()))):
        params, encoder_params = _local(state.params), _local(setup.encoder_params)
        stylizer = stylize.Stylizer(params, encoder_params, setup.model_config)
        paths = write_samples(workdir, config.data, stylizer, config.sample_side)
    shown = {name: _shown_path(path) for name, path in paths.items()}
    status = "already complete" if already_done else "done"
    print(
        f"{status}: {num_steps} steps, checkpoints in {_shown_path(workdir)}; sample "
        f"(content | style | stylized): {shown['sheet']}\n"
        f"next: python infer.py --checkpoint {_shown_path(workdir)} --content {shown['content']} "
        f"--style {shown['style']} --output stylized.png",
        flush=True,
    )


def _shown_path(path: str) -> str:
    """`path` relative to the working directory when it lies below it (shorter commands)."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _train_loop(
    setup: TrainSetup,
    state: TrainState,
    rng: jax.Array,
    iterator: Any,
    num_steps: int,
    progress: "_Progress",
    finiteness: "_Finiteness",
    save: Callable[[int, TrainState, bool], None],
    manager: Any,
) -> TrainState:
    """Steps from `state.step` to `num_steps`; saves by policy, at the end and on SIGTERM.

    Every step's finiteness is known before any save decision: accumulated on the device, it
    is read (a host sync) only on steps that save or log, which wait for the step anyway.
    """
    first, started = int(jax.device_get(state.step)), time.perf_counter()
    if first < num_steps:
        logging.info("compiling the train step (the first step includes it)")
    with _Preemption() as preemption:
        for step in range(first, num_steps):
            local = next(iterator)
            state, metrics = setup.train_step(
                state, setup.encoder_params, setup.device_batch(local), rng
            )
            done = step + 1
            if step == first:
                jax.block_until_ready(metrics)  # once: says when compilation is over
                logging.info("first step done in %.1f s", time.perf_counter() - started)
            finiteness.add(metrics, done)
            stop = preemption.requested or manager.reached_preemption(done)
            force = stop or done == num_steps
            if force or progress.logs_at(done) or manager.should_save(done):
                finiteness.check(manager)
            progress.update(done, metrics, local, state.params)
            save(done, state, force)
            if stop:
                logging.warning("stopped at step %d on request; resume with the same command", done)
                break
    return state


@functools.partial(jax.jit, static_argnames="skip_nonfinite")
def _accumulate_finiteness(all_finite, first_bad, flags, step, *, skip_nonfinite):
    ok = flags["finite_params"] & (flags["finite_update"] | skip_nonfinite)
    return all_finite & ok, jnp.where(all_finite & ~ok, step, first_bad)


class _Finiteness:
    """Whether every step so far had a finite loss, gradients and parameters, and the first
    that did not: accumulated on the device, read only on steps that save or log.

    With `skip_nonfinite` (optax.apply_if_finite) a bad loss or gradient skips its update, so
    only non-finite parameters count.
    """

    def __init__(self, skip_nonfinite: bool, broken: list[int]):
        self.skip_nonfinite, self.broken = skip_nonfinite, broken
        self.all_finite, self.first_bad = np.bool_(True), np.int32(0)

    def add(self, metrics: dict[str, jax.Array], step: int) -> None:
        """Takes the step's flags out of `metrics`, asynchronously (no host sync)."""
        flags = {name: metrics.pop(name) for name in ("finite_update", "finite_params")}
        self.all_finite, self.first_bad = _accumulate_finiteness(
            self.all_finite,
            self.first_bad,
            flags,
            np.int32(step),
            skip_nonfinite=self.skip_nonfinite,
        )

    def check(self, manager: Any) -> None:
        """Raises TrainingError naming the first non-finite step and the newest checkpoint,
        which is finite: every save of this run follows a check, a resumed one was checked."""
        if bool(self.all_finite):
            return
        manager.wait_until_finished()  # so that the newest step on disk is complete
        intact = sorted(set(manager.all_steps()) - set(self.broken))
        where = (
            f"the newest checkpoint, step {intact[-1]} in {manager.directory}, is finite: "
            "re-run with a lower --config.optim.lr to resume from it"
            if intact
            else f"no checkpoint was saved in {manager.directory}: re-run with a lower "
            "--config.optim.lr"
        )
        raise TrainingError(
            f"step {int(self.first_bad)}: the loss, gradients or parameters are NaN/Inf, so "
            f"training stopped without saving them; {where} (or skip bad steps with "
            "--config.optim.skip_nonfinite=N)"
        )


def _log_data(info: input_pipeline.DataInfo) -> None:
    if info.is_demo:
        logging.warning(
            "no dataset configured: training on the embedded DEMO images (%d content, %d style)",
            info.num_content,
            info.num_style,
        )
    logging.info("content: %s (%d images)", info.content, info.num_content)
    logging.info("style: %s (%d images)", info.style, info.num_style)


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """The resolved config as JSON data; process 0 also writes it to `workdir`/config.json."""
    train_config = json.loads(config.to_json_best_effort())
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(train_config, f, indent=2)
    return train_config


class _Progress:
    """Progress lines on every process; TensorBoard scalars and image grids from process 0."""

    def __init__(self, config, setup: TrainSetup, start_step: int, num_steps: int, workdir: str):
        self.log_every, self.image_every = config.log_every, config.image_every
        self.global_batch, self.num_steps = config.global_batch_size, num_steps
        self.schedule, self.encoder_params = setup.schedule, setup.encoder_params
        self.model_config = setup.model_config
        num_params = sum(np.size(p) for p in jax.tree.leaves(setup.state.params))
        variant = setup.model_config["variant"]
        logging.info("%s network: %s trainable parameters", variant, f"{num_params:,}")
        self.skipped = 0
        self.last_time, self.last_step = time.perf_counter(), start_step
        self.writer = None
        if jax.process_index() == 0:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def _due(self, every: int, done: int) -> bool:
        return bool(every) and (done % every == 0 or done == self.num_steps)

    def logs_at(self, done: int) -> bool:
        """Whether step `done` writes a progress line (and so reads the metrics)."""
        return self._due(self.log_every, done)

    def update(self, done: int, metrics, local, params) -> None:
        """After step `done`: count skipped images; log, and write images, when due."""
        self.skipped += int(local["skipped"].sum())
        if self.logs_at(done):
            self._log(done, {k: float(v) for k, v in jax.device_get(metrics).items()})
        if self.writer is not None and self._due(self.image_every, done):
            encoder_params = _local(self.encoder_params)
            stylized = _stylize(
                stylize.Stylizer(_local(params), encoder_params, self.model_config), local
            )
            self.writer.add_image(
                "content_style_stylized",  # TensorBoard tags allow no "|"
                _image_grid(local, stylized),
                done,
                dataformats="HWC",
            )
            self.writer.flush()

    def _log(self, done: int, metrics: dict[str, float]) -> None:
        now = time.perf_counter()
        steps_per_sec = (done - self.last_step) / max(now - self.last_time, 1e-9)
        images_per_sec = steps_per_sec * self.global_batch
        self.last_time, self.last_step = now, done
        lr = float(self.schedule(done - 1))
        logging.info(
            "step %d/%d | loss %.4f (content %.4f, global %.4f, local %.4f) | lr %.2e | "
            "%.1f img/s | ETA %s | skipped images %d",
            done,
            self.num_steps,
            metrics["total"],
            metrics["content"],
            metrics["global_style"],
            metrics["local_style"],
            lr,
            images_per_sec,
            _format_eta((self.num_steps - done) / max(steps_per_sec, 1e-9)),
            self.skipped,
        )
        if self.writer is not None:
            for name, value in metrics.items():
                self.writer.add_scalar(f"loss/{name}", value, done)
            self.writer.add_scalar("train/learning_rate", lr, done)
            self.writer.add_scalar("train/images_per_sec", images_per_sec, done)
            self.writer.add_scalar("train/skipped_images", self.skipped, done)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.skipped:
            logging.warning("skipped %d unreadable image reads in this run", self.skipped)


def replicate(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """`tree` as global arrays with `sharding`, the same value on every process.

    Through host memory: `jax.device_put` of an array already on a device, to a sharding over
    several processes with one device each, builds an array whose local buffer claims the
    other processes' devices too (jax 0.10; orbax then fails to save it). From numpy, each
    process places its own copies.
    """
    return jax.device_put(jax.device_get(tree), sharding)


def _local(tree: Any) -> Any:
    """A replicated global array tree as arrays on this process's first device."""
    return jax.tree.map(lambda x: x.addressable_data(0), tree)


def _stylize(stylizer: stylize.Stylizer, local_batch, count: int = 4) -> np.ndarray:
    """uint8 stylized images of the first `count` pairs of a host batch (for image grids)."""
    to_float = lambda x: np.asarray(x[:count], np.float32) / 255.0  # noqa: E731
    out = stylizer.stylize_mix(to_float(local_batch["content"]), [to_float(local_batch["style"])])
    return (np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def sample_paths(workdir: str) -> dict[str, str]:
    """{"content", "style", "sheet"}: the end-of-run sample files of a work dir."""
    return {name: os.path.join(workdir, "samples", f"{name}.png") for name in SAMPLE_NAMES}


def write_samples(
    workdir: str, data: ml_collections.ConfigDict, stylizer: stylize.Stylizer, side: int
) -> dict[str, str]:
    """Stylizes the first content with the first style image of the training data and writes
    `samples/content.png`, `samples/style.png` (shorter side `side`) and `samples/sheet.png`
    (content | style | stylized, at the content's height), for a look and for `infer.py`.

    Returns:
      {"content", "style", "sheet"}: the paths written.
    """
    paths = sample_paths(workdir)
    images = {}
    for role in ("content", "style"):
        source = input_pipeline.open_source(data[role], role, data.image_key, data.tfds_data_dir)
        image_io.save_image(paths[role], image_io.resize_shorter(source[0], side))
        images[role] = image_io.load_image(paths[role])  # 8-bit, as `infer.py` will read it
    stylized = np.clip(stylizer.stylize(images["content"], images["style"]), 0.0, 1.0)
    height = images["content"].shape[0]
    style_width = max(1, round(images["style"].shape[1] * height / images["style"].shape[0]))
    style_tile = Image.fromarray((images["style"] * 255.0).astype(np.uint8)).resize(
        (style_width, height), Image.LANCZOS
    )
    sheet = [images["content"], np.asarray(style_tile, np.float32) / 255.0, stylized]
    image_io.save_image(paths["sheet"], np.concatenate(sheet, axis=1))
    return paths
