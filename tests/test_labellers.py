"""Pluggable labellers: the interface, the analytic reference labeller, and a whole campaign labelled by it.

- the reference labeller (``mmtp.reference.label``, a job running ``mmtp label-ref``) gives the analytic model's
  exact labels, each sourced to its job, and at free moments the model's equilibrium (T = 0);
- a work chain without the interface, an unknown entry point, two labellers at once, or a labeller with the cDFT
  validation are refused before anything runs, in one line;
- the ``fast`` campaign labelled by it converges, and a campaign stopped mid-way continues without labelling any
  configuration again.
"""

from __future__ import annotations

import numpy as np
import pytest

REFERENCE = 'mmtp.reference.label'
MISSING_CODE = r"labeller mmtp\.reference\.label: required value was not provided for 'code'"


def processes() -> int:
    from aiida import orm

    return orm.QueryBuilder().append(orm.ProcessNode).count()


def reference_builder(mmtp_code, **overrides):
    from aiida_mmtp.workchains.campaign import CampaignWorkChain

    labeller = {'workchain': REFERENCE, 'code': mmtp_code}
    return CampaignWorkChain.get_builder_from_protocol(None, mmtp_code, protocol='fast', overrides=overrides,
                                                       labeller=labeller)  # fmt: skip


def label_ref_jobs(node) -> list:
    return [n for n in node.called_descendants if n.process_label == 'MmtpLabelRefCalculation']


def test_reference_labeller_gives_the_models_labels_with_their_sources(mmtp_code):
    from aiida import orm
    from aiida.engine import run_get_node
    from conftest import magnetic_crn

    from aiida_mmtp.data import TrainingSetData
    from aiida_mmtp.mtp.reference import MagneticPairPotential
    from aiida_mmtp.mtp.structures import rocksalt
    from aiida_mmtp.workchains.labellers import ReferenceLabelWorkChain

    configs = [magnetic_crn(rocksalt(4.15), seed) for seed in range(3)]
    unlabelled = TrainingSetData(configs, ['Cr', 'N'], origins=['cell1', 'cell2', 'cell3'])
    _, node = run_get_node(ReferenceLabelWorkChain, code=mmtp_code, configurations=unlabelled)
    assert node.is_finished_ok, node.exit_message
    labelled = node.outputs.training_set
    (job,) = label_ref_jobs(node)
    assert labelled.sources == [job.uuid] * 3 and labelled.fidelity['code'].startswith('analytic magnetic pair')
    assert labelled.origins == ['cell1', 'cell2', 'cell3']  # what each label is, as for cDFT labels
    assert node.outputs.failures['n_failed'] == 0
    model = MagneticPairPotential()
    for got, cfg in zip(labelled.get_configurations(), configs):
        exact = model.label(cfg)
        assert got.energy == pytest.approx(exact.energy, abs=1e-8)
        np.testing.assert_allclose(got.forces, exact.forces, atol=1e-6)
        np.testing.assert_allclose(got.mag_forces, exact.mag_forces, atol=1e-6)
        np.testing.assert_allclose(got.moments, cfg.moments, atol=1e-6)

    # free moments: the model's equilibrium at fixed atoms, signs kept, every magnetic force ~ 0
    _, free = run_get_node(ReferenceLabelWorkChain, code=mmtp_code, configurations=unlabelled,
                           free_moments=orm.Bool(True))  # fmt: skip
    assert free.is_finished_ok, free.exit_message
    for got, cfg in zip(free.outputs.training_set.get_configurations(), configs):
        cr = cfg.types == 0
        assert np.all(np.sign(got.moments[cr]) == np.sign(cfg.moments[cr]))
        assert np.abs(got.moments[cr] - cfg.moments[cr]).max() > 0.01  # they moved ...
        assert np.abs(got.mag_forces[cr]).max() < 1e-4  # ... to where T = -dE/dm vanishes


def test_labellers_without_the_interface_are_refused_before_anything_runs(codes):
    from aiida import orm
    from aiida.engine import run

    from aiida_mmtp.workchains.campaign import CampaignWorkChain
    from aiida_mmtp.workchains.labellers import load_labeller

    mmtp_code = codes[1]

    with pytest.raises(ValueError, match=r"labeller 'mmtp\.nothing': no work chain of that entry point"):
        load_labeller('mmtp.nothing')
    with pytest.raises(ValueError, match=r"labeller 'mmtp\.fit': FitWorkChain has no input `configurations`"):
        load_labeller('mmtp.fit')
    assert load_labeller(REFERENCE).__name__ == 'ReferenceLabelWorkChain'

    before = processes()
    builder = reference_builder(mmtp_code)
    builder.labeller.workchain = orm.Str('mmtp.fit')
    with pytest.raises(ValueError, match=r"labeller 'mmtp\.fit': FitWorkChain has no input `configurations`"):
        run(builder)
    builder = reference_builder(mmtp_code)
    del builder.labeller['code']  # the labeller's own validation speaks
    with pytest.raises(ValueError, match=MISSING_CODE):
        run(builder)
    builder = reference_builder(mmtp_code)
    builder.reference = orm.Dict({'states': ['FM']})
    with pytest.raises(ValueError, match='reference: the same-fidelity validation runs cDFT scans; it needs the cDFT'):
        run(builder)
    builder = CampaignWorkChain.get_builder_from_protocol(*codes, protocol='fast')  # cDFT ...
    builder.labeller = {'workchain': orm.Str(REFERENCE), 'code': mmtp_code}  # ... and another
    with pytest.raises(ValueError, match=r'exactly one of `label` \(cDFT inputs\) and `labeller`'):
        run(builder)
    assert processes() == before


def test_campaign_labelled_by_the_reference_model_converges_and_continues(mmtp_code):
    from aiida import orm
    from aiida.engine import run_get_node

    from aiida_mmtp.protocols import get_protocol_inputs

    stages = get_protocol_inputs('campaign', 'fast')['stages']
    _, first = run_get_node(reference_builder(mmtp_code, stages=stages, max_iterations=2))
    assert first.exit_status == 401, first.exit_message  # stopped mid-way: continue with restart_from
    builder = reference_builder(mmtp_code, stages=stages)
    builder.restart_from = orm.Str(first.uuid)
    _, second = run_get_node(builder)
    assert second.is_finished_ok, second.exit_message
    summary = second.outputs.summary.get_dict()
    assert summary['converged'] and summary['completed_stages'] == ['equilibrate', 'shear', 'md-300K']
    assert not summary['warnings']  # fast's warning is about its cDFT settings

    jobs = {job.uuid: job for job in label_ref_jobs(first) + label_ref_jobs(second)}
    training, test = second.outputs.training_set, second.outputs.test_set_labels
    assert set(training.sources) <= set(jobs) and set(test.sources) <= set(jobs)  # every label from its job
    assert not set(test.sources) & set(training.sources)  # held out
    assert len(test) == 3 and training.fidelity == test.fidelity
    # nothing labelled twice: the continued campaign labels only what its own iterations selected
    earlier = set(first.outputs.training_set.sources) | set(test.sources)
    assert earlier <= {job.uuid for job in label_ref_jobs(first)}
    assert set(training.sources) - earlier == {job.uuid for job in label_ref_jobs(second)}
    assert 'initial_set' not in {link.link_label for link in second.base.links.get_outgoing().all()}
    by_stage = {}
    for it in summary['iterations']:
        by_stage.setdefault(it['stage'], []).append(it['selected'])
    assert by_stage['equilibrate'][-1] == 0 and by_stage['md-300K'][-1] == 0
    assert sum(sum(s) for s in by_stage.values()) > by_stage['shear'][0]  # the loop selected along the way
