"""quantcheck's pytest plugin: YAML cases -> backend x device x dtype matrix -> run -> compare -> report.

Module map, each importing only modules above it in this list (tests/harness/test_import_layers.py
holds every module, and every import in it, at module level or in a function, to that):

- ``core``              what a cell's run needs of the harness, and every repro script carries
                        (torch and the standard library only; the package imports nothing):
- ``core.dtypes``       dtype names and aliases accepted in YAML, default tolerances
- ``core.programs``     ``module:function`` resolution and the built-in programs' registry
- ``core.inputs``       input specs, input kinds (registry), deterministic construction of a call sequence's inputs
- ``core.backends``     the matrix's backends, one record each (compile call, code, FileCheck names)
- ``core.execute``      running a program's calls (eager, float64, compiled for a backend record) on inputs it builds, outputs named
- ``core.tolerance``    the tolerance model's numbers: errors, SQNR, which checks an output fails
- ``core.sample``       the golden's fixed sample of a big output
- ``project``           the project's settings: suite patterns, suites root, suite keys, golden dir
- ``filecheck``         LLVM FileCheck blocks with our diagnostics (and the directive check the loader runs)
- ``case.errors``       the one-line ``path:line: field: problem`` error of a suite file
- ``case.yaml_lines``   YAML with line numbers; duplicate-key, alias-bomb and bad-key guards
- ``case.model``        the frozen ``Case`` records (fuzz spec included) and the names they may hold
- ``case.validators``   where a value sits; checks of single values (``when:``, a FileCheck text's directives)
- ``case.check_sections`` the ``checks:`` part of a case, parsed by the keys each check of ``checks`` declares
- ``case.sections``     each part of a case's YAML -> its record
- ``case``              YAML -> frozen ``Case`` (validated, line numbers kept): ``load_suite``
- ``matrix``            ``Case`` -> ``MatrixCell`` list; device detection
- ``kernel_asm``        PTX / SASS / register use of a cell's Triton kernels
- ``run``               one cell: eager, float64, compiled; code, graphs and counters captured
- ``compare``           the numeric report of a comparison, from ``core.tolerance``'s verdicts
- ``golden``            safetensors goldens with JSON sidecars, atomic locked writes; obtained files
- ``golden_cli``        ``python -m harness golden show|diff``: one golden, and a failing cell's obtained outputs
- ``counters``          counter and graph-count expectations
- ``report``            failure text and the session summary table
- ``perf``              timers, perf golden records and their judgement
- ``checks.context``    what a check reads (settings, the cell's site, the run) and the ``Check`` protocol
- ``checks.numeric``    compiled vs eager (and float64), a fuzz case's reference, ``references``
- ``checks.golden``     the golden check: write when asked, compare, keep ``.obtained`` files
- ``checks.filecheck``  the FileCheck blocks of a cell
- ``checks.counters``   counters, graphs, graph breaks, recompiles
- ``checks.perf``       the perf check of a timed cell
- ``checks``            the ordered list of checks, for the items and bisect
- ``fuzz``              a fuzz case's search: examples drawn, the first failure shrunk, the pinned case
- ``report_html``       ``--report``: the static HTML page and its pictures
- ``repro_template``    the body of a repro script, after the core's source
- ``repro``             a failing cell's standalone repro script
- ``bisect``            ``--bisect``: where a failing cell's compiled result diverges
- ``items``             ``CaseFile`` / ``CaseItem`` / ``FuzzItem`` pytest nodes
- ``guard``             what surrounds each cell's run: deadline, crash record, torch state
- ``diagnostics``       crashed cells, repro scripts, bisect and the HTML report, at session end
- ``plugin``            hooks and options only
- ``__main__``          ``python -m harness``: every suite, -n auto, the summary table
"""
