"""``CdftParser`` (entry point ``mmtp.abinit.cdft``): labels and exit codes of a ``CdftCalculation``.

Only a completed, converged run whose constrained moments sit on their
targets yields the ``output_arrays`` labels; every other run ends with an
exit code (3xx: no usable output, 4xx: restartable) and only the
diagnostics in ``output_parameters``.
"""

from __future__ import annotations

import numpy as np
from aiida import orm
from aiida.engine import ExitCode
from aiida.parsers import Parser

from ..calculations.cdft import CdftCalculation
from .abinit_output import AbinitOutput, parse_abo

__all__ = ['CdftParser']


class CdftParser(Parser):
    """Turn ``aiida.abo`` (and the stdout log, where ABINIT writes its error blocks) into nodes."""

    def parse(self, **kwargs) -> ExitCode | None:
        calc = self.node
        names = self.retrieved.base.repository.list_object_names()
        log = self.retrieved.get_object_content(CdftCalculation._LOG) if CdftCalculation._LOG in names else ''
        walltime = calc.exit_status == CdftCalculation.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status
        if CdftCalculation._OUTPUT not in names:
            out = parse_abo('', log)
            if out.errors:
                return self.exit_codes.ERROR_ABINIT_ERROR.format(message=out.errors[0])
            if walltime:
                return self.exit_codes.ERROR_OUT_OF_WALLTIME
            return self.exit_codes.ERROR_OUTPUT_MISSING.format(filename=CdftCalculation._OUTPUT)
        text = self.retrieved.get_object_content(CdftCalculation._OUTPUT)
        out = parse_abo(text, log)

        symbols, targets, settings, flip = CdftCalculation.resolve(calc.inputs)
        params = calc.inputs.parameters.get_dict()
        sign = -1.0 if flip else 1.0
        summary = {
            'abinit_version': out.version,
            'completed': out.completed,
            'scf_converged': out.scf_converged,
            'scf_steps': out.scf_steps,
            'spin_flipped': flip,
            'n_warnings': len(out.warnings),
            'errors': out.errors,
        }

        exit_code = self._failure(out, text, walltime, settings.nstep)
        if exit_code is None and not settings.constrained and out.dedm is None and out.moments is not None:
            out.dedm = np.zeros_like(out.moments)  # a free run: its self-consistent moments are stationary, T = 0
        if exit_code is None:
            missing = [name for name in ('energy', 'forces', 'stress', 'moments', 'dedm') if getattr(out, name) is None]
            if missing:
                exit_code = self.exit_codes.ERROR_OUTPUT_LABELS_MISSING.format(missing=', '.join(missing))
        if exit_code is None:
            exit_code = self._check_targets(out, targets, sign, symbols, settings.constrained, params, summary)
        if exit_code is not None:
            self.out('output_parameters', orm.Dict(summary))
            return exit_code

        arrays = orm.ArrayData()
        arrays.set_array('forces', out.forces)
        arrays.set_array('stress', out.stress)
        arrays.set_array('moments', sign * out.moments)
        arrays.set_array('mag_forces', sign * out.mag_forces)
        arrays.set_array('target_moments', targets)
        summary.update(
            {
                'energy': out.energy,
                'energy_units': 'eV',
                'energy_per_atom': out.energy / len(symbols),
                'max_force': float(np.linalg.norm(out.forces, axis=1).max()),
                'max_mag_force': float(np.abs(out.mag_forces).max()),
            }
        )
        self.out('output_parameters', orm.Dict(summary))
        self.out('output_arrays', arrays)
        return None

    def _failure(self, out: AbinitOutput, text: str, walltime: bool, nstep: int) -> ExitCode | None:
        """Exit code of a run that ABINIT did not finish well, in order of precedence; None if it did."""
        if out.errors:
            return self.exit_codes.ERROR_ABINIT_ERROR.format(message=out.errors[0])
        if 'Approaching time limit' in text or (walltime and not out.completed):
            return self.exit_codes.ERROR_OUT_OF_WALLTIME
        if not out.completed:
            return self.exit_codes.ERROR_OUTPUT_INCOMPLETE
        if not out.scf_converged:
            return self.exit_codes.ERROR_SCF_NOT_CONVERGED.format(nstep=nstep)
        return None

    def _check_targets(
        self,
        out: AbinitOutput,
        targets: np.ndarray,
        sign: float,
        symbols: list[str],
        constrained: list[str],
        params: dict,
        summary: dict,
    ) -> ExitCode | None:
        """The run used the targets we wrote (``sign * targets``), and the constrained moments reached them."""
        written = sign * targets + 0.0  # (no negative zeros in messages)
        if (
            out.targets is None
            or out.targets.shape != written.shape
            or not np.allclose(out.targets, written, atol=1e-6)
        ):
            return self.exit_codes.ERROR_TARGETS_MISMATCH.format(
                detail=f'wrote {written.tolist()}, ABINIT echoes '
                f'{None if out.targets is None else out.targets.tolist()}'
            )
        mask = np.array([s in constrained for s in symbols])
        deviation = np.where(mask, np.abs(out.moments - written), 0.0)
        summary['max_moment_deviation'] = float(deviation.max())
        tolerance = float(params.get('moment_tolerance', 1e-3))
        if deviation.max() > tolerance:
            k = int(np.argmax(deviation))
            return self.exit_codes.ERROR_MOMENTS_OFF_TARGET.format(
                detail=f'site {k + 1} ({symbols[k]}) has {sign * out.moments[k]:.4f} mu_B for the target '
                f'{targets[k]:.4f} (tolerance {tolerance} mu_B)'
            )
        return None
