"""Native dataset roots on a bucket (`--root gs://...`), against the storage emulator (tests/gcs_emulator.py):
synthetic roots of every layout uploaded through etils.epath read back as the local copies do (the same
sequences and the same training examples), `build_tfds.py` from the bucket root (with and without Beam,
frames and crops) makes the local root's sets record by record, the index of a bucket root is cached on this
machine, and a bad bucket root fails with one line naming it. The emulator must have served the reads; nothing
may appear under the working directory (no `./gs:` folder).

Every client runs in a subprocess with the emulator's environment (`GcsEmulator.env`): TensorFlow's gfile
(behind etils.epath) reaches the emulator through the proxy that environment names."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines.training import packed
from data_pipelines.training import precropped
from data_pipelines.training import processing
from data_pipelines.training import synthetic_train
from tests.conftest import ROOT, assert_same_packed_set

pytestmark = pytest.mark.slow  # a storage server and subprocesses

BUCKET = "fartrack-test"
B = f"gs://{BUCKET}"
NUM_FRAMES, SIZE = 24, (64, 48)  # 24 frames: the sampler draws only from videos of at least 20
SMOKE = "configs/fartrack.py:variant=smoke"
# training name -> (synthetic layout, number of sequences (COCO: images))
LAYOUTS = {"SYNTHETIC": ("got10k_train", 3), "LASOT": ("lasot_train", 2), "TRACKINGNET": ("trackingnet_train", 2),
           "COCO17": ("coco", 1)}

_UPLOAD = r"""
import concurrent.futures, json, os, sys
from etils import epath
files = []
for local, target, _ in json.loads(sys.argv[1]):
  for folder, dirs, names in os.walk(local):
    rel = os.path.relpath(folder, local)
    if not names and not dirs:  # an empty folder (TrackingNet's unused chunks): a folder marker on the bucket
      (epath.Path(target) / rel).mkdir(parents=True, exist_ok=True)
    files += [(epath.Path(folder, n), epath.Path(target) / os.path.relpath(os.path.join(folder, n), local))
              for n in names]
with concurrent.futures.ThreadPoolExecutor(16) as pool:
  list(pool.map(lambda pair: pair[0].copy(pair[1], overwrite=True), files))
for _, target, delete in json.loads(sys.argv[1]):
  for rel in delete:  # left out of the upload
    (epath.Path(target) / rel).rmtree()
print(len(files), "files")
"""


def _env(server, home):
  # HOME: the default index cache of a bucket root (~/.cache/...) goes into the test's folder.
  return dict(os.environ, **server.env, HOME=str(home), PYTHONPATH=ROOT)


def _run(server, home, cwd, *argv, timeout=600):
  out = subprocess.run([sys.executable, *argv], cwd=str(cwd), env=_env(server, home), capture_output=True,
                       text=True, timeout=timeout)
  return out


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
  """(server, {name: local root}, {name: bucket root}, home, cwd): every layout's synthetic root made locally
  and uploaded through etils.epath, once for the module; and `broken`, a GOT-10k root on the bucket whose
  sequences are all unusable (one folder missing, one annotation malformed)."""
  from tests import gcs_emulator  # pylint: disable=g-import-not-at-top
  base = tmp_path_factory.mktemp("bucket_roots")
  server = gcs_emulator.GcsEmulator(str(base / "gcs"), BUCKET)
  home, cwd = base / "home", base / "cwd"
  home.mkdir()
  cwd.mkdir()
  try:
    local, remote = {}, {}
    for name, (layout, num_sequences) in LAYOUTS.items():
      root = str(base / layout)
      made = synthetic_train.make_synthetic_train_dataset(layout, root, num_sequences=num_sequences,
                                                          num_frames=NUM_FRAMES, size=SIZE)
      if name == "SYNTHETIC":
        with open(made[0].frames[3], "wb") as f:
          f.write(b"not an image")  # stored as it is in frames, unreadable (stored empty) in crops
        os.remove(made[1].frames[5])  # unreadable in both formats
      local[name], remote[name] = root, f"{B}/roots/{layout}"
    broken = base / "broken"
    shutil.copytree(local["SYNTHETIC"], broken)
    names = sorted(os.listdir(broken / "train"))
    (broken / "train" / names[1] / "groundtruth.txt").write_text("1,2,three,4\n")
    remote["broken"] = f"{B}/roots/broken"
    uploads = [(r, remote[n], ()) for n, r in local.items()] + [(str(broken), remote["broken"],
                                                                 (f"train/{names[0]}", f"train/{names[2]}"))]
    out = _run(server, home, cwd, "-c", _UPLOAD, json.dumps(uploads))
    assert out.returncode == 0, out.stderr[-3000:]
    yield server, local, remote, home, cwd
  finally:
    server.close()


def _crops():
  import importlib  # pylint: disable=g-import-not-at-top
  return processing.FrameProcessing.from_config(importlib.import_module("configs.fartrack").get_config(
      "variant=smoke"))


def _script(server, home, cwd, *args):
  out = _run(server, home, cwd, os.path.join(ROOT, "scripts", "build_tfds.py"), *args)
  return out


def _assert_nothing_local(cwd):
  assert os.listdir(cwd) == [], os.listdir(cwd)
  assert not os.path.exists(os.path.join(ROOT, "gs:")), "a bucket path went through os.path"


def test_build_tfds_from_a_bucket_root_makes_the_local_roots_sets(bucket, tmp_path):
  server, local, remote, home, cwd = bucket
  want = str(tmp_path / "from_local")
  packed.pack_train_dataset("SYNTHETIC", local["SYNTHETIC"], want)
  precropped.pack_precropped_dataset("SYNTHETIC", local["SYNTHETIC"], want, _crops())
  runs = {  # (format, data_dir, extra flags)
      # Beam, frames, in this process's DirectRunner; the index cache on the bucket (what remote workers read).
      "beam frames": ("frames", str(tmp_path / "beam"), ("--beam", "--beam_pipeline_options", "runner=DirectRunner",
                                                         "--cache-dir", f"{B}/index_cache")),
      # Beam, crops, in 2 worker processes (fresh interpreters, as a remote worker starts).
      "beam crops": ("crops", str(tmp_path / "beam"), ("--beam", "--beam_pipeline_options",
                                                       "runner=DirectRunner,direct_running_mode=multi_processing,"
                                                       "direct_num_workers=2")),
      # No Beam, crops cut in 2 processes; no --cache-dir: the index goes to ~/.cache on this machine.
      "crops": ("crops", str(tmp_path / "plain"), ("--num-workers", "2")),
  }
  for label, (fmt, data_dir, extra) in runs.items():
    before = server.requests()["gfile"]
    out = _script(server, home, cwd, "--dataset", "SYNTHETIC", "--root", remote["SYNTHETIC"], "--data-dir",
                  data_dir, "--format", fmt, "--config", SMOKE, *extra)
    assert out.returncode == 0, f"{label}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert f"from {remote['SYNTHETIC']}" in out.stdout and "SYNTHETIC: 3 sequences, 72 frames" in out.stdout, \
        out.stdout[-3000:]
    # The data_dir is local: every request is the root's (and the index cache's) reads.
    assert server.requests()["gfile"] - before > 3 * NUM_FRAMES, (label, server.requests())
    table = assert_same_packed_set(fmt, "SYNTHETIC", want, data_dir, ignore_table=("root",))
    assert str(table["root"]) == remote["SYNTHETIC"]
    assert int(table["unreadable_frames"]) == (1 if fmt == "frames" else 2)
  assert [n for n in server.objects("index_cache/") if n.endswith(".npz")], server.objects("index_cache/")
  cached = home / ".cache" / "fartrack_jax" / "index_cache"
  assert [n for n in os.listdir(cached) if n.startswith("SYNTHETIC-")], os.listdir(cached)
  _assert_nothing_local(cwd)


_READ = r"""
import json, os, sys
import numpy as np
from data_pipelines.training import datasets, pipeline
local, remote, broken, cache = json.loads(sys.argv[1])

def process(templates, template_boxes, search, search_box, rng):
  return {"templates": np.stack(templates), "search": search, "search_box": np.asarray(search_box),
          "draw": np.float64(rng.random()), "valid": True}

built = {}
for where, roots in (("local", local), ("remote", remote)):
  # The bucket roots without cache_dir: their index goes to ~/.cache on this machine; twice, the second from it.
  built[where] = [datasets.build_train_dataset(n, roots[n], cache if where == "local" else None) for n in roots]
again = [datasets.build_train_dataset(n, remote[n]) for n in remote]
for a, b in zip(built["local"], built["remote"]):
  assert b.root == remote[a.name] and not b.from_cache and b.cache_path.startswith(os.path.expanduser("~/.cache/"))
  assert len(a) == len(b) > 0 and a.skipped.keys() == b.skipped.keys(), (a, b)
  for s, t in zip(a, b):
    assert (s.name, s.object_class, s.is_video) == (t.name, t.object_class, t.is_video), a.name
    assert [os.path.relpath(f, a.root) for f in s.frames] == [f[len(b.root) + 1:] for f in t.frames], a.name
    for key in ("boxes", "valid", "visible"):
      np.testing.assert_array_equal(getattr(s, key), getattr(t, key), err_msg=f"{a.name} {s.name} {key}")
assert all(d.from_cache for d in again), [d.cache_path for d in again]
examples = {w: pipeline.FrameExamples(built[w], [1.0] * len(built[w]), num_templates=2, max_gap=8,
                                      process=process, seed=5) for w in built}
names = set()
for index in range(16):
  a, b = examples["local"](index), examples["remote"](index)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=f"example {index} {key}")
  names.add(a["search"].tobytes())
assert len(names) > 8, "different frames were drawn"
try:
  datasets.build_train_dataset("SYNTHETIC", broken)
except datasets.DatasetError as e:
  print("BROKEN", e)
for root in ("gs://no-such-bucket-fartrack/got10k", os.path.dirname(broken) + "/absent"):
  try:
    datasets.build_train_dataset("SYNTHETIC", root)
  except datasets.DatasetError as e:
    print("MISSING", e)
print("OK")
"""


def test_the_training_reader_over_a_bucket_root_yields_the_local_roots_samples(bucket, tmp_path):
  server, local, remote, home, cwd = bucket
  before = server.requests()["gfile"]
  args = [{n: local[n] for n in LAYOUTS}, {n: remote[n] for n in LAYOUTS}, remote["broken"], str(tmp_path / "cache")]
  (tmp_path / "home").mkdir()  # no index cached by another test
  out = _run(server, tmp_path / "home", cwd, "-c", _READ, json.dumps(args))
  assert out.returncode == 0 and "OK" in out.stdout, out.stdout[-3000:] + out.stderr[-5000:]
  assert server.requests()["gfile"] - before > 50, server.requests()  # the sequences' files and the frames
  lines = out.stdout.splitlines()
  broken = [line for line in lines if line.startswith("BROKEN ")]
  missing = [line for line in lines if line.startswith("MISSING ")]
  # Every sequence of the broken root is left out, each with its file on the bucket named; the root then fails.
  assert len(broken) == 1 and broken[0].startswith(f"BROKEN {remote['broken']}: no usable SYNTHETIC sequence (3 "
                                                   "skipped"), broken
  assert f"{remote['broken']}/train/" in broken[0] and "missing annotation file" in broken[0], broken
  assert "malformed annotation line '1,2,three,4'" in broken[0], broken
  assert missing == [
      "MISSING gs://no-such-bucket-fartrack/got10k: missing SYNTHETIC root folder: the bucket "
      "gs://no-such-bucket-fartrack does not exist or this machine's credentials cannot read it (gcloud storage ls "
      "gs://no-such-bucket-fartrack)",
      f"MISSING {B}/roots/absent: missing SYNTHETIC root folder: nothing is stored under it (gcloud storage ls "
      f"{B}/ shows what is)"], lines
  _assert_nothing_local(cwd)


def test_a_missing_bucket_root_is_one_error_line_of_build_tfds(bucket, tmp_path):
  server, _, _, home, cwd = bucket
  out = _script(server, home, cwd, "--dataset", "LASOT", "--root", f"{B}/roots/absent", "--data-dir",
                str(tmp_path / "tfds"))
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
  assert out.stderr.strip().splitlines()[-1] == (
      f"error: {B}/roots/absent: missing LASOT root folder: nothing is stored under it (gcloud storage ls {B}/ "
      "shows what is)")
  assert not (tmp_path / "tfds").exists()
  _assert_nothing_local(cwd)
