"""``FitWorkChain`` (entry point ``mmtp.fit``): fit a potential and build its active set, as one engine job."""

from __future__ import annotations

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain

from ..calculations.train import MmtpTrainCalculation
from ..data.active_set import ActiveSetData
from ..data.potential import MtpPotentialData
from .common import why_failed

__all__ = ['FitWorkChain', 'fit_drift', 'rmse_summary']

_RMSE = (('energy_per_atom_meV', 'E', 'meV/atom'), ('forces_meV_per_A', 'F', 'meV/A'),
         ('stress_GPa', 'S', 'GPa'), ('mag_forces_meV_per_muB', 'T', 'meV/mu_B'))  # fmt: skip


def rmse_summary(report: dict) -> dict:
    """Training RMSEs of a fit report, ``{'rmse_E_meV_per_atom': ..., 'rmse_F_meV_per_A': ..., ...}``, those of
    its held-out test set (``test_rmse_E_meV_per_atom``, ...) where it has one, and, for a refit, those on the
    labels fitted before (``earlier_rmse_...``) and on the new ones (``new_rmse_...``); ``fit_converged`` and
    ``fit_iterations`` of the optimiser."""
    out = {}
    for prefix, name in (
        ('rmse', 'errors'),
        ('test_rmse', 'test_errors'),
        ('earlier_rmse', 'earlier_errors'),
        ('new_rmse', 'new_errors'),
    ):
        errors = report.get(name, {})
        out.update({f'{prefix}_{short}_{unit.replace("/", "_per_")}': errors[key]['rmse']
                    for key, short, unit in _RMSE if key in errors})  # fmt: skip
    if 'converged' in report:
        out.update(fit_converged=bool(report['converged']), fit_iterations=int(report['iterations']))
    return out


#: A refit "degrades" when its RMSE on the labels fitted before exceeds the earlier fit's training RMSE by this
#: factor and by the floor (same units), for E (meV/atom), F (meV/A) and T (meV/mu_B).
DRIFT_FACTOR = 1.5
DRIFT_FLOOR = {'E_meV_per_atom': 1.0, 'F_meV_per_A': 20.0, 'T_meV_per_mu_B': 10.0}


def fit_drift(previous: dict, current: dict) -> str | None:
    """What grew when a refit (``current``: :func:`rmse_summary` with ``earlier_rmse_*``) is measured on the labels
    the earlier fit (``previous``: its ``rmse_*``) was trained on, or None. Growth there is not explained by new,
    harder data: the new labels conflict with the old ones, or the potential is too small for both."""
    grown = []
    for key, floor in DRIFT_FLOOR.items():
        before, after = previous.get(f'rmse_{key}'), current.get(f'earlier_rmse_{key}')
        if before is None or after is None:
            continue
        if after > DRIFT_FACTOR * before and after - before > floor:
            grown.append(
                f'{key.split("_")[0]} {before:.4g} -> {after:.4g} {key.split("_", 1)[1].replace("_per_", "/")}'
            )
    if not grown:
        return None
    return 'the refit is worse on the labels fitted before: ' + ', '.join(grown)


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
        text = ', '.join(f'{k[5:]} {v:.4g}' for k, v in rmse.items() if k.startswith('rmse_'))
        state = 'converged' if rmse.get('fit_converged') else 'stopped at max_iter'
        self.report(f'fitted ({state}, {rmse.get("fit_iterations")} iterations); training RMSE {text}')
        return None
