"""scripts/benchmark_train.py: a smoke row end to end on two CPU devices (numbers checked against a FLOP count
made by hand), the flags, config-name errors, the stage-3 hook, and the random batches."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fartrack_jax.distributed import local_launcher
from fartrack_jax.training import stages
from scripts.benchmarks import training as train_benchmark
from tests.conftest import ROOT, load_config

SCRIPT = os.path.join(ROOT, "scripts", "benchmark_train.py")
FIELDS = ("config", "variant", "stage", "batch", "dtype", "device", "num_devices", "compile_s", "median_ms",
          "min_ms", "samples_per_s", "flops_per_step", "achieved_tflops", "peak_fraction", "peak_memory_mb")


def _script(*args, devices=None):
  env = local_launcher.cpu_devices_env(devices) if devices else dict(os.environ)
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                        timeout=300)


def _hand_matmul_flops(config, batch):
  """Matmul FLOPs (2 per multiply-add) of one train step, counted from the architecture by hand.

  Forward, per sample with N tokens (patches + 4 command tokens) of width D: the patch embedding
  (16*16*3 -> D per patch); each block but the last: qkv (3 D^2), projection (D^2), MLP (2 * mlp_ratio *
  D^2) per token and attention scores + weighted sum (2 N^2 D); the last block only needs the 4 command
  tokens' outputs: qkv for all N tokens, attention of 4 queries, projection and MLP of 4 tokens; the logits
  of the 4 command tokens (D -> vocab). Backward = twice the forward (input and weight gradients), except
  the patch embedding, whose input (the images) needs no gradient.
  """
  m, d = config.model, config.data
  dim, p, mlp = m.embed_dim, m.patch_size, m.mlp_ratio
  patches = d.template.number * (d.template.size // p) ** 2 + (d.search.size // p) ** 2
  tokens = patches + 4
  vocab = m.bins * m.range + 5
  block = 2 * (tokens * (4 + 2 * mlp) * dim ** 2 + 2 * tokens ** 2 * dim)
  last = 2 * (tokens * 3 * dim ** 2 + 2 * 4 * tokens * dim + 4 * (1 + 2 * mlp) * dim ** 2)
  patch_embed = 2 * patches * p * p * 3 * dim
  logits = 2 * 4 * dim * vocab
  return batch * (3 * ((m.depth - 1) * block + last + logits) + 2 * patch_embed)


@pytest.mark.slow
def test_smoke_row_on_two_devices_writes_every_field(tmp_path):
  out = tmp_path / "rows.json"
  result = _script("--configs", "fartrack:smoke", "--steps", "2", "--warmup", "1", "--fsdp", "2",
                   "--json", str(out), devices=2)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = json.loads(out.read_text())
  assert len(rows) == 1
  row = rows[0]
  assert not [f for f in FIELDS if f not in row]
  config = load_config("fartrack", "smoke")
  assert (row["config"], row["variant"], row["stage"], row["dtype"]) == ("fartrack:smoke", "smoke",
                                                                          "fartrack", "float32")
  # Default batch of the smoke variant: its config's global batch.
  assert row["batch"] == config.train.global_batch_size
  assert row["num_devices"] == 2 and row["fsdp"] == 2 and row["steps"] == 2
  assert row["device"].startswith("cpu: 2 x ")
  assert row["compile_s"] > 0 and 0 < row["min_ms"] <= row["median_ms"]
  # samples/s is the global batch over the median step time.
  assert math.isclose(row["samples_per_s"], row["batch"] / (row["median_ms"] / 1e3), rel_tol=1e-9)
  # No loops with matmuls in stages 1-2: the reported count is XLA's.
  expected = _hand_matmul_flops(config, row["batch"])
  assert row["flops_source"] == "xla_cost_analysis" and row["flops_per_step"] == row["xla_flops_per_step"]
  assert not row["flops_lower_bound"]
  # The jaxpr's matmul count is over global shapes and must match the hand count exactly (integers).
  assert row["matmul_flops_per_step"] == expected
  # XLA counts one device's share of the SPMD program, so the row must add up both devices' shares; its
  # count adds element-wise work (norms, softmax, GELU, AdamW, the replicated update on each device) to the
  # matmuls: 1.2-1.4x here. Counting one device only would give ~0.65x.
  assert expected <= row["flops_per_step"] <= 1.6 * expected, (row["flops_per_step"], expected)
  assert math.isclose(row["achieved_tflops"], row["flops_per_step"] / (row["median_ms"] / 1e3) / 1e12,
                      rel_tol=1e-9)
  assert row["peak_fraction"] is None  # CPU: no peak to compare against.
  assert row["peak_memory_mb"] > 0 and row["peak_memory_source"] == "process_max_rss"
  assert row["finite"] and np.isfinite(row["final_loss"])
  assert "fartrack:smoke" in result.stdout and "median_ms" in result.stdout  # the table


def test_help_lists_every_flag():
  result = _script("--help")
  assert result.returncode in (0, 1), result.stderr  # absl's --help exits with status 1 after printing
  assert "Traceback" not in result.stderr
  for flag in ("--configs", "--batch", "--steps", "--warmup", "--dtype", "--json", "--fsdp", "--clip_lengths"):
    assert flag in result.stdout, flag


def test_unknown_config_name_is_a_usage_error_naming_it():
  result = _script("--configs", "fartrack:smoke,fartrak:tiny")
  assert result.returncode != 0
  assert "'fartrak:tiny'" in result.stderr and "unknown config 'fartrak'" in result.stderr
  assert "fartrack_distill" in result.stderr  # the allowed names
  assert "Traceback" not in result.stderr
  assert "compiling" not in result.stdout  # checked before the first row ran


@pytest.mark.slow
def test_batch_that_does_not_split_over_the_devices_is_a_usage_error():
  result = _script("--configs", "fartrack:smoke", "--batch", "3", devices=2)
  assert result.returncode != 0
  assert "a global batch of 3 does not split over the 2 local devices" in result.stderr
  assert "Traceback" not in result.stderr


def test_bad_variant_and_batch_fail_before_anything_runs():
  with pytest.raises(ValueError, match=r"'fartrack:variant=huge'.*unknown variant 'huge'"):
    train_benchmark.plan_rows(["fartrack:smoke", "fartrack:variant=huge"])
  with pytest.raises(ValueError, match="--batch=0"):
    train_benchmark.plan_rows(["fartrack:smoke"], batch=0)
  with pytest.raises(ValueError, match=r"--fsdp=3 does not divide the \d+ local devices"):
    train_benchmark.plan_rows(["fartrack:smoke"], fsdp=3)
  with pytest.raises(ValueError, match="--configs is empty"):
    train_benchmark.plan_rows([])


def test_batch_defaults_and_overrides():
  rows = train_benchmark.plan_rows(["fartrack:smoke", "fartrack_distill:tiny"], dtype="bfloat16")
  assert [r.batch for r in rows] == [2, 32]
  assert [r.config.dtype for r in rows] == ["bfloat16", "bfloat16"]
  assert rows[1].config.stage == "fartrack_distill" and rows[1].config.model.depth == 15
  assert [r.batch for r in train_benchmark.plan_rows(["fartrack:smoke"], batch=8)] == [8]
  sparse = train_benchmark.plan_rows(["fartrack_sparse:smoke"], clip_lengths=[8, 16, 32])
  assert [(r.batch, r.clip_length) for r in sparse] == [(2, 8), (2, 16), (2, 32)]
  assert train_benchmark.plan_rows(["fartrack_sparse:smoke"])[0].clip_length == 4  # data.search.number


@pytest.mark.slow
def test_stage3_rows_use_the_sparse_modules_loss_and_clip_spec(monkeypatch):
  calls = {}

  def clip_batch_spec(config, batch_size, clip_length):
    calls["spec"] = (config.stage, batch_size, clip_length)
    return {"search_frames": jax.ShapeDtypeStruct((batch_size, clip_length, 8, 8, 3), jnp.uint8)}

  def sequence_loss_fn(config):
    def loss_fn(params, batch, rng):
      del rng
      calls["frames"] = batch["search_frames"].shape
      squares = sum(jnp.sum(p ** 2) for p in jax.tree_util.tree_leaves(params))
      frames = batch["search_frames"].astype(jnp.float32).reshape(2, 3, -1)  # [B, S, 192]

      def frame_gram(total, frame):  # [B, 192] @ [192, B]: 2 * 2 * 192 * 2 = 1536 FLOPs per frame
        return total + jnp.sum(frame @ frame.T), None

      gram, _ = jax.lax.scan(frame_gram, 0.0, jnp.moveaxis(frames, 1, 0))
      return 1e-3 * squares + 1e-9 * gram, {"squares": squares}
    return loss_fn

  monkeypatch.setattr(train_benchmark.sparse, "sequence_loss_fn", sequence_loss_fn)
  monkeypatch.setattr(train_benchmark.sparse, "clip_batch_spec", clip_batch_spec)
  rows = train_benchmark.run_benchmarks(["fartrack_sparse:smoke"], batch=2, steps_timed=1, warmup=0,
                                        clip_lengths=[3], log=lambda s: None)
  assert calls == {"spec": ("fartrack_sparse", 2, 3), "frames": (2, 3, 8, 8, 3)}
  assert len(rows) == 1
  assert (rows[0]["stage"], rows[0]["clip_length"], rows[0]["batch"]) == ("fartrack_sparse", 3, 2)
  assert rows[0]["median_ms"] > 0 and rows[0]["finite"]
  # The only matmuls are the 3 frames' grams, inside a scan: XLA would count the body once, so the row
  # reports the jaxpr count, 3 * 1536 (no gradient flows into the frames).
  assert rows[0]["flops_source"] == "jaxpr_matmuls" and rows[0]["flops_per_step"] == 3 * 1536


def test_random_frame_batch_has_valid_box_tokens():
  config = load_config("fartrack", "smoke")  # bins 16 x range 2 = 32 coordinate classes
  spec = stages.batch_spec(config, 64)
  batch = train_benchmark.random_batch(spec, config, seed=3)
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {k: (s.shape, np.dtype(s.dtype))
                                                                for k, s in spec.items()}
  tokens = batch["target_tokens"]
  assert tokens.min() >= 0 and tokens.max() < 32
  assert np.all(tokens[:, 0] < tokens[:, 2]) and np.all(tokens[:, 1] < tokens[:, 3])
  # The box is the tokens' corners: token / (bins - 1) - (range / 2 - 0.5) = token / 15 - 0.5.
  np.testing.assert_allclose(batch["search_box"], tokens / 15.0 - 0.5, rtol=1e-6)
  assert len(np.unique(tokens[:, 0])) > 5  # not one constant box


def test_random_clip_batch_boxes_lie_inside_the_canvas():
  config = load_config("fartrack_sparse", "smoke")
  u8, f32, i32 = jnp.uint8, jnp.float32, jnp.int32
  spec = {"search_frames": jax.ShapeDtypeStruct((2, 4, 96, 80, 3), u8),
          "search_boxes": jax.ShapeDtypeStruct((2, 4, 4), f32),
          "search_sizes": jax.ShapeDtypeStruct((2, 4, 2), i32)}
  batch = train_benchmark.random_batch(spec, config)
  assert batch["search_frames"].dtype == np.uint8 and batch["search_frames"].max() > 200
  np.testing.assert_array_equal(batch["search_sizes"], np.broadcast_to([96, 80], (2, 4, 2)))  # (h, w)
  x, y, w, h = np.moveaxis(batch["search_boxes"], -1, 0)
  assert np.all(w >= 0.1 * 80) and np.all(h >= 0.1 * 96)
  assert np.all(x >= 0) and np.all(y >= 0) and np.all(x + w <= 80) and np.all(y + h <= 96)


def test_matmul_flops_multiply_scan_bodies_and_flag_while_loops():
  def step(x, w):  # x [4, 8], w [8, 8]: one x @ w is 2 * 4 * 8 * 8 = 512 FLOPs
    y, _ = jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=5)
    y = jax.lax.cond(y[0, 0] > 0, lambda v: v @ w @ w, lambda v: v, y)
    return jax.lax.while_loop(lambda c: c[0, 0] < 0, lambda c: c @ w, y)

  count = train_benchmark.matmul_flops(jax.make_jaxpr(step)(jnp.ones((4, 8)), jnp.ones((8, 8))))
  # scan: 5 * 512; cond: its costlier branch, 2 * 512; while: its body once, 512.
  assert count.flops == 5 * 512 + 2 * 512 + 512
  assert count.in_loops and count.unbounded

  plain = train_benchmark.matmul_flops(jax.make_jaxpr(lambda a, b: a @ b)(jnp.ones((3, 5)), jnp.ones((5, 7))))
  assert (plain.flops, plain.in_loops, plain.unbounded) == (2 * 3 * 5 * 7, False, False)


def test_peak_table_picks_the_most_specific_kind():
  peak = train_benchmark.peak_tflops
  assert peak("NVIDIA H100 80GB HBM3", "gpu", "bfloat16") == 989.4
  assert peak("NVIDIA H100 PCIe", "gpu", "bfloat16") == 756.0
  assert peak("NVIDIA A100-SXM4-40GB", "gpu", "float32") == 156.0  # TF32, JAX's default on Ampere
  assert peak("TPU v5 lite", "tpu", "bfloat16") == 197.0  # v5e, not v5p's 459
  assert peak("TPU v5", "tpu", "bfloat16") == 459.0
  assert peak("cpu", "cpu", "float32") is None
  assert peak("Some Future GPU", "gpu", "bfloat16") is None


@pytest.mark.slow
def test_trainer_overhead_row_takes_the_median_over_windows():
  """The bare loop and the trainer each time `windows` windows, in pairs; the trainer's first logged window
  (its compile) is not one of them: a trainer figure including the compile would be seconds per step. The
  overhead is the median of the pairs' ratios."""
  row = train_benchmark.plan_rows(["fartrack:smoke"], batch=2, dtype="float32", clip_lengths=[], fsdp=1)[0]
  got = train_benchmark.overhead_row(row, steps_timed=3, warmup=1, windows=3)
  assert got["windows"] == 3 and got["steps"] == 3
  assert len(got["window_bare_ms"]) == len(got["window_trainer_ms"]) == 3
  assert 0 < got["bare_ms"] < 1000 and 0 < got["trainer_ms"] < 1000, got
  assert got["bare_ms"] == sorted(got["window_bare_ms"])[1]
  assert got["trainer_ms"] == sorted(got["window_trainer_ms"])[1]
  ratios = sorted(100 * (t / b - 1) for t, b in zip(got["window_trainer_ms"], got["window_bare_ms"]))
  assert math.isclose(got["overhead_pct"], ratios[1])
