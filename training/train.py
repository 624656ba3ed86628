"""``triage train``: load, split, fit, evaluate, export, check parity, register."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from features.inputs import TOKENS, FeatureSpec, feature_frame, ticket_text
from features.loading import DEFAULT_CHUNK_ROWS, LoadResult, load_tickets
from features.mapping import Mapping, TargetSpec
from features.schema import METADATA_FIELDS, TEXT_FIELDS
from features.taxonomy import DEFAULT_TAXONOMY
from features.text import (
    DOMAIN_DICTIONARY,
    appended_token_string,
    get_tokenizer,
    token_string,
)
from models.bundle import TargetEntry, write_manifest
from models.calibration import calibrated_graph, fit_calibrated, held_out_figures
from models.estimators import (
    DEFAULT_CLASS_WEIGHT,
    DEFAULT_PARAMS,
    FittedFeatures,
    TargetModel,
    target_fit_options,
)
from models.export import require_parity, to_onnx
from models.similar import write_index

from .evaluate import classification_metrics, plot_confusion, regression_metrics
from .feedback import merge_feedback
from .scale import (
    check_parity_in_batches,
    is_large,
    large_data_params,
    parity_rows,
    shared_features,
)

logger = logging.getLogger(__name__)

# Prefix of the temporary folder where a run writes its bundle and plots.
WORK_FOLDER_PREFIX = "triage-train-"

# Texts that stress normalisation and the ONNX tokenizer; every export is
# checked on them besides the evaluation rows.
PROBE_TEXTS = (
    "核心交换机端口频繁up/down，多个业务系统访问超时",
    "Oracle数据库ORA-01653错误，表空间满，ERP无法写入",
    "２０１７年３月１２日１０：３０ 服务器ＣＰＵ使用率１００％",
    "系统告警😀🔥，用户无法登录",
    "   \t\n  ",
    "",
)


class TrainingDataError(ValueError):
    """The export has too few usable tickets or labels to train on."""


@dataclass
class TrainResult:
    run_id: str
    model_name: str
    version: str | None
    aliases: list[str]
    metrics: dict[str, dict[str, Any]]
    load: LoadResult
    bundle_dir: Path
    parity: dict[str, float] = field(default_factory=dict)
    models: dict[str, TargetModel] = field(default_factory=dict)
    # Closure-mode models (they read the closure notes), by bundle entry name.
    closure_models: dict[str, TargetModel] = field(default_factory=dict)
    spec: FeatureSpec | None = None

    def remove_files(self) -> None:
        """Delete the local copies of the bundle and plots; the MLflow run keeps its own."""
        folder = self.bundle_dir.parent
        if folder.name.startswith(WORK_FOLDER_PREFIX):
            shutil.rmtree(folder, ignore_errors=True)


def intake_spec(mapping: Mapping, mode: str = "intake") -> FeatureSpec:
    """The features a model of ``mode`` reads: intake fields, plus closure notes in closure mode."""
    text = [f for f in TEXT_FIELDS if f in mapping.intake]
    if mode == "closure":
        text.append("closure_notes")
    categorical = [f for f in METADATA_FIELDS if f in mapping.intake]
    categorical += mapping.extra_features
    return FeatureSpec(
        text_fields=tuple(text), categorical=tuple(categorical), mode=mode
    )


def time_split(tickets: pd.DataFrame, eval_fraction: float) -> np.ndarray:
    """Mark the newest ``eval_fraction`` of tickets (by creation time) as evaluation rows."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval fraction must be between 0 and 1, got {eval_fraction}")
    order = np.argsort(tickets["created_at"].to_numpy(), kind="stable")
    n_eval = max(1, int(round(len(tickets) * eval_fraction)))
    mask = np.zeros(len(tickets), dtype=bool)
    mask[order[len(tickets) - n_eval :]] = True
    return mask


def _tokenize_chunk(texts: list[str]) -> list[str]:
    return [token_string(t) for t in texts]


def tokenize_texts(texts: list[str], workers: int | None = None, progress: bool = True) -> list[str]:
    """Token strings for many texts; large inputs are spread over worker processes.

    jieba loads its dictionary once here, before the pool forks, so workers
    inherit it instead of each loading it again.
    """
    get_tokenizer()
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(texts) < 20_000:
        return [token_string(t) for t in tqdm(texts, desc="tokenise", unit="ticket", disable=not progress, mininterval=1)]
    import multiprocessing as mp

    size = 5_000
    chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
    out: list[str] = []
    with mp.get_context("fork").Pool(workers) as pool, tqdm(
        total=len(texts), desc="tokenise", unit="ticket", unit_scale=True, disable=not progress
    ) as bar:
        for part in pool.imap(_tokenize_chunk, chunks):
            out.extend(part)
            bar.update(len(part))
    return out


def target_labels(
    tickets: pd.DataFrame, target: TargetSpec, train_mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Labels for one target and the mask of rows that have one.

    Multiclass labels seen fewer than ``min_count`` times in ``train_mask`` rows,
    and labels that never appear there, are merged into ``rare_label``.
    """
    values = tickets[target.field]
    if target.kind == "regression":
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        labelled = np.isfinite(numbers) & (numbers >= 0)
        return numbers, labelled
    labelled = values.notna().to_numpy()
    labels = values.to_numpy(dtype=object)
    if target.kind == "binary":
        return np.array([bool(v) if v is not None else None for v in labels], dtype=object), labelled
    counts = Counter(labels[labelled & train_mask].tolist())
    keep = {label for label, n in counts.items() if n >= target.min_count}
    merged = np.array(
        [v if (v is None or v in keep) else target.rare_label for v in labels], dtype=object
    )
    return merged, labelled


def _labelled(tickets: pd.DataFrame, target: TargetSpec) -> np.ndarray:
    values = tickets[target.field]
    if target.kind == "regression":
        numbers = pd.to_numeric(values, errors="coerce")
        return (numbers.notna() & (numbers >= 0)).to_numpy()
    return values.notna().to_numpy()


def probe_frame(tickets: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    base = tickets.iloc[[0] * len(PROBE_TEXTS)].copy().reset_index(drop=True)
    for field_name in spec.text_fields:
        base[field_name] = ""
    base[spec.text_fields[0] if spec.text_fields else "description"] = list(PROBE_TEXTS)
    return base


# Targets that also get a closure-mode model, which reads the closure notes
# besides the intake fields; its bundle entry is named with CLOSURE_SUFFIX.
CLOSURE_TARGETS = ("category",)
CLOSURE_SUFFIX = "_closure"


def closure_inputs(load: LoadResult, intake_frame, progress: bool):
    """Spec, feature frame and probe frame of closure mode, or None when it does not apply.

    None when the mapping maps no column to the closure notes, when no target of
    :data:`CLOSURE_TARGETS` is declared, or when the intake features were not
    built in this process (the Dask engine).
    """
    mapping = load.mapping
    if intake_frame is None or "closure_notes" not in mapping.closure:
        return None
    if not mapping.fields.get("closure_notes"):
        return None
    if not any(name in mapping.targets for name in CLOSURE_TARGETS):
        return None
    tickets = load.tickets
    spec = intake_spec(mapping, mode="closure")
    tokens = closure_tokens(tickets, intake_spec(mapping), spec, intake_frame[TOKENS].tolist(), progress)
    frame = feature_frame(tickets, spec, tokens=tokens)
    return spec, frame, feature_frame(probe_frame(tickets, spec), spec)


def closure_tokens(tickets, intake: FeatureSpec, closure: FeatureSpec, intake_tokens: list[str], progress: bool) -> list[str]:
    """Token strings of the closure-mode texts, reusing the intake texts' tokens.

    A closure text is the intake text, a line break and the closure notes
    (:func:`features.inputs.ticket_text`), so only the notes are tokenised,
    and the few tickets whose two parts could join across the break are
    tokenised whole (:func:`features.text.appended_token_string`).
    """
    if closure.text_fields[: len(intake.text_fields)] != intake.text_fields:
        raise ValueError(
            f"closure-mode text fields {closure.text_fields} do not start with the "
            f"intake text fields {intake.text_fields}"
        )
    notes_spec = replace(closure, text_fields=closure.text_fields[len(intake.text_fields) :])
    intake_texts = [ticket_text(r, intake) for r in tickets[list(intake.text_fields)].to_dict("records")]
    notes = [ticket_text(r, notes_spec) for r in tickets[list(notes_spec.text_fields)].to_dict("records")]
    notes_tokens = tokenize_texts(notes, progress=progress)
    tokens = [
        appended_token_string(a, a_tokens, b, b_tokens)
        for a, a_tokens, b, b_tokens in zip(intake_texts, intake_tokens, notes, notes_tokens)
    ]
    whole = [i for i, value in enumerate(tokens) if value is None]
    if whole:
        texts = [ticket_text(r, closure) for r in tickets.iloc[whole][list(closure.text_fields)].to_dict("records")]
        for i, value in zip(whole, tokenize_texts(texts, progress=False)):
            tokens[i] = value
    return tokens


def fit_and_check(
    target: TargetSpec,
    frame: pd.DataFrame,
    y: np.ndarray,
    train: np.ndarray,
    evaluation: np.ndarray,
    spec: FeatureSpec,
    probes: pd.DataFrame,
    seed: int,
    n_jobs: int,
    params: dict | None,
    ticket_ids: np.ndarray,
    features: FittedFeatures | None = None,
    large: bool = False,
) -> tuple[TargetModel, Any, dict[str, Any], np.ndarray]:
    """Fit one target, evaluate it, export it and check parity on eval rows and probes.

    ``features`` is a feature pipeline fitted once for several targets, with
    one matrix row per row of ``frame``. A ``large`` export fits each
    classifier once and checks parity on a sample of the evaluation rows (see
    ``training.scale``).
    """
    # Classifiers are fitted on all training rows, with temperatures and
    # per-class thresholds from held-out or cross-fitted predictions of them.
    # A large export ships the model fitted without the held-out rows.
    options = target_fit_options(target.model, params=params, class_weight=DEFAULT_CLASS_WEIGHT)
    model, calibration = fit_calibrated(
        target.name, target.kind, frame[train], y[train], spec,
        seed=seed, n_jobs=n_jobs, **options,
        features=features.take(train) if features is not None else None,
        refit=not large,
    )
    eval_frame = frame[evaluation]
    eval_matrix = features.matrix[evaluation] if features is not None else None
    scores = model.predict_scores(eval_frame, eval_matrix) if len(eval_frame) else np.zeros((0, 1))
    if not evaluation.any():
        # An explicit evaluation month can hold no labelled row of this target.
        metrics: dict[str, Any] = {"rows": 0}
    elif target.kind == "regression":
        baseline = float(np.median(y[train].astype(float)))
        metrics = regression_metrics(y[evaluation].astype(float), scores, baseline)
        residuals = np.log1p(y[evaluation].astype(float)) - np.log1p(np.clip(scores, 0, None))
        metrics["log_residual_scale"] = float(np.std(residuals)) if len(residuals) > 1 else None
    else:
        y_eval = y[evaluation].astype(bool if target.kind == "binary" else str)
        metrics = classification_metrics(y_eval, scores, model.labels)
        metrics.update(held_out_figures(calibration, model, scores, y_eval))
    graph = calibrated_graph(model, to_onnx(model, spec))
    checked = parity_rows(evaluation, seed) if large else np.flatnonzero(evaluation)
    check_rows = pd.concat([frame.iloc[checked], probes], ignore_index=True)
    ids = list(ticket_ids[checked]) + [f"probe-{i}" for i in range(len(probes))]
    report = check_parity_in_batches(model, graph, check_rows, ids)
    require_parity(report)
    metrics["parity_max_abs_diff"] = report.max_abs_diff
    return model, graph, metrics, scores


def _shares_features(target: TargetSpec) -> bool:
    """Return whether a target reads the shared feature pipeline, which it does unless it sets feature options."""
    return not target.model.get("features")


def _target_rows(tickets, target: TargetSpec, eval_mask, eval_fraction: float, merged):
    """Labels, training rows and evaluation rows of one target, or None when it is skipped."""
    labelled = _labelled(tickets, target)
    if eval_mask is None:
        eval_rows = np.zeros(len(tickets), dtype=bool)
        eval_rows[np.flatnonzero(labelled)[time_split(tickets[labelled], eval_fraction)]] = True
    else:
        eval_rows = labelled & np.asarray(eval_mask, dtype=bool)
    if merged is not None:
        eval_rows = merged.keep_out_of_evaluation(target.name, eval_rows)
    train_rows = labelled & ~eval_rows
    y, _ = target_labels(tickets, target, train_rows)
    if target.kind != "regression":
        known = set(y[train_rows].tolist())
        eval_rows &= np.array([v in known for v in y], dtype=bool)
    if train_rows.sum() < 5:
        logger.warning("target %s: only %d labelled training rows, skipped", target.name, int(train_rows.sum()))
        return None
    if target.kind != "regression" and len(known) < 2:
        # No classifier can be fitted on one class. A window of recent months
        # can hold just one: after 2016-04 the ICT records label only escalations.
        logger.warning(
            "target %s: every labelled training row has the label %r, skipped",
            target.name, next(iter(known)),
        )
        return None
    return y, train_rows, eval_rows


def train(
    data: str | Path,
    mapping: Mapping | str | Path | None = None,
    *,
    model_name: str = "ticket-triage",
    eval_fraction: float = 0.2,
    seed: int = 0,
    strict: bool = False,
    n_jobs: int = 2,
    params: dict | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    register: bool = True,
    progress: bool = True,
    load: LoadResult | None = None,
    eval_mask: np.ndarray | None = None,
    feedback: str | None = None,
    engine: str = "local",
    scheduler: str | None = None,
) -> TrainResult:
    """Train every target the mapping declares and register the bundle in MLflow.

    ``eval_mask`` (one boolean per ticket of ``load``) names the evaluation rows
    explicitly, for example the newest month in a monthly retrain, and then
    ``eval_fraction`` is ignored. Inside an active MLflow run the training run
    is started as its child. ``feedback`` is the URL of a feedback store whose
    chosen labels replace the export's (see ``training.feedback``).

    ``engine="dask"`` tokenises, counts the vocabulary and fits LightGBM on the
    Dask cluster at ``scheduler`` (see ``training.dask_engine``); the export
    is then read in chunks that stay on the workers, and this process keeps
    only the labels and metadata. From ``training.scale.LARGE_DATA_ROWS``
    tickets on, LightGBM gets the settings of
    ``training.scale.large_data_params`` unless ``params`` names them, and the
    local engine fits the feature pipeline once per mode for all targets and
    each classifier once (see ``training.scale``).
    """
    import mlflow

    from . import registry

    started = time.perf_counter()
    cluster = None
    if engine == "dask":
        from .dask_engine import DaskTraining

        cluster = DaskTraining(scheduler, n_jobs=n_jobs)
        load = cluster.distribute(load) if load else cluster.load(data, mapping, strict)
    elif engine != "local":
        raise ValueError(f"engine {engine!r} is unknown; expected local or dask")
    load = load or load_tickets(data, mapping, strict=strict, chunk_rows=DEFAULT_CHUNK_ROWS)
    merged = merge_feedback(load, feedback, model_name) if feedback else None
    if merged is not None:
        load = merged.load
    tickets = load.tickets
    if len(tickets) < 10:
        raise TrainingDataError(
            f"{data} has {len(tickets)} usable tickets; training needs at least 10"
        )
    if eval_mask is not None and len(eval_mask) != len(tickets):
        raise ValueError(
            f"eval_mask has {len(eval_mask)} values for {len(tickets)} tickets; "
            "pass one boolean per ticket"
        )
    spec = intake_spec(load.mapping)
    if cluster is not None:
        cluster.prepare(spec)
        frame = None
    else:
        texts = [ticket_text(r, spec) for r in tickets[list(spec.text_fields)].to_dict("records")]
        frame = feature_frame(tickets, spec, tokens=tokenize_texts(texts, progress=progress))
        del texts
    probes = feature_frame(probe_frame(tickets, spec), spec)
    fit = cluster.fit_and_check if cluster is not None else fit_and_check

    registry.setup_tracking(tracking_uri, experiment or registry.DEFAULT_EXPERIMENT)
    bundle_dir = Path(tempfile.mkdtemp(prefix=WORK_FOLDER_PREFIX)) / "bundle"
    (bundle_dir / "targets").mkdir(parents=True)
    plots_dir = bundle_dir.parent / "plots"
    plots_dir.mkdir()
    ticket_ids = tickets["ticket_id"].to_numpy(dtype=object)

    metrics: dict[str, dict[str, Any]] = {}
    fitted: dict[str, TargetModel] = {}
    closure_fitted: dict[str, TargetModel] = {}
    entries: list[TargetEntry] = []
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=f"train {Path(str(data)).name}", nested=nested) as run:
        evaluation = eval_fraction if eval_mask is None else "given rows"
        _log_inputs(load, data, seed, evaluation, params, spec)
        if merged is not None:
            merged.log_to_mlflow()
        targets = list(load.mapping.targets.values())
        inputs = {"intake": (spec, frame, probes)}
        closure = closure_inputs(load, frame, progress)
        jobs = [(target, "intake") for target in targets]
        if closure is not None:
            inputs["closure"] = closure
            jobs += [
                (replace(t, name=f"{t.name}{CLOSURE_SUFFIX}"), "closure")
                for t in targets
                if t.name in CLOSURE_TARGETS
            ]
        planned = []
        for target, mode in jobs:
            rows = _target_rows(tickets, target, eval_mask, eval_fraction, merged)
            if rows is not None:
                planned.append((target, mode, *rows))
        large = cluster is None and is_large(len(tickets))
        shared: dict[str, FittedFeatures] = {}
        if large:
            # One feature fit per mode, on the rows no target evaluates on. A
            # target with feature options of its own fits its own pipeline.
            for mode in dict.fromkeys(mode for target, mode, *_ in planned if _shares_features(target)):
                held = np.zeros(len(tickets), dtype=bool)
                for target, target_mode, _, _, eval_rows in planned:
                    if target_mode == mode and _shares_features(target):
                        held |= eval_rows
                shared[mode] = shared_features(inputs[mode][1], inputs[mode][0], ~held)
        for target, mode, y, train_rows, eval_rows in tqdm(planned, desc="fit targets", unit="target", disable=not progress):
            mode_spec, mode_frame, mode_probes = inputs[mode]
            target_params = large_data_params(int(train_rows.sum()), params, tickets=len(tickets))
            extra = {}
            if large:
                extra["large"] = True
                if mode in shared and _shares_features(target):
                    extra["features"] = shared[mode]
            model, graph, target_metrics, scores = fit(
                target, mode_frame, y, train_rows, eval_rows, mode_spec, mode_probes,
                seed, n_jobs, target_params, ticket_ids, **extra,
            )
            (fitted if mode == "intake" else closure_fitted)[target.name] = model
            target_metrics["train_rows"] = int(train_rows.sum())
            logger.info(
                "target %s: %d training and %d evaluation rows",
                target.name, int(train_rows.sum()), int(eval_rows.sum()),
            )
            metrics[target.name] = target_metrics
            file = f"targets/{target.name}.onnx"
            (bundle_dir / file).write_bytes(graph.SerializeToString())
            entries.append(
                TargetEntry(
                    name=target.name,
                    kind=target.kind,
                    field=target.field,
                    file=file,
                    labels=[_json_label(v) for v in model.labels],
                    transform=model.transform,
                    threshold=0.5 if target.kind == "binary" else None,
                    class_thresholds=getattr(model, "class_thresholds", {}),
                    limit_hours=target.limit_hours,
                    limits=target.limits,
                    limit_by=target.limit_by,
                    residual_scale=target_metrics.get("log_residual_scale"),
                    mode=mode,
                )
            )
            y_eval = y[eval_rows].astype(bool if target.kind == "binary" else str) if target.kind != "regression" else y[eval_rows]
            _log_target(target, target_metrics, y_eval, scores, model, plots_dir)

        if not entries:
            raise TrainingDataError("no target had enough labelled rows to train")
        similar = _write_similar_index(bundle_dir, tickets, spec, frame)
        manifest = _write_bundle(
            bundle_dir, load, spec, entries, metrics, model_name, seed, similar,
            closure_spec=closure[0] if closure is not None else None,
        )
        mlflow.log_dict(manifest, "manifest.json")
        mlflow.log_metric("train_seconds", time.perf_counter() - started)
        version, aliases = None, []
        if register:
            version = registry.log_bundle(bundle_dir, model_name)
            aliases = registry.assign_new_version(model_name, version)
            mlflow.set_tag("registered_version", version)
        run_id = run.info.run_id

    if cluster is not None:
        cluster.close()
    logger.info("training took %.1f s", time.perf_counter() - started)
    return TrainResult(
        run_id=run_id,
        model_name=model_name,
        version=version,
        aliases=aliases,
        metrics=metrics,
        load=load,
        bundle_dir=bundle_dir,
        parity={k: v["parity_max_abs_diff"] for k, v in metrics.items()},
        models=fitted,
        closure_models=closure_fitted,
        spec=spec,
    )


def _json_label(value: Any) -> Any:
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _known_values(tickets: pd.DataFrame, spec: FeatureSpec, limit: int = 200) -> dict[str, list[str]]:
    """Most frequent raw values of each metadata field, for the intake page's pickers."""
    values = {}
    for name in spec.categorical:
        counts = tickets[name].replace("", np.nan).dropna().value_counts()
        values[name] = [str(v) for v in counts.index[:limit]]
    return values


def _write_similar_index(bundle_dir, tickets, spec, frame) -> dict | None:
    """Build the closed-ticket index into the bundle, reusing the training tokens."""
    if frame is None:
        # TODO: build the index on the cluster; until then Dask-trained bundles
        # serve without similar tickets, as bundles from older releases do.
        logger.warning(
            "no similar-ticket index: the dask engine keeps the ticket text on the "
            "cluster; train with the local engine to ship one"
        )
        return None
    tokens = frame["tokens"].tolist()
    return write_index(bundle_dir, tickets, spec.text_fields, spec.categorical, tokens)


def _write_bundle(
    bundle_dir, load, spec, entries, metrics, model_name, seed, similar=None, closure_spec=None
) -> dict:
    import lightgbm
    import onnxruntime
    import skl2onnx
    import sklearn

    shutil.copy(DOMAIN_DICTIONARY, bundle_dir / "it_ops.txt")
    shutil.copy(DEFAULT_TAXONOMY, bundle_dir / "taxonomy.toml")
    tickets = load.tickets
    manifest = {
        "name": model_name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mapping": load.mapping.to_dict(),
        "feature_spec": spec.to_dict(),
        "closure_feature_spec": closure_spec.to_dict() if closure_spec is not None else None,
        "dictionary": "it_ops.txt",
        "targets": [e.to_dict() for e in entries],
        "similar": similar,
        "metrics": metrics,
        "known_values": _known_values(tickets, spec),
        "data_window": {
            "start": str(tickets["created_at"].min()),
            "end": str(tickets["created_at"].max()),
            "rows": len(tickets),
        },
        "seed": seed,
        "versions": {
            "scikit-learn": sklearn.__version__,
            "lightgbm": lightgbm.__version__,
            "skl2onnx": skl2onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }
    return write_manifest(bundle_dir, manifest)


def _log_inputs(load: LoadResult, data, seed, eval_fraction, params, spec) -> None:
    import mlflow

    mlflow.log_params(
        {
            "data": str(data),
            "mapping": load.mapping.name,
            "seed": seed,
            "eval_fraction": eval_fraction,
            "text_fields": ",".join(spec.text_fields),
            "categorical_fields": ",".join(spec.categorical),
            **{f"lgbm.{k}": v for k, v in {**DEFAULT_PARAMS, **(params or {})}.items()},
        }
    )
    mlflow.log_metrics(
        {
            "rows_read": load.rows_read,
            "rows_used": load.rows_used,
            "rows_rejected": len(load.rejected),
        }
    )
    for reason, count in load.rejected_reasons().items():
        mlflow.log_metric(f"rows_rejected.{reason.replace(' ', '_')}", count)
    if load.rejected:
        rejected = pd.DataFrame([r.__dict__ for r in load.rejected])
        mlflow.log_text(rejected.to_csv(index=False), "rejected_rows.csv")


def _log_target(target, metrics, y_eval, scores, model, plots_dir: Path) -> None:
    import mlflow

    flat = {
        f"{target.name}.{k}": float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    for label, values in metrics.get("per_class", {}).items():
        for key in ("precision", "recall", "f1"):
            flat[f"{target.name}.{key}.{_metric_key(label)}"] = values[key]
    mlflow.log_metrics(flat)
    mlflow.log_dict(metrics, f"metrics/{target.name}.json")
    if target.kind != "regression" and len(y_eval):
        path = plot_confusion(
            y_eval, scores, model.labels, f"{target.name}: confusion matrix",
            plots_dir / f"confusion_{target.name}.png",
        )
        mlflow.log_artifact(str(path), "plots")


def _metric_key(label: Any) -> str:
    """MLflow metric names allow word characters and ``_-./ ``; others become ``_``."""
    return re.sub(r"[^\w.\- /]", "_", str(label))


def write_metrics_json(result: TrainResult, path: Path) -> None:
    path.write_text(json.dumps(result.metrics, ensure_ascii=False, indent=2), encoding="utf-8")


__all__ = ["PROBE_TEXTS", "TrainResult", "intake_spec", "target_labels", "time_split", "train"]
