"""Command-line options derived from a settings dataclass: one source for each setting.

``leukedge train`` and ``leukedge convert`` do not retype their settings: every field of
:class:`~leukedge.training.config.TrainConfig` / :class:`~leukedge.converters.convert.ConvertConfig`
(nested dataclasses included) becomes one Typer option, whose

- **type and choices** come from the field's annotation (``Literal[...]`` → a choice that
  Typer lists and validates; ``tuple[float, float]`` → two values; ``X | None`` → ``X``);
- **help** comes from the class docstring's ``Attributes:`` entry for the field (the text a
  Python user reads is the text a command-line user reads);
- **default** is shown from the dataclass (or from named default sets, such as training
  recipes, when they differ), but the option itself defaults to ``None``, so the command
  receives only what the user gave (:func:`given_settings`) and the dataclass, or the
  recipe, fills in the rest (:func:`build`).

Option names: a top-level field ``image_size`` is ``--image-size``; a field of a nested
dataclass is prefixed with the name of the field that holds it (``augment.shift`` →
``--augment-shift``, ``augment.photometric.stain`` → ``--photometric-stain``), unless the
command gives it another name (``names``). No third-party import but Typer.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, get_args, get_origin

import typer

SETTINGS = "settings"
"""Name of the command's parameter that receives ``{dotted field: value}`` of the options
the user gave."""

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr):`~?([^`]+)`")


def _plain(text: str) -> str:
    """reST roles and literals → plain text (``:class:`~a.B``` → ``B``, ````x```` → ``x``)."""
    text = _ROLE.sub(lambda m: m.group(1).split(".")[-1], text)
    return text.replace("``", "")


def _escape(text: str) -> str:
    """Keep ``[...]`` literal in Typer's rich help (Rich reads it as markup otherwise)."""
    return text.replace("[", "\\[")


def attribute_docs(cls: type) -> dict[str, str]:
    """``{field: help}`` from the ``Attributes:`` section of ``cls``'s docstring.

    Google style: ``name: text`` indented under ``Attributes:``, continuation lines indented
    further; ``a, b: text`` documents both fields. reST markup is reduced to plain text.
    """
    doc = inspect.getdoc(cls) or ""
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    indent = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break
        entry = re.match(r"(\w+(?:, \w+)*): (.*)", line.strip()) if depth == indent else None
        if entry:
            names = entry.group(1).split(", ")
            for name in names:
                out[name] = entry.group(2)
        else:
            for name in names:
                out[name] += " " + line.strip()
    return {k: _plain(v) for k, v in out.items()}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_none(annotation: Any) -> Any:
    """``X | None`` → ``X``."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _cli_type(annotation: Any) -> Any:
    """The type Typer gets for a field's annotation."""
    annotation = _strip_none(annotation)
    origin = get_origin(annotation)
    if origin is Literal:  # an Enum of its values (:func:`literal_choice`): Typer 0.16,
        return literal_choice(annotation)  # the lowest supported, cannot take a Literal
    if origin in (tuple, list) or annotation in (int, float, str, bool):
        return annotation
    if origin in (typing.Union, types.UnionType):  # e.g. str | int: take it as text
        return str
    if isinstance(origin, type) and issubclass(origin, Sequence):
        return list[get_args(annotation)[0]]
    return str


@functools.cache
def literal_choice(annotation: Any) -> type[enum.Enum] | None:
    """A ``str`` Enum of a ``Literal[...]`` annotation's values (``X | None`` too), the
    type a Typer option gets for it; ``None`` for any other annotation. Typer 0.16, the
    lowest the runtime supports (``pyproject.toml``), cannot take a ``Literal`` annotation
    (``RuntimeError: Type not yet supported``: ``leukedge classify`` failed to start;
    ``tools/check_platforms.py --deps lowest``), and newer Typers dropped ``click_type``;
    an Enum is a choice on every Typer. Commands get members: :func:`given_settings` (and
    ``.value``) turn them back into the text."""
    annotation = _strip_none(annotation)
    if get_origin(annotation) is not Literal:
        return None
    values = [str(v) for v in get_args(annotation)]
    return enum.Enum("Choice", {v: v for v in values}, type=str)


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return " ".join(map(str, value)) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted field: value}`` of a dataclass instance (nested ones walked)."""
    out = {}
    for f in dataclasses.fields(value):
        item = getattr(value, f.name)
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            out |= flatten(item, f"{prefix}{f.name}.")
        else:
            out[f"{prefix}{f.name}"] = item
    return out


def _defaults(cls: type) -> dict[str, Any]:
    """``{dotted field: default}`` (fields without a default are left out)."""
    out = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        elif f.default is not dataclasses.MISSING:
            value = f.default
        else:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            out |= {f"{f.name}.{k}": v for k, v in flatten(value).items()}
        else:
            out[f.name] = value
    return out


def _fields(cls: type, skip: frozenset[str], prefix: str = "", group: str | None = None):
    """``(dotted name, annotation, help, group field, panel)`` of every option field."""
    docs = attribute_docs(cls)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        path = prefix + f.name
        if path in skip:
            continue
        annotation = hints[f.name]
        if dataclasses.is_dataclass(annotation):
            title = f"{f.name} ({annotation.__name__})"
            yield from _fields(annotation, skip, path + ".", title)
        else:
            yield path, annotation, docs.get(f.name, ""), group


def options(
    cls: type,
    *,
    skip: frozenset[str] = frozenset(),
    names: Mapping[str, str] | None = None,
    minimum: Mapping[str, float] | None = None,
    maximum: Mapping[str, float] | None = None,
    default_sets: Mapping[str, Any] | None = None,
    default_note: str = "default",
) -> list[inspect.Parameter]:
    """One keyword parameter per field of ``cls`` (nested dataclasses walked), for Typer.

    Args:
        cls: the settings dataclass.
        skip: dotted fields without an option (the command declares them itself, or they
            are measured, not set).
        names: ``{dotted field or group field: option stem}`` replacing the derived name
            (``{"augment.rotation_degrees": "rotation"}`` → ``--rotation``; a group field,
            ``{"trust_config": "trust"}``, changes the prefix of its fields).
        minimum: ``{dotted field: smallest value}``, checked by Typer.
        maximum: ``{dotted field: largest value}``, checked by Typer.
        default_sets: ``{set name: {dotted field: value}}`` shown in the help where they
            differ (training recipes); by default, the dataclass's own defaults.
        default_note: what the help calls the value when every set agrees.

    Returns:
        :class:`inspect.Parameter` list: name ``dotted.field`` with ``.`` → ``__``,
        annotation ``Annotated[type | None, typer.Option(...)]``, default ``None``.
    """
    names = dict(names or {})
    minimum = dict(minimum or {})
    maximum = dict(maximum or {})
    sets = dict(default_sets or {"": _defaults(cls)})
    params = []
    for path, annotation, help_text, group in _fields(cls, skip):
        parts = path.split(".")
        stem = names.get(path)
        if stem is None:
            holder = ".".join(parts[:-1])
            prefix = names.get(holder, parts[-2].replace("_", "-")) if holder else ""
            stem = f"{prefix}-{parts[-1]}" if prefix else parts[-1]
        stem = stem.replace("_", "-")
        kind = _cli_type(annotation)
        decl = f"--{stem}/--no-{stem}" if kind is bool else f"--{stem}"
        shown = {name: values.get(path, dataclasses.MISSING) for name, values in sets.items()}
        known = {k: v for k, v in shown.items() if v is not dataclasses.MISSING}
        if known and len({repr(v) for v in known.values()}) == 1:
            note = f"({default_note}: {_show(next(iter(known.values())))})"
        elif known:
            note = "(" + "; ".join(f"{k}: {_show(v)}" for k, v in known.items()) + ")"
        else:
            note = "(required)"
        extra: dict[str, Any] = {}
        if path in minimum:
            extra["min"] = minimum[path]
        if path in maximum:
            extra["max"] = maximum[path]
        option = typer.Option(
            decl,
            help=_escape(f"{help_text} {note}".strip()),
            show_default=False,
            rich_help_panel=group,
            **extra,
        )
        params.append(
            inspect.Parameter(
                path.replace(".", "__"),
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[kind | None, option],
            )
        )
    return params


def with_options(cls: type, **kwargs) -> Callable[[Callable], Callable]:
    """Decorator: add :func:`options` of ``cls`` to a Typer command.

    The command keeps its own parameters and gets one more, ``settings``:
    ``{dotted field: value}`` of the generated options the user gave (the others are
    absent, so a recipe or the dataclass supplies them). ``kwargs`` go to :func:`options`.
    """

    def decorate(command: Callable) -> Callable:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values()]
        own = [p for p in own if p.name != SETTINGS]
        generated = options(cls, **kwargs)
        generated_names = {p.name for p in generated}
        nullable = frozenset(
            path
            for path, annotation, _, _ in _fields(cls, frozenset())
            if annotation != _strip_none(annotation) and _strip_none(annotation) is str
        )

        @functools.wraps(command)
        def wrapper(**values):
            settings = {
                name.replace("__", "."): values.pop(name)
                for name in list(values)
                if name in generated_names
            }
            return command(**values, settings=given_settings(settings, nullable))

        wrapper.__signature__ = inspect.Signature(
            [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + generated
        )
        wrapper.__annotations__ = {}
        del wrapper.__wrapped__  # Typer must read the signature above, not the command's
        return wrapper

    return decorate


def given_settings(
    values: Mapping[str, Any], nullable: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The options the user gave: ``None`` (not given) and empty lists dropped, lists to
    tuples, and ``"none"`` to ``None`` for the ``nullable`` fields (``str | None``, such as
    ``--weights none``)."""
    out = {}
    for path, value in values.items():
        if value is None or (isinstance(value, list | tuple) and not value):
            continue
        if isinstance(value, enum.Enum):  # a Literal's choice (:func:`literal_choice`)
            value = value.value
        if isinstance(value, list | tuple):
            value = tuple(v.value if isinstance(v, enum.Enum) else v for v in value)
        elif path in nullable and isinstance(value, str) and value.lower() == "none":
            value = None
        out[path] = value
    return out


def build(cls: type, settings: Mapping[str, Any], base: Mapping[str, Any] | None = None, **fixed):
    """``cls(**fixed, **base, **settings)``, with dotted ``settings`` set on nested configs.

    Args:
        cls: the settings dataclass.
        settings: ``{dotted field: value}`` (from :func:`given_settings`).
        base: ``{field: value}`` to start from (a recipe); nested dataclass values are
            copied before ``settings`` change them.
        fixed: top-level values (``data``, ``out``).

    Returns:
        The instance; its ``__post_init__`` checks run once, on the final values.

    Raises:
        ValueError / TypeError: as ``cls`` (a value out of range names the field).
    """
    kwargs = copy.deepcopy(dict(base or {})) | dict(fixed)
    hints = _hints(cls)
    for path, value in settings.items():
        head, _, rest = path.partition(".")
        if not rest:
            kwargs[head] = value
            continue
        if head not in kwargs:
            kwargs[head] = hints[head]()
        target = kwargs[head]
        *middle, last = rest.split(".")
        for name in middle:
            target = getattr(target, name)
        setattr(target, last, value)
    return cls(**kwargs)
