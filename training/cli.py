"""``leukedge train``: fit a model, evaluate a run. Keras is imported inside the commands.

The Keras backend is whatever ``KERAS_BACKEND`` says (``tensorflow`` by default); set it
before running, e.g. ``KERAS_BACKEND=jax leukedge train --data …``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from leukedge.cli_groups import DefaultCommandGroup

app = typer.Typer(
    cls=DefaultCommandGroup,
    no_args_is_help=True,
    help=(
        "Train the proposed model or a baseline; evaluate a run. "
        "'leukedge train --data …' is short for 'leukedge train run --data …'."
    ),
)


@app.command("run")
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
    arch: Annotated[
        str, typer.Option(help="proposed | proposed-lite | efficientnetb0 | resnet50 | inceptionv3")
    ] = "proposed-lite",
    weights: Annotated[
        str,
        typer.Option(help="'imagenet', a local weights file, or 'none' (random initialisation)."),
    ] = "imagenet",
    dataset_kind: Annotated[
        str, typer.Option(help="auto | taleqani | cnmc | folder | csv")
    ] = "auto",
    input_kind: Annotated[
        str, typer.Option(help="field | cell (recorded in the model).")
    ] = "field",
    image_size: Annotated[int, typer.Option(min=32, help="Input side, pixels.")] = 224,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    recipe: Annotated[
        str,
        typer.Option(
            help="camera (default: the default model's recipe) | paper (the source paper's "
            "setting); options below override it."
        ),
    ] = "camera",
    head_epochs: Annotated[
        int | None, typer.Option(min=0, help="Phase 1: backbone frozen. [recipe]")
    ] = None,
    finetune_epochs: Annotated[
        int | None, typer.Option(min=0, help="Phase 2: top layers unfrozen. [recipe]")
    ] = None,
    unfreeze_top: Annotated[
        int | None, typer.Option(min=0, help="Backbone layers unfrozen. [recipe]")
    ] = None,
    head_lr: Annotated[float | None, typer.Option(help="[recipe]")] = None,
    finetune_lr: Annotated[float | None, typer.Option(help="[recipe]")] = None,
    split: Annotated[str, typer.Option(help="auto | subject | blocks | kfold")] = "auto",
    folds: Annotated[int, typer.Option(min=3, help="k-fold: number of subject folds.")] = 5,
    fold: Annotated[int, typer.Option(min=0, help="k-fold: which fold is the test split.")] = 0,
    class_weights: Annotated[bool, typer.Option(help="Balance the loss by class.")] = True,
    augment: Annotated[bool, typer.Option(help="Augmentation on train (as the recipe).")] = True,
    rotation: Annotated[
        float | None, typer.Option(help="Augmentation: max rotation, degrees. [recipe]")
    ] = None,
    zoom: Annotated[float | None, typer.Option(help="Augmentation: max zoom fraction.")] = None,
    shift: Annotated[float | None, typer.Option(help="Augmentation: max shift fraction.")] = None,
    shear: Annotated[float | None, typer.Option(help="Augmentation: max shear factor.")] = None,
    flip: Annotated[bool | None, typer.Option(help="Augmentation: horizontal flips.")] = None,
    early_stopping_patience: Annotated[
        int, typer.Option(min=0, help="Epochs without better val weighted F1 (0 = off).")
    ] = 0,
    lr_plateau_patience: Annotated[
        int, typer.Option(min=0, help="Halve the LR after this many flat epochs (0 = off).")
    ] = 0,
    tensorboard: Annotated[bool, typer.Option(help="TensorBoard logs (TF backend).")] = True,
    mixed_precision: Annotated[
        str | None, typer.Option(help="mixed_float16 | mixed_bfloat16 (GPUs).")
    ] = None,
    distribute: Annotated[
        str, typer.Option(help="none | mirrored | multiworker (TF) | data-parallel (JAX).")
    ] = "none",
    seed: Annotated[
        int, typer.Option(min=0, help="Seeds shuffling, augmentation, dropout, initialisation.")
    ] = 0,
    max_per_split: Annotated[
        int | None, typer.Option(min=1, help="Cap images per split (smoke tests).")
    ] = None,
) -> None:
    """Train a model; writes model.keras, config.json, split.csv, history.csv, metrics."""
    from leukedge.training.pipeline import AugmentConfig
    from leukedge.training.train import TrainConfig

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
    from leukedge.training.recipes import recipe as recipe_values

    try:
        settings = recipe_values(recipe)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    given = {
        "head_epochs": head_epochs,
        "finetune_epochs": finetune_epochs,
        "unfreeze_top": unfreeze_top,
        "head_lr": head_lr,
        "finetune_lr": finetune_lr,
    }
    settings |= {k: v for k, v in given.items() if v is not None}
    augmentation = settings.pop("augment", AugmentConfig())
    for name, value in {
        "rotation_degrees": rotation,
        "zoom": zoom,
        "shift": shift,
        "shear": shear,
        "horizontal_flip": flip,
    }.items():
        if value is not None:
            setattr(augmentation, name, value)
    augmentation.enabled = augment
    try:
        config = TrainConfig(
            data=str(data),
            out=str(out),
            dataset_kind=dataset_kind,
            input_kind=input_kind,
            arch=arch,
            weights=None if weights.lower() == "none" else weights,
            image_size=image_size,
            batch_size=batch_size,
            split=split,
            folds=folds,
            fold=fold,
            class_weights=class_weights,
            augment=augmentation,
            seed=seed,
            max_per_split=max_per_split,
            early_stopping_patience=early_stopping_patience,
            lr_plateau_patience=lr_plateau_patience,
            tensorboard=tensorboard,
            mixed_precision=mixed_precision,
            distribute=distribute,
            recipe=recipe,
            **settings,
        )
    except ValueError as exc:  # a setting out of range: a usage error, before any file
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    _train_or_exit(config)


def _saved_config(path: Path, overrides: dict | None = None):
    """The :class:`~leukedge.training.train.TrainConfig` a run saved as ``config.json``
    (``overrides`` replace its keys); an unusable file → message and exit 2."""
    from leukedge.training.train import TrainConfig

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
    from leukedge.training.train import train

    try:
        train(config, resume=resume)
    except (FileExistsError, FileNotFoundError, ValueError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


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
            "and JPEG changes (training/robustness.py)."
        ),
    ] = False,
) -> None:
    """Evaluate a run's model on one split (predictions joined to labels by file name)."""
    from leukedge.training.evaluate import evaluate_run

    try:
        metrics = evaluate_run(run_dir, split, model, update_card, robustness)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    from leukedge.training.metrics import headline

    summary = headline(metrics, extra=("robustness",) if robustness else ())
    typer.echo(json.dumps(summary, indent=2))


@app.command("figures")
def figures_cmd(
    run_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A run directory.")],
    split: Annotated[str, typer.Option(help="Which predictions_<split>.csv to plot.")] = "val",
) -> None:
    """Redraw a run's PNG figures: curves, confusion matrix, ROC, reliability diagram."""
    from leukedge.training.figures import run_figures

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
    from leukedge.training.report import compare_runs, comparison_markdown

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
    arch: Annotated[str, typer.Option()] = "proposed",
    image_size: Annotated[int, typer.Option(min=32)] = 224,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    steps: Annotated[int, typer.Option(min=1)] = 10,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON here.")] = None,
) -> None:
    """Training images/s of the proposed model and of the input pipeline alone."""
    from leukedge.training.bench import benchmark

    result = json.dumps(benchmark(data, arch, image_size, batch_size, steps), indent=2)
    typer.echo(result)
    if out:
        out.write_text(result)
