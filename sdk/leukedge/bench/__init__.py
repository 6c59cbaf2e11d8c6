"""Measurements behind ``leukedge bench``: commands that write numbers, not tests.

- :mod:`~leukedge.bench.measure`: latency per thread count, SDK overhead, cold start,
  peak memory, and the report a person reads.
- :mod:`~leukedge.bench.op_profile`: per-operator LiteRT timings (``--profile-ops``).

May import: :mod:`leukedge.engine`, :mod:`leukedge.classifier` (and what they stand on).
Never the lab workflow or the CLI. ``leukedge bench --compare`` adds the other engines on
top of these, from :mod:`leukedge.converters.compare`.
"""
