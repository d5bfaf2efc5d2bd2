"""The device mesh of evaluation (`fartrack_jax/sharding.py`) on this process's devices; the 8-device
comparison runs in tests/fartrack_jax/tracking/test_tracker_sharded.py (slow tier)."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from data_pipelines import synthetic
from fartrack_jax import sharding
from fartrack_jax.tracking import tracker as trk
from tests.conftest import init, load_config


def test_data_mesh_spans_this_process_devices_along_one_data_axis():
  mesh = sharding.data_mesh()
  assert mesh.axis_names == ("data",)
  assert list(mesh.devices.flat) == jax.local_devices()
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
  n = jax.local_device_count()
  batch = jax.device_put(np.arange(4 * n), NamedSharding(mesh, P("data")))
  assert len(batch.addressable_shards) == n and batch.addressable_shards[0].data.shape == (4,)
  assert list(sharding.data_mesh(1).devices.flat) == jax.local_devices()[:1]


def test_more_devices_than_this_process_has_is_an_error():
  with pytest.raises(ValueError, match="Number of devices"):
    sharding.data_mesh(jax.local_device_count() + 1)


def test_tracker_on_the_data_mesh_gives_the_unsharded_trackers_boxes():
  config = load_config("fartrack_sparse")
  _, params = init(config)
  frames, boxes = synthetic.render_sequence(np.random.default_rng(4), 6, (96, 72))
  seqs = [("a", list(frames), boxes[0])]
  mesh = sharding.data_mesh()
  on_mesh = trk.BatchTracker(config, params, batch=jax.local_device_count(), capacity=8, mesh=mesh)
  assert on_mesh.memory.templates.sharding.mesh.shape == mesh.shape
  expected, _ = trk.track_sequences(trk.BatchTracker(config, params, batch=1, capacity=8), seqs)["a"]
  got, _ = trk.track_sequences(on_mesh, seqs)["a"]
  assert np.ptp(expected[:, :2], axis=0).max() > 0.5  # the boxes move: not a constant to agree on
  # The same program on the same device, only annotated: float32 rounding at most (pixels).
  np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)
