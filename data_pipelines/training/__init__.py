"""Training data: dataset readers (`datasets.py`, `layouts.py`), frame-pair sampling (`sampler.py`) and
the grain input pipeline (`pipeline.py`); `synthetic_train.py` writes small synthetic training roots."""

from data_pipelines.training.datasets import build_train_dataset
from data_pipelines.training.datasets import build_train_datasets
from data_pipelines.training.datasets import DatasetError
from data_pipelines.training.datasets import TRAIN_NAMES
from data_pipelines.training.datasets import TrainDataset
from data_pipelines.training.datasets import TrainSequence
