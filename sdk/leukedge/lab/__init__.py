"""The lab workflow: many images in, one record each out, and the slide's call.

- inputs: :mod:`~leukedge.lab.inputs` (files, folders, ``--files-from`` → paths; outputs
  checked before the work starts), :mod:`~leukedge.lab.subjects` (the C-NMC subject in a
  file name).
- the run: :mod:`~leukedge.lab.batch` (ordered parallel classification),
  :mod:`~leukedge.lab.pipeline` (``leukedge classify`` on many files),
  :mod:`~leukedge.lab.stopping` (Ctrl+C / SIGTERM between records),
  :mod:`~leukedge.lab.watch` (new files in a folder), :mod:`~leukedge.lab.camera` (frames).
- results: :mod:`~leukedge.lab.records` (one record per input),
  :mod:`~leukedge.lab.outputs` (CSV and JSON Lines, written atomically; a new output
  format goes here), :mod:`~leukedge.lab.groups` (per-slide/subject statistics and the
  group's call), :mod:`~leukedge.lab.report` (terminal table, progress, summary).

May import: the classifier (:mod:`leukedge.classifier`) and what it stands on
(:mod:`leukedge.engine`, :mod:`leukedge.checks`, :mod:`leukedge.cells`,
:mod:`leukedge.errors`). Never the CLI: the commands call into here, not back.
"""
