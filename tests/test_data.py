"""Subject parsing, loaders and splits: no subject in two splits, no random image split."""

from __future__ import annotations

from pathlib import Path

import pytest

from leukedge.evaluation.data import (
    Sample,
    balanced_class_weights,
    check_no_subject_leak,
    file_number,
    load_cnmc,
    load_cnmc_prelim,
    load_csv,
    load_taleqani,
    parse_subject,
    read_split,
    split_by_blocks,
    split_by_subject,
    subject_folds,
    write_split,
)

EXPECTED_SUBJECTS = {
    "UID_1_1_1_all.bmp": "1",
    "UID_1_2_2_all.bmp": "1",
    "UID_1_3_1_all.bmp": "1",
    "UID_1_4_2_all.bmp": "1",
    "UID_1_8_1_all.bmp": "1",
    "UID_1_9_1_all.bmp": "1",
    "UID_3_4_2_all.bmp": "3",
    "UID_H10_47_2_hem.bmp": "H10",
    "UID_H6_10_1_hem.bmp": "H6",
    "UID_H6_14_1_hem.bmp": "H6",
    "UID_H6_1_1_hem.bmp": "H6",
    "UID_H6_5_1_hem.bmp": "H6",
    "UID_H6_7_1_hem.bmp": "H6",
    "UID_h3_4_1_hem.bmp": "H3",
    "UID_h3_5_1_hem.bmp": "H3",
}


def test_subject_of_every_cnmc_file(cnmc):
    files = sorted(p.name for p in cnmc.glob("*/*.bmp"))
    assert files == sorted(EXPECTED_SUBJECTS)
    for name in files:
        assert parse_subject(name) == EXPECTED_SUBJECTS[name], name


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("UID_11_10_1_all.bmp", "11"),
        ("uid_h22_31_15_hem.bmp", "H22"),
        ("UID_H022_1_1_hem.bmp", "H22"),
        ("1.bmp", None),
        ("UID_x_1.bmp", None),
    ],
)
def test_parse_subject_edge_cases(name, subject):
    assert parse_subject(name) == subject


def test_load_cnmc_labels_and_subjects(cnmc):
    samples = load_cnmc(cnmc)
    assert len(samples) == 15
    assert {s.label for s in samples if s.subject.startswith("H")} == {"HEM"}
    assert {s.label for s in samples if not s.subject.startswith("H")} == {"ALL"}


def test_cnmc_fold_layout(tmp_path, cnmc):
    for fold, files in (
        ("fold_0", ["all/UID_1_1_1_all.bmp", "hem/UID_H6_1_1_hem.bmp"]),
        ("fold_1", ["all/UID_3_4_2_all.bmp", "hem/UID_h3_4_1_hem.bmp"]),
    ):
        for rel in files:
            target = tmp_path / fold / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(cnmc / rel)
    samples = load_cnmc(tmp_path)
    assert sorted((s.group, s.subject, s.label) for s in samples) == [
        ("fold_0", "1", "ALL"),
        ("fold_0", "H6", "HEM"),
        ("fold_1", "3", "ALL"),
        ("fold_1", "H3", "HEM"),
    ]


def test_prelim_layout_joins_csv_by_name(tmp_path, cnmc):
    (tmp_path / "1.bmp").symlink_to(cnmc / "all" / "UID_1_1_1_all.bmp")
    samples = load_cnmc_prelim(tmp_path, cnmc / "C-NMC_test_prelim_phase_data_labels.csv")
    assert len(samples) == 1
    assert samples[0].label == "ALL" and samples[0].subject == "57"  # row 1: UID_57_29_1_all


def test_csv_loader(tmp_path, cnmc):
    (tmp_path / "list.csv").write_text(
        f"path,label\n{cnmc / 'all' / 'UID_1_1_1_all.bmp'},ALL\n"
        f"{cnmc / 'hem' / 'UID_h3_4_1_hem.bmp'},HEM\n"
    )
    samples = load_csv(tmp_path / "list.csv")
    assert [(s.label, s.subject) for s in samples] == [("ALL", "1"), ("HEM", "H3")]
    (tmp_path / "bad.csv").write_text("path,label\nnope.png,ALL\n")
    with pytest.raises(ValueError, match="bad.csv:2.*does not exist"):
        load_csv(tmp_path / "bad.csv")


def test_taleqani_blocks_are_contiguous_and_disjoint(taleqani):
    samples = load_taleqani(taleqani)
    assert len(samples) == 2733
    splits = split_by_blocks(samples)
    paths = [set(map(str, (s.path for s in splits[k]))) for k in ("train", "val", "test")]
    assert sum(map(len, paths)) == 2733 and not (paths[0] & paths[1] or paths[1] & paths[2])
    for group in ("Benign", "Early", "Pre", "Pro"):
        numbers = {
            k: [file_number(s.path) for s in splits[k] if s.group == group]
            for k in ("train", "val", "test")
        }
        # Every training file number comes before every validation one, and so on.
        assert (
            max(numbers["train"])
            < min(numbers["val"])
            <= max(numbers["val"])
            < min(numbers["test"])
        )
        n = sum(map(len, numbers.values()))
        assert abs(len(numbers["test"]) - 0.15 * n) <= 1
    assert {s.label for s in splits["test"] if s.group == "Benign"} == {"HEM"}


def _synthetic_cnmc(n_subjects=30, images=(3, 12)):
    samples = []
    for i in range(n_subjects):
        healthy = i % 3 == 0
        subject = f"H{i}" if healthy else str(i)
        for j in range(images[0] + (i * 7) % images[1]):
            name = f"UID_{subject}_{j}_1_{'hem' if healthy else 'all'}.bmp"
            samples.append(Sample(Path(name), "HEM" if healthy else "ALL", subject))
    return samples


def test_subject_split_never_leaks_and_hits_fractions():
    samples = _synthetic_cnmc()
    splits = split_by_subject(samples, (0.6, 0.2, 0.2), seed=3)
    check_no_subject_leak(splits)
    assert sum(len(v) for v in splits.values()) == len(samples)
    for label in ("ALL", "HEM"):
        total = sum(s.label == label for s in samples)
        train = sum(s.label == label for s in splits["train"])
        assert 0.45 < train / total < 0.75
        assert any(s.label == label for s in splits["test"])


def test_leak_check_names_the_subject():
    a = Sample(Path("UID_5_1_1_all.bmp"), "ALL", "5")
    b = Sample(Path("UID_5_2_1_all.bmp"), "ALL", "5")
    with pytest.raises(ValueError, match="'5'"):
        check_no_subject_leak({"train": [a], "test": [b]})


def test_subject_folds_are_disjoint():
    folds = subject_folds(_synthetic_cnmc(), k=3, seed=0)
    subjects = [{s.subject for s in f} for f in folds]
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
    assert all(any(s.label == "HEM" for s in f) for f in folds)


def test_split_file_round_trip(tmp_path):
    splits = split_by_subject(_synthetic_cnmc(), seed=1)
    write_split(tmp_path / "split.csv", splits)
    again = read_split(tmp_path / "split.csv")
    assert {k: [s.path for s in v] for k, v in again.items()} == {
        k: [s.path for s in v] for k, v in splits.items()
    }


def test_balanced_class_weights():
    samples = [Sample(Path(f"{i}.bmp"), "ALL" if i < 6 else "HEM") for i in range(8)]
    weights = balanced_class_weights(samples, ("ALL", "HEM"))
    assert weights == pytest.approx({0: 8 / (2 * 6), 1: 8 / (2 * 2)})


def test_kfold_split_rotates_subject_disjoint_folds():
    from leukedge.evaluation.data import make_split

    samples = _synthetic_cnmc()
    seen_test = set()
    for fold in range(3):
        splits = make_split(samples, "kfold", folds=3, fold=fold)
        check_no_subject_leak(splits)
        assert sum(len(v) for v in splits.values()) == len(samples)
        seen_test |= {s.subject for s in splits["test"]}
    assert seen_test == {s.subject for s in samples}
    with pytest.raises(ValueError, match="fold"):
        make_split(samples, "kfold", folds=3, fold=3)
