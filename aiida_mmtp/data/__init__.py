"""Data nodes of the plugin: potentials and training sets."""

from .potential import MtpPotentialData
from .training_set import TrainingSetData

__all__ = ['MtpPotentialData', 'TrainingSetData']
