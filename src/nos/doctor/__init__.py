"""``nos doctor``: is this cluster set up so that nos can partition its GPUs?

``checks`` are pure functions over Node and Pod objects (plain API dicts), ``collect`` reads those
objects through the ``Kube`` port, ``report`` renders the findings and the exit code.
"""

from nos.doctor.checks import run_checks
from nos.doctor.collect import DEFAULT_AGENT_SELECTOR, DEFAULT_MIG_MANAGER_SELECTOR, ClusterFacts, collect
from nos.doctor.report import Finding, Report, Status

__all__ = [
    "DEFAULT_AGENT_SELECTOR",
    "DEFAULT_MIG_MANAGER_SELECTOR",
    "ClusterFacts",
    "Finding",
    "Report",
    "Status",
    "collect",
    "run_checks",
]
