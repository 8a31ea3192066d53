"""``campaign status`` says where each unfinished job of a campaign is: preparing, queued, running, retrieving."""

from __future__ import annotations


def job_under(parent, computer, label: str, state, scheduler_state=None, job_id=None, finished=False):
    """A CdftCalculation node (no real job) called by a CdftBaseWorkChain node that ``parent`` called as ``label``."""
    from aiida import orm
    from aiida.common.links import LinkType
    from aiida.engine import ProcessState

    base = orm.WorkflowNode()
    base.set_process_label('CdftBaseWorkChain')
    base.base.links.add_incoming(parent, LinkType.CALL_WORK, label)
    base.store()
    calc = orm.CalcJobNode(computer=computer)
    calc.set_process_label('CdftCalculation')
    calc.set_option('resources', {'num_machines': 1, 'num_mpiprocs_per_machine': 1})
    calc.base.links.add_incoming(base, LinkType.CALL_CALC, 'iteration_01')
    calc.store()
    calc.set_process_state(ProcessState.FINISHED if finished else ProcessState.WAITING)
    if finished:
        calc.set_exit_status(0)
    if state is not None:
        calc.set_state(state)
    if scheduler_state is not None:
        calc.set_scheduler_state(scheduler_state)
    if job_id is not None:
        calc.set_job_id(job_id)
    return calc


def test_jobs_in_flight_are_listed_by_phase_with_their_scheduler_ids(aiida_localhost):
    from aiida import orm
    from aiida.common.datastructures import CalcJobState
    from aiida.schedulers.datastructures import JobState

    from aiida_mmtp.cli.campaign import job_lines
    from aiida_mmtp.workchains.campaign import jobs_in_flight

    campaign = orm.WorkflowNode()
    campaign.set_process_label('CampaignWorkChain')
    campaign.store()
    queued = job_under(campaign, aiida_localhost, 'label_c00001', CalcJobState.WITHSCHEDULER, JobState.QUEUED, '101')
    running = job_under(campaign, aiida_localhost, 'label_c00002', CalcJobState.WITHSCHEDULER, JobState.RUNNING, '102')
    retrieving = job_under(campaign, aiida_localhost, 'label_c00003', CalcJobState.RETRIEVING, JobState.DONE, '103')
    preparing = job_under(campaign, aiida_localhost, 'label_c00004', CalcJobState.UPLOADING)
    job_under(campaign, aiida_localhost, 'label_c00005', None, JobState.DONE, '100', finished=True)  # not in flight

    phases = jobs_in_flight(campaign)
    assert {phase: [calc.pk for calc in calcs] for phase, calcs in phases.items()} == {
        'queued': [queued.pk], 'running': [running.pk], 'retrieving': [retrieving.pk], 'preparing': [preparing.pk]
    }  # fmt: skip
    lines = job_lines(phases)
    assert lines[0] == 'jobs: 4 in flight: 1 queued, 1 running, 1 retrieving, 1 preparing'
    assert f'  queued         CdftCalculation<{queued.pk}> job 101 (CdftBaseWorkChain label_c00001)' in lines
    assert job_lines({}) == ['jobs: none in flight']
