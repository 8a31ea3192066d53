"""``aiida-mmtp properties ...``: compute a potential's properties (PropertiesWorkChain), show and export them."""

from __future__ import annotations

import json
from pathlib import Path

import click

from . import MMTP_CODE, _load, main, run_here

__all__ = ['properties']

# the engine's STATE_KINDS and KINDS (aiida_mmtp.mtp.properties), written out: importing the engine here would
# load numba at every start of the command line; tests/test_properties_workchain.py checks that they agree
_STATES = ('FM', 'AFM', 'PM')
_KINDS = ('average', 'elastic', 'phonons', 'qha')


def _potential(identifier: str | None):
    """A potential node from a pk/UUID of the potential or of a campaign (its final potential); default: the
    potential of the newest finished campaign."""
    from aiida import orm

    from ..data.potential import MtpPotentialData

    if identifier is None:
        qb = orm.QueryBuilder().append(
            orm.WorkflowNode, filters={'process_type': {'like': '%mmtp.campaign'}}, tag='campaign'
        )
        qb.append(MtpPotentialData, with_incoming='campaign', edge_filters={'label': 'potential'})
        found = qb.order_by({MtpPotentialData: {'ctime': 'desc'}}).first(flat=True)
        if found is None:
            raise click.ClickException('no campaign with a final potential in this profile: give a potential pk')
        return found
    try:
        node = orm.load_node(identifier)
    except Exception as exc:  # NotExistent, MultipleObjectsError
        raise click.ClickException(f'no node {identifier}: {exc}') from exc
    if isinstance(node, MtpPotentialData):
        return node
    if isinstance(node, orm.WorkflowNode) and 'potential' in node.outputs:
        return node.outputs.potential
    raise click.ClickException(
        f'node {identifier} is a {type(node).__name__}, neither a potential nor a campaign with one'
    )


def _workchain(identifier: str | None):
    from aiida import orm

    if identifier is not None:
        try:
            node = orm.load_node(identifier)
        except Exception as exc:  # NotExistent, MultipleObjectsError
            raise click.ClickException(f'no node {identifier}: {exc}') from exc
        if getattr(node, 'process_label', None) != 'PropertiesWorkChain':
            raise click.ClickException(f'node {identifier} is not a PropertiesWorkChain ({node.__class__.__name__})')
        return node
    qb = orm.QueryBuilder().append(orm.WorkflowNode, filters={'process_type': {'like': '%mmtp.properties'}})
    found = qb.order_by({orm.WorkflowNode: {'ctime': 'desc'}}).first(flat=True)
    if found is None:
        raise click.ClickException('no properties work chain in this profile yet: aiida-mmtp properties launch')
    return found


@main.group()
def properties():
    """Properties of a potential: state averages, elastic constants, phonons, QHA (PropertiesWorkChain)."""


@properties.command('launch')
@click.argument('potential', required=False)
@click.option('-p', '--profile', default=None, help='AiiDA profile (default: the default profile).')
@click.option('--protocol', type=click.Choice(['fast', 'paper']), default='fast', show_default=True)
@click.option('--states', '-s', multiple=True, type=click.Choice(_STATES), help='Default: FM, AFM and PM.')
@click.option('--properties', '-P', 'kinds', multiple=True, type=click.Choice(_KINDS), help='Default: all.')
@click.option(
    '--structure',
    'structure_file',
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help='Unit cell (any format ASE reads); default: 8-atom B1 CrN, a = 4.15 A (relaxed first).',
)
@click.option(
    '--overrides',
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help='YAML/JSON file of protocol keys to change (e.g. settings: {state: {n_states: 20}}).',
)
@click.option('--daemon/--foreground', default=False, show_default=True, help='Submit to the daemon or run here.')
@click.option('--mmtp-code', default=f'{MMTP_CODE}@localhost', show_default=True)
def launch(potential, profile, protocol, states, kinds, structure_file, overrides, daemon, mmtp_code):
    """Compute the properties of POTENTIAL (pk/UUID of a potential or a campaign; default: newest campaign's)."""
    import yaml

    _load(profile)
    from aiida import orm
    from aiida.engine import submit

    from ..workchains.properties import PropertiesWorkChain

    node = _potential(potential)
    extra = yaml.safe_load(Path(overrides).read_text()) if overrides else {}
    if states:
        extra['states'] = list(states)
    if kinds:
        extra['properties'] = list(kinds)
    structure = None
    if structure_file:
        import ase.io

        structure = orm.StructureData(ase=ase.io.read(structure_file))
    try:
        code = orm.load_code(mmtp_code)
    except Exception as exc:  # NotExistent
        raise click.ClickException(f'{exc}: run aiida-mmtp setup first') from exc
    try:
        builder = PropertiesWorkChain.get_builder_from_protocol(
            code, node, structure=structure, protocol=protocol, overrides=extra
        )
        click.echo(
            f'potential {node.pk} ({", ".join(node.species)}, level {node.base.attributes.get("level")}); '
            f'states {", ".join(builder.states.get_list())}; '
            f'properties {", ".join(builder.properties.get_list())}'
        )
        if daemon:
            wc = submit(builder)
            click.echo(f'submitted {wc.process_label}<{wc.pk}>: aiida-mmtp properties show {wc.pk}')
            return
        wc = run_here(builder)
    except ValueError as exc:  # the validator's message names the problem
        raise click.ClickException(str(exc)) from exc
    if wc.is_killed:
        raise click.ClickException(f'{wc.process_label}<{wc.pk}> and every process under it were killed')
    click.echo(f'finished [{wc.exit_status}] {wc.exit_message or ""}'.rstrip())
    _show(wc)
    if not wc.is_finished_ok:
        raise SystemExit(1)


def _validation_of(potential):
    """The newest finished same-fidelity cDFT reference (CdftReferenceWorkChain) that compared ``potential``."""
    from aiida import orm

    qb = orm.QueryBuilder().append(orm.Node, filters={'id': potential.pk}, tag='potential')
    qb.append(orm.WorkflowNode, with_incoming='potential', tag='reference',
              filters={'attributes.process_label': 'CdftReferenceWorkChain', 'attributes.exit_status': 0})  # fmt: skip
    return qb.order_by({'reference': {'ctime': 'desc'}}).first(flat=True)


def _show(wc) -> None:
    from .campaign import validation_lines

    click.echo(f'{wc.process_label}<{wc.pk}> for potential {wc.inputs.potential.pk}')
    reference = _validation_of(wc.inputs.potential)
    if reference is not None and 'comparison' in reference.outputs:
        click.echo(f'{reference.process_label}<{reference.pk}>:')
        for line in validation_lines(reference.outputs.comparison.get_dict()):
            click.echo(line)
    if 'summary' not in wc.outputs:
        click.echo('  no results yet')
        return
    summary = wc.outputs.summary.get_dict()
    for state in _STATES:
        entry = summary.get(state)
        if not entry:
            continue
        click.echo(f'{state}:')
        moments = entry.get('mean_abs_moment_muB')
        if moments:
            text = ', '.join(f'{s} {v:.2f}' for s, v in moments.items())
            collapsed = [s for s, v in moments.items() if v < 0.1]
            note = ''
            if len(collapsed) == len(moments):
                note = ' (no moment survives equilibration: FM, AFM and PM are the same non-magnetic state)'
            click.echo(f'  equilibrated |m|: {text} mu_B{note}')
        if 'average' in entry:
            a = entry['average']
            sem = a['force_on_displaced_sem_eV_per_A'][0]
            click.echo(
                f'  average over {a["n_states"]} states: E {a["energy_per_atom_eV"]:.5f} eV/atom; force on the '
                f'displaced atom {a["force_on_displaced_eV_per_A"][0] * 1e3:.2f} meV/A'
                + (f' (+- {sem * 1e3:.2f})' if sem is not None else '')
            )
        if 'elastic' in entry:
            e = entry['elastic']
            c = e['C_GPa']
            click.echo(
                f'  elastic ({e["crystal_system"]}, a = {", ".join(f"{x:.4f}" for x in e["lattice_A"])} A): '
                f'C11 {c[0][0]:.1f}  C33 {c[2][2]:.1f}  C12 {c[0][1]:.1f}  C13 {c[0][2]:.1f}  '
                f'C44 {c[3][3]:.1f}  C66 {c[5][5]:.1f} GPa; Born-Huang '
                f'{"stable" if e["born_stable"] else "UNSTABLE"}'
            )
        if 'phonons' in entry:
            p = entry['phonons']
            click.echo(
                f'  phonons: max {p["max_frequency_THz"]:.2f} THz, min {p["min_frequency_THz"]:.2f} THz, '
                f'{p["imaginary_mesh_modes"]} imaginary mesh modes' + (', NAC' if p['nac'] else '')
            )
        if 'qha' in entry:
            q = entry['qha']
            click.echo(
                '  qha: '
                + ', '.join(
                    f'{t} K alpha {q["alpha_per_K"][t] * 1e6:.2f}e-6/K Cp {q["cp_J_per_K_mol_atoms"][t]:.2f} J/K/mol'
                    for t in q['alpha_per_K']
                )
            )
    click.echo('Table II (GPa):')
    header = ['C11', 'C33', 'C12', 'C13', 'C44', 'C66']
    click.echo(f'  {"state":5} {"method":22} ' + ' '.join(f'{h:>6}' for h in header))
    for row in summary.get('table_ii', []):
        click.echo(f'  {row["state"]:5} {row["method"]:22} ' + ' '.join(f'{row[h]:6.0f}' for h in header))


@properties.command('show')
@click.argument('identifier', required=False)
@click.option('-p', '--profile', default=None)
def show(identifier, profile):
    """Print the results of a properties work chain (default: the newest)."""
    _load(profile)
    _show(_workchain(identifier))


@properties.command('export')
@click.argument('identifier', required=False)
@click.option('-o', '--output', 'directory', type=click.Path(file_okay=False), help='Default: properties-PK.')
@click.option('-p', '--profile', default=None)
def export(identifier, directory, profile):
    """Write summary.json, table_ii.csv, and per job its results (JSON), tables (CSV) and plots (PNG); where a
    same-fidelity cDFT reference compared this potential: validation.json, table_ii_same_fidelity.csv and
    validation.png."""
    _load(profile)
    wc = _workchain(identifier)
    out = Path(directory or f'properties-{wc.pk}')
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if 'summary' in wc.outputs:
        (out / 'summary.json').write_text(json.dumps(wc.outputs.summary.get_dict(), indent=2) + '\n')
        (out / 'table_ii.csv').write_bytes(wc.outputs.table_ii.get_content('rb'))
        written += ['summary.json', 'table_ii.csv']
    reference = _validation_of(wc.inputs.potential)
    if reference is not None and 'comparison' in reference.outputs:
        comparison = reference.outputs.comparison.get_dict()
        (out / 'validation.json').write_text(json.dumps(comparison, indent=2) + '\n')
        rows = ['state,quantity,cDFT (same fidelity),potential (same cells),relative difference,tolerance,within']
        rows += [','.join('' if r[k] is None else str(r[k]) for k in ('state', 'quantity', 'reference', 'potential',
                                                                   'relative_difference', 'tolerance', 'within'))
                 for r in comparison['comparison']]  # fmt: skip
        (out / 'table_ii_same_fidelity.csv').write_text('\n'.join(rows) + '\n')
        written += ['validation.json', 'table_ii_same_fidelity.csv']
        if 'plot' in reference.outputs:
            (out / 'validation.png').write_bytes(reference.outputs.plot.get_content('rb'))
            written.append('validation.png')
    for job in wc.called:
        if job.process_label != 'MmtpPropertiesCalculation' or not job.is_finished_ok:
            continue
        label = _job_label(wc, job)
        (out / f'{label}.json').write_text(json.dumps(job.outputs.results.get_dict(), indent=2) + '\n')
        written.append(f'{label}.json')
        for group in ('tables', 'plots'):
            for node in job.outputs[group].values() if group in job.outputs else []:
                filename = f'{label}_{node.filename}'
                (out / filename).write_bytes(node.get_content('rb'))
                written.append(filename)
    for name in written:
        click.echo(out / name)


def _job_label(wc, job) -> str:
    """The call link label of ``job`` under ``wc`` (STATE_KIND)."""
    from aiida.common.links import LinkType

    for link in wc.base.links.get_outgoing(link_type=LinkType.CALL_CALC).all():
        if link.node.pk == job.pk:
            return link.link_label
    return f'job{job.pk}'
