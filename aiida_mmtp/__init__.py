"""aiida-mmtp: magnetic Moment Tensor Potentials trained by active learning on constrained DFT, in AiiDA."""

__version__ = '0.1.0'
