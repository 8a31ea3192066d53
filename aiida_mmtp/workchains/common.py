"""Small helpers shared by the work chains."""

from __future__ import annotations

from aiida import orm

__all__ = ['engine_metadata', 'why_failed']


def why_failed(node: orm.ProcessNode) -> str:
    """``Label<pk>: exit message`` (or the process state when there is no message), for reports and exit codes."""
    return f'{node.process_label}<{node.pk}>: {node.exit_message or node.process_state.value}'


def engine_metadata(inputs) -> dict:
    """``metadata`` of the engine jobs from an ``engine_options`` input (empty when not given)."""
    return {'options': inputs.engine_options.get_dict()} if 'engine_options' in inputs else {}
