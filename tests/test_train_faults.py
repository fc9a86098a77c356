"""Training never keeps a bad model: a non-finite step stops the run before anything of it is
saved, naming the newest (finite) checkpoint; a damaged newest checkpoint is reported, kept, and
the run resumes from the older intact one.

The non-finite step is made exact: a run resumed at step 4 with an infinite loss weight has an
infinite loss from step 5 on (the loss is not part of the saved state). Tiny widths, 32 px crops.
"""

import glob
import logging
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from configs import tiny
from flax_style import checkpoint, training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(num_steps, every_steps=2, keep=2, log_every=2):
    config = tiny.get_config()
    config.num_steps = num_steps
    config.log_every = log_every
    config.image_every = 0
    config.checkpoint.every_steps = every_steps
    config.checkpoint.keep = keep
    return config


def _steps(workdir) -> list[int]:
    return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def _leftovers(workdir) -> list[str]:
    return glob.glob(os.path.join(workdir, "checkpoints", "*tmp*"))


@pytest.fixture(scope="module")
def four_steps(tmp_path_factory):
    """A finished 4-step run saved at steps 2 and 4 (copied by the tests that change it)."""
    workdir = str(tmp_path_factory.mktemp("four_steps"))
    state = training.train(_config(4, keep=3), workdir)
    return workdir, jax.device_get(state.params)


def _copy(workdir, tmp_path) -> str:
    return shutil.copytree(workdir, str(tmp_path / "run"))


@pytest.mark.parametrize("log_every", [2, 0])
def test_nan_step_stops_before_saving_and_names_the_last_finite_checkpoint(
    four_steps, tmp_path, log_every
):
    """NaN from step 5, saves every 2 (keep 2): step 6 is never saved, 2 and 4 stay, and the
    error names step 5 and the checkpoint of step 4, whose parameters are finite."""
    workdir = _copy(four_steps[0], tmp_path)
    config = _config(30, log_every=log_every)
    config.loss.local_style = float("inf")
    with pytest.raises(training.TrainingError) as error:
        training.train(config, workdir)
    message = str(error.value)
    assert message.startswith("step 5: the loss, gradients or parameters are NaN/Inf"), message
    assert f"the newest checkpoint, step 4 in {workdir}/checkpoints, is finite" in message
    assert "\n" not in message
    assert _steps(workdir) == [2, 4] and _leftovers(workdir) == []
    params, _, _ = checkpoint.load_model(workdir)  # refuses NaN parameters
    jax.tree.map(np.testing.assert_array_equal, params, four_steps[1])


def test_nan_on_a_fresh_workdir_says_there_is_no_checkpoint(tmp_path):
    config = _config(30, log_every=0)
    config.loss.local_style = float("inf")
    with pytest.raises(training.TrainingError, match="no checkpoint was saved in") as error:
        training.train(config, str(tmp_path))
    assert str(error.value).startswith("step 1: ")
    assert _steps(tmp_path) == [] and _leftovers(tmp_path) == []


def test_skip_nonfinite_skips_the_updates(tmp_path):
    """optax.apply_if_finite: NaN losses leave the initial parameters, the run finishes."""
    config = _config(3, every_steps=100)
    config.loss.local_style = float("inf")
    config.optim.skip_nonfinite = 5
    state = training.train(config, str(tmp_path))
    assert int(state.step) == 3
    model_config = training.model_config_from(config, config.model.widths)
    initial = training.create_train_state(
        config.seed, model_config, optax.adam(1.0), config.model.init_std
    )
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), initial.params)


def test_train_py_nan_exits_2_with_one_line_and_no_orbax_traceback(four_steps, tmp_path):
    workdir = _copy(four_steps[0], tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--config=configs/tiny.py",
            f"--workdir={workdir}",
            "--config.num_steps=30",
            "--config.checkpoint.every_steps=2",
            "--config.checkpoint.keep=2",
            "--config.log_every=0",
            "--config.loss.local_style=inf",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: step 5: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "cannot schedule" not in result.stderr
    assert _steps(workdir) == [2, 4] and _leftovers(workdir) == []


def _truncate_an_array_file(step_dir):
    files = [p for p in glob.glob(f"{step_dir}/params/**", recursive=True) if os.path.isfile(p)]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.truncate(os.path.getsize(largest) // 2)


def _delete_the_data_position(step_dir):
    shutil.rmtree(os.path.join(step_dir, "data"))


@pytest.mark.parametrize("damage", [_truncate_an_array_file, _delete_the_data_position])
def test_resume_skips_a_damaged_newest_checkpoint(four_steps, tmp_path, caplog, damage):
    """Step 4 damaged: one warning names it, it stays on disk, the run resumes from step 2 and
    reaches the parameters of the undamaged run at step 4, then goes on."""
    workdir = _copy(four_steps[0], tmp_path)
    damage(os.path.join(workdir, "checkpoints", "4"))
    with caplog.at_level(logging.INFO, logger="absl"):
        state = training.train(_config(6, keep=1), workdir)
    warnings = [r.getMessage() for r in caplog.records if "not resumed from" in r.getMessage()]
    assert len(warnings) == 1 and "step 4" in warnings[0] and "\n" not in warnings[0], warnings
    assert "resumed from step 2" in caplog.text
    assert int(state.step) == 6
    assert 4 in _steps(workdir) and 6 in _steps(workdir)  # kept despite keep=1
    assert _leftovers(workdir) == []


def test_resume_skips_a_nan_checkpoint(four_steps, tmp_path, caplog):
    """A step saved with NaN parameters (by an earlier version, before these checks) is kept
    and skipped: re-running at a sane learning rate resumes from the finite step 2."""
    workdir = _copy(four_steps[0], tmp_path)
    config = _config(6, keep=1)
    setup = training.setup_train(config, steps_per_epoch=2)
    manager = checkpoint.train_manager(os.path.join(workdir, "checkpoints"), 2, 3)
    state, rng = checkpoint.restore_train(manager, setup.state, setup.rng, 4)
    samples = checkpoint.restore_data_position(manager, 4)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
    manager.close()
    manager = checkpoint.train_manager(os.path.join(workdir, "checkpoints"), 2, 3)
    nan_state = state.replace(params=jax.tree.map(lambda x: x * np.nan, state.params))
    checkpoint.save_train(
        manager, 4, nan_state, setup.encoder_params, setup.model_config, rng, samples, {}, True
    )
    manager.wait_until_finished()
    manager.close()
    with caplog.at_level(logging.INFO, logger="absl"):
        state = training.train(config, workdir)
    warnings = [r.getMessage() for r in caplog.records if "not resumed from" in r.getMessage()]
    assert len(warnings) == 1 and "step 4: " in warnings[0] and "NaN/Inf" in warnings[0]
    assert "resumed from step 2" in caplog.text and int(state.step) == 6
