"""Shared test helpers: config loading and tiny inputs."""

import importlib

import jax
import numpy as np

from fartrack_jax import model as model_lib


def load_config(stage: str, arg: str = "variant=smoke"):
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
