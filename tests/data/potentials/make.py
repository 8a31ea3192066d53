"""Write the fitted potentials that tests grade with: ``python tests/data/potentials/make.py``.

A fit of a few hundred L-BFGS iterations ends where round-off sends it: the same code on another machine, or a
kernel that sums in another order, lands in another basin (docs/engine.md, "Tests that depend on where a fit
ends"). Tests of grading, selection and spin moves need a potential, not a particular fit, so they read these
files; ``tests/test_fit.py`` tests the fitting itself. Rerun this only to change a recipe, and check the tests
that use the files (``conftest.fm_fitted_potential``, ``test_spinflip.fm_only_potential``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for conftest

from conftest import fm_reference_cells  # noqa: E402

from aiida_mmtp.mtp.fit import fit  # noqa: E402
from aiida_mmtp.mtp.mtp_io import write_mtp  # noqa: E402
from aiida_mmtp.mtp.potential import Potential  # noqa: E402

#: file name -> (FM reference cells, radial seed, L-BFGS iterations); level 6, N_phi 3, N_psi 2, symmetric
RECIPES = {
    'fm_cells16.mtp': (16, 0, 200),
    'fm_cells32_seed1.mtp': (32, 1, 400),
}


def make(name: str) -> Potential:
    """Fit the potential of ``RECIPES[name]`` to its FM reference cells."""
    n_cells, seed, iterations = RECIPES[name]
    pot = Potential.from_level(6, ['Cr', 'N'], n_phi=3, n_psi=2, m_max=[3.2, 0.6], symmetric=True, seed=seed)
    fit(pot, fm_reference_cells(n_cells), max_iter=iterations)
    return pot


if __name__ == '__main__':
    for name in RECIPES:
        write_mtp(make(name), HERE / name)
        print(f'wrote {HERE / name}')
