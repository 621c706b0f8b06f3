"""What a cell's run needs of the harness, written once for the harness and its repro scripts.

Each module is one concept and imports only torch, the standard library and the modules of
this package above it in this list (tests/harness/test_import_layers.py holds that):

- ``dtypes``     dtype names, aliases and default tolerances
- ``programs``   ``module:function`` resolution and the built-in programs' registry
- ``inputs``     input specs, the input-kind registry and deterministic input construction
- ``backends``   the matrix's backends, one record each: what ``execute`` compiles with
- ``execute``    running a program (eager, float64, compiled) and naming its outputs
- ``tolerance``  the tolerance model's numbers: errors, SQNR, which checks an output fails
- ``sample``     the golden's fixed sample of a big output

:mod:`harness.repro` pastes these modules' source, in this order, into every repro script,
so that a script rebuilds the inputs, runs the program and judges the outputs with the very
code the harness used. This file imports nothing: the harness imports the modules by name.
"""
