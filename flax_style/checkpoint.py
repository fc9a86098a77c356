"""All orbax checkpointing of flax-style: one on-disk format for converted and trained models.

A checkpoint directory is an orbax `CheckpointManager` root with numbered steps. Every step holds
the items that inference needs:
  params        trainable parameters of the network
  encoder       VGG encoder parameters (frozen)
  model_config  the model config (JSON), so a checkpoint is self-describing
Training adds its own items beside them; readers that only stylize restore the three above and
ignore the rest:
  opt_state     {"step", "opt_state"}: the optimiser state and the step counter
  rng           the training PRNG key (raw key data)
  data          the data position {"samples": global samples consumed} (JSON): the input
                pipeline's order depends only on it and the seed, so it means the same on any
                number of processes and devices (a run resumes on another topology)
  train_config  the resolved training config (JSON)
So `load_model` and `infer.py` take a converted model, a train checkpoint root or a train work dir.

Every process calls `save_train`: each writes the shards it holds, process 0 the JSON items,
and orbax commits the step once all are written (renaming its temporary directory), so a step
directory without the commit is never listed by `latest_step` and never resumed from.
"""

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from flax_style import errors, models

MODEL_ITEMS = ("params", "encoder", "model_config")
TRAIN_ITEMS = (*MODEL_ITEMS, "opt_state", "rng", "data", "train_config")


MAKE_CHECKPOINT_HINT = (
    "make one with `python -m flax_style.convert --model {adaattn,proposed} --torch_dir DIR "
    "--vgg vgg_normalised.pth --out CKPT_DIR` or `python train.py ...`"
)


class CheckpointError(errors.UserError):
    """A checkpoint directory that cannot be read; the message says which and why."""


def save_model(
    directory: str,
    params: Any,
    encoder_params: Any,
    model_config: Mapping[str, Any],
    step: int = 0,
) -> str:
    """Writes a model-only checkpoint (what `python -m flax_style.convert` produces).

    Args:
      directory: checkpoint root; created if missing.
      params: trainable network parameters.
      encoder_params: VGG encoder parameters.
      model_config: model config (see `flax_style.models`).
      step: step number to save under.

    Returns:
      The absolute checkpoint root.
    """
    directory = os.path.abspath(directory)
    with ocp.CheckpointManager(directory, item_names=MODEL_ITEMS) as manager:
        manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                encoder=ocp.args.StandardSave(encoder_params),
                model_config=ocp.args.JsonSave(dict(model_config)),
            ),
            force=True,
        )
        manager.wait_until_finished()
    return directory


def load_model(directory: str, step: int | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Reads (params, encoder_params, model_config) from a convert or train checkpoint root.

    Args:
      directory: checkpoint root (the directory holding numbered steps), or a train work dir
        whose `checkpoints/` holds them.
      step: step to read; the latest by default.

    Raises:
      CheckpointError: the directory holds no readable model checkpoint.
    """
    root = os.path.abspath(directory)
    if os.path.isdir(os.path.join(root, "checkpoints")):
        root = os.path.join(root, "checkpoints")
    if os.path.isfile(root):
        raise CheckpointError(
            f"{directory}: is a file, not a checkpoint directory; pass the folder that holds the "
            "numbered steps (or the train --workdir)"
        )
    if not os.path.isdir(root):
        raise CheckpointError(f"{directory}: no such checkpoint directory; {MAKE_CHECKPOINT_HINT}")
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    handlers = {
        "params": ocp.StandardCheckpointHandler(),
        "encoder": ocp.StandardCheckpointHandler(),
        "model_config": ocp.JsonCheckpointHandler(),
    }
    try:
        with ocp.CheckpointManager(root, options=options, item_handlers=handlers) as manager:
            step = manager.latest_step() if step is None else step
            if step is None:
                raise CheckpointError(
                    f"{directory}: holds no checkpoint steps; {MAKE_CHECKPOINT_HINT}"
                )
            metadata = manager.item_metadata(step)
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(_on_one_device(metadata["params"])),
                    encoder=ocp.args.StandardRestore(_on_one_device(metadata["encoder"])),
                    model_config=ocp.args.JsonRestore(),
                ),
            )
    except CheckpointError:
        raise
    except Exception as error:  # orbax raises many types for a foreign directory
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise CheckpointError(
            f"{directory}: not a readable flax-style model checkpoint "
            f"({type(error).__name__}: {detail}); {MAKE_CHECKPOINT_HINT}"
        ) from error
    check_finite(
        {"params": restored["params"], "encoder": restored["encoder"]}, f"{directory} step {step}"
    )
    config = models.model_config(restored["model_config"])
    return restored["params"], restored["encoder"], config


def _on_one_device(metadata: Any) -> Any:
    """Restore targets on this process's first device, whatever topology wrote the arrays."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda array: jax.ShapeDtypeStruct(array.shape, array.dtype, sharding=device), metadata
    )


def count_nonfinite(tree: Any) -> tuple[int, int]:
    """(arrays holding a NaN or Inf, all arrays) of a parameter tree.

    Checked on the host, each array's local shards: a compiled check costs a 0.5 s compilation
    (one per tree shape) that a single-image run would pay in full.
    """
    leaves = jax.tree.leaves(tree)
    bad = sum(not all(np.isfinite(shard).all() for shard in _local_shards(x)) for x in leaves)
    return bad, len(leaves)


def _local_shards(x: Any) -> list[np.ndarray]:
    if isinstance(x, jax.Array):
        return [np.asarray(shard.data) for shard in x.addressable_shards]
    return [np.asarray(x)]


def check_finite(tree: Any, where: str) -> None:
    """Refuses parameters with a NaN or Inf (they stylize to a black image, or train nothing).

    Raises:
      CheckpointError: naming `where` and how many arrays are not finite.
    """
    bad, total = count_nonfinite(tree)
    if bad:
        raise CheckpointError(
            f"{where}: {bad} of {total} parameter arrays hold NaN/Inf (a diverged training run "
            "or bad converted weights); use an earlier checkpoint, or train/convert again"
        )


def train_manager(
    directory: str,
    save_every: int,
    keep: int,
    async_save: bool = True,
    keep_steps: Sequence[int] = (),
) -> ocp.CheckpointManager:
    """The training `CheckpointManager`: every `save_every` steps and on preemption, keeps `keep`.

    Args:
      directory: checkpoint root (a train work dir's `checkpoints/`); created if missing.
      save_every: interval of the fixed save policy, in steps.
      keep: most recent checkpoints to keep.
      async_save: write in a background thread (the device-to-host copy stays blocking, so the
        donated train state may be overwritten right after `save` returns).
      keep_steps: steps never deleted (broken checkpoints, left for the user to inspect).
    """
    policies = ocp.checkpoint_managers
    preservation = policies.LatestN(keep)
    if keep_steps:
        preservation = policies.AnyPreservationPolicy(
            [preservation, policies.CustomSteps(list(keep_steps))]
        )
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=policies.AnySavePolicy(
            [policies.FixedIntervalPolicy(save_every), policies.PreemptionCheckpointingPolicy()]
        ),
        preservation_policy=preservation,
        enable_async_checkpointing=async_save,
    )
    return ocp.CheckpointManager(
        os.path.abspath(directory),
        options=options,
        item_names=TRAIN_ITEMS,
    )


def save_train(
    manager: ocp.CheckpointManager,
    step: int,
    state: Any,
    encoder_params: Any,
    model_config: Mapping[str, Any],
    rng: jax.Array,
    data_samples: int,
    train_config: Mapping[str, Any],
    force: bool = False,
) -> bool:
    """Saves a train checkpoint at `step` if the manager's policy (or `force`) says so.

    Args:
      manager: from `train_manager`.
      step: the number of steps done (`state.step`, passed from the host to avoid a sync).
      state: a `flax.training.train_state.TrainState` (params, opt_state, step).
      encoder_params: frozen VGG parameters (saved so that the checkpoint is self-contained).
      model_config: the model config.
      rng: the training PRNG key.
      data_samples: global samples consumed by the `step` steps (the data position).
      train_config: the resolved training config, as a JSON-friendly dict.
      force: save regardless of the save policy (end of training, SIGTERM).

    Returns:
      Whether a save was started.
    """
    return manager.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            encoder=ocp.args.StandardSave(encoder_params),
            model_config=ocp.args.JsonSave(dict(model_config)),
            opt_state=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
            rng=ocp.args.StandardSave(np.asarray(jax.random.key_data(rng))),
            data=ocp.args.JsonSave({"samples": int(data_samples)}),
            train_config=ocp.args.JsonSave(dict(train_config)),
        ),
        force=force,
    )


def restore_train(
    manager: ocp.CheckpointManager,
    state: Any,
    rng: jax.Array,
    step: int | None = None,
) -> tuple[Any, jax.Array]:
    """Restores (state, rng) from a train checkpoint (see `restore_data_position`).

    Args:
      manager: from `train_manager`.
      state: a train state with the target shapes, dtypes and shardings.
      rng: a PRNG key of the target key type.
      step: the step to restore; the latest by default.

    Raises:
      CheckpointError: the step is missing, incomplete (a truncated or deleted file), holds
        NaN/Inf parameters, or does not fit the current model or optimiser.
    """
    step = manager.latest_step() if step is None else step
    abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)  # noqa: E731
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract(state.params)),
                opt_state=ocp.args.StandardRestore(
                    abstract({"step": state.step, "opt_state": state.opt_state})
                ),
                rng=ocp.args.StandardRestore(np.asarray(jax.random.key_data(rng))),
            ),
        )
    except Exception as error:  # orbax and tensorstore raise many types for a damaged step
        raise CheckpointError(f"{manager.directory} step {step}: {_reason(error)}") from None
    check_finite(restored["params"], f"{manager.directory} step {step}")
    state = state.replace(
        params=restored["params"],
        step=restored["opt_state"]["step"],
        opt_state=restored["opt_state"]["opt_state"],
    )
    rng = jax.random.wrap_key_data(restored["rng"], impl=jax.random.key_impl(rng))
    return state, rng


def restore_data_position(manager: ocp.CheckpointManager, step: int) -> int:
    """The global samples consumed by the first `step` steps, as saved by `save_train`.

    Raises:
      CheckpointError: the step is not a train checkpoint of this format.
    """
    try:
        restored = manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
        return int(restored["data"]["samples"])
    except Exception as error:  # a deleted or damaged item, or a checkpoint of another version
        raise CheckpointError(
            f"{manager.directory} step {step}: no data position ({_reason(error)})"
        ) from None


def _reason(error: Exception) -> str:
    """`Type: first line` of an orbax/tensorstore error (some run to a hundred lines)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:160] if lines else ''}".rstrip(": ")


def restore_newest(
    manager: ocp.CheckpointManager, restore: Callable[[int], Any]
) -> tuple[Any, list[int]]:
    """`restore(step)` of the newest step that restores completely, trying the newest first.

    A step that does not (a truncated or deleted file, NaN parameters) is reported in one
    warning line and left in place, for the user to inspect.

    Args:
      manager: from `train_manager`.
      restore: reads one step; raises `CheckpointError` when the step is unusable.

    Returns:
      (what `restore` returned, or None when there are no steps; the steps that failed).

    Raises:
      CheckpointError: steps exist but none restores (the newest one's reason).
    """
    broken, first_error = [], None
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            return restore(step), broken
        except CheckpointError as error:
            logging.warning("checkpoint step %d is kept but not resumed from: %s", step, error)
            broken.append(step)
            first_error = first_error or error
    if first_error is not None:
        raise CheckpointError(
            f"{first_error}; none of the {len(broken)} steps restores: if the model or optimiser "
            "config changed, use a fresh --workdir (or the config they were written with)"
        )
    return None, broken
