"""Readers of the evaluation datasets' native layouts (GOT-10k, LaSOT, LaSOT_ext, TrackingNet, NFS,
UAV123, OTB); see `readers.py`."""

from data_pipelines.evaluation.readers import DATASETS
from data_pipelines.evaluation.readers import DatasetError
from data_pipelines.evaluation.readers import load_dataset
from data_pipelines.evaluation.readers import Sequence
