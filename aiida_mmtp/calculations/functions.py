"""Calcfunctions for cheap transforms with provenance: k-point meshes, training-set merges, label hygiene.

Nothing here does heavy numerics (those are CalcJobs); each function only
reshapes what it is given.
"""

from __future__ import annotations

from aiida import orm
from aiida.engine import calcfunction

from ..data.training_set import TrainingSetData, fidelity_difference
from ..mtp.hygiene import HygieneRule, screen_labels

__all__ = ['concatenate_training_sets', 'create_kpoints_from_distance', 'merge_training_sets', 'screen_new_labels']


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
    The merged set keeps the first set's fidelity key when all agree (k-point SETS compared, not how they were
    chosen), or ``{'mixed': [...]}`` with each one; each label keeps its k-point sampling.
    """
    allow = bool(allow_different_fidelity.value) if allow_different_fidelity is not None else False
    return concatenate_training_sets([sets[label] for label in sorted(sets)], allow_different_fidelity=allow)


def concatenate_training_sets(
    ordered: list[TrainingSetData], allow_different_fidelity: bool = False
) -> TrainingSetData:
    """The body of :func:`merge_training_sets` (for use inside other calcfunctions): ``ordered`` in that order, checked
    for species and fidelity, each label keeping its source and k-point sampling (and its origin, where every set
    records ``origins``); a new, unstored node, which refers to ``ordered`` where they are all stored (no label is
    copied) and holds copies of their labels otherwise."""
    if not ordered:
        raise ValueError('nothing to merge: give at least one training set')
    first = ordered[0]
    for other in ordered[1:]:
        first.check_compatible(other, allow_different_fidelity=allow_different_fidelity)
    fidelities = [s.fidelity for s in ordered]
    same = all(not fidelity_difference(fidelities[0], f) for f in fidelities)
    fidelity = fidelities[0] if same else {'mixed': fidelities}
    if all(s.is_stored for s in ordered):  # by reference: each label is stored once, however often it is merged
        return TrainingSetData(parts=ordered, fidelity=fidelity)
    configurations = [cfg for s in ordered for cfg in s.get_configurations()]
    sources = [src for s in ordered for src in s.sources]
    kpoints = [kp for s in ordered for kp in s.kpoints]
    origins = [s.origins for s in ordered]
    merged_origins = [origin for o in origins for origin in o] if all(o is not None for o in origins) else None
    return TrainingSetData(configurations, first.species, fidelity=fidelity, sources=sources, kpoints=kpoints,
                           origins=merged_origins)  # fmt: skip


@calcfunction
def screen_new_labels(new: TrainingSetData, rule: orm.Dict, existing: TrainingSetData | None = None) -> dict:
    """Label hygiene (:mod:`aiida_mmtp.mtp.hygiene`): which of ``new`` may join ``existing``.

    Outputs ``refused`` (Dict: ``n_refused`` and, per refused label, its index in ``new``, the cDFT run that
    made it and the reason) and, unless every label was refused, ``accepted`` (the others, sources,
    k-point samplings and origins kept).
    """
    problems = screen_labels(new.get_configurations(), existing.get_configurations() if existing is not None else [],
                             HygieneRule.from_dict(rule.get_dict()))  # fmt: skip
    sources = new.sources
    refused = [{'index': k, 'source': sources[k], 'reason': why} for k, why in enumerate(problems) if why]
    out = {'refused': orm.Dict({'n_refused': len(refused), 'refused': refused})}
    keep = [k for k, why in enumerate(problems) if why is None]
    if keep:
        out['accepted'] = new.take(keep)
    return out
