"""Reading and writing the original's `.pth.tar` files (local or on a bucket: the bytes go through
`storage`). Imports torch lazily: only these paths need it."""

from __future__ import annotations

import io
import pickle
import zipfile
from typing import Mapping

import numpy as np

from fartrack_jax import storage


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("reading or writing PyTorch checkpoints needs torch: "
                      "pip install -r requirements-torch.txt (torch==2.13.0, CPU build)") from e
  return torch


def load_state_dict(path: str, allow_pickle: bool = False) -> tuple[str, dict[str, np.ndarray]]:
  """Reads a checkpoint and returns `(kind, {key: float32 array})`.

  kind is "net" (a FARTrack training checkpoint: `{'net': state_dict, ...}`), "model" (MAE weights:
  `{'model': state_dict}`) or "state_dict" (a bare state dict). Files are read with
  `torch.load(weights_only=True)`; `allow_pickle=True` falls back to full unpickling, for trusted files
  that store other Python objects next to the weights.
  """
  torch = _torch()
  file = storage.as_path(path)
  if not file.is_file():
    raise FileNotFoundError(f"checkpoint not found: {path}")
  data = file.read_bytes()
  _check_complete(path, data)
  try:
    obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
  except EOFError:
    raise ValueError(f"{path} is corrupt or truncated: it ends early ({len(data):,} bytes read)") from None
  except (pickle.UnpicklingError, RuntimeError) as e:
    if not allow_pickle:
      raise ValueError(f"{path} holds more than tensors and cannot be read with weights_only=True ({e}). "
                       "If you trust the file, pass --allow_pickle.") from e
    obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
  if isinstance(obj, Mapping) and "net" in obj:
    kind, sd = "net", obj["net"]
  elif isinstance(obj, Mapping) and "model" in obj:
    kind, sd = "model", obj["model"]
  elif isinstance(obj, Mapping) and obj and all(torch.is_tensor(v) for v in obj.values()):
    kind, sd = "state_dict", obj
  else:
    keys = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(f"{path}: expected a dict with 'net' or 'model', or a state dict; found {keys}")
  out = {}
  for k, v in sd.items():
    if torch.is_tensor(v):
      out[k] = v.detach().to(torch.float32).cpu().numpy()
  return kind, out


def _check_complete(path: str, data: bytes) -> None:
  """ValueError for a file that `torch.save` began as a zip archive but that is no readable zip (a cut-off
  download or copy): unpickling cannot help there, unlike for a file that holds more than tensors."""
  magic = data[:4]
  size = len(data)
  if not magic:
    raise ValueError(f"{path} is empty (0 bytes): not a checkpoint")
  if magic == b"PK\x03\x04":
    try:
      with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
      raise ValueError(f"{path} is corrupt or truncated: a zip archive of {size:,} bytes that cannot be "
                       f"read ({e}); download or copy it again") from None


def save_state_dict(path: str, state_dict: Mapping[str, np.ndarray], extra: Mapping | None = None) -> None:
  """Writes `{'net': state_dict, **extra}` the way the original saves checkpoints, atomically."""
  torch = _torch()
  net = {k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in state_dict.items()}
  payload = {"net": net, **(extra or {})}
  buffer = io.BytesIO()
  torch.save(payload, buffer)
  storage.write_bytes_atomic(path, buffer.getvalue())
