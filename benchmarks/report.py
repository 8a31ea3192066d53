"""What every benchmark does last: write its figures as JSON beside the script (atomically) and say where."""

from __future__ import annotations

import json
from pathlib import Path

from aiida_mmtp.mtp.atomic import write_text_atomic


def write_json(script: str, figures: dict) -> Path:
    """Write ``figures`` to ``script`` with the suffix ``.json`` and print the path; returns it."""
    path = Path(script).with_suffix('.json')
    write_text_atomic(path, json.dumps(figures, indent=2) + '\n')
    print(f'wrote {path}')
    return path
