"""Atomic file output: write to a temporary file beside the target, then rename it into place.

A reader never sees a half-written file, a failed command never leaves one,
and an output that is also the input is only replaced once the input was read.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ['atomic_output', 'write_text_atomic']


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once, at import: setting it to read it is not safe while threads write files


def _permissions(target: Path) -> int:
    """What a plain ``open(target, 'w')`` would leave: the mode of the file it replaces, or 0o666 less the
    umask (``mkstemp`` creates 0o600, which would hide a potential from the user's group on a cluster)."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = 'w') -> Iterator[IO]:
    """A handle on a temporary file that replaces ``path`` when the block ends without an error; the file gets
    the permissions a plain write would give it."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else '.', prefix=f'.{target.name}.',
                               suffix='.part')  # fmt: skip
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            os.fchmod(handle.fileno(), _permissions(target))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``Path(path).write_text(text)``, atomically."""
    with atomic_output(path) as handle:
        handle.write(text)
