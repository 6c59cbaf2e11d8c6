"""A model as ``leukedge info`` describes it to a person: what the model is, what it was
checked against, the settings it applies and what a person needs to trust it (the model
card's key figures). ``leukedge info --json`` prints everything, the card in full."""

from __future__ import annotations

from leukedge.checks.quality import QualityThresholds
from leukedge.engine.metadata import gate_failure


def _tensor_text(t: dict) -> str:
    """``uint8 [1, 2], scale 0.00390625, zero point 0`` (float: no scale)."""
    text = f"{t['dtype']} {t['shape']}"
    if t["scale"]:
        text += f", scale {t['scale']:g}, zero point {t['zero_point']}"
    return text


def summary_lines(out: dict, metadata, engine) -> list[str]:
    """``leukedge info``'s readable summary, one string per line.

    Args:
        out: what ``leukedge info --json`` prints: ``path``, ``size_bytes``, ``metadata``
            and :meth:`TFLiteEngine.details <leukedge.engine.interpreter.TFLiteEngine.details>`
            (``runtime``, ``input``, ``output``, ``embedding``, ``operators``).
        metadata: the model's :class:`~leukedge.engine.metadata.ModelMetadata`, or ``None``
            (a model without leukedge metadata: tensors and operators only).
        engine: the model's :class:`~leukedge.engine.interpreter.TFLiteEngine`.
    """
    lines = []
    if metadata is not None:
        lines.append(
            f"model      {metadata.name} ({metadata.precision}), version {metadata.version}"
        )
    lines.append(
        f"file       {out['path']} ({out['size_bytes'] / 1e6:.2f} MB), runtime {out['runtime']}"
    )
    if metadata is not None:
        i = metadata.input
        lines.append(
            f"labels     {', '.join(metadata.labels)} (positive class: "
            f"{metadata.decision.positive_label if metadata.decision else metadata.positive_label})"
        )
        lines.append(
            f"input      {i.kind} image, resized whole ({i.resize}) to {i.height}x{i.width} "
            f"{i.color} 0-255"
        )
    lines.append(f"  tensor   {out['input']['name']}: {_tensor_text(out['input'])}")
    lines.append(f"output     {out['output']['name']}: {_tensor_text(out['output'])}")
    if out["embedding"] is not None:
        e = out["embedding"]
        lines.append(f"embedding  {e['name']}: {_tensor_text(e)}")
    if out.get("class_activation_map") is not None:
        c = out["class_activation_map"]
        lines.append(f"heat map   {c['name']}: {_tensor_text(c)} (class activation map)")
    if metadata is None:
        lines.append(f"operators  {', '.join(out['operators'])}")
        return lines
    card = metadata.model_card or {}
    lines.extend(_gate_lines(metadata))
    lines.extend(_card_lines(card))
    lines.append(f"temperature {metadata.temperature:.3f} (applied to the probabilities)")
    lines.append(_checks_line(metadata, engine))
    lines.extend(_trust_lines(metadata, engine))
    lines.append(f"operators  {', '.join(out['operators'])}")
    lines.append("(leukedge info --json: every tensor detail and the whole model card)")
    return lines


def _checks_line(metadata, engine) -> str:
    """Which of the checks a result goes through the model carries (fitted at conversion)
    and which fall back (generic quality thresholds) or are off."""
    quality = "fitted" if metadata.quality is not None else "generic (not fitted)"
    ood = "on" if metadata.ood is not None and engine.embedding_dim is not None else "OFF"
    decision = "fitted" if metadata.decision is not None else "none (arg-max)"
    return (
        f"checks     quality thresholds {quality}; out of domain {ood}; operating point {decision}"
    )


def _gate_lines(metadata) -> list[str]:
    """The accuracy-delta gate's result from the model card: one line of figures (whatever
    the card holds of them), and for a model that failed it, what leukedge does with it.
    The verdict is :func:`leukedge.engine.metadata.gate_failure`'s, the rule the SDK loads by."""
    g = (metadata.model_card or {}).get("gate")
    if not isinstance(g, dict):
        what = "no gate record" if g is None else f"an unreadable gate record ({g!r:.40})"
        return [f"gate       not checked (the model card holds {what})"]
    failed = gate_failure(metadata) is not None
    verdict = "FAILED" if failed else "passed" if g.get("passed") is True else "no verdict"

    def figure(key: str, spec: str, scale: float = 1.0) -> str:
        value = g.get(key)
        return format(scale * value, spec) if isinstance(value, int | float) else "?"

    line = f"gate       {verdict} on the {g.get('eval_split', '?')} split (n={g.get('n', '?')})"
    if "accuracy" in g:
        line += (
            f": accuracy {figure('accuracy', '.3f')} vs float {figure('float_accuracy', '.3f')} "
            f"({figure('delta_pp', '.2f')} pp lost), label agreement "
            f"{figure('agreement', '.1f', 100)} %, "
            f"mean |dp| {figure('mean_abs_prob_diff', '.3f')}, "
            f"ECE {figure('ece', '.3f')} (float {figure('float_ece', '.3f')})"
        )
    lines = [line]
    if failed:
        broken = "; ".join(str(f) for f in g.get("failures") or [])
        lines.append(
            "           refused by leukedge unless --allow-failed-gate"
            + (f" (failed: {broken})" if broken else "")
        )
    return lines


def _metric_text(m: dict) -> str:
    parts = [f"n={m['n']}: accuracy {m['accuracy']:.3f}, weighted F1 {m['weighted_f1']:.3f}"]
    for key, name in (
        ("sensitivity", "sensitivity"),
        ("specificity", "specificity"),
        ("roc_auc", "ROC AUC"),
    ):
        if m.get(key) is not None:
            parts.append(f"{name} {m[key]:.3f}")
    if m.get("confusion_matrix") is not None:
        parts.append(f"confusion {m['confusion_matrix']}")
    return ", ".join(parts)


def _card_lines(card: dict) -> list[str]:
    """The model card's key figures: training, validation (float), test, robustness."""
    lines = []
    if card.get("architecture"):
        training = card.get("training") or {}
        where = card.get("training_data")
        if isinstance(where, dict):  # {"dataset": NAME, "path": relative to it}
            name, rel = where.get("dataset", "?"), where.get("path", "")
            where = name if rel in ("", ".", name) else f"{name}/{rel}"
        created = str(card.get("created", ""))[:10]
        lines.append(
            f"trained    {card['architecture']}, {training.get('image_size', '?')} px, "
            f"weights {training.get('weights', '?')}"
            + (f", on {where}" if where else "")
            + (f", {created}" if created else "")
        )
    counts = (card.get("split") or {}).get("counts")
    if counts:
        lines.append(
            "split      "
            + "; ".join(
                f"{name} " + ", ".join(f"{n} {label}" for label, n in c.items())
                for name, c in counts.items()
            )
        )
    fitted = card.get("fitted_on")
    if fitted:
        lines.append(
            f"fitted on  all {fitted.get('images')} images ({fitted.get('ALL')} ALL, "
            f"{fitted.get('HEM')} HEM) + {fitted.get('augmentation_views', 0)} augmentation "
            "views each: no held-out images; expected performance from cross-validation:"
        )
    expected = card.get("expected_performance") or {}
    for scheme in ("kfold", "forward"):
        figures = expected.get(scheme) or {}
        if figures.get("mean"):
            m, w = figures["mean"], figures.get("worst", {})
            lines.append(
                f"expected   {scheme} (blocked CV, mean / worst fold): sensitivity "
                f"{m['sensitivity']:.3f} / {w.get('sensitivity', float('nan')):.3f}, specificity "
                f"{m['specificity']:.3f} / {w.get('specificity', float('nan')):.3f}, AUC "
                f"{m['auc']:.3f} / {w.get('auc', float('nan')):.3f}, ECE {m['ece']:.3f} / "
                f"{w.get('ece', float('nan')):.3f}"
            )
    if card.get("validation_metrics_float"):
        lines.append(f"validation {_metric_text(card['validation_metrics_float'])} (float model)")
    if card.get("test_metrics"):
        lines.append(f"test       {_metric_text(card['test_metrics'])}")
    elif fitted:
        lines.append("test       none: every image trained the shipped weights (see expected)")
    else:
        lines.append("test       not evaluated (leukedge train evaluate --update-card)")
    robustness = card.get("test_robustness")
    if robustness:
        lines.append(
            "robustness calls changed by "
            + ", ".join(f"{name} {100 * r['flip_rate']:.1f} %" for name, r in robustness.items())
        )
    return lines


def _figures(f: dict) -> str:
    return (
        f"n={f['n']}: sensitivity {f['sensitivity']:.3f}, specificity {f['specificity']:.3f}, "
        f"coverage {f['coverage']:.3f}, accuracy of calls {f['ok_accuracy']:.3f}"
    )


def _trust_lines(metadata, engine) -> list[str]:
    """``leukedge info``'s lines on the operating point, refer band, out-of-domain check and
    quality thresholds, with the validation figures behind them."""
    lines = []
    d = metadata.decision
    positive = d.positive_label if d else metadata.positive_label
    if d is None:
        lines.append(
            f"call       {positive} when p({positive}) >= 0.5 (the arg-max; the model carries no "
            "operating point); no refer band"
        )
    else:
        op, argmax = d.validation.get("operating_point"), d.validation.get("argmax")
        lines.append(
            f"call       {positive} when p({positive}) >= {d.threshold:.4f}: operating point for "
            f"sensitivity >= {d.target_sensitivity} on {d.source}"
        )
        if d.refer_band:
            lines.append(
                f"refer      {d.refer_band[0]:.4f} <= p({positive}) < {d.refer_band[1]:.4f}: best "
                f"accuracy of calls at coverage >= {d.coverage_target}"
            )
        else:
            lines.append("refer      no band")
        where = "out of fold" if d.source.startswith("out-of-fold") else "validation"
        if op:
            lines.append(f"           {where}, this operating point: {_figures(op)}")
        if argmax:
            lines.append(f"           {where}, arg-max (0.5, no band): {_figures(argmax)}")
    o = metadata.ood
    if o is None or engine.embedding_dim is None:
        why = "no embedding output" if engine.embedding_dim is None else "no out-of-domain data"
        lines.append(
            f"ood        unavailable ({why}): inputs unlike the training data go undetected"
        )
    else:
        accepted = o.validation.get("accepted")
        output = o.embedding_output or "output"
        lines.append(
            f"ood        {o.method}, {o.embedding_dim}-d embedding ({output}), "
            f"rank {o.rank}, shrinkage {o.shrinkage}: out of domain when distance > "
            f"{o.threshold:.4g}; fitted on {o.fitted_on} (n={o.n_fit}), threshold on "
            f"{o.threshold_split} (n={o.n_threshold}, "
            + (f"{100 * accepted:.1f} % within)" if accepted is not None else "")
        )
    q = metadata.quality or QualityThresholds.generic(min(engine.input_size))
    checks = [
        ("too_small", q.min_side, "shorter side < {} px"),
        ("blank", q.blank_std_max, "grey std < {:.3g}"),
        ("segmented_cell", q.black_background_max, "black surround > {:.2f}, 1-2 objects"),
        ("scale", q.red_cell_diameter_range, "red cells outside {0[0]:.1f}-{0[1]:.1f} px"),
        ("underexposed", q.dark_mean_min, "mean grey < {:.3g}"),
        ("saturated", q.saturated_fraction_max, "clipped fraction > {:.3g}"),
        ("out_of_focus", q.focus_min, "Laplacian variance < {:.3g}"),
        ("not_stained", q.stain_min, "colourfulness < {:.3g}"),
    ]
    text = "; ".join(f"{r}: {fmt.format(v)}" for r, v, fmt in checks if v is not None)
    lines.append(f"quality    {text} ({q.source})")
    if q.unchecked():
        lines.append(f"           unchecked: {', '.join(q.unchecked())}")
    return lines
