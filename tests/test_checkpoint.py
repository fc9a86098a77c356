"""Checkpoints: exact resume (params, optimiser, RNG, data position), SIGTERM, one format."""

import os
import signal
import threading

import jax
import numpy as np
import pytest

from configs import tiny
from flax_style import checkpoint, training


def _config(num_steps, every_steps=100):
    config = tiny.get_config()
    config.num_steps = num_steps
    config.log_every = 2
    config.image_every = 0
    config.checkpoint.every_steps = every_steps  # saves cost seconds each: few in tests
    config.checkpoint.keep = 2
    return config


def _assert_trees_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_resume_is_bit_identical(tmp_path):
    full = training.train(_config(5, every_steps=2), str(tmp_path / "full"))
    interrupted = str(tmp_path / "interrupted")
    first = training.train(_config(3), interrupted)  # "killed" after step 3
    assert int(first.step) == 3
    resumed = training.train(_config(5), interrupted)
    assert int(resumed.step) == 5
    _assert_trees_equal(jax.device_get(full.params), jax.device_get(resumed.params))
    _assert_trees_equal(jax.device_get(full.opt_state), jax.device_get(resumed.opt_state))

    # The train checkpoint is also a model checkpoint: load_model takes the work dir.
    params, encoder_params, model_config = checkpoint.load_model(str(tmp_path / "full"))
    _assert_trees_equal(params, jax.device_get(full.params))
    assert model_config["widths"] == list(tiny.get_config().model.widths)
    assert jax.tree.structure(encoder_params) is not None
    # LatestN(2): steps 4 and 5 (the final, forced save) remain.
    steps = sorted(int(d) for d in os.listdir(tmp_path / "full" / "checkpoints") if d.isdigit())
    assert steps == [4, 5]
    assert os.path.isfile(tmp_path / "full" / "config.json")


def test_sigterm_saves_and_stops(tmp_path):
    workdir = str(tmp_path / "run")
    finished = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # never let SIGTERM kill pytest

    def keep_signalling():
        # Until the run returns; signals before its handler is installed are ignored above.
        while not finished.wait(1.0):
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=keep_signalling, daemon=True)
    thread.start()
    try:
        state = training.train(_config(10_000), workdir)
    finally:
        finished.set()
        thread.join()
        signal.signal(signal.SIGTERM, previous)
    stopped = int(state.step)
    assert 0 < stopped < 10_000
    params, _, _ = checkpoint.load_model(workdir)
    _assert_trees_equal(params, jax.device_get(state.params))
    manager = checkpoint.train_manager(os.path.join(workdir, "checkpoints"), 2, 2)
    assert manager.latest_step() == stopped
    manager.close()


def test_model_checkpoint_round_trip(tmp_path):
    params = {"conv": {"kernel": np.ones((1, 1, 2, 3), np.float32)}}
    encoder = {"conv0": {"bias": np.zeros(3, np.float32)}}
    checkpoint.save_model(str(tmp_path), params, encoder, {"variant": "adaattn"})
    got, got_encoder, config = checkpoint.load_model(str(tmp_path))
    _assert_trees_equal(got, params)
    _assert_trees_equal(got_encoder, encoder)
    assert config["variant"] == "adaattn"


def test_resume_with_another_model_is_a_clear_error(tmp_path):
    training.train(_config(1), str(tmp_path))
    config = _config(2)
    config.model.variant = "adaattn"
    with pytest.raises(checkpoint.CheckpointError, match="fresh --workdir"):
        training.train(config, str(tmp_path))
