"""purenet's speed measurements: `python -m benchmarks` (see README.md).

Modules: :mod:`benchmarks.registry` (the name -> benchmark table),
:mod:`benchmarks.timing` (interleaved timing, summaries),
:mod:`benchmarks.report` (results.json and the README table),
:mod:`benchmarks.machine`, :mod:`benchmarks.models`, :mod:`benchmarks.hlo`,
and one module per benchmark. One-off investigations (not run by
`python -m benchmarks`) are in `benchmarks.investigations`.
"""
