"""Bad campaign input through the real command line: a one-line error that names the problem, never a traceback,
and nothing submitted (issue 12, item 6: each case is one of its reproductions)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

CASES = [
    ('max_selcted: 3\n', "overrides: unknown key 'max_selcted' (did you mean max_selected?)"),
    ('cdft: {parameters: {ecutt: 30}}\n', "overrides: unknown key 'cdft.parameters.ecutt' (did you mean ecut?)"),
    ('stages: [{name: md, simulation: {kind: md, temprature: 300}}]\n',
     "stage md: simulation: unknown parameter 'temprature' for md (did you mean temperature?)"),
    ('stages: [{name: md-broken, start: ideal, simulation: {kind: md, temperature: -300, timestep: 2.0, steps: 30}}]\n',
     'stage md-broken: simulation: temperature must be >= 0, got -300'),
    ('stages: [{name: e, start: initial, simulation: {kind: equilibrate, gamma_low: -1.0}}]\n',
     'stage e: simulation: gamma_low must be > 0, got -1.0'),
    ('stages: [{name: md, simulation: {kind: md, steps: 0}}]\n', 'stage md: simulation: steps must be >= 1, got 0'),
    ('stages: [{name: md, max_itrations: 3, simulation: {kind: md}}]\n',
     "stage md: unknown key 'max_itrations' (did you mean max_iterations?)"),
    ('max_iterations: 0\n', 'max_iterations must be at least 1, got 0'),
    ('cdft: {max_concurrent: 0}\n', 'cdft.max_concurrent must be at least 1, got 0'),
    ('hygiene: {max_force: -1}\n', 'hygiene: max_force must be positive, got -1.0'),
    ('a: [1, 2\n', 'not valid YAML or JSON'),
    ('- max_selected: 3\n', 'give a mapping of protocol keys (e.g. max_selected: 10), not a list'),
]  # fmt: skip


@pytest.fixture(scope='module')
def profile(tmp_path_factory):
    path = tmp_path_factory.mktemp('aiida')
    env = {**os.environ, 'AIIDA_PATH': str(path), 'PATH': f'{BIN}:{os.environ["PATH"]}'}
    done = subprocess.run([BIN / 'aiida-mmtp', 'setup', '-p', 'inputs', '--no-paw'], capture_output=True, text=True,
                          env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return env


def cli(env, *args):
    return subprocess.run([str(BIN / 'aiida-mmtp'), *map(str, args)], capture_output=True, text=True, env=env)


def refused(done, message: str) -> None:
    assert done.returncode != 0, done.stdout
    assert 'Traceback' not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith('warning:')]
    assert len(lines) == 1 and message in lines[0], done.stderr


def processes(env) -> str:
    done = subprocess.run([BIN / 'verdi', '-p', 'inputs', 'process', 'list', '-a', '-r'], capture_output=True,
                          text=True, env=env)  # fmt: skip
    return done.stdout


@pytest.mark.parametrize(('overrides', 'message'), CASES)
def test_bad_overrides_are_refused_at_launch(profile, tmp_path, overrides, message):
    path = tmp_path / 'overrides.yaml'
    path.write_text(overrides)
    refused(cli(profile, 'campaign', 'launch', '-p', 'inputs', '--protocol', 'fast', '--overrides', path), message)


def test_bad_structures_and_identifiers_are_named(profile, tmp_path):
    garbage = tmp_path / 'garbage.cif'
    garbage.write_text('this is not a crystal\n')
    refused(cli(profile, 'campaign', 'launch', '-p', 'inputs', '--structure', garbage), 'not a structure ASE can read')
    molecule = tmp_path / 'molecule.xyz'
    molecule.write_text('2\n\nCr 0 0 0\nN 0 0 2.07\n')
    refused(cli(profile, 'campaign', 'launch', '-p', 'inputs', '--structure', molecule), 'has no periodic cell')
    refused(cli(profile, 'campaign', 'status', '1', '-p', 'inputs'), 'is not a campaign')
    refused(cli(profile, 'campaign', 'export', '987654', '-p', 'inputs'), 'no node 987654')
    refused(cli(profile, 'properties', 'show', '987654', '-p', 'inputs'), 'no node 987654')
    assert 'Workflow' not in processes(profile) and 'Calculation' not in processes(profile)  # nothing was submitted


def test_a_rehearsal_by_the_reference_model_needs_no_abinit_code_and_is_validated(profile, tmp_path):
    """``--reference-labeller``: the labelling is the engine's model, so no abinit code is looked up; the campaign
    is still validated, its labeller included, before anything is submitted."""
    path = tmp_path / 'overrides.yaml'
    path.write_text('max_iterations: 0\n')
    launch = ['campaign', 'launch', '-p', 'inputs', '--protocol', 'paper', '--reference-labeller']
    refused(cli(profile, *launch, '--abinit-code', 'nosuch@nowhere', '--overrides', path),
            'max_iterations must be at least 1, got 0')  # fmt: skip
    refused(cli(profile, *launch, '--mmtp-code', 'nosuch@nowhere'), 'run aiida-mmtp setup first')
    assert 'Workflow' not in processes(profile) and 'Calculation' not in processes(profile)  # nothing was submitted


STATES = """\
import json, subprocess, sys
from aiida import load_profile, orm
load_profile('inputs')
rows = orm.QueryBuilder().append(orm.ProcessNode, project=['id', 'attributes.process_label']).all()
nodes = [orm.load_node(pk) for pk, _ in rows]
mine = [n for n in nodes if n.process_label == 'CdftCalculation']
folders = [n.get_remote_workdir() for n in mine if n.get_remote_workdir()]
cwds = subprocess.run(['bash', '-c', 'for p in $(pgrep -x abinit); do readlink /proc/$p/cwd; done'],
                      capture_output=True, text=True).stdout.split()
submitted = sum(n.get_job_id() is not None for n in mine)
alive = [f'{n.process_label}<{n.pk}>' for n in nodes if not n.is_terminated]
print(json.dumps({'runs': len(mine), 'submitted': submitted, 'alive': alive,
                  'abinit': [c for c in cwds if any(c.startswith(f) for f in folders)]}))
"""


def test_ctrl_c_of_a_foreground_campaign_kills_everything_under_it(profile, tmp_path):
    """Issue 12, finding 4: Ctrl-C of ``campaign launch`` in the foreground. It used to do nothing (a calcfunction's
    interrupt handler was left behind) or to leave the processes under the campaign waiting forever."""
    import json
    import signal
    import time

    (tmp_path / 'tiny.yaml').write_text('initial: {states: [FM, AFM], n_perturbed: 0}\ntest_set: null\n'
                                        'cdft: {max_concurrent: 2}\n')  # fmt: skip
    (tmp_path / 'states.py').write_text(STATES)

    def states() -> dict:
        done = subprocess.run([sys.executable, tmp_path / 'states.py'], capture_output=True, text=True, env=profile)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    launch = subprocess.Popen([BIN / 'aiida-mmtp', 'campaign', 'launch', '-p', 'inputs', '--protocol', 'fast',
                               '--overrides', tmp_path / 'tiny.yaml'], env=profile, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 300
    before = states()
    while before['submitted'] < 2 and time.time() < deadline and launch.poll() is None:
        before = states()
    launch.send_signal(signal.SIGINT)  # two ABINIT jobs are running: the user presses Ctrl-C
    assert before['submitted'] >= 2, before
    out, err = launch.communicate(timeout=180)
    assert launch.returncode == 1, out + err
    assert 'were killed: continue with --restart-from' in err and 'Traceback' not in err, err
    after, grace = states(), time.time() + 30  # a job started during its CalcJob's kill ends by itself
    while after['abinit'] and time.time() < grace:
        after = states()
    assert not after['alive'] and not after['abinit'], after  # every process ended, no ABINIT left running
