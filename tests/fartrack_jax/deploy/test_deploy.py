"""Exports (ONNX, StableHLO) and the runtime tracker that needs neither JAX nor PyTorch."""

import json
import os
import subprocess
import sys

from etils import epath
import jax
import ml_collections
import numpy as np
import onnx
import pytest

from data_pipelines import synthetic
from fartrack_jax import checkpoints
from fartrack_jax import convert
from fartrack_jax import model as model_lib
from fartrack_jax import parity
from fartrack_jax.deploy import export
from fartrack_jax.deploy import metadata
from fartrack_jax.deploy import runtime
from fartrack_jax.tracking import loop
from fartrack_jax.tracking import tracker as trk
from tests.conftest import FIXTURES, ROOT, init, load_config

STAGES = ("fartrack", "fartrack_distill", "fartrack_sparse")
LOGIT_TOLERANCE = 1e-4  # fp32 parity, as scripts/parity_check.py
BOX_TOLERANCE = 0.05    # px: the runtime tracker against the JAX tracker


# ONNX export (jax2onnx) is the slow part here (~15 s a smoke model): the tests that export are in the slow tier.
# The fast tier keeps the runtime tracker's logic on the jitted forward the exports are made from
# (`_JittedNetwork`) and the refusals that stop before exporting.
@pytest.fixture(scope="module")
def smoke_exports(tmp_path_factory):
  """ONNX exports of the smoke sparse and frame-level models (random weights), with their params."""
  folder = tmp_path_factory.mktemp("exports")
  out = {}
  for stage in ("fartrack_sparse", "fartrack"):
    config = load_config(stage)
    _, params = init(config, seed=3)
    path = str(folder / f"{stage}.onnx")
    export.export_onnx(config, params, path)
    out[stage] = (config, params, path)
  return out


def _python(code, *args, env_extra=None):
  env = dict(os.environ, PYTHONPATH=ROOT, **(env_extra or {}))
  return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                        cwd=ROOT, timeout=300)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.slow
def test_onnx_export_reproduces_the_originals_outputs_on_the_parity_fixtures(stage, tmp_path):
  # The fixtures hold the original PyTorch model's outputs (reduced width, real token geometry): the ONNX
  # export of the converted weights under onnxruntime must give them to 1e-4, with identical keep masks.
  meta, state_dict, inputs, expected = parity.read_fixture(os.path.join(FIXTURES, f"parity_{stage}.npz"))
  config = ml_collections.ConfigDict(meta["overrides"])
  init_params = model_lib.init_params(model_lib.build_model(config), jax.random.key(0))
  params, _ = convert.torch_to_flax(state_dict, model_lib.ModelSpec.from_config(config), init_params)
  path = str(tmp_path / "model.onnx")
  export.export_onnx(config, params, path)
  net = runtime.OnnxNetwork(path, stage=stage)
  templates, search = inputs.normalized(config)
  logits, keep = net(templates, search, inputs.token_mask)
  theirs = {"coord_logits": expected["coord_logits"]}
  ours = {"coord_logits": logits}
  if stage == "fartrack_sparse":
    theirs["keep_masks_track"], ours["keep_masks_track"] = expected["keep_masks_track"], keep
    assert not inputs.token_mask.all()  # the fixture prunes tokens of the older templates
  result = parity.compare(theirs, ours, config, tolerance=LOGIT_TOLERANCE)
  print(result.table())
  assert result.passed, result.table()


@pytest.mark.slow
def test_onnx_metadata_holds_what_the_tracker_needs(smoke_exports):
  config, _, path = smoke_exports["fartrack_sparse"]
  model = onnx.load(path)
  meta = json.loads({p.key: p.value for p in model.metadata_props}["fartrack"])
  assert meta["stage"] == "fartrack_sparse" and meta["depth"] == config.model.depth
  assert meta["template_size"] == config.test.template_size and meta["search_factor"] == config.test.search_factor
  assert meta["track_prune_ratios"] == [0.25, 0.5, 0.75, 0.9] and meta["mean"] == list(config.data.mean)
  assert [i.name for i in model.graph.input] == ["templates", "search", "token_mask"]
  assert [o.name for o in model.graph.output] == ["coord_logits", "keep_masks"]
  batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
  assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic batch


def test_an_export_writes_over_an_earlier_one_of_the_same_name_and_a_failed_one_keeps_it(tmp_path, monkeypatch):
  # Running export_model.py again with the same --output replaces the files (it stopped with FileExistsError).
  files = {str(tmp_path / "m.onnx"): b"first", str(tmp_path / "m.onnx.json"): b"{}"}
  export._write_atomic(files)  # pylint: disable=protected-access
  export._write_atomic({path: data + b" again" for path, data in files.items()})  # pylint: disable=protected-access
  assert {p: open(p, "rb").read() for p in files} == {p: d + b" again" for p, d in files.items()}
  # A write that fails midway leaves the earlier export whole and no temporary file.
  real_write = type(epath.Path(tmp_path)).write_bytes

  def fails_on_the_metadata(self, data):
    if self.name.startswith("m.onnx.json"):
      raise OSError("disk full")
    return real_write(self, data)

  monkeypatch.setattr(type(epath.Path(tmp_path)), "write_bytes", fails_on_the_metadata)
  with pytest.raises(OSError, match="disk full"):
    export._write_atomic({path: b"third" for path in files})  # pylint: disable=protected-access
  assert {p: open(p, "rb").read() for p in files} == {p: d + b" again" for p, d in files.items()}
  assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.json"]


@pytest.mark.slow
def test_stablehlo_export_equals_the_jitted_forward_and_loads_without_model_code(tmp_path):
  config = load_config("fartrack_sparse")
  _, params = init(config, seed=1)
  path = str(tmp_path / "sparse.stablehlo")
  meta = export.export_stablehlo(config, params, path)
  assert {"cpu", "cuda", "tpu"} <= set(meta["platforms"])
  inputs = export.random_inputs(meta, batch=3, seed=2)
  np.savez(tmp_path / "inputs.npz", *inputs)
  reference = jax.jit(export.tracking_forward(config, params))(*inputs)
  # A fresh process with jax and numpy only: deserialize and call.
  code = (
      "import sys, numpy as np, jax\n"
      "exp = jax.export.deserialize(bytearray(open(sys.argv[1], 'rb').read()))\n"
      "args = [a for _, a in sorted(np.load(sys.argv[2]).items())]\n"
      "logits, keep = exp.call(*args)\n"
      "np.savez(sys.argv[3], logits=np.asarray(logits), keep=np.asarray(keep))\n"
      "assert not [m for m in sys.modules if m.startswith(('fartrack_jax', 'flax'))]\n")
  proc = _python(code, path, str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz"))
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = np.load(tmp_path / "out.npz")
  # The same XLA program on the same CPU: equal up to float32 rounding of a re-compilation.
  np.testing.assert_allclose(out["logits"], np.asarray(reference[0]), atol=1e-5)
  np.testing.assert_array_equal(out["keep"], np.asarray(reference[1]))
  exported, loaded_meta = export.load_stablehlo(path, stage="fartrack_sparse")
  assert loaded_meta["num_tokens"] == meta["num_tokens"] and exported.in_avals[0].shape[1:] == inputs[0].shape[1:]


def _synthetic_sequences(lengths, size=(96, 72)):
  out = []
  for i, length in enumerate(lengths):
    frames, boxes = synthetic.render_sequence(np.random.default_rng(20 + i), length, size)
    out.append((f"seq{i}", list(frames), boxes[0]))
  return out


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["fartrack_sparse", "fartrack"])
def test_runtime_tracker_boxes_equal_the_jax_trackers(smoke_exports, stage):
  config, params, path = smoke_exports[stage]
  seqs = _synthetic_sequences([14, 9])
  jax_tracker = trk.BatchTracker(config, params, batch=1, capacity=32)
  ours = runtime.RuntimeTracker(runtime.OnnxNetwork(path))
  for key, frames, init_box in seqs:
    expected, _ = loop.track_sequences(jax_tracker, [(key, frames, init_box)])[key]
    boxes, times = runtime.track_frames(ours, frames, init_box)
    assert boxes.shape == expected.shape == (len(frames), 4) and times.shape == (len(frames),)
    np.testing.assert_allclose(boxes, expected, atol=BOX_TOLERANCE, rtol=0, err_msg=key)
    assert np.ptp(boxes[:, :2], axis=0).max() > 1.0  # the boxes move: not a constant to agree on
    assert ours.count == len(frames) - 1  # one template per frame but the last, as the JAX tracker's memory
    if stage == "fartrack_sparse":
      # Every stored template but the newest carries the pruned mask it got while it was the newest.
      assert all(not ours.masks[i].all() for i in ours.templates if i < ours.count - 1)
      assert ours.count - 1 not in ours.masks


class _JittedNetwork:
  """The runtime tracker's network interface (`meta`, `sparse`, `net(templates, search, token_mask)`) on the
  jitted forward the ONNX file is exported from: the ONNX export of a 5-template model costs a minute here,
  and the ONNX-equals-JAX comparison is the test above's."""

  def __init__(self, config, params):
    self.meta = metadata.from_config(config)
    self.sparse = config.stage == "fartrack_sparse"
    self.forward = jax.jit(export.tracking_forward(config, params))

  def __call__(self, templates, search, token_mask=None):
    logits, keep = self.forward(templates, search, token_mask)
    return np.asarray(logits), np.asarray(keep)


@pytest.mark.slow
def test_runtime_template_memory_keeps_only_what_the_selection_can_pick_and_the_boxes_stay():
  # Five template slots (the released models' count), so the exponential selection picks from the middle
  # of the history; the JAX tracker's device memory keeps every template, so it is the unpruned reference.
  config = load_config("fartrack_sparse")
  _, params = init(config, seed=5)
  # Only `identity` has a row per template (and one for the search region): widen it instead of a second
  # initialisation (op by op, a minute of compiling on a loaded 2-core machine).
  config.data.template.number = 5
  identity = np.random.default_rng(5).normal(0, 0.02, (1, 6, config.model.embed_dim)).astype(np.float32)
  params = {**params, "identity": identity}
  [(key, frames, init_box)] = _synthetic_sequences([120])
  expected, _ = trk.track_sequences(trk.BatchTracker(config, params, batch=1, capacity=128),
                                    [(key, frames, init_box)])[key]
  ours = runtime.RuntimeTracker(_JittedNetwork(config, params))
  stored, checked = [], 0
  ours.initialize(frames[0], init_box)
  boxes = [list(ours.box)]
  for frame in frames[1:]:
    boxes.append(ours.track(frame))
    stored.append(len(ours.templates))
    # What any later frame may select: the first template and everything from the second slot's index
    # on (the slots' indices int((S - 1) * (1 - 0.7 ** i)) never decrease as S grows).
    if ours.count >= 5:
      second = int((ours.count - 1) * (1 - 0.7))
      assert sorted(ours.templates) == [0] + list(range(second, ours.count)), ours.count
      checked += 1
  np.testing.assert_allclose(np.asarray(boxes), expected, atol=BOX_TOLERANCE, rtol=0)
  assert np.ptp(np.asarray(boxes)[:, :2], axis=0).max() > 1.0
  assert checked == len(frames) - 5 and ours.count == len(frames) - 1
  # 30 % of the history is gone: 119 templates seen, 85 kept (0 and 35..118), their masks alongside.
  assert stored[-1] == 85 and max(stored) == 85
  assert set(ours.masks) == set(ours.templates) - {ours.count - 1}


@pytest.mark.slow
def test_runtime_imports_no_jax_flax_or_torch(smoke_exports, tmp_path):
  _, _, path = smoke_exports["fartrack_sparse"]
  frames, boxes = synthetic.render_sequence(np.random.default_rng(5), 6, (96, 72))
  np.save(tmp_path / "frames.npy", np.stack(frames))
  code = (
      "import sys, numpy as np\n"
      "from fartrack_jax.deploy import runtime\n"
      "frames = list(np.load(sys.argv[2]))\n"
      "tracker = runtime.RuntimeTracker(runtime.OnnxNetwork(sys.argv[1]))\n"
      f"boxes, _ = runtime.track_frames(tracker, frames, {[float(v) for v in boxes[0]]})\n"
      "assert boxes.shape == (6, 4)\n"
      "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax', 'torch', "
      "'tensorflow', 'ml_collections')))\n")
  proc = _python(code, path, str(tmp_path / "frames.npy"))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_onnx_without_tracker_metadata_or_of_another_stage_is_refused(smoke_exports, tmp_path):
  plain = onnx.helper.make_model(onnx.helper.make_graph(
      [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
      [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
      [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
  onnx.save(plain, str(tmp_path / "plain.onnx"))
  with pytest.raises(metadata.DeployError, match="has no 'fartrack' metadata"):
    runtime.OnnxNetwork(str(tmp_path / "plain.onnx"))
  _, _, frame_level = smoke_exports["fartrack"]
  with pytest.raises(metadata.DeployError, match="export of stage 'fartrack', not 'fartrack_sparse'"):
    runtime.OnnxNetwork(frame_level, stage="fartrack_sparse")
  # Metadata that claims another stage than the graph has (a sparse header on a frame-level graph).
  model = onnx.load(frame_level)
  entry = next(p for p in model.metadata_props if p.key == "fartrack")
  entry.value = json.dumps(dict(json.loads(entry.value), stage="fartrack_sparse",
                                inputs=["templates", "search", "token_mask"]))
  onnx.save(model, str(tmp_path / "relabelled.onnx"))
  with pytest.raises(metadata.DeployError, match="do not match its fartrack_sparse metadata"):
    runtime.OnnxNetwork(str(tmp_path / "relabelled.onnx"))


@pytest.mark.slow
def test_track_video_onnx_errors_are_one_line_and_write_nothing(smoke_exports, tmp_path):
  _, _, path = smoke_exports["fartrack_sparse"]
  frames, boxes = synthetic.render_sequence(np.random.default_rng(6), 4, (96, 72))
  import cv2  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "frames"  # --input: an image folder
  folder.mkdir()
  for i, frame in enumerate(frames):
    cv2.imwrite(str(folder / f"{i:04d}.png"), frame)
  box = ",".join(str(int(v)) for v in boxes[0])
  script = os.path.join(ROOT, "scripts", "track_video.py")
  plain = tmp_path / "plain.onnx"
  plain.write_bytes(b"not an onnx file")
  missing_ort = "import sys, runpy; sys.modules['onnxruntime'] = None; sys.argv = sys.argv[1:]; " \
                "runpy.run_path(sys.argv[0], run_name='__main__')"
  cases = [
      ([script, "--onnx", str(plain)], "is not a model onnxruntime can load"),
      ([script, "--onnx", path, "--config", os.path.join(ROOT, "configs", "fartrack.py")],
       "export of stage 'fartrack_sparse', not 'fartrack'"),
  ]
  for args, message in cases:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, *args, "--input", str(folder), "--init-box", box, "--output-dir",
                           str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()
  proc = _python(missing_ort, script, "--onnx", path, "--input", str(folder), "--init-box", box, "--output-dir",
                 str(tmp_path / "out"))
  assert proc.returncode == 1 and proc.stderr.strip() == "error: onnxruntime is not installed: pip install " \
      "onnxruntime==1.32.0", proc.stderr[-2000:]
  assert not (tmp_path / "out").exists()
  # And the good path: boxes.txt with one line per frame, the first being --init-box.
  proc = subprocess.run([sys.executable, script, "--onnx", path, "--input", str(folder), "--init-box", box,
                         "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT,
                        timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = (tmp_path / "out" / "boxes.txt").read_text().splitlines()
  assert len(lines) == 4 and [float(v) for v in lines[0].split(",")] == [float(v) for v in boxes[0]]
  assert (tmp_path / "out" / "tracked.mp4").stat().st_size > 0


def test_export_model_refuses_a_checkpoint_that_does_not_fit_and_writes_nothing(tmp_path):
  config = load_config("fartrack_sparse")
  _, params = init(config)
  checkpoints.save_params(str(tmp_path / "params"), params, {"stage": "fartrack_sparse", "depth": 2})
  output = tmp_path / "model.onnx"
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "scripts", "export_model.py"), "--config",
       os.path.join(ROOT, "configs", "fartrack.py") + ":variant=smoke", "--checkpoint", str(tmp_path / "params"),
       "--format", "onnx", "--output", str(output)],
      capture_output=True, text=True, cwd=ROOT, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 1, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()
  assert len(last) == 1 and last[0].startswith("error: params at")
  assert "do not fit config stage=fartrack" in last[0]
  assert not output.exists() and not list(tmp_path.glob("model.onnx*"))


@pytest.mark.skipif(not os.environ.get("FARTRACK_DEPLOY_FULL"), reason="set FARTRACK_DEPLOY_FULL=1 for the "
                    "full-size comparison (Tiny/Nano/Pico exports on a synthetic GOT-10k val; minutes)")
@pytest.mark.parametrize("variant", ["tiny", "nano", "pico"])
def test_full_size_runtime_tracker_equals_the_jax_tracker_on_a_synthetic_benchmark(variant, tmp_path):
  from data_pipelines.evaluation import load_dataset  # pylint: disable=g-import-not-at-top
  synthetic.make_synthetic_dataset("got10k", str(tmp_path / "got10k"), num_sequences=3, num_frames=30)
  sequences = load_dataset("got10k_val", str(tmp_path / "got10k"))
  config = load_config("fartrack_sparse", f"variant={variant}")
  _, params = init(config, seed=0)
  path = str(tmp_path / "model.onnx")
  export.export_onnx(config, params, path)
  jax_tracker = trk.BatchTracker(config, params, batch=1, capacity=64)
  ours = runtime.RuntimeTracker(runtime.OnnxNetwork(path))
  int8 = runtime.RuntimeTracker(runtime.OnnxNetwork(export.quantize_int8(path, str(tmp_path / "int8.onnx"))))
  worst, worst_int8 = 0.0, []
  for seq in sequences:
    expected, _ = loop.track_sequences(jax_tracker, [(seq.name, seq.frames, seq.ground_truth[0])])[seq.name]
    boxes, _ = runtime.track_frames(ours, seq.frames, seq.ground_truth[0])
    worst = max(worst, float(np.abs(boxes - expected).max()))
    worst_int8.append(np.abs(runtime.track_frames(int8, seq.frames, seq.ground_truth[0])[0] - expected))
  worst_int8 = np.concatenate(worst_int8)
  # int8 is reported, not held to a tolerance (random weights say little about a trained model's boxes).
  print(f"{variant}: max |box difference| {worst:.2e} px over {sum(len(s.frames) for s in sequences)} frames; "
        f"int8: max {worst_int8.max():.2f} px, median {np.median(worst_int8):.3f} px")
  assert worst <= BOX_TOLERANCE
