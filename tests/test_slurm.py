"""Jobs through a real Slurm: the single-node one that ``scripts/services.sh start`` runs on this machine (and that
sets ``MMTP_TEST_SLURM=1``), the computer and codes of ``aiida-mmtp setup --slurm``, a throwaway profile and its
ZeroMQ daemon. A cDFT batch runs on 2 MPI processes and labels as the serial runs do; an engine job gets the
threads its resources give it. ``test_daemon.py`` runs its campaign on the same codes when Slurm is up."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_daemon import BIN, _env, _run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get('MMTP_TEST_SLURM') != '1',
        reason='needs a running Slurm: `source scripts/services.sh start` (root; .ci/run does it) starts a '
        'single-node one and sets MMTP_TEST_SLURM=1',
    ),
]
PROFILE = 'slurm'
#: the same two displaced 2-atom CrN cells labelled twice through Slurm, on 2 MPI processes and on 1
LABEL_TWICE = """\
import json, re, sys, time
import numpy as np
from aiida import load_profile, orm
from aiida.engine import submit
load_profile(sys.argv[1])
from aiida_mmtp.data import TrainingSetData
from aiida_mmtp.data.pseudo import install_nc_family
from aiida_mmtp.mtp.configuration import Configuration
from aiida_mmtp.workchains.label import CdftLabelWorkChain

prim = 4.15 / 2 * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])
configs = []
for seed, moments in ((1, [2.0, 0.0]), (2, [1.5, 0.0])):
    n_at = np.array([0.5, 0.5, 0.5]) @ prim + np.random.default_rng(seed).normal(0, 0.05, 3)
    configs.append(Configuration(positions=np.array([[0.0, 0.0, 0.0], n_at]), types=np.array([0, 1]), cell=prim,
                                 moments=np.array(moments)))
kpoints = orm.KpointsData()
kpoints.set_kpoints_mesh([2, 2, 2])
code = orm.load_code('abinit@slurm')
pseudos = install_nc_family().get_pseudos(elements=['Cr', 'N'])
parameters = orm.Dict({'ecut': 20, 'ratsph': {'Cr': 2.0, 'N': 1.5}, 'shiftk': [[0.5, 0.5, 0.5]]})
launched = {}
for name, procs in (('mpi', 2), ('serial', 1)):
    options = {'withmpi': procs > 1, 'resources': {'num_machines': 1, 'num_mpiprocs_per_machine': procs},
               'max_wallclock_seconds': 600}
    launched[name] = submit(CdftLabelWorkChain, configurations=TrainingSetData(configs, ['Cr', 'N']),
                            max_concurrent=orm.Int(2), cdft={'kpoints': kpoints, 'abinit': {
                                'code': code, 'pseudos': pseudos, 'parameters': parameters,
                                'metadata': {'options': options}}})
deadline = time.time() + float(sys.argv[2])
while not all(n.is_terminated for n in launched.values()) and time.time() < deadline:
    time.sleep(1)
out = {}
for name, node in launched.items():
    runs = sorted((n for n in node.called_descendants if n.process_label == 'CdftCalculation'), key=lambda n: n.ctime)
    labels = [{'energy': c.energy, 'forces': c.forces.tolist(), 'mag_forces': c.mag_forces.tolist(),
               'stress': (-c.virial / abs(np.linalg.det(c.cell))).tolist(), 'moments': c.moments.tolist()}
              for c in node.outputs.training_set.get_configurations()] if 'training_set' in node.outputs else []
    def nproc(run):
        if 'retrieved' not in run.outputs:
            return None
        found = re.search(r'mpi_nproc:\\s*(\\d+)', run.outputs.retrieved.get_object_content('aiida.abo'))
        return int(found.group(1)) if found else None
    out[name] = {'state': node.process_state.value, 'exit_status': node.exit_status, 'labels': labels,
                 'runs': [{'pk': r.pk, 'ok': r.is_finished_ok, 'job_id': r.get_job_id(), 'computer': r.computer.label,
                           'nproc': nproc(r),
                           'script': r.base.repository.get_object_content('_aiidasubmit.sh')} for r in runs]}
print(json.dumps(out))
"""
#: one engine job (moment equilibration of a random potential, no grading) on 2 cores of the Slurm node
ENGINE_JOB = """\
import json, sys, time
import numpy as np
from aiida import load_profile, orm
from aiida.engine import submit
load_profile(sys.argv[1])
from aiida_mmtp.calculations.engine import MmtpSimulateCalculation
from aiida_mmtp.data import MtpPotentialData, TrainingSetData
from aiida_mmtp.mtp.potential import Potential
from aiida_mmtp.mtp.structures import rocksalt

cfg = rocksalt(4.15, primitive=True)
cfg.moments = np.array([2.0, 0.0])
potential = MtpPotentialData(Potential.from_level(4, ['Cr', 'N'], n_phi=3, n_psi=2, m_max=[3.2, 0.6], seed=1))
node = submit(MmtpSimulateCalculation, code=orm.load_code('mmtp@slurm'), potential=potential,
              configurations=TrainingSetData([cfg], ['Cr', 'N']),
              parameters=orm.Dict({'kind': 'equilibrate', 'steps': 5, 'grading': False}),
              metadata={'options': {'resources': {'num_machines': 1, 'num_mpiprocs_per_machine': 2},
                                    'max_wallclock_seconds': 300}})
deadline = time.time() + float(sys.argv[2])
while not node.is_terminated and time.time() < deadline:
    time.sleep(1)
node = orm.load_node(node.pk)  # with the files that the daemon added to its repository (the submit script)
log = node.outputs.retrieved.get_object_content('simulate.log') if 'retrieved' in node.outputs else ''
print(json.dumps({'state': node.process_state.value, 'exit_status': node.exit_status, 'job_id': node.get_job_id(),
                  'computer': node.computer.label, 'log': log.splitlines()[:5],
                  'script': node.base.repository.get_object_content('_aiidasubmit.sh')}))
"""


@pytest.fixture(scope='module')
def slurm_daemon(tmp_path_factory):
    """A throwaway profile made by ``aiida-mmtp setup --slurm`` (work directory in tmp) with its daemon running."""
    tmp_path = tmp_path_factory.mktemp('slurm')
    try:
        states = subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True, text=True).stdout.split()
    except FileNotFoundError:
        states = []
    if not {'idle', 'mixed'} & set(states):  # mixed: jobs of someone else, a core free
        pytest.fail(f'MMTP_TEST_SLURM=1 but no Slurm node takes jobs here (sinfo: {states or "no answer"})')
    env = _env(tmp_path)
    _run([BIN / 'aiida-mmtp', 'setup', '-p', PROFILE, '--no-paw', '--slurm', '--slurm-work-dir', tmp_path / 'work'],
         env)  # fmt: skip
    _run([BIN / 'verdi', '-p', PROFILE, 'daemon', 'start', '1'], env)
    try:
        yield tmp_path, env
    finally:
        _run([BIN / 'verdi', '-p', PROFILE, 'daemon', 'stop'], env, check=False)


def _script(slurm_daemon, name: str, text: str, timeout: float) -> dict:
    tmp_path, env = slurm_daemon
    (tmp_path / name).write_text(text)
    done = _run([sys.executable, tmp_path / name, PROFILE, timeout], env, timeout=timeout + 60)
    return json.loads(done.stdout)


def test_cdft_batch_on_two_mpi_processes_labels_as_the_serial_runs(slurm_daemon):
    """Two 2-atom CrN cells (N displaced, collinear targets; ecut 20 Ha, 2x2x2 k-points): each CdftCalculation is a
    Slurm job, the MPI ones ran ``mpirun -np 2`` and ABINIT says ``mpi_nproc: 2``; the labels equal the serial
    ones to SCF noise: energy 1e-5 eV, forces 1e-4 eV/A, magnetic forces 1e-4 eV/mu_B, stress 1e-5 eV/A^3,
    moments 1e-4 mu_B."""
    import numpy as np

    out = _script(slurm_daemon, 'label_twice.py', LABEL_TWICE, 300)
    for name, procs in (('mpi', 2), ('serial', 1)):
        batch = out[name]
        assert batch['state'] == 'finished' and batch['exit_status'] == 0, (name, batch)
        assert len(batch['runs']) == 2 and all(run['ok'] for run in batch['runs']), (name, batch['runs'])
        for run in batch['runs']:
            assert run['computer'] == 'slurm' and run['job_id'] and run['job_id'].isdigit(), run
            assert run['nproc'] == procs, run  # ABINIT's own count of its MPI processes
            assert f'#SBATCH --ntasks-per-node={procs}' in run['script'], run['script']
            assert ("'mpirun' '-np' '2' '/" in run['script']) == (procs == 2), run['script']
    mpi, serial = out['mpi']['labels'], out['serial']['labels']
    assert len(mpi) == len(serial) == 2
    for a, b in zip(mpi, serial):
        assert a['energy'] == pytest.approx(b['energy'], abs=1e-5)
        for key, tol in (('forces', 1e-4), ('mag_forces', 1e-4), ('stress', 1e-5), ('moments', 1e-4)):
            assert np.allclose(a[key], b[key], rtol=0, atol=tol), (key, a[key], b[key])
        assert np.abs(a['forces']).max() > 0.01  # the displaced N feels a force: the comparison means something


def test_engine_job_threads_follow_its_slurm_resources(slurm_daemon):
    """An ``mmtp.simulate`` job with ``num_mpiprocs_per_machine`` 2 is a Slurm job on 2 cores, and the engine says in
    its retrieved log that its numerics ran on 2 threads (the contract of MmtpEngineCalculation: NUMBA_NUM_THREADS
    = num_mpiprocs_per_machine x num_cores_per_mpiproc)."""
    out = _script(slurm_daemon, 'engine_job.py', ENGINE_JOB, 180)
    assert out['state'] == 'finished' and out['exit_status'] == 0, out
    assert out['computer'] == 'slurm' and out['job_id'] and out['job_id'].isdigit(), out
    assert '#SBATCH --ntasks-per-node=2' in out['script'] and 'mpirun' not in out['script'], out['script']
    assert 'mmtp equilibrate: 2 threads' in out['log'], out['log']
