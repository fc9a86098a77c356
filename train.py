r"""Trains a flax-style model (data parallel over every device of every process).

  python train.py --config configs/default.py --workdir runs/proposed \
      --config.model.vgg_path=models/vgg_normalised.pth \
      --config.data.content=folder:/data/coco/train2014 --config.data.style=folder:/data/wikiart

Re-running the same command resumes from the latest checkpoint in --workdir. Multi-host (e.g.
one SLURM task per host): `jax.distributed.initialize()` is called when --distributed is set or
a cluster launcher is detected. This file is intentionally kept short; the work is in
`flax_style.training`.
"""

import logging as pylogging
import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from flax_style import cli, errors, training

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and config.")
flags.DEFINE_bool(
    "distributed",
    None,
    "Call jax.distributed.initialize() (multi-host). Default: auto, when SLURM_NTASKS > 1, "
    "OMPI_COMM_WORLD_SIZE > 1 or JAX_COORDINATOR_ADDRESS is set.",
)
config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/*.py).", lock_config=True
)
flags.mark_flags_as_required(["config", "workdir"])


def _launched_multihost() -> bool:
    env = os.environ
    return (
        int(env.get("SLURM_NTASKS", "1")) > 1
        or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
        or "JAX_COORDINATOR_ADDRESS" in env
    )


class _QuietOrbax:
    """Orbax logs every save stage at INFO; keep its warnings and errors only."""

    def filter(self, record) -> bool:
        return record.levelno >= pylogging.WARNING or "orbax" not in record.pathname


@errors.reports_user_errors
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.get_absl_handler().addFilter(_QuietOrbax())
    cli.enable_compilation_cache()
    if FLAGS.distributed or (FLAGS.distributed is None and _launched_multihost()):
        jax.distributed.initialize()
    logging.info(
        "JAX process %d/%d, local devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_devices(),
    )
    training.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
