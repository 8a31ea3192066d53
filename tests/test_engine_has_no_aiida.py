"""The engine layer never imports AiiDA (it runs bare on compute nodes)."""

import subprocess
import sys


def test_engine_imports_without_aiida():
    code = (
        'import sys, aiida_mmtp.mtp, aiida_mmtp.mtp.cli, aiida_mmtp.mtp.ase_io\n'
        "bad = [m for m in sys.modules if m == 'aiida' or m.startswith('aiida.')]\n"
        'assert not bad, bad\n'
    )
    subprocess.run([sys.executable, '-c', code], check=True)
