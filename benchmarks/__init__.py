"""purenet's speed measurements: `python -m benchmarks` (see README.md).

Modules: `benchmarks.registry` (the name -> benchmark table),
`benchmarks.timing` (interleaved timing, summaries),
`benchmarks.report` (results.json and the README table),
`benchmarks.machine`, `benchmarks.models`, `benchmarks.hlo`,
and one module per benchmark. One-off investigations (not run by
`python -m benchmarks`) are in `benchmarks.investigations`.
"""
