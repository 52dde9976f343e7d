"""forensix benchmarks: overhead, loss and scale, side by side with auditd and strace.

Run with ``python -m bench [--quick] [--only WORKLOAD,...]``; results go to
docs/benchmarks.md and docs/benchmarks.json. See docs/benchmarks.md for what each
workload measures.
"""
