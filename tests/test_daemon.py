"""Submission through a real daemon: ``aiida-mmtp campaign launch --daemon`` on the embedded default
(SQLite + aiida-core's ZeroMQ broker) and, where ``.ci/run`` started them, on PostgreSQL + RabbitMQ. Where it
also started Slurm (``MMTP_TEST_SLURM=1``), the ZeroMQ campaign runs its jobs on the codes of
``aiida-mmtp setup --slurm``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
#: a real Slurm is up (scripts/services.sh start): the ZeroMQ campaign runs its jobs through it
SLURM = os.environ.get('MMTP_TEST_SLURM') == '1'
#: a campaign small enough for a test: FM and AFM 8-atom cells, no test set, one iteration of moment equilibration
TINY = """\
initial: {states: [FM, AFM], n_perturbed: 0}
test_set: null
reference: null
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
#: the CalcJobs of a campaign: per kind, how many, on which computers, and those without a scheduler job id
JOBS = """\
import json, sys
from aiida import load_profile, orm
load_profile(sys.argv[1])
jobs = [n for n in orm.load_node(int(sys.argv[2])).called_descendants if isinstance(n, orm.CalcJobNode)]
kinds = {}
for n in jobs:
    kinds[n.process_label] = kinds.get(n.process_label, 0) + 1
print(json.dumps({'kinds': kinds, 'computers': sorted({n.computer.label for n in jobs}),
                  'without_job_id': [f'{n.process_label}<{n.pk}>' for n in jobs if not n.get_job_id()]}))
"""


#: the same, labelled two at a time, so that a kill can fall between the batches of the initial set
TINY_TWO_AT_A_TIME = TINY + 'cdft: {max_concurrent: 2}\n'
KILL_WHEN_TWO_LABELLED = """\
import sys, time
from aiida import load_profile, orm
load_profile(sys.argv[1])
campaign = orm.load_node(int(sys.argv[2]))
deadline = time.time() + float(sys.argv[3])
while time.time() < deadline and not campaign.is_terminated:
    done = [n for n in campaign.called_descendants if n.process_label == 'CdftCalculation' and n.is_finished_ok]
    if len(done) >= 2:
        break
    time.sleep(0.5)
print(len(done), campaign.process_state.value)
"""
AFTER_THE_KILL = """\
import json, subprocess, sys, time
from aiida import load_profile, orm
load_profile(sys.argv[1])
campaign = orm.load_node(int(sys.argv[2]))
deadline = time.time() + 180
def alive():
    return [n for n in [campaign, *campaign.called_descendants] if not n.is_terminated]
while alive() and time.time() < deadline:
    time.sleep(2)
runs = [n for n in campaign.called_descendants if n.process_label == 'CdftCalculation']
folders = {n.get_remote_workdir(): n for n in runs if n.get_remote_workdir()}
def lingering():  # ABINIT processes still running in a folder of this campaign's CalcJobs, with that CalcJob
    found = []
    for pid in subprocess.run(['pgrep', '-x', 'abinit'], capture_output=True, text=True).stdout.split():
        cwd = subprocess.run(['readlink', f'/proc/{pid}/cwd'], capture_output=True, text=True).stdout.strip()
        found += [f'{pid} in CalcJob<{c.pk}> {c.process_state.value} [{c.exit_status}] job {c.get_job_id()}'
                  for folder, c in folders.items() if cwd.startswith(folder)]
    return found
# a job that the scheduler started while its CalcJob was being killed (aiida-core's submit/kill race) runs on
# until ABINIT ends by itself: give it the length of one label, then nothing of this campaign may run
abinit, grace = lingering(), time.time() + 30
while lingering() and time.time() < grace:
    time.sleep(1)
from aiida_mmtp.workchains.label import interrupted_labels  # what restart_from makes of an iteration's batch
batch = next(n for n in campaign.called_descendants if n.process_label == 'CdftLabelWorkChain')
harvested = interrupted_labels(batch)
print(json.dumps({'state': campaign.process_state.value, 'alive': [f'{n.process_label}<{n.pk}>' for n in alive()],
                  'abinit_after_the_kill': abinit, 'abinit_processes': lingering(),
                  'finished': [n.uuid for n in runs if n.is_finished_ok],
                  'harvested': sorted(harvested.sources) if harvested is not None else []}))
"""
CONTINUED = """\
import json, sys
import numpy as np
from aiida import load_profile, orm
load_profile(sys.argv[1])
node = orm.load_node(int(sys.argv[2]))
earlier = [orm.load_node(uuid) for uuid in sys.argv[3:]]
def configuration(run):
    return (np.array([site.position for site in run.inputs.structure.sites]), run.inputs.moments.get_array('moments'))
def same(a, b):
    return a[0].shape == b[0].shape and np.allclose(a[0], b[0]) and np.allclose(a[1], b[1], atol=1e-4)
new = [configuration(n) for n in node.called_descendants if n.process_label == 'CdftCalculation']
sources = node.outputs.training_set.sources if 'training_set' in node.outputs else []
print(json.dumps({'exit_status': node.exit_status, 'redone': sum(any(same(configuration(e), c) for c in new)
                                                                 for e in earlier),
                  'reused': sum(e.uuid in sources for e in earlier), 'new_runs': len(new)}))
"""


def _run(args, env, check=True, timeout=300):
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f'{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}')
    return done


def _campaign_through_daemon(tmp_path: Path, profile: str, env: dict, slurm: bool = False) -> None:
    """Launch the tiny campaign with --daemon, wait for it, and check the result and the CLI's view of it; with
    ``slurm``, on abinit@slurm and mmtp@slurm, and every CalcJob of it is a Slurm job."""
    overrides = tmp_path / 'tiny.yaml'
    overrides.write_text(TINY)
    on_slurm = ['--slurm', '--slurm-work-dir', tmp_path / 'slurm-work'] if slurm else []
    codes = ['--abinit-code', 'abinit@slurm', '--mmtp-code', 'mmtp@slurm'] if slurm else []
    _run([BIN / 'aiida-mmtp', 'setup', '-p', profile, '--no-paw', *on_slurm], env)
    _run([BIN / 'verdi', '-p', profile, 'daemon', 'start', '1'], env)
    try:
        launched = _run([BIN / 'aiida-mmtp', 'campaign', 'launch', '-p', profile, '--protocol', 'fast', '--daemon',
                         '--overrides', overrides, *codes], env)  # fmt: skip
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
    if slurm:
        (tmp_path / 'jobs.py').write_text(JOBS)
        jobs = json.loads(_run([sys.executable, tmp_path / 'jobs.py', profile, pk], env).stdout)
        assert jobs['computers'] == ['slurm'] and not jobs['without_job_id'], jobs  # each CalcJob: a Slurm job
        kinds = jobs['kinds']
        assert kinds.get('CdftCalculation', 0) >= 4 and kinds.get('MmtpTrainCalculation', 0) >= 1, jobs
        assert kinds.get('MmtpSimulateCalculation', 0) >= 1, jobs


def _env(tmp_path: Path) -> dict:
    return {**os.environ, 'AIIDA_PATH': str(tmp_path), 'PATH': f'{BIN}:{os.environ["PATH"]}'}


@pytest.mark.slow
def test_campaign_through_the_daemon_with_the_zeromq_broker(tmp_path):
    """On localhost, or through Slurm where it is up (one campaign either way: CI time)."""
    env = _env(tmp_path)
    _campaign_through_daemon(tmp_path, 'zmq', env, slurm=SLURM)
    show = _run([BIN / 'verdi', '-p', 'zmq', 'profile', 'show', 'zmq'], env).stdout
    assert 'core.zeromq' in show and 'core.sqlite_dos' in show


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get('MMTP_TEST_POSTGRES_PASSWORD'),
    reason='needs PostgreSQL + RabbitMQ running (.ci/run starts them and sets MMTP_TEST_POSTGRES_PASSWORD)',
)
def test_killed_campaign_continues_through_the_daemon_with_postgresql_and_rabbitmq(tmp_path):
    """The production stack, with a fault injected: the campaign is killed mid-labelling, then continued."""
    env = _env(tmp_path)
    password = os.environ['MMTP_TEST_POSTGRES_PASSWORD']
    profile = f'psql-{os.getpid()}'  # its own database, also where the services outlive a run
    _run([BIN / 'verdi', 'presto', '--use-postgres', '--postgres-password', password, '-p', profile], env)
    _run([BIN / 'verdi', 'config', 'set', '-g', 'warnings.rabbitmq_version', 'False'], env)
    show = _run([BIN / 'verdi', '-p', profile, 'profile', 'show', profile], env).stdout
    assert 'core.psql_dos' in show and 'core.rabbitmq' in show, show
    _killed_campaign_continues_without_losing_a_label(tmp_path, profile, env)


def _killed_campaign_continues_without_losing_a_label(tmp_path: Path, profile: str, env: dict) -> None:
    """Issue 12, findings 2 and 4, through the daemon: ``verdi process kill`` of a campaign between the two batches
    of its initial set stops everything under it (no CalcJob, no ABINIT left running), and ``--restart-from`` labels
    the initial set again without redoing a single finished cDFT run."""
    overrides = tmp_path / 'tiny.yaml'
    overrides.write_text(TINY_TWO_AT_A_TIME)
    for name, text in (('kill.py', KILL_WHEN_TWO_LABELLED), ('after.py', AFTER_THE_KILL),
                       ('continued.py', CONTINUED), ('wait.py', WAIT)):  # fmt: skip
        (tmp_path / name).write_text(text)
    _run([BIN / 'aiida-mmtp', 'setup', '-p', profile, '--no-paw'], env)
    _run([BIN / 'verdi', '-p', profile, 'daemon', 'start', '1'], env)
    try:
        launch = [BIN / 'aiida-mmtp', 'campaign', 'launch', '-p', profile, '--protocol', 'fast', '--daemon',
                  '--overrides', overrides]  # fmt: skip
        pk = int(re.search(r'CampaignWorkChain<(\d+)>', _run(launch, env).stdout).group(1))
        labelled, state = _run(
            [sys.executable, tmp_path / 'kill.py', profile, pk, 400], env, timeout=450
        ).stdout.split()
        assert int(labelled) >= 2 and state != 'finished', (labelled, state)  # between the batches
        _run([BIN / 'verdi', '-p', profile, 'process', 'kill', '-t', '60', str(pk)], env)
        after = json.loads(_run([sys.executable, tmp_path / 'after.py', profile, pk], env, timeout=300).stdout)
        assert after['state'] == 'killed' and not after['alive'], after  # every process under it ended
        assert not after['abinit_processes'], after  # and no ABINIT is left running
        finished = after['finished']
        assert 2 <= len(finished) < 4, after  # the second batch was stopped
        assert after['harvested'] == sorted(finished), after  # the killed batch's labels, made from its runs

        second = int(re.search(r'CampaignWorkChain<(\d+)>',
                               _run([*launch, '--restart-from', str(pk)], env).stdout).group(1))  # fmt: skip
        state = _run([sys.executable, tmp_path / 'wait.py', profile, second, 400], env, timeout=450).stdout.split()
        assert state[0] == 'finished', state
        continued = json.loads(
            _run([sys.executable, tmp_path / 'continued.py', profile, second, *finished], env).stdout
        )
    finally:
        _run([BIN / 'verdi', '-p', profile, 'daemon', 'stop'], env, check=False)
    assert continued['exit_status'] in (0, 401), continued
    assert continued['redone'] == 0, continued  # no finished cDFT run was computed again ...
    assert continued['reused'] == len(finished), continued  # ... each one's label is in the training set
    assert continued['new_runs'] >= 4 - len(finished), continued  # the rest of the initial set was labelled
