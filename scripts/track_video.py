r"""Tracks one object through a video file or an image folder.

  python scripts/track_video.py --config configs/fartrack_sparse.py:variant=tiny --checkpoint PARAMS_OR_PTH \
      --input video.mp4 --init-box 120,80,40,60 --output-dir out/

Writes `out/boxes.txt` (x,y,w,h per frame, the first being --init-box) and `out/tracked.mp4` with the boxes
drawn. Frames of a video are decoded on demand, never all at once.

  python scripts/track_video.py --onnx fartrack_pico.onnx --input video.mp4 --init-box 120,80,40,60 \
      --output-dir out/

tracks with an ONNX export (scripts/export_model.py) under onnxruntime, with numpy and OpenCV only (no JAX
is imported; --config and --checkpoint are not needed: the export's metadata holds the tracker settings).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

from fartrack_jax import cli
from fartrack_jax import config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Sparse-stage config.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Orbax params directory or original .pth.tar.")
_INPUT = flags.DEFINE_string("input", None, "A video file or a folder of images (sorted by name).")
_INIT_BOX = flags.DEFINE_string("init_box", None, "Target in the first frame: x,y,w,h in pixels "
                                "(also --init-box).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where boxes.txt and tracked.mp4 go (also --output-dir).")
_ONNX = flags.DEFINE_string("onnx", None, "Track with this ONNX export under onnxruntime instead of JAX "
                            "(no --config/--checkpoint).")
_THREADS = flags.DEFINE_integer("threads", None, "With --onnx: onnxruntime's intra-op threads (default: "
                                "all cores).")


def _write_outputs(frames, boxes, times) -> None:
  """boxes.txt and tracked.mp4 (the frames with their boxes) into --output-dir (a folder or a bucket)."""
  import tempfile  # pylint: disable=g-import-not-at-top
  from fartrack_jax import storage  # pylint: disable=g-import-not-at-top
  from fartrack_jax.tracking import video  # pylint: disable=g-import-not-at-top
  output_dir = storage.as_path(_OUTPUT_DIR.value)
  storage.write_text_atomic(output_dir / "boxes.txt",
                            "".join(",".join(f"{v:.2f}" for v in b) + "\n" for b in boxes))
  fps = frames.fps() if isinstance(frames, video.VideoFrames) else 30.0
  # OpenCV's video writer needs a local file; the finished video is then copied where it goes.
  with tempfile.TemporaryDirectory(prefix="track_video_") as scratch:
    local = os.path.join(scratch, "tracked.mp4")
    video.draw_video(frames, boxes, local, fps)
    storage.copy_file(local, output_dir / "tracked.mp4")
  print(f"{len(boxes)} boxes ({len(boxes) / max(sum(times), 1e-9):.1f} frames/s) -> {_OUTPUT_DIR.value}")


def track_onnx():
  """The --onnx path: `fartrack_jax.deploy.runtime`, which imports no JAX."""
  for name, value in (("--input", _INPUT.value), ("--init-box", _INIT_BOX.value),
                      ("--output-dir", _OUTPUT_DIR.value)):
    if not value:
      raise SystemExit(f"{name} is required (see --help)")
  from fartrack_jax.deploy import metadata, runtime  # pylint: disable=g-import-not-at-top
  from fartrack_jax.tracking import video  # pylint: disable=g-import-not-at-top
  try:
    network = runtime.OnnxNetwork(_ONNX.value, stage=_CONFIG.value.stage if _CONFIG.value else None,
                                  threads=_THREADS.value)
    box = video.parse_box(_INIT_BOX.value)
    frames = video.open_frames(_INPUT.value)
    first = runtime.read_rgb(frames[0]) if isinstance(frames[0], str) else frames[0]
    video.check_box_in_frame(box, *first.shape[:2])
    print(f"tracking {len(frames)} frames of {_INPUT.value} with {_ONNX.value} "
          f"({network.meta['stage']}, {network.meta['depth']} layers)", flush=True)
    boxes, times = runtime.track_frames(runtime.RuntimeTracker(network), frames, box)
  except (metadata.DeployError, ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  _write_outputs(frames, boxes, times)


def main(argv):
  del argv
  if _ONNX.value:
    if _CHECKPOINT.value:
      raise SystemExit("--checkpoint is not used with --onnx (the export holds the weights)")
    track_onnx()
    return
  for name, value in (("--config", _CONFIG.value), ("--checkpoint", _CHECKPOINT.value),
                      ("--input", _INPUT.value), ("--init-box", _INIT_BOX.value),
                      ("--output-dir", _OUTPUT_DIR.value)):
    if not value:
      raise SystemExit(f"{name} is required (see --help)")
  from fartrack_jax.tracking import evaluate, tracker as trk, video  # pylint: disable=g-import-not-at-top
  config = config_lib.validate_config(_CONFIG.value)
  try:
    box = video.parse_box(_INIT_BOX.value)
    frames = video.open_frames(_INPUT.value)
    first = trk.read_rgb(frames[0]) if isinstance(frames[0], str) else frames[0]
    video.check_box_in_frame(box, *first.shape[:2])
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  params = evaluate.params_for(config, _CHECKPOINT.value)
  tracker = trk.BatchTracker(config, params, batch=1, capacity=evaluate.capacity_for([len(frames)]))
  print(f"tracking {len(frames)} frames of {_INPUT.value}", flush=True)
  boxes, times = trk.track_sequences(tracker, [("video", frames, box)])["video"]
  _write_outputs(frames, boxes, times)


if __name__ == "__main__":
  cli.run(main)
