#!/usr/bin/env python3
"""Install leukedge's runtime from a built wheel into a fresh venv per Python; classify.

For every Python found on this machine (``python3.10`` … ``python3.14`` on ``PATH``, in
``/usr/bin`` or under ``~/.pyenv/versions``; or those given with ``--python``) and for each
dependency set asked for:

- ``newest``: ``pip install WHEEL``, as a new user would (the newest releases the registry
  serves for that Python and platform);
- ``lowest``: every runtime requirement pinned to its lower bound (``name>=X`` becomes
  ``name==X``, after evaluating the environment markers for that Python), so the bounds in
  ``pyproject.toml`` are the versions tested together, not the ones that happened to be
  installed (the idea of uv's ``--resolution lowest-direct``);

it creates a venv with no system packages, installs the runtime only (no extras) with
``pip --isolated`` (no local pip configuration, indexes or constraints), runs ``leukedge
info`` and ``leukedge classify --json`` on ``examples/images/`` and, with ``--tests``, the
runtime test files (``RUNTIME_TESTS``) against the installed wheel. Labels must equal the
reference run's (the newest set on the first Python); max |Δp| against it is reported.

Not part of the default test run (it downloads from the registry and takes minutes):

    nice -n 10 python3 tools/check_platforms.py --deps newest --deps lowest --tests \\
        --out /tmp/platforms

Writes ``OUT/platforms.md`` (the README's table) and ``OUT/platforms.json``. Exit code 0
when every Python × set installed, classified with the reference labels and (with
``--tests``) passed; 1 otherwise; 2 for usage errors (no Python found, unbounded
requirement in ``lowest``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
IMAGES = sorted((REPO / "examples" / "images").glob("*.[jb][pm][gp]"))
RUNTIME_TESTS = [
    f"tests/test_{name}.py"
    for name in (
        "preprocess",
        "sdk_correctness",
        "cli_and_sdk",
        "trust_sdk",
        "quality",
        "decision",
        "ood",
        "examples",
        "lab_units",
        "lab_cli",
    )
]
"""Test files that need only the runtime (no TensorFlow, no training extras)."""
SHOWN = [
    "ai-edge-litert",
    "numpy",
    "pillow",
    "opencv-python-headless",
    "typer",
    "flatbuffers",
    "watchdog",
    "ml-dtypes",
]
"""Installed versions reported in the table (ml-dtypes comes with LiteRT)."""
MINORS = ["3.10", "3.11", "3.12", "3.13", "3.14"]

# packaging.markers.default_environment(), run by the target interpreter (stdlib only).
_MARKER_ENV = """
import json, os, platform, sys
iv = sys.implementation.version
v = f"{iv.major}.{iv.minor}.{iv.micro}" + ("" if iv.releaselevel == "final"
    else iv.releaselevel[0] + str(iv.serial))
print(json.dumps({
    "implementation_name": sys.implementation.name, "implementation_version": v,
    "os_name": os.name, "platform_machine": platform.machine(),
    "platform_release": platform.release(), "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform, "executable": sys.executable}))
"""


@dataclass
class Run:
    """One Python × dependency set: what was installed and what came out."""

    python: str
    executable: str
    deps: str
    pins: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    installed: bool = False
    info_ok: bool = False
    results: dict[str, dict] = field(default_factory=dict)  # image name -> label, probs
    tests: str = ""  # pytest's last line, "" when not run
    tests_ok: bool | None = None
    problem: str = ""
    labels_equal: bool | None = None
    max_abs_dp: float | None = None


def find_pythons() -> list[Path]:
    """One interpreter per minor version (3.10 …), the first that runs: PATH, /usr/bin, pyenv."""
    found: dict[str, Path] = {}
    for minor in MINORS:
        candidates = [shutil.which(f"python{minor}"), f"/usr/bin/python{minor}"]
        candidates += sorted(Path.home().glob(f".pyenv/versions/{minor}.*/bin/python{minor}"))
        for cand in candidates:
            if cand and Path(cand).exists() and _runs(Path(cand), minor):
                found[minor] = Path(cand)
                break
    return list(found.values())


def _runs(python: Path, minor: str) -> bool:
    probe = subprocess.run(
        [str(python), "-c", "import sys, venv; print(sys.version)"], capture_output=True, text=True
    )
    return probe.returncode == 0 and probe.stdout.startswith(minor + ".")


def build_wheel(out: Path) -> Path:
    """``pip wheel --no-deps`` of this repository into ``out``; returns the wheel's path."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        check=True,
    )
    return max(out.glob("leukedge-*.whl"), key=lambda p: p.stat().st_mtime)


def runtime_requirements(wheel: Path) -> list[Requirement]:
    """The wheel's ``Requires-Dist`` entries that belong to no extra."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(name).decode()
    reqs = [
        Requirement(line.split(":", 1)[1].strip())
        for line in text.splitlines()
        if line.startswith("Requires-Dist:")
    ]
    return [r for r in reqs if not (r.marker and "extra" in str(r.marker))]


def lowest_pins(reqs: list[Requirement], env: dict[str, str]) -> list[str]:
    """``name==X`` for every requirement that applies in ``env``, X its ``>=`` bound.

    Raises:
        ValueError: a requirement without exactly one ``>=`` bound (nothing to test), or two
            requirements for one package that both apply in ``env``.
    """
    pins = []
    for req in reqs:
        if req.marker and not req.marker.evaluate({**env, "extra": ""}):
            continue
        lower = [s.version for s in req.specifier if s.operator == ">="]
        if len(lower) != 1:
            raise ValueError(f"{req}: needs exactly one '>=' lower bound to test it")
        if any(pin.split("==")[0] == req.name for pin in pins):
            raise ValueError(f"{req.name}: two requirements apply here; make the markers exclusive")
        pins.append(f"{req.name}=={lower[0]}")
    return pins


def check(
    python: Path, deps: str, wheel: Path, reqs: list[Requirement], work: Path, tests: bool
) -> Run:
    """Fresh venv with ``python``, install, info, classify (and tests); never raises."""
    env_json = subprocess.run(
        [str(python), "-c", _MARKER_ENV], capture_output=True, text=True, check=True
    ).stdout
    env = json.loads(env_json)
    run = Run(python=env["python_full_version"], executable=str(python), deps=deps)
    venv = work / f"venv-{run.python}-{deps}"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    try:
        run.pins = lowest_pins(reqs, env) if deps == "lowest" else []
    except ValueError as exc:
        run.problem = str(exc)
        return run
    install = subprocess.run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "-q",
            "--isolated",
            "--disable-pip-version-check",
            str(wheel),
            *run.pins,
        ],
        capture_output=True,
        text=True,
        env=clean_env,
    )
    if install.returncode != 0:
        run.problem = "install failed: " + _last_error(install.stderr)
        return run
    run.installed = True
    freeze = subprocess.run(
        [str(py), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        env=clean_env,
        check=True,
    )
    by_name = {
        re.sub(r"[-_.]+", "-", p["name"].lower()): p["version"] for p in json.loads(freeze.stdout)
    }
    run.versions = {name: by_name.get(name, "-") for name in SHOWN}
    run.versions["pip"] = by_name.get("pip", "-")
    leukedge = str(venv / "bin" / "leukedge")
    info = subprocess.run(
        [leukedge, "info", "--json"], capture_output=True, text=True, env=clean_env, cwd=work
    )
    run.info_ok = info.returncode == 0 and '"leukedge_default"' in info.stdout
    out = subprocess.run(
        [leukedge, "classify", "--json", *map(str, IMAGES)],
        capture_output=True,
        text=True,
        env=clean_env,
        cwd=work,
    )
    for line in out.stdout.splitlines():
        obj = json.loads(line)
        run.results[Path(obj["path"]).name] = {
            "label": obj.get("label"),
            "probabilities": obj.get("probabilities") or {},
            "error": obj.get("error"),
        }
    if out.returncode != 0 or len(run.results) != len(IMAGES):
        run.problem = f"classify exit {out.returncode}: " + _last_error(out.stderr)
    if tests:
        _run_tests(run, py, clean_env)
    return run


def _run_tests(run: Run, py: Path, env: dict[str, str]) -> None:
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--isolated", "pytest"],
        capture_output=True,
        text=True,
        env=env,
    )
    if pip.returncode != 0:
        run.tests, run.tests_ok = "pytest not installed: " + _last_error(pip.stderr), False
        return
    # -p no:cacheprovider: write nothing into the repository; rootdir keeps setup.cfg.
    res = subprocess.run(
        [str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", *RUNTIME_TESTS],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    run.tests = lines[-1].strip("= ") if lines else _last_error(res.stderr)
    run.tests_ok = res.returncode == 0
    if not run.tests_ok:
        (Path(tempfile.gettempdir()) / f"leukedge-tests-{run.python}-{run.deps}.log").write_text(
            res.stdout + res.stderr
        )


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("ERROR", "error"))]
    return (errors or lines or ["(no output)"])[-1][:300]


def compare_to(reference: Run, runs: list[Run]) -> None:
    """Set ``labels_equal`` and ``max_abs_dp`` of every run against ``reference``."""
    for run in runs:
        if not run.results:
            continue
        equal, dp = True, 0.0
        for name, ref in reference.results.items():
            got = run.results.get(name)
            if got is None or got["error"] or got["label"] != ref["label"]:
                equal = False
                continue
            for cls, p in ref["probabilities"].items():
                dp = max(dp, abs(p - got["probabilities"].get(cls, float("nan"))))
        run.labels_equal, run.max_abs_dp = equal, dp


def ok(run: Run) -> bool:
    """Installed, ``info`` ran, classified with the reference labels, tests passed if run."""
    return (
        run.installed
        and run.info_ok
        and not run.problem
        and bool(run.labels_equal)
        and run.tests_ok is not False
    )


def markdown(runs: list[Run], platform_name: str) -> str:
    """The README's table: one row per Python × dependency set."""
    head = [
        "Python",
        "deps",
        "LiteRT",
        "NumPy",
        "Pillow",
        "OpenCV",
        "Typer",
        "flatbuffers",
        "watchdog",
        "classify (labels, max abs dp)",
        "runtime tests",
        "result",
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        v = run.versions
        if run.labels_equal is None:
            cls = run.problem or "-"
        else:
            cls = f"{'same' if run.labels_equal else 'DIFFERENT'} labels, {run.max_abs_dp:.4f}"
        tests = re.sub(r"(, \d+ warnings?)? in [\d.]+s.*$", "", run.tests) or "-"  # counts only
        cells = [
            run.python,
            run.deps,
            v.get("ai-edge-litert", "-"),
            v.get("numpy", "-"),
            v.get("pillow", "-"),
            v.get("opencv-python-headless", "-"),
            v.get("typer", "-"),
            v.get("flatbuffers", "-"),
            v.get("watchdog", "-"),
            cls,
            tests,
            "ok" if ok(run) else "FAILED",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return (
        f"{platform_name}, `leukedge classify --json examples/images/*`:\n\n"
        + "\n".join(rows)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--python",
        action="append",
        type=Path,
        default=None,
        help="an interpreter to test (repeatable; default: all found)",
    )
    parser.add_argument(
        "--deps",
        action="append",
        choices=("newest", "lowest"),
        default=None,
        help="dependency set (repeatable; default: newest and lowest)",
    )
    parser.add_argument("--tests", action="store_true", help="also run the runtime tests")
    parser.add_argument("--wheel", type=Path, default=None, help="a built leukedge wheel")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("platform-check"),
        help="folder for venvs and results (default ./platform-check)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="only print the table of a saved platforms.json (runs nothing)",
    )
    args = parser.parse_args(argv)
    if args.render:
        saved = [Run(**r) for r in json.loads(args.render.read_text())]
        print(markdown(saved, "Linux x86_64"), end="")
        return 0 if all(ok(r) for r in saved) else 1
    pythons = args.python or find_pythons()
    if not pythons:
        print("error: no Python 3.10+ found; give --python", file=sys.stderr)
        return 2
    deps_sets = args.deps or ["newest", "lowest"]
    args.out.mkdir(parents=True, exist_ok=True)
    wheel = args.wheel or build_wheel(args.out / "wheel")
    reqs = runtime_requirements(wheel)
    print(f"wheel {wheel.name}; runtime requirements: {', '.join(map(str, reqs))}")
    runs = []
    for python in pythons:
        for deps in deps_sets:
            run = check(python, deps, wheel, reqs, args.out, args.tests)
            runs.append(run)
            print(
                f"{run.python:<8} {deps:<7} {'installed' if run.installed else 'NOT installed'}"
                f" {json.dumps(run.versions)} {run.problem} {run.tests}",
                flush=True,
            )
    reference = next(
        (r for r in runs if r.deps == "newest" and len(r.results) == len(IMAGES) and not r.problem),
        None,
    )
    if reference is None:
        print("error: no run classified every example image", file=sys.stderr)
        return 1
    compare_to(reference, runs)
    uname = os.uname()
    table = markdown(runs, f"{uname.sysname} {uname.machine}")
    (args.out / "platforms.md").write_text(table)
    (args.out / "platforms.json").write_text(json.dumps([asdict(r) for r in runs], indent=1))
    print("\n" + table)
    print(f"reference: Python {reference.python} {reference.deps}")
    return 0 if all(ok(r) for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
