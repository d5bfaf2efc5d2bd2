"""Shared test helpers: the repository root, config loading, tiny models and inputs, and running a script on
several simulated CPU devices.

Two tiers (markers in pyproject.toml): `python -m pytest -q -m "not slow" tests` is the loop of work (every
module touched, about 3 minutes on 2 cores); the `slow` tests are the learning run, the tests that start
several processes or a storage server, and the 8-device subprocess runs. `python -m pytest -q tests` (CI)
runs both.
"""

import importlib
import json
import os
import subprocess
import sys

import jax
import numpy as np

from fartrack_jax import model as model_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


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
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                        timeout=timeout, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])
