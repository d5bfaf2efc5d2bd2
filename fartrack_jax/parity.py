"""Numerical parity against the original PyTorch FARTrack, imported at run time from a user's checkout.

Nothing of the original is part of this project: `load_original` puts the user's checkout on `sys.path`
and builds its model. What the original needs to run on a CPU-only machine is arranged here, in this
process only, without touching the checkout:
  - `torch.Tensor.cuda` / `torch.nn.Module.cuda` become no-ops (the original calls `.cuda()` in places);
  - if `torchvision` is not importable (there is no CPU build of it for every platform), a placeholder
    module is registered: timm's layer helpers import it, and nothing FARTrack's model uses comes from it;
    the same for `visdom`, the tracker's debug viewer;
  - `torch._six` (removed from newer torch; the original's data code imports it) is provided.
The checkout's own dependencies must be importable: `timm` (installed with `--no-deps`), `easydict`,
`pyyaml`, `einops`, and for the tracker `matplotlib` and `jpeg4py` (see README, "Parity with the original").
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
import tempfile
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fartrack_jax import convert
from fartrack_jax import model as model_lib
from fartrack_jax import torch_io

STAGE_CLASSES = {"fartrack": "FARTrack", "fartrack_distill": "FARTrackDistill",
                 "fartrack_sparse": "FARTrackSparse"}
LOGIT_TOLERANCE = 1e-4  # fp32, max abs difference of coordinate logits


class _PlaceholderMeta(type):
  """Class attributes (e.g. `InterpolationMode.NEAREST`) resolve to harmless distinct strings."""

  def __getattr__(cls, name):
    if name.startswith("__"):
      raise AttributeError(name)
    return name.lower()


class _Placeholder(metaclass=_PlaceholderMeta):
  def __init__(self, *args, **kwargs):
    pass

  def __class_getitem__(cls, item):
    return cls


class _PlaceholderModule(types.ModuleType):
  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    return type(name, (_Placeholder,), {})


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Creates the named packages and any of their submodules on demand as placeholder modules."""

  def __init__(self, names):
    self.names = tuple(names)

  def find_spec(self, fullname, path, target=None):
    if any(fullname == n or fullname.startswith(n + ".") for n in self.names):
      return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
    return None

  def create_module(self, spec):
    module = _PlaceholderModule(spec.name)
    module.__path__ = []
    module.__version__ = "0.0.0-placeholder"
    return module

  def exec_module(self, module):
    pass


def prepare_cpu_runtime() -> None:
  """The in-process adjustments listed in the module docstring. Idempotent."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.Tensor.cuda = lambda self, *a, **k: self
  torch.nn.Module.cuda = lambda self, *a, **k: self
  if "torch._six" not in sys.modules:
    sys.modules["torch._six"] = types.SimpleNamespace(string_classes=(str, bytes))
  missing = []
  for name in ("torchvision", "visdom"):  # visdom: the tracker's debug viewer, imported, never used here
    try:
      importlib.import_module(name)
    except Exception:  # pylint: disable=broad-except
      sys.modules.pop(name, None)
      missing.append(name)
  if missing and not any(isinstance(f, _PlaceholderFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _PlaceholderFinder(missing))


def _original_config(torch_repo: str, stage: str):
  cfg_module = importlib.import_module(f"lib.config.{stage}.config")
  yamls = sorted(glob.glob(os.path.join(torch_repo, "experiments", stage, "*.yaml")))
  if not yamls:
    raise FileNotFoundError(f"no experiments/{stage}/*.yaml in {torch_repo}")
  cfg_module.update_config_from_file(yamls[0])
  return cfg_module.cfg


def load_original(torch_repo: str, config, seed: int = 0):
  """Builds the original model matching `config` (stage, width, blocks, depth) with random weights.

  The original always builds 12 blocks + 3 extension blocks at width 192; for other shapes (the reduced
  CI fixtures) its `VisionTransformer` is constructed directly with our config's sizes, and for a
  truncated depth (Nano/Pico) the module lists are cut, which is what the original's commented-out
  `break` in the block loop does.
  """
  torch_repo = os.path.abspath(torch_repo)
  if not os.path.isdir(os.path.join(torch_repo, "lib", "models", config.stage)):
    raise FileNotFoundError(f"{torch_repo} does not look like a FARTrack checkout "
                            f"(no lib/models/{config.stage})")
  if torch_repo not in sys.path:
    sys.path.insert(0, torch_repo)
  prepare_cpu_runtime()
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  stage = config.stage
  cfg = _original_config(torch_repo, stage)
  m = config.model
  cfg.MODEL.BINS, cfg.MODEL.RANGE = m.bins, m.range
  cfg.DATA.TEMPLATE.SIZE, cfg.DATA.SEARCH.SIZE = config.data.template.size, config.data.search.size
  vit = importlib.import_module(f"lib.models.{stage}.vit")
  kwargs = dict(patch_size=m.patch_size, embed_dim=m.embed_dim, depth=m.num_blocks, num_heads=m.num_heads,
                bins=m.bins, range_time=m.range, extension=m.extension, drop_path_rate=0.0)
  if stage == "fartrack_sparse":
    kwargs["prenum"] = m.prenum
  backbone = vit.VisionTransformer(img_size=m.pretrain_grid * m.patch_size, **kwargs)
  # base_backbone hard-codes img_size [224, 224] (the MAE 14x14 grid) for finetune_track's resize; the
  # same for Tiny, the reduced grid of the smoke configs otherwise.
  backbone.img_size = [m.pretrain_grid * m.patch_size] * 2
  backbone.finetune_track(cfg=cfg, patch_start_index=1)
  blocks_kept = min(m.depth, m.num_blocks)
  ext_kept = max(0, m.depth - m.num_blocks)
  wrapper_module = importlib.import_module(f"lib.models.{stage}.{stage}")
  net = getattr(wrapper_module, STAGE_CLASSES[stage])(backbone)
  if net.identity.shape[-1] != m.embed_dim:  # the wrapper hard-codes width 192
    net.identity = torch.nn.Parameter(torch.randn(1, config.data.template.number + 1, m.embed_dim) * 0.02)
  truncate_original(net, blocks_kept, ext_kept)
  net.eval()
  return net


def truncate_original(net, blocks_kept: int, ext_kept: int) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  bb = net.backbone
  bb.blocks = torch.nn.Sequential(*list(bb.blocks)[:blocks_kept])
  bb.extension = torch.nn.Sequential(*list(bb.extension)[:ext_kept])


def load_original_weights(net, state_dict: dict[str, np.ndarray], stage: str) -> None:
  """Loads a checkpoint into the original model as its builders do (sparse: the normN -> masknormN remap)."""
  import torch  # pylint: disable=g-import-not-at-top
  sd = convert.strip_prefixes(state_dict)
  if stage == "fartrack_sparse":
    convert.add_masknorm_from_norm(sd)
  own = net.state_dict()
  tensors = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in sd.items() if k in own}
  net.load_state_dict(tensors, strict=False)


@dataclasses.dataclass
class Inputs:
  """Uint8 frames (what a tracker crops) and the key masks; normalised identically on both sides."""
  templates_u8: np.ndarray  # [B, T, Hz, Wz, 3]
  search_u8: np.ndarray     # [B, Hx, Wx, 3]
  token_mask: np.ndarray    # [B, N] bool

  def normalized(self, config):
    mean = np.asarray(config.data.mean, np.float32) * 255.0
    std = np.asarray(config.data.std, np.float32) * 255.0
    return ((self.templates_u8.astype(np.float32) - mean) / std,
            (self.search_u8.astype(np.float32) - mean) / std)


def make_inputs(config, seed: int, batch: int = 2) -> Inputs:
  """Random crops and, for the sparse stage, a key mask pruning a quarter of the older templates' tokens
  (the shape of mask the tracker builds)."""
  spec = model_lib.ModelSpec.from_config(config)
  rng = np.random.default_rng(seed)
  t, z, x = spec.num_templates, spec.template_size, spec.search_size
  # 16 grey levels over 0..255: as random as the model cares about, and half the bytes in a fixture.
  templates = (rng.integers(0, 16, (batch, t, z, z, 3)) * 17).astype(np.uint8)
  search = (rng.integers(0, 16, (batch, x, x, 3)) * 17).astype(np.uint8)
  mask = np.ones((batch, spec.num_tokens), bool)
  p = spec.tokens_per_template
  for b in range(batch):
    for slot in range(t - 1):
      pruned = rng.choice(p, size=p // 4, replace=False)
      mask[b, slot * p + pruned] = False
  return Inputs(templates, search, mask)


def run_original(net, config, inputs: Inputs) -> dict[str, np.ndarray]:
  """The original's outputs, batch-first like ours: coord_logits [B,4,V], layer_logits {layer: [B,4,V]},
  keep_masks_track [B,4,P_z], keep_masks_train [B,N] (sparse)."""
  import torch  # pylint: disable=g-import-not-at-top
  spec = model_lib.ModelSpec.from_config(config)
  templates, search = inputs.normalized(config)
  z = [torch.from_numpy(np.ascontiguousarray(templates[:, i].transpose(0, 3, 1, 2)))
       for i in range(spec.num_templates)]
  x = torch.from_numpy(np.ascontiguousarray(search.transpose(0, 3, 1, 2)))
  b = x.shape[0]
  commands = torch.tensor([spec.command_tokens] * b, dtype=torch.float32)
  out = {}
  with torch.no_grad():
    if config.stage == "fartrack_sparse":
      n = spec.num_tokens
      mask3 = torch.from_numpy(inputs.token_mask)[:, None, :].expand(b, n, n).contiguous()
      track = net(template=z, search=x, seq_input=commands, stage="inference", mask=mask3)
      out["coord_logits"] = track["feat"].permute(1, 0, 2).numpy()
      out["keep_masks_track"] = np.stack([m.numpy() for m in track["mask"]], axis=1)
      train = net(template=z, search=x, seq_input=commands, stage="forward_pass",
                  mask=torch.ones(b, n, n, dtype=torch.bool))
      out["coord_logits_all_visible"] = train["feat"].permute(1, 0, 2).numpy()
      out["keep_masks_train"] = train["mask"][:, 0, :].numpy()
    else:
      res = net(template=z, search=x, seq_input=commands)
      out["coord_logits"] = res["feat"].permute(1, 0, 2).numpy()
      if config.stage == "fartrack_distill":
        m = config.model
        layers = [j for j in range(min(m.depth, m.num_blocks)) if j in range(4, 12)]
        layers += [m.num_blocks + i for i in range(max(0, m.depth - m.num_blocks)) if i in (0, 1)]
        for layer, logits in zip(layers, res["extra_list"]):
          out[f"layer_logits_{layer}"] = logits.permute(1, 0, 2).numpy()
        out[f"layer_logits_{m.depth - 1}"] = out["coord_logits"]
  return out


def run_ours(params, config, inputs: Inputs) -> dict[str, np.ndarray]:
  """Our model's outputs in the layout of `run_original`."""
  net = model_lib.build_model(config, dtype="float32")
  templates, search = inputs.normalized(config)
  apply = jax.jit(lambda p, t, s, m, mode: net.apply({"params": p}, t, s, token_mask=m, prune_mode=mode),
                  static_argnums=4)
  out = {}
  if config.stage == "fartrack_sparse":
    track = apply(params, templates, search, inputs.token_mask, "track")
    out["coord_logits"] = np.asarray(track["coord_logits"])
    out["keep_masks_track"] = np.asarray(track["keep_masks"])
    train = apply(params, templates, search, np.ones_like(inputs.token_mask), "train")
    out["coord_logits_all_visible"] = np.asarray(train["coord_logits"])
    out["keep_masks_train"] = np.asarray(train["keep_masks"])
  else:
    res = apply(params, templates, search, None, "track")
    out["coord_logits"] = np.asarray(res["coord_logits"])
    if config.stage == "fartrack_distill":
      for layer, logits in zip(config.model.logit_layers, np.asarray(res["layer_logits"])):
        out[f"layer_logits_{layer}"] = logits
      out[f"layer_logits_{config.model.depth - 1}"] = out["coord_logits"]
  return out


def decode_numpy(coord_logits: np.ndarray, config) -> np.ndarray:
  spec = model_lib.ModelSpec.from_config(config)
  return np.asarray(model_lib.decode_boxes(jnp.asarray(coord_logits), spec))


@dataclasses.dataclass
class Comparison:
  rows: list[tuple[str, str, float, float]]  # (name, kind, max_abs, mean_abs)
  passed: bool

  def table(self) -> str:
    lines = [f"{'output':36s} {'kind':7s} {'max |diff|':>12s} {'mean |diff|':>12s}"]
    for name, kind, mx, mean in self.rows:
      lines.append(f"{name:36s} {kind:7s} {mx:12.3e} {mean:12.3e}")
    lines.append(f"tolerance: logits max |diff| <= {LOGIT_TOLERANCE:g} (fp32); keep masks identical")
    lines.append("PASS" if self.passed else "FAIL")
    return "\n".join(lines)


def compare(theirs: dict[str, np.ndarray], ours: dict[str, np.ndarray], config,
            tolerance: float = LOGIT_TOLERANCE) -> Comparison:
  rows, passed = [], True
  missing = sorted(set(theirs) ^ set(ours))
  if missing:
    raise ValueError(f"outputs differ in kind: {missing}")
  for name in sorted(theirs):
    a, b = np.asarray(theirs[name]), np.asarray(ours[name])
    if a.shape != b.shape:
      raise ValueError(f"{name}: original shape {a.shape}, ours {b.shape}")
    if name.startswith("keep_masks"):
      diff = float(np.sum(a != b))
      rows.append((name, "mismatches", diff, diff / a.size))
      passed &= diff == 0
    else:
      d = np.abs(a.astype(np.float64) - b)
      rows.append((name, "logits", float(d.max()), float(d.mean())))
      passed &= float(d.max()) <= tolerance
      if name.startswith("coord_logits"):
        boxes = np.abs(decode_numpy(a, config).astype(np.float64) - decode_numpy(b, config))
        rows.append((name.replace("coord_logits", "boxes"), "boxes", float(boxes.max()), float(boxes.mean())))
  return Comparison(rows, passed)


def run_parity(torch_repo: str, config, checkpoint: str | None = None, seed: int = 0,
               allow_pickle: bool = False, batch: int = 2) -> Comparison:
  """Builds the original (random init from `seed`, or `checkpoint`), converts it through our converter
  from a `.pth.tar` file, runs both on the same inputs and compares."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(max(1, os.cpu_count() or 1))
  net = load_original(torch_repo, config, seed)
  spec = model_lib.ModelSpec.from_config(config)
  init = model_lib.init_params(model_lib.build_model(config, "float32"), jax.random.key(seed))
  with tempfile.TemporaryDirectory() as tmp:
    if checkpoint is None:
      checkpoint = os.path.join(tmp, "random_init.pth.tar")
      torch_io.save_state_dict(checkpoint, {k: v.numpy() for k, v in net.state_dict().items()})
    _, sd = torch_io.load_state_dict(checkpoint, allow_pickle=allow_pickle)
    load_original_weights(net, sd, config.stage)
    params, report = convert.torch_to_flax(sd, spec, init)
  for line in report.lines():
    print("converter:", line)
  inputs = make_inputs(config, seed, batch)
  return compare(run_original(net, config, inputs), run_ours(params, config, inputs), config)


def original_param_shapes(torch_repo: str, config, seed: int = 0) -> dict[str, list[int]]:
  """`{state-dict key: shape}` of the original model built for `config`."""
  net = load_original(torch_repo, config, seed)
  return {k: list(v.shape) for k, v in net.state_dict().items()}


def write_fixture(path: str, torch_repo: str, config, overrides: dict[str, Any], seed: int = 0,
                  batch: int = 2) -> None:
  """A CI parity fixture: float16-valued random weights (so they store in half the bytes and both sides
  compute on exactly the same float32 values), uint8 inputs, the key mask and the original's outputs."""
  import torch  # pylint: disable=g-import-not-at-top
  net = load_original(torch_repo, config, seed)
  sd = {k: v.numpy().astype(np.float16) for k, v in net.state_dict().items()}
  net.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in sd.items()}, strict=True)
  inputs = make_inputs(config, seed, batch)
  outputs = run_original(net, config, inputs)
  arrays = {f"state_dict/{k}": v for k, v in sd.items()}
  arrays.update({f"output/{k}": v for k, v in outputs.items()})
  arrays["input/templates_u8"] = inputs.templates_u8
  arrays["input/search_u8"] = inputs.search_u8
  arrays["input/token_mask"] = inputs.token_mask
  arrays["meta"] = np.array(json.dumps({"stage": config.stage, "overrides": overrides, "seed": seed}))
  tmp = f"{path}.tmp-{os.getpid()}.npz"
  np.savez_compressed(tmp, **arrays)
  os.replace(tmp, path)


def read_fixture(path: str):
  """Returns `(meta, state_dict, inputs, outputs)` from a `write_fixture` file."""
  with np.load(path) as f:
    meta = json.loads(str(f["meta"]))
    sd = {k[len("state_dict/"):]: f[k].astype(np.float32) for k in f.files if k.startswith("state_dict/")}
    outputs = {k[len("output/"):]: f[k] for k in f.files if k.startswith("output/")}
    inputs = Inputs(f["input/templates_u8"], f["input/search_u8"], f["input/token_mask"])
  return meta, sd, inputs, outputs


def run_original_tracker(torch_repo: str, config, checkpoint: str, frames, init_box) -> np.ndarray:
  """Boxes `[N, 4]` (x, y, w, h) of the original sparse tracker on `frames` (RGB uint8 arrays), frame 0
  initialised with `init_box`, with the weights of `checkpoint` (a `{'net': ...}` file)."""
  torch_repo = os.path.abspath(torch_repo)
  if torch_repo not in sys.path:
    sys.path.insert(0, torch_repo)
  prepare_cpu_runtime()
  cfg = _original_config(torch_repo, config.stage)
  cfg.MODEL.PRETRAIN_PTH = checkpoint
  tracker_module = importlib.import_module(f"lib.test.tracker.{config.stage}")
  params = types.SimpleNamespace(
      cfg=cfg, checkpoint=checkpoint, debug=0, save_all_boxes=False,
      template_factor=cfg.TEST.TEMPLATE_FACTOR, template_size=cfg.TEST.TEMPLATE_SIZE,
      search_factor=cfg.TEST.SEARCH_FACTOR, search_size=cfg.TEST.SEARCH_SIZE)
  params.get = lambda name, *default: getattr(params, name, *default)
  tracker = tracker_module.get_tracker_class()(params, "parity")
  tracker.initialize(frames[0], {"init_bbox": [float(v) for v in init_box]}, "parity")
  boxes = [list(map(float, init_box))]
  for frame in frames[1:]:
    boxes.append(list(tracker.track(frame)["target_bbox"]))
  return np.asarray(boxes, np.float64)
