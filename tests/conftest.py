"""Shared test helpers: the repository root, config loading, tiny models and inputs, and running a script on
several simulated CPU devices.

Two tiers (markers in pyproject.toml): `python -m pytest -q -m "not slow" tests` is the loop of work (every
module touched, under 3 minutes on 2 cores); the `slow` tests are the learning runs, the tests that start
several processes or a storage server, the 8-device subprocess runs, and the costliest equivalence checks of
modules that keep a cheaper test in the fast tier. `python -m pytest -q tests` (CI) runs both. Both run on two
pytest-xdist workers (`pytest_cmdline_main`), the multi-process jobs one at a time.
"""

import atexit
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import jax
import numpy as np
import pytest

from fartrack_jax import model as model_lib
from fartrack_jax.distributed import local_launcher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

# On CPU with tiny configs, compiling is most of a test's time, and many tests compile a program another one
# already compiled (the step of a resumed run, the init of the same model, the tracker of the same config).
# JAX's persistent compilation cache, in a folder of this session's (fresh each run, removed at exit), serves
# those from disk. A user's own JAX_COMPILATION_CACHE_DIR is used instead.
_CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR")
if not _CACHE:
  _CACHE = tempfile.mkdtemp(prefix="fartrack-tests-xla-cache-")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


WORKERS = 2

# The modules whose tests start the processes of a multi-process job (and time how fast a stall or a peer's
# failure is named): their tests run one after the other on one worker, never beside each other, so that two
# jobs' processes never share the two cores.
SEVERAL_PROCESSES = ("test_multihost", "test_multihost_errors", "test_multihost_gcs", "test_preemption",
                     "test_buckets_end_to_end")

# The flags this pytest process compiles with: the user's XLA_FLAGS, as the run started (a pytest-xdist
# worker inherits its controller's edited XLA_FLAGS, and reads the original from here).
_OWN_FLAGS = "FARTRACK_TESTS_OWN_XLA_FLAGS"
_LEVEL_0 = "--xla_backend_optimization_level=0"


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
  """Both tiers run on `WORKERS` pytest-xdist workers (at most one per CPU) unless `-n` says otherwise (`-n 0`:
  one process), with `--dist loadgroup`: the tests of `SEVERAL_PROCESSES` form one group that one worker runs
  in order, while the other worker takes the remaining tests one by one. Most tests are single-threaded
  compiles and tiny steps, so two workers on two cores take about 60 % of the serial time. Without
  pytest-xdist installed the tests run serially."""
  if (not config.pluginmanager.hasplugin("xdist") or getattr(config.option, "numprocesses", None) is not None
      or hasattr(config, "workerinput") or config.option.collectonly or config.getoption("usepdb", False)):
    return
  workers = min(WORKERS, os.cpu_count() or 1)
  if workers > 1:
    config.option.numprocesses, config.option.dist, config.option.tx = workers, "loadgroup", ["popen"] * workers


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if item.module.__name__.rsplit(".", 1)[-1] in SEVERAL_PROCESSES:
      item.add_marker(pytest.mark.xdist_group("several_processes"))


def pytest_configure(config):
  """Every run hands this session's compilation cache to the processes its tests start (the scripts, the
  launches of several processes, a quick start run twice, 8-device subprocesses): a test that relaunches a
  run, and every test after the first of a config and topology, loads its programs instead of compiling them
  again. The processes of one job compile the same programs under the same keys (one cache entry serves
  both), so they find them together.

  Compiling with XLA:CPU's backend optimisations off (`--xla_backend_optimization_level=0`): the programs of
  a test are compiled once and run for a few steps on tiny shapes, so LLVM's optimisation time is most of
  their cost (the fartrack training-parity replay: 40 CPU s at the default level, 25 without; a two-process
  stage-3 equality test: 94 s against 61 s).
  - The fast tier (`-m "not slow"`) compiles everything so.
  - The whole run (CI) compiles in its own pytest processes at the default level, so every in-process test
    (parity, the bit-exact compiled init, the learning run) runs on the code as users compile it; the
    processes its tests start (scripts, multi-process jobs, 8-device runs, whose subject is what the processes
    do together rather than the last ulp) compile at level 0.
  An XLA_FLAGS that already sets the level is kept everywhere.

  Runs before any test module is imported, hence before JAX starts its backend, which reads XLA_FLAGS once
  (`jax.devices()` below fixes this process's flags before they are edited for its children)."""
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  own = os.environ.setdefault(_OWN_FLAGS, os.environ.get("XLA_FLAGS", ""))
  if "xla_backend_optimization_level" in own:
    return
  if "not slow" not in (config.option.markexpr or ""):
    os.environ["XLA_FLAGS"] = own
    jax.devices()
  os.environ["XLA_FLAGS"] = f"{own} {_LEVEL_0}".strip()


def load_config(stage: str, arg: str = "variant=smoke"):
  """`configs/<stage>.py`'s `get_config(arg)`, as the scripts' `--config configs/<stage>.py:<arg>` loads it."""
  return importlib.import_module(f"configs.{stage}").get_config(arg)


def random_inputs(spec: model_lib.ModelSpec, batch: int = 2, seed: int = 0):
  rng = np.random.default_rng(seed)
  templates = rng.standard_normal(
      (batch, spec.num_templates, spec.template_size, spec.template_size, 3)).astype(np.float32)
  search = rng.standard_normal((batch, spec.search_size, spec.search_size, 3)).astype(np.float32)
  return templates, search


def init(config, seed: int = 0):
  net = model_lib.build_model(config, "float32")
  return net, model_lib.init_params(net, jax.random.key(seed))


def run_on_cpu_devices(script: str, devices: int = 8, timeout: int = 900) -> dict:
  """Runs `python -c script` from the repository root with `devices` simulated CPU devices and returns the
  JSON object its last output line prints.

  XLA_FLAGS must be set before JAX starts, hence a fresh process; the script checks `jax.device_count()`
  itself, so a run that silently got one device fails there.
  """
  env = local_launcher.cpu_devices_env(devices)
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                        timeout=timeout, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def packed_builder(fmt: str) -> tuple[str, str]:
  """(tfds builder name, version) of the sets `build_tfds.py --format fmt` makes ("frames" or "crops")."""
  from data_pipelines.training import packed, precropped  # pylint: disable=g-import-not-at-top
  if fmt == "crops":
    return precropped.BUILDER_NAME, precropped.DATASET_VERSION
  return packed.BUILDER_NAME, packed.DATASET_VERSION


def assert_same_packed_set(fmt: str, name: str, want_dir, got_dir, ignore_table: tuple[str, ...] = ()) -> dict:
  """Two builds of the training set `name` (`fmt` "frames" or "crops") under the tfds data dirs `want_dir`
  and `got_dir` hold the same records in the same order and the same sequence table (`sequences.npz`), but
  for the table fields in `ignore_table`; returns `got_dir`'s table."""
  import io  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from data_pipelines.training import packed  # pylint: disable=g-import-not-at-top
  builder, version = packed_builder(fmt)
  want, got = (tfds.data_source(f"{builder}/{packed.config_name(name)}:{version}", split="train", data_dir=d,
                                download=False) for d in (want_dir, got_dir))
  assert len(got) == len(want) > 0
  for index in range(len(want)):
    a, b = want[index], got[index]
    assert a.keys() == b.keys(), index
    for key in a:
      np.testing.assert_array_equal(b[key], a[key], err_msg=f"{fmt} record {index} {key}")
  tables = []
  for data_dir in (want_dir, got_dir):
    data = (packed.packed_path(name, data_dir, builder, version) / packed.SEQUENCES_FILE).read_bytes()
    with np.load(io.BytesIO(data)) as npz:
      tables.append({k: npz[k] for k in npz.files})
  assert tables[0].keys() == tables[1].keys()
  for key in tables[0]:
    if key not in ignore_table:
      np.testing.assert_array_equal(tables[1][key], tables[0][key], err_msg=f"{fmt} table {key}")
  return tables[1]
