"""Protocols: named sets of inputs in YAML files beside this module: ``campaign.yaml`` (``fast``, ``balanced``,
``paper``) and ``properties.yaml`` (``fast``, ``paper``).

Each file has ``default_inputs``, ``default_protocol`` and ``protocols``; a
protocol states only what differs from the defaults, and ``overrides`` change
any key on top (dicts are merged key by key; lists and scalars are replaced;
a key given as None is removed).
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

__all__ = ['get_protocol_inputs', 'list_protocols', 'recursive_merge']

_HERE = Path(__file__).parent


def _load(workflow: str) -> dict:
    path = _HERE / f'{workflow}.yaml'
    if not path.exists():
        raise ValueError(f'no protocol file for {workflow!r} in {_HERE}')
    return yaml.safe_load(path.read_text())


def recursive_merge(base: dict, update: dict) -> dict:
    """A copy of ``base`` with ``update`` merged in: nested dicts key by key, everything else replaced;
    a key set to None in ``update`` is removed (e.g. ``{'cells': {'conventional': None}}``)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = recursive_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def list_protocols(workflow: str = 'campaign') -> dict[str, str]:
    """Protocol name -> description."""
    data = _load(workflow)
    return {name: ' '.join(p.get('description', '').split()) for name, p in data['protocols'].items()}


def get_protocol_inputs(workflow: str = 'campaign', protocol: str | None = None, overrides: dict | None = None) -> dict:
    """The inputs of ``protocol`` (default: the file's default) with ``overrides`` merged in."""
    data = _load(workflow)
    name = protocol or data['default_protocol']
    if name not in data['protocols']:
        raise ValueError(f'unknown protocol {name!r}: choose from {", ".join(data["protocols"])}')
    chosen = {k: v for k, v in data['protocols'][name].items() if k != 'description'}
    inputs = recursive_merge(data['default_inputs'], chosen)
    return recursive_merge(inputs, overrides or {})
