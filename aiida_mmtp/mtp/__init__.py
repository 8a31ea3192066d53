"""The mMTP engine: numpy + numba, no AiiDA.

Public API: :class:`Potential`, :class:`Configuration`, :func:`evaluate`,
:class:`MtpCalculator`, and the file readers/writers.
"""

from .basis import basis_for_level
from .calculator import MtpCalculator
from .cfg_io import read_cfg, write_cfg
from .configuration import Configuration
from .evaluate import Result, evaluate
from .mtp_io import read_mtp, write_mtp
from .potential import Potential

__all__ = [
    'Configuration',
    'MtpCalculator',
    'Potential',
    'Result',
    'basis_for_level',
    'evaluate',
    'read_cfg',
    'read_mtp',
    'write_cfg',
    'write_mtp',
]
