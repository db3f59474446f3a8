"""The commands: ``sinet-eval``, ``sinet-extract``, ``sinet-search``, ``sinet-viz``, ``sinet-hub``, ``sinet-train``,
``sinet-convert``, ``sinet-export`` and ``sinet-synthetic``, one module each.

A command parses its arguments, calls the library (``reid_eval``, ``sinet_train``, ``sinet_timm``) and prints;
nothing imports a command module (``python -m reid_eval`` / ``python -m sinet_train``, which ``torchrun -m`` needs,
are the only entry points that reach one). Two rules keep them thin and quick:

* arguments are parsed before the library is imported, so ``--help`` and a mistyped flag answer at once instead of
  after the seconds torch takes to import: each ``main`` imports the library after ``parse_args`` on purpose;
* every error a user can cause (:class:`sinet_timm.errors.SinetTimmError`) is printed as one ``error: ...`` line
  with exit status 2, and Ctrl-C as one line saying what a rerun resumes (:func:`sinet_cli._common.run`).
"""
