"""Readers of the evaluation benchmarks' native layouts (GOT-10k, LaSOT, LaSOT_ext, TrackingNet, NFS,
UAV123, OTB); see `readers.py`."""

from data_pipelines.benchmarks.readers import DATASETS
from data_pipelines.benchmarks.readers import DatasetError
from data_pipelines.benchmarks.readers import load_dataset
from data_pipelines.benchmarks.readers import Sequence
