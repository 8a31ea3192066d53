"""The engine layer's structure: it never imports AiiDA (it runs bare on compute nodes), and its cached numba
kernels call only kernels of their own file (numba keys a cached kernel on its own file's content alone)."""

import importlib
import pkgutil
import subprocess
import sys

from numba.core.dispatcher import Dispatcher

import aiida_mmtp.mtp


def test_engine_imports_without_aiida():
    code = (
        'import sys, aiida_mmtp.mtp, aiida_mmtp.mtp.cli, aiida_mmtp.mtp.ase_io\n'
        "bad = [m for m in sys.modules if m == 'aiida' or m.startswith('aiida.')]\n"
        'assert not bad, bad\n'
    )
    subprocess.run([sys.executable, '-c', code], check=True)


def cross_file_kernel_calls(package) -> list[str]:
    """'module.kernel -> other_module.kernel' for every cached numba kernel of ``package`` that calls a numba kernel
    of another file. Such a kernel keeps running the callee's code from when its cache was written: numba checks
    the caller's file alone (a changed sweep in kernels.py went unseen by a loss kernel in loss.py)."""
    found = []
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if not isinstance(obj, Dispatcher) or obj.py_func.__module__ != module.__name__:
                continue
            if type(obj._cache).__name__ == 'NullCache':  # not cached: compiled afresh in every process
                continue
            for used in obj.py_func.__code__.co_names:
                callee = obj.py_func.__globals__.get(used)
                if isinstance(callee, Dispatcher) and callee.py_func.__module__ != module.__name__:
                    found.append(f'{module.__name__}.{name} -> {callee.py_func.__module__}.{used}')
    return found


def test_cached_kernels_call_only_kernels_of_their_own_file():
    assert cross_file_kernel_calls(aiida_mmtp.mtp) == []
