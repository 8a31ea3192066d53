"""``MtpPotentialData``: an ``.mtp`` file in the repository, its description in attributes."""

from __future__ import annotations

import io

from aiida import orm

from ..mtp.mtp_io import format_mtp, parse_mtp
from ..mtp.potential import Potential

__all__ = ['MtpPotentialData']


class MtpPotentialData(orm.SinglefileData):
    """A (magnetic) moment tensor potential.

    Attributes (queryable): ``species``, ``level``, ``radial_basis_size``,
    ``magnetic_basis_size``, ``parameters``, ``energy_mode``, ``min_dist``,
    ``max_dist`` (Angstrom) and ``moment_ranges`` (mu_B per species).
    """

    FILENAME = 'potential.mtp'
    ATTRIBUTES = ('species', 'level', 'radial_basis_size', 'magnetic_basis_size', 'parameters', 'energy_mode',
                  'min_dist', 'max_dist', 'moment_ranges')  # fmt: skip

    def __init__(self, potential: Potential, **kwargs) -> None:
        if potential.species is None:
            raise ValueError('a potential node needs the species names of the potential')
        super().__init__(io.BytesIO(format_mtp(potential).encode()), filename=self.FILENAME, **kwargs)
        summary = potential.summary()
        for key in self.ATTRIBUTES:
            self.base.attributes.set(key, summary[key])

    @property
    def species(self) -> list[str]:
        return list(self.base.attributes.get('species'))

    @property
    def n_params(self) -> int:
        return int(self.base.attributes.get('parameters'))

    def get_potential(self) -> Potential:
        """The engine's :class:`Potential` from the stored file."""
        text = self.get_content()
        return parse_mtp(text.splitlines(), f'{self.__class__.__name__}<{self.pk}>')
