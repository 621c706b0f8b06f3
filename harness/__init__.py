"""quantcheck's pytest plugin: YAML cases -> backend x device x dtype matrix -> run -> compare -> report.

Module map, each importing only modules above it in this list:

- ``project``    the project's settings: suite patterns, suites root, suite keys, golden dir
- ``dtypes``     dtype names and aliases accepted in YAML
- ``inputs``     input kinds (registry) and deterministic input construction
- ``programs``   built-in programs and ``module:function`` resolution
- ``filecheck``  LLVM FileCheck blocks with our diagnostics (and the directive check the loader runs)
- ``case``       YAML -> frozen ``Case`` (validated, line numbers kept)
- ``matrix``     ``Case`` -> ``MatrixCell`` list; device detection
- ``run``        one cell: eager, float64, compiled; code, graphs and counters captured
- ``compare``    tolerance model and numeric report
- ``golden``     safetensors goldens with JSON sidecars, atomic locked writes
- ``counters``   counter and graph-count expectations
- ``checks``     the checks of one run (vs eager, counters and graphs, FileCheck): items, fuzz, bisect
- ``report``     failure text and the session summary table
- ``items``      ``CaseFile`` / ``CaseItem`` pytest nodes
- ``plugin``     hooks and options only
"""
