"""Pseudopotentials in ABINIT's own formats, and the two families Debian ships.

``AbinitPspData`` holds one norm-conserving file in an ABINIT format (``.pspnc``
Troullier-Martins, ``.fhi``, ``.psp8``): the element comes from the atomic
number on the second line of the header. Families (aiida-pseudo groups):

- ``abinit-data/LDA/NC``: one LDA norm-conserving file per element from
  Debian's ``abinit-data`` (``/usr/share/abinit/psp``), chosen by
  :data:`NC_PREFERENCE` (for CrN: ``24cr.000107.fhi`` and
  ``PseudosTM_pwteter/7n.pspnc``, the pair verified in shared/docs/cdft.md).
- ``gpaw-data/LDA/PAW``: the LDA PAW setups of Debian's ``gpaw-data``
  (``/usr/share/gpaw-setups/<El>.LDA.gz``, unzipped to ``<El>.LDA.xml``),
  which ABINIT 9.6 reads; needed for DFT+U. They are GPAW datasets, not
  validated for ABINIT production: point the protocol at your own PAW family
  for production runs.
"""

from __future__ import annotations

import gzip
import re
import shutil
import tempfile
import typing
from pathlib import Path

from aiida.common.constants import elements
from aiida_pseudo.data.pseudo import JthXmlData, PseudoPotentialData
from aiida_pseudo.groups.family import PseudoPotentialFamily

__all__ = ['AbinitPspData', 'NC_FAMILY', 'PAW_FAMILY', 'install_nc_family', 'install_paw_family', 'read_psp_header']

NC_FAMILY = 'abinit-data/LDA/NC'
PAW_FAMILY = 'gpaw-data/LDA/PAW'
ABINIT_PSP_DIR = Path('/usr/share/abinit/psp')
GPAW_SETUP_DIR = Path('/usr/share/gpaw-setups')

#: Folders (relative to ABINIT_PSP_DIR) searched in this order; the first LDA NC file of an element wins.
NC_PREFERENCE = ('PseudosTM_pwteter', '.', 'Pseudodojo_nc_sr_04_pw_standard_psp8')
#: ABINIT pspcod of the norm-conserving formats we accept: 1 Troullier-Martins, 6 FHI, 8 ONCVPSP (psp8)
NC_PSPCODS = (1, 6, 8)
_SYMBOLS = {z: values['symbol'] for z, values in elements.items()}


def read_psp_header(text: str) -> dict:
    """Atomic number, valence, format code and XC code from the first three lines of an ABINIT psp file.

    Raises ValueError when the header is not ABINIT's (``zatom zion pspdat`` then ``pspcod pspxc ...``).
    """
    lines = text.splitlines()
    try:
        zatom, zion = (float(t) for t in lines[1].split()[:2])
        pspcod, pspxc = (int(float(t)) for t in lines[2].split()[:2])
    except (IndexError, ValueError) as exc:
        raise ValueError(f'not an ABINIT pseudopotential header: {exc}') from exc
    z = round(zatom)
    if abs(zatom - z) > 1e-6 or z not in _SYMBOLS:
        raise ValueError(f'not an ABINIT pseudopotential header: atomic number {zatom}')
    return {'z': z, 'element': _SYMBOLS[z], 'zion': zion, 'pspcod': pspcod, 'pspxc': pspxc}


def is_lda(pspxc: int) -> bool:
    """ABINIT's ixc 1-9 are LDA; a negative code is libxc ``-XXXCCC``: LDA when both ids are LDA ids (< 50)."""
    if pspxc > 0:
        return pspxc <= 9
    x, c = divmod(-pspxc, 1000)
    return 0 < x < 50 and c < 50


class AbinitPspData(PseudoPotentialData):
    """A norm-conserving pseudopotential in one of ABINIT's formats (attributes ``element``, ``md5``, ``pspcod``)."""

    def set_file(self, source: str | Path | typing.BinaryIO, filename: str | None = None, **kwargs) -> None:
        source = self.prepare_source(source)
        super().set_file(source, filename, **kwargs)
        source.seek(0)
        header = read_psp_header(source.read(4096).decode(errors='replace'))
        self.element = header['element']
        self.base.attributes.set('pspcod', header['pspcod'])
        self.base.attributes.set('pspxc', header['pspxc'])
        self.base.attributes.set('z_valence', header['zion'])


def _nc_choice(psp_dir: Path) -> dict[str, Path]:
    """Element -> file: the first LDA norm-conserving file of each element, folders in NC_PREFERENCE order."""
    chosen: dict[str, Path] = {}
    for folder in NC_PREFERENCE:
        for path in sorted((psp_dir / folder).glob('*')):
            if not path.is_file():
                continue
            try:
                header = read_psp_header(path.read_bytes()[:4096].decode(errors='replace'))
            except ValueError:
                continue
            if header['pspcod'] in NC_PSPCODS and is_lda(header['pspxc']):
                chosen.setdefault(header['element'], path)
    return chosen


def _existing(label: str) -> PseudoPotentialFamily | None:
    """The family called ``label``; an empty one (left by an interrupted install) is deleted and None returned."""
    from aiida import orm

    family = orm.QueryBuilder().append(PseudoPotentialFamily, filters={'label': label}).first(flat=True)
    if family is not None and not family.pseudos:
        orm.Group.collection.delete(family.pk)
        return None
    return family


def install_nc_family(label: str = NC_FAMILY, psp_dir: Path = ABINIT_PSP_DIR) -> PseudoPotentialFamily:
    """Create (or return the existing) family of abinit-data LDA NC pseudopotentials, one per element."""
    family = _existing(label)
    if family is not None:
        return family
    chosen = _nc_choice(Path(psp_dir))
    if not chosen:
        raise FileNotFoundError(f'no ABINIT pseudopotentials under {psp_dir}: apt-get install abinit-data')
    with tempfile.TemporaryDirectory() as tmp:
        for path in chosen.values():
            shutil.copyfile(path, Path(tmp) / path.name)
        description = f'LDA norm-conserving pseudopotentials from Debian abinit-data ({psp_dir}), one per element'
        family = PseudoPotentialFamily.create_from_folder(
            Path(tmp), label, description=description, pseudo_type=AbinitPspData
        )
    family.base.extras.set('sources', {el: str(p.relative_to(psp_dir)) for el, p in sorted(chosen.items())})
    return family


def install_paw_family(label: str = PAW_FAMILY, setup_dir: Path = GPAW_SETUP_DIR) -> PseudoPotentialFamily:
    """Create (or return the existing) family of the gpaw-data LDA PAW setups, unzipped to ``<El>.LDA.xml``."""
    family = _existing(label)
    if family is not None:
        return family
    pattern = re.compile(r'^([A-Z][a-z]?)\.LDA\.gz$')
    files = sorted(p for p in Path(setup_dir).glob('*.LDA.gz') if pattern.match(p.name))
    if not files:
        raise FileNotFoundError(f'no LDA PAW setups under {setup_dir}: apt-get install gpaw-data')
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:
            with gzip.open(path) as handle:
                (Path(tmp) / path.name.replace('.gz', '.xml')).write_bytes(handle.read())
        description = f'LDA PAW setups from Debian gpaw-data ({setup_dir}), read by ABINIT; not validated for it'
        family = PseudoPotentialFamily.create_from_folder(
            Path(tmp), label, description=description, pseudo_type=JthXmlData
        )
    return family
