"""``FitWorkChain`` (entry point ``mmtp.fit``): fit a potential and build its active set, as one engine job."""

from __future__ import annotations

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain

from ..calculations.train import MmtpTrainCalculation
from ..data.active_set import ActiveSetData
from ..data.potential import MtpPotentialData
from .common import why_failed

__all__ = ['FitWorkChain', 'rmse_summary']

_RMSE = (('energy_per_atom_meV', 'E', 'meV/atom'), ('forces_meV_per_A', 'F', 'meV/A'),
         ('stress_GPa', 'S', 'GPa'), ('mag_forces_meV_per_muB', 'T', 'meV/mu_B'))  # fmt: skip


def rmse_summary(report: dict) -> dict:
    """Training RMSEs of a fit report, ``{'rmse_E_meV_per_atom': ..., 'rmse_F_meV_per_A': ..., ...}``, and those of
    its held-out test set (``test_rmse_E_meV_per_atom``, ...) where it has one."""
    out = {}
    for prefix, name in (('rmse', 'errors'), ('test_rmse', 'test_errors')):
        errors = report.get(name, {})
        out.update({f'{prefix}_{short}_{unit.replace("/", "_per_")}': errors[key]['rmse']
                    for key, short, unit in _RMSE if key in errors})  # fmt: skip
    return out


class FitWorkChain(WorkChain):
    """Fit (``mmtp train``) and build the active set of the fitted potential (``mmtp select --train``)."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(MmtpTrainCalculation, namespace='train')
        spec.outline(cls.fit, cls.results)
        spec.output('potential', valid_type=MtpPotentialData, help='The fitted potential.')
        spec.output('active_set', valid_type=ActiveSetData, help='Its active set (maxvol over the training set).')
        spec.output('report', valid_type=orm.Dict, help='The fit report: loss, iterations, RMSE/MAE of E, F, S, T.')
        spec.exit_code(400, 'ERROR_FIT_FAILED', message='The fit failed: {message}')

    def fit(self):
        inputs = AttributeDict(self.exposed_inputs(MmtpTrainCalculation, 'train'))
        settings = inputs.settings.get_dict() if 'settings' in inputs else {}
        inputs.settings = orm.Dict({**settings, 'active_set': True})
        n = len(inputs.training_set)
        self.report(f'fitting {inputs.potential.n_params} parameters to {n} configurations')
        return ToContext(train=self.submit(MmtpTrainCalculation, **inputs))

    def results(self):
        node = self.ctx.train
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_FIT_FAILED.format(message=why_failed(node))
        for name in ('potential', 'active_set', 'report'):
            self.out(name, node.outputs[name])
        rmse = rmse_summary(node.outputs.report.get_dict())
        self.node.base.extras.set_many(rmse)
        self.report('fitted; training RMSE ' + ', '.join(f'{k[5:]} {v:.4g}' for k, v in rmse.items()))
        return None
