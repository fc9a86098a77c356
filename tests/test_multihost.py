"""Multi-process training: real processes on 127.0.0.1, topology-independent results, faults.

The runs are shared by the tests (a module fixture): tiny widths, 32 px crops, the embedded demo
images, global batch 4, checkpoints every 10 steps. Run with -s to see the measured figures.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from flax_style import checkpoint, distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_TIMEOUT = 5  # seconds (train.py --peer_timeout) before a silent process counts as lost
RUN_TIMEOUT = 240  # seconds any one launch may take before the test fails


# Launcher environments, parsed as a pure function.


def test_slurm_environment():
    env = {
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "4",
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_NODELIST": "gpu[007-008,010],login1",
        "SLURM_STEP_NUM_NODES": "2",
    }
    cluster = distributed.detect_cluster(env)
    # JAX's SLURM port rule: 4242 % 4096 + 61440.
    assert cluster == distributed.Cluster("gpu007:61586", 4, 3, (1,), "slurm")
    # One task per node drives every device of its node; the coordinator port can be set.
    cluster = distributed.detect_cluster(
        {**env, "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
         "JAX_COORDINATOR_PORT": "1234"}
    )  # fmt: skip
    assert cluster == distributed.Cluster("gpu007:1234", 2, 1, None, "slurm")
    # A step of fewer tasks than the job: the step's count.
    step = {**env, "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"}
    assert distributed.detect_cluster(step).num_processes == 2
    # GPUs bound by SLURM (--gpus-per-task): the process keeps what it sees.
    assert distributed.detect_cluster({**env, "CUDA_VISIBLE_DEVICES": "0"}).local_device_ids is None
    assert distributed.first_host("node001") == "node001"
    assert distributed.first_host("a-1,b-2") == "a-1"


def test_open_mpi_environment():
    env = {
        "OMPI_COMM_WORLD_SIZE": "2",
        "OMPI_COMM_WORLD_RANK": "1",
        "OMPI_COMM_WORLD_LOCAL_RANK": "0",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "1",
    }
    # Open MPI 4 names the launcher's host; the port derives from the job id (JAX's rule).
    uri = "1531576320.0;tcp://10.96.0.1,10.148.0.1:34911"
    cluster = distributed.detect_cluster({**env, "OMPI_MCA_orte_hnp_uri": uri})
    port = 1531576320 // 4096 % 4096 + 61440
    assert cluster == distributed.Cluster(f"10.96.0.1:{port}", 2, 1, None, "mpirun")
    # Open MPI 5 does not: the address comes from JAX_COORDINATOR_ADDRESS (mpirun -x).
    cluster = distributed.detect_cluster({**env, "JAX_COORDINATOR_ADDRESS": "h0:5000"})
    assert cluster == distributed.Cluster("h0:5000", 2, 1, None, "mpirun")
    with pytest.raises(distributed.LaunchError, match="JAX_COORDINATOR_ADDRESS") as error:
        distributed.detect_cluster(env)
    assert "\n" not in str(error.value)


def test_explicit_flags_and_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "h0:5000", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert distributed.detect_cluster(env) == distributed.Cluster("h0:5000", 2, 1, None, "explicit")
    # Flags win over variables.
    cluster = distributed.detect_cluster(env, "h1:6000", 3, 2)
    assert cluster == distributed.Cluster("h1:6000", 3, 2, None, "explicit")
    # What used to fail inside jax ("Number of processes must be defined") names the fix.
    with pytest.raises(distributed.LaunchError, match="--num_processes or set JAX_NUM_PROCESSES"):
        distributed.detect_cluster({"JAX_COORDINATOR_ADDRESS": "h0:5000"})
    with pytest.raises(distributed.LaunchError, match=r"process id 2 is not in 0\.\.1"):
        distributed.detect_cluster(env, process_id=2)
    # Nothing launched, or a one-task launch: a single process.
    assert distributed.detect_cluster({}) is None
    assert distributed.detect_cluster({"SLURM_JOB_ID": "1", "SLURM_PROCID": "0",
                                       "SLURM_NTASKS": "1"}) is None  # fmt: skip


# Real processes.


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _base_env(devices: int, cache_dir: str) -> dict[str, str]:
    launcher = ("SLURM_", "OMPI_", "PMI", "JAX_", "FLAX_STYLE_")  # nothing of the caller leaks in
    env = {k: v for k, v in os.environ.items() if not k.startswith(launcher)}
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=ROOT,
        PYTHONUNBUFFERED="1",
        # Later runs of the same topology reuse the compiled step (the test's time is compiles).
        FLAX_STYLE_COMPILATION_CACHE=cache_dir,
    )
    return env


FAKE_SRUN = """#!/bin/bash
# Stand-in for srun on one host: SLURM_NTASKS copies of the command, with srun's variables.
while [[ $1 == -* ]]; do shift; done
status=0; pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_STEP_NODELIST=localhost SLURM_STEP_NUM_NODES=1 \\
    "$@" > "$SRUN_LOG_DIR/process$i.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""


def _launch_env(launcher: str, index: int, count: int, port: int) -> dict[str, str]:
    """The variables `srun` / `mpirun` (Open MPI 5) would set for task `index` of `count`."""
    if launcher == "srun":
        return {
            "SLURM_JOB_ID": "77",
            "SLURM_NTASKS": str(count),
            "SLURM_PROCID": str(index),
            "SLURM_LOCALID": str(index),
            "SLURM_STEP_NODELIST": "localhost",
            "SLURM_STEP_NUM_NODES": "1",
            "JAX_COORDINATOR_PORT": str(port),
        }
    if launcher == "mpirun":
        return {
            "OMPI_COMM_WORLD_SIZE": str(count),
            "OMPI_COMM_WORLD_RANK": str(index),
            "OMPI_COMM_WORLD_LOCAL_RANK": str(index),
            "OMPI_COMM_WORLD_LOCAL_SIZE": str(count),
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        }
    return {}


class Launch:
    """`count` train.py processes of one run, started together; output goes to files."""

    def __init__(self, workdir, steps, count=2, devices=1, launcher="explicit", extra=()):
        os.makedirs(workdir, exist_ok=True)
        self.workdir, self.procs = str(workdir), []
        self.logs = [os.path.join(workdir, f"process{index}.log") for index in range(count)]
        port = _free_port()
        cache_dir = os.path.join(os.path.dirname(self.workdir), "jax_cache")
        if launcher == "sbatch":
            self._sbatch(steps, count, devices, extra, port, cache_dir)
            return
        for index in range(count):
            args = [
                sys.executable,
                "train.py",
                "--config=configs/tiny.py",
                f"--workdir={workdir}",
                f"--config.num_steps={steps}",
                f"--peer_timeout={PEER_TIMEOUT}",
                *extra,
            ]
            if launcher == "explicit" and count > 1:
                args += [
                    f"--coordinator_address=127.0.0.1:{port}",
                    f"--num_processes={count}",
                    f"--process_id={index}",
                ]
            env = {**_base_env(devices, cache_dir), **_launch_env(launcher, index, count, port)}
            log = open(self.logs[index], "w")
            self.procs.append(
                subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
            log.close()

    def _sbatch(self, steps, count, devices, extra, port, cache_dir):
        """scripts/train.sbatch as SLURM runs it, with a stand-in srun (one host)."""
        bin_dir = os.path.join(self.workdir, "bin")
        os.makedirs(bin_dir)
        with open(os.path.join(bin_dir, "srun"), "w") as f:
            f.write(FAKE_SRUN)
        os.chmod(os.path.join(bin_dir, "srun"), 0o755)
        env = {
            **_base_env(devices, cache_dir),
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "SLURM_JOB_ID": "77",
            "SLURM_NTASKS": str(count),
            "SLURM_SUBMIT_DIR": ROOT,
            "JAX_COORDINATOR_PORT": str(port),
            "PYTHON": sys.executable,
            "MAX_RESTARTS": "0",
            "SRUN_LOG_DIR": self.workdir,
        }
        args = [
            "bash",
            os.path.join(ROOT, "scripts", "train.sbatch"),
            "--config=configs/tiny.py",
            f"--workdir={self.workdir}",
            f"--config.num_steps={steps}",
            f"--peer_timeout={PEER_TIMEOUT}",
            *extra,
        ]
        self.procs.append(subprocess.Popen(args, cwd=ROOT, env=env))

    def wait(self, timeout=RUN_TIMEOUT) -> list[int]:
        deadline = time.monotonic() + timeout
        try:
            return [p.wait(max(1.0, deadline - time.monotonic())) for p in self.procs]
        finally:
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()

    def output(self, index: int) -> str:
        with open(self.logs[index]) as f:
            return f.read()


def _steps(workdir) -> list[int]:
    return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def _params(workdir, step):
    return jax.device_get(checkpoint.load_model(str(workdir), step)[0])


def _max_difference(a, b) -> float:
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.abs(x - y).max()), a, b)))


def _resume_copy(source, target, step):
    """A copy of run `source` as it was after checkpoint `step` (later steps removed)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.log", "tensorboard"))
    for later in [s for s in _steps(target) if s > step]:
        shutil.rmtree(os.path.join(target, "checkpoints", str(later)))


def _wait_for_commit(workdir, step, procs, timeout=RUN_TIMEOUT):
    path = os.path.join(workdir, "checkpoints", str(step))
    deadline = time.monotonic() + timeout
    while not os.path.isdir(path):  # orbax renames the temporary directory on commit
        assert time.monotonic() < deadline, f"no checkpoint {step} in {timeout} s"
        assert all(p.poll() is None for p in procs), "a process exited early"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run the tests compare, two or three at a time (idle time overlaps)."""
    root = tmp_path_factory.mktemp("multihost")
    dirs = {name: root / name for name in ("two", "one_x2", "two_to_one", "one_to_two")}
    # 2 processes x 1 device (scripts/train.sbatch, a stand-in srun) and 1 x 2: the same batch.
    started = time.monotonic()
    two = Launch(dirs["two"], 20, launcher="sbatch")
    one_x2 = Launch(dirs["one_x2"], 20, count=1, devices=2, extra=["--config.image_every=0"])
    codes = {"two": two.wait(), "one_x2": one_x2.wait()}
    print(f"\n[runs] 2 x 1 and 1 x 2 in parallel: {time.monotonic() - started:.0f} s")
    outputs = {"two": [two.output(0), two.output(1)], "one_x2": [one_x2.output(0)]}
    assert codes["one_x2"] == [0], one_x2.output(0)

    # Elastic: the step-10 checkpoint of 2 processes resumed by 1 (2 devices), and the one of 1
    # process resumed by 2 (launched with flags), which are then killed (test_process_killed).
    _resume_copy(dirs["two"], dirs["two_to_one"], 10)
    _resume_copy(dirs["one_x2"], dirs["one_to_two"], 10)
    two_to_one = Launch(
        dirs["two_to_one"], 20, count=1, devices=2, extra=["--config.image_every=0"]
    )
    killed = Launch(
        dirs["one_to_two"],
        1000,
        extra=["--config.image_every=0", "--config.checkpoint.keep=3"],
    )
    _wait_for_commit(dirs["one_to_two"], 20, killed.procs)
    killed.procs[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    survivor_code = killed.procs[0].wait(RUN_TIMEOUT)
    survivor_seconds = time.monotonic() - killed_at
    codes["killed"] = killed.wait()
    codes["two_to_one"] = two_to_one.wait()
    print(f"[runs] elastic resumes and the kill: {time.monotonic() - started:.0f} s")
    outputs["two_to_one"] = [two_to_one.output(0)]
    outputs["killed"] = [killed.output(0), killed.output(1)]
    return {
        "dirs": dirs,
        "codes": codes,
        "outputs": outputs,
        "survivor": (survivor_code, survivor_seconds),
    }


FLOAT64 = ["--config.model.dtype=float64", "--config.image_every=0", "--config.sample_side=0"]


@pytest.fixture(scope="module")
def float64_runs(tmp_path_factory):
    """Parameters at steps 10 and 20 of three float64 runs of one global batch, run together:
    2 processes x 1 device, 1 process x 2 devices, 1 process x 1 device."""
    root = tmp_path_factory.mktemp("float64")
    started = time.monotonic()
    launches = {
        "2 x 1": Launch(root / "two", 20, extra=FLOAT64),
        "1 x 2": Launch(root / "one_x2", 20, count=1, devices=2, extra=FLOAT64),
        "1 x 1": Launch(root / "one_x1", 20, count=1, devices=1, extra=FLOAT64),
    }
    for launch in launches.values():
        assert launch.wait() == [0] * len(launch.procs), launch.output(0)
    print(f"\n[runs] float64 2 x 1, 1 x 2, 1 x 1 in parallel: {time.monotonic() - started:.0f} s")
    with jax.enable_x64(True):  # else the float64 checkpoints would load as float32
        return {
            (name, step): _params(launch.workdir, step)
            for name, launch in launches.items()
            for step in (10, 20)
        }


def test_two_processes_train_and_checkpoint(runs):
    """scripts/train.sbatch under a stand-in srun: 2 tasks train, checkpoint and exit 0."""
    assert runs["codes"]["two"] == [0], runs["outputs"]["two"]
    assert _steps(runs["dirs"]["two"]) == [10, 20]
    for index, output in enumerate(runs["outputs"]["two"]):
        assert "Traceback" not in output, output
        assert f"[process {index}] step 20/20" in output  # log lines name their process
        assert f"JAX process {index}/2" in output
    assert os.path.isfile(runs["dirs"]["two"] / "config.json")


def test_same_parameters_on_any_topology(runs):
    """2 processes x 1 device train what 1 process x 2 devices trains.

    Both run the same per-device program on the same rows. One device with the whole batch
    runs another program: its first step agrees to rounding (test_training's
    test_two_devices_equal_one_device), but this model's training amplifies float32 rounding
    (ReLU kinks, Adam's sign-like first steps) to ~1e-2 in 20 steps; it is compared in
    float64 (test_same_parameters_on_any_topology_float64).
    """
    assert runs["codes"]["two"] == [0]
    two = _params(runs["dirs"]["two"], 20)
    difference = _max_difference(two, _params(runs["dirs"]["one_x2"], 20))
    print(f"\nmax |params| difference at step 20, 2 processes vs 1 process x 2 devices: "
          f"{difference:.3g}")  # fmt: skip
    assert difference <= 1e-5
    # Not vacuous: training moved the parameters far more than the tolerance.
    assert _max_difference(two, _params(runs["dirs"]["two"], 10)) > 1e-3


def test_same_parameters_on_any_topology_float64(float64_runs):
    """2 x 1, 1 x 2 and 1 x 1 train the same parameters, 1 x 1 included: in float64 the
    programs' rounding (~1e-16) stays far below 1e-5 after the amplification of 20 steps."""
    params = float64_runs
    assert jax.tree.leaves(params["1 x 1", 20])[0].dtype == np.float64
    names = ("2 x 1", "1 x 2", "1 x 1")
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            difference = _max_difference(params[a, 20], params[b, 20])
            print(f"\nfloat64 max |params| difference at step 20, {a} vs {b}: {difference:.3g}")
            assert difference <= 1e-5, (a, b)
    # Not vacuous: training moved the parameters far more than the tolerance.
    assert _max_difference(params["1 x 1", 20], params["1 x 1", 10]) > 1e-3


def test_two_processes_resume_on_one(runs):
    assert runs["codes"]["two_to_one"] == [0], runs["outputs"]["two_to_one"]
    assert "resumed from step 10" in runs["outputs"]["two_to_one"][0]
    difference = _max_difference(
        _params(runs["dirs"]["two"], 20), _params(runs["dirs"]["two_to_one"], 20)
    )
    print(f"\nmax |params| difference, 2 processes to 10 then 1 process to 20 vs 2 to 20: "
          f"{difference:.3g}")  # fmt: skip
    assert difference <= 1e-5


def test_process_killed_then_relaunched(runs):
    code, seconds = runs["survivor"]
    survivor = runs["outputs"]["killed"][0]
    print(f"\nsurvivor of a SIGKILL exited with status {code} after {seconds:.1f} s "
          f"(--peer_timeout={PEER_TIMEOUT})")  # fmt: skip
    assert code == distributed.EXIT_PEER_LOST
    assert seconds < PEER_TIMEOUT + 5
    errors = [line for line in survivor.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "process 1 of 2 lost" in errors[0], survivor
    assert "Traceback" not in survivor
    # The 1-process checkpoint of step 10 was resumed by 2 processes: same as the 2-process run.
    workdir = runs["dirs"]["one_to_two"]
    assert "resumed from step 10" in survivor
    difference = _max_difference(_params(runs["dirs"]["two"], 20), _params(workdir, 20))
    print(f"max |params| difference, 1 process to 10 then 2 processes to 20: {difference:.3g}")
    assert difference <= 1e-5

    # Relaunch: from the last complete checkpoint; a half-written one (orbax's temporary
    # directory, as a kill during a save leaves it) is never picked.
    last = _steps(workdir)[-1]
    half = os.path.join(workdir, "checkpoints", f"{last + 20}.orbax-checkpoint-tmp")
    shutil.copytree(os.path.join(workdir, "checkpoints", str(last)), half)
    os.remove(os.path.join(half, "_CHECKPOINT_METADATA"))
    relaunch = Launch(workdir, 1000, launcher="mpirun", extra=["--config.image_every=0"])
    _wait_for_commit(workdir, last + 10, relaunch.procs)
    # Then SLURM-style preemption: SIGTERM to every process; they stop at one common step.
    for process in relaunch.procs:
        process.send_signal(signal.SIGTERM)
    assert relaunch.wait() == [0, 0], relaunch.output(0)
    assert f"resumed from step {last} " in relaunch.output(0)
    stops = [re.findall(r"stopped at step (\d+)", relaunch.output(i)) for i in (0, 1)]
    assert stops[0] == stops[1] and len(stops[0]) == 1, stops
    assert _steps(workdir)[-1] == int(stops[0][0]) > last
