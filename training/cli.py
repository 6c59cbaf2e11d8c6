"""``leukedge train``: fit a model, evaluate a run. Keras is imported inside the commands.

The options of ``leukedge train run`` are derived from
:class:`~leukedge.training.config.TrainConfig` (:mod:`leukedge.cli_kit.options`): its fields,
nested ones included, are the options; its docstring is their help; its ``Literal`` types
are their choices. ``--recipe`` (:mod:`leukedge.training.recipes`) picks the values an
option takes when it is not given; the help shows each recipe's value where they differ.

The Keras backend is whatever ``KERAS_BACKEND`` says (``tensorflow`` by default); set it
before running, e.g. ``KERAS_BACKEND=jax leukedge train --data …``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from leukedge.cli_kit.groups import DefaultCommandGroup, attach_log_handler
from leukedge.cli_kit.options import build, flatten, literal_choice, with_options
from leukedge.modeling.architectures import Architecture
from leukedge.training.config import MINIMUM, Recipe, TrainConfig
from leukedge.training.recipes import DEFAULT_RECIPE, RECIPES, recipe

app = typer.Typer(
    cls=DefaultCommandGroup,
    no_args_is_help=True,
    help=(
        "Train the proposed model or a baseline; evaluate a run. "
        "'leukedge train --data …' is short for 'leukedge train run --data …'."
    ),
    callback=attach_log_handler,
)

OPTION_NAMES = {
    "augment.enabled": "augment",
    "augment.rotation_degrees": "rotation",
    "augment.zoom": "zoom",
    "augment.shift": "shift",
    "augment.shear": "shear",
    "augment.horizontal_flip": "flip",
}
"""Options whose names predate the derived ones (``--zoom`` rather than ``--augment-zoom``)."""

NOT_OPTIONS = frozenset(
    {"data", "out", "recipe", "input_norm.target_mean", "input_norm.target_std"}
)
"""Fields without a generated option: declared by the command, or measured by training."""


def _recipe_defaults() -> dict[str, dict[str, Any]]:
    """``{recipe: {dotted field: value}}``: what each recipe runs when no option is given."""
    return {
        name: flatten(TrainConfig(data=".", out=".", **recipe(name)))
        for name in (DEFAULT_RECIPE, *sorted(set(RECIPES) - {DEFAULT_RECIPE}))
    }


def _recipe_help() -> str:
    """``--recipe``'s help: every recipe and what it sets apart from TrainConfig's defaults
    (top-level fields by value, nested ones counted per group)."""
    defaults = flatten(TrainConfig(data=".", out="."))
    parts = []
    for name, values in _recipe_defaults().items():
        changed = [k for k, v in values.items() if k != "recipe" and defaults.get(k) != v]
        top = [f"{k}={values[k]}" for k in changed if "." not in k]
        groups: dict[str, int] = {}
        for k in changed:
            if "." in k:
                groups[k.split(".")[0]] = groups.get(k.split(".")[0], 0) + 1
        nested = [f"{n} {g} settings" for g, n in groups.items()]
        parts.append(f"{name}: " + (", ".join(top + nested) or "TrainConfig's defaults"))
    return (
        f"Named settings to start from; options given override them. {'; '.join(parts)}. "
        "Each option's help shows the recipes' values where they differ."
    )


@app.command("run")
@with_options(
    TrainConfig,
    skip=NOT_OPTIONS,
    names=OPTION_NAMES,
    minimum=MINIMUM | {"max_per_split": 1},
    default_sets=_recipe_defaults(),
)
def run(
    out: Annotated[Path, typer.Option(help="Run directory to create (or to resume).")],
    data: Annotated[Path | None, typer.Option(exists=True, help="Dataset folder or CSV.")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the interrupted run in --out with its config.json.")
    ] = False,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            exists=True,
            dir_okay=False,
            help="Repeat a run: every setting from its config.json (--data may override).",
        ),
    ] = None,
    recipe_name: Annotated[
        literal_choice(Recipe),
        typer.Option("--recipe", help=_recipe_help(), show_default=False),
    ] = DEFAULT_RECIPE,
    settings: dict[str, Any] | None = None,
) -> None:
    """Train a model; writes model.keras, config.json, split.csv, history.csv, metrics."""
    recipe_name = getattr(recipe_name, "value", recipe_name)  # the choice's text
    if resume:
        saved = out / "config.json"
        if not saved.is_file():
            typer.echo(f"error: {saved} not found; nothing to resume", err=True)
            raise typer.Exit(2)
        _train_or_exit(_saved_config(saved), resume=True)
        return
    if config_file is not None:
        overrides = {"out": str(out)} | ({"data": str(data)} if data else {})
        _train_or_exit(_saved_config(config_file, overrides))
        return
    if data is None:
        typer.echo("error: --data is required (unless --resume or --config)", err=True)
        raise typer.Exit(2)
    try:
        config = build(
            TrainConfig,
            settings or {},
            base=recipe(recipe_name),
            data=str(data),
            out=str(out),
            recipe=recipe_name,
        )
    except ValueError as exc:  # a setting out of range: a usage error, before any file
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    _train_or_exit(config)


def _saved_config(path: Path, overrides: dict | None = None):
    """The :class:`~leukedge.training.config.TrainConfig` a run saved as ``config.json``
    (``overrides`` replace its keys); an unusable file → message and exit 2."""
    try:
        settings = json.loads(path.read_text())
        if not isinstance(settings, dict) or "leukedge_version" not in settings:
            raise ValueError("expected the JSON object a leukedge run writes")
        config = TrainConfig.from_dict(settings | (overrides or {}))
    except (OSError, ValueError, TypeError) as exc:
        typer.echo(f"error: {path}: not a usable leukedge config.json ({exc})", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"settings from {path} (other options ignored)")
    return config


def _train_or_exit(config, resume: bool = False) -> None:
    """Run :func:`~leukedge.training.train.train`; known failures → message and exit 2."""
    from leukedge.training import train as train_module

    try:
        train_module.train(config, resume=resume)
    except (FileExistsError, FileNotFoundError, ValueError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _require_train_extra() -> None:
    """Fail before touching any file when the ``train`` extra is missing (even a ``.tflite``
    evaluation writes figures and metrics with its packages).

    Raises:
        ModuleNotFoundError: ``name`` is the missing module; the command group turns it into
            the install hint and exit code 2.
    """
    import importlib.util

    from leukedge.cli_kit.groups import EXTRA_FOR_MODULE

    for module, extra in EXTRA_FOR_MODULE.items():
        if extra == "train" and importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)


@app.command("evaluate")
def evaluate_cmd(
    run_dir: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="A run directory (has split.csv).")
    ],
    split: Annotated[str, typer.Option(help="train | val | test")] = "test",
    model: Annotated[
        Path | None, typer.Option(help="A .keras or .tflite to evaluate; default: RUN/model.keras.")
    ] = None,
    update_card: Annotated[
        bool, typer.Option(help="Write the figures into the .tflite's model card.")
    ] = False,
    robustness: Annotated[
        bool,
        typer.Option(
            help="Also report how often the call flips under noise, zoom, exposure, stain "
            "and JPEG changes (evaluation/robustness.py)."
        ),
    ] = False,
    allow_failed_gate: Annotated[
        bool,
        typer.Option(
            "--allow-failed-gate",
            help="Evaluate (and --update-card) a .tflite whose card says it FAILED its "
            "accuracy gate (refused by default); a warning on stderr says so.",
        ),
    ] = False,
) -> None:
    """Evaluate a run's model on one split (predictions joined to labels by file name)."""
    _require_train_extra()
    from leukedge.evaluation.evaluate import evaluate_run

    try:
        metrics = evaluate_run(run_dir, split, model, update_card, robustness, allow_failed_gate)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    from leukedge.evaluation.metrics import headline

    summary = headline(metrics, extra=("robustness",) if robustness else ())
    typer.echo(json.dumps(summary, indent=2))


@app.command("figures")
def figures_cmd(
    run_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A run directory.")],
    split: Annotated[str, typer.Option(help="Which predictions_<split>.csv to plot.")] = "val",
) -> None:
    """Redraw a run's PNG figures: curves, confusion matrix, ROC, reliability diagram."""
    from leukedge.evaluation.figures import run_figures

    for path in run_figures(run_dir, split):
        typer.echo(f"wrote {path}")


@app.command("calibrate")
def calibrate_cmd(
    run_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A run directory.")],
) -> None:
    """Fit the softmax temperature on the validation predictions (writes calibration.json)."""
    from leukedge.training.calibration import calibrate_run

    typer.echo(json.dumps(calibrate_run(run_dir, "val"), indent=2))


@app.command("compare")
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(exists=True, file_okay=False, help="Runs.")],
    split: Annotated[str, typer.Option(help="Which metrics_<split>.json to compare.")] = "val",
    out: Annotated[Path | None, typer.Option(help="Also write the table to this .md file.")] = None,
) -> None:
    """The paper-style comparison table (Tables II/IV) for several runs."""
    from leukedge.evaluation.report import compare_runs, comparison_markdown

    try:
        table = comparison_markdown(compare_runs(runs, split), split)
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(table)
    if out:
        out.write_text(table)


@app.command("bench")
def bench_cmd(
    data: Annotated[Path, typer.Option(exists=True, help="A dataset folder (real images).")],
    arch: Annotated[
        literal_choice(Architecture), typer.Option(help="Architecture to time.")
    ] = "proposed",
    image_size: Annotated[int, typer.Option(min=32)] = 224,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    steps: Annotated[int, typer.Option(min=1)] = 10,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON here.")] = None,
) -> None:
    """Training images/s of the proposed model and of the input pipeline alone."""
    from leukedge.training.bench import benchmark

    arch = getattr(arch, "value", arch)  # the choice's text

    result = json.dumps(benchmark(data, arch, image_size, batch_size, steps), indent=2)
    typer.echo(result)
    if out:
        out.write_text(result)


CROSSVAL_NAMES = {
    "head_config.dropout": "head-dropout",
    "head_config.dense_units": "head-dense-units",
    "head_config.attention_heads": "attention-heads",
    "head_config.attention_key_dim": "attention-key-dim",
    "head_config.leaky_relu_slope": "leaky-relu-slope",
}
"""Short names of the proposed head's nested settings in ``train crossval``."""


def _crossval_config_class():
    from leukedge.training.crossval import CrossValConfig

    return CrossValConfig


@app.command("crossval")
@with_options(
    _crossval_config_class(),
    skip=frozenset({"data", "out"}),
    names=CROSSVAL_NAMES,
    minimum={"k": 3, "augment_views": 0, "ood_augment_views": 0, "epochs": 1, "batch_size": 1},
)
def crossval_cmd(
    out: Annotated[Path, typer.Option(help="Folder to write the tables and outputs into.")],
    data: Annotated[Path, typer.Option(exists=True, help="Dataset folder or CSV.")],
    settings: dict[str, Any] | None = None,
) -> None:
    """Blocked cross-validation of a head on cached front outputs: per-fold table (CSV,
    Markdown, JSON) with mean and worst fold, kfold and forward, outputs by file name."""
    _require_train_extra()  # before the folds file is written
    from leukedge.training.crossval import CrossValConfig, run_crossval

    try:
        config = build(CrossValConfig, settings or {}, data=str(data), out=str(out))
    except (ValueError, TypeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if (out / "crossval.json").exists():
        typer.echo(f"error: {out}/crossval.json exists; choose a new --out", err=True)
        raise typer.Exit(2)
    try:
        report = run_crossval(config)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    for scheme in report["summary"]:
        typer.echo(f"{scheme}:\n" + (out / f"{scheme}.md").read_text())
    typer.echo(f"wrote {out}")


def _final_config_class():
    from leukedge.training.final import FinalConfig

    return FinalConfig


@app.command("final")
@with_options(_final_config_class(), skip=frozenset({"crossval", "out", "data", "cache"}))
def final_cmd(
    crossval: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="A finished train crossval folder.")
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Run folder to write (model.keras and the files `leukedge convert` reads)."
        ),
    ],
    data: Annotated[
        Path | None, typer.Option(help="Dataset folder or CSV (default: the crossval's).")
    ] = None,
    cache: Annotated[
        Path | None, typer.Option(help="Feature cache folder (default: the crossval's).")
    ] = None,
    settings: dict[str, Any] | None = None,
) -> None:
    """Fit the cross-validated recipe on every image: the model to ship, its thresholds
    from the out-of-fold outputs and its card's expected performance (convert it next)."""
    _require_train_extra()
    from leukedge.training.final import CrossValFolderError, FinalConfig, run_final

    if (out / "model.keras").exists():
        typer.echo(f"error: {out}/model.keras exists; choose a new --out", err=True)
        raise typer.Exit(2)
    try:
        config = build(
            FinalConfig,
            settings or {},
            crossval=str(crossval),
            out=str(out),
            data=str(data) if data else None,
            cache=str(cache) if cache else None,
        )
        report = run_final(config)
    except CrossValFolderError as exc:  # not what train final reads: usage
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"fitted on {report['n']} images; temperature {report['temperature']:.3f}, threshold "
        f"{report['decision']['threshold']:.3f} (out of fold); wrote {out}\n"
        f"next: leukedge convert {out}/model.keras --precisions int8 --model-version X.Y.Z"
    )
