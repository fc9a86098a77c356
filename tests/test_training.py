"""Train step and loop: data parallelism, learning, no recompiles, config errors."""

import os
import subprocess
import sys

import chex
import jax
import numpy as np
import optax
import pytest

from configs import tiny
from flax_style import input_pipeline, models, training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(batch_size=4, seed=0, tx=None):
    config = tiny.get_config()
    encoder_params, widths = training.load_encoder(config.model, seed + 1)
    model_config = training.model_config_from(config, widths)
    state = training.create_train_state(seed, model_config, tx or optax.adam(1e-3, b1=0.5))
    dataset, _ = input_pipeline.create_dataset(config.data, batch_size, seed)
    return config, model_config, encoder_params, state, iter(dataset)


def _run_step(devices, state, encoder_params, batch, model_config, loss_config, step_fn=None):
    mesh = jax.make_mesh((len(devices),), ("data",), devices=devices)
    replicated = jax.NamedSharding(mesh, jax.P())
    sharded = jax.NamedSharding(mesh, jax.P("data"))
    step = training.make_train_step(
        mesh,
        models.build_encoder(model_config),
        loss_config,
        **({"step_fn": step_fn} if step_fn else {}),
    )
    state = jax.device_put(jax.tree.map(np.array, state), replicated)  # a fresh (donatable) copy
    batch = {k: jax.device_put(batch[k], sharded) for k in ("content", "style")}
    return step(state, jax.device_put(encoder_params, replicated), batch, jax.random.key(0))


def test_two_devices_equal_one_device():
    assert jax.device_count() == 2, "conftest.py sets two fake CPU devices"
    # SGD with rate 1: the parameter change is exactly the averaged gradient. (Adam's first
    # step, g / (|g| + eps), would amplify rounding in near-zero gradients.)
    config, model_config, encoder_params, state, iterator = _setup(tx=optax.sgd(1.0))
    batch = next(iterator)
    loss_config = training.loss_config_from(config)
    one, one_metrics = _run_step(
        jax.devices()[:1], state, encoder_params, batch, model_config, loss_config
    )
    two, two_metrics = _run_step(
        jax.devices(), state, encoder_params, batch, model_config, loss_config
    )
    chex.assert_trees_all_close(one_metrics, two_metrics, atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(one.params, two.params, atol=1e-5, rtol=1e-5)
    assert int(one.step) == int(two.step) == 1
    # The step did change the parameters (so the comparison is not vacuous).
    moved = jax.tree.map(
        lambda a, b: float(np.abs(np.asarray(a) - b).max()), two.params, state.params
    )
    assert max(jax.tree.leaves(moved)) > 1e-4


def test_losses_fall_without_recompiling():
    config = tiny.get_config()
    # The set-up train.py runs, with a step that raises if traced twice (a recompile).
    step_fn = chex.assert_max_traces(training.train_step, n=1)
    setup = training.setup_train(config, step_fn=step_fn)
    assert setup.mesh.size == 2
    dataset, _ = input_pipeline.create_dataset(config.data, config.global_batch_size, config.seed)
    iterator = iter(dataset)
    state, totals = setup.state, []
    for _ in range(30):
        batch = setup.device_batch(next(iterator))
        state, metrics = setup.train_step(state, setup.encoder_params, batch, setup.rng)
        totals.append(float(metrics["total"]))
    assert int(state.step) == 30 and np.all(np.isfinite(totals))
    assert np.mean(totals[-5:]) < 0.5 * np.mean(totals[:5]), totals


def test_float64_config_trains_in_float64():
    """--config.model.dtype=float64: parameters, Adam state and loss in float64 (x64 scoped
    here, as train.py sets it for its process); the first step's loss is the float32 run's to
    float32 rounding (same initial values, same batch)."""
    config = tiny.get_config()
    dataset, _ = input_pipeline.create_dataset(config.data, config.global_batch_size, config.seed)
    batch = next(iter(dataset))

    def first_step():
        setup = training.setup_train(config)
        state = setup.train_step(
            setup.state, setup.encoder_params, setup.device_batch(batch), setup.rng
        )
        return jax.device_get(state)

    def float_dtypes(tree):
        return {x.dtype for x in jax.tree.leaves(tree) if np.issubdtype(x.dtype, np.floating)}

    state32, metrics32 = first_step()
    config.model.dtype = "float64"
    with pytest.raises(training.TrainingError, match="enable_x64"):
        training.setup_train(config)  # without x64, float64 would silently be float32
    with jax.enable_x64(True):
        state64, metrics64 = first_step()
    assert float_dtypes((state32.params, state32.opt_state)) == {np.dtype(np.float32)}
    assert float_dtypes((state64.params, state64.opt_state)) == {np.dtype(np.float64)}
    assert metrics64["total"].dtype == np.float64 and int(state64.step) == 1
    for name in ("total", "content", "global_style", "local_style"):
        np.testing.assert_allclose(metrics64[name], metrics32[name], rtol=1e-5, err_msg=name)


def test_official_schedule_decays_per_epoch():
    config = tiny.get_config()
    config.optim.schedule = "official"
    schedule = training.learning_rate_schedule(config.optim, steps_per_epoch=10)
    lr = config.optim.lr
    for step, factor in [(0, 1), (19, 1), (20, 0.3), (29, 0.3), (30, 0.09), (40, 0.027)]:
        np.testing.assert_allclose(schedule(step), lr * factor, rtol=1e-6)


def test_batch_not_divisible_by_devices_is_a_one_line_error(tmp_path):
    config = tiny.get_config()
    config.global_batch_size = 3
    with pytest.raises(training.TrainingError, match="multiple of the device count") as error:
        training.train(config, str(tmp_path))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("vgg_path", ["", "/no/such/vgg_normalised.pth"])
def test_missing_vgg_says_where_it_comes_from(tmp_path, vgg_path):
    config = tiny.get_config()
    config.model.random_encoder = False
    config.model.vgg_path = vgg_path
    with pytest.raises(training.TrainingError) as error:
        training.train(config, str(tmp_path))
    message = str(error.value)
    assert "vgg_normalised.pth" in message and "--config.model.vgg_path" in message
    assert "AdaAttN" in message and "\n" not in message


def test_train_py_reports_user_errors_without_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--config=configs/tiny.py",
            f"--workdir={tmp_path}",
            "--config.data.content=folder:/no/such/dir",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error: data.content='folder:/no/such/dir': '/no/such/dir' is not a directory" in (
        result.stderr
    )


def test_finished_run_shows_a_sample_and_the_next_command(tmp_path, capsys, monkeypatch):
    """The end of a run: samples/sheet.png is content | style | the final checkpoint's
    stylization; the printed `infer.py` command works as printed; a re-run says it is complete."""
    import shlex

    import infer
    from flax_style import image_io, stylize

    monkeypatch.chdir(tmp_path)
    config = tiny.get_config()
    config.num_steps, config.checkpoint.every_steps = 2, 2
    config.model.init_std = 0.2  # an output far from black, so that the comparisons can fail
    training.train(config, "run")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("done: 2 steps, checkpoints in run; sample")
    assert lines[0].endswith("run/samples/sheet.png")
    command = shlex.split(lines[1].removeprefix("next: "))
    assert command[:2] == ["python", "infer.py"]
    assert infer.main(command[2:]) == 0

    content = image_io.load_image("run/samples/content.png")
    style = image_io.load_image("run/samples/style.png")
    sheet = image_io.load_image("run/samples/sheet.png")
    assert min(content.shape[:2]) == min(style.shape[:2]) == config.sample_side
    h, w = content.shape[:2]
    assert sheet.shape[0] == h and sheet.shape[1] > 2 * w
    np.testing.assert_allclose(sheet[:, :w], content, atol=1 / 255)
    expected = np.clip(stylize.load_stylizer("run").stylize(content, style), 0, 1)
    assert expected.std() > 0.1
    np.testing.assert_allclose(sheet[:, -w:], expected, atol=1 / 255 + 1e-6)
    assert np.abs(image_io.load_image("stylized.png") - expected).max() <= 1 / 255 + 1e-6

    training.train(config, "run")
    assert capsys.readouterr().out.startswith("already complete: 2 steps")
