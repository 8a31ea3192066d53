"""``aiida-mmtp setup``: the embedded profile, the abinit code and both pseudopotential families in one command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

AIIDA_MMTP = Path(sys.executable).with_name('aiida-mmtp')
VERDI = Path(sys.executable).with_name('verdi')


def test_setup_makes_the_embedded_default_and_is_idempotent(tmp_path):
    env = {**os.environ, 'AIIDA_PATH': str(tmp_path)}
    first = subprocess.run([AIIDA_MMTP, 'setup', '-p', 'clitest'], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    assert 'created profile clitest (SQLite storage, ZeroMQ broker)' in first.stdout
    assert 'code abinit@localhost' in first.stdout
    assert 'abinit-data/LDA/NC' in first.stdout and 'gpaw-data/LDA/PAW' in first.stdout
    again = subprocess.run([AIIDA_MMTP, 'setup', '-p', 'clitest'], capture_output=True, text=True, env=env)
    assert again.returncode == 0 and 'profile clitest exists' in again.stdout
    groups = subprocess.run([VERDI, '-p', 'clitest', 'group', 'list', '-a', '-T', 'pseudo.family'],
                            capture_output=True, text=True, env=env).stdout  # fmt: skip
    assert groups.count('pseudo.family') == 2  # no duplicates from the second run
    show = subprocess.run([VERDI, '-p', 'clitest', 'profile', 'show', 'clitest'], capture_output=True, text=True,
                          env=env).stdout  # fmt: skip
    assert 'backend: core.sqlite_dos' in show and 'backend: core.zeromq' in show


def test_pseudos_install_on_a_missing_profile_says_so(tmp_path):
    env = {**os.environ, 'AIIDA_PATH': str(tmp_path)}
    done = subprocess.run([AIIDA_MMTP, 'pseudos', 'install', '-p', 'nosuch'], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and 'cannot load the AiiDA profile nosuch' in done.stderr
