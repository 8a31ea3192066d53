"""Fitting a potential: linear least-squares start, then L-BFGS-B on the paper's objective."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from .configuration import EV_PER_A3_IN_GPA, Configuration
from .loss import TrainingData, Weights, loss_and_gradient, predict
from .potential import Potential
from .threads import single_blas_thread

__all__ = ['FitResult', 'fit', 'init_linear', 'errors']


@dataclass
class FitResult:
    """Outcome of :func:`fit`: the loss history (one entry per iteration), why it stopped, and errors."""

    potential: Potential
    history: list[float] = field(default_factory=list)
    iterations: int = 0
    message: str = ''
    converged: bool = False
    seconds: float = 0.0
    errors: dict = field(default_factory=dict)


def _linear_slice(pot: Potential) -> slice:
    return slice(pot.n_radial_params, pot.n_params)


def init_linear(pot: Potential, data: TrainingData, ridge: float = 1e-8) -> None:
    """Set species and moment coefficients by least squares on the energies (radial part fixed).

    E_k is linear in these coefficients; with fewer configurations than
    coefficients a small ridge term (relative to the normal matrix) picks the
    minimum-norm solution.
    """
    from .evaluate import evaluate

    lin = _linear_slice(pot)
    rows, rhs = [], []
    theta = pot.get_params()
    for cfg in data.configs:
        if cfg.energy is None:
            continue
        g = evaluate(pot, cfg, gradient=True).grad
        rows.append(g[lin])
        rhs.append(cfg.energy)
    if not rows:
        return
    x, y = np.array(rows), np.array(rhs)
    scale = np.sqrt(np.sum(x * x, axis=0)) + 1e-300
    xs = x / scale
    normal = xs.T @ xs
    normal[np.diag_indices_from(normal)] += ridge * max(np.trace(normal), 1e-300)
    theta[lin] = np.linalg.solve(normal, xs.T @ y) / scale
    pot.set_params(theta)


def errors(pot: Potential, data: TrainingData) -> dict:
    """RMSE and MAE (the paper's Table I quantities) of ``pot`` on ``data``.

    energy per atom (meV/atom), forces (per-atom vector error, meV/A), stress
    (Voigt components, GPa) and magnetic forces (meV/mu_B); counts of labels used.
    """
    pred = predict(pot, data)
    out: dict = {'configurations': len(data)}
    has = data.has
    if has[:, 0].any():
        de = (pred['energy'] - data.e_ref)[has[:, 0]] / data.natoms[has[:, 0]] * 1e3
        out['energy_per_atom_meV'] = _stats(de)
    atom_cfg = np.repeat(np.arange(len(data)), data.natoms)
    mask = has[atom_cfg, 1]
    if mask.any():
        out['forces_meV_per_A'] = _stats(np.linalg.norm(pred['forces'] - data.f_ref, axis=1)[mask] * 1e3)
    if has[:, 2].any():
        vol = np.array([c.volume if c.cell is not None else np.nan for c in data.configs])
        ds = (pred['virial'] - data.w_ref)[has[:, 2]] / vol[has[:, 2], None] * EV_PER_A3_IN_GPA
        out['stress_GPa'] = _stats(ds.ravel())
    mask = has[atom_cfg, 3]
    if mask.any():
        out['mag_forces_meV_per_muB'] = _stats((pred['mag_forces'] - data.t_ref)[mask] * 1e3)
    return out


def _stats(values: np.ndarray) -> dict:
    v = np.abs(np.asarray(values, dtype=float))
    return {'rmse': float(np.sqrt(np.mean(v * v))), 'mae': float(np.mean(v)), 'n': int(v.size)}


@single_blas_thread
def fit(
    pot: Potential,
    configs: Sequence[Configuration] | TrainingData,
    *,
    weights: Weights = Weights(),
    max_iter: int = 1000,
    tol: float = 1e-9,
    reinit_linear: bool | None = None,
    n_threads: int | None = None,
    progress: Callable[[int, float, np.ndarray, float], None] | None = None,
) -> FitResult:
    """Minimise the loss over all parameters of ``pot`` (changed in place and returned in the result).

    ``reinit_linear``: start the linear coefficients from least squares on
    energies (default: only when they are all zero, i.e. an untrained
    potential; a trained one is a warm start). ``tol`` is the relative loss
    decrease per iteration below which L-BFGS-B stops; ``max_iter`` caps the
    iterations. ``progress(iteration, loss, loss_per_term, seconds)`` is
    called after every iteration.
    """
    data = configs if isinstance(configs, TrainingData) else TrainingData(configs, pot)
    if not data.has.any():
        raise ValueError('the training set has no labels (energy, forces, stress or magnetic forces)')
    t0 = time.perf_counter()
    lin = _linear_slice(pot)
    if reinit_linear or (reinit_linear is None and not np.any(pot.get_params()[lin])):
        init_linear(pot, data)
    result = FitResult(potential=pot)
    work = pot.copy()
    last = {}

    def fun(theta):
        work.set_params(theta)
        loss, grad, terms = loss_and_gradient(work, data, weights, n_threads)
        last.update(loss=loss, terms=terms)
        return loss, grad

    def callback(intermediate_result):
        result.iterations += 1
        result.history.append(float(intermediate_result.fun))
        if progress is not None:
            progress(result.iterations, float(intermediate_result.fun), last.get('terms'), time.perf_counter() - t0)

    theta0 = pot.get_params()
    first, _ = fun(theta0)
    result.history.append(float(first))
    if max_iter > 0:
        opt = minimize(
            fun, theta0, jac=True, method='L-BFGS-B', callback=callback,
            options={'maxiter': max_iter, 'ftol': tol, 'gtol': 0.0, 'maxcor': 30},
        )  # fmt: skip
        best = opt.x if opt.fun <= first else theta0
        result.message = str(opt.message)
        result.converged = bool(opt.success)
    else:
        best, result.message, result.converged = theta0, 'no iterations asked for', True
    pot.set_params(best)
    result.seconds = time.perf_counter() - t0
    result.errors = errors(pot, data)
    return result


def print_progress(iteration: int, loss: float, terms: np.ndarray | None, seconds: float) -> None:
    """Default progress line (stderr)."""
    parts = '' if terms is None else ' (E {:.3g}, F {:.3g}, S {:.3g}, T {:.3g})'.format(*terms)
    print(f'train: iteration {iteration:5d}  loss {loss:.6e}{parts}  {seconds:8.1f} s', file=sys.stderr, flush=True)
