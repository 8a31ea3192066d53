"""The ``aiida-mmtp`` command line: set up the embedded profile, the ABINIT code and the pseudopotential families.

``aiida-mmtp setup`` makes everything a first run needs in one command (a
``verdi presto``-style SQLite profile with aiida-core's ZeroMQ broker, the
localhost ``abinit`` code, both pseudopotential families);
``aiida-mmtp pseudos install`` adds just the families to an existing profile.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import click

__all__ = ['main']

ABINIT_CODE = 'abinit'
MMTP_CODE = 'mmtp'


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
def setup(profile, abinit_path, paw):
    """The embedded default: SQLite profile with the ZeroMQ broker, localhost abinit code, pseudo families."""
    from aiida.manage.configuration import get_config, reset_config

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


def _localhost_code(label: str, path: str, plugin: str, description: str):
    """The code ``label@localhost`` of the loaded profile, created (serial, OMP_NUM_THREADS=1) if missing."""
    from aiida import orm

    existing = orm.QueryBuilder().append(orm.InstalledCode, filters={'label': label}).first(flat=True)
    if existing is not None:
        return existing
    try:
        computer = orm.load_computer('localhost')
    except Exception as exc:  # NotExistent: a profile made without verdi presto
        raise click.ClickException(f'no localhost computer in this profile: {exc}') from exc
    code = orm.InstalledCode(label=label, computer=computer, filepath_executable=path,
                             default_calc_job_plugin=plugin, prepend_text='export OMP_NUM_THREADS=1',
                             description=description)  # fmt: skip
    return code.store()


def ensure_abinit_code(abinit_path: str | None = None, label: str = ABINIT_CODE):
    """The ``abinit@localhost`` code of the loaded profile (ABINIT from PATH unless given)."""
    path = abinit_path or shutil.which('abinit')
    if path is None:
        raise click.ClickException('abinit not found: apt-get install abinit abinit-data, or pass --abinit PATH')
    return _localhost_code(label, path, 'mmtp.abinit.cdft', 'ABINIT (Debian), serial; cDFT runs of aiida-mmtp')


def ensure_mmtp_code(label: str = MMTP_CODE):
    """The ``mmtp@localhost`` code: the engine's command from this Python environment."""
    path = Path(sys.executable).with_name('mmtp')
    if not path.exists():
        raise click.ClickException(f'the engine command {path} is missing: pip install aiida-mmtp')
    return _localhost_code(label, str(path), 'mmtp.train', 'aiida-mmtp engine (mmtp), serial')


from . import campaign as _campaign  # noqa: E402,F401  (registers the campaign commands)
from . import properties as _properties  # noqa: E402,F401  (registers the properties commands)
