"""Calcfunctions for cheap transforms with provenance: k-point meshes, training-set merges.

Nothing here does heavy numerics (those are CalcJobs); each function only
reshapes what it is given.
"""

from __future__ import annotations

from aiida import orm
from aiida.engine import calcfunction

from ..data.training_set import TrainingSetData

__all__ = ['create_kpoints_from_distance', 'merge_training_sets']


@calcfunction
def create_kpoints_from_distance(
    structure: orm.StructureData, distance: orm.Float, force_parity: orm.Bool
) -> orm.KpointsData:
    """A Gamma-centred mesh with at most ``distance`` (1/Angstrom, 2*pi included) between k-points."""
    kpoints = orm.KpointsData()
    kpoints.set_cell_from_structure(structure)
    kpoints.set_kpoints_mesh_from_density(distance.value, force_parity=force_parity.value)
    return kpoints


@calcfunction
def merge_training_sets(allow_different_fidelity: orm.Bool | None = None, **sets: TrainingSetData) -> TrainingSetData:
    """One training set from several, in the order of their link labels.

    Refuses sets of other species, and (unless ``allow_different_fidelity``)
    sets labelled with different settings: the error names the keys that differ.
    The merged set keeps the common fidelity key, or ``{'mixed': [...]}`` with each one.
    """
    if not sets:
        raise ValueError('nothing to merge: give at least one training set')
    allow = bool(allow_different_fidelity.value) if allow_different_fidelity is not None else False
    ordered = [sets[label] for label in sorted(sets)]
    first = ordered[0]
    for other in ordered[1:]:
        first.check_compatible(other, allow_different_fidelity=allow)
    fidelities = [s.fidelity for s in ordered]
    fidelity = fidelities[0] if all(f == fidelities[0] for f in fidelities) else {'mixed': fidelities}
    configurations = [cfg for s in ordered for cfg in s.get_configurations()]
    sources = [src for s in ordered for src in s.sources]
    return TrainingSetData(configurations, first.species, fidelity=fidelity, sources=sources)
