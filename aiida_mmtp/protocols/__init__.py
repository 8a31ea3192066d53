"""Protocols: named sets of inputs in YAML files beside this module: ``campaign.yaml`` (``fast``, ``balanced``,
``paper``) and ``properties.yaml`` (``fast``, ``paper``).

Each file has ``default_inputs``, ``default_protocol`` and ``protocols``; a
protocol states only what differs from the defaults (its ``description``, and
its ``warning`` where it uses settings known to be unconverged, are not inputs), and ``overrides`` change
any key on top (dicts are merged key by key; lists and scalars are replaced;
a key given as None is removed).
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

__all__ = ['default_protocol', 'get_protocol_inputs', 'list_protocols', 'protocol_warning', 'recursive_merge']

_HERE = Path(__file__).parent


def _load(workflow: str) -> dict:
    path = _HERE / f'{workflow}.yaml'
    if not path.exists():
        raise ValueError(f'no protocol file for {workflow!r} in {_HERE}')
    return yaml.safe_load(path.read_text())


def recursive_merge(base: dict, update: dict, keep_removed: bool = False) -> dict:
    """A copy of ``base`` with ``update`` merged in: nested dicts key by key, everything else replaced;
    a key set to None in ``update`` is removed (e.g. ``{'cells': {'conventional': None}}``), or with
    ``keep_removed`` left as it was (the union of every key, for the schema of overrides)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = recursive_merge(out[key], value, keep_removed)
        elif value is not None:
            out[key] = copy.deepcopy(value)
        elif keep_removed:
            out.setdefault(key, None)
        else:
            out.pop(key, None)
    return out


def list_protocols(workflow: str = 'campaign') -> dict[str, str]:
    """Protocol name -> description."""
    data = _load(workflow)
    return {name: ' '.join(p.get('description', '').split()) for name, p in data['protocols'].items()}


def get_protocol_inputs(workflow: str = 'campaign', protocol: str | None = None, overrides: dict | None = None) -> dict:
    """The inputs of ``protocol`` (default: the file's default) with ``overrides`` merged in.

    ``overrides`` of the campaign are checked key by key against the protocol schema: an unknown or misspelled
    key is a ValueError that names it (with the closest known key), never a silent fall-back to a default.
    """
    data = _load(workflow)
    name = protocol or data['default_protocol']
    if name not in data['protocols']:
        raise ValueError(f'unknown protocol {name!r}: choose from {", ".join(data["protocols"])}')
    if overrides is not None and not isinstance(overrides, dict):
        raise ValueError(f'overrides must be a mapping of protocol keys, got a {type(overrides).__name__}')
    chosen = {k: v for k, v in data['protocols'][name].items() if k not in ('description', 'warning')}
    inputs = recursive_merge(data['default_inputs'], chosen)
    if workflow == 'campaign' and overrides:
        _check_keys(overrides, _campaign_schema(data), ())
    return recursive_merge(inputs, overrides or {})


#: Campaign keys whose values are maps of the user's own names (elements, cells, scheduler options) or lists.
_OPEN = {('cells',), ('magnetic_moments',), ('cdft', 'options'), ('cdft', 'parameters', 'ratsph'),
         ('cdft', 'parameters', 'dftu'), ('cdft', 'parameters', 'extra'), ('initial', 'states'),
         ('test_set', 'states'), ('engine_options',)}  # fmt: skip


def _campaign_schema(data: dict) -> dict:
    """Every key a campaign override may set: those of the file (all protocols) and of the inputs they feed."""
    from ..calculations.cdft import PARAMETERS
    from ..calculations.train import SETTINGS
    from ..mtp.hygiene import HygieneRule
    from ..workchains.functions import GENERATION

    schema = copy.deepcopy(data['default_inputs'])
    for protocol in data['protocols'].values():
        protocol = {k: v for k, v in protocol.items() if k not in ('description', 'warning')}
        schema = recursive_merge(schema, protocol, keep_removed=True)
    generation = {k: None for k in GENERATION if k not in ('species', 'moments')}
    generation['lattice_parameters'] = None  # A, turned into scales of the given cubic cell
    schema['initial'] = {**generation, **schema.get('initial', {})}
    schema['test_set'] = dict(generation)
    schema['cdft']['parameters'] = {**{k: None for k in PARAMETERS}, **schema['cdft']['parameters']}
    schema['hygiene'] = {k: None for k in HygieneRule.__dataclass_fields__}
    schema['train_settings'] = {k: None for k in SETTINGS}
    schema['engine_options'] = {}
    schema['stages'] = []
    return schema


def _check_keys(overrides: dict, schema: dict, path: tuple) -> None:
    from ..calculations.engine import did_you_mean

    for key, value in overrides.items():
        where = '.'.join((*path, str(key)))
        if key not in schema:
            raise ValueError(f'overrides: unknown key {where!r}{did_you_mean(key, schema)}')
        if (*path, key) in _OPEN or not isinstance(value, dict) or not isinstance(schema[key], dict):
            continue
        _check_keys(value, schema[key], (*path, key))


def protocol_warning(workflow: str = 'campaign', protocol: str | None = None) -> str | None:
    """What a user must know before using ``protocol`` (e.g. unconverged labels), or None."""
    data = _load(workflow)
    name = protocol or data['default_protocol']
    warning = data['protocols'].get(name, {}).get('warning')
    return ' '.join(warning.split()) if warning else None


def default_protocol(workflow: str = 'campaign') -> str:
    """The protocol used when none is named."""
    return _load(workflow)['default_protocol']
