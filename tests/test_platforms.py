"""The platform checks: the arm64 emulation script, its comparison logic on the saved outputs
of the recorded run, the lower-bound pinning of tools/check_platforms.py, and the README's
platform table against the recorded results. Fast: nothing here installs or emulates."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import load_script
from packaging.requirements import Requirement

from leukedge.engine.metadata import weights_sha256

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs tomli on 3.10")

REPO = Path(__file__).resolve().parents[1]
PI = REPO / "examples" / "raspberry_pi"
RESULTS = PI / "arm64_results"
PLATFORM_RESULTS = REPO / "tools" / "platform_results"


def _module(path: Path):
    return load_script(path, "_mod_")


@pytest.fixture(scope="module")
def compare_runs():
    return _module(PI / "compare_runs.py")


@pytest.fixture(scope="module")
def check_platforms():
    return _module(REPO / "tools" / "check_platforms.py")


def _line(path, label, p_all, **extra):
    probs = None if p_all is None else {"ALL": p_all, "HEM": 1 - p_all}
    return json.dumps({"path": path, "label": label, "probabilities": probs, **extra})


# ------------------------------------------------------------------ check_arm64.sh
def test_check_arm64_script_is_valid_bash():
    bash = shutil.which("bash")
    assert bash, "bash not found"
    proc = subprocess.run([bash, "-n", str(PI / "check_arm64.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_check_arm64_script_refuses_a_missing_data_folder(tmp_path):
    proc = subprocess.run(
        ["bash", str(PI / "check_arm64.sh"), "--out", str(tmp_path), str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "nowhere/Benign not found" in proc.stderr
    assert not list(tmp_path.iterdir())  # refused before writing anything


# ------------------------------------------------------------------ comparison logic
def test_recorded_run_has_the_same_labels_on_aarch64_and_x86_64(compare_runs):
    x86 = compare_runs.load_results(RESULTS / "classify_x86_64.jsonl")
    # The run is of the embedded model (v3: statuses, failed checks, out-of-domain distance).
    # The file ran then (model.json's model_sha256) has the embedded model's weights; its
    # metadata was rewritten since (version, card), which changes the file's sha256 only.
    model = REPO / "sdk" / "leukedge" / "models" / "leukedge_default_int8.tflite"
    pinned = json.loads((RESULTS / "model.json").read_text())
    assert weights_sha256(model.read_bytes()) == pinned["weights_sha256"], "re-run check_arm64.sh"
    for line in (RESULTS / "classify_x86_64.jsonl").read_text().splitlines():
        assert json.loads(line)["model_sha256"] == pinned["model_sha256"]
    assert all(r.ood_distance is not None for r in x86.values())
    names = ["classify_aarch64_clean_pi4", "classify_aarch64_clean_pi5"]
    names += ["classify_aarch64_system-numpy_pi4", "api_aarch64_clean_pi4"]
    for name in names:
        arm = compare_runs.load_results(RESULTS / f"{name}.jsonl")
        result = compare_runs.compare(x86, arm)
        assert result.ok and result.compared == 54, compare_runs.summary(result)
        assert result.ood_compared == 54 and 0 <= result.max_ood_rel < 1e-6
        assert 0 <= result.max_abs_dp < 0.1
        assert result.statuses == {"ok": 49, "refer": 3, "rejected": 2}
    # The figures quoted in examples/raspberry_pi/README.md are the ones the files give.
    summary = (RESULTS / "summary.txt").read_text()
    readme = (PI / "README.md").read_text()
    clean = compare_runs.compare(
        x86, compare_runs.load_results(RESULTS / "classify_aarch64_clean_pi4.jsonl")
    )
    assert f"max |dp| {clean.max_abs_dp:.4f}" in summary
    assert f"max |Δp| {clean.max_abs_dp:.4f}" in readme
    # v3: one field's uint8 output one step apart (0.0010 after the temperature), refer on
    # both sides; v2's were identical on all 54.
    assert f"probabilities identical {clean.identical_probabilities}/54" in summary
    assert clean.identical_probabilities >= 50
    assert f"`ood_distance`: max relative difference {clean.max_ood_rel:.2e}" in readme
    assert f"max relative difference {clean.max_ood_rel:.2e}" in summary
    # The Bookworm Picamera2 set-up kept apt's NumPy 1.24.2; XNNPACK ran on aarch64.
    system = (RESULTS / "python_aarch64_system-numpy.txt").read_text()
    assert "numpy 1.24.2 /usr/lib/python3/dist-packages/numpy" in system
    assert "XNNPACK delegate" in (RESULTS / "info_aarch64.stderr").read_text()
    assert "PASS" not in summary and "FAILED" not in summary and summary.count("OK: same") == 5


def test_compare_reports_max_abs_dp_and_where(compare_runs, tmp_path):
    ref = {"a.jpg": compare_runs.Record("ALL", {"ALL": 0.9, "HEM": 0.1})}
    ref["b.jpg"] = compare_runs.Record("HEM", {"ALL": 0.4, "HEM": 0.6})
    other = {"a.jpg": compare_runs.Record("ALL", {"ALL": 0.88, "HEM": 0.12})}
    other["b.jpg"] = compare_runs.Record("HEM", {"ALL": 0.45, "HEM": 0.55})
    result = compare_runs.compare(ref, other)
    assert result.ok and result.compared == 2
    assert result.max_abs_dp == pytest.approx(0.05) and result.worst == ("b.jpg", "ALL")
    assert "labels equal 2/2, max |dp| 0.0500 (b.jpg, p_ALL)" in compare_runs.summary(result)


def test_compare_fails_on_a_flipped_label_missing_image_or_error(compare_runs, tmp_path):
    ref, other = tmp_path / "ref.jsonl", tmp_path / "other.jsonl"
    ref.write_text(
        "\n".join(
            [_line("a.jpg", "ALL", 0.9), _line("b.jpg", "HEM", 0.49), _line("c.jpg", "ALL", 0.7)]
        )
        + "\n"
    )
    other.write_text(
        "\n".join(
            [
                _line("a.jpg", "ALL", 0.9),
                _line("b.jpg", "ALL", 0.51),  # across the boundary
                _line("d.jpg", "ALL", 0.8),
                _line("e.jpg", None, None, error="e.jpg: corrupt"),
            ]
        )
    )
    assert compare_runs.main([str(ref), str(ref)]) == 0
    result = compare_runs.compare(compare_runs.load_results(ref), compare_runs.load_results(other))
    assert not result.ok
    assert result.label_mismatches == [("b.jpg", "HEM", "ALL")]
    assert result.only_in_reference == ["c.jpg"]
    assert result.only_in_other == ["d.jpg", "e.jpg"]
    assert compare_runs.main([str(ref), str(other), "--names", "x86", "arm"]) == 1


def test_compare_fails_on_a_different_status_reason_or_failed_check(compare_runs, tmp_path):
    # Model v2's results: same label None for refer/rejected, so the status, the reason and
    # the failed checks must be compared themselves; ood_distance's relative difference is
    # measured. Each image differs from the reference in one way only.
    def v2(path, status, p_all, ood, reason=None, failed=(), label=None):
        return _line(
            path,
            label,
            p_all,
            status=status,
            reason=reason,
            failed_checks=list(failed),
            ood_distance=ood,
            model_probabilities={"ALL": p_all, "HEM": 1 - p_all},
        )

    ref, other = tmp_path / "ref.jsonl", tmp_path / "other.jsonl"
    ref.write_text(
        "\n".join(
            [
                v2("same.jpg", "ok", 0.9, 1000.0, label="ALL"),
                v2("refer.jpg", "ok", 0.76, 1500.0, label="ALL"),
                v2(
                    "ood.jpg",
                    "rejected",
                    0.2,
                    1700.0,
                    "underexposed",
                    ["underexposed", "out_of_domain"],
                ),
                v2("noood.jpg", "ok", 0.1, 900.0, label="HEM"),
                v2("band.jpg", "refer", 0.5, 1600.0, "uncertain"),
            ]
        )
    )
    other.write_text(
        "\n".join(
            [
                v2("same.jpg", "ok", 0.9, 1010.0, label="ALL"),  # 1 % further: reported
                v2("refer.jpg", "refer", 0.75, 1500.0, "uncertain"),  # p across the band
                # the out-of-domain check passes here (1700 -> 1620: the largest change)
                v2("ood.jpg", "rejected", 0.2, 1620.0, "underexposed", []),
                v2("noood.jpg", "ok", 0.1, None, label="HEM"),  # no embedding on one side
                # no call on either side, but for another reason: the status must differ
                v2("band.jpg", "rejected", 0.5, 1640.0, "out_of_domain", ["out_of_domain"]),
            ]
        )
    )
    assert compare_runs.main([str(ref), str(ref)]) == 0
    a, b = compare_runs.load_results(ref), compare_runs.load_results(other)
    assert (
        a["ood.jpg"].failed_checks == ("out_of_domain", "underexposed")
        and a["ood.jpg"].ood_distance == 1700
    )
    result = compare_runs.compare(a, b)
    assert not result.ok and result.compared == 5
    assert result.label_mismatches == [("band.jpg", "refer", "rejected")] + [
        ("refer.jpg", "ALL", "refer")
    ]
    assert [m[0] for m in result.check_mismatches] == ["noood.jpg", "ood.jpg"]
    assert "ood none" in result.check_mismatches[0][2]
    assert "failed: out_of_domain,underexposed;" in result.check_mismatches[1][1]
    assert "failed: -;" in result.check_mismatches[1][2]
    assert result.statuses == {"ok": 3, "refer": 1, "rejected": 1}
    assert result.ood_compared == 4 and result.identical_probabilities == 4
    assert result.max_ood_rel == pytest.approx(80 / 1700)
    assert result.worst_ood == ("ood.jpg", 1700.0, 1620.0)
    text = compare_runs.summary(result, ("x86", "arm"))
    assert "labels and statuses equal 3/5 (x86: ok 3, refer 1, rejected 1)" in text
    assert "reasons and failed checks equal 1/5, probabilities identical 4/5" in text
    assert "ood_distance on 4/5, max relative difference 4.71e-02 (ood.jpg: 1700.00 vs" in text
    assert "label differs: refer.jpg: ALL (x86) vs refer (arm)" in text
    assert text.endswith("FAILED")
    assert compare_runs.main([str(ref), str(other)]) == 1


def test_compare_refuses_unreadable_files(compare_runs, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "a.jpg", "label": "ALL"}\nnot json\n')
    assert compare_runs.main([str(bad), str(bad)]) == 2
    assert "bad.jsonl, line 2: not JSON" in capsys.readouterr().err
    twice = tmp_path / "twice.jsonl"
    twice.write_text(_line("a.jpg", "ALL", 0.9) + "\n" + _line("a.jpg", "ALL", 0.9) + "\n")
    with pytest.raises(compare_runs.ResultsFileError, match="appears twice"):
        compare_runs.load_results(twice)
    assert compare_runs.main([str(tmp_path / "missing.jsonl"), str(twice)]) == 2


# ------------------------------------------------------------------ tools/check_platforms.py
ENVS = {
    minor: {
        "python_version": minor,
        "python_full_version": minor + ".0",
        "sys_platform": "linux",
        "platform_machine": "aarch64",
        "platform_system": "Linux",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "implementation_version": minor + ".0",
        "platform_release": "",
        "platform_version": "",
    }
    for minor in ("3.10", "3.11", "3.12", "3.13")
}


def test_lowest_pins_follow_the_markers_of_pyproject(check_platforms):
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps]
    pins = {
        m: dict(p.split("==") for p in check_platforms.lowest_pins(reqs, e))
        for m, e in ENVS.items()
    }
    # One NumPy pin per Python: the first release with wheels for it (Bookworm's 1.24 on 3.11).
    assert [pins[m]["numpy"] for m in ENVS] == ["1.24.2", "1.24.2", "1.26.0", "2.1.0"]
    for m in ENVS:  # every runtime package pinned, and only those
        assert set(pins[m]) == {Requirement(d).name for d in deps}
    with pytest.raises(ValueError, match="exactly one '>=' lower bound"):
        check_platforms.lowest_pins([Requirement("numpy")], ENVS["3.11"])
    overlapping = [Requirement("numpy>=1.26; python_version>='3.12'"), Requirement("numpy>=2.1")]
    with pytest.raises(ValueError, match="two requirements apply"):
        check_platforms.lowest_pins(overlapping, ENVS["3.13"])


def test_readme_platform_table_is_the_recorded_run():
    table = (PLATFORM_RESULTS / "platforms.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| 3.")]
    assert len(rows) == 8 and all(row.endswith("| ok |") for row in rows)
    readme = (REPO / "README.md").read_text()
    for row in rows:
        assert row in readme, f"README.md lacks the recorded row {row}"
    runs = json.loads((PLATFORM_RESULTS / "platforms.json").read_text())
    assert sorted({r["python"][:4] for r in runs}) == ["3.10", "3.11", "3.12", "3.13"]
    assert all(r["labels_equal"] and r["tests_ok"] for r in runs)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for run in (r for r in runs if r["deps"] == "lowest"):
        assert sorted(run["pins"]) == sorted(
            f"{Requirement(d).name}=={next(iter(Requirement(d).specifier)).version}"
            for d in pyproject["dependencies"]
            if not Requirement(d).marker
            or Requirement(d).marker.evaluate({**ENVS[run["python"][:4]], "extra": ""})
        ), "pyproject.toml's lower bounds changed since the recorded run: run the tool again"
