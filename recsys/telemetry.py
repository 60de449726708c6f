"""Prometheus values kept in process memory, whatever Feast has set.

Importing Feast sets ``PROMETHEUS_MULTIPROC_DIR``, which puts ``prometheus_client`` into
multiprocess mode: every observation then writes an mmap'd file under a lock (16 µs per
Recommend for the serving metrics, measured), ``Gauge.clear()`` is missing, and metrics of
one name share a value across registries. Each of our processes serves its own registry,
so the in-process values are the right ones.
"""

from __future__ import annotations


def in_process_values() -> None:
    """Metrics created after this call keep their values in memory (idempotent)."""
    from prometheus_client import values

    values.ValueClass = values.MutexValue
