r"""Host input-pipeline throughput: frame pairs (stages 1 and 2) and clips (stage 3), per grain worker count
and, for frame pairs, per data path.

  python scripts/benchmark_input.py [--variant smoke|tiny] [--pipelines frame,clip] [--workers 0,1,2] \
      [--data-paths frames,precropped] [--compare 64] \
      [--batch-size N] [--warmup 2] [--windows 3] [--window-batches 5] [--data-dir DIR] [--json FILE]

Data paths (frame pairs; clips always read frames): `frames` decodes whole frames (the original's crops to
the bit), `precropped` reads the windows `precropped.pack_precropped_dataset` cuts from the same roots into
<data-dir>/tfds (cut once before timing, `prep_s`; reused when there). Each worker count times every data
path in turn, so their ratio is taken under the same load. --compare N then makes examples 0..N-1 on both
paths in this process and prints the pixel and box-label differences (`precropped.compare_examples`).

On a bucket: --bucket_delay_ms D (e.g. 30, what a small ranged read costs on real GCS) starts the test
storage server (`tests/gcs_emulator.py`, fake-gcs-server behind counting relays, each request held D ms),
copies the packed (`packed`: frames as stored, `packed.pack_train_dataset`) and pre-cropped sets into it,
and times every frame-pair data path named in --data-paths from local disk (source=local) and from the
bucket (source=bucket, records read by byte ranges, `remote_records`) at each --read-threads count;
requests_per_sample counts the storage requests the timed windows sent (all clients). Frame pairs only.

Writes synthetic training roots (`synthetic_train.make_synthetic_train_dataset`, one per layout the
configs name) into a temporary folder, or into --data-dir (a layout folder already there is reused), then
for each pipeline and worker count builds the grain iterator the trainer would (`configs/fartrack.py` for
frame pairs, `configs/fartrack_sparse.py` for clips, at --variant: smoke = the tiny test sizes, tiny = the
real sizes: 5 templates, 112/224 crops, 32-frame clips on a 640 canvas), takes --warmup batches (worker
start-up included), then times --windows windows of --window-batches batches each, consuming as fast as
it can. samples/s is the median over the windows (a sample is a frame pair or a clip), also per core
(samples_per_s_per_core: / the cores this process may use) and per CPU-second this process and its grain
workers spent (samples_per_cpu_s: the per-core rate when the pipeline is CPU-bound, and much less affected
than samples/s by other load on the machine; the test storage server's own CPU is not counted, as real GCS
spends none of the host's); frames/s counts
the frames each sample decodes (T + 1 or T + S). grain reads ahead (per process: frame pairs 16 threads,
clips max(batch, 4)), so the first window can drain what was made during the warm-up: keep a window's
samples (--window-batches x batch size) well above that, and --windows >= 3 so the median drops it. Peak memory is the largest sum of the resident set
sizes of this process and all its children, sampled every 50 ms from iterator creation to close (shared
pages count once per process, so this overstates with workers); it includes what earlier rows left in
this process. Prints a table; --json writes a list of rows {"pipeline", "variant", "workers",
"batch_size", "samples_per_s", "clips_or_pairs" (samples timed), "peak_rss_mb", "device": "cpu",
"cores", ...}.
"""

import importlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from fartrack_jax import cli

_VARIANT = flags.DEFINE_enum("variant", "smoke", ["smoke", "tiny"], "Config variant: smoke (tiny test sizes) "
                             "or tiny (the real input sizes of FARTrack-Tiny).")
_PIPELINES = flags.DEFINE_list("pipelines", ["frame", "clip"], "Pipelines to time: frame (stage 1/2 frame "
                               "pairs, configs/fartrack.py) and/or clip (stage 3, configs/fartrack_sparse.py).")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "grain worker process counts to time (0 = in this "
                             "process, with grain's reader threads).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Samples per batch (default: the config's "
                                   "train.batch_size).")
_WARMUP = flags.DEFINE_integer("warmup", None, "Untimed batches first (worker start-up, first reads, filling "
                               "the read-ahead). Default: twice the pipeline's read-ahead.")
_WINDOWS = flags.DEFINE_integer("windows", 3, "Timed windows; samples/s is their median.")
_WINDOW_BATCHES = flags.DEFINE_integer("window_batches", None, "Batches per timed window; at least the "
                                       "pipeline's read-ahead (shorter windows time its buffer, not its rate). "
                                       "Default: twice the read-ahead.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder for the synthetic roots (kept; layouts already "
                                "there are reused). Default: a temporary folder, removed at the end.")
_NUM_SEQUENCES = flags.DEFINE_integer("num_sequences", 4, "Synthetic sequences per layout (COCO: images).")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", None, "Frames per synthetic video (default: 40 for smoke, "
                                   "100 for tiny; a clip needs more than 2 * (T + S) visible frames).")
_FRAME_SIZE = flags.DEFINE_string("frame_size", None, "Synthetic frame size WxH (default: 160x120 for "
                                  "smoke, 1280x720 for tiny, LaSOT's usual size).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic data and of the examples.")
_JSON = flags.DEFINE_string("json", None, "Write the rows as JSON here.")
_DATA_PATHS = flags.DEFINE_list("data_paths", ["frames", "precropped"], "Frame-pair data paths to time: packed "
                                "(packed frames, tfds), frames "
                                "(whole frames, exact) and/or precropped (pre-cut windows).")
_BUCKET_DELAY_MS = flags.DEFINE_float("bucket_delay_ms", None, "Also time the frame pairs from a local GCS "
                                      "server that holds every request this long (see above); default: local "
                                      "disk only.")
_SERVER_CPU = flags.DEFINE_integer("bucket_server_cpu", None, "With --bucket_delay_ms: pin the storage server "
                                   "to this CPU and this process (with its grain workers) to the others, so the "
                                   "per-core figures are the client's alone (real GCS spends none of the host's "
                                   "CPU). Default: both share every CPU.")
_READ_THREADS = flags.DEFINE_list("read_threads", ["0"], "grain read threads per process to time (0: the "
                                  "pipeline's default, FRAME_READ_THREADS); with --bucket_delay_ms, try more.")
_COMPARE = flags.DEFINE_integer("compare", 64, "With both data paths: examples compared pixel by pixel (0: none).")

# Training name -> the synthetic layout written for it and the root key `build_train_datasets` looks up.
_LAYOUTS = {"SYNTHETIC": ("got10k_train", "synthetic"), "GOT10K_vottrain": ("got10k_train", "got10k"),
            "GOT10K_votval": ("got10k_train", "got10k"), "GOT10K_train_full": ("got10k_train", "got10k"),
            "LASOT": ("lasot_train", "lasot"), "TRACKINGNET": ("trackingnet_train", "trackingnet"),
            "COCO17": ("coco", "coco")}
_STAGES = {"frame": "fartrack", "clip": "fartrack_sparse"}


class PeakRss:
  """Samples the summed RSS of this process and its children in a thread; `peak_mb` after `stop()`."""

  def __init__(self, interval_s: float = 0.05):
    self.interval_s = interval_s
    self.peak_bytes = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _sample(self) -> int:
    import psutil  # pylint: disable=g-import-not-at-top
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
      try:
        total += child.memory_info().rss
      except psutil.Error:  # exited between listing and reading
        pass
    return total

  def _run(self):
    while not self._stop.is_set():
      self.peak_bytes = max(self.peak_bytes, self._sample())
      self._stop.wait(self.interval_s)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak_bytes = max(self.peak_bytes, self._sample())

  @property
  def peak_mb(self) -> float:
    return self.peak_bytes / 2 ** 20


def cpu_seconds(exclude: frozenset[int] = frozenset()) -> float:
  """User + system CPU seconds of this process and its live children (grain workers) so far, leaving out
  the process trees rooted at `exclude` (the test storage server: real GCS spends none of this host's CPU)."""
  import psutil  # pylint: disable=g-import-not-at-top
  me = psutil.Process()
  total = sum(me.cpu_times()[:2])
  left_out = set()
  for pid in exclude:
    try:
      left_out |= {pid} | {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
      pass
  for child in me.children(recursive=True):
    if child.pid in left_out:
      continue
    try:
      total += sum(child.cpu_times()[:2])
    except psutil.Error:  # exited between listing and reading
      pass
  return total


def _frame_size(text: str) -> tuple[int, int]:
  try:
    width, height = (int(v) for v in text.lower().split("x"))
  except ValueError:
    raise ValueError(f"--frame_size={text!r} is not WxH, e.g. 1280x720") from None
  return width, height


def make_roots(data_dir: str, names, num_sequences: int, num_frames: int, size: tuple[int, int],
               seed: int) -> dict[str, str]:
  """Synthetic roots for the training `names` under `data_dir`; returns the `roots` mapping."""
  from data_pipelines.training import synthetic_train  # pylint: disable=g-import-not-at-top
  roots = {}
  for name in names:
    if name not in _LAYOUTS:
      raise ValueError(f"no synthetic layout for training dataset {name}; known: {', '.join(_LAYOUTS)}")
    layout, key = _LAYOUTS[name]
    root = os.path.join(data_dir, layout)
    if not os.path.isdir(root):
      tmp = f"{root}.tmp-{os.getpid()}"
      shutil.rmtree(tmp, ignore_errors=True)
      synthetic_train.make_synthetic_train_dataset(layout, tmp, num_sequences=num_sequences,
                                                   num_frames=num_frames, size=size, seed=seed)
      os.replace(tmp, root)  # a half-written root is never reused
    roots[key] = root
  return roots


def precrop(config, roots: dict, cache_dir: str, tfds_dir: str) -> float:
  """Cuts the config's training datasets into pre-cropped sets under `tfds_dir`; seconds it took."""
  from data_pipelines.training import precropped  # pylint: disable=g-import-not-at-top
  from data_pipelines.training import processing  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  crops = processing.FrameProcessing.from_config(config)
  for dataset in frame_datasets(config, roots, cache_dir, "frames", None):
    precropped.pack_precropped_dataset(dataset.name, dataset.root, tfds_dir, crops, cache_dir)
  return time.perf_counter() - start


def pack(config, roots: dict, cache_dir: str, tfds_dir: str) -> float:
  """Packs the config's training datasets (frames as stored) under `tfds_dir`; seconds it took."""
  from data_pipelines.training import packed  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  for dataset in frame_datasets(config, roots, cache_dir, "frames", None):
    packed.pack_train_dataset(dataset.name, dataset.root, tfds_dir, cache_dir)
  return time.perf_counter() - start


class Bucket:
  """The test storage server in a child process (`tests/gcs_emulator.py --delay_ms`), its client environment
  set in this process (before any GCS client starts), and its request counts."""

  def __init__(self, delay_ms: float, server_cpu: int | None = None):
    import json  # pylint: disable=g-import-not-at-top
    import subprocess  # pylint: disable=g-import-not-at-top
    script = os.path.join(cli.repo_root(), "tests", "gcs_emulator.py")
    # It stops when its stdin closes: when this process exits, whatever way (after the clients' own exit work).
    self.process = subprocess.Popen([sys.executable, script, f"--delay_ms={delay_ms}"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
    line = self.process.stdout.readline()
    if not line:
      raise RuntimeError(f"{script} did not start (exit status {self.process.wait()})")
    self.env = json.loads(line)
    os.environ.update(self.env)
    if server_cpu is not None:
      import psutil  # pylint: disable=g-import-not-at-top
      cpus = os.sched_getaffinity(0)
      if server_cpu not in cpus or len(cpus) < 2:
        raise ValueError(f"--bucket_server_cpu={server_cpu}: needs one of this process's CPUs {sorted(cpus)} and "
                         "at least one more for the client")
      for process in [psutil.Process(self.process.pid)] + psutil.Process(self.process.pid).children(recursive=True):
        process.cpu_affinity([server_cpu])
      os.sched_setaffinity(0, cpus - {server_cpu})
    self.url = "gs://fartrack-test"

  def requests(self) -> int:
    sys.path.insert(0, cli.repo_root())
    from tests import gcs_emulator  # pylint: disable=g-import-not-at-top
    return sum(gcs_emulator.requests_from_env(self.env).values())


def frame_datasets(config, roots: dict, cache_dir: str, data_path: str, tfds_dir: str | None):
  from data_pipelines.training import build  # pylint: disable=g-import-not-at-top
  if data_path == "packed":
    from data_pipelines.training import packed  # pylint: disable=g-import-not-at-top
    return packed.open_packed_datasets(tuple(config.data.train.datasets_name), tfds_dir)
  if data_path == "precropped":
    from data_pipelines.training import precropped  # pylint: disable=g-import-not-at-top
    from data_pipelines.training import processing  # pylint: disable=g-import-not-at-top
    return precropped.open_precropped_datasets(tuple(config.data.train.datasets_name), tfds_dir,
                                               processing.FrameProcessing.from_config(config))
  return build.train_datasets_from_config(config, roots, cache_dir)


def time_pipeline(kind: str, config, roots: dict, cache_dir: str, workers: int, batch_size: int,
                  data_path: str = "frames", tfds_dir: str | None = None, read_threads: int = 0,
                  count_requests=None, server_pids: frozenset[int] = frozenset()) -> dict:
  """One row: median samples/s over the timed windows and the peak RSS of this process + children."""
  from data_pipelines.training import build  # pylint: disable=g-import-not-at-top
  from data_pipelines.training import clips  # pylint: disable=g-import-not-at-top
  from data_pipelines.training import pipeline  # pylint: disable=g-import-not-at-top
  datasets = frame_datasets(config, roots, cache_dir, data_path, tfds_dir)
  if kind == "clip":
    examples = build.clip_examples_from_config(config, datasets, _SEED.value)
    dataset = clips.clip_dataset(examples, batch_size, num_workers=workers)
    frames_per_sample = examples.num_templates + examples.num_searches
    read_threads = clips.CLIP_READ_THREADS
    read_ahead = clips.CLIP_READ_AHEAD
  else:
    examples = build.frame_examples_from_config(config, datasets, _SEED.value)
    dataset = pipeline.frame_dataset(examples, batch_size, num_workers=workers, read_threads=read_threads)
    frames_per_sample = examples.num_templates + 1
    read_threads = read_threads or pipeline.FRAME_READ_THREADS
    read_ahead = pipeline.FRAME_READ_AHEAD
  warmup = _WARMUP.value if _WARMUP.value is not None else 2 * read_ahead
  window_batches = _WINDOW_BATCHES.value if _WINDOW_BATCHES.value is not None else 2 * read_ahead
  if window_batches < read_ahead:
    raise ValueError(f"--window-batches={window_batches} is shorter than the {kind} pipeline's read-ahead of "
                     f"{read_ahead} batches: the windows would time its buffer, not its rate")
  windows, cpu = [], []
  with PeakRss() as memory:
    it = iter(dataset)
    start = time.perf_counter()
    for _ in range(warmup):
      next(it)
    warmup_s = time.perf_counter() - start
    requests_before = count_requests() if count_requests else 0
    for _ in range(_WINDOWS.value):
      start, cpu_start = time.perf_counter(), cpu_seconds(server_pids)
      for _ in range(window_batches):
        next(it)
      windows.append(time.perf_counter() - start)
      cpu.append(cpu_seconds(server_pids) - cpu_start)
    requests = (count_requests() - requests_before) if count_requests else 0
    close = getattr(it, "close", None)
    if close is not None:
      close()
    del it
  samples = window_batches * batch_size
  rate = statistics.median(samples / w for w in windows)
  cores = len(os.sched_getaffinity(0))
  return {"pipeline": kind, "data_path": data_path, "variant": config.variant, "workers": workers,
          "batch_size": batch_size,
          "samples_per_s": rate, "frames_per_s": rate * frames_per_sample,
          "clips_or_pairs": samples * len(windows), "peak_rss_mb": memory.peak_mb, "warmup_s": warmup_s,
          "read_threads": read_threads, "requests_per_sample": requests / (samples * len(windows)),
          "device": "cpu", "cores": cores, "samples_per_s_per_core": rate / cores,
          # Load-independent per-core figure: samples per CPU-second this process and its workers spent (the
          # storage server's CPU left out).
          "samples_per_cpu_s": statistics.median(samples / max(c, 1e-9) for c in cpu)}


def compare(config, roots: dict, cache_dir: str, tfds_dir: str, count: int) -> dict:
  """`precropped.compare_examples` of examples 0..count-1 made on both data paths, in this process."""
  from data_pipelines.training import build  # pylint: disable=g-import-not-at-top
  from data_pipelines.training import precropped  # pylint: disable=g-import-not-at-top
  exact, fast = (build.frame_examples_from_config(config, frame_datasets(config, roots, cache_dir, path, tfds_dir),
                                                  _SEED.value) for path in ("frames", "precropped"))
  return precropped.compare_examples(exact, fast, range(count), config.data.std)


def main(argv):
  del argv
  from scripts.benchmarks import timing  # pylint: disable=g-import-not-at-top
  smoke = _VARIANT.value == "smoke"
  num_frames = _NUM_FRAMES.value or (40 if smoke else 100)
  size = _frame_size(_FRAME_SIZE.value or ("160x120" if smoke else "1280x720"))
  workers = [int(w) for w in _WORKERS.value]
  if any(w < 0 for w in workers):
    raise ValueError(f"--workers must be >= 0, got {_WORKERS.value}")
  for kind in _PIPELINES.value:
    if kind not in _STAGES:
      raise ValueError(f"--pipelines has unknown {kind!r}; one of {', '.join(_STAGES)}")
  for path in _DATA_PATHS.value:
    if path not in ("frames", "packed", "precropped"):
      raise ValueError(f"--data_paths has unknown {path!r}; one of frames, packed, precropped")
  read_threads = [int(t) for t in _READ_THREADS.value]
  bucket = Bucket(_BUCKET_DELAY_MS.value, _SERVER_CPU.value) if _BUCKET_DELAY_MS.value is not None else None
  for name, value in (("warmup", _WARMUP.value), ("windows", _WINDOWS.value),
                      ("window_batches", _WINDOW_BATCHES.value)):
    if value is not None and value < (0 if name == "warmup" else 1):
      raise ValueError(f"--{name}={value} is too small")
  configs = {kind: importlib.import_module(f"configs.{_STAGES[kind]}").get_config(f"variant={_VARIANT.value}")
             for kind in _PIPELINES.value}
  names = sorted({n for c in configs.values() for n in c.data.train.datasets_name})

  data_dir = _DATA_DIR.value or tempfile.mkdtemp(prefix="benchmark_input_")
  rows = []
  try:
    roots = make_roots(data_dir, names, _NUM_SEQUENCES.value, num_frames, size, _SEED.value)
    cache_dir = os.path.join(data_dir, "index_cache")
    tfds_dir = os.path.join(data_dir, "tfds")
    comparison = None
    for kind, config in configs.items():
      batch_size = _BATCH_SIZE.value or int(config.train.batch_size)
      paths = _DATA_PATHS.value if kind == "frame" else ["frames"]
      prep_s = {"frames": 0.0}
      if "precropped" in paths:
        prep_s["precropped"] = precrop(config, roots, cache_dir, tfds_dir)
        print(f"pre-cropped sets ready in {prep_s['precropped']:.1f} s", flush=True)
      if "packed" in paths:
        prep_s["packed"] = pack(config, roots, cache_dir, tfds_dir)
      sources = [("local", tfds_dir, None)]
      if bucket is not None and kind == "frame":
        from fartrack_jax import storage  # pylint: disable=g-import-not-at-top
        storage.upload_tree(tfds_dir, f"{bucket.url}/tfds")
        sources.append(("bucket", f"{bucket.url}/tfds", bucket.requests))
      for w in workers:
        for path in paths:
          for source, source_dir, count in sources:
            if source == "bucket" and path == "frames":
              continue  # native roots are local folders
            for threads in read_threads:
              row = time_pipeline(kind, config, roots, cache_dir, w, batch_size, path, source_dir, threads, count,
                                  frozenset({bucket.process.pid}) if bucket is not None else frozenset())
              row["frame_size"] = f"{size[0]}x{size[1]}"
              row["prep_s"] = prep_s[path]
              row["source"] = source
              row["delay_ms"] = _BUCKET_DELAY_MS.value if source == "bucket" else 0.0
              rows.append(row)
              print(f"{kind} {path} {source} {_VARIANT.value} workers={w} threads={row['read_threads']}: "
                    f"{row['samples_per_s']:.2f} samples/s, {row['requests_per_sample']:.2f} requests/sample, "
                    f"peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
      if kind == "frame" and set(paths) == {"frames", "precropped"} and _COMPARE.value > 0:
        comparison = compare(config, roots, cache_dir, tfds_dir, _COMPARE.value)
        for row in rows:
          if row["pipeline"] == "frame" and row["data_path"] == "precropped":
            row["exactness"] = comparison  # in the JSON
  finally:
    if _DATA_DIR.value is None:
      shutil.rmtree(data_dir, ignore_errors=True)
  print()
  timing.report(rows, ["pipeline", "data_path", "source", "delay_ms", "requests_per_sample", "variant", "workers", "batch_size", "samples_per_s",
                           "samples_per_s_per_core", "samples_per_cpu_s", "frames_per_s", "clips_or_pairs",
                           "peak_rss_mb", "warmup_s", "prep_s", "read_threads", "frame_size", "cores"], _JSON.value)
  if comparison is not None:
    print("\nprecropped against frames on the same draws (pixels in uint8 units):")
    for key, value in comparison.items():
      print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")


if __name__ == "__main__":
  cli.run(main)
