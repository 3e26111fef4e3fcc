"""`nas`: a thin command line over the library. Project errors print one line and exit 2
(1 for "no subnet meets the budget"); nothing is written before the experiment validates."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from nas.config import EXPORT_FORMATS, MAX_WORKERS
from nas.errors import NasError, count_text
from nas.interrupts import interrupt_handled, interrupt_on_sigterm, remember_interrupts, stop_when_orphaned
from nas.io import json_safe

if TYPE_CHECKING:  # jax and flax load only for the commands that need them
    from nas.context import Context

STAGE_HELP = {
    "train": "train the supernet (sandwich + in-place distillation); resumes from the last checkpoint",
    "measure": "measure accuracy, latency and size of sampled subnets",
    "fit": "fit the accuracy and latency predictors and report their held-out quality",
    "search": "Optuna search over the predictors under the budgets; measure the front for real",
    "export": "export the measured front (config, params, metrics, StableHLO) and a Pareto plot",
}


FORCE_HELP = {
    "train": "run the stage again even if current, from nothing (its checkpoints and partial files deleted)",
    "search": "run again even if current: resumes its study, which other workers may share (delete RUN/search to "
              "search afresh)",
    "export": "export again even if current; the old export is replaced once the new one is whole",
}


def _experiment_args(p: argparse.ArgumentParser, what: str = "experiment TOML file") -> None:
    p.add_argument("experiment", help=what)
    p.add_argument("--run-dir", help="run directory (default: RUNS_ROOT/<experiment name>)")
    p.add_argument("--runs-root", help="parent of run directories (default: runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error, as the project's own errors are (exit 2 as argparse's)."""

    def error(self, message: str) -> NoReturn:
        """Print `PROG: error: MESSAGE (see PROG --help)` on one line and exit 2."""
        value = re.search(r"invalid choice: '([^']*)'", message)
        if value and (value[1].endswith((".toml", ".csv")) or Path(value[1]).exists()):
            # `--format npz run.toml`: an option that takes several values swallowed the positional.
            message += f"; '{value[1]}' was read as one of the option's values: put it before the option"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="nas", description="Slimmable-supernet architecture and bit-width search.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check an experiment file and print the size of its space")
    p.add_argument("experiment")
    p = sub.add_parser("run", help="train -> measure -> fit -> search -> export, skipping current stages")
    _experiment_args(p)
    p.add_argument("--force", action="store_true", help="re-run every stage")
    for stage, text in STAGE_HELP.items():
        p = sub.add_parser(stage, help=text)
        _experiment_args(p, "experiment TOML file" + (", or a CSV table (options below)" if stage == "search" else ""))
        p.add_argument("--force", action="store_true", help=FORCE_HELP.get(stage, FORCE_HELP["train"]))
        if stage == "search":
            from nas.tabular import add_table_options

            p.add_argument("--workers", type=int, metavar="N",
                           help="worker processes on the study (default: [search] workers)")
            p.add_argument("--spawned", action="store_true", help=argparse.SUPPRESS)  # started by --workers
            table = p.add_argument_group("on a NAS-Bench-style table (`nas search TABLE.csv`: the table is the "
                                         "space and the oracle)")
            add_table_options(table, required=False)
            table.add_argument("--out", metavar="FRONT.csv", help="also write the front found as a table")
        if stage == "export":
            # extend: `--format npz orbax` and `--format npz --format orbax` both name two formats.
            p.add_argument("--format", nargs="+", action="extend", choices=EXPORT_FORMATS, dest="formats",
                           help="export format(s), overriding [export] formats; several, or the flag repeated")
    p = sub.add_parser("query", help="the best subnet meeting budgets, as JSON: from the exported front, from the "
                                     "predictors over the whole space (--from predictors), or one config's "
                                     "predicted metrics (--predict)")
    p.add_argument("run_dir", help="run directory, e.g. runs/quickstart")
    p.add_argument("--budget", action="append", default=[], metavar="METRIC=VALUE",
                   help="e.g. latency_ms=0.05 (<=), accuracy>=0.95; repeatable")
    p.add_argument("--predict", metavar="CONFIG.json", help="predict the metrics of this config instead")
    p.add_argument("--from", dest="source", choices=("export", "predictors"),
                   help="answer from the exported front (default) or from the predictors over the whole space")
    p.add_argument("--objective", metavar="METRIC",
                   help="with --from predictors: the metric to optimise (its natural direction); default accuracy")
    p.add_argument("--confidence", type=float, metavar="P",
                   help="with --from predictors: meet each predicted budget with this probability under the "
                        "predictor's uncertainty (default 0.5: the mean)")
    p.add_argument("--top", type=int, metavar="K", help="with --from predictors: also list the next K-1 (default 1)")
    p.add_argument("--measure", action="store_true",
                   help="with --from predictors: measure the answer for real (accuracy, latency) and check the budgets")
    p.add_argument("--export", metavar="DIR",
                   help="with --from predictors: measure the answer and export it to this new folder, like a front "
                        "member (StableHLO / npz / orbax as the experiment's [export] formats, metrics.json)")
    from nas.byo import add_predictors_parser
    from nas.report import add_report_parser
    from nas.tabular import add_bench_search_parser

    add_report_parser(sub)
    add_bench_search_parser(sub)
    add_predictors_parser(sub)
    return parser


def _validate(args: argparse.Namespace) -> int:
    from nas.context import prepare
    from nas.data import data_shape
    from nas.pipeline import require_enough_subnets

    ctx = prepare(args.experiment)
    require_enough_subnets(ctx)  # what `nas run` would refuse is not "ok"
    space = ctx.space
    # The data as read (an image npz in PyTorch's N, C, H, W layout shows here as a C-high image; review),
    # as the families record it in the space (prepare read the data for it); else read again.
    meta = space.meta
    if "n_classes" in meta and "input_shape" in meta:
        n_classes, shape = meta["n_classes"], meta["input_shape"]
    else:
        _, n_classes, shape = data_shape(ctx.exp.data)
    print(f"{args.experiment}: ok — experiment '{ctx.exp.name}', family '{space.meta['family']}', input "
          f"{'x'.join(map(str, shape))}, {n_classes} classes, {len(space.dimensions)} dimensions, "
          f"{count_text(space.size())} subnets")
    return 0


def _query(args: argparse.Namespace) -> int:
    from nas.query import predict_config, query

    predictor_options = {"--objective": args.objective, "--confidence": args.confidence, "--top": args.top,
                         "--measure": args.measure or None, "--export": args.export}
    if args.predict:
        given = [flag for flag, v in {"--budget": args.budget or None, "--from": args.source,
                                      **predictor_options}.items() if v is not None]
        if given:
            raise NasError(f"{given[0]} does not go with --predict, which predicts the metrics of one config")
        try:
            config = json.loads(Path(args.predict).read_text())
        except (OSError, ValueError, RecursionError) as e:
            raise NasError(f"--predict {args.predict}: not a readable JSON config ({e})") from None
        print(json.dumps(json_safe(predict_config(args.run_dir, config)), indent=2))
        return 0
    if args.source == "predictors":
        return _query_predictors(args)
    given = [flag for flag, v in predictor_options.items() if v is not None]
    if given:
        raise NasError(f"{given[0]} goes with --from predictors (the exported front answers by accuracy)")
    t0 = time.perf_counter()
    result = query(args.run_dir, args.budget)
    result["query_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
    print(json.dumps(json_safe(result), indent=2))
    return 0


def _query_predictors(args: argparse.Namespace) -> int:
    from nas.budget_query import query_predictors, run_budgets_left_out, run_context

    ctx = run_context(args.run_dir)  # once, for the answer and the note (each prepared the run apart)
    objective = "accuracy" if args.objective is None else args.objective
    answer = query_predictors(ctx, args.budget, objective=objective,
                              confidence=0.5 if args.confidence is None else args.confidence,
                              top=1 if args.top is None else args.top, measure=args.measure, export=args.export)
    print(json.dumps(json_safe(answer), indent=2))
    left_out = run_budgets_left_out(ctx, args.budget)
    if left_out:
        print(f"note: only the --budget limits were applied, not the experiment's own {'; '.join(left_out)}: "
              "add them as --budget to hold them too", file=sys.stderr)
    if "measured" in answer and not answer["measured_meets_budgets"]:
        # Still an answer (the predicted best), but the user should not ship it unchecked.
        print("note: measured for real, this subnet misses the budgets; try a higher --confidence", file=sys.stderr)
    return 0


def _stages(args: argparse.Namespace) -> int:
    from nas.context import prepare
    from nas.pipeline import describe_if_current, refuse_other_run, run_all, run_stage
    from nas.progress import say

    if args.command == "search":
        from nas.tabular import TABLE_OPTIONS

        given = [name for name in TABLE_OPTIONS if getattr(args, name) is not None]
        if given:
            flag = {"choices": "choice"}.get(given[0], given[0]).replace("_", "-")
            raise NasError(f"--{flag} is for a search on a table "
                           "(nas search TABLE.csv); an experiment's search is set in its [search] section")
    if getattr(args, "workers", None) is not None and not 1 <= args.workers <= MAX_WORKERS:
        raise NasError(f"--workers {args.workers}: must be in 1..{MAX_WORKERS}")
    experiment = args.experiment
    if getattr(args, "spawned", False):
        from nas.config import load_experiment
        from nas.search import SPAWNED_TEXT

        snapshot = os.environ.get(SPAWNED_TEXT)
        experiment = load_experiment(experiment, text=Path(snapshot).read_text() if snapshot else None)
    ctx = prepare(experiment, run_dir=args.run_dir, runs_root="runs" if args.runs_root is None else args.runs_root)
    refuse_other_run(ctx)
    if getattr(args, "formats", None):
        ctx = with_export_formats(ctx, tuple(dict.fromkeys(args.formats)))
    t0 = time.time()
    if args.command == "run":
        result = run_all(ctx, force=args.force, quiet=args.quiet)
        print(f"nas run {ctx.exp.name}: done in {time.time() - t0:.1f} s; results in {ctx.run_dir}")
        return 0
    if ctx.first_stale(args.command) is None and not args.force:
        describe_if_current(ctx)  # as `nas run` does
        say(f"[{args.command}] up to date in {ctx.run_dir} (use --force to re-run)", quiet=args.quiet)
        return 0
    options = {}
    if args.command == "search":
        options = {"workers": args.workers, "spawned": args.spawned}
    result = run_stage(ctx, args.command, quiet=args.quiet, fresh=args.force, **options)
    print(json.dumps(json_safe(result), allow_nan=False))
    return 0


def with_export_formats(ctx: Context, formats: tuple[str, ...]) -> Context:
    """The same context with [export] formats replaced (a changed format set makes export stale)."""
    from dataclasses import replace

    return replace(ctx, exp=replace(ctx.exp, export=replace(ctx.exp.export, formats=formats)))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `nas` console script."""
    args = build_parser().parse_args(argv)
    from nas.byo import run_predictors
    from nas.report import run_report
    from nas.tabular import run_bench_search

    handlers = {"validate": _validate, "query": _query, "report": run_report, "bench-search": run_bench_search,
                "predictors": run_predictors}
    handler = handlers.get(args.command, _stages)
    if args.command == "search" and Path(args.experiment).suffix.lower() == ".csv":
        from nas.tabular import run_table_search

        handler = run_table_search
    remember_interrupts()
    if getattr(args, "spawned", False):
        from nas.search import SPAWNED_BY

        interrupt_on_sigterm()  # how a failing `nas search --workers N` stops this worker (nas.search.stop_workers)
        if os.environ.get(SPAWNED_BY, "").isdigit():
            stop_when_orphaned(int(os.environ[SPAWNED_BY]))  # and how one killed (-9) does
    try:
        return handler(args)
    except NasError as e:
        print(f"error: {e}".splitlines()[0], file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        # The reader went away (`nas query ... | head`): nothing to say, and nothing more to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a process ended by SIGPIPE
    except OSError as e:
        if isinstance(e.__context__, KeyboardInterrupt):
            # Raised while unwinding from Ctrl-C (a storage lock's clean-up, say): it is the interrupt.
            return _interrupted(args)
        # A path the user named cannot be read or written (a folder where a file goes, a parent
        # that is a file, no permission, disk full): the user's to fix, not a bug to trace.
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}".splitlines()[0], file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted(args)
    finally:
        interrupt_handled()  # a SIGINT this command handled (or ended before it was raised again) is done


def _interrupted(args: argparse.Namespace) -> int:
    if not getattr(args, "spawned", False):  # a terminal's Ctrl-C reaches every worker: one line, the parent's
        print("interrupted: run the same command again to resume", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
