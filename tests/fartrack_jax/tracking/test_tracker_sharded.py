"""Batched evaluation sharded over 8 simulated CPU devices equals the single-device tracker.

XLA_FLAGS must be set before JAX starts, so the comparison runs in a subprocess.
"""

import textwrap

import pytest

from tests.conftest import ROOT, run_on_cpu_devices


_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {root!r})
    from configs import fartrack_sparse
    from data_pipelines import synthetic
    from fartrack_jax import model as model_lib
    from fartrack_jax.tracking import loop, tracker as trk
    assert jax.device_count() == 8, jax.devices()
    config = fartrack_sparse.get_config("variant=smoke")
    params = model_lib.init_params(model_lib.build_model(config), jax.random.key(0))
    seqs = []
    for i, n in enumerate([6, 3, 5, 4, 6, 2, 5, 3, 4, 6]):
      frames, boxes = synthetic.render_sequence(np.random.default_rng(i), n, (96, 72))
      seqs.append((f"s{{i}}", frames, boxes[0]))
    from fartrack_jax import sharding
    mesh = sharding.data_mesh(8)
    sharded = trk.BatchTracker(config, params, batch=8, capacity=16, mesh=mesh)
    assert len(sharded.memory.templates.sharding.device_set) == 8
    out_sharded = loop.track_sequences(sharded, seqs)
    out_single = loop.track_sequences(trk.BatchTracker(config, params, batch=1, capacity=16), seqs)
    diff = max(float(np.abs(out_sharded[k][0] - out_single[k][0]).max()) for k in out_single)
    print(json.dumps({{"keys": sorted(out_sharded), "max_diff": diff}}))
""")


@pytest.mark.slow
def test_sharded_batch_equals_single_device_one_at_a_time():
  result = run_on_cpu_devices(_SCRIPT.format(root=ROOT), timeout=600)
  assert result["keys"] == sorted(f"s{i}" for i in range(10))
  # Each device runs a batch-1 slice; boxes agree with the batch-1 tracker to float32 rounding (pixels).
  assert result["max_diff"] < 1e-3
