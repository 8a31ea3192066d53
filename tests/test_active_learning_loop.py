"""A complete active-learning loop driven only by `mmtp` commands converges and improves the potential.

`aiida_mmtp.mtp.demo` runs it (also `mmtp demo`): the analytic magnetic pair
potential labels 8-atom CrN-like cells exactly; each round grades moment
equilibration and 800 K MD, selects by maxvol, labels, refits.
"""

from __future__ import annotations

import json

from aiida_mmtp.mtp.cfg_io import read_cfg
from aiida_mmtp.mtp.demo import ERROR_KEYS, run_demo


def test_active_learning_loop_converges(tmp_path):
    result = run_demo(tmp_path, max_rounds=10, log=lambda line: None)
    assert result.selected[0] > 0, result.selected
    assert result.selected[-1] == 0, f'still selecting after {len(result.selected)} rounds: {result.selected}'
    assert result.training_size == 9 + sum(result.selected)
    assert (tmp_path / 'md_1.xyz').exists() and (tmp_path / 'summary.json').exists()
    for key in ERROR_KEYS:
        assert result.errors_final[key] < result.errors_initial[key], (key, result)


def test_dlm_stage_of_the_demo_runs_and_reports_random_state_errors(tmp_path):
    """Issue 15's rehearsal, shortened: one fixed-sign round (8- and 16-atom cells) and one DLM-MD round (a redraw
    every 4 steps) in per-atom selection mode; both potentials are tested on the 24 random 16-atom states."""
    result = run_demo(tmp_path, max_rounds=1, md_steps=8, dlm_rounds=1, neighborhoods=True, log=lambda line: None)
    assert len(result.selected) == 1 and len(result.dlm_selected) == 1
    report = json.loads((tmp_path / 'run_0.json').read_text())  # the DLM round's one MD job, three cells
    assert len(report['runs']) == 3
    for run in report['runs']:
        assert run['spin_moves']['kind'] == 'dlm' and run['spin_moves']['redrawn'] <= run['steps'] // 4
    before, after = result.errors_random_before_dlm, result.errors_random_after_dlm
    assert set(before) == set(after) == set(ERROR_KEYS) and all(v > 0 for v in before.values())
    assert (after == before) == (result.dlm_selected[0] == 0)  # the potential changed exactly when it selected
    assert len(read_cfg(tmp_path / 'test_random.cfg')) == 24
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['dlm_selected'] == result.dlm_selected
