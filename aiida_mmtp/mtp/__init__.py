"""The mMTP engine: numpy + numba, no AiiDA.

Public API: :class:`Potential`, :class:`Configuration`, :func:`evaluate`,
:class:`MtpCalculator`, and the file readers/writers. They are imported on first use (PEP 562), so that a
``mmtp`` command loads only the modules it needs (ASE's I/O and scipy cost ~0.5 s of start-up).
"""

from __future__ import annotations

import importlib

#: public name -> the engine module that defines it
_EXPORTS = {
    'Configuration': 'configuration',
    'MtpCalculator': 'calculator',
    'Potential': 'potential',
    'Result': 'evaluate',
    'basis_for_level': 'basis',
    'evaluate': 'evaluate',
    'read_cfg': 'cfg_io',
    'read_mtp': 'mtp_io',
    'write_cfg': 'cfg_io',
    'write_mtp': 'mtp_io',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'.{_EXPORTS[name]}', __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
