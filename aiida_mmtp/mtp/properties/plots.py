"""PNG figures of the property calculations (matplotlib, Agg): convergence, phonons, QHA."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .qha import GAS_CONSTANT

__all__ = ['plot_convergence', 'plot_phonons', 'plot_qha', 'plot_scans']


def _pyplot():
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def plot_convergence(path: Path, n: np.ndarray, energy: tuple, force: tuple, title: str) -> None:
    """Running mean +- standard error of the energy per atom and of the x force on the displaced atom against the
    number of states, each relative to its final mean (meV/atom, meV/A; ``energy``, ``force``: (mean, sem) in
    those units)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    series = ((energy, 'E - final mean (meV/atom)'), (force, f'F_x - final mean (meV/A); final {force[0][-1]:.4g}'))
    for ax, ((mean, sem), label) in zip(axes, series):
        mean = mean - mean[-1]
        ax.plot(n, mean, color='C0')
        ax.fill_between(n, mean - np.nan_to_num(sem), mean + np.nan_to_num(sem), color='C0', alpha=0.25)
        ax.set_xlabel('number of magnetic states')
        ax.set_ylabel(label)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_phonons(path: Path, bands: dict, dos: dict, title: str) -> None:
    """Band structure along the fcc path (THz) beside the total DOS."""
    plt = _pyplot()
    fig, (ax, ax_dos) = plt.subplots(1, 2, figsize=(9, 4.5), sharey=True, gridspec_kw={'width_ratios': [4, 1]})
    x, freqs, points = bands['distances'], bands['frequencies'], bands['segment_points']
    for start in range(0, len(x), points):
        ax.plot(x[start : start + points], freqs[start : start + points], color='C0', lw=1)
    ticks, labels = bands['ticks'], _tick_labels(bands)
    for t in ticks:
        ax.axvline(t, color='0.7', lw=0.6)
    ax.axhline(0.0, color='0.5', lw=0.6)
    ax.set_xticks(ticks, labels)
    ax.set_xlim(ticks[0], ticks[-1])
    ax.set_ylabel('frequency (THz)')
    ax.set_title(title)
    ax_dos.plot(dos['dos'], dos['frequency'], color='C1')
    ax_dos.set_xlabel('DOS')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _tick_labels(bands: dict) -> list[str]:
    """One label per tick; where a path segment ends and the next starts elsewhere, 'K|U'."""
    labels, out, k = bands['labels'], [], 0
    segments_end = [not c for c in bands['connections']]
    out.append(labels[0])
    k = 1
    for i, end in enumerate(segments_end):
        if end and i < len(segments_end) - 1:
            out.append(f'{labels[k]}|{labels[k + 1]}')
            k += 2
        else:
            out.append(labels[k])
            k += 1
    return out


def plot_qha(path: Path, result: dict, neel: float | None, title: str) -> None:
    """Linear thermal expansion (1e-6/K) and Cp per atom (J/K/mol) vs T; dashed below the Neel temperature."""
    plt = _pyplot()
    t = result['temperatures']
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    series = (
        (result['alpha'] * 1e6, 'linear thermal expansion (1e-6 / K)'),
        (result['cp'], 'Cp per atom (J / K / mol)'),
    )
    for ax, (y, label) in zip(axes, series):
        if neel:
            below, above = t <= neel, t >= neel
            ax.plot(t[below], y[below], '--', color='C0')
            ax.plot(t[above], y[above], '-', color='C0', label='QHA')
            ax.axvline(neel, color='0.6', lw=0.8, ls=':')
            ax.text(neel, ax.get_ylim()[1] * 0.95, f' T_N = {neel:g} K', fontsize=8, va='top')
        else:
            ax.plot(t, y, '-', color='C0', label='QHA')
        ax.set_xlabel('temperature (K)')
        ax.set_ylabel(label)
    axes[1].axhline(3 * GAS_CONSTANT, color='C3', lw=0.8, ls='-.', label='3R (Dulong-Petit)')
    axes[1].legend(fontsize=8, loc='lower right')
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scans(path: Path, reference: dict, potential: dict) -> None:
    """E(m) and E(V) of each ordered state: the reference's points beside the potential's on the same cells
    (meV/atom relative to each curve's lowest reference point)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for k, state in enumerate(s for s in reference if isinstance(reference[s], dict)):
        for ax, key, column in ((axes[0], 'moment', 'curve'), (axes[1], 'eos', 'curve')):
            ref = np.array(reference[state].get(key, {}).get(column, []), dtype=float)
            pot = np.array(potential.get(state, {}).get(key, {}).get(column, []), dtype=float)
            if not len(ref):
                continue
            base = ref[:, 1].min()
            ax.plot(ref[:, 0], (ref[:, 1] - base) * 1e3, 'o', color=f'C{k}', label=f'{state} reference')
            if len(pot):
                ax.plot(pot[:, 0], (pot[:, 1] - pot[:, 1].min()) * 1e3, '-', color=f'C{k}', label=f'{state} potential')
    axes[0].set_xlabel('moment size of the magnetic atoms (mu_B)')
    axes[1].set_xlabel('volume (A^3/atom)')
    for ax in axes:
        ax.set_ylabel('E - lowest (meV/atom)')
        ax.legend(fontsize=8)
    fig.suptitle('same cells: reference labels (points) and the potential (lines)')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
