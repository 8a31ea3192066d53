"""Moment equilibration, relaxation and MD with on-the-fly grading."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import magnetic_crn

from aiida_mmtp.mtp.evaluate import evaluate
from aiida_mmtp.mtp.fit import fit
from aiida_mmtp.mtp.potential import Potential
from aiida_mmtp.mtp.reference import MagneticPairPotential
from aiida_mmtp.mtp.selection import ActiveSet, b_rows
from aiida_mmtp.mtp.simulate import Grader, check_min_dist, equilibrate_moments, relax, run_md
from aiida_mmtp.mtp.structures import rattle, rocksalt

AFM = np.array([2.4, 0.0, -2.4, 0.0, 2.4, 0.0, -2.4, 0.0])


def reference_labelled(n: int) -> list:
    """``n`` rattled 8-atom cells (a 3.95-4.35 A), AFM and random states alternating, labelled by the reference."""
    ref = MagneticPairPotential()
    rng = np.random.default_rng(0)
    train = []
    for k in range(n):
        a = rng.uniform(3.95, 4.35)
        cfg = rattle(rocksalt(a), rng.uniform(0.03, 0.15), rng)
        cfg.moments = AFM * rng.uniform(0.8, 1.2, 8) if k % 2 == 0 else magnetic_crn(rocksalt(a), seed=k).moments
        train.append(ref.label(cfg))
    return train


@pytest.fixture(scope='module')
def trained():
    """A level-10 potential fitted to 30 reference-labelled cells (a 3.95-4.35 A, AFM and random states)."""
    train = reference_labelled(30)
    pot = Potential.from_level(10, ['Cr', 'N'], n_phi=6, n_psi=2, m_max=[3.2, 0.5], seed=2)
    fit(pot, train, max_iter=300)
    return pot, train


def afm_cell(a=4.15, scale=1.0):
    cfg = rocksalt(a)
    cfg.moments = AFM * scale
    return cfg


def test_equilibration_minimises_over_moments_and_keeps_signs(trained):
    pot, _ = trained
    start = afm_cell(scale=0.8)
    start.moments[1] = 0.05
    out, report = equilibrate_moments(pot, start, tol=1e-6)
    assert report.stop_reason == 'finished'
    assert np.all(np.sign(out.moments[[0, 4]]) == 1) and np.all(np.sign(out.moments[[2, 6]]) == -1)
    hi = np.where(out.types == 0, 3.2, 0.5)
    assert np.all(np.abs(out.moments) <= hi + 1e-12)
    free = np.abs(np.abs(out.moments) - hi) > 1e-6
    assert np.abs(out.mag_forces[free]).max() < 1e-5
    assert out.energy <= evaluate(pot, start).energy
    # unlabelled (what an MD step asks for, as it evaluates the result itself): the same moments, one call fewer
    bare, bare_report = equilibrate_moments(pot, start, tol=1e-6, labelled=False)
    assert bare.energy is None and bare.forces is None and np.array_equal(bare.moments, out.moments)
    assert bare_report.steps == report.steps and bare_report.energy == pytest.approx(out.energy, abs=1e-9)


def test_relax_reaches_small_forces_and_stress(trained):
    pot, _ = trained
    start = afm_cell(a=4.25, scale=0.8)
    start.positions[0] += [0.05, -0.03, 0.02]
    fixed, report = relax(pot, start, fmax=0.005, equilibrate=False)
    assert report.stop_reason == 'finished'
    res = evaluate(pot, fixed)
    assert np.abs(res.forces).max() < 0.005
    assert np.abs(res.stress * fixed.volume).max() / fixed.natoms < 0.005  # FrechetCellFilter's cell criterion
    assert np.array_equal(fixed.moments, start.moments)  # moments fixed
    # the paper's two stages (the default): moments equilibrated at the start cell, then atoms moved at them
    out, two = relax(pot, start, fmax=0.005)
    first, _ = equilibrate_moments(pot, start, tol=1e-4)
    assert two.stop_reason == 'finished' and two.steps > report.steps - 5
    assert np.allclose(out.moments, first.moments) and not np.allclose(out.moments, start.moments, atol=0.05)
    cr = out.types == 0
    assert np.all(np.sign(out.moments[cr]) == np.sign(start.moments[cr]))  # signs kept
    assert np.abs(evaluate(pot, out).forces).max() < 0.005
    assert out.energy < fixed.energy  # the equilibrated moments lie lower


def test_relaxation_with_active_learning_converges_on_a_small_cell():
    """Graded two-stage relaxation of FM cells, from a potential that saw only AFM and random states: preselect,
    select by maxvol, label with the reference model, refit, until a relaxation preselects nothing. What the
    loop selected is then fitted: the potential's energy error on those labels falls at least 5x from what it
    predicted for them before they were labelled (over radial seeds 0, 1, 2 and 5: 11x to 70x).

    Where the relaxed FM cell ends is not asserted: it depends on the basin each refit ends in, which round-off
    decides (test order changed it). Over seeds 0-6 the loop converged every time, but the relaxed Cr moment
    collapsed to 0 in six of them (the reference keeps 2.31 mu_B), about 500 meV/atom off the reference, and
    graded as interpolation: docs/engine.md, "Tests that depend on where a fit ends"."""
    ref = MagneticPairPotential()
    train = reference_labelled(60)
    pot = Potential.from_level(6, ['Cr', 'N'], n_phi=4, n_psi=2, m_max=[3.2, 0.5], seed=2)
    fit(pot, train, max_iter=300)
    starts = []
    for a, m in ((4.05, 1.6), (4.2, 2.6)):
        cfg = rocksalt(a)
        cfg.moments = np.where(cfg.types == 0, m, 0.0)
        starts.append(cfg)
    selected, added, predicted = [], [], []
    for _ in range(8):
        als = ActiveSet.build(pot, train)
        grader = Grader(pot, als, gamma_low=2.0, gamma_up=10.0)
        runs = [relax(pot, cfg, grader, fmax=0.01, steps=200) for cfg in starts]
        if not grader.preselected:
            break
        _, chosen = als.select(b_rows(pot, grader.preselected), max_new=6)
        selected.append(len(chosen))
        labels = [ref.label(grader.preselected[k]) for k in chosen]
        predicted += [evaluate(pot, c).energy for c in labels]
        added += labels
        train += labels
        fit(pot, train, max_iter=400)
    assert selected and selected[0] > 0, selected
    assert not grader.preselected, f'still preselecting after {len(selected)} rounds: {selected}'
    assert all(report.stop_reason == 'finished' for _, report in runs), runs
    assert all(np.all(c.moments[c.types == 0] >= 0) for c in added)  # FM signs kept through the relaxations
    per_atom = np.array([c.natoms for c in added])
    reference = np.array([c.energy for c in added])
    before = np.abs(np.array(predicted) - reference) / per_atom
    after = np.abs(np.array([evaluate(pot, c).energy for c in added]) - reference) / per_atom
    assert after.mean() < before.mean() / 5, (before, after)


def test_nve_conserves_energy_with_moments_equilibrated(trained):
    pot, _ = trained
    frames = []
    _, report = run_md(pot, afm_cell(), temperature=300, timestep=1.0, steps=60, ensemble='nve', trajectory=frames)
    assert report.stop_reason == 'finished' and len(frames) == 61
    total = np.array([f.energy + float(f.features['kinetic_energy']) for f in frames])
    kinetic = np.array([float(f.features['kinetic_energy']) for f in frames])
    assert np.ptp(total) < 0.02 * np.ptp(kinetic)
    # signs of the Cr moments stay as set while magnitudes move
    for f in frames:
        assert np.all(np.sign(f.moments[[0, 2, 4, 6]]) == np.sign(AFM[[0, 2, 4, 6]]))


def test_md_stops_on_extrapolation_and_keeps_the_configuration(trained):
    pot, train = trained
    als = ActiveSet.build(pot, train)
    grader = Grader(pot, als, gamma_low=1.5, gamma_up=3.0)
    _, report = run_md(pot, afm_cell(a=4.4), grader, temperature=2000, timestep=2.0, steps=200, seed=1)
    assert report.stop_reason == 'extrapolation'
    assert report.steps < 200
    last = grader.preselected[-1]
    assert float(last.features['MV_grade']) > 3.0
    assert all(float(c.features['MV_grade']) >= 1.5 for c in grader.preselected)
    assert report.max_grade == max(float(c.features['MV_grade']) for c in grader.preselected)
    # a second run reports its own maximum, not the grader's
    _, calm = run_md(pot, afm_cell(), grader, temperature=10, timestep=1.0, steps=3, seed=2)
    assert calm.stop_reason == 'finished' and calm.max_grade < report.max_grade
    assert last.energy is None and last.moments is not None


def test_nvt_holds_temperature(trained):
    pot, _ = trained
    frames = []
    run_md(pot, afm_cell(), temperature=500, timestep=2.0, steps=150, friction=0.05, seed=3, trajectory=frames)
    kinetic = np.array([float(f.features['kinetic_energy']) for f in frames[50:]])
    temperature = kinetic.mean() / (1.5 * 8 * 8.617333e-5)
    assert 250 < temperature < 900


def test_atoms_below_min_dist_stop_the_run_and_are_never_preselected(trained):
    """Below R_min the potential is outside its domain and no cDFT run (non-overlapping spheres) could label it."""
    pot, train = trained
    start = afm_cell()
    start.positions[1] = start.positions[0] + [0.9 * pot.r_min, 0.0, 0.0]
    grader = Grader(pot, ActiveSet.build(pot, train), gamma_low=1.0, gamma_up=1e12)
    _, report = run_md(pot, start, grader, temperature=300, timestep=1.0, steps=20, seed=0)
    assert report.stop_reason == f'failed: atoms 1 and 2 are {0.9 * pot.r_min:.3f} A apart, closer than the ' \
                                 f'potential min_dist {pot.r_min} A'  # fmt: skip
    assert grader.preselected == []
    # a hot run from a squeezed (but legal) cell: whatever it preselects lies inside the potential's domain
    squeezed = afm_cell(a=3.6)
    _, report = run_md(pot, squeezed, grader, temperature=3000, timestep=5.0, steps=100, seed=0)
    assert report.stop_reason == 'finished' or report.stop_reason.startswith('failed: atoms')
    for cfg in grader.preselected:
        check_min_dist(pot, cfg)  # raises if any pair is closer than R_min


def test_unnamed_species_are_refused(trained):
    pot = trained[0].copy()
    pot.species = None
    with pytest.raises(ValueError, match='does not name its species'):
        relax(pot, afm_cell())


def test_gamma_low_above_gamma_up_is_refused(trained):
    pot, _ = trained
    with pytest.raises(ValueError, match='gamma_low'):
        Grader(pot, None, gamma_low=12, gamma_up=10)
