"""The training loop: resume equivalence, the NaN guard, start-time errors, and 8 devices == 1 device."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fartrack_jax import checkpoints
from fartrack_jax.training import checkpoint_manager, steps, trainer
from tests import train_fakes
from tests.conftest import ROOT, load_config, run_on_cpu_devices


@pytest.mark.slow
def test_resume_gives_the_same_params_as_an_uninterrupted_run(tmp_path):
  data_fn = train_fakes.make_data_fn()
  straight = trainer.train(train_fakes.frame_config(8), str(tmp_path / "a"), data_fn=data_fn, async_checkpoints=False)
  assert straight.step == 8 and straight.resumed_from is None
  trainer.train(train_fakes.frame_config(5), str(tmp_path / "b"), data_fn=data_fn, async_checkpoints=False)
  # Step 5 is saved at the end of the first run; the second starts there, with the data where it stopped.
  resumed = trainer.train(train_fakes.frame_config(8), str(tmp_path / "b"), data_fn=data_fn, async_checkpoints=False)
  assert resumed.resumed_from == 5 and resumed.step == 8
  params_a, _, step_a = checkpoints.load_train_params(str(tmp_path / "a"))
  params_b, meta_b, step_b = checkpoints.load_train_params(str(tmp_path / "b"))
  assert step_a == step_b == 8 and meta_b["stage"] == "fartrack"
  # Same data order, same drop-path draws, same optimizer state: identical, not merely close.
  assert train_fakes.max_abs_diff(params_a, params_b) == 0.0
  # And training changed the params (the comparison above is not between two untouched inits).
  params_5, _, _ = checkpoints.load_train_params(str(tmp_path / "b"), step=5)
  assert train_fakes.max_abs_diff(params_5, params_b) > 0


@pytest.mark.slow
def test_training_lowers_the_loss(tmp_path):
  def config_with(lr, steps_):
    config = train_fakes.frame_config(steps_, checkpoint_every_steps=100)
    config.data.train.sample_per_epoch = 256
    config.train.global_batch_size = 4
    config.train.lr = lr
    config.train.lr_drop_epoch = 100
    config.run.val_batches = 4
    return config

  data_fn = train_fakes.make_data_fn()
  trained = trainer.train(config_with(1e-3, 30), str(tmp_path / "trained"), data_fn=data_fn,
                          async_checkpoints=False)
  # lr = 0: one step that changes nothing, so its validation loss is the initial model's.
  untrained = trainer.train(config_with(0.0, 1), str(tmp_path / "init"), data_fn=data_fn, async_checkpoints=False)
  # Same fixed validation batches for both.
  assert trained.val_metrics["loss"] < 0.8 * untrained.val_metrics["loss"], (trained.val_metrics,
                                                                           untrained.val_metrics)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  """The host reads the NaN guard only where it syncs anyway (here the checkpoint of step 6: no log before
  step 100): it names step 5, the first non-finite one, and saves nothing after step 3."""
  config = train_fakes.frame_config(12, log_every_steps=100)
  batch = config.train.global_batch_size
  # Examples from index 4 * batch on are poisoned: steps 1-4 are fine, step 5 sees NaN.
  data_fn = train_fakes.make_data_fn(nan_from=4 * batch)
  with pytest.raises(trainer.NonFiniteLossError, match=r"^step 5: .*not finite.*last checkpoint is step 3"):
    trainer.train(config, str(tmp_path), data_fn=data_fn, async_checkpoints=False)
  params, _, step = checkpoints.load_train_params(str(tmp_path))
  assert step == 3
  assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(params))


def test_missing_pretrained_weights_fail_before_training(tmp_path):
  config = train_fakes.frame_config(2)
  config.model.allow_random_init = False
  config.model.pretrain_file = str(tmp_path / "mae_tiny_distill_400e.pth.tar")
  with pytest.raises(FileNotFoundError, match="model.pretrain_file=.*mae_tiny_distill_400e.pth.tar"):
    trainer.train(config, str(tmp_path / "run"), data_fn=train_fakes.make_data_fn(), async_checkpoints=False)
  assert not checkpoint_manager.TrainCheckpoints(str(tmp_path / "run" / "checkpoints"), keep=1).all_steps()


def test_empty_pretrained_path_is_refused_unless_random_init_is_allowed(tmp_path):
  config = load_config("fartrack_distill", "smoke")
  config.model.allow_random_init = False
  with pytest.raises(ValueError, match="model.pretrain_pth is empty"):
    trainer.initial_params(config, 0)


def test_bad_run_values_are_rejected_with_the_field_name():
  config = train_fakes.frame_config(2)
  config.train.global_batch_size = 0
  with pytest.raises(ValueError, match="train.global_batch_size=0"):
    trainer.train(config, "/nonexistent/never-created", data_fn=train_fakes.make_data_fn())
  with pytest.raises(ValueError, match="run.fsdp=3 does not divide"):
    steps.make_train_mesh(3, devices=[jax.devices()[0]] * 2)


_SHARDED = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    import jax, numpy as np
    assert jax.device_count() == 8
    from tests import train_fakes
    from fartrack_jax import checkpoints
    from fartrack_jax.training import steps, trainer
    mesh = steps.make_train_mesh(1)
    try:
      steps.check_global_batch(12, mesh)
      bad_batch = None
    except ValueError as e:
      bad_batch = str(e)
    out = {{"bad_batch": bad_batch}}
    for name, devices, fsdp in (("one", 1, 1), ("eight", 8, 1), ("fsdp", 8, 4)):
      config = train_fakes.frame_config(4)
      config.train.global_batch_size = 8
      config.run.fsdp = fsdp
      orig = jax.devices
      if devices == 1:
        jax.devices = lambda *a: orig(*a)[:1]
      try:
        trainer.train(config, {tmp!r} + "/" + name, data_fn=train_fakes.make_data_fn(), async_checkpoints=False)
      finally:
        jax.devices = orig
      params, _, _ = checkpoints.load_train_params({tmp!r} + "/" + name)
      out[name] = params
    diff = lambda a, b: max(float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    moved = diff(out["one"], checkpoints.load_train_params({tmp!r} + "/one", step=3)[0])
    print(json.dumps({{"bad_batch": out["bad_batch"], "eight": diff(out["one"], out["eight"]),
                      "fsdp": diff(out["one"], out["fsdp"]), "moved": moved}}))
""")


@pytest.mark.slow
def test_eight_devices_and_fsdp_equal_one_device(tmp_path):
  result = run_on_cpu_devices(_SHARDED.format(root=ROOT, tmp=str(tmp_path)))
  assert "train.global_batch_size=12 does not divide over the 8 devices" in result["bad_batch"]
  assert result["moved"] > 0
  # Same global batch, same rng: only the reduction order differs between layouts (fp32 rounding).
  assert result["eight"] < 1e-5, result
  assert result["fsdp"] < 1e-5, result


def test_stage1_starts_from_mae_weights_in_a_pth_tar(tmp_path):
  torch = pytest.importorskip("torch", reason="torch (requirements-torch.txt) reads .pth.tar files")
  from tests.fartrack_jax.test_converter import _fake_mae  # pylint: disable=g-import-not-at-top
  from fartrack_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  config = load_config("fartrack", "smoke")
  config.model.pretrain_grid = 14  # the MAE ViT's 14 x 14 positional grid, as in the real configs
  spec = model_lib.ModelSpec.from_config(config)
  mae = _fake_mae(spec, num_blocks=2, seed=3)
  path = str(tmp_path / "mae_tiny_distill_400e.pth.tar")
  torch.save({"model": {k: torch.from_numpy(v) for k, v in mae.items()}}, path)
  config.model.allow_random_init = False
  config.model.pretrain_file = path
  params, source = trainer.initial_params(config, 0)
  assert source == path
  # ViT block 0 by index; the extension block is MAE's last block (1), as the original initialises it.
  np.testing.assert_array_equal(params["layer_0"]["attn"]["qkv"]["kernel"], mae["module.blocks.0.attn.qkv.weight"].T)
  np.testing.assert_array_equal(params["layer_1"]["mlp"]["fc2"]["bias"], mae["module.blocks.1.mlp.fc2.bias"])


@pytest.mark.slow  # a training run of its own program (the probe metric): 17 s idle
def test_logged_train_metrics_are_the_means_over_each_logging_window(tmp_path):
  """`train/<metric>` at a log is the mean of that metric over the steps since the previous log: a probe metric
  (each batch's mean search pixel, computed again here from the same batches on the host) logged every 3
  steps. Float32 sums of 3 values: within 1e-6 relative."""
  config = train_fakes.frame_config(6, log_every_steps=3, checkpoint_every_steps=100)
  data_fn = train_fakes.make_data_fn()
  base_loss = trainer.default_loss_fn(config)

  def loss_fn(params, batch, rng):
    loss, metrics = base_loss(params, batch, rng)
    return loss, dict(metrics, probe=jnp.mean(batch["search"]))

  logged = {}
  trainer.train(config, str(tmp_path), data_fn=data_fn, loss_fn=loss_fn, async_checkpoints=False,
                on_log=lambda step, total, scalars: logged.setdefault(step, scalars))
  batches = iter(data_fn(config, str(tmp_path), "train", int(config.train.global_batch_size), int(config.seed)))
  probes = [float(np.mean(next(batches)["search"], dtype=np.float64)) for _ in range(6)]
  assert sorted(logged) == [3, 6]
  assert logged[3]["train/probe"] == pytest.approx(np.mean(probes[:3]), rel=1e-6)
  assert logged[6]["train/probe"] == pytest.approx(np.mean(probes[3:]), rel=1e-6)
  assert abs(np.mean(probes[:3]) - np.mean(probes[3:])) > 1e-4  # the two windows are told apart
