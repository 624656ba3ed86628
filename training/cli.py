"""The ``triage`` command line: one subcommand per job."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

logger = logging.getLogger("triage")


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class TriageGroup(click.Group):
    """The command group; an unexpected error ends a command with one line.

    Errors a command expects are click errors already. Any other exception,
    from a library or an unreadable file, is printed as ``Error: <type>:
    <message>`` with exit status 1; ``--verbose`` shows the traceback instead.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as exc:
            if ctx.params.get("verbose"):
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise click.ClickException(
                f"{type(exc).__name__}: {message or 'no message'} "
                "(run `triage --verbose ...` for the traceback)"
            ) from exc


@click.group(cls=TriageGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log detail and show tracebacks of errors.")
def main(verbose: bool) -> None:
    """Ticket triage: train, evaluate, serve and report on work-order models."""
    configure_logging(verbose)


@main.command("demo-data")
@click.option("--rows", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Number of synthetic tickets to write.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output file; .csv or .parquet.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed; the same seed writes the same file.")
def demo_data(rows: int, out: Path, seed: int) -> None:
    """Write synthetic tickets in the canonical schema."""
    from .demo_data import write_demo_data

    try:
        path = write_demo_data(rows, out, seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--out") from exc
    click.echo(f"wrote {rows} tickets to {path}")


@main.command("demo")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"),
              show_default=True, help="Folder for the demo data and answers.")
@click.option("--rows", type=click.IntRange(min=200), default=3000, show_default=True,
              help="Number of synthetic tickets to train on.")
def demo_command(out_dir: Path, rows: int) -> None:
    """Run the product end to end on synthetic tickets and print three scored tickets."""
    from .demo import run_demo

    run_demo(out_dir, rows=rows)


DATA = click.option(
    "--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
    help="Export to read: .csv, .xlsx or .parquet.",
)
MAPPING = click.option(
    "--mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="Mapping file (TOML or YAML) from export columns to canonical fields; "
    "omit for files already in the canonical schema.",
)
STRICT = click.option("--strict", is_flag=True, help="Stop at the first unusable row.")


@main.command("train")
@DATA
@MAPPING
@STRICT
@click.option("--model-name", default="ticket-triage", show_default=True,
              help="Registered model name in MLflow.")
@click.option("--eval-fraction", type=click.FloatRange(0.01, 0.9), default=0.2, show_default=True,
              help="Share of the newest tickets held out for evaluation.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads for LightGBM.")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI; default $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db.")
@click.option("--no-register", is_flag=True, help="Log the run but register no model version.")
@click.option("--feedback", "feedback_url", metavar="DB_URL", default=None,
              help="Feedback store URL (e.g. sqlite:///triage-feedback.db); the labels "
              "operators chose replace the export's for the same ticket ids.")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Train on this machine, or on the Dask cluster at --scheduler.")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Dask scheduler address (tcp://host:8786) for --engine dask.")
def train_command(data, mapping, strict, model_name, eval_fraction, seed, jobs, tracking_uri,
                  no_register, feedback_url, engine, scheduler):
    """Train every target of the mapping, check ONNX parity and register the bundle."""
    from sqlalchemy.exc import SQLAlchemyError

    from features.loading import ExportError, RowError
    from features.mapping import MappingError

    from .train import TrainingDataError, train

    try:
        result = train(
            data, mapping, model_name=model_name, eval_fraction=eval_fraction, seed=seed,
            strict=strict, n_jobs=jobs, tracking_uri=tracking_uri, register=not no_register,
            feedback=feedback_url, engine=engine, scheduler=scheduler,
        )
    except (MappingError, RowError, ExportError, TrainingDataError) as exc:
        raise click.ClickException(str(exc)) from exc
    except (FileNotFoundError, SQLAlchemyError) as exc:
        if feedback_url is None:
            raise
        raise click.ClickException(f"reading feedback from --feedback failed: {exc}") from exc
    load = result.load
    click.echo(
        f"rows: {load.rows_read} read, {load.rows_used} used, {len(load.rejected)} rejected"
    )
    for reason, count in sorted(load.rejected_reasons().items()):
        click.echo(f"  rejected ({reason}): {count}")
    for row in load.rejected[:10]:
        click.echo(f"  line {row.line}: {row.reason}")
    if len(load.rejected) > 10:
        click.echo(
            f"  ... {len(load.rejected) - 10} more in the run's rejected_rows.csv artifact"
        )
    for name, values in result.metrics.items():
        if "macro_f1" in values:
            extra = f", ROC-AUC {values['roc_auc']:.3f}" if "roc_auc" in values else ""
            click.echo(
                f"{name}: macro-F1 {values['macro_f1']:.3f}, accuracy {values['accuracy']:.3f} "
                f"on {values['rows']} evaluation rows{extra}"
            )
        else:
            click.echo(f"{name}: MAE {values['mae']:.3f} (baseline {values['baseline_mae']:.3f})")
    for name in load.mapping.targets:
        if name not in result.metrics:
            click.echo(
                f"{name}: skipped, too few labelled rows or a single label "
                "(the log above says which)"
            )
    version = f"version {result.version} ({', '.join(result.aliases)})" if result.version else "not registered"
    click.echo(f"run {result.run_id}; model {result.model_name} {version}")
    result.remove_files()


@main.command("evaluate")
@DATA
@MAPPING
@click.option("--cv", "folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Number of cross-validation folds.")
@click.option("--repeats", type=click.IntRange(min=1), default=2, show_default=True,
              help="Repetitions of stratified K-fold, each with other folds; "
              "time-based splits run once.")
@click.option("--mode", type=click.Choice(["intake", "closure"]), default="intake",
              show_default=True,
              help="intake: fields known at registration; closure: adds the closure notes.")
@click.option("--target", "targets", multiple=True,
              help="Target to evaluate (repeatable); default every target of the mapping.")
@click.option("--split", "strategy", type=click.Choice(["auto", "stratified", "time"]),
              default="auto", show_default=True,
              help="Fold scheme; auto is stratified under 5,000 labelled tickets, "
              "time-based from there.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed of the folds and the models.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads per LightGBM fit.")
@click.option("--variant", "variant_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None,
              help="JSON file with the model settings to evaluate: params, features, class_weight.")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI; default $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also copy the tables and plots into this folder.")
def evaluate_command(data, mapping, folds, repeats, mode, targets, strategy, seed, jobs,
                     variant_file, tracking_uri, out_dir):
    """Cross-validate the model against majority and TF-IDF + logistic regression baselines."""
    import shutil

    from features.loading import RowError
    from features.mapping import MappingError

    from .evaluate_cv import Variant, evaluate, format_report, register_section
    from .recommend_eval import recommender_section

    register_section(recommender_section)
    try:
        variant = Variant.from_file(variant_file) if variant_file else None
        result = evaluate(
            data, mapping, folds=folds, repeats=repeats, mode=mode,
            targets=list(targets) or None, strategy=strategy, seed=seed, n_jobs=jobs,
            variant=variant, tracking_uri=tracking_uri,
        )
    except (MappingError, RowError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_report(result))
    if out_dir is not None:
        shutil.copytree(result.artifacts_dir, out_dir, dirs_exist_ok=True)
        click.echo(f"tables and plots in {out_dir}")


@main.command("tune")
@DATA
@MAPPING
@click.option("--target", default="category", show_default=True, help="Target to tune.")
@click.option("--mode", type=click.Choice(["intake", "closure"]), default="intake",
              show_default=True, help="Which fields the model reads.")
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True,
              help="Number of Optuna trials.")
@click.option("--cv", "folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Cross-validation folds per trial.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--timeout", type=click.FloatRange(min=1), default=None,
              help="Stop starting new trials after this many seconds.")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI; default $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the best variant as JSON, for `triage evaluate --variant`.")
def tune_command(data, mapping, target, mode, trials, folds, seed, timeout, tracking_uri, out):
    """Search LightGBM and feature settings with Optuna; each trial is an MLflow child run."""
    import json

    from features.mapping import MappingError

    from .tuning import tune

    try:
        result = tune(
            data, mapping, target=target, mode=mode, trials=trials, folds=folds, seed=seed,
            timeout=timeout, tracking_uri=tracking_uri,
        )
    except (MappingError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"best of {result.trials} trials: trial {result.best_trial}, objective "
        f"{result.best_value:.3f} (macro-F1 {result.best_figures['macro_f1']:.3f}, "
        f"ECE {result.best_figures['ece']:.3f}); MLflow run {result.run_id}"
    )
    click.echo(json.dumps(result.best_variant.to_dict(), ensure_ascii=False, indent=2))
    if out is not None:
        out.write_text(json.dumps(result.best_variant.to_dict(), indent=2), encoding="utf-8")
        click.echo(f"wrote {out}")


@main.command("audit")
@DATA
@MAPPING
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV file for the flagged tickets.")
@click.option("--target", default="category", show_default=True,
              help="Coded label to audit: category or root_cause.")
@click.option("--model", "model_uri", default=None,
              help="Use the closure model of this bundle (models:/name@alias or a folder) "
              "instead of cross-fitted models.")
@click.option("--precision", type=click.FloatRange(0.5, 1.0), default=0.9, show_default=True,
              help="Target precision of the per-class thresholds that make a prediction confident.")
@click.option("--min-probability", type=click.FloatRange(0.0, 1.0), default=None,
              help="Flag only predictions at least this probable, instead of the thresholds.")
@click.option("--cv", "folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Folds of the cross-fitted closure models.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def audit_command(data, mapping, out, target, model_uri, precision, min_probability, folds, seed):
    """List closed tickets whose coded cause disagrees with a confident closure-mode prediction."""
    from features.loading import RowError
    from features.mapping import MappingError

    from .audit import audit

    try:
        result = audit(
            data, mapping, out=out, target=target, model_uri=model_uri, precision=precision,
            min_probability=min_probability, folds=folds, seed=seed,
        )
    except (MappingError, RowError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{result.checked} closed tickets checked, {len(result.flagged)} disagree with a "
        f"confident closure-mode prediction; written to {out}"
    )


@main.command("serve")
@click.option("--model", "model_uri", default=None,
              help="Registry URI to serve, e.g. models:/ticket-triage@champion "
              "(default $TRIAGE_MODEL_URI).")
@click.option("--bundle", "bundle_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Serve a bundle folder instead of a registry alias.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="TCP port to bind.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes; each loads jieba and the model once.")
@click.option("--scoring-threads", type=click.IntRange(min=1), default=None,
              help="Threads per worker that run scoring off the event loop "
              "(default: CPU cores / workers; $TRIAGE_SCORING_THREADS).")
@click.option("--onnx-threads", type=click.IntRange(min=1), default=None,
              help="onnxruntime intra-op threads per session run (default 1; "
              "$TRIAGE_ONNX_THREADS).")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="Log one line per request.")
def serve_command(model_uri, bundle_dir, host, port, workers, scoring_threads, onnx_threads,
                  access_log):
    """Start the scoring API and intake page."""
    import os
    import tempfile

    import uvicorn

    if model_uri:
        os.environ["TRIAGE_MODEL_URI"] = model_uri
    if bundle_dir:
        os.environ["TRIAGE_BUNDLE_DIR"] = str(Path(bundle_dir).resolve())
    if scoring_threads:
        os.environ["TRIAGE_SCORING_THREADS"] = str(scoring_threads)
    if onnx_threads:
        os.environ["TRIAGE_ONNX_THREADS"] = str(onnx_threads)
    # Workers read this to size their thread pools for the machine's cores.
    os.environ["TRIAGE_WORKERS"] = str(workers)
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers write their metrics here, so /metrics on any of them sums all.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="triage-metrics-")
    uvicorn.run(
        "serving.main:app", host=host, port=port, workers=workers, log_level="info",
        access_log=access_log,
    )


@main.command("report")
@DATA
@MAPPING
@click.option("--period", default=None,
              help="Months to report on by ticket creation time: YYYY-MM, YYYY or START..END "
              "(e.g. 2017-01..2017-12); all months by default.")
@click.option("--model", "model_uri", default=None,
              help="Model URI to score the tickets with, e.g. models:/ticket-triage@champion; "
              "without it, sections that need predictions state what is missing.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="HTML report to write; <name>.md, <name>_tables/ and <name>_figures/ "
              "are written beside it.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar on standard error.")
def report_command(data, mapping, period, model_uri, out, no_progress):
    """Write the abnormal-closure analysis report (HTML, Markdown and CSV tables)."""
    from features.loading import load_tickets
    from features.mapping import MappingError

    from .report import build_report, parse_period
    from .report_charts import MissingFontError

    try:
        parse_period(period)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--period") from exc
    try:
        result = load_tickets(data, mapping)
    except (MappingError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    predictions = score_for_report(model_uri, result.tickets) if model_uri else None
    try:
        files = build_report(
            result, out, period=period, predictions=predictions, progress=not no_progress,
            source_name=data.name,
        )
    except (MissingFontError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {files.html}, {files.markdown} and {len(files.tables)} tables")


def score_for_report(model_uri: str, tickets):
    """Score tickets with a registered model and index the result by ticket id."""
    try:
        from models.scorer import load_scorer

        scorer = load_scorer(model_uri)
    except ImportError as exc:
        raise click.ClickException(
            f"cannot score with --model {model_uri}: module {exc.name} could not be imported "
            f"({exc}); install the model dependencies or run the report without --model"
        ) from exc
    scored = scorer.score_frame(tickets)
    scored.index = tickets.loc[scored.index, "ticket_id"].to_numpy()
    return scored


TRACKING_URI = click.option(
    "--tracking-uri", default=None,
    help="MLflow tracking URI; default $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db.",
)
MODEL_NAME = click.option("--model-name", default="ticket-triage", show_default=True,
                          help="Registered model name in MLflow.")


@main.command("retrain")
@DATA
@MAPPING
@click.option("--feedback", "feedback_url", metavar="DB_URL", default=None,
              help="Feedback store URL; the labels operators chose replace the export's.")
@click.option("--window-months", type=click.IntRange(min=1), default=12, show_default=True,
              help="Months before the evaluation month that the challenger trains on.")
@click.option("--month", default=None, metavar="YYYY-MM",
              help="Evaluation month; later tickets are left out (default: the newest month).")
@MODEL_NAME
@click.option("--max-f1-drop", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Largest allowed fall of macro-F1 against the champion.")
@click.option("--max-recall-drop", type=click.FloatRange(0, 1), default=0.10, show_default=True,
              help="Largest allowed fall of any class's recall.")
@click.option("--max-calibration-rise", type=click.FloatRange(0, 1), default=0.02,
              show_default=True, help="Largest allowed rise of expected calibration error.")
@click.option("--min-class-support", type=click.IntRange(min=1), default=5, show_default=True,
              help="Classes with fewer evaluation tickets are not judged by the recall rule.")
@click.option("--min-rows", type=click.IntRange(min=1), default=10, show_default=True,
              help="Targets with fewer evaluation tickets are reported but not judged.")
@click.option("--gate-target", "gate_targets", multiple=True, metavar="TARGET",
              help="Target the gate judges; repeat for several (default: every classifier).")
@click.option("--dry-run", is_flag=True,
              help="Train, compare and log the run, but register no version and move no alias.")
@click.option("--fail-on-reject", is_flag=True,
              help="Exit with status 1 when the gate rejects the challenger.")
@click.option("--force", is_flag=True,
              help="Retrain even if the newest month already has a registered version.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="LightGBM parameter for every target, e.g. n_estimators=100; repeat for "
              "several. Values are read as JSON numbers or booleans, else as text.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads for LightGBM.")
@TRACKING_URI
@click.pass_context
def retrain_command(ctx, data, mapping, feedback_url, window_months, month, model_name,
                    max_f1_drop, max_recall_drop, max_calibration_rise, min_class_support,
                    min_rows, gate_targets, dry_run, fail_on_reject, force, params, seed, jobs,
                    tracking_uri):
    """Train a challenger on the months before the newest one, compare it with the
    champion on the newest month, and promote it if it passes the gate."""
    from sqlalchemy.exc import SQLAlchemyError

    from features.loading import RowError
    from features.mapping import MappingError

    from .gate import GateConfig
    from .retrain import retrain, summary_lines

    gate = GateConfig(
        max_f1_drop=max_f1_drop, max_recall_drop=max_recall_drop,
        max_calibration_increase=max_calibration_rise, min_class_support=min_class_support,
        min_rows=min_rows, targets=tuple(gate_targets) or None,
    )
    try:
        result = retrain(
            data, mapping, model_name=model_name, window_months=window_months, month=month,
            feedback_url=feedback_url, gate=gate, dry_run=dry_run, force=force, seed=seed,
            n_jobs=jobs, params=parse_params(params),
            tracking_uri=tracking_uri,
        )
    except (MappingError, RowError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except (FileNotFoundError, SQLAlchemyError) as exc:
        if feedback_url is None:
            raise
        raise click.ClickException(f"reading feedback from --feedback failed: {exc}") from exc
    for line in summary_lines(result):
        click.echo(line)
    if fail_on_reject and result.rejected:
        ctx.exit(1)


def parse_params(items: tuple[str, ...]) -> dict | None:
    """Turn ``KEY=VALUE`` options into LightGBM parameters."""
    import json

    params = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--param")
        try:
            params[key] = json.loads(text)
        except json.JSONDecodeError:
            params[key] = text
    return params or None


@main.command("promote")
@click.argument("version", type=click.IntRange(min=1))
@MODEL_NAME
@click.option("--reason", default=None, help="Why, recorded in the version's tags.")
@TRACKING_URI
def promote_command(version, model_name, reason, tracking_uri):
    """Make VERSION the champion; the current champion becomes previous."""
    import mlflow

    from models.registry_io import tracking_uri as default_uri

    from .aliases import AliasError, promote

    mlflow.set_tracking_uri(tracking_uri or default_uri())
    try:
        # Registry versions are whole numbers; "01" or " 1" names version 1.
        change = promote(model_name, str(version), action=f"promote: {reason or 'by hand'}")
    except AliasError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{model_name}: champion is version {change.champion}; "
        f"previous is version {change.previous or 'none'}"
    )


@main.command("rollback")
@MODEL_NAME
@click.option("--reason", default=None, help="Why, recorded in the version's tags.")
@TRACKING_URI
def rollback_command(model_name, reason, tracking_uri):
    """Move champion back to the previous version."""
    import mlflow

    from models.registry_io import tracking_uri as default_uri

    from .aliases import AliasError, rollback

    mlflow.set_tracking_uri(tracking_uri or default_uri())
    try:
        change = rollback(model_name, action=f"rollback: {reason or 'by hand'}")
    except AliasError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{model_name}: champion rolled back from version {change.replaced} to "
        f"{change.champion}; previous is version {change.previous or 'none'}"
    )


@main.command("score-batch")
@DATA
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output file, .parquet or .csv; parts are kept in <out>.parts until done.")
@click.option("--model", "model_uri", default=None,
              help="Registry URI (models:/ticket-triage@champion) or bundle folder "
              "(default $TRIAGE_MODEL_URI, else models:/ticket-triage@champion).")
@click.option("--mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None,
              help="Mapping file for the export; default the mapping recorded in the bundle.")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=50_000, show_default=True,
              help="Rows per part; a rerun skips the parts already written.")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Score in local processes, or on the Dask cluster at --scheduler.")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Dask scheduler address (tcp://host:8786) for --engine dask.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Local worker processes (default one per core).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing output and parts left by another run.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def score_batch_command(data, out, model_uri, mapping, chunk_rows, engine, scheduler, workers,
                        overwrite, no_progress):
    """Score every row of an export; rows that cannot be scored get an error column."""
    from features.mapping import MappingError
    from models.bundle import BundleError

    from .score_batch import BatchError, score_batch

    try:
        summary = score_batch(
            data, out, model_uri, mapping=mapping, chunk_rows=chunk_rows, engine=engine,
            scheduler=scheduler, workers=workers, overwrite=overwrite, progress=not no_progress,
        )
    except (BatchError, BundleError, MappingError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"scored {summary.scored} of {summary.rows} rows into {summary.out} "
        f"({summary.errors} with errors; {summary.parts} parts, {summary.parts_skipped} "
        f"reused) in {summary.seconds:.1f} s, {summary.rows_per_second:.0f} rows/s "
        "over the rows this run read"
    )


if __name__ == "__main__":
    main()
