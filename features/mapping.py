"""Mapping files: which export columns and raw values give each canonical field and label.

A mapping is a TOML or YAML file with these tables:

``fields``
    canonical field -> export column (a list of columns is joined by line breaks).
``extra``
    feature name -> export column, for an organisation's own metadata.
``stages``
    ``intake``: the fields known at registration; only they reach intake models.
    ``closure``: the fields added when a ticket closes.
``targets``
    one table per prediction target: ``kind`` (multiclass, binary, regression),
    ``column``, ``field`` (the canonical column that holds the label), ``stage``,
    optional ``values`` (raw value -> label), ``empty`` (label for empty cells),
    ``min_count`` and ``rare_label`` (merge rare multiclass labels), ``ignore``
    (raw values that mean "unknown", left unlabelled). A regression target may
    name a time limit: ``limit_hours`` (fixed), or ``limits`` (hours per value
    of the target named by ``limit_by``, for example per priority). An
    optional ``model`` table holds the target's own fitting settings:
    ``params`` (LightGBM parameters), ``features`` (feature pipeline options)
    and ``class_weight`` (exponent of the balanced class weights, 0 for
    unweighted). They override the defaults and any settings passed for all
    targets, key by key.
"""

from __future__ import annotations

import tomllib
import unicodedata
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any

from .schema import CANONICAL_FIELDS, INTAKE_FIELDS

MAPPINGS_DIR = Path(__file__).with_name("mappings")
DEFAULT_MAPPING = MAPPINGS_DIR / "canonical.toml"
TARGET_KINDS = ("multiclass", "binary", "regression")
STAGES = ("intake", "closure")


class MappingError(ValueError):
    """A mapping file is invalid or does not fit the export it is applied to."""


def fold(value: str) -> str:
    """Normalise a label or metadata value: NFKC, trimmed, case-folded."""
    return unicodedata.normalize("NFKC", value).strip().casefold()


@dataclass(frozen=True)
class TargetSpec:
    """One prediction target declared by a mapping."""

    name: str
    kind: str
    column: str
    field: str
    stage: str = "closure"
    values: dict[str, Any] | None = None
    empty: Any = None
    min_count: int = 1
    rare_label: str = "other"
    limit_hours: float | None = None
    limits: dict[str, float] | None = None
    limit_by: str | None = None
    ignore: frozenset[str] = frozenset()
    model: dict[str, Any] = dataclass_field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "column": self.column,
            "field": self.field,
            "stage": self.stage,
            "min_count": self.min_count,
            "rare_label": self.rare_label,
            "limit_hours": self.limit_hours,
            "limits": self.limits,
            "limit_by": self.limit_by,
            "ignore": sorted(self.ignore),
            "model": self.model,
        }


@dataclass(frozen=True)
class Mapping:
    """A parsed mapping file."""

    name: str
    fields: dict[str, list[str]]
    extra: dict[str, str]
    intake: tuple[str, ...]
    closure: tuple[str, ...]
    targets: dict[str, TargetSpec]
    null_values: frozenset[str] = frozenset({""})
    source: str = "<memory>"
    description: str = ""

    @property
    def extra_features(self) -> list[str]:
        """Extra metadata fields known at intake, in mapping order."""
        return [name for name in self.extra if name in self.intake]

    def columns_used(self) -> list[str]:
        cols = [c for columns in self.fields.values() for c in columns]
        cols += list(self.extra.values())
        cols += [t.column for t in self.targets.values()]
        return list(dict.fromkeys(cols))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fields": self.fields,
            "extra": self.extra,
            "intake": list(self.intake),
            "closure": list(self.closure),
            "targets": {k: v.to_dict() for k, v in self.targets.items()},
        }


def _read_file(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix == ".toml":
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    if suffix in (".yaml", ".yml"):
        import yaml

        with open(path, encoding="utf-8") as fh:
            try:
                data = yaml.safe_load(fh)
            except yaml.YAMLError as exc:
                raise MappingError(f"mapping {path} cannot be parsed: {exc}") from exc
        if not isinstance(data, dict):
            raise MappingError(f"mapping {path} must contain a table at the top level")
        return data
    raise MappingError(
        f"mapping {path} has suffix {suffix!r}; expected .toml, .yaml or .yml"
    )


def load_mapping(path: str | Path | None = None) -> Mapping:
    """Read and validate a mapping file; the canonical identity mapping by default."""
    path = Path(path) if path is not None else DEFAULT_MAPPING
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in MAPPINGS_DIR.glob("*.toml")))
        raise MappingError(
            f"mapping file {path} not found; shipped mappings in {MAPPINGS_DIR}: {shipped}"
        )
    try:
        data = _read_file(path)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        if isinstance(exc, MappingError):
            raise
        raise MappingError(f"mapping {path} cannot be parsed: {exc}") from exc
    return parse_mapping(data, source=str(path))


def _column_list(name: str, value: Any, source: str) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v for v in value if v]
    raise MappingError(
        f"mapping {source}: field {name!r} must name a column or a list of columns, "
        f"got {value!r}"
    )


TARGET_KEYS = (
    "kind", "column", "field", "stage", "values", "empty", "min_count", "rare_label",
    "limit_hours", "limits", "limit_by", "ignore", "model",
)
MODEL_KEYS = ("params", "features", "class_weight")


def _reject_unknown_keys(table: dict, allowed: tuple[str, ...], where: str, listing: str) -> None:
    """Raise MappingError naming the keys of ``table`` outside ``allowed``, and the allowed ones."""
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise MappingError(f"{where} unknown keys {unknown}; {listing} {', '.join(allowed)}")


def _parse_model_settings(name: str, kind: str, spec: Any, source: str) -> dict[str, Any]:
    """Validate a target's ``model`` table and return its settings (``char_ngrams`` as a tuple)."""
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise MappingError(f"mapping {source}: target {name!r} `model` must be a table")
    _reject_unknown_keys(spec, MODEL_KEYS, f"mapping {source}: target {name!r} `model` has", "expected")
    settings: dict[str, Any] = {}
    for key in ("params", "features"):
        if key in spec:
            if not isinstance(spec[key], dict):
                raise MappingError(
                    f"mapping {source}: target {name!r} `model.{key}` must be a table"
                )
            settings[key] = dict(spec[key])
    if settings.get("features", {}).get("char_ngrams") is not None:
        settings["features"]["char_ngrams"] = tuple(settings["features"]["char_ngrams"])
    if "class_weight" in spec:
        weight = spec["class_weight"]
        if kind == "regression":
            raise MappingError(
                f"mapping {source}: regression target {name!r} takes no `model.class_weight`"
            )
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise MappingError(
                f"mapping {source}: target {name!r} `model.class_weight` must be a number "
                f">= 0 (0 fits unweighted), got {weight!r}"
            )
        settings["class_weight"] = float(weight)
    return settings


def _parse_target(name: str, spec: Any, source: str) -> TargetSpec:
    if not isinstance(spec, dict):
        raise MappingError(f"mapping {source}: target {name!r} must be a table")
    _reject_unknown_keys(spec, TARGET_KEYS, f"mapping {source}: target {name!r} has", "a target has")
    kind = spec.get("kind")
    if kind not in TARGET_KINDS:
        raise MappingError(
            f"mapping {source}: target {name!r} has kind {kind!r}; "
            f"expected one of {', '.join(TARGET_KINDS)}"
        )
    column = spec.get("column")
    if not isinstance(column, str) or not column:
        raise MappingError(f"mapping {source}: target {name!r} needs a source `column`")
    stage = spec.get("stage", "closure")
    if stage not in STAGES:
        raise MappingError(
            f"mapping {source}: target {name!r} has stage {stage!r}; "
            f"expected one of {', '.join(STAGES)}"
        )
    values = spec.get("values")
    if values is not None:
        if not isinstance(values, dict):
            raise MappingError(f"mapping {source}: target {name!r} `values` must be a table")
        values = {fold(str(k)): v for k, v in values.items()}
        if kind == "binary" and not all(isinstance(v, bool) for v in values.values()):
            raise MappingError(
                f"mapping {source}: binary target {name!r} must map values to true or false"
            )
    elif kind == "binary":
        raise MappingError(
            f"mapping {source}: binary target {name!r} needs `values` mapping raw values "
            "to true or false"
        )
    min_count = int(spec.get("min_count", 1))
    if min_count < 1:
        raise MappingError(f"mapping {source}: target {name!r} min_count must be >= 1")
    limit = spec.get("limit_hours")
    limits = spec.get("limits")
    limit_by = spec.get("limit_by")
    if (limits is None) != (limit_by is None):
        raise MappingError(
            f"mapping {source}: target {name!r} needs both `limits` and `limit_by`, or neither"
        )
    if limits is not None:
        if kind != "regression":
            raise MappingError(f"mapping {source}: only regression targets take `limits`")
        if not isinstance(limits, dict) or not all(
            isinstance(v, (int, float)) and v > 0 for v in limits.values()
        ):
            raise MappingError(
                f"mapping {source}: target {name!r} `limits` must map values to positive hours"
            )
        limits = {fold(str(k)): float(v) for k, v in limits.items()}
    ignore = spec.get("ignore", [])
    if not isinstance(ignore, list):
        raise MappingError(f"mapping {source}: target {name!r} `ignore` must be a list")
    return TargetSpec(
        name=name,
        kind=kind,
        column=column,
        field=spec.get("field", name),
        stage=stage,
        values=values,
        empty=spec.get("empty"),
        min_count=min_count,
        rare_label=str(spec.get("rare_label", "other")),
        limit_hours=float(limit) if limit is not None else None,
        limits=limits,
        limit_by=limit_by,
        ignore=frozenset(fold(str(v)) for v in ignore),
        model=_parse_model_settings(name, kind, spec.get("model"), source),
    )


TOP_LEVEL_KEYS = ("name", "description", "null_values", "fields", "extra", "stages", "targets")


def _check_category_labels(targets: dict[str, TargetSpec], source: str) -> None:
    """Raise when a target writing ``category`` maps raw values to a code the taxonomy lacks."""
    from .taxonomy import load_taxonomy

    codes = set(load_taxonomy().category_codes)
    for target in targets.values():
        if target.field != "category" or target.kind != "multiclass":
            continue
        labels = set((target.values or {}).values())
        if target.empty is not None:
            labels.add(target.empty)
        wrong = sorted(str(label) for label in labels - codes)
        if wrong:
            raise MappingError(
                f"mapping {source}: target {target.name!r} maps to {wrong}, which are "
                f"not category codes; use one of {', '.join(sorted(codes))}"
            )


def parse_mapping(data: dict[str, Any], source: str = "<memory>") -> Mapping:
    """Validate the contents of a mapping file."""
    _reject_unknown_keys(data, TOP_LEVEL_KEYS, f"mapping {source}:", "a mapping has")
    raw_fields = data.get("fields")
    if not isinstance(raw_fields, dict):
        raise MappingError(f"mapping {source} has no [fields] table")
    unknown = sorted(set(raw_fields) - set(CANONICAL_FIELDS))
    if unknown:
        raise MappingError(
            f"mapping {source}: unknown fields {unknown}; canonical fields are "
            f"{', '.join(CANONICAL_FIELDS)}"
        )
    fields = {name: _column_list(name, col, source) for name, col in raw_fields.items()}
    for required in ("ticket_id", "created_at"):
        if not fields.get(required):
            raise MappingError(f"mapping {source}: field {required!r} must name a column")
    if not (fields.get("description") or fields.get("title")):
        raise MappingError(
            f"mapping {source}: field 'description' or 'title' must name a column"
        )

    extra = data.get("extra", {}) or {}
    if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
        raise MappingError(f"mapping {source}: [extra] must map feature names to columns")
    clash = sorted(set(extra) & set(CANONICAL_FIELDS))
    if clash:
        raise MappingError(
            f"mapping {source}: extra features {clash} reuse canonical field names; "
            "rename them"
        )

    stages = data.get("stages", {}) or {}
    intake = tuple(stages.get("intake", INTAKE_FIELDS))
    closure = tuple(stages.get("closure", ("closure_notes",)))
    known = set(CANONICAL_FIELDS) | set(extra)
    stray = sorted(set(intake + closure) - known)
    if stray:
        raise MappingError(
            f"mapping {source}: stages name unknown fields {stray}; known fields: "
            f"{', '.join(sorted(known))}"
        )
    leaked = sorted(set(intake) & {"closure_notes", "closed_at", "handling_hours"})
    if leaked:
        raise MappingError(
            f"mapping {source}: closure fields {leaked} cannot be known at intake"
        )

    raw_targets = data.get("targets", {}) or {}
    if not isinstance(raw_targets, dict) or not raw_targets:
        raise MappingError(f"mapping {source} declares no [targets]")
    targets = {name: _parse_target(name, spec, source) for name, spec in raw_targets.items()}
    for target in targets.values():
        if target.limit_by is not None and target.limit_by not in targets:
            raise MappingError(
                f"mapping {source}: target {target.name!r} takes limits by "
                f"{target.limit_by!r}, which is not a declared target"
            )
    label_fields = [t.field for t in targets.values()]
    if len(set(label_fields)) != len(label_fields):
        raise MappingError(f"mapping {source}: two targets write the same field")
    _check_category_labels(targets, source)

    nulls = data.get("null_values", [""])
    return Mapping(
        name=str(data.get("name", Path(source).stem)),
        description=str(data.get("description", "")),
        fields=fields,
        extra=dict(extra),
        intake=intake,
        closure=closure,
        targets=targets,
        null_values=frozenset(str(v).strip() for v in nulls) | {""},
        source=source,
    )


__all__ = [
    "DEFAULT_MAPPING",
    "MAPPINGS_DIR",
    "Mapping",
    "MappingError",
    "TargetSpec",
    "fold",
    "load_mapping",
    "parse_mapping",
]
