"""All orbax checkpointing of flax-style: one on-disk format for converted and trained models.

A checkpoint directory is an orbax `CheckpointManager` root with numbered steps. Every step holds
the items that inference needs:
  params        trainable parameters of the network
  encoder       VGG encoder parameters (frozen)
  model_config  the model config (JSON), so a checkpoint is self-describing
Training adds its own items (optimiser state, RNG, data iterator position) beside them; readers
that only stylize restore the three above and ignore the rest.
"""

import os
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp

from flax_style import models

MODEL_ITEMS = ("params", "encoder", "model_config")


class CheckpointError(Exception):
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
    if not os.path.isdir(root):
        raise CheckpointError(
            f"{directory}: no such checkpoint directory; make one with "
            "`python -m flax_style.convert` or `python train.py`"
        )
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    with ocp.CheckpointManager(root, options=options) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{directory}: holds no checkpoint steps")
        try:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(),
                    encoder=ocp.args.StandardRestore(),
                    model_config=ocp.args.JsonRestore(),
                ),
            )
        except (FileNotFoundError, KeyError, ValueError) as error:
            raise CheckpointError(
                f"{directory}: step {step} is not a flax-style model checkpoint ({error})"
            ) from error
    to_device = lambda tree: jax.tree.map(jax.numpy.asarray, tree)  # noqa: E731
    config = models.model_config(restored["model_config"])
    return to_device(restored["params"]), to_device(restored["encoder"]), config
