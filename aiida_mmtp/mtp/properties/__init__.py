"""Properties of a trained potential: magnetic-state averages, elastic constants, phonons, QHA.

- :mod:`.states`: FM, AFM and paramagnetic (random 50/50) states and the ASE calculator that averages
  energy, forces and stress over them with the moments re-equilibrated;
- :mod:`.relax`, :mod:`.elastic`, :mod:`.phonons` (phonopy), :mod:`.qha` (phonopy's QHA);
- :mod:`.run`: one calculation from settings to files, what ``mmtp properties`` runs.
"""

from .run import KINDS, run_property
from .states import StateAverageCalculator, StateSpec, make_states

__all__ = ['KINDS', 'StateAverageCalculator', 'StateSpec', 'make_states', 'run_property']
