"""PNG plots of a campaign: the learning curve and parity plots of the final potential on its training set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..mtp.configuration import EV_PER_A3_IN_GPA
from ..mtp.evaluate import evaluate

__all__ = ['learning_curve', 'parity_data', 'parity_plot']


def _pyplot():
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def learning_curve(iterations: list[dict], path: str | Path) -> Path:
    """Selected configurations per iteration (bars, coloured by stage) and the training-set size (line)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    stages = list(dict.fromkeys(it['stage'] for it in iterations))
    colours = plt.cm.tab10(np.arange(len(stages)) % 10)
    x = np.arange(1, len(iterations) + 1)
    for stage, colour in zip(stages, colours):
        mask = np.array([it['stage'] == stage for it in iterations])
        ax.bar(x[mask], [it['selected'] for it, m in zip(iterations, mask) if m], color=colour, label=stage)
    ax.set_xlabel('active-learning iteration')
    ax.set_ylabel('configurations selected')
    ax.set_xticks(x)
    ax.legend(title='stage', loc='upper right')
    twin = ax.twinx()
    twin.plot(x, [it.get('training_set_size', np.nan) for it in iterations], 'k.-')
    twin.set_ylabel('training-set size')
    ax.set_title('Selections per iteration (0: the stage converged)')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def parity_data(potential, configurations) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(DFT, mMTP) pairs: energy per atom (eV/atom), force components (eV/A), stress components (GPa),
    magnetic forces of the magnetic atoms (eV/mu_B), over every labelled configuration."""
    keys = ('energy', 'forces', 'stress', 'mag_forces')
    ref = {k: [] for k in keys}
    pred = {k: [] for k in keys}
    for cfg in configurations:
        res = evaluate(potential, cfg)
        if cfg.energy is not None:
            ref['energy'].append([cfg.energy / cfg.natoms])
            pred['energy'].append([res.energy / cfg.natoms])
        if cfg.forces is not None:
            ref['forces'].append(cfg.forces.ravel())
            pred['forces'].append(res.forces.ravel())
        if cfg.virial is not None:
            ref['stress'].append(cfg.stress * EV_PER_A3_IN_GPA)
            pred['stress'].append(res.stress * EV_PER_A3_IN_GPA)
        if cfg.mag_forces is not None:
            magnetic = np.abs(cfg.moments) > 0.5
            ref['mag_forces'].append(cfg.mag_forces[magnetic])
            pred['mag_forces'].append(res.mag_forces[magnetic])
    return {k: (np.concatenate(ref[k]), np.concatenate(pred[k])) for k in keys if ref[k]}


def parity_plot(data: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, test: dict | None = None) -> Path:
    """Four panels, DFT on x and mMTP on y, with each RMSE in its title; ``test`` (same form, held-out labels)
    drawn in another colour with its own RMSE."""
    plt = _pyplot()
    titles = {'energy': ('E', 'eV/atom'), 'forces': ('F', 'eV/A'), 'stress': ('S', 'GPa'),
              'mag_forces': ('T', 'eV/mu_B')}  # fmt: skip
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for ax, key in zip(axes, titles):
        name, unit = titles[key]
        if key not in data:
            ax.set_axis_off()
            continue
        ref, pred = data[key]
        held = (test or {}).get(key)
        values = np.concatenate([ref, pred, *(held if held is not None else ())])
        lo, hi = float(values.min()), float(values.max())
        ax.plot([lo, hi], [lo, hi], 'k--', lw=0.8)
        rmse = float(np.sqrt(np.mean((ref - pred) ** 2)))
        ax.plot(ref, pred, '.', ms=3, alpha=0.6, label=f'training ({rmse:.3g})')
        title = f'{name}: RMSE {rmse:.3g} {unit}'
        if held is not None:
            rmse_test = float(np.sqrt(np.mean((held[0] - held[1]) ** 2)))
            ax.plot(held[0], held[1], 'x', ms=4, color='tab:red', label=f'test ({rmse_test:.3g})')
            ax.legend(loc='upper left', fontsize=8)
            title += f', test {rmse_test:.3g}'
        ax.set_title(title)
        ax.set_xlabel(f'cDFT {name} ({unit})')
        ax.set_ylabel(f'mMTP {name} ({unit})')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
