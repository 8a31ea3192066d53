"""``ActiveSetData``: the maxvol active set of a fitted potential (an ``.als`` file) for grading."""

from __future__ import annotations

import io

import numpy as np
from aiida import orm

from ..mtp.selection import ActiveSet

__all__ = ['ActiveSetData']


class ActiveSetData(orm.SinglefileData):
    """The m x m matrix A (and A^-1) of the most linearly independent rows dE/dtheta / N (or, in neighbourhood
    mode, dV_i/dtheta of single atoms).

    Attributes (queryable): ``n_params`` (m), ``params_hash`` (the parameters it belongs to: a potential
    refitted needs a new active set), ``n_from_training`` (rows that are training configurations,
    the others being unit rows) and ``neighborhoods`` (per-atom rows).
    """

    FILENAME = 'active_set.als'

    def __init__(self, active_set: ActiveSet, **kwargs) -> None:
        super().__init__(io.BytesIO(active_set.to_bytes()), filename=self.FILENAME, **kwargs)
        self.base.attributes.set('n_params', int(active_set.a.shape[0]))
        self.base.attributes.set('params_hash', active_set.potential)
        self.base.attributes.set('n_from_training', int(np.count_nonzero(active_set.source >= 0)))
        self.base.attributes.set('neighborhoods', bool(active_set.neighborhoods))

    @classmethod
    def from_file(cls, path) -> ActiveSetData:
        """Read an ``.als`` file written by ``mmtp select``."""
        return cls(ActiveSet.load(path))

    def get_active_set(self) -> ActiveSet:
        with self.open(mode='rb') as handle:
            return ActiveSet.load(io.BytesIO(handle.read()))
