"""Start Python children under the same QEMU CPU model (``tools/check_cpu.py``).

User-mode QEMU emulates one process; a child it ``exec``s runs on the host CPU. With
``LEUKEDGE_QEMU`` set (``"/usr/bin/qemu-x86_64-static -cpu Haswell"``), every
``subprocess.Popen`` whose program is this interpreter (``sys.executable``, as the CLI
tests start ``python -m leukedge.cli``) is started as ``qemu -cpu MODEL python …``. Other
programs (bash, git, systemd-analyze) run natively. Does nothing without the variable.
"""

import os
import shlex
import subprocess
import sys

_QEMU = shlex.split(os.environ.get("LEUKEDGE_QEMU", ""))

if _QEMU:
    _popen_init = subprocess.Popen.__init__

    def _init(self, args, *rest, **kwargs):
        if isinstance(args, (list, tuple)) and args and not kwargs.get("shell"):
            program = os.fspath(args[0])
            if program == sys.executable or os.path.realpath(program) == os.path.realpath(
                sys.executable
            ):
                args = [*_QEMU, *map(os.fspath, args)]
        _popen_init(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = _init
