"""Magnetic states and the average over them: the engine's model of FM, AFM and paramagnetic (PM) phases.

A *state set* is a (K, N) array of signed starting moments (mu_B), one row per
collinear state of an N-atom cell. Ordered phases are one state (FM, layered
AFM); the paramagnetic phase is K random states with 50% of the moments of each
magnetic species up (Kotykhov et al., sec. III.B), or the sign patterns that MD
with sign moves visits (``sampling``: ``dlm-md`` redraws, ``mdmc`` Metropolis
flips). :class:`StateAverageCalculator` equilibrates the moments of every state
at the current atoms (signs kept, magnitudes free) and returns the average
energy, forces and stress over the states: an ASE calculator, so relaxation,
strains and phonopy's displaced supercells all see the averaged phase.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ..ase_io import atoms_to_configuration
from ..configuration import Configuration
from ..simulate import equilibrate_moments, moment_signs
from ..spinflip import sample_sign_patterns
from ..structures import layered_afm, random_collinear_moments

__all__ = [
    'PM_SAMPLING_KEYS',
    'SAMPLINGS',
    'STATE_KINDS',
    'StateAverageCalculator',
    'StateSpec',
    'make_states',
    'moment_summary',
    'running_statistics',
]

#: The magnetic phases the property calculations know.
STATE_KINDS = ('FM', 'AFM', 'PM')
#: How the PM states are drawn: independent random 50/50 patterns (the paper), or the patterns visited by MD with
#: DLM redraws or Metropolis flips (:func:`~aiida_mmtp.mtp.spinflip.sample_sign_patterns`).
SAMPLINGS = ('random', 'dlm-md', 'mdmc')
#: The state settings that only a PM state has (how its states are drawn).
PM_SAMPLING_KEYS = ('sampling', 'temperature', 'sample_every', 'flip_attempts')


@dataclass(frozen=True)
class StateSpec:
    """Which magnetic phase, and how it is sampled.

    kind: 'FM', 'AFM' (layers alternating along the third cell vector) or 'PM' (random 50/50 states).
    moments: starting moment size per species symbol, mu_B (re-equilibrated unless ``equilibrate`` is False);
        species left out start at 0 and stay there (see :class:`StateAverageCalculator`).
    n_states: number of random states for PM (ignored for FM/AFM: one state).
    seed: seed of the random states.
    equilibrate: re-equilibrate the moment sizes at every structure (the paper's recipe); False keeps them
        at the starting sizes (fixed-moment states).
    sampling: how the PM states are drawn (:data:`SAMPLINGS`): ``random`` (independent 50/50 patterns), or the
        patterns held by MD of the model at ``temperature`` K just before each of its sign moves, made every
        ``sample_every`` steps (``dlm-md``: redraws, ``mdmc``: ``flip_attempts`` Metropolis flips per move).
    signs: for an ordered state of another kind, the sign (+1, -1, 0) of each atom of the unit cell, repeated
        over supercells of it (e.g. AFM2 or a ferrimagnet); default: FM all +1, AFM layered along c.
    """

    kind: str
    moments: dict[str, float]
    n_states: int = 50
    seed: int = 0
    equilibrate: bool = True
    signs: tuple[int, ...] | None = None
    sampling: str = 'random'
    temperature: float = 1000.0
    sample_every: int = 10
    flip_attempts: int = 8

    def __post_init__(self) -> None:
        if self.kind not in STATE_KINDS:
            raise ValueError(f'magnetic state {self.kind!r}: choose from {", ".join(STATE_KINDS)}')
        if self.sampling not in SAMPLINGS:
            raise ValueError(f'state sampling {self.sampling!r}: choose from {", ".join(SAMPLINGS)}')
        if self.sampling != 'random' and self.kind != 'PM':
            raise ValueError(f'sampling {self.sampling} draws paramagnetic states: it needs kind PM, got {self.kind}')
        if self.sample_every < 1 or self.flip_attempts < 1 or not self.temperature >= 0:
            raise ValueError(
                f'state sampling needs sample_every >= 1, flip_attempts >= 1 and temperature >= 0 K, got '
                f'{self.sample_every}, {self.flip_attempts} and {self.temperature}'
            )
        if self.kind == 'PM' and self.n_states < 2:
            raise ValueError(f'a paramagnetic average needs at least 2 random states, got n_states={self.n_states}')
        if self.signs is not None and (self.kind == 'PM' or any(x not in (-1, 0, 1) for x in self.signs)):
            raise ValueError(
                f'signs (one of -1, 0, 1 per atom of the unit cell) define an ordered FM/AFM state, '
                f'got {self.kind} with {list(self.signs)}'
            )
        if not any(abs(v) > 0 for v in self.moments.values()):
            raise ValueError(
                f'the {self.kind} state needs a non-zero starting moment for some species, got {self.moments}'
            )

    @property
    def is_ordered(self) -> bool:
        return self.kind != 'PM'

    def as_dict(self) -> dict:
        return {
            'kind': self.kind,
            'moments': dict(self.moments),
            'n_states': self.n_states,
            'seed': self.seed,
            'equilibrate': self.equilibrate,
            'signs': None if self.signs is None else list(self.signs),
            'sampling': self.sampling,
            'temperature': self.temperature,
            'sample_every': self.sample_every,
            'flip_attempts': self.flip_attempts,
        }

    def calculator(self, model, states: np.ndarray, tol: float = 1e-6) -> StateAverageCalculator:
        """The state-average calculator of ``states`` (K, N) for this phase."""
        fixed = None if self.equilibrate else np.ones(np.shape(states)[1], dtype=bool)
        return StateAverageCalculator(model, states, tol=tol, fixed=fixed)


def make_states(cfg: Configuration, species: tuple[str, ...], spec: StateSpec, model=None) -> np.ndarray:
    """The starting moments of ``spec`` for the cell ``cfg``: shape (K, N), mu_B; K = 1 for FM and AFM.

    PM states sampled by MD (``spec.sampling`` other than ``random``) need the ``model`` that runs it.
    Raises ValueError when the cell cannot hold the state (no two layers of magnetic atoms for AFM, fewer
    than two magnetic atoms for PM) or names a species the potential does not have.
    """
    unknown = sorted(set(spec.moments) - set(species))
    if unknown:
        raise ValueError(
            f'moments given for {", ".join(unknown)}, which the potential does not have (species {", ".join(species)})'
        )
    magnitude = {species.index(s): float(abs(v)) for s, v in spec.moments.items() if abs(v) > 0}
    if spec.signs is not None:
        if cfg.natoms % len(spec.signs):
            raise ValueError(f'{len(spec.signs)} signs do not tile a cell of {cfg.natoms} atoms')
        signs = np.tile(np.asarray(spec.signs, dtype=float), cfg.natoms // len(spec.signs))
        return (signs * np.array([magnitude.get(int(t), 0.0) for t in cfg.types]))[None, :]
    if spec.kind == 'FM':
        return np.array([[magnitude.get(int(t), 0.0) for t in cfg.types]])
    if spec.kind == 'AFM':
        afm = layered_afm(cfg, magnitude)
        if afm is None:
            raise ValueError('the cell has a single layer of magnetic atoms along its third vector: no AFM order')
        return afm[None, :]
    n_magnetic = int(np.isin(cfg.types, list(magnitude)).sum())
    if n_magnetic < 2:
        raise ValueError(f'a paramagnetic average needs at least two magnetic atoms in the cell, it has {n_magnetic}')
    if spec.sampling != 'random':
        if model is None:
            raise ValueError(f'{spec.sampling} sampling of the PM states needs the potential that runs the MD')
        states, _ = sample_sign_patterns(
            model, cfg, magnitude, spec.n_states, kind='dlm' if spec.sampling == 'dlm-md' else 'mdmc',
            temperature=spec.temperature, every=spec.sample_every, attempts=spec.flip_attempts, seed=spec.seed,
        )  # fmt: skip
        return states
    rng = np.random.default_rng(spec.seed)
    return np.array([random_collinear_moments(cfg.types, magnitude, rng) for _ in range(spec.n_states)])


class StateAverageCalculator(Calculator):
    """ASE calculator: energy (eV), forces (eV/A) and stress (eV/A^3) averaged over magnetic states.

    ``model``: a :class:`~aiida_mmtp.mtp.Potential` or another model with ``evaluate(cfg)`` (the analytic
    reference). ``states``: (K, N) signed starting moments, mu_B. For each state the moments are
    equilibrated at the current atoms (those of ``fixed`` atoms excepted: default, the atoms that start at
    zero in every state, like N in CrN) (L-BFGS-B to ``tol`` eV/mu_B; the sign of each clearly magnetic atom
    kept) before the state's energy, forces and stress are taken; a non-magnetic model uses the moments as
    given. The first calculation starts from ``states``; every later one starts from the moments that the
    first one found (``anchor``), so that strained and displaced cells stay on the same branch of moment
    minima as the reference cell (a free, weakly magnetic moment can have several). After a calculation
    ``per_state`` holds the (K,) energies, (K, N, 3) forces, (K, 6) stresses and
    (K, N) equilibrated moments, and ``not_converged`` the number of states whose equilibration stopped
    short of ``tol``.
    """

    implemented_properties = ['energy', 'free_energy', 'forces', 'stress']

    def __init__(
        self,
        model,
        states: np.ndarray,
        *,
        tol: float = 1e-6,
        max_iter: int = 500,
        fixed: np.ndarray | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.states = np.atleast_2d(np.asarray(states, dtype=float))
        # by default only the atoms that start with a moment are equilibrated: the others (N in CrN) stay at 0,
        # as in the cDFT labels, where every species is constrained
        self.fixed = np.all(self.states == 0, axis=0) if fixed is None else np.asarray(fixed, dtype=bool)
        self.tol, self.max_iter = tol, max_iter
        self.signs = np.array([moment_signs(m) for m in self.states])
        self.anchor: np.ndarray | None = None
        self.per_state: dict[str, np.ndarray] = {}
        self.not_converged = 0

    def _configuration(self, atoms: Atoms) -> Configuration:
        cfg = atoms_to_configuration(atoms, self.model.species)
        if cfg.natoms != self.states.shape[1]:
            raise ValueError(f'the states are for {self.states.shape[1]} atoms, the structure has {cfg.natoms}')
        return cfg

    def calculate(self, atoms=None, properties=('energy',), system_changes=all_changes) -> None:
        from ..simulate import evaluate_model

        super().calculate(atoms, properties, system_changes)
        base = self._configuration(self.atoms)
        energies, forces, stresses, moments = [], [], [], []
        self.not_converged = 0
        starts = self.states if self.anchor is None else self.anchor
        for start, signs in zip(starts, self.signs):
            cfg = base.copy()
            cfg.moments = start.copy()
            if self.model.is_magnetic:
                cfg, report = equilibrate_moments(
                    self.model, cfg, tol=self.tol, max_iter=self.max_iter, signs=signs, fixed=self.fixed
                )
                if report.stop_reason.startswith('failed'):
                    raise ValueError(f'moment equilibration failed: {report.stop_reason[8:]}')
                self.not_converged += report.stop_reason != 'finished'
            else:
                res = evaluate_model(self.model, cfg)
                cfg = res.to_configuration(cfg)
            energies.append(cfg.energy)
            forces.append(cfg.forces)
            stresses.append(cfg.stress)
            moments.append(cfg.moments)
        if self.anchor is None:
            self.anchor = np.array(moments)
        self.per_state = {
            'energy': np.array(energies),
            'forces': np.array(forces),
            'stress': np.array(stresses),
            'moments': np.array(moments),
        }
        self.results = {
            'energy': float(np.mean(energies)),
            'free_energy': float(np.mean(energies)),
            'forces': np.mean(forces, axis=0),
            'stress': np.mean(stresses, axis=0),
        }


def running_statistics(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Running mean and its standard error over the first k = 1..K samples of ``values`` (shape (K, ...)).

    Returns (mean, sem), both of the shape of ``values``; sem[0] is NaN (one sample has no spread).
    """
    values = np.asarray(values, dtype=float)
    k = np.arange(1, len(values) + 1).reshape((-1,) + (1,) * (values.ndim - 1))
    mean = np.cumsum(values, axis=0) / k
    mean_sq = np.cumsum(values**2, axis=0) / k
    with np.errstate(invalid='ignore', divide='ignore'):
        var = np.maximum(mean_sq - mean**2, 0.0) * k / (k - 1)
        sem = np.sqrt(var / k)
    sem[0] = np.nan
    return mean, sem


def moment_summary(calc: StateAverageCalculator, types: np.ndarray, species: tuple[str, ...]) -> dict[str, float]:
    """Mean |m| (mu_B) per species over the states of the last calculation of ``calc``."""
    moments = np.abs(calc.per_state['moments'])
    return {s: float(moments[:, types == k].mean()) for k, s in enumerate(species) if np.any(types == k)}
