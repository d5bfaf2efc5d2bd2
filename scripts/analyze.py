r"""Scores trackers' result folders on a benchmark and prints a table; optionally JSON and plots.

  python scripts/analyze.py --dataset lasot --data-root /data/LaSOT \
      --results-dir results/fartrack_sparse_tiny --results-dir results/ostrack \
      [--names FARTrack-T,OSTrack] [--json scores.json] [--plots plots/lasot]

--dataset is one of got10k_val, got10k_test, lasot, lasot_ext, trackingnet, nfs, uav123, otb. GOT-10k gives
AO / SR50 / SR75 (got10k-toolkit rules), the others AUC / P / NP (pytracking's rules, as the original's
`tracking/analysis_results.py`), all in percent; see `fartrack_jax/evaluation/metrics.py` for the details.
Each --results-dir holds `<seq>.txt` (x,y,w,h per line), or for GOT-10k `<seq>/<seq>_001.txt`; the tracker's
name is the folder's basename unless --names is given. --json writes {tracker: {score: value}}. Only the
annotation files under --data-root are read. got10k_test and trackingnet are scored by their servers; a
synthetic benchmark with `<data-root>/_synthetic_full_gt/` is scored locally.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from fartrack_jax import cli
from fartrack_jax.evaluation import analysis
from fartrack_jax.evaluation import metrics

_DATASET = flags.DEFINE_enum("dataset", None, list(metrics.GOT10K_DATASETS + metrics.OPE_DATASETS),
                             "Benchmark to score on.", required=True)
_DATA_ROOT = flags.DEFINE_string("data_root", None, "The benchmark's root folder (also --data-root).",
                                 required=True)
_RESULTS_DIR = flags.DEFINE_multi_string("results_dir", None, "A tracker's results folder; repeat for "
                                         "several trackers side by side (also --results-dir).", required=True)
_NAMES = flags.DEFINE_list("names", None, "Display names, one per --results-dir (default: folder names).")
_SEQUENCES = flags.DEFINE_list("sequences", None, "Score only these sequences.")
_JSON = flags.DEFINE_string("json", None, "Write {tracker: {score: value}} (percent) here.")
_PLOTS = flags.DEFINE_string("plots", None, "Write success / precision plot PNGs into this folder.")


def main(argv):
  del argv
  try:
    scores = analysis.analyze(_DATASET.value, _DATA_ROOT.value, _RESULTS_DIR.value, names=_NAMES.value,
                              json_path=_JSON.value, plots_dir=_PLOTS.value, sequences=_SEQUENCES.value)
  except (OSError, ValueError) as e:  # missing / malformed annotations or results: the message says which
    sys.exit(f"analyze.py: {e}")
  print(analysis.format_table(scores, title=f"{_DATASET.value} ({_DATA_ROOT.value})"))


if __name__ == "__main__":
  cli.run(main)
