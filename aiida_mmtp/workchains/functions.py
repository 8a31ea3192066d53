"""Calcfunctions of the active-learning workflows: cheap transforms only (states, subsets), with provenance."""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.engine import calcfunction

from ..data.training_set import TrainingSetData
from ..mtp.configuration import Configuration
from ..mtp.structures import initial_configurations, perturb_moments, strained

__all__ = [
    'configurations',
    'generate_configurations',
    'strain_list',
    'strains_problem',
    'structure_to_configuration',
    'subset',
]

#: Keys of the ``parameters`` of :func:`generate_configurations` and their defaults (the paper's recipe).
GENERATION = {
    'species': None,  # element names in the potential's type order (required)
    'moments': None,  # {element: initial moment size, mu_B} of the magnetic species (required)
    'scales': [1.0],  # isotropic lattice scale factors
    'states': ['FM', 'AFM', 'random'],  # for every cell, or {cell name: [states]}
    'n_random': 4,  # random 50/50 states per cell and scale
    'n_displaced': 0,  # copies with every atom displaced, per state
    'displacement': 0.05,  # A, uniform in +-displacement per axis
    'n_perturbed': 0,  # copies with every moment scaled by up to +-perturbation
    'perturbation': 0.15,
    'seed': 0,
    # [[component, magnitude], ...] (Voigt, e.g. ['yz', 0.01]), or {state kind: [...]} (FM, AFM, random): when
    # given, only strained copies; with a mapping, each state gets its own components and states not in it none
    'strains': [],
    # True: the unperturbed cells (ideal and displaced) are labelled by spin-polarised DFT with free moments (their
    # state's moments only the start) and the perturbed copies perturb those DFT equilibrium moments (the paper);
    # False: every moment is the nominal size, perturbed copies included, all labelled by cDFT
    'equilibrium_moments': False,
}
#: The kinds of magnetic state a recipe names (random states are 'random-1', 'random-2', ...).
STATE_KINDS = ('FM', 'AFM', 'random')


def strain_list(strains, state: str | None = None) -> list:
    """The ``[[component, magnitude], ...]`` of ``strains`` (a list, or a mapping of state kind to lists) for a
    state (``'FM'``, ``'AFM'``, ``'random-3'``); with ``state`` None, every strain of every state."""
    if not isinstance(strains, dict):
        return list(strains or [])
    if state is None:
        return [pair for pairs in strains.values() for pair in pairs]
    return list(strains.get(state.split('-')[0], []))


def strains_problem(strains) -> str | None:
    """Why ``strains`` (see :data:`GENERATION`) is not a valid list or mapping of strains, or None."""
    from ..mtp.structures import VOIGT_COMPONENTS

    if isinstance(strains, dict):
        unknown = sorted(set(strains) - set(STATE_KINDS))
        if unknown:
            return f'strains for unknown states {", ".join(unknown)} (choose from {", ".join(STATE_KINDS)})'
    for pair in strain_list(strains):
        if not isinstance(pair, list | tuple) or len(pair) != 2 or pair[0] not in VOIGT_COMPONENTS:
            return f'strain {pair!r}: give [component, magnitude], component one of {", ".join(VOIGT_COMPONENTS)}'
        if isinstance(pair[1], bool) or not isinstance(pair[1], int | float) or not 0 < abs(pair[1]) < 0.2:
            return f'strain {pair!r}: the magnitude must be a number with 0 < |magnitude| < 0.2'
    return None


def structure_to_configuration(structure: orm.StructureData, species: list[str]) -> Configuration:
    """The cell and atoms of ``structure`` (A), types indexing ``species``; ValueError for unknown elements."""
    kinds = {kind.name: kind.symbol for kind in structure.kinds}
    symbols = [kinds[site.kind_name] for site in structure.sites]
    unknown = sorted(set(symbols) - set(species))
    if unknown:
        raise ValueError(f'the structure has {", ".join(unknown)}, the potential is for {", ".join(species)}')
    return Configuration(
        positions=np.array([site.position for site in structure.sites]),
        types=[species.index(s) for s in symbols],
        cell=np.array(structure.cell),
    )


def generation_settings(parameters: dict) -> dict:
    """``parameters`` completed with :data:`GENERATION`; ValueError for unknown or missing keys."""
    unknown = sorted(set(parameters) - set(GENERATION))
    if unknown:
        raise ValueError(f'unknown generation parameters: {", ".join(unknown)} (known: {", ".join(GENERATION)})')
    p = {**GENERATION, **parameters}
    for key in ('species', 'moments'):
        if not p[key]:
            raise ValueError(f'the generation parameter `{key}` is required')
    return p


def configurations(cells: dict[str, Configuration], parameters: dict) -> list[Configuration]:
    """The recipe of :data:`GENERATION` applied to named cells (in name order); no AiiDA involved."""
    p = generation_settings(parameters)
    species = list(p['species'])
    names = sorted(cells)
    states = p['states']
    if isinstance(states, dict):
        unknown = sorted(set(states) - set(names))
        if unknown:
            raise ValueError(f'states given for unknown cells {", ".join(unknown)} (cells: {", ".join(names)})')
        states = [tuple(states.get(name, ())) for name in names]
    magnitude = {species.index(el): float(m) for el, m in p['moments'].items()}
    configs = initial_configurations(
        [cells[name] for name in names], magnitude, scales=[float(x) for x in p['scales']],
        n_random=int(p['n_random']), n_displaced=int(p['n_displaced']), displacement=float(p['displacement']),
        n_perturbed=int(p['n_perturbed']), perturbation=float(p['perturbation']), seed=int(p['seed']),
        states=states, names=names,
    )  # fmt: skip
    if not p['strains']:
        return configs
    return apply_strains(configs, p['strains'])


def apply_strains(configs: list[Configuration], strains) -> list[Configuration]:
    """The strained copies of ``configs`` (each with ``features['origin']``), each state's own ``strains`` (see
    :data:`GENERATION`), in order; ValueError for bad strains."""
    problem = strains_problem(strains)
    if problem:
        raise ValueError(problem)
    out = []
    for cfg in configs:
        for component, eps in strain_list(strains, cfg.features['origin'].split(':')[2]):
            new = strained(cfg, component, float(eps))
            new.features = {'origin': f'{cfg.features["origin"]}:strain {component} {float(eps):+g}'}
            out.append(new)
    return out


@calcfunction
def generate_configurations(parameters: orm.Dict, **structures: orm.StructureData) -> TrainingSetData:
    """Unlabelled configurations with target moments (mu_B) by the paper's recipe, seeded and recorded.

    ``parameters``: see :data:`GENERATION`. Each structure (in the order of its link label) is scaled,
    given FM, layered AFM and random 50/50 states, displaced and its moments perturbed
    (:func:`aiida_mmtp.mtp.structures.initial_configurations`). The attribute ``origins`` says, per
    configuration, which cell, scale, state, displacement and perturbation it is.
    """
    species = list(generation_settings(parameters.get_dict())['species'])
    cells = {name: structure_to_configuration(s, species) for name, s in structures.items()}
    configs = configurations(cells, parameters.get_dict())
    if not configs:
        raise ValueError(f'no configurations: no cell has any of the states {parameters["states"]}')
    return TrainingSetData(configs, species, origins=[cfg.features['origin'] for cfg in configs])


@calcfunction
def subset(configurations: TrainingSetData, indices: orm.List) -> TrainingSetData:
    """The configurations at ``indices`` (0-based, in that order), labels, sources and origins kept."""
    return configurations.take(indices.get_list())


@calcfunction
def free_moment_parameters(parameters: orm.Dict) -> orm.Dict:
    """The cDFT ``parameters`` with no species constrained: a spin-polarised DFT run whose moments start from the
    targets (spinat) and relax to their self-consistent values (T = 0)."""
    return orm.Dict({**parameters.get_dict(), 'constrained': []})


@calcfunction
def perturb_labelled(labels: TrainingSetData, parameters: orm.Dict) -> TrainingSetData:
    """Unlabelled copies of labelled configurations with their (DFT equilibrium) moments perturbed, ``n_perturbed``
    per label: every moment (mu_B) scaled by a uniform factor in [1 - ``perturbation``, 1 + ``perturbation``], signs
    kept, seeded by ``seed``. Origins: those of the labels, ``perturbed0`` becoming ``perturbed1``, ``perturbed2``..."""
    p = generation_settings(parameters.get_dict())
    rng = np.random.default_rng([int(p['seed']), 1])
    origins = labels.origins or [f'label{k + 1}:perturbed0' for k in range(len(labels))]
    configs, names = [], []
    for cfg, origin in zip(labels.get_configurations(), origins):
        for j in range(1, int(p['n_perturbed']) + 1):
            new = cfg.clear_labels()
            new.moments = perturb_moments(cfg.moments, float(p['perturbation']), rng)
            configs.append(new)
            names.append(origin.rsplit(':perturbed', 1)[0] + f':perturbed{j}')
    if not configs:
        raise ValueError('nothing to perturb: no labels, or n_perturbed 0')
    return TrainingSetData(configs, labels.species, origins=names)


@calcfunction
def strain_prepared(start: TrainingSetData, prepared: TrainingSetData, strains: orm.Dict) -> TrainingSetData:
    """The ``prepared`` configurations (the engine's equilibrated or relaxed ``start``, in the same order: their cells,
    positions and moments, mu_B) under ``strains['strains']`` (see :data:`GENERATION`), each state's own; origins
    from ``start``."""
    origins = start.origins
    configs = prepared.get_configurations()
    if len(configs) != len(origins):
        raise ValueError(f'{len(configs)} prepared configurations for {len(origins)} started')
    for cfg, origin in zip(configs, origins):
        cfg.features = {'origin': f'{origin}:prepared'}
    out_configs = apply_strains(configs, strains['strains'])
    return TrainingSetData(out_configs, start.species, origins=[cfg.features['origin'] for cfg in out_configs])
