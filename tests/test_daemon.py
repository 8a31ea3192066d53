"""Submission through a real daemon: ``aiida-mmtp campaign launch --daemon`` on the embedded default
(SQLite + aiida-core's ZeroMQ broker) and, where ``.ci/run`` started them, on PostgreSQL + RabbitMQ."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
#: a campaign small enough for a test: FM and AFM 8-atom cells, no test set, one iteration of moment equilibration
TINY = """\
initial: {states: [FM, AFM], n_perturbed: 0}
test_set: null
max_selected: 2
max_iterations: 1
stages:
  - {name: equilibrate, start: initial, max_iterations: 1, simulation: {kind: equilibrate, steps: 50}}
"""
WAIT = """\
import sys, time
from aiida import load_profile, orm
load_profile(sys.argv[1])
node = orm.load_node(int(sys.argv[2]))
deadline = time.time() + float(sys.argv[3])
while not node.is_terminated and time.time() < deadline:
    time.sleep(2)
size = len(node.outputs.training_set) if 'training_set' in node.outputs else 0
print(node.process_state.value, node.exit_status, size)
"""


def _run(args, env, check=True, timeout=300):
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f'{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}')
    return done


def _campaign_through_daemon(tmp_path: Path, profile: str, env: dict) -> None:
    """Launch the tiny campaign with --daemon, wait for it, and check the result and the CLI's view of it."""
    overrides = tmp_path / 'tiny.yaml'
    overrides.write_text(TINY)
    _run([BIN / 'aiida-mmtp', 'setup', '-p', profile, '--no-paw'], env)
    _run([BIN / 'verdi', '-p', profile, 'daemon', 'start', '1'], env)
    try:
        launched = _run([BIN / 'aiida-mmtp', 'campaign', 'launch', '-p', profile, '--protocol', 'fast', '--daemon',
                         '--overrides', overrides], env)  # fmt: skip
        pk = int(re.search(r'CampaignWorkChain<(\d+)>', launched.stdout).group(1))
        (tmp_path / 'wait.py').write_text(WAIT)
        state = _run([sys.executable, tmp_path / 'wait.py', profile, pk, 400], env, timeout=450).stdout.split()
    finally:
        _run([BIN / 'verdi', '-p', profile, 'daemon', 'stop'], env, check=False)
    assert state[0] == 'finished', state
    # the daemon ran it: done when converged in one iteration (0), or stopped by max_iterations (401)
    assert int(state[1]) in (0, 401) and int(state[2]) >= 4, state
    status = _run([BIN / 'aiida-mmtp', 'campaign', 'status', str(pk), '-p', profile], env).stdout
    assert 'equilibrate' in status and f'<{pk}>' in status
    listed = _run([BIN / 'verdi', '-p', profile, 'process', 'list', '-a', '-p', '1'], env).stdout
    assert 'CampaignWorkChain' in listed and 'CdftCalculation' in listed


def _env(tmp_path: Path) -> dict:
    return {**os.environ, 'AIIDA_PATH': str(tmp_path), 'PATH': f'{BIN}:{os.environ["PATH"]}'}


@pytest.mark.slow
def test_campaign_through_the_daemon_with_the_zeromq_broker(tmp_path):
    env = _env(tmp_path)
    _campaign_through_daemon(tmp_path, 'zmq', env)
    show = _run([BIN / 'verdi', '-p', 'zmq', 'profile', 'show', 'zmq'], env).stdout
    assert 'core.zeromq' in show and 'core.sqlite_dos' in show


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get('MMTP_TEST_POSTGRES_PASSWORD'),
    reason='needs PostgreSQL + RabbitMQ running (.ci/run starts them and sets MMTP_TEST_POSTGRES_PASSWORD)',
)
def test_campaign_through_the_daemon_with_postgresql_and_rabbitmq(tmp_path):
    env = _env(tmp_path)
    password = os.environ['MMTP_TEST_POSTGRES_PASSWORD']
    _run([BIN / 'verdi', 'presto', '--use-postgres', '--postgres-password', password, '-p', 'psql'], env)
    _run([BIN / 'verdi', 'config', 'set', '-g', 'warnings.rabbitmq_version', 'False'], env)
    show = _run([BIN / 'verdi', '-p', 'psql', 'profile', 'show', 'psql'], env).stdout
    assert 'core.psql_dos' in show and 'core.rabbitmq' in show, show
    _campaign_through_daemon(tmp_path, 'psql', env)
