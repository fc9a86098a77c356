"""Multi-process start-up: who the processes are, from the launcher, and `jax.distributed`.

Three ways to say it, read in this order (an earlier one wins field by field):
  explicit   flags `--coordinator_address HOST:PORT --num_processes N --process_id I`, or the
             environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID
  SLURM      `srun`: SLURM_STEP_NUM_TASKS (or SLURM_NTASKS), SLURM_PROCID, SLURM_LOCALID; the
             coordinator is the step's first node (SLURM_STEP_NODELIST) on port
             JAX_COORDINATOR_PORT (default: derived from SLURM_JOB_ID, as JAX does, so every
             task computes the same one)
  Open MPI   `mpirun`: OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_LOCAL_*; the
             coordinator is the launcher's host (Open MPI 4's OMPI_MCA_orte_hnp_uri) or, with
             Open MPI 5, JAX_COORDINATOR_ADDRESS passed with `mpirun -x`
Nothing set, or one task: a single process, `jax.distributed` is not started.
"""

import contextlib
import dataclasses
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import jax
from jax._src import distributed as jax_distributed

from flax_style import errors

_POLL_S = 1.0  # seconds between heartbeats


class LaunchError(errors.UserError):
    """An incomplete or inconsistent multi-process launch; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The arguments of `jax.distributed.initialize` for this process."""

    coordinator_address: str
    num_processes: int
    process_id: int
    local_device_ids: tuple[int, ...] | None  # None: every device of the host
    launcher: str  # "explicit", "slurm" or "mpirun" (for the log)


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f"{name}={value!r} is not an integer") from None


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: 'n[003-005,9],m1' -> 'n003'."""
    match = re.match(r"([^,\[]*)(?:\[([^,\-\]]*))?", nodelist.strip())
    return match.group(1) + (match.group(2) or "")


def _default_port(job_id: int) -> int:
    """A port every task of a job derives alike (JAX's SLURM rule: the top 4096 ports)."""
    return job_id % 2**12 + (65535 - 2**12 + 1)


def _slurm(env: Mapping[str, str]) -> dict:
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    port = _int(env, "JAX_COORDINATOR_PORT") or _default_port(_int(env, "SLURM_JOB_ID") or 0)
    nodes = _int(env, "SLURM_STEP_NUM_NODES") or _int(env, "SLURM_NNODES") or 1
    tasks = _int(env, "SLURM_STEP_NUM_TASKS") or _int(env, "SLURM_NTASKS")  # this srun's
    return {
        "coordinator_address": f"{first_host(nodelist)}:{port}" if nodelist else None,
        "num_processes": tasks,
        "process_id": _int(env, "SLURM_PROCID"),
        "local_rank": _int(env, "SLURM_LOCALID"),
        "local_size": -(-tasks // nodes) if tasks else None,
    }


def _mpirun(env: Mapping[str, str]) -> dict:
    uri = env.get("OMPI_MCA_orte_hnp_uri", "")  # "1531576320.0;tcp://10.0.0.1,10.1.0.1:34911"
    host = re.search(r"tcp://([^,:;]+)|tcp6://\[([^,\]]+)", uri)
    port = _int(env, "JAX_COORDINATOR_PORT") or _default_port(
        int(uri.split(".", 1)[0] or 0) // 2**12 if uri[:1].isdigit() else 0
    )
    return {
        "coordinator_address": f"{host.group(1) or host.group(2)}:{port}" if host else None,
        "num_processes": _int(env, "OMPI_COMM_WORLD_SIZE"),
        "process_id": _int(env, "OMPI_COMM_WORLD_RANK"),
        "local_rank": _int(env, "OMPI_COMM_WORLD_LOCAL_RANK"),
        "local_size": _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE"),
    }


def detect_cluster(
    env: Mapping[str, str],
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> Cluster | None:
    """The multi-process launch described by flags and `env`, or None for one process.

    Args:
      env: the environment (`os.environ`).
      coordinator_address, num_processes, process_id: the explicit flags (None: not given).

    Returns:
      The cluster, or None when a single process was launched.

    Raises:
      LaunchError: a launch that names some but not all of the three values, or inconsistent
        ones (one line naming the flag or variable to set).
    """
    # A flag wins over its JAX_* variable; an empty variable counts as unset.
    flag_or_env = lambda flag, name: _int(env, name) if flag is None else flag  # noqa: E731
    explicit = {
        "coordinator_address": coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None,
        "num_processes": flag_or_env(num_processes, "JAX_NUM_PROCESSES"),
        "process_id": flag_or_env(process_id, "JAX_PROCESS_ID"),
    }
    if "SLURM_JOB_ID" in env and "SLURM_PROCID" in env:
        launcher, found = "slurm", _slurm(env)
    elif "OMPI_COMM_WORLD_SIZE" in env:
        launcher, found = "mpirun", _mpirun(env)
    else:
        launcher, found = "explicit", {}
    merged = {name: found.get(name) if value is None else value for name, value in explicit.items()}
    if merged["num_processes"] in (None, 1) and merged["coordinator_address"] is None:
        return None  # nothing launched, or a one-task launch
    missing = [name for name, value in merged.items() if value is None]
    if missing:
        flag = missing[0]
        raise LaunchError(
            f"multi-process launch ({launcher}) without {flag}: pass --{flag} or set "
            f"JAX_{flag.upper()}"
            + (" (the first host's HOST:PORT, with `mpirun -x`)" if launcher == "mpirun" else "")
        )
    if not 0 <= merged["process_id"] < merged["num_processes"]:
        raise LaunchError(
            f"process id {merged['process_id']} is not in 0..{merged['num_processes'] - 1}: "
            "check --process_id / --num_processes (or JAX_PROCESS_ID / JAX_NUM_PROCESSES)"
        )
    # One process per accelerator when the launcher started several on a host and did not bind
    # devices itself (CUDA_VISIBLE_DEVICES); with one process per host it drives every device.
    local_size, local_rank = found.get("local_size"), found.get("local_rank")
    binds = "CUDA_VISIBLE_DEVICES" in env or "JAX_LOCAL_DEVICE_IDS" in env
    several = local_size is not None and local_size > 1 and local_rank is not None
    return Cluster(
        coordinator_address=merged["coordinator_address"],
        num_processes=merged["num_processes"],
        process_id=merged["process_id"],
        local_device_ids=(local_rank,) if several and not binds else None,
        launcher=launcher,
    )


def initialize(cluster: Cluster | None, peer_timeout: int) -> None:
    """Starts `jax.distributed` for `cluster` (nothing for None), before any other JAX call.

    Args:
      cluster: from `detect_cluster`.
      peer_timeout: seconds after which `watchdog` declares a silent process lost; JAX's own
        heartbeat timeout is set beyond it, so that the watchdog's one-line report comes first.
    """
    if cluster is None:
        return
    # CPU hosts need cross-process collectives; GPUs and TPUs ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=cluster.coordinator_address,
        num_processes=cluster.num_processes,
        process_id=cluster.process_id,
        local_device_ids=list(cluster.local_device_ids) if cluster.local_device_ids else None,
        cluster_detection_method="deactivate",  # resolved above, JAX must not override it
        heartbeat_timeout_seconds=2 * peer_timeout + 10,
        shutdown_timeout_seconds=2 * peer_timeout + 10,
    )


EXIT_PEER_LOST = 75  # EX_TEMPFAIL: relaunching resumes from the last complete checkpoint
_KEY = "flax_style/watchdog"


class PeerWatchdog:
    """Exits this process with one line when another process of the run is lost.

    JAX alone notices a dead process late (its heartbeat timeout) and then aborts with pages of
    C++ logs; a collective with the dead process may instead fail at once or block forever. So
    every process counts up a heartbeat in the coordination service's key-value store, and a
    monitor thread exits (status `EXIT_PEER_LOST`) when a peer's count has not moved, or the
    coordinator has not answered, for `timeout` seconds. A process that finished marks itself
    done and is not waited for.
    """

    def __init__(self, client: Any, process_id: int, num_processes: int, timeout: float):
        self._client, self._id, self._timeout = client, process_id, timeout
        self._peers = [p for p in range(num_processes) if p != process_id]
        now = time.monotonic()
        self._last_seen = dict.fromkeys(self._peers, now)
        self._last_contact = now
        self._beats: dict[int, str] = {}
        self._done: set[int] = set()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._beat, name="peer-heartbeat", daemon=True),
            threading.Thread(target=self._monitor, name="peer-monitor", daemon=True),
        ]

    def __enter__(self) -> "PeerWatchdog":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if isinstance(error, Exception) and not isinstance(error, errors.UserError):
            # A failed collective often surfaces here first: give the monitor the time to name
            # the lost process (it exits the process) before reporting the error itself.
            self._stop.wait(self._timeout + 2 * _POLL_S)
        else:
            try:
                self._client.key_value_set(f"{_KEY}/done/{self._id}", "1", allow_overwrite=True)
            except Exception:  # the peers then count this process as lost: same outcome
                pass
        self._stop.set()

    def _beat(self) -> None:
        count = 0
        while not self._stop.is_set():
            count += 1
            try:
                self._client.key_value_set(
                    f"{_KEY}/beat/{self._id}", str(count), allow_overwrite=True
                )
                entries = dict(self._client.key_value_dir_get(f"{_KEY}/"))
            except Exception:  # an unreachable coordinator: the monitor decides
                entries = None
            now = time.monotonic()
            if entries is not None:
                self._last_contact = now
                for peer in self._peers:
                    beat = entries.get(f"{_KEY}/beat/{peer}")
                    if beat != self._beats.get(peer):
                        self._beats[peer], self._last_seen[peer] = beat, now
                    if f"{_KEY}/done/{peer}" in entries:
                        self._done.add(peer)
            self._stop.wait(_POLL_S)

    def _monitor(self) -> None:
        while not self._stop.wait(_POLL_S / 2):
            now = time.monotonic()
            if now - self._last_contact > self._timeout:
                self._lost(0, now - self._last_contact, "the coordinator does not answer")
            for peer in self._peers:
                if peer not in self._done and now - self._last_seen[peer] > self._timeout:
                    self._lost(peer, now - self._last_seen[peer], "no heartbeat")

    def _lost(self, peer: int, silent_s: float, why: str) -> None:
        sys.stderr.write(
            f"error: process {peer} of {len(self._peers) + 1} lost ({why} for {silent_s:.0f} s; "
            f"it crashed or was killed): process {self._id} stops; relaunch every process with "
            "the same command to resume from the last complete checkpoint\n"
        )
        sys.stderr.flush()
        os._exit(EXIT_PEER_LOST)  # other threads may be blocked in collectives: no clean-up


def watchdog(cluster: Cluster | None, timeout: float) -> contextlib.AbstractContextManager:
    """A `PeerWatchdog` over the processes of `cluster` (nothing for a single process)."""
    if cluster is None:
        return contextlib.nullcontext()
    # The client of the coordination service that `jax.distributed.initialize` started (JAX
    # has no public accessor; orbax reads it the same way).
    client = jax_distributed.global_state.client
    return PeerWatchdog(client, cluster.process_id, cluster.num_processes, timeout)
