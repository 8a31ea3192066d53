"""The labelling batch's rolling window, with the real ``abinit``: never more than ``max_concurrent`` runs in
flight, and a new run starts as soon as any run ends, so one slow run does not hold the others."""

from __future__ import annotations

import shutil

import pytest
from test_cdft_workchains import base_inputs, configurations, primitive

#: the slow configuration's target moment (mu_B), as ABINIT's input writes it (spinat)
SLOW_MOMENT = 2.345
DELAY = 20  # s added to the slow run, before ABINIT starts


@pytest.fixture
def slow_once_abinit(aiida_code_installed, tmp_path):
    """The real ``abinit``, started ``DELAY`` s late when the input asks for the slow configuration's moment."""
    exe = shutil.which('abinit')
    if exe is None:
        pytest.fail('ABINIT is not installed: scripts/bootstrap.sh installs it (apt-get install abinit abinit-data)')
    wrapper = tmp_path / 'abinit-slow-once'
    wrapper.write_text(f'#!/bin/sh\ngrep -q "{SLOW_MOMENT:.10f}" aiida.abi && sleep {DELAY}\nexec {exe} "$@"\n')
    wrapper.chmod(0o755)
    return aiida_code_installed(label='abinit-slow-once', default_calc_job_plugin='mmtp.abinit.cdft',
                                filepath_executable=str(wrapper), prepend_text='export OMP_NUM_THREADS=1')  # fmt: skip


def test_one_slow_run_does_not_hold_the_others(slow_once_abinit):
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_mmtp.data.pseudo import install_nc_family
    from aiida_mmtp.workchains.label import CdftLabelWorkChain

    pseudos = install_nc_family().get_pseudos(elements=['Cr', 'N'])
    moments = [[SLOW_MOMENT, 0], [1.5, 0], [-2.0, 0], [1.0, 0]]
    batch = configurations([primitive()] * len(moments), moments)
    cdft = base_inputs(slow_once_abinit, pseudos, primitive(), [0, 0])
    for key in ('structure', 'moments'):
        cdft['abinit'].pop(key)
    results, node = run_get_node(CdftLabelWorkChain, configurations=batch, max_concurrent=orm.Int(2), cdft=cdft)
    assert node.is_finished_ok, node.exit_message
    labelled = results['training_set'].get_configurations()
    assert [round(float(c.moments[0]), 3) for c in labelled] == [m[0] for m in moments]  # input order kept

    runs = sorted((link.node for link in node.base.links.get_outgoing().all()
                   if link.link_label.startswith('label_c')), key=lambda n: n.ctime)  # fmt: skip
    assert len(runs) == len(moments)
    spans = [(run.ctime, run.mtime) for run in runs]
    slow = next(run for run in runs if run.inputs.abinit.moments.get_array('moments')[0] == SLOW_MOMENT)
    others = [run for run in runs if run is not slow]
    # the window: at no moment more than 2 runs in flight (from each run's creation to its last change)
    for start, _ in spans:
        assert sum(1 for s, e in spans if s <= start < e) <= 2
    # the three fast runs all started, and ended, while the slow one was still running
    assert all(slow.ctime < run.ctime and run.mtime < slow.mtime for run in others[1:])
    assert (slow.mtime - slow.ctime).total_seconds() > DELAY
