"""The failure-injection harness (`squall chaos`, tests/chaos): a stateful stream on a local
cluster, faults injected by a seeded plan, and an exact comparison of the output with plain
Python over the same events. See harness.run_trial."""

from squall.chaos.harness import TrialResult, run_trial
from squall.chaos.plan import FAULT_KINDS, Fault, plan_faults

__all__ = ["FAULT_KINDS", "Fault", "TrialResult", "plan_faults", "run_trial"]
