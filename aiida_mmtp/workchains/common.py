"""Small helpers shared by the work chains."""

from __future__ import annotations

from aiida import orm

__all__ = ['abandoned_by', 'engine_metadata', 'why_failed']


def why_failed(node: orm.ProcessNode) -> str:
    """``Label<pk>: exit message`` (or the process state when there is no message), for reports and exit codes."""
    return f'{node.process_label}<{node.pk}>: {node.exit_message or node.process_state.value}'


def engine_metadata(inputs) -> dict:
    """``metadata`` of the engine jobs from an ``engine_options`` input (empty when not given)."""
    return {'options': inputs.engine_options.get_dict()} if 'engine_options' in inputs else {}


def abandoned_by(node: orm.ProcessNode) -> str | None:
    """Why ``node`` must not start more work: a process above it was killed or excepted, or None.

    ``verdi process kill`` of a campaign kills its children through the broker, but a child that no worker was
    running at that moment (submitted, not yet picked up) misses the message and would start its CalcJobs
    later: each step that submits work asks this first.
    """
    caller = node.caller
    while caller is not None:
        if caller.is_killed or caller.is_excepted:
            return f'{caller.process_label}<{caller.pk}> above it was {caller.process_state.value}'
        caller = caller.caller
    return None
