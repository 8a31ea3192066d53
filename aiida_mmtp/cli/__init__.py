"""The ``aiida-mmtp`` command line: set up the embedded profile, the ABINIT code and the pseudopotential families.

``aiida-mmtp setup`` makes everything a first run needs in one command (a
``verdi presto``-style SQLite profile with aiida-core's ZeroMQ broker, the
localhost ``abinit`` code, both pseudopotential families); ``--slurm`` adds the
``slurm`` computer and its ``abinit`` and ``mmtp`` codes from the
``verdi``-style YAML files in ``aiida_mmtp/cli/slurm/``;
``aiida-mmtp pseudos install`` adds just the families to an existing profile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import yaml

__all__ = ['main']

ABINIT_CODE = 'abinit'
MMTP_CODE = 'mmtp'
#: ``verdi computer setup --config`` / ``verdi computer configure --config`` / ``verdi code create --config`` files
SLURM_FILES = Path(__file__).with_name('slurm')
#: Open MPI refuses to start as root without both (jobs of the single-node Slurm of CI run as root)
OMPI_AS_ROOT = 'export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1'


def _load(profile: str | None):
    from aiida import load_profile

    try:
        return load_profile(profile, allow_switch=True)
    except Exception as exc:  # aiida raises several types here; the message says which profile is missing
        raise click.ClickException(f'cannot load the AiiDA profile {profile or "(default)"}: {exc}') from exc


def run_here(builder):
    """Run ``builder`` in this process and return its node; Ctrl-C (or SIGTERM) kills it and everything under it.

    Two gaps of a foreground ``run`` are closed here. AiiDA's interrupt handler is replaced by each calcfunction
    while it runs and restored when it ends; calcfunctions of concurrent work chains end out of order, so the
    handler left behind kills a calcfunction that already finished and Ctrl-C does nothing (seen: the campaign
    ran on to its end). Ours is put back every second, and it kills between two steps of the event loop, never
    in the middle of a database commit (which AiiDA's does). And a local runner has no broker, so a killed process
    cannot reach the processes it called: they stayed "waiting" forever, their ABINIT jobs running. Every
    process this runner starts is recorded, and the interrupt kills each one still alive, the innermost first
    (a CalcJob kills its job).
    """
    import asyncio
    import signal
    import time

    from aiida.manage import get_manager
    from plumpy.exceptions import KilledError

    runner = get_manager().create_runner(communicator=None)  # as aiida.engine.run_get_node does
    started = []
    instantiate = runner.instantiate_process

    def recorded(process, **inputs):
        started.append(instantiate(process, **inputs))
        return started[-1]

    runner.instantiate_process = recorded
    top = runner.instantiate_process(builder)

    def kill():
        if top.has_terminated() or top.is_killing:
            return
        click.echo(f'interrupted: killing {top.node.process_label}<{top.node.pk}> and every process under it',
                   err=True)  # fmt: skip
        for process in reversed(started):  # the innermost first: CalcJobs cancel their jobs; the top last
            if not process.has_terminated():
                process.kill(msg_text=f'Killed by an interrupt (Ctrl-C) of aiida-mmtp, with <{top.node.pk}>')

    def interrupt(_signum, _frame):  # never kill from inside the handler: it may interrupt a database commit
        runner.loop.call_soon_threadsafe(kill)

    def keep_ours():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not interrupt:
                signal.signal(signum, interrupt)
        if not top.has_terminated():
            runner.loop.call_later(1.0, keep_ours)

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        keep_ours()
        top.execute()
    except KilledError:
        pass  # the node says so; what is under it is killed next
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if top.node.is_killed:
        deadline = time.monotonic() + 120
        alive = [node for node in top.node.called_descendants if not node.is_terminated]
        while alive and time.monotonic() < deadline:  # let the kills finish (a CalcJob waits for its job)
            runner.loop.run_until_complete(asyncio.sleep(0.5))
            alive = [node for node in top.node.called_descendants if not node.is_terminated]
        if alive:
            pks = ' '.join(str(node.pk) for node in alive)
            raise click.ClickException(f'{top.node.process_label}<{top.node.pk}> was killed, {len(alive)} processes '
                                       f'under it did not end: verdi process kill --force {pks}')  # fmt: skip
    return top.node


def _install_families(with_paw: bool) -> None:
    from aiida_mmtp.data.pseudo import install_nc_family, install_paw_family

    installers = [install_nc_family] + ([install_paw_family] if with_paw else [])
    for install in installers:
        try:
            family = install()
        except FileNotFoundError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f'pseudopotential family {family.label}: {len(family.pseudos)} elements')


@click.group()
def main():
    """aiida-mmtp: magnetic moment tensor potentials trained on constrained DFT, with AiiDA provenance."""


@main.group()
def pseudos():
    """Pseudopotential families."""


@pseudos.command('install')
@click.option('-p', '--profile', default=None, help='AiiDA profile (default: the default profile).')
@click.option('--paw/--no-paw', default=True, show_default=True, help='Also the gpaw-data LDA PAW family (DFT+U).')
def pseudos_install(profile, paw):
    """Create the abinit-data LDA NC family (and the gpaw-data LDA PAW family); existing ones are kept."""
    _load(profile)
    _install_families(paw)


@main.command()
@click.option('-p', '--profile', default='mmtp', show_default=True, help='Name of the profile to create or reuse.')
@click.option('--abinit', 'abinit_path', default=None, help='Path of the abinit executable (default: from PATH).')
@click.option('--paw/--no-paw', default=True, show_default=True, help='Also the gpaw-data LDA PAW family (DFT+U).')
@click.option('--slurm', is_flag=True, help='Also the Slurm computer `slurm` of this machine (aiida_mmtp/cli/slurm/'
              'computer.yaml) with the codes abinit@slurm and mmtp@slurm.')  # fmt: skip
@click.option('--slurm-work-dir', default=None, help="With --slurm: the computer's work directory "
              '(default: the one in computer.yaml).')  # fmt: skip
def setup(profile, abinit_path, paw, slurm, slurm_work_dir):
    """The embedded default: SQLite profile with the ZeroMQ broker, localhost abinit code, pseudo families."""
    from aiida.manage.configuration import get_config, reset_config

    if slurm_work_dir is not None and not slurm:
        raise click.ClickException('--slurm-work-dir is for --slurm: give both or neither')
    if slurm_work_dir is not None and not os.path.isabs(slurm_work_dir):
        raise click.ClickException(f'--slurm-work-dir must be an absolute path, got {slurm_work_dir}')
    if profile not in get_config(create=True).profile_names:
        verdi = Path(sys.executable).with_name('verdi')
        cmd = [str(verdi), 'presto', '--use-zeromq', '--profile-name', profile]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise click.ClickException(f'verdi presto failed: {done.stderr.strip() or done.stdout.strip()}')
        reset_config()  # read the configuration verdi presto just wrote
        click.echo(f'created profile {profile} (SQLite storage, ZeroMQ broker)')
    else:
        click.echo(f'profile {profile} exists: reusing it')
    _load(profile)
    for code in (ensure_abinit_code(abinit_path), ensure_mmtp_code()):
        click.echo(f'code {code.full_label}: {code.get_executable()}')
    _install_families(paw)
    if slurm:
        computer = ensure_slurm_computer(slurm_work_dir)
        click.echo(f'computer {computer.label}: {computer.scheduler_type} on {computer.hostname} '
                   f'({computer.transport_type}), work directory {computer.get_workdir()}')  # fmt: skip
        for code in (ensure_abinit_code(abinit_path, computer=computer), ensure_mmtp_code(computer=computer)):
            click.echo(f'code {code.full_label}: {code.get_executable()}')
        if shutil.which('sbatch') is None:
            click.echo('warning: sbatch is not on PATH here: jobs on the slurm computer will fail until Slurm is '
                       'installed and running (scripts/services.sh start)', err=True)  # fmt: skip


def _slurm_file(name: str) -> dict:
    """One of the shipped ``verdi``-style YAML files of the Slurm computer and its codes, as a dict."""
    try:
        return yaml.safe_load((SLURM_FILES / name).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise click.ClickException(f'cannot read {SLURM_FILES / name}: {exc}') from exc


def ensure_slurm_computer(work_dir: str | None = None):
    """The computer of ``slurm/computer.yaml`` in the loaded profile, created if missing, configured for the default
    user (``slurm/configure.yaml``: safe interval 0, no login shell) and polled at most once a second.

    ``work_dir`` replaces the YAML's work directory of a new computer; as root, the computer's prepend text lets Open
    MPI start (``OMPI_ALLOW_RUN_AS_ROOT``)."""
    from aiida import orm
    from aiida.common.exceptions import AiidaException, NotExistent

    spec = _slurm_file('computer.yaml')
    work_dir = work_dir or spec['work_dir']
    if not os.path.isabs(work_dir):
        raise click.ClickException(f'the Slurm work directory must be an absolute path, got {work_dir}')
    try:
        computer = orm.load_computer(spec['label'])
    except NotExistent:
        computer = None
    if computer is not None and computer.scheduler_type != spec['scheduler']:
        raise click.ClickException(
            f'a computer {spec["label"]} exists with the scheduler {computer.scheduler_type}, not {spec["scheduler"]}: '
            'relabel it (verdi computer relabel) and run again'
        )
    try:
        if computer is None:
            computer = orm.Computer(label=spec['label'], hostname=spec['hostname'], description=spec['description'],
                                    transport_type=spec['transport'], scheduler_type=spec['scheduler'],
                                    workdir=work_dir)  # fmt: skip
            computer.set_shebang(spec.get('shebang', '#!/bin/bash'))
            computer.set_mpirun_command(spec['mpirun_command'].split())
            computer.set_default_mpiprocs_per_machine(int(spec['mpiprocs_per_machine']))
            computer.set_use_double_quotes(bool(spec.get('use_double_quotes', False)))
            prepend = [spec.get('prepend_text') or ''] + ([OMPI_AS_ROOT] if os.geteuid() == 0 else [])
            computer.set_prepend_text('\n'.join(line for line in prepend if line))
            computer.set_append_text(spec.get('append_text') or '')
            computer.store()
        user = orm.User.collection.get_default()
        if not computer.is_user_configured(user):
            computer.configure(user, **_slurm_file('configure.yaml'))
        computer.set_minimum_job_poll_interval(1.0)  # the default 10 s adds up to 10 s per job
    except (AiidaException, KeyError, TypeError, ValueError) as exc:  # a computer.yaml or configure.yaml edited wrong
        problem = f'cannot set up the computer {spec.get("label")} from {SLURM_FILES}: {exc!r}'
        raise click.ClickException(problem) from exc
    return computer


def _code(label: str, computer, path: str, plugin: str, description: str, prepend_text: str = '', **kwargs):
    """The code ``label@computer`` of the loaded profile, created if missing (existing ones are reused as they are)."""
    from aiida import orm

    qb = orm.QueryBuilder().append(orm.Computer, filters={'id': computer.pk}, tag='computer')
    existing = qb.append(orm.InstalledCode, with_computer='computer', filters={'label': label}).first(flat=True)
    if existing is not None:
        return existing
    code = orm.InstalledCode(label=label, computer=computer, filepath_executable=path, default_calc_job_plugin=plugin,
                             prepend_text=prepend_text, description=description, **kwargs)  # fmt: skip
    return code.store()


def _localhost():
    from aiida import orm

    try:
        return orm.load_computer('localhost')
    except Exception as exc:  # NotExistent: a profile made without verdi presto
        raise click.ClickException(f'no localhost computer in this profile: {exc}') from exc


def ensure_abinit_code(abinit_path: str | None = None, label: str = ABINIT_CODE, computer=None):
    """The ``abinit`` code of ``computer`` (default: localhost, serial) in the loaded profile, ABINIT from PATH unless
    given; on the Slurm computer from ``slurm/abinit.yaml`` (MPI when a job asks for it)."""
    path = abinit_path or shutil.which('abinit')
    if path is None:
        raise click.ClickException('abinit not found: apt-get install abinit abinit-data, or pass --abinit PATH')
    if computer is None:
        # MPI runs (protocol cdft.mpiprocs > 1, e.g. workstation) need Open MPI's consent to run as root
        prepend = 'export OMP_NUM_THREADS=1' + (f'\n{OMPI_AS_ROOT}' if os.geteuid() == 0 else '')
        return _code(label, _localhost(), path, 'mmtp.abinit.cdft', 'ABINIT (Debian); cDFT runs of aiida-mmtp',
                     prepend_text=prepend)  # fmt: skip
    spec = _slurm_file('abinit.yaml')
    return _code(spec['label'], computer, path, spec['default_calc_job_plugin'], spec['description'],
                 prepend_text=spec.get('prepend_text') or '')  # fmt: skip


def ensure_mmtp_code(label: str = MMTP_CODE, computer=None):
    """The ``mmtp`` code of ``computer`` (default: localhost): the engine's command from this Python environment;
    on the Slurm computer from ``slurm/mmtp.yaml`` (never MPI)."""
    path = Path(sys.executable).with_name('mmtp')
    if not path.exists():
        raise click.ClickException(f'the engine command {path} is missing: pip install aiida-mmtp')
    if computer is None:
        return _code(label, _localhost(), str(path), 'mmtp.train', 'aiida-mmtp engine (mmtp), serial',
                     prepend_text='export OMP_NUM_THREADS=1')  # fmt: skip
    spec = _slurm_file('mmtp.yaml')
    return _code(spec['label'], computer, str(path), spec['default_calc_job_plugin'], spec['description'],
                 prepend_text=spec.get('prepend_text') or '', with_mpi=spec.get('with_mpi'))  # fmt: skip


from . import campaign as _campaign  # noqa: E402,F401  (registers the campaign commands)
from . import properties as _properties  # noqa: E402,F401  (registers the properties commands)
