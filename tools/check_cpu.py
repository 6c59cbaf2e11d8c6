"""Run tests on a restricted x86-64 CPU model under user-mode QEMU.

The test suite must hold on every supported CPU (AVX2 only, AVX-512/VNNI, AMX, aarch64):
int8 kernels, BLAS and oneDNN pick their code by the CPU's instruction set, so a figure one
CPU happens to hit may be missed on another. Without such a machine, QEMU's user mode runs
this machine's Python on an emulated CPU model that lacks the newer instructions
(``Haswell``: AVX2 and FMA, no AVX-512, no VNNI, no AMX), so NumPy, LiteRT/XNNPACK and
TensorFlow choose their AVX2 code paths, as on an AVX2-only EPYC.

Usage (from the repository root; ``apt-get install qemu-user-static`` once)::

    python tools/check_cpu.py                       # the default set, on Haswell
    python tools/check_cpu.py --cpu Haswell -- tests/test_ood.py -k threshold
    python tools/check_cpu.py --with-tensorflow     # adds the gate tests (slow: see below)

Before the tests it checks, inside the emulated process, that NumPy sees the CPU model's
features (AVX2 yes, AVX512F no for Haswell) and stops if the model is not in force.

Limits: QEMU emulates one process. A test that starts a subprocess (the CLI tests do) would
run that subprocess on the host CPU, so ``sitecustomize.py`` beside this file (put on
``PYTHONPATH`` by this tool) starts every ``sys.executable`` child under the same QEMU and
CPU model. Emulation is slow (TCG: about 10 to 50 times slower for vector code), so the
default set is the fast runtime tests and the gate's TensorFlow tests are opt-in
(tests/README.md, "Restricted-CPU check", has the measured times and results).

Exit status: pytest's, or 2 when QEMU is missing or the CPU model is not in force.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DEFAULT_TESTS = [
    "tests/test_ood.py",
    "tests/test_decision.py",
    "tests/test_resolution.py",
    "tests/test_convert_splits.py",
    "tests/test_trust_sdk.py",
    "tests/test_cli_and_sdk.py",
]
"""NumPy-only OOD scoring, decisions, resolution and split checks, and the SDK's LiteRT
runtime on the embedded int8 model with its fitted checks (no TensorFlow); run with
``-m "not slow"``."""

TENSORFLOW_TESTS = ["tests/test_gate.py"]
"""The gate end to end: a probe trained and converted under the CPU model, int8 included."""

PROBE = """
from numpy._core._multiarray_umath import __cpu_features__ as f
print(" ".join(k for k in ("AVX2", "FMA3", "AVX512F", "AVX512VNNI", "AMX_TILE") if f.get(k)))
"""

MISSING = {"Haswell": "AVX512F", "Broadwell": "AVX512F", "Skylake-Client": "AVX512F"}
"""A feature each CPU model must hide; the check stops when NumPy still sees it."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", default="Haswell", help="QEMU CPU model (default Haswell)")
    parser.add_argument("--qemu", default="qemu-x86_64-static", help="QEMU user-mode binary")
    parser.add_argument(
        "--with-tensorflow", action="store_true", help="also run " + " ".join(TENSORFLOW_TESTS)
    )
    parser.add_argument("pytest_args", nargs="*", help="pytest arguments (after --)")
    args = parser.parse_args(argv)
    qemu = shutil.which(args.qemu) or shutil.which("qemu-x86_64")
    if qemu is None:
        print(f"error: {args.qemu} not found: apt-get install qemu-user-static", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env["LEUKEDGE_QEMU"] = f"{qemu} -cpu {args.cpu}"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).with_name("qemu_cpu")), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    command = [qemu, "-cpu", args.cpu, sys.executable]
    probe = subprocess.run(
        [*command, "-c", PROBE], capture_output=True, text=True, env=env, cwd=REPO
    )
    features = probe.stdout.split()
    print(f"{args.cpu} under {qemu}: NumPy sees {' '.join(features) or 'nothing'}")
    hidden = MISSING.get(args.cpu)
    if probe.returncode != 0 or "AVX2" not in features or (hidden and hidden in features):
        print(f"error: the CPU model is not in force:\n{probe.stderr[-2000:]}", file=sys.stderr)
        return 2
    if args.pytest_args:
        tests = args.pytest_args
    elif args.with_tensorflow:
        tests = DEFAULT_TESTS + TENSORFLOW_TESTS
    else:
        tests = ["-m", "not slow", *DEFAULT_TESTS]
    start = time.monotonic()
    result = subprocess.run(
        [*command, "-m", "pytest", "-p", "no:cacheprovider", "-q", *tests], env=env, cwd=REPO
    )
    print(f"{args.cpu}: pytest exit {result.returncode} in {time.monotonic() - start:.0f} s")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
