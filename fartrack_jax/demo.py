"""The quick start: the model end to end on this machine, from params to a decoded box."""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from fartrack_jax import checkpoints
from fartrack_jax import convert
from fartrack_jax import model as model_lib


def synthetic_crops(spec: model_lib.ModelSpec, mean, std, seed: int = 0):
  """Normalised template and search crops of a bright square on noise (template: target centred at half
  the crop; search: target at a known offset). Returns `(templates [1,T,Hz,Wz,3], search [1,Hx,Wx,3],
  true_box)` with the box as (x0, y0, x1, y1) in search-crop units."""
  rng = np.random.default_rng(seed)

  def frame(size, box):
    img = rng.integers(0, 80, (size, size, 3)).astype(np.float32)
    x0, y0, x1, y1 = (np.array(box) * size).round().astype(int)
    img[y0:y1, x0:x1] = [230, 200, 40]
    return (img / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)

  template_box = (0.25, 0.25, 0.75, 0.75)  # factor 2 crop: the target fills the central half
  true_box = (0.45, 0.40, 0.70, 0.65)      # factor 4 crop: a quarter of the side, moved off centre
  templates = np.stack([frame(spec.template_size, template_box) for _ in range(spec.num_templates)])[None]
  search = frame(spec.search_size, true_box)[None]
  return templates, search, np.array(true_box, np.float32)


def run(config, workdir: str, checkpoint: str | None = None, seed: int = 0, runs: int = 20) -> dict:
  """Builds the model for `config`, gets params (from an original `.pth.tar` via the converter, or a
  fresh init), saves them as an orbax checkpoint in `workdir`, proves the PyTorch round trip is exact
  when torch is installed, and runs the jitted forward on synthetic crops. Prints what it does."""
  os.makedirs(workdir, exist_ok=True)
  spec = model_lib.ModelSpec.from_config(config)
  net = model_lib.build_model(config)
  # A converted checkpoint gets its own folder, so a later run with another (or no) --checkpoint never
  # re-uses params made from a different source.
  params_dir = os.path.join(workdir, "params" if not checkpoint else
                            "params_" + os.path.basename(checkpoint).split(".")[0])
  print(f"[1/6] model: stage={config.stage} variant={config.variant} depth={spec.depth} "
        f"tokens={spec.num_tokens} devices={jax.devices()}")
  if os.path.isdir(params_dir):
    params, meta = checkpoints.load_params_for(params_dir, config)
    print(f"      loaded params from {params_dir} (source: {meta.get('source') or 'fresh init'})")
  elif checkpoint:
    report = convert.convert_checkpoint_to_flax(checkpoint, config, params_dir, seed=seed)
    for line in report.lines():
      print("      " + line)
    params, _ = checkpoints.load_params_for(params_dir, config)
  else:
    params = model_lib.init_params(net, jax.random.key(seed))
    checkpoints.save_params(params_dir, params, convert.metadata_for(config, "", "init"))
    print(f"      fresh random init saved to {params_dir}")
  print(f"      {model_lib.param_count(params):,} parameters")

  try:
    from fartrack_jax import torch_io  # pylint: disable=g-import-not-at-top
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (present?)
    pth = os.path.join(workdir, "fartrack_from_jax.pth.tar")
    state_dict = convert.flax_to_torch(params, spec)
    torch_io.save_state_dict(pth, state_dict)
    _, reread = torch_io.load_state_dict(pth)
    back, _ = convert.torch_to_flax(reread, spec, params)
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(params),
                                                      jax.tree_util.tree_leaves(back)))
    print(f"[2/6] PyTorch export: {len(state_dict)} keys -> {pth}; converted back: "
          f"{'bit-exact' if same else 'DIFFERENT'}")
    if not same:
      raise RuntimeError("the PyTorch round trip changed the params")
  except ImportError:
    print("[2/6] PyTorch export skipped (torch not installed: pip install -r requirements-torch.txt)")

  templates, search, true_box = synthetic_crops(spec, config.data.mean, config.data.std, seed)
  forward = jax.jit(lambda p, t, s: net.apply({"params": p}, t, s))
  start = time.perf_counter()
  out = jax.block_until_ready(forward(params, templates, search))
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    out = jax.block_until_ready(forward(params, templates, search))
    times.append((time.perf_counter() - start) * 1e3)
  box = np.asarray(model_lib.decode_boxes(out["coord_logits"], spec))[0]
  print(f"[3/6] jitted forward: compile {compile_s:.1f} s, median {np.median(times):.1f} ms over {runs} "
        f"runs (batch 1, {jax.devices()[0].platform})")
  fmt = lambda b: "(" + ", ".join(f"{v:.3f}" for v in b) + ")"
  print(f"      decoded box (x0, y0, x1, y1 in search-crop units): {fmt(box)}; the target is at "
        f"{fmt(true_box)}" + ("" if checkpoint else " (untrained weights do not find it)"))
  result = {"box": box.tolist(), "median_ms": float(np.median(times))}
  if "keep_masks" in out:
    kept = np.asarray(out["keep_masks"])[0].sum(-1).tolist()
    print(f"[4/6] keep masks of the newest template: {kept} of {spec.tokens_per_template} tokens kept "
          f"(prune ratios {list(spec.track_prune_ratios)})")
    result["kept"] = kept
  else:
    print("[4/6] (keep masks belong to the sparse stage)")
  if config.stage == "fartrack_sparse":
    note = (f"the weights of {os.path.basename(checkpoint)}" if checkpoint else "untrained weights, so near zero")
    name = "fartrack_jax" if not checkpoint else "fartrack_jax_" + os.path.basename(params_dir)[len("params_"):]
    result["scores"] = evaluate_on_synthetic(config, params, workdir, seed, note=note, name=name)
  return result


def evaluate_on_synthetic(config, params, workdir: str, seed: int = 0, labels=("[5/6]", "[6/6]"),
                          note: str = "untrained weights, so near zero", name: str = "fartrack_jax") -> dict:
  """Generates a small synthetic GOT-10k (val) set, tracks it in batches and scores it; the results of
  tracker `name` go to `<workdir>/results/got10k_val/<name>`."""
  from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
  from data_pipelines.evaluation import readers  # pylint: disable=g-import-not-at-top
  from fartrack_jax.evaluation import analysis  # pylint: disable=g-import-not-at-top
  from fartrack_jax.tracking import evaluate  # pylint: disable=g-import-not-at-top
  data_root = os.path.join(workdir, "data", "got10k")
  if not os.path.isdir(os.path.join(data_root, "val")):
    synthetic.make_synthetic_dataset("got10k", data_root, num_sequences=4, num_frames=20, seed=seed)
  sequences = readers.load_dataset("got10k_val", data_root)
  results_dir = os.path.join(workdir, "results", "got10k_val", name)
  print(f"{labels[0]} tracking {len(sequences)} synthetic GOT-10k val sequences (2 at a time) -> {results_dir}")
  evaluate.evaluate(config, params, sequences, results_dir, batch=2, log=lambda m: print("      " + m))
  scores = analysis.analyze("got10k_val", data_root, [results_dir], names=[name],
                            json_path=os.path.join(workdir, "scores.json"),
                            plots_dir=os.path.join(workdir, "plots"))
  print(f"{labels[1]} scores (GOT-10k toolkit semantics; {note}):")
  print(analysis.format_table(scores))
  return scores[name]
