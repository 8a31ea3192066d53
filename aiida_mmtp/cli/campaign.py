"""``aiida-mmtp campaign ...``: launch an active-learning campaign, follow it, export and plot its results."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..protocols import default_protocol, list_protocols, protocol_warning
from . import ABINIT_CODE, MMTP_CODE, _load, main, run_here

__all__ = ['campaign']


def _campaign_node(identifier: str | None):
    """The campaign with this pk/UUID, or the newest one."""
    from aiida import orm

    from ..workchains.campaign import previous_campaign

    if identifier is not None:
        try:
            return previous_campaign(identifier)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
    qb = orm.QueryBuilder().append(orm.WorkflowNode, filters={'process_type': {'like': '%mmtp.campaign'}})
    nodes = qb.order_by({orm.WorkflowNode: {'ctime': 'desc'}}).first()
    if nodes is None:
        raise click.ClickException('no campaign in this profile yet: aiida-mmtp campaign launch')
    return nodes[0]


def _where(node) -> str:
    lines = [f'campaign {node.process_label}<{node.pk}> ({node.uuid})',
             f'  follow it:      verdi process report {node.pk}',
             f'  provenance:     verdi node graph generate {node.pk}']  # fmt: skip
    if 'potential' in node.outputs:
        lines.append(
            f'  potential:      node {node.outputs.potential.pk} (aiida-mmtp campaign export {node.pk} -o DIR)'
        )
        lines.append(f'  training set:   node {node.outputs.training_set.pk}')
        lines.append(f'  plots:          aiida-mmtp campaign plot {node.pk} -o DIR')
    return '\n'.join(lines)


def _read_structure(path: str):
    """A periodic StructureData from any file ASE reads; ClickException naming the problem otherwise."""
    import ase.io
    import numpy as np
    from aiida import orm

    try:
        atoms = ase.io.read(path)
    except Exception as exc:  # ASE raises many kinds for files it cannot read
        raise click.ClickException(f'{path}: not a structure ASE can read ({type(exc).__name__}: {exc})') from exc
    if isinstance(atoms, list) or len(atoms) == 0:
        raise click.ClickException(f'{path}: no atoms in the file')
    if not atoms.pbc.all() or abs(np.linalg.det(atoms.cell[:])) < 1e-6:
        raise click.ClickException(f'{path}: the structure has no periodic cell (give all three lattice vectors)')
    return orm.StructureData(ase=atoms)


@main.group()
def campaign():
    """Active-learning campaigns (CampaignWorkChain)."""


@campaign.command('launch')
@click.option('-p', '--profile', default=None, help='AiiDA profile (default: the default profile).')
@click.option('--protocol', type=click.Choice(list(list_protocols())), default=default_protocol('campaign'),
              show_default=True)  # fmt: skip
@click.option('--structure', 'structure_file', type=click.Path(exists=True, dir_okay=False), default=None,
              help='Conventional cell (any format ASE reads); default: B1 CrN, a = 4.15 A.')  # fmt: skip
@click.option(
    '--overrides',
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help='YAML/JSON file of protocol keys to change (e.g. cdft: {parameters: {ecut: 30}}).',
)
@click.option('--max-iterations', type=int, default=None, help='Stop after this many iterations (continue later).')
@click.option('--restart-from', default=None, help='pk or UUID of a campaign to continue (its labels are reused).')
@click.option('--daemon/--foreground', default=False, show_default=True, help='Submit to the daemon or run here.')
@click.option('--abinit-code', default=f'{ABINIT_CODE}@localhost', show_default=True)
@click.option('--mmtp-code', default=f'{MMTP_CODE}@localhost', show_default=True)
@click.option('--reference-labeller', is_flag=True, default=False,
              help='Label by the analytic reference model (mmtp.reference.label) instead of cDFT: a rehearsal of '
              "the protocol's stages without DFT (its potential is not the material's).")  # fmt: skip
def launch(profile, protocol, structure_file, overrides, max_iterations, restart_from, daemon, abinit_code, mmtp_code,
           reference_labeller):  # fmt: skip
    """Launch a campaign with a protocol; prints where its results and provenance are."""
    import yaml

    _load(profile)
    from aiida import orm
    from aiida.engine import submit

    from ..workchains.campaign import CampaignWorkChain
    from ..workchains.labellers import REFERENCE_LABELLER

    try:
        extra = yaml.safe_load(Path(overrides).read_text()) if overrides else {}
    except yaml.YAMLError as exc:
        raise click.ClickException(f'{overrides}: not valid YAML or JSON: {" ".join(str(exc).split())}') from exc
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise click.ClickException(f'{overrides}: give a mapping of protocol keys (e.g. max_selected: 10), '
                                   f'not a {type(extra).__name__}')  # fmt: skip
    if max_iterations is not None:
        extra['max_iterations'] = max_iterations
    structure = None
    if structure_file:
        structure = _read_structure(structure_file)
    try:
        mmtp = orm.load_code(mmtp_code)
        abinit = None if reference_labeller else orm.load_code(abinit_code)
    except Exception as exc:  # NotExistent
        raise click.ClickException(f'{exc}: run aiida-mmtp setup first') from exc
    labeller = {'workchain': REFERENCE_LABELLER, 'code': mmtp} if reference_labeller else None
    warning = None if reference_labeller else protocol_warning('campaign', protocol)
    if warning:
        click.secho(f'warning: {warning}', err=True, fg='yellow')
    try:
        builder = CampaignWorkChain.get_builder_from_protocol(abinit, mmtp, structure=structure, protocol=protocol,
                                                              overrides=extra, labeller=labeller)  # fmt: skip
        if reference_labeller:  # an engine job like the others: the campaign's engine options
            builder.labeller.options = builder.engine_options
        if restart_from:
            builder.restart_from = orm.Str(str(restart_from))
        if daemon:
            node = submit(builder)
            click.echo(f'submitted {node.process_label}<{node.pk}>: verdi process list; '
                       f'aiida-mmtp campaign status {node.pk}')  # fmt: skip
            return
        node = run_here(builder)
    except ValueError as exc:  # the validator's message names the problem
        raise click.ClickException(str(exc)) from exc
    if node.is_killed:
        raise click.ClickException(
            f'{node.process_label}<{node.pk}> and every process under it were killed: '
            f'continue with --restart-from {node.pk} (no finished cDFT run is redone)'
        )
    click.echo(f'finished [{node.exit_status}] {node.exit_message or ""}'.rstrip())
    click.echo(_where(node))
    if not node.is_finished_ok:
        raise SystemExit(1)


@campaign.command('status')
@click.argument('identifier', required=False)
@click.option('-p', '--profile', default=None)
def status(identifier, profile):
    """Progress of a campaign (default: the newest): per iteration, candidates, selected, failed, grade, RMSEs; the
    jobs in flight (preparing, queued, running, retrieving)."""
    from ..workchains.campaign import jobs_in_flight

    _load(profile)
    node = _campaign_node(identifier)
    state = node.process_state.value if node.process_state else 'unknown'
    click.echo(f'{node.process_label}<{node.pk}> {node.label}: {state}'
               + (f' [{node.exit_status}] {node.exit_message or ""}' if node.is_finished else ''))  # fmt: skip
    extras = node.base.extras.all
    for warning in extras.get('warnings', []):
        click.echo(f'warning: {warning}')
    click.echo(f'stage: {extras.get("stage")}; completed: {", ".join(extras.get("completed_stages", [])) or "none"}; '
               f'training set: {extras.get("n_training", 0)} configurations')  # fmt: skip
    nan = float('nan')
    click.echo(f'{"":59} {"training RMSE":^29} {"test RMSE (held out)":^29}')
    columns = f'{"#":>3} {"stage":14} {"candidates":>10} {"selected":>8} {"failed":>6} {"refused":>7} {"max grade":>9} '
    click.echo(columns + 2 * f'{"E meV/at":>9} {"F meV/A":>9} {"T meV/muB":>9} ')
    for k, it in enumerate(extras.get('iterations', []), start=1):
        errors = ''.join(f'{it.get(f"{prefix}_{key}", nan):9.3g} ' for prefix in ('rmse', 'test_rmse')
                         for key in ('E_meV_per_atom', 'F_meV_per_A', 'T_meV_per_mu_B'))  # fmt: skip
        click.echo(f'{k:3d} {it["stage"]:14} {it["candidates"]:10d} {it["selected"]:8d} {it["failed"]:6d} '
                   f'{it.get("refused_labels", 0):7d} {it["max_grade"]:9.3g} {errors}')  # fmt: skip
    for k, it in enumerate(extras.get('iterations', []), start=1):
        if it.get('fit_note'):
            click.echo(f'fit quality, iteration {k}: {it["fit_note"]}')
    if not node.is_terminated:
        for line in job_lines(jobs_in_flight(node)):
            click.echo(line)
    if 'reference' in node.outputs:
        for line in validation_lines(node.outputs.reference.get_dict()):
            click.echo(line)
    if node.is_finished:
        click.echo(_where(node))


def job_lines(phases: dict) -> list[str]:
    """Where the campaign's unfinished jobs are (``jobs_in_flight``): one line per phase, with pk, scheduler job id
    and what each job is."""
    if not phases:
        return ['jobs: none in flight']
    total = sum(len(calcs) for calcs in phases.values())
    lines = [f'jobs: {total} in flight: ' + ', '.join(f'{len(calcs)} {phase}' for phase, calcs in phases.items())]
    for phase, calcs in phases.items():
        for calc in calcs:
            job = calc.get_job_id()
            lines.append(f'  {phase:14} {calc.process_label}<{calc.pk}>' + (f' job {job}' if job else '')
                         + _called_as(calc))  # fmt: skip
    return lines


def _called_as(calc) -> str:
    """`` (CdftBaseWorkChain label_c00003)``: what called the job, under which call link."""
    from aiida.common.links import LinkType

    caller = calc.caller
    if caller is None:
        return ''
    link = caller.base.links.get_incoming(link_type=LinkType.CALL_WORK).first()
    return f' ({caller.process_label}' + (f' {link.link_label})' if link else ')')


def validation_lines(comparison: dict) -> list[str]:
    """The final potential beside same-fidelity cDFT (the ``reference`` output of a campaign), one row per quantity."""
    lines = ['validation: the potential beside same-fidelity cDFT on the same cells',
             f'  {"state":6} {"quantity":28} {"cDFT":>10} {"potential":>10} {"diff":>7}  verdict']  # fmt: skip
    for row in comparison['comparison']:
        ref = '-' if row['reference'] is None else f'{row["reference"]:10.4g}'
        pot = '-' if row['potential'] is None else f'{row["potential"]:10.4g}'
        diff = '-' if row['relative_difference'] is None else f'{row["relative_difference"]:7.1%}'
        verdict = 'within' if row['within'] else 'OUTSIDE'
        lines.append(f'  {row["state"]:6} {row["quantity"]:28} {ref:>10} {pot:>10} {diff:>7}  {verdict} '
                     f'{row["tolerance"]:.0%}')  # fmt: skip
    moments = comparison.get('equilibrated_moment_muB') or {}
    if moments:
        lines.append('  (moment_muB of the potential: after moment equilibration at the cDFT (m0, a0) cell)')
    return lines


def _output_dir(directory: str | None, node) -> Path:
    out = Path(directory or f'campaign-{node.pk}')
    out.mkdir(parents=True, exist_ok=True)
    return out


@campaign.command('export')
@click.argument('identifier', required=False)
@click.option('-o', '--output', 'directory', type=click.Path(file_okay=False), help='Default: campaign-PK.')
@click.option('-p', '--profile', default=None)
def export(identifier, directory, profile):
    """Write the final potential (.mtp), the training set (.cfg, extxyz), the summary (JSON) and, where the
    campaign was validated, the comparison with same-fidelity cDFT (validation.json, validation.png).

    IDENTIFIER: pk or UUID of the campaign (default: the newest)."""
    _load(profile)
    node = _campaign_node(identifier)
    if 'potential' not in node.outputs:
        raise click.ClickException(f'campaign {node.pk} has no outputs yet ({node.process_state.value})')
    out = _output_dir(directory, node)
    (out / 'potential.mtp').write_text(node.outputs.potential.get_content())
    node.outputs.training_set.export_cfg(out / 'training_set.cfg')
    node.outputs.training_set.export_extxyz(out / 'training_set.xyz')
    (out / 'summary.json').write_text(json.dumps(node.outputs.summary.get_dict(), indent=2) + '\n')
    names = ['potential.mtp', 'training_set.cfg', 'training_set.xyz', 'summary.json']
    if 'test_set_labels' in node.outputs:
        node.outputs.test_set_labels.export_cfg(out / 'test_set.cfg')
        names.append('test_set.cfg')
    if 'reference' in node.outputs:
        (out / 'validation.json').write_text(json.dumps(node.outputs.reference.get_dict(), indent=2) + '\n')
        names.append('validation.json')
    if 'reference_plot' in node.outputs:
        (out / 'validation.png').write_bytes(node.outputs.reference_plot.get_content('rb'))
        names.append('validation.png')
    for name in names:
        click.echo(out / name)


@campaign.command('plot')
@click.argument('identifier', required=False)
@click.option('-o', '--output', 'directory', type=click.Path(file_okay=False), help='Default: campaign-PK.')
@click.option('-p', '--profile', default=None)
def plot(identifier, directory, profile):
    """PNG plots: learning curve (selected per iteration) and parity plots of E, F, S, T on the training set
    and the held-out test set.

    IDENTIFIER: pk or UUID of the campaign (default: the newest)."""
    _load(profile)
    from .plots import learning_curve, parity_data, parity_plot

    node = _campaign_node(identifier)
    out = _output_dir(directory, node)
    iterations = node.base.extras.get('iterations', [])
    if iterations:
        click.echo(learning_curve(iterations, out / 'learning_curve.png'))
    if 'potential' in node.outputs:
        potential = node.outputs.potential.get_potential()
        data = parity_data(potential, node.outputs.training_set.get_configurations())
        test = None
        if 'test_set_labels' in node.outputs:
            test = parity_data(potential, node.outputs.test_set_labels.get_configurations())
        click.echo(parity_plot(data, out / 'parity.png', test=test))


@main.command('protocols')
def protocols():
    """The protocols of the campaign, with what each one is for."""
    from ..protocols import list_protocols

    for name, description in list_protocols().items():
        click.echo(f'{name}: {description}\n')
