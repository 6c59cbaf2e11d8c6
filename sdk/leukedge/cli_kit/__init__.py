"""Building blocks of the ``leukedge train`` and ``leukedge convert`` command groups.

- :mod:`~leukedge.cli_kit.options`: command-line options derived from the settings
  dataclasses (their defaults, help and choices: one source per setting).
- :mod:`~leukedge.cli_kit.groups`: the groups' default command, missing-extra hints and
  their log handler (standard error).

A package apart from :mod:`leukedge.cli` because :mod:`leukedge.training.cli` and
:mod:`leukedge.converters.cli` import it while :mod:`leukedge.cli` imports them: inside
the ``cli`` package the import would run in a circle.

May import: :mod:`leukedge.errors` only.
"""
