r"""Trains a flax-style model (data parallel over every device of every process).

  python train.py --config configs/default.py --workdir runs/proposed \
      --config.model.vgg_path=models/vgg_normalised.pth \
      --config.data.content=folder:/data/coco/train2014 --config.data.style=folder:/data/wikiart

Re-running the same command resumes from the latest checkpoint in --workdir. Any config field
can be overridden: --config.optim.lr=1e-4 (the fields and their defaults are listed below).
Several processes (`srun`, `mpirun`, or --coordinator_address/--num_processes/--process_id on
each) start `jax.distributed` themselves (`flax_style.distributed`).
"""

# This file is kept short on purpose: the work is in `flax_style.training`.

import logging as pylogging
import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from flax_style import cli, errors

PROGRAM = "python train.py"
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py")


def _flags(argv: list[str]) -> flags.FlagValues:
    values = flags.FlagValues()
    define = {"flag_values": values}
    flags.DEFINE_string(
        "workdir", None, "Directory for checkpoints, TensorBoard logs and config.", **define
    )
    flags.DEFINE_string(
        "coordinator_address",
        None,
        "Multi-process: HOST:PORT of process 0 (or JAX_COORDINATOR_ADDRESS).",
        **define,
    )
    flags.DEFINE_integer(
        "num_processes",
        None,
        "Multi-process: number of processes (or JAX_NUM_PROCESSES).",
        **define,
    )
    flags.DEFINE_integer(
        "process_id", None, "Multi-process: this process, 0.. (or JAX_PROCESS_ID).", **define
    )
    flags.DEFINE_integer(
        "peer_timeout",
        60,
        "Multi-process: seconds after which a silent (crashed) process counts as lost and the "
        "others exit (status 75) instead of waiting for it.",
        **define,
    )
    # `sys_argv`: config_flags finds the `--config.x.y` overrides there (not in sys.argv), so
    # that `main` runs on any argv (tests call it in-process).
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Training config file (configs/*.py).",
        lock_config=True,
        sys_argv=[PROGRAM, *argv],
        **define,
    )
    flags.mark_flags_as_required(["config", "workdir"], flag_values=values)
    return values


def _config_fields(argv: list[str]) -> str:
    """The `--config.x.y=default` lines of the config that `argv` names (default.py if none)."""
    path = cli.flag_value(argv, "config") or DEFAULT_CONFIG
    values = _flags([f"--config={path}"])
    try:
        values([PROGRAM, f"--config={path}", "--workdir=."])
    except Exception as error:  # the help still lists the flags
        return f"config fields: cannot load {path} ({type(error).__name__})"
    lines = [f"config fields of {path} (override with --config.FIELD=VALUE):"]
    for field, value in _flatten(values.config.to_dict()):
        lines.append(f"  --config.{field}={value!r}")
    return "\n".join(lines)


def _flatten(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


class _ProcessPrefix:
    """Starts every log line with the process index (several processes log to one file)."""

    def __init__(self, process_index: int):
        self.prefix = f"[process {process_index}] "

    def filter(self, record) -> bool:
        if not str(record.msg).startswith(self.prefix):
            record.msg = self.prefix + str(record.msg)
        return True


class _QuietOrbax:
    """Orbax logs every save stage at INFO; keep its warnings and errors only."""

    def filter(self, record) -> bool:
        return record.levelno >= pylogging.WARNING or "orbax" not in record.pathname


@errors.reports_user_errors
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    about = __doc__.strip()
    args = cli.parse(_flags(argv), argv, PROGRAM, about, lambda: _config_fields(argv))
    cli.check_writable_dir(args.workdir, "workdir")
    if not flags.FLAGS.is_parsed():  # absl logging reads its own flags: keep their defaults
        flags.FLAGS.mark_as_parsed()
    logging.use_absl_handler()
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_QuietOrbax())
    cli.enable_compilation_cache()
    import jax  # after the flags: `--help` and flag errors stay fast

    if args.config.model.dtype == "float64":
        # Here, once for the process and before any array exists (the distributed client, the
        # data, the keys): x64 is a global JAX switch, so the library only checks it
        # (`training.setup_train`) and in-process callers scope it with `jax.enable_x64`.
        jax.config.update("jax_enable_x64", True)

    from flax_style import distributed, training

    cluster = distributed.detect_cluster(
        os.environ, args.coordinator_address, args.num_processes, args.process_id
    )
    distributed.initialize(cluster, args.peer_timeout)
    if cluster is not None:
        logging.get_absl_handler().addFilter(_ProcessPrefix(cluster.process_id))
    logging.info(
        "JAX process %d/%d, local devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_devices(),
    )
    with distributed.watchdog(cluster, args.peer_timeout):
        training.train(args.config, args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
