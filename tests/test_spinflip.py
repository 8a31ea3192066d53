"""Moves of the sign pattern during MD (issue 15): Metropolis spin flips sample Boltzmann weights, DLM redraws sample
patterns uniformly, every trial state is graded, and the moves run through ``mmtp md`` and the simulate CalcJob."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase import units
from conftest import fm_fitted_potential, fm_reference_cells, stored_potential
from scipy import stats

from aiida_mmtp.mtp.evaluate import evaluate
from aiida_mmtp.mtp.reference import MagneticPairPotential
from aiida_mmtp.mtp.selection import ActiveSet
from aiida_mmtp.mtp.simulate import Extrapolation, Grader, equilibrate_moments, run_md
from aiida_mmtp.mtp.spinflip import SpinMoves, flip_trial, metropolis_flips, redraw_signs
from aiida_mmtp.mtp.structures import rattle, rocksalt


def cell8():
    """The 8-atom B1 cell, slightly rattled (no two Cr equivalent), Cr at 2 mu_B up."""
    cfg = rattle(rocksalt(4.15), 0.05, np.random.default_rng(3))
    cfg.moments = np.where(cfg.types == 0, 2.0, 0.0)
    return cfg


def pattern_energies(pot, cfg) -> dict[tuple, float]:
    """Equilibrated energy (eV) of each of the 16 sign patterns of the 4 Cr, atoms fixed."""
    cr = np.flatnonzero(cfg.types == 0)
    energies = {}
    for pattern in itertools.product([1.0, -1.0], repeat=cr.size):
        signs = np.zeros(cfg.natoms)
        signs[cr] = pattern
        start = cfg.clear_labels()
        start.moments = 2.0 * signs
        eq, _ = equilibrate_moments(pot, start, tol=1e-6, signs=signs)
        energies[pattern] = float(eq.energy)
    return energies


def test_metropolis_flips_sample_the_boltzmann_weights_of_the_sign_patterns():
    """At fixed atoms, the chain of flips visits patterns with frequencies exp(-E/kT) / Z of their equilibrated
    energies. Three classes of the analytic reference: 2 up / 2 down (6 patterns, lowest), 3 / 1 (8, +0.20 eV),
    FM (2, +0.79 eV). Statistical error from 20 batch means (the chain is correlated)."""
    pot, cfg = MagneticPairPotential(), cell8()
    energies = pattern_energies(pot, cfg)
    temperature = 0.12 / units.kB  # kT = 0.12 eV: all three classes are visited
    weights = {p: np.exp(-(e - min(energies.values())) / (units.kB * temperature)) for p, e in energies.items()}
    z = sum(weights.values())
    classes = {0: '2/2', 1: '3/1', 2: 'FM'}

    def cls(pattern) -> int:
        return {0: 0, 2: 1, 4: 2}[abs(int(sum(pattern)))]

    expected = np.zeros(3)
    for pattern, w in weights.items():
        expected[cls(pattern)] += w / z
    cr = np.flatnonzero(cfg.types == 0)
    signs = np.where(cfg.types == 0, 1.0, 0.0)
    grader = Grader(pot, None)
    state, _ = equilibrate_moments(pot, cfg, tol=1e-6, signs=signs)
    energy = float(state.energy)
    moves = SpinMoves('mdmc', attempts=1, eq_tol=1e-6)
    rng = np.random.default_rng(7)
    batches, per_batch = 20, 60
    freq = np.zeros((batches, 3))
    for b in range(batches):
        for _ in range(per_batch):
            state, signs, energy = metropolis_flips(pot, state, signs, energy, temperature, moves, rng, grader)
            freq[b, cls(signs[cr])] += 1 / per_batch
            assert energy == pytest.approx(energies[tuple(signs[cr])], abs=2e-4)  # the state's equilibrated energy
    mean, error = freq.mean(axis=0), freq.std(axis=0, ddof=1) / np.sqrt(batches)
    for k in range(3):
        assert abs(mean[k] - expected[k]) < 4 * error[k] + 0.01, (classes[k], mean, expected, error)
    # the sampled and the uniform distributions are far apart (a rule that accepted everything would fail above)
    assert expected[0] > 0.6 and abs(6 / 16 - expected[0]) > 10 * error[0]
    assert 0.1 < moves.acceptance < 0.9 and moves.attempted == batches * per_batch


def test_dlm_md_redraws_every_balanced_pattern_uniformly():
    """DLM-MD (redraw every 2 steps, 50% up): the 6 patterns with 2 of 4 Cr up appear uniformly (chi-square),
    each frame records its pattern, and magnitudes are re-equilibrated (not the 2.0 mu_B they started from)."""
    pot, cfg = MagneticPairPotential(), cell8()
    frames = []
    spin = SpinMoves('dlm', every=2)
    _, report = run_md(pot, cfg, temperature=300, timestep=1.0, steps=480, seed=3, spin=spin, trajectory=frames)
    assert report.stop_reason == 'finished' and report.spin_moves['redrawn'] == 240
    patterns = [frame.features['signs'] for frame in frames[3::2]]  # one frame after each redraw (at steps 2, 4, ...)
    cr = np.flatnonzero(cfg.types == 0)
    counts = {}
    for text in patterns:
        key = ''.join(text[i] for i in cr)
        counts[key] = counts.get(key, 0) + 1
    assert set(counts) == {''.join(p) for p in itertools.permutations('++--')}
    assert stats.chisquare(list(counts.values())).pvalue > 1e-3, counts
    moments = np.abs(frames[-1].moments[cr])
    assert np.all(moments > 1.0) and not np.allclose(moments, 2.0)
    # and the pure draw, many times: uniform over the patterns, exactly half up
    rng = np.random.default_rng(0)
    signs = np.where(cfg.types == 0, 1.0, 0.0)
    draws = [tuple(redraw_signs(signs, cfg.types, 0.5, rng)[cr]) for _ in range(3000)]
    assert all(sum(d) == 0 for d in draws)
    assert stats.chisquare(np.unique(draws, axis=0, return_counts=True)[1]).pvalue > 1e-3


def fm_only_potential():
    """A level-6 symmetric potential fitted (400 iterations) to 32 rattled 8-atom FM cells of the analytic reference
    (as :func:`conftest.fm_fitted_potential`, twice the cells; ``tests/data/potentials/fm_cells32_seed1.mtp``), and
    those cells. Its FM moment is 2.3 mu_B, and its trial with one Cr flipped keeps the flipped moment.

    Fits like it end where round-off sends them: on one machine the 16-cell fit put the FM moment at its 3.2 mu_B
    bound and collapsed every moment of the flipped trial to 0 (graded 2.7, no extrapolation); over radial seeds
    0-2 of this recipe only seed 1 kept the flipped moment there. Hence a stored fit (docs/engine.md)."""
    return stored_potential('fm_cells32_seed1.mtp'), fm_reference_cells(32)


def test_a_flipped_trial_state_is_graded_and_stops_the_run():
    """A potential that only saw FM states: its FM cell grades below gamma_up, the trial with one Cr flipped is
    graded before any acceptance, above gamma_up: the move raises Extrapolation and the trial is preselected."""
    pot, configs = fm_only_potential()
    active_set = ActiveSet.build(pot, configs)
    grader = Grader(pot, active_set, gamma_low=2.0, gamma_up=5.0)
    start = rocksalt(4.15)
    start.moments = np.where(start.types == 0, 2.2, 0.0)
    signs = np.where(start.types == 0, 1.0, 0.0)
    state, _ = equilibrate_moments(pot, start, tol=1e-6, signs=signs)
    assert grader.grade(state, evaluate(pot, state, gradient=True)) < 5.0
    before = len(grader.preselected)
    with pytest.raises(Extrapolation) as caught:
        flip_trial(pot, state, signs, 0, grader)
    assert caught.value.gamma > 5.0
    trial = grader.preselected[-1]
    assert len(grader.preselected) == before + 1 and float(trial.features['MV_grade']) > 5.0
    assert trial.moments[0] <= 0 < trial.moments[2]  # Cr 1 flipped (its magnitude equilibrated), Cr 2 up
    # in MD with flips, the run stops there, as any extrapolation does
    _, report = run_md(pot, start, Grader(pot, active_set, gamma_low=2.0, gamma_up=5.0), temperature=300, steps=20,
                       spin=SpinMoves('mdmc', every=2))  # fmt: skip
    assert report.stop_reason == 'extrapolation' and report.steps == 2 and report.spin_moves['attempts'] == 1


def test_spin_moves_run_through_mmtp_md_and_the_simulate_calcjob(tmp_path, mmtp_code):
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_mmtp.calculations.engine import MmtpSimulateCalculation
    from aiida_mmtp.data import MtpPotentialData, TrainingSetData

    pot, _ = fm_fitted_potential()
    start = rocksalt(4.15)
    start.moments = np.where(start.types == 0, 2.2, 0.0)
    params = {'kind': 'mdmc', 'grading': False, 'steps': 12, 'spin_every': 4, 'flip_attempts': 3,
              'temperature': 5000.0, 'timestep': 1.0}  # fmt: skip
    results, node = run_get_node(MmtpSimulateCalculation, code=mmtp_code, potential=MtpPotentialData(pot),
                                 configurations=TrainingSetData([start], ['Cr', 'N']),
                                 parameters=orm.Dict(params))  # fmt: skip
    assert node.is_finished_ok, node.exit_message
    run = results['report'].get_dict()['runs'][0]
    assert run['spin_moves']['kind'] == 'mdmc' and run['spin_moves']['attempts'] == 9
    assert 0 <= run['spin_moves']['accepted'] <= 9
    log = node.outputs.retrieved.get_object_content('simulate.log')
    assert 'flips accepted' in log
    # a misspelled kind of move is refused before anything runs
    with pytest.raises(ValueError, match="spin_moves must be 'dlm' or 'mdmc', got 'flip'"):
        run_get_node(MmtpSimulateCalculation, code=mmtp_code, potential=MtpPotentialData(pot),
                     configurations=TrainingSetData([start], ['Cr', 'N']),
                     parameters=orm.Dict({'kind': 'md', 'spin_moves': 'flip'}))  # fmt: skip
