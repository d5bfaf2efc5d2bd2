"""The tracker's host-side crops: `data_pipelines.crops`, where they live once for tracking, training and
pre-cropping (this name is kept for the code that imports it from here)."""

from data_pipelines.crops import clip_box
from data_pipelines.crops import map_box_back
from data_pipelines.crops import sample_target

__all__ = ["clip_box", "map_box_back", "sample_target"]
