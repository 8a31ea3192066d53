"""``TrainingSetData``: labelled configurations as arrays, counts and the fidelity key as attributes."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from aiida import orm

from ..mtp.ase_io import write_extxyz
from ..mtp.cfg_io import write_cfg
from ..mtp.configuration import Configuration
from ..mtp.kpoints import kpoint_set_difference

__all__ = ['TrainingSetData', 'fidelity_difference']

_LABELS = ('energy', 'forces', 'virial', 'mag_forces')


#: One label's k-point sampling: (mesh (3 integers), shifts (S, 3) in units of the mesh spacing).
KpointSampling = tuple[Sequence[int], Sequence[Sequence[float]]]


def fidelity_difference(a: dict, b: dict) -> list[str]:
    """The keys in which two fidelity keys differ; ``kpoints`` compares the k-point SETS sampled, not their names.

    A key's ``kpoints.reference`` (``cell`` rows A, ``mesh``, ``shifts``) is one label's sampling: two keys with
    equivalent reference sets (:func:`aiida_mmtp.mtp.kpoints.kpoint_set_difference`) agree on k-points, whatever
    rule chose the meshes. Keys without a reference compare ``kpoints`` as given. Which species were constrained
    (``constrained``) is not a difference: a free spin-polarised run is the constrained functional's solution at its
    own self-consistent moments (T = 0), so free and constrained labels at one setting are one fidelity.
    """
    keys = sorted(k for k in set(a) | set(b) if k not in ('kpoints', 'constrained') and a.get(k) != b.get(k))
    ka, kb = a.get('kpoints'), b.get('kpoints')
    ra, rb = (ka or {}).get('reference'), (kb or {}).get('reference')
    if ra and rb:
        if kpoint_set_difference(ra['cell'], ra['mesh'], ra['shifts'], rb['cell'], rb['mesh'], rb['shifts']):
            keys.append('kpoints')
    elif {k: v for k, v in (ka or {}).items() if k != 'reference'} != {
        k: v for k, v in (kb or {}).items() if k != 'reference'
    }:  # keys made before references were recorded
        keys.append('kpoints')
    return keys


def _or_nan(value, shape: tuple) -> np.ndarray:
    """``value`` as an array, or NaNs of ``shape`` where the label is absent (``has`` says which)."""
    return np.full(shape, np.nan) if value is None else np.asarray(value, dtype=float)


class TrainingSetData(orm.ArrayData):
    """A set of periodic configurations with their labels (eV, eV/A, virial eV, eV/mu_B).

    Arrays (K configurations, N atoms in all): ``natoms`` (K,), ``cells`` (K, 3, 3),
    ``types`` (N,), ``positions`` (N, 3), ``moments`` (N,), ``energy`` (K,),
    ``forces`` (N, 3), ``virial`` (K, 6), ``mag_forces`` (N,) and ``has`` (K, 4),
    which says which of energy, forces, virial and magnetic forces each
    configuration carries. Attributes: ``species``, ``n_configurations``,
    ``n_atoms``, ``label_counts``, ``fidelity`` (how the labels were made:
    code version, pseudopotential md5s, cutoff, k-points, smearing, U, cDFT
    settings), so that sets of different fidelity are never mixed by accident,
    and ``sources``: per configuration, the UUID of the calculation that
    labelled it ('' where unknown), and, where recorded, ``origins``: what each
    configuration is (e.g. ``conventional:FM:scale1.0:displaced1``). Where the labels' k-point samplings are
    known, the array ``kmesh`` (K, 3) (0 where unknown) and the attribute
    ``kshifts`` hold them, and every one must sample the same k-point set as
    the fidelity key's ``kpoints.reference``: one training set, one fidelity.

    A set made of other stored sets (``parts``, as :func:`merge_training_sets` makes it) holds no arrays and no
    per-label attributes of its own: the attribute ``parts`` lists the UUIDs of the stored sets that hold its labels,
    in order, so that a campaign's training set of iteration n costs the storage of its new labels only, not of all n.
    Every accessor reads through to them.
    """

    def __init__(
        self,
        configurations: Sequence[Configuration] = (),
        species: Sequence[str] = (),
        fidelity: dict | None = None,
        sources: Sequence[str | None] | None = None,
        kpoints: Sequence[KpointSampling | None] | None = None,
        parts: Sequence[TrainingSetData] | None = None,
        origins: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if parts is not None:
            self._refer_to(list(parts), fidelity)
            return
        configs = list(configurations)
        if not configs:
            raise ValueError('a training set needs at least one configuration')
        sources = [''] * len(configs) if sources is None else [src or '' for src in sources]
        if len(sources) != len(configs):
            raise ValueError(f'{len(sources)} sources given for {len(configs)} configurations')
        if kpoints is not None and len(kpoints) != len(configs):
            raise ValueError(f'{len(kpoints)} k-point samplings given for {len(configs)} configurations')
        if origins is not None and len(origins) != len(configs):
            raise ValueError(f'{len(origins)} origins given for {len(configs)} configurations')
        for k, cfg in enumerate(configs):
            if cfg.cell is None:
                raise ValueError(f'configuration {k + 1} is not periodic; training sets hold periodic cells only')
            if cfg.types.max() >= len(species):
                raise ValueError(f'configuration {k + 1} has species type {cfg.types.max()}, only {len(species)} named')
        n = sum(c.natoms for c in configs)
        has = np.array([[c.energy is not None, c.forces is not None, c.virial is not None,
                         c.mag_forces is not None] for c in configs])  # fmt: skip
        self.set_array('natoms', np.array([c.natoms for c in configs], dtype=np.int64))
        self.set_array('cells', np.array([c.cell for c in configs]))
        self.set_array('types', np.concatenate([c.types for c in configs]).astype(np.int64))
        self.set_array('positions', np.concatenate([c.positions for c in configs]))
        self.set_array('moments', np.concatenate([_or_nan(c.moments, (c.natoms,)) for c in configs]))
        self.set_array('energy', np.array([_or_nan(c.energy, ()) for c in configs]))
        self.set_array('forces', np.concatenate([_or_nan(c.forces, (c.natoms, 3)) for c in configs]))
        self.set_array('virial', np.array([_or_nan(c.virial, (6,)) for c in configs]))
        self.set_array('mag_forces', np.concatenate([_or_nan(c.mag_forces, (c.natoms,)) for c in configs]))
        self.set_array('has', has)
        self.base.attributes.set('species', list(species))
        self.base.attributes.set('n_configurations', len(configs))
        self.base.attributes.set('n_atoms', int(n))
        self.base.attributes.set('label_counts', {name: int(has[:, k].sum()) for k, name in enumerate(_LABELS)})
        self.base.attributes.set('fidelity', dict(fidelity or {}))
        self.base.attributes.set('sources', sources)
        if origins is not None:
            self.base.attributes.set('origins', [str(o) for o in origins])
        if kpoints is not None and any(kp is not None for kp in kpoints):
            self._set_kpoints(configs, kpoints, dict(fidelity or {}))

    def _refer_to(self, parts: list[TrainingSetData], fidelity: dict | None) -> None:
        """A set of the labels of ``parts`` (stored sets, checked compatible by the caller), by reference."""
        if not parts:
            raise ValueError('a training set needs at least one configuration')
        leaves = [leaf for part in parts for leaf in part._leaves()]
        unstored = [k + 1 for k, leaf in enumerate(leaves) if not leaf.is_stored]
        if unstored:
            raise ValueError(f'a set made by reference needs stored parts; part {unstored[0]} is not stored')
        counts = [leaf.base.attributes.get('label_counts') for leaf in leaves]
        self.base.attributes.set('species', parts[0].species)
        self.base.attributes.set('n_configurations', sum(len(leaf) for leaf in leaves))
        self.base.attributes.set('n_atoms', sum(int(leaf.base.attributes.get('n_atoms')) for leaf in leaves))
        self.base.attributes.set('label_counts', {name: sum(c[name] for c in counts) for name in _LABELS})
        self.base.attributes.set('fidelity', dict(fidelity or {}))
        self.base.attributes.set('parts', [leaf.uuid for leaf in leaves])

    def _leaves(self) -> list[TrainingSetData]:
        """The sets that hold this set's arrays, in order: itself, or its parts."""
        uuids = self.base.attributes.get('parts', None)
        if uuids is None:
            return [self]
        if getattr(self, '_leaf_nodes', None) is None:
            self._leaf_nodes = [orm.load_node(uuid) for uuid in uuids]
        return self._leaf_nodes

    @property
    def by_reference(self) -> bool:
        """Whether this set holds its labels by reference to other sets (attribute ``parts``)."""
        return self.base.attributes.get('parts', None) is not None

    @property
    def origins(self) -> list[str] | None:
        """What each configuration is (e.g. ``conventional:FM:scale1.0:displaced1``), or None where not recorded."""
        if not self.by_reference:
            return self.base.attributes.get('origins', None)
        origins = [leaf.origins for leaf in self._leaves()]
        return None if any(o is None for o in origins) else [x for o in origins for x in o]

    def take(self, indices: Sequence[int]) -> TrainingSetData:
        """A new, unstored set of the configurations at ``indices`` (0-based, in that order) with their labels,
        sources, k-point samplings and origins; the fidelity key is this set's."""
        configs = self.get_configurations()
        keep = [int(k) for k in indices]
        sources, kpoints, origins = self.sources, self.kpoints, self.origins
        return TrainingSetData(
            [configs[k] for k in keep],
            self.species,
            fidelity=self.fidelity,
            sources=[sources[k] for k in keep],
            kpoints=[kpoints[k] for k in keep],
            origins=None if origins is None else [origins[k] for k in keep],
        )

    def _set_kpoints(self, configs: list[Configuration], kpoints: Sequence, fidelity: dict) -> None:
        """Store each label's mesh and shifts; refuse any that samples another set than the key's reference."""
        reference = (fidelity.get('kpoints') or {}).get('reference')
        for k, (cfg, kp) in enumerate(zip(configs, kpoints)):
            if kp is None or reference is None:
                continue
            why = kpoint_set_difference(reference['cell'], reference['mesh'], reference['shifts'], cfg.cell, *kp)
            if why:
                raise ValueError(f'configuration {k + 1} was labelled on another k-point set than the training set '
                                 f'({why}): labels of one set need one k-point set')  # fmt: skip
        self.set_array('kmesh', np.array([kp[0] if kp is not None else (0, 0, 0) for kp in kpoints], dtype=np.int64))
        shifts = [[list(map(float, s)) for s in np.reshape(kp[1], (-1, 3))] if kp is not None else [] for kp in kpoints]
        self.base.attributes.set('kshifts', shifts)

    @property
    def species(self) -> list[str]:
        return list(self.base.attributes.get('species'))

    @property
    def fidelity(self) -> dict:
        return dict(self.base.attributes.get('fidelity'))

    @property
    def sources(self) -> list[str]:
        """UUID of the calculation that labelled each configuration ('' where unknown)."""
        if self.by_reference:
            return [src for leaf in self._leaves() for src in leaf.sources]
        return list(self.base.attributes.get('sources', [''] * len(self)))

    @property
    def kpoints(self) -> list[KpointSampling | None]:
        """Per configuration, the (mesh, shifts) it was labelled with, or None where unknown."""
        if self.by_reference:
            return [kp for leaf in self._leaves() for kp in leaf.kpoints]
        if 'kmesh' not in self.get_arraynames():
            return [None] * len(self)
        shifts = self.base.attributes.get('kshifts')
        return [(tuple(int(x) for x in mesh), shift) if any(mesh) else None
                for mesh, shift in zip(self.get_array('kmesh').tolist(), shifts)]  # fmt: skip

    def __len__(self) -> int:
        return int(self.base.attributes.get('n_configurations'))

    def get_configurations(self) -> list[Configuration]:
        """The configurations, exactly as stored."""
        if self.by_reference:
            return [cfg for leaf in self._leaves() for cfg in leaf.get_configurations()]
        natoms = self.get_array('natoms')
        starts = np.concatenate([[0], np.cumsum(natoms)])
        arrays = {name: self.get_array(name) for name in ('cells', 'types', 'positions', 'moments', 'energy',
                                                           'forces', 'virial', 'mag_forces', 'has')}  # fmt: skip
        out = []
        for k in range(len(natoms)):
            sl = slice(starts[k], starts[k + 1])
            has = arrays['has'][k]
            moments = arrays['moments'][sl]
            out.append(Configuration(
                positions=arrays['positions'][sl], types=arrays['types'][sl], cell=arrays['cells'][k],
                moments=None if np.all(np.isnan(moments)) else moments,
                energy=float(arrays['energy'][k]) if has[0] else None,
                forces=arrays['forces'][sl] if has[1] else None,
                virial=arrays['virial'][k] if has[2] else None,
                mag_forces=arrays['mag_forces'][sl] if has[3] else None,
            ))  # fmt: skip
        return out

    def export_cfg(self, path: str | os.PathLike) -> None:
        """Write an MLIP ``.cfg`` file (types are indices into ``species``)."""
        write_cfg(self.get_configurations(), path)

    def export_extxyz(self, path: str | os.PathLike) -> None:
        """Write an extxyz file with moments and magnetic forces."""
        write_extxyz(self.get_configurations(), path, self.species)

    def check_compatible(self, other: TrainingSetData, allow_different_fidelity: bool = False) -> None:
        """Refuse to merge sets with other species or (unless allowed) another fidelity key, saying which."""
        if self.species != other.species:
            raise ValueError(f'training sets have different species: {self.species} and {other.species}')
        keys = fidelity_difference(self.fidelity, other.fidelity)
        if not allow_different_fidelity and keys:
            raise ValueError(f'training sets were labelled with different settings ({", ".join(keys)}); '
                             'merge them only on purpose (allow_different_fidelity=True)')  # fmt: skip
