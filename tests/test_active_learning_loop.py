"""A complete active-learning loop driven only by `mmtp` commands converges and improves the potential.

`aiida_mmtp.mtp.demo` runs it (also `mmtp demo`): the analytic magnetic pair
potential labels 8-atom CrN-like cells exactly; each round grades moment
equilibration and 800 K MD, selects by maxvol, labels, refits.
"""

from __future__ import annotations

from aiida_mmtp.mtp.demo import ERROR_KEYS, run_demo


def test_active_learning_loop_converges(tmp_path):
    result = run_demo(tmp_path, max_rounds=10, log=lambda line: None)
    assert result.selected[0] > 0, result.selected
    assert result.selected[-1] == 0, f'still selecting after {len(result.selected)} rounds: {result.selected}'
    assert result.training_size == 9 + sum(result.selected)
    assert (tmp_path / 'md_1.xyz').exists() and (tmp_path / 'summary.json').exists()
    for key in ERROR_KEYS:
        assert result.errors_final[key] < result.errors_initial[key], (key, result)
