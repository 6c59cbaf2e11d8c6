"""Which out-of-domain score should leukedge ship? A re-runnable study on a ``.tflite`` model.

Reads the model's intermediate tensors with LiteRT (``experimental_preserve_all_tensors``,
reference kernels, no XNNPACK, so every tensor is readable), so it works on models that do
not export an embedding yet, and uses the embedding output when the model has one:

- ``backbone_gap``: the backbone's last feature map (e.g. 7×7×1280), average-pooled here;
- ``head_gap``: the head's pooled vector (after the attention block, for proposed models);
- ``penultimate``: the input of the last dense layer (128-d for proposed models);
- ``logits``: the input of the softmax (for the energy score);
- ``embedding_output``: the model's own embedding output, when present.

Every score is fitted on the Taleqani **train** block only; its threshold is the 97th
percentile (the order statistic at or above it) of the **val** block, so ≥ 97 % of val fields
pass by construction; "val, other half" sets the threshold on one contiguous half of val and
measures acceptance on the other (averaged both ways), an honest in-domain estimate that
still leaves the test block unread. Refusal rates are measured on data the model never
trained on: BCCD smear fields (another lab), normal white-cell crops (wbc-normal), C-NMC
single cells, scikit-image's bundled photographs, and synthetic blank / noise / heavily
blurred / greyscale images. The test block is read only with ``--eval-split test`` (once, by
the lead, at the end).

Run from the repository root (needs no training, no TensorFlow; ~3,300 model runs):

    nice -n 10 .venv/bin/python tools/ood_study.py \\
        --model sdk/leukedge/models/leukedge_default_int8.tflite --data ../shared/data \\
        --out runs/ood-study

Writes ``ood_study.md`` (the tables), ``ood_study.json`` (all figures) and a feature cache
``features_<sha>.npz`` (re-used on the next run with the same model and data).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from leukedge.checks.ood import MahalanobisScorer, fit_mahalanobis
from leukedge.checks.quality import check_quality, derive_thresholds, image_statistics
from leukedge.engine.preprocess import load_rgb, resize_rgb
from leukedge.evaluation.data import LABELS, file_number, load_taleqani, split_by_blocks

ACCEPT_QUANTILE = 0.97
CACHE_VERSION = 3
"""Part of the feature cache's name: bump when the features or image_statistics change."""
IMAGE_SUFFIXES = {".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".gif"}


# ------------------------------------------------------------------------ features
class FeatureReader:
    """Intermediate tensors of one ``.tflite`` classifier, dequantized to float.

    Args:
        model: the ``.tflite`` file.

    Raises:
        ValueError: no SOFTMAX op or no square 4-D feature map found.
    """

    def __init__(self, model: Path):
        import warnings

        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.interpreter = Interpreter(
                model_path=str(model),
                experimental_preserve_all_tensors=True,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                num_threads=1,
            )
        it = self.interpreter
        it.allocate_tensors()
        self.details = {t["index"]: t for t in it.get_tensor_details()}
        self.input = it.get_input_details()[0]
        self.input_size = tuple(int(d) for d in self.input["shape"][1:3])
        ops = it._get_ops_details()
        softmax = [o for o in ops if o["op_name"] == "SOFTMAX"]
        if not softmax:
            raise ValueError(f"{model}: no SOFTMAX op; not a leukedge classifier")
        self.tensors: dict[str, int] = {"logits": int(softmax[-1]["inputs"][0])}
        producer = {int(t): o for o in ops for t in o["outputs"]}
        logits_op = producer[self.tensors["logits"]]
        if logits_op["op_name"] == "FULLY_CONNECTED":
            self.tensors["penultimate"] = int(logits_op["inputs"][0])
        maps = [
            int(o["outputs"][0])
            for o in ops
            if o["index"] < softmax[-1]["index"]
            and len(s := self.details[int(o["outputs"][0])]["shape"]) == 4
            and s[1] == s[2] > 1
        ]
        if not maps:
            raise ValueError(f"{model}: no square 4-D feature map found")
        self.tensors["backbone_map"] = maps[-1]
        channels = int(self.details[maps[-1]]["shape"][3])
        pooled = [
            int(o["outputs"][0])
            for o in ops
            if o["op_name"] == "MEAN"
            and list(self.details[int(o["outputs"][0])]["shape"]) == [1, channels]
        ]
        if pooled:
            self.tensors["head_gap"] = pooled[-1]
        outputs = it.get_output_details()
        n_classes = int(self.details[self.tensors["logits"]]["shape"][-1])
        for out in outputs:
            if len(out["shape"]) == 2 and int(out["shape"][1]) != n_classes:
                self.tensors["embedding_output"] = int(out["index"])

    def _value(self, index: int) -> np.ndarray:
        detail = self.details[index]
        raw = self.interpreter.get_tensor(index)
        scale, zero_point = detail["quantization"]
        if raw.dtype == np.float32 or not scale:
            return raw.astype(np.float64)
        return (raw.astype(np.float64) - zero_point) * scale

    def read(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """Features of one RGB ``uint8`` image at the model's input size."""
        x = rgb[None]
        if self.input["dtype"] == np.float32:
            x = x.astype(np.float32)
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        out = {name: self._value(index)[0] for name, index in self.tensors.items()}
        out["backbone_gap"] = out.pop("backbone_map").mean(axis=(0, 1))
        return out


# ------------------------------------------------------------------------ data
@dataclass
class ImageSet:
    """Named images: ``ids`` and a loader per image returning RGB uint8 at any size."""

    name: str
    ids: list[str]
    load: Callable[[int], np.ndarray]
    labels: list[str] | None = None


def _files(folder: Path, exclude: str | None = None) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not (exclude and exclude in p.parts)
    )


def _from_files(name: str, paths: list[Path], labels: list[str] | None = None) -> ImageSet:
    return ImageSet(name, [str(p) for p in paths], lambda i: load_rgb(paths[i]), labels)


def _halves(samples) -> tuple[list[int], list[int]]:
    """Indices of the first and second contiguous half (by file number) of each class."""
    first, second = [], []
    by_group: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_group.setdefault(s.group or s.label, []).append(i)
    for idx in by_group.values():
        idx = sorted(idx, key=lambda i: (file_number(samples[i].path), samples[i].path.name))
        first += idx[: len(idx) // 2]
        second += idx[len(idx) // 2 :]
    return sorted(first), sorted(second)


def image_sets(data: Path, eval_split: str, size: tuple[int, int]) -> tuple[dict, dict]:
    """The study's image sets and the val halves. Synthetic images are drawn seeded."""
    import cv2

    splits = split_by_blocks(load_taleqani(data / "taleqani"))
    sets: dict[str, ImageSet] = {}
    for split in ("train", "val") + (("test",) if eval_split == "test" else ()):
        samples = splits[split]
        sets[f"taleqani_{split}"] = _from_files(
            f"taleqani_{split}", [s.path for s in samples], [s.label for s in samples]
        )
    sets["bccd"] = _from_files("bccd", _files(data / "bccd" / "JPEGImages"))
    sets["wbc_normal"] = _from_files("wbc_normal", _files(data / "wbc-normal", exclude="masks"))
    sets["cnmc"] = _from_files("cnmc", _files(data / "cnmc"))
    import skimage

    photo_dir = Path(skimage.__file__).parent / "data"
    photos = []
    for p in _files(photo_dir):
        try:
            load_rgb(p)
        except ValueError:  # multi-page TIFFs Pillow cannot open; not photographs anyway
            continue
        photos.append(p)
    sets["photos"] = _from_files("photos", photos)

    h, w = size
    flats = {
        "white": (255, 255, 255),
        "black": (0, 0, 0),
        "grey": (128, 128, 128),
        "smear_pink": (230, 200, 215),
    }
    sets["blank"] = ImageSet(
        "blank",
        list(flats),
        lambda i: np.full((h, w, 3), list(flats.values())[i], dtype=np.uint8),
    )
    sets["noise"] = ImageSet(
        "noise",
        [f"uniform_{k}" for k in range(10)],
        lambda i: np.random.default_rng(1000 + i).integers(0, 256, (h, w, 3), dtype=np.uint8),
    )
    val = splits["val"]
    benign = [s.path for s in val if s.label == "HEM"][::3][:20]
    sets["blur"] = ImageSet(
        "blur",
        [f"{p.name}@sigma5" for p in benign],
        lambda i: cv2.GaussianBlur(resize_rgb(load_rgb(benign[i]), size), (0, 0), 5),
    )
    fields = [s.path for s in val][::20][:20]
    sets["greyscale"] = ImageSet(
        "greyscale",
        [f"{p.name}@grey" for p in fields],
        lambda i: np.repeat(
            cv2.cvtColor(resize_rgb(load_rgb(fields[i]), size), cv2.COLOR_RGB2GRAY)[..., None],
            3,
            axis=2,
        ),
    )
    return sets, dict(zip(("A", "B"), _halves(val), strict=True))


def extract(reader: FeatureReader, sets: dict[str, ImageSet], cache: Path) -> dict:
    """``{set: {feature: (n, d) array, "stats": (n, 7)}}``; each set is cached in
    ``<cache>_<set>.npz`` and re-used when its image list matches."""
    out = {}
    for name, image_set in sets.items():
        path = cache.with_name(f"{cache.name}_{name}.npz")
        if path.is_file():
            with np.load(path, allow_pickle=False) as npz:
                if json.loads(str(npz["ids"])) == image_set.ids:
                    out[name] = {k: npz[k] for k in npz.files if k != "ids"}
                    continue
        start = time.perf_counter()
        rows: dict[str, list] = {}
        for i in range(len(image_set.ids)):
            rgb = image_set.load(i)
            small = resize_rgb(rgb, reader.input_size)
            stats = image_statistics(small, rgb.shape[:2])
            for k, v in reader.read(small).items():
                rows.setdefault(k, []).append(v)
            rows.setdefault("stats", []).append(
                [getattr(stats, f) for f in stats.__dataclass_fields__]
            )
        out[name] = {k: np.asarray(v, dtype=np.float64) for k, v in rows.items()}
        np.savez_compressed(path, ids=np.array(json.dumps(image_set.ids)), **out[name])
        print(
            f"{name}: {len(image_set.ids)} images, {time.perf_counter() - start:.0f} s", flush=True
        )
    return out


# ------------------------------------------------------------------------ scores
def _softmax_energy(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=1, keepdims=True)
    return -(m[:, 0] + np.log(np.exp(logits - m).sum(axis=1)))


def _msp(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return 1.0 - p.max(axis=1)


def _knn(train: np.ndarray, k: int) -> Callable[[np.ndarray], np.ndarray]:
    bank = train / np.linalg.norm(train, axis=1, keepdims=True)

    def score(x: np.ndarray) -> np.ndarray:
        q = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        sims = q @ bank.T
        return 1.0 - np.sort(sims, axis=1)[:, -k]

    return score


def methods(feats: dict, y_train: np.ndarray) -> dict[str, tuple[str, Callable, int]]:
    """``{name: (feature, score function, stored floats)}``; higher score = more OOD."""
    train = feats["taleqani_train"]
    out: dict[str, tuple[str, Callable, int]] = {}

    def maha(feature: str, rank: int | None) -> tuple[str, Callable, int]:
        spec = fit_mahalanobis(train[feature], y_train, LABELS, rank=rank)
        scorer = MahalanobisScorer(spec)
        d = spec.embedding_dim
        stored = d * spec.rank + spec.rank + len(LABELS) * d + 1
        return feature, scorer.distances, stored

    names = [f for f in ("embedding_output", "backbone_gap") if f in train]
    for feature in names:
        dim = train[feature].shape[1]
        out[f"mahalanobis full, {feature} ({dim})"] = maha(feature, None)
        for rank in (8, 16, 32, 64, 128, 256):
            if rank < dim:
                out[f"mahalanobis r={rank}, {feature}"] = maha(feature, rank)
    for feature in ("head_gap", "penultimate"):
        if feature in train and not np.array_equal(train[feature], train["backbone_gap"]):
            dim = train[feature].shape[1]
            out[f"mahalanobis full, {feature} ({dim})"] = maha(feature, None)
    base = names[0]
    n, dim = train[base].shape
    for k in (1, 5, 10, 50):
        out[f"kNN cosine k={k}, {base}"] = (base, _knn(train[base], k), n * dim)
    out["energy, logits"] = ("logits", _softmax_energy, 0)
    out["max softmax probability, logits"] = ("logits", _msp, 0)
    return out


def threshold_at(scores: np.ndarray, quantile: float = ACCEPT_QUANTILE) -> float:
    """The order statistic at or above ``quantile``: ≥ that fraction of ``scores`` pass."""
    return float(np.quantile(scores, quantile, method="higher"))


def evaluate(
    feats: dict, halves: dict, eval_split: str, y_train: np.ndarray
) -> tuple[list[dict], dict]:
    """One row per method: acceptance on val (and halves), refusal per out-of-domain set."""
    rows = []
    scorers = methods(feats, y_train)
    outside = [s for s in feats if not s.startswith("taleqani_")]
    for name, (feature, score, stored) in scorers.items():
        val = score(feats["taleqani_val"][feature])
        thr = threshold_at(val)
        a, b = halves["A"], halves["B"]
        cross = 0.5 * (
            np.mean(val[b] <= threshold_at(val[a])) + np.mean(val[a] <= threshold_at(val[b]))
        )
        row = {
            "method": name,
            "stored_floats": stored,
            "threshold": thr,
            "val_accepted": float(np.mean(val <= thr)),
            "val_other_half_accepted": float(cross),
        }
        if eval_split == "test":
            row["test_accepted"] = float(np.mean(score(feats["taleqani_test"][feature]) <= thr))
        lowest = np.inf
        for s in outside:
            scores = score(feats[s][feature])
            row[f"{s}_refused"] = float(np.mean(scores > thr))
            lowest = min(lowest, float(scores.min()))
        # How far inside the refused region the least strange outside image lies (> 1: all
        # refused); only meaningful for scores that are positive distances.
        distance = name.startswith(("mahalanobis", "kNN"))
        row["lowest_outside_over_threshold"] = lowest / thr if distance and thr > 0 else None
        rows.append(row)
    return rows, scorers


def quality_rows(feats: dict, input_side: int, ood_scores: dict) -> tuple[list[dict], dict]:
    """Quality checks (thresholds derived from train) alone and with one OOD score: refusal
    per set, and the first reason per set."""
    from leukedge.checks.quality import QualityStatistics

    fields = list(QualityStatistics.__dataclass_fields__)

    def stats_of(name: str) -> list[QualityStatistics]:
        return [
            QualityStatistics(
                **{
                    f: (int(v) if f in ("height", "width") else float(v))
                    for f, v in zip(fields, row, strict=True)
                }
            )
            for row in feats[name]["stats"]
        ]

    thresholds = derive_thresholds(stats_of("taleqani_train"), input_side)
    rows, reasons = [], {}
    for label, ood in (("quality checks only", None), *ood_scores.items()):
        row: dict = {"method": label}
        for name in feats:
            if name == "taleqani_train":
                continue
            failures = [check_quality(s, thresholds) for s in stats_of(name)]
            first = [f[0].reason if f else None for f in failures]
            if ood is not None:
                feature, score, thr = ood
                out = score(feats[name][feature]) > thr
                first = [
                    r or ("out_of_domain" if o else None) for r, o in zip(first, out, strict=True)
                ]
            refused = np.mean([r is not None for r in first])
            key = f"{name}_refused" if not name.startswith("taleqani_") else f"{name[9:]}_accepted"
            row[key] = float(1 - refused) if name.startswith("taleqani_") else float(refused)
            counts: dict[str, int] = {}
            for r in first:
                counts[r or "passed"] = counts.get(r or "passed", 0) + 1
            reasons.setdefault(label, {})[name] = counts
        rows.append(row)
    return rows, {"thresholds": thresholds.__dict__, "first_reasons": reasons}


# ------------------------------------------------------------------------ cost
def cost(model: Path, scorers: dict, feats: dict, size: tuple[int, int]) -> dict:
    """Median µs of the runtime's pieces on one image, one thread: the bare invoke
    (``TFLiteEngine.run``, XNNPACK) and the whole ``Classifier.classify`` on a 224×224 array
    (statistics, checks, invoke, temperature, OOD, decision), measured interleaved so load
    from other jobs hits both alike; the quality statistics; each OOD score on one
    embedding."""
    import warnings

    from leukedge.classifier import Classifier, ClassifierOptions
    from leukedge.engine.interpreter import TFLiteEngine

    engine = TFLiteEngine(model, num_threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier = Classifier(ClassifierOptions(model_path=model, num_threads=1))
    image = load_rgb(Path(__file__).resolve().parents[1] / "examples/images/WBC-Benign-420.jpg")
    image = resize_rgb(image, size)

    def once_us(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return 1e6 * (time.perf_counter() - start)

    for _ in range(5):
        engine.run(image), classifier.classify(image)
    invoke, classify = [], []
    for _ in range(100):
        invoke.append(once_us(lambda: engine.run(image)))
        classify.append(once_us(lambda: classifier.classify(image)))
    out = {
        "invoke_us": float(np.median(invoke)),
        "classify_us": float(np.median(classify)),
        "quality_statistics_us": float(
            np.median([once_us(lambda: image_statistics(image)) for _ in range(200)])
        ),
        "score_us": {},
    }
    for name, (feature, score, _) in scorers.items():
        x = feats["taleqani_val"][feature][:1]
        out["score_us"][name] = float(
            np.median([once_us(lambda s=score, x=x: s(x)) for _ in range(200)])
        )
    return out


# ------------------------------------------------------------------------ as shipped
def shipped(model: Path, sets: dict[str, ImageSet]) -> tuple[list[dict], dict]:
    """The Classifier with this file's own metadata (its thresholds, band and OOD model, or
    the built-in defaults it falls back on) on every set: statuses, first reasons, and for
    the labelled Taleqani sets the figures of the calls it makes."""
    import warnings

    from leukedge.classifier import Classifier, ClassifierOptions
    from leukedge.errors import LeukedgeWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LeukedgeWarning)
        classifier = Classifier(ClassifierOptions(model_path=model, num_threads=1))
    notes = [str(w.message) for w in caught if issubclass(w.category, LeukedgeWarning)]
    rows, reasons = [], {}
    for name, image_set in sets.items():
        if name == "taleqani_train":
            continue
        results = [classifier.classify(image_set.load(i)) for i in range(len(image_set.ids))]
        n = len(results)
        count = {st: sum(r.status == st for r in results) for st in ("ok", "refer", "rejected")}
        row: dict = {"set": name, "n": n} | {st: c / n for st, c in count.items()}
        counts: dict[str, int] = {}
        for r in results:
            counts[r.reason or "ok"] = counts.get(r.reason or "ok", 0) + 1
        reasons[name] = counts
        if image_set.labels is not None:
            ok = [(r, lb) for r, lb in zip(results, image_set.labels, strict=True) if r.label]
            pos = [(r, lb) for r, lb in ok if lb == "ALL"]
            neg = [(r, lb) for r, lb in ok if lb != "ALL"]
            row["ok_accuracy"] = float(np.mean([r.label == lb for r, lb in ok])) if ok else None
            row["ok_sensitivity"] = (
                float(np.mean([r.label == "ALL" for r, _ in pos])) if pos else None
            )
            row["ok_specificity"] = (
                float(np.mean([r.label != "ALL" for r, _ in neg])) if neg else None
            )
            every = [r.model_label == lb for r, lb in zip(results, image_set.labels, strict=True)]
            row["model_accuracy_all_fields"] = float(np.mean(every))
        rows.append(row)
    return rows, {
        "reasons": reasons,
        "warnings": notes,
        "threshold": classifier.decision_threshold,
        "refer_band": classifier.refer_band,
        "ood_threshold": classifier.ood_threshold,
    }


def shipped_markdown(rows: list[dict], detail: dict) -> list[str]:
    lines = [
        "",
        "## As shipped: the Classifier with this file's metadata",
        "",
        f"Threshold {detail['threshold']}, refer band {detail['refer_band']}, OOD threshold "
        f"{detail['ood_threshold']}." + "".join(f" Warning: {w}" for w in detail["warnings"]),
        "",
        "| set | n | ok % | refer % | rejected % | reasons | accuracy of ok calls | "
        "sensitivity / specificity of ok calls | model accuracy, all fields |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(v: float | None) -> str:
        return "" if v is None else f"{100 * v:.1f}"

    for r in rows:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(detail["reasons"][r["set"]].items()))
        sens_spec = (
            f"{pct(r['ok_sensitivity'])} / {pct(r['ok_specificity'])}"
            if "ok_sensitivity" in r
            else ""
        )
        lines.append(
            f"| {r['set']} | {r['n']} | {pct(r['ok'])} | {pct(r['refer'])} | {pct(r['rejected'])} "
            f"| {reasons} | {pct(r.get('ok_accuracy'))} | {sens_spec} | "
            f"{pct(r.get('model_accuracy_all_fields'))} |"
        )
    return lines


# ------------------------------------------------------------------------ report
COLUMNS = [
    ("val_accepted", "val acc."),
    ("val_other_half_accepted", "val, other half acc."),
    ("test_accepted", "test acc."),
    ("bccd_refused", "BCCD"),
    ("wbc_normal_refused", "WBC crops"),
    ("cnmc_refused", "C-NMC"),
    ("photos_refused", "photos"),
    ("blank_refused", "blank"),
    ("noise_refused", "noise"),
    ("blur_refused", "blur σ5"),
    ("greyscale_refused", "greyscale"),
    ("lowest_outside_over_threshold", "lowest outside score / threshold"),
]


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if key == "lowest_outside_over_threshold" else f"{100 * value:.1f}"


def markdown(rows: list[dict], sizes: dict[str, int], extra: list[str] = ()) -> str:
    cols = [(k, t) for k, t in COLUMNS if any(k in r for r in rows)]
    head = (
        "| method | "
        + " | ".join(f"{t} (n={sizes[k]})" if k in sizes else t for k, t in cols)
        + " |"
    )
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        cells = [_cell(k, r.get(k)) for k, _ in cols]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join([*extra, *lines])


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    model: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="The .tflite.")],
    data: Annotated[Path, typer.Option(exists=True, file_okay=False, help="../shared/data")],
    out: Annotated[Path, typer.Option(help="Folder for the tables, JSON and feature cache.")],
    eval_split: Annotated[
        str, typer.Option(help="val (default) | test: read the test block too (once, at the end).")
    ] = "val",
    ood_rank: Annotated[
        int, typer.Option(help="r of the Mahalanobis form combined with the quality checks.")
    ] = 64,
) -> None:
    """Compare out-of-domain scores on a .tflite model; write ood_study.md and .json."""
    if eval_split not in ("val", "test"):
        raise typer.BadParameter("--eval-split must be val or test")
    out.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    reader = FeatureReader(model)
    sets, halves = image_sets(data, eval_split, reader.input_size)
    feats = extract(reader, sets, out / f"features_{sha[:12]}_v{CACHE_VERSION}")
    y_train = np.array([LABELS.index(lb) for lb in sets["taleqani_train"].labels])
    rows, scorers = evaluate(feats, halves, eval_split, y_train)
    base = "embedding_output" if "embedding_output" in feats["taleqani_train"] else "backbone_gap"
    chosen = f"mahalanobis r={ood_rank}, {base}"
    feature, score, _ = scorers[chosen]
    thr = threshold_at(score(feats["taleqani_val"][feature]))
    q_rows, q_detail = quality_rows(
        feats, min(reader.input_size), {f"quality + {chosen}": (feature, score, thr)}
    )
    timing = cost(model, scorers, feats, reader.input_size)
    shipped_rows, shipped_detail = shipped(model, sets)
    sizes = {"val_accepted": len(sets["taleqani_val"].ids)}
    sizes["val_other_half_accepted"] = len(halves["B"])
    for name, s in sets.items():
        sizes[f"{name}_refused"] = len(s.ids)
    if "taleqani_test" in sets:
        sizes["test_accepted"] = len(sets["taleqani_test"].ids)
    dims = {k: int(v.shape[1]) for k, v in feats["taleqani_train"].items() if v.ndim == 2}
    header = [
        f"# Out-of-domain study: `{model}` (sha256 {sha[:12]})",
        "",
        f"Fitted on the Taleqani train block (n={len(sets['taleqani_train'].ids)}); threshold "
        f"= val 97th percentile (n={sizes['val_accepted']}). Acceptance in % of in-domain "
        "fields (higher is better); other columns: % refused (higher is better). Features: "
        + ", ".join(f"{k} {v}-d" for k, v in dims.items() if k != "stats")
        + f". Machine: {platform.processor() or platform.machine()}.",
        "",
    ]
    table = markdown(rows, sizes, header)
    q_table = markdown(
        q_rows, sizes, ["", "## With the quality checks (thresholds from train)", ""]
    )
    cost_lines = [
        "",
        "## Cost per image (median µs, one thread)",
        "",
        f"invoke (XNNPACK) {timing['invoke_us']:.0f}; quality statistics "
        f"{timing['quality_statistics_us']:.0f}; Classifier.classify on a 224×224 array "
        f"(statistics, checks, invoke, temperature, OOD, decision) {timing['classify_us']:.0f}",
        "",
        "| method | µs | % of invoke | stored floats |",
        "|---|---|---|---|",
    ]
    for r in rows:
        us = timing["score_us"][r["method"]]
        share = 100 * us / timing["invoke_us"]
        cost_lines.append(f"| {r['method']} | {us:.0f} | {share:.2f} | {r['stored_floats']} |")
    as_shipped = shipped_markdown(shipped_rows, shipped_detail)
    (out / "ood_study.md").write_text("\n".join([table, q_table, *as_shipped, *cost_lines]) + "\n")
    (out / "ood_study.json").write_text(
        json.dumps(
            {
                "model": str(model),
                "sha256": sha,
                "eval_split": eval_split,
                "sizes": sizes,
                "rows": rows,
                "quality_rows": q_rows,
                "quality": q_detail,
                "cost": timing,
                "as_shipped": {"rows": shipped_rows, **shipped_detail},
            },
            indent=2,
            default=str,
        )
    )
    print((out / "ood_study.md").read_text())


if __name__ == "__main__":
    app()
