"""Benchmark: what a paper-size campaign costs in AiiDA terms (issue 16), rehearsed without DFT.

The ``paper`` protocol's stages (64-atom cells, level 16: 606 parameters; free-moment initial cells, moment
equilibration, relaxation, shear cells, MD at 300 and 1000 K, DLM-MD) in a shortened form (one lattice parameter for
the initial set, fewer and shorter MD runs, at most ``--stage-iterations`` iterations per stage, short fits), submitted
with ``aiida-mmtp campaign launch --daemon --reference-labeller`` to one daemon worker of a throwaway embedded
profile (SQLite + ZeroMQ broker) and labelled by the analytic reference model (``mmtp.reference.label``).

Reports (and writes ``bench_campaign.json`` beside this file):
- AiiDA's overhead: the seconds of wall time in which no job of the campaign ran (each job's run time is taken
  from its own start and end stamps, written by the job), per iteration and per label, and its ratio to the
  paper's cDFT cost of one label (60-90 CPU-hours);
- storage against the number of labels: database and repository bytes sampled while the campaign runs, and at the
  end per node class, with how often each label is stored (training sets are stored whole at every iteration);
- iterations and selections per stage.

    python benchmarks/bench_campaign.py [--stage-iterations 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
PROFILE = 'bench'
#: the paper's cost of one cDFT label on its cluster (protocols/campaign.yaml, paper), CPU-hours
PAPER_LABEL_CPU_HOURS = (60.0, 90.0)
#: the job stamps: every engine job writes its start and end (epoch seconds) into its own folder
STAMPS = {'prepend_text': 'date +%s.%N > _bench_start', 'append_text': 'date +%s.%N > _bench_end'}


def overrides(stage_iterations: int, md_steps: int) -> dict:
    """The ``paper`` protocol, shortened: what changes and why is in the module docstring."""
    md = {'kind': 'md', 'timestep': 1.0, 'steps': md_steps, 'gamma_low': 4.0, 'gamma_up': 10.0}
    ideal = {'start': 'ideal', 'lattice_parameters': [4.15], 'max_iterations': stage_iterations}
    return {
        'initial': {'lattice_parameters': [4.15]},
        'test_set': {'lattice_parameters': [4.15], 'n_perturbed': 0},
        'train_settings': {'max_iter': 10},
        'max_selected': 20,
        'max_jobs': 2,
        'engine_cores': 1,
        'engine_options': STAMPS,
        'stages': [
            {'name': 'equilibrate', 'start': 'initial', 'max_iterations': stage_iterations,
             'simulation': {'kind': 'equilibrate', 'gamma_low': 2.0, 'gamma_up': 10.0, 'steps': 200}},
            {**ideal, 'name': 'relax', 'states': ['FM', 'AFM'],
             'simulation': {'kind': 'relax', 'gamma_low': 2.0, 'gamma_up': 10.0, 'steps': 100, 'fmax': 0.05}},
            {**ideal, 'name': 'shear', 'states': ['FM', 'AFM'], 'prepare': {'kind': 'equilibrate'},
             'strains': [['xx', 0.01], ['xx', -0.01], ['yz', 0.01], ['yz', -0.01]], 'simulation': {'kind': 'label'}},
            {**ideal, 'name': 'md-300K', 'states': ['FM', 'AFM', 'random'], 'n_random': 2,
             'simulation': {**md, 'temperature': 300}},
            {**ideal, 'name': 'md-1000K', 'states': ['FM', 'AFM', 'random'], 'n_random': 2,
             'simulation': {**md, 'temperature': 1000}},
            {**ideal, 'name': 'dlm-md-1000K', 'states': ['random'], 'n_random': 2,
             'simulation': {**md, 'kind': 'dlm-md', 'temperature': 1000, 'spin_every': 5}},
        ],
    }  # fmt: skip


def _run(args: list, env: dict, timeout: float = 600) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f'{" ".join(map(str, args))} failed ({done.returncode}): {done.stderr.strip()[-400:]}')
    return done.stdout


def _storage_bytes(path: Path) -> tuple[int, int]:
    """(database, repository) bytes of an embedded profile's storage folder."""
    database = sum(p.stat().st_size for p in path.glob('*.sqlite*'))
    repository = sum(p.stat().st_size for p in (path / 'container').rglob('*') if p.is_file())
    return database, repository


def _labels_so_far() -> int:
    from aiida import orm

    query = orm.QueryBuilder().append(orm.CalcJobNode, filters={'attributes.process_label': 'MmtpLabelRefCalculation'},
                                      tag='job')  # fmt: skip
    query.append(orm.Data, with_incoming='job', edge_filters={'label': 'training_set'},
                 project=['attributes.n_configurations'])  # fmt: skip
    return int(sum(n or 0 for (n,) in query.all()))


def _stamp(job, name: str) -> float | None:
    folder = job.get_remote_workdir()
    try:
        return float(Path(folder, name).read_text().strip())
    except (OSError, TypeError, ValueError):
        return None


def _uncovered(start: float, end: float, intervals: list[tuple[float, float]]) -> float:
    """Seconds of [start, end] that no interval covers."""
    covered, cursor = 0.0, start
    for lo, hi in sorted(intervals):
        lo, hi = max(lo, cursor), min(hi, end)
        if hi > lo:
            covered += hi - lo
            cursor = hi
    return (end - start) - covered


def analyse(pk: int, samples: list[dict], storage: Path) -> dict:
    """The figures of the finished campaign ``pk``."""
    from aiida import orm

    campaign = orm.load_node(pk)
    jobs = [n for n in campaign.called_descendants if isinstance(n, orm.CalcJobNode)]
    intervals, missing = [], []
    for job in jobs:
        start, end = _stamp(job, '_bench_start'), _stamp(job, '_bench_end')
        if start is None or end is None:
            missing.append(f'{job.process_label}<{job.pk}>')
        else:
            intervals.append((start, end))
    t0, t1 = campaign.ctime.timestamp(), campaign.mtime.timestamp()
    job_kinds: dict[str, dict] = {}
    for job, (start, end) in zip([j for j in jobs if f'{j.process_label}<{j.pk}>' not in missing], intervals):
        kind = job_kinds.setdefault(job.process_label, {'jobs': 0, 'seconds': 0.0})
        kind['jobs'] += 1
        kind['seconds'] = round(kind['seconds'] + end - start, 2)
    summary = campaign.outputs.summary.get_dict() if 'summary' in campaign.outputs else {}
    iterations = []
    for record in summary.get('iterations', []):
        node = orm.load_node(record['uuid'])
        lo, hi = node.ctime.timestamp(), node.mtime.timestamp()
        inside = [(a, b) for a, b in intervals if a < hi and b > lo]
        iterations.append({'stage': record['stage'], 'iteration': record['iteration'],
                           'selected': record['selected'], 'labelled': record.get('labelled', 0),
                           'wall_s': round(hi - lo, 2), 'overhead_s': round(_uncovered(lo, hi, inside), 2),
                           'training_set_size': record.get('training_set_size')})  # fmt: skip
    stages: dict[str, dict] = {}
    for it in iterations:
        stage = stages.setdefault(it['stage'], {'iterations': 0, 'selected': []})
        stage['iterations'] += 1
        stage['selected'].append(it['selected'])
    overhead = _uncovered(t0, t1, intervals)
    labels = _labels_so_far()
    per_class: dict[str, dict] = {}
    for node in orm.QueryBuilder().append(orm.Data).all(flat=True):
        row = per_class.setdefault(type(node).__name__, {'nodes': 0, 'repository_bytes': 0})
        row['nodes'] += 1
        row['repository_bytes'] += sum(len(node.base.repository.get_object_content(name, 'rb'))
                                       for name in node.base.repository.list_object_names())  # fmt: skip
    sets = orm.QueryBuilder().append(orm.Data, filters={'node_type': {'like': 'data.mmtp.training_set.%'}}).all(
        flat=True)  # fmt: skip
    stored = sum(s.base.attributes.get('label_counts')['energy'] for s in sets if not s.by_reference)
    referred = sum(s.base.attributes.get('label_counts')['energy'] for s in sets if s.by_reference)
    database, repository = _storage_bytes(storage)
    per_label_cpu_s = overhead / max(labels, 1)
    return {
        'campaign': {'pk': pk, 'exit_status': campaign.exit_status, 'exit_message': campaign.exit_message,
                     'wall_s': round(t1 - t0, 1), 'labels': labels, 'iterations': len(iterations),
                     'final_training_set': summary.get('training_set_size')},
        'overhead': {'seconds': round(overhead, 1), 'fraction_of_wall': round(overhead / (t1 - t0), 3),
                     'per_iteration_s': round(overhead / max(len(iterations), 1), 2),
                     'per_label_s': round(per_label_cpu_s, 2),
                     'ratio_to_paper_cdft_label': [per_label_cpu_s / (h * 3600) for h in PAPER_LABEL_CPU_HOURS],
                     'jobs_without_stamps': missing},
        'jobs': job_kinds,
        'iterations': iterations,
        'stages': stages,
        'storage': {'database_bytes': database, 'repository_bytes': repository,
                    'bytes_per_label': round((database + repository) / max(labels, 1)),
                    'labels_stored_in_training_sets': stored,
                    'copies_per_label': round(stored / max(labels, 1), 2),
                    'labels_held_by_reference': referred,
                    'copies_per_label_if_merges_copied': round((stored + referred) / max(labels, 1), 2),
                    'by_class': dict(sorted(per_class.items(), key=lambda kv: -kv[1]['repository_bytes'])),
                    'samples': samples},
    }  # fmt: skip


def reanalyse(folder: str) -> None:
    """The figures again, from a kept profile and the samples of the last JSON (after a change of the analysis)."""
    os.environ['AIIDA_PATH'] = folder  # before AiiDA reads its configuration
    from aiida import load_profile
    from report import write_json

    old = json.loads(Path(__file__).with_suffix('.json').read_text())
    profile = load_profile(PROFILE)
    figures = analyse(old['campaign']['pk'], old['storage']['samples'], Path(profile.storage_config['filepath']))
    figures['machine'] = old['machine']
    report(figures)
    write_json(__file__, figures)


def report(figures: dict) -> None:
    """Print the figures."""
    c, o, s = figures['campaign'], figures['overhead'], figures['storage']
    print(f'campaign [{c["exit_status"]}] {c["wall_s"]} s, {c["iterations"]} iterations, {c["labels"]} labels')
    print(
        f'AiiDA overhead (no job running): {o["seconds"]} s = {o["fraction_of_wall"]:.0%} of the wall time; '
        f'{o["per_iteration_s"]} s per iteration, {o["per_label_s"]} s per label = '
        f'{o["ratio_to_paper_cdft_label"][1]:.1e}-{o["ratio_to_paper_cdft_label"][0]:.1e} of a paper cDFT label'
    )
    print(
        f'storage: database {s["database_bytes"] / 1e6:.1f} MB, repository {s["repository_bytes"] / 1e6:.1f} MB, '
        f'{s["bytes_per_label"] / 1e3:.0f} kB per label; each label stored {s["copies_per_label"]} times in '
        f'training sets ({s.get("copies_per_label_if_merges_copied")} if merges copied)'
    )
    for name, row in s['by_class'].items():
        print(f'  {name}: {row["nodes"]} nodes, {row["repository_bytes"] / 1e6:.2f} MB')
    for name, stage in figures['stages'].items():
        print(f'  stage {name}: {stage["iterations"]} iterations, selected {stage["selected"]}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--stage-iterations', type=int, default=2, help='iterations per stage at most')
    parser.add_argument('--md-steps', type=int, default=20, help='steps of each MD run')
    parser.add_argument('--timeout', type=float, default=5400, help='seconds to wait for the campaign')
    parser.add_argument('--keep', default=None, help='keep the profile in this folder (default: a temporary one)')
    parser.add_argument(
        '--reanalyse',
        action='store_true',
        help="analyse again the campaign of the JSON beside this file, in the --keep folder's profile",
    )
    args = parser.parse_args()
    if args.reanalyse:
        reanalyse(args.keep)
        return

    import yaml

    root = Path(args.keep or tempfile.mkdtemp(prefix='bench-campaign-'))
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, 'AIIDA_PATH': str(root), 'PATH': f'{BIN}:{os.environ.get("PATH", "")}'}
    os.environ['AIIDA_PATH'] = str(root)
    (root / 'overrides.yaml').write_text(yaml.safe_dump(overrides(args.stage_iterations, args.md_steps)))
    _run([BIN / 'aiida-mmtp', 'setup', '-p', PROFILE, '--no-paw'], env)
    _run([BIN / 'verdi', '-p', PROFILE, 'daemon', 'start', '1'], env)
    try:
        out = _run([BIN / 'aiida-mmtp', 'campaign', 'launch', '-p', PROFILE, '--protocol', 'paper', '--daemon',
                    '--reference-labeller', '--overrides', root / 'overrides.yaml'], env)  # fmt: skip
        pk = int(re.search(r'CampaignWorkChain<(\d+)>', out).group(1))
        from aiida import load_profile, orm

        profile = load_profile(PROFILE)
        storage = Path(profile.storage_config['filepath'])
        localhost = orm.load_computer('localhost')
        print(f'campaign {pk} submitted; localhost job poll interval {localhost.get_minimum_job_poll_interval()} s',
              flush=True)  # fmt: skip
        samples, t0 = [], time.time()
        while time.time() - t0 < args.timeout:
            node = orm.load_node(pk)
            database, repository = _storage_bytes(storage)
            samples.append({'t_s': round(time.time() - t0, 1), 'labels': _labels_so_far(), 'database_bytes': database,
                            'repository_bytes': repository})  # fmt: skip
            if node.is_terminated:
                break
            time.sleep(10)
        figures = analyse(pk, samples, storage)
    finally:
        subprocess.run([BIN / 'verdi', '-p', PROFILE, 'daemon', 'stop'], env=env, capture_output=True)
    figures['machine'] = {'python': platform.python_version(), 'cpus': os.cpu_count(),
                          'job_poll_interval_s': localhost.get_minimum_job_poll_interval()}  # fmt: skip
    report(figures)
    from report import write_json

    write_json(__file__, figures)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({k: figures[k] for k in ('campaign', 'overhead')}, indent=1))


if __name__ == '__main__':
    main()
