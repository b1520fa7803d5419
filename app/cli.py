"""Command line: ``python -m app {config,ingest,ask,eval,usage,gaps,sources,forget,doctor,serve-store}``.

Each command imports what it uses when it runs: ``--help`` loads no settings, ``config``, ``usage`` and ``gaps`` no
LlamaIndex (benchmarks/bench_cli.py measures it).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from settings import Settings

logger = logging.getLogger("app")


def _settings(args: argparse.Namespace) -> Settings:
    from settings import load_settings

    overrides = {}
    if getattr(args, "index", None):
        overrides["storage"] = {"index_dir": str(args.index)}
    return load_settings(args.profile, **overrides)


def cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(_settings(args).masked(), indent=2))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from app.composition import build_ingestor, open_runtime
    from app.ingest_progress import IngestProgress
    from integrations.backend_errors import transient_errors

    if args.address and args.engine != "ray":
        raise ValueError("--address names a Ray cluster: use it with --engine ray")
    if not Path(args.path).exists():  # before anything is opened or created
        raise ValueError(f"{args.path} does not exist: give a folder or file to ingest")
    runtime = open_runtime(_settings(args))
    ingestor = build_ingestor(runtime)
    tracker = IngestProgress.for_settings(runtime.settings.ingestion)
    bars = []  # made at the first report, once the folder is found and planned: a bad path prints only its error
    committed = [0]

    def show() -> None:  # megabytes read when the plan gave sizes (not the Ray engine), files otherwise
        if not bars:
            bytes_known = bool(tracker.sizes)
            bars.append(
                tqdm(
                    total=tracker.total_bytes() if bytes_known else tracker.files_total,
                    unit="B" if bytes_known else "file",
                    unit_scale=bytes_known,
                    unit_divisor=1024,
                    smoothing=0,  # the rate since the start: the time left does not swing with one slow batch
                    desc="ingesting",
                    disable=args.quiet,
                    file=sys.stderr,
                )
            )
        bar = bars[0]
        bar.n = int(tracker.bytes_done()) if tracker.sizes else tracker.files_done
        bar.set_postfix_str(f"{tracker.files_done}/{tracker.files_total} files · {tracker.embedded:,} chunks", refresh=True)

    def planned(sizes: list[int]) -> None:
        tracker.planned(sizes)
        if sizes:
            show()

    def progress(done: int, total: int, current: str) -> None:
        committed[0] = done
        tracker.files(done, total, current)
        show()

    def embedded(done: int, total: int) -> None:
        tracker.chunks(done, total)
        show()

    def vectors(done: int, total: int) -> None:  # the second pass of a keywords-first ingest: its chunk total is known
        tracker.vectors(done, total)
        if len(bars) < 2:
            show()
            bars[0].close()
            bars.append(tqdm(total=total, unit="chunk", smoothing=0, desc="embedding", disable=args.quiet, file=sys.stderr))
        bars[1].n = done
        bars[1].set_postfix_str("every file searchable by keywords meanwhile", refresh=True)

    def close_bar() -> None:
        for bar in bars:
            bar.close()

    try:
        if args.engine == "ray":
            from app.ray_ingest import ray_ingest

            report = ray_ingest(ingestor, Path(args.path), address=args.address, progress=progress)
        else:
            report = ingestor.ingest(Path(args.path), progress=progress, embedded=embedded, planned=planned, vectors=vectors)
    except transient_errors() as exc:
        close_bar()
        # Earlier batches are committed; the failed one stays marked pending and is ingested again by the next run.
        print(
            f"error: embedding with the {runtime.settings.embedding.backend} backend failed: {exc}\n"
            f"{committed[0]} files committed before it stay indexed; fix the backend and run ingest again to continue",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        close_bar()
        # The batch being written stays marked pending; the next run drops its partial chunks and ingests it again.
        print(f"interrupted: {committed[0]} files done, run again to continue", file=sys.stderr)
        return 130
    finally:
        close_bar()
        ingestor.close()
    for source in report.repaired:
        print(f"repaired: {source} (left half-written by an interrupted run)")
    for source in report.restored:
        print(f"restored: {source} (its chunks were missing from the store)")
    for source, reason in report.skipped:
        print(f"skipped: {source}: {reason}")
    for source in report.removed:
        print(f"removed: {source}")
    for path, name in report.renamed:
        print(f"named {name}: another folder in this index already has a file {path}")
    for root, files in report.gone_roots:
        forget = f"python -m app forget {shlex.quote(root)}"
        print(f"note: the index still holds {files} file(s) from {root}, which no longer exists; `{forget}` removes them")
    print(report.summary())
    return 0


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def cmd_serve_store(args: argparse.Namespace) -> int:
    import signal

    from integrations.adapters.milvus_store import StoreServer

    settings = _settings(args)
    if settings.storage.uri:
        raise ValueError(
            f"storage.uri is set to {settings.storage.uri!r}: serve-store serves the embedded index in storage.index_dir; "
            "unset DOCSRAG_STORAGE__URI (or storage.uri in the profile) for this command"
        )
    server = StoreServer(settings.storage.lite_file().resolve(), host=args.host, port=args.port)
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop closes the index as cleanly as Ctrl-C
    server.start()
    try:
        print(f"serving {server.db_file} on {server.uri}")
        print("point every docsrag process (page, ingest, ask) at it with:")
        print(f"  export DOCSRAG_STORAGE__URI={server.uri}")
        print(f"  export DOCSRAG_STORAGE__INDEX_DIR={settings.storage.index_dir.resolve()}")
        print("Ctrl-C stops the server.", flush=True)
        code = server.wait()
        print(f"error: the store server exited by itself with code {code} (its output is above)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping the store server…", file=sys.stderr)
        return 0
    finally:
        server.stop()


def cmd_ask(args: argparse.Namespace) -> int:
    from app.answers import render_text, to_answer
    from app.composition import build_query_engine
    from app.query_engine import EmptyIndexQueryEngine
    from app.ui.library import documents
    from app.ui.links import SourceLinks

    settings = _settings(args)
    engine = build_query_engine(settings, sources=args.source or None)
    if isinstance(engine, EmptyIndexQueryEngine):  # the engine's one line is an error here
        print(f"error: {engine.message}", file=sys.stderr)
        return 1
    response = engine.query(args.question)
    answer = to_answer(args.question, response)
    links = SourceLinks(settings.sources.base_url, documents(settings))
    for source in answer.sources:
        source.url = links.deep_link(source)
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(render_text(answer), end="")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from app.composition import empty_index_message, open_runtime
    from app.evaluation import evaluate, format_metrics, load_questions, select, summarize, write_results

    questions = select([q for path in args.questions for q in load_questions(path)], args.split, args.limit)
    if not questions:
        raise ValueError(f"no questions in {', '.join(map(str, args.questions))} for split {args.split!r}")
    settings = _settings(args)
    if message := empty_index_message(settings):
        raise ValueError(message)
    runtime = open_runtime(settings, reader=True)
    run = evaluate(runtime, questions, k=args.k, retrieval_only=args.retrieval_only, show_progress=not args.quiet)
    write_results(run.records, args.out)
    metrics = summarize(questions, run.records, run.refused, args.k)
    print(json.dumps(metrics) if args.json else format_metrics(metrics))
    print(f"results: {args.out}", file=sys.stderr)
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    from app.composition import open_meter
    from integrations.usage_meter import usd

    settings = _settings(args)
    meter = open_meter(settings)
    try:
        meter.settle_orphans()
        rows = meter.by_day_and_model()
        print(f"{'day':<10}  {'model':<44} {'requests':>8} {'tokens in':>10} {'tokens out':>10} {'spend $':>9}")
        for day, model, requests, tokens_in, tokens_out, cost in rows:
            print(f"{day:<10}  {model[:44]:<44} {requests:>8} {tokens_in:>10} {tokens_out:>10} {cost:>9.4f}")
        spent, cap = meter.month_spend(), settings.budget.monthly_cap_usd
        share = f" ({spent / cap:.0%})" if cap else ""
        print(f"this month: ${spent:.4f} of {usd(cap)} cap{share}, state: {meter.state()}")
        if (running := meter.in_flight())[0]:
            print(f"in flight: {usd(running[1])} reserved by {running[0]} call(s) running now")
        if (stopped := meter.interrupted())[0]:
            print(f"interrupted: {stopped[0]} call(s) whose process stopped mid-call, counted at their worst case ({usd(stopped[1])})")
        for alert in meter.active_alerts():
            print(f"active alert: {alert}")
    finally:
        meter.close()
    return 0


def cmd_sources(args: argparse.Namespace) -> int:
    from app.manifest import Manifest, state_file

    settings = _settings(args)
    if not state_file(settings.storage.index_dir).is_file():
        print(f"no index in {settings.storage.index_dir}")
        return 0
    manifest = Manifest(state_file(settings.storage.index_dir), read_only=True)
    try:
        roots = manifest.roots()
    finally:
        manifest.close()
    for root, files, chunks in roots:
        print(f"{files:>7} files {chunks:>8} chunks  {root}{'' if Path(root).is_dir() else '  (no longer exists)'}")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from app.composition import build_ingestor, open_runtime
    from app.ingestion import root_name

    runtime = open_runtime(_settings(args))
    ingestor = build_ingestor(runtime)
    try:
        root = next((r for r, _, _ in ingestor.state.manifest.roots() if r in (args.root, root_name(Path(args.root).resolve()))), None)
        if root is None:
            raise ValueError(f"the index holds no files from {args.root!r}: give a folder as `python -m app sources` lists it")
        records = ingestor.forget_root(root)
    finally:
        ingestor.close()
        runtime.close()
    print(f"removed {len(records)} file(s) ({sum(r.chunks for r in records)} chunks) from {root}")
    return 0


def cmd_gaps(args: argparse.Namespace) -> int:
    from app.gaps import documentation_gaps, format_gaps, gaps_csv
    from app.question_log import QuestionLog

    if args.since is not None and args.since <= 0:
        raise ValueError(f"--since {args.since:g}: give a number of days above 0")
    settings = _settings(args)
    log = QuestionLog.beside(settings.storage.index_dir)
    try:
        gaps = documentation_gaps(log.questions(), args.since)
    finally:
        log.close()
    if args.json:
        print(json.dumps([gap.to_dict() for gap in gaps], indent=2, ensure_ascii=False))
    elif args.csv:
        sys.stdout.write(gaps_csv(gaps))
    else:
        if not settings.feedback.log_questions:
            print("note: feedback.log_questions is off: new questions are not logged", file=sys.stderr)
        sys.stdout.write(format_gaps(gaps))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from app.doctor import format_table, run_checks

    settings = _settings(args)
    print(f"profile {settings.profile} ({settings.profile_reason})")
    checks = run_checks(settings)
    print(format_table(checks))
    failed = [c.name for c in checks if c.failed]
    print(f"{len(checks) - len(failed)} of {len(checks)} checks passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def question_text(text: str) -> str:
    """A question argument: refused by argparse (usage and exit 2) before any work when it is empty."""
    if not text.strip():
        raise argparse.ArgumentTypeError('the question is empty: write it in quotes, e.g. ask "How do I ingest a folder?"')
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="docsrag: cited answers from your technical documentation")
    parser.add_argument("--profile", help="settings profile under settings/ (default: $DOCSRAG_PROFILE or local)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        subparser = sub.add_parser(name, help=help)
        subparser.add_argument("--index", type=Path, help="index directory (default: storage.index_dir)")
        subparser.set_defaults(func=func)
        return subparser

    command("config", cmd_config, "print the effective settings (secrets masked)")

    ingest = command("ingest", cmd_ingest, "ingest a folder (or file) incrementally")
    ingest.add_argument("path", type=Path)
    ingest.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ingest.add_argument(
        "--engine",
        choices=["default", "ray"],
        default="default",
        help="default: one process; ray: parse and embed on Ray workers (needs requirements-scale.txt; pays off for large ingests)",
    )
    ingest.add_argument(
        "--address", help="with --engine ray: an existing Ray cluster (ray://host:10001 or auto); default: start a local Ray"
    )

    serve = command("serve-store", cmd_serve_store, "serve the index over a local Milvus server so several processes can share it")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (loopback only; default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=19530, help="TCP port (default 19530; 0 picks a free one)")

    ask = command("ask", cmd_ask, "answer a question with cited sources")
    ask.add_argument("question", type=question_text)
    ask.add_argument("--json", action="store_true", help="print the answer and sources as JSON")
    ask.add_argument("--source", action="append", help="restrict retrieval to this file (repeatable)")

    ev = command("eval", cmd_eval, "run a question set; write per-question results and print retrieval/answer metrics")
    ev.add_argument(
        "questions",
        type=Path,
        nargs="+",
        help="JSONL (id, question[, reference_contexts, answerable, must_mention]) or a LlamaIndex rag_dataset.json; several run as one",
    )
    ev.add_argument("--out", type=Path, required=True, help="results JSONL, one object per question")
    ev.add_argument("--k", type=int, default=10, help="chunks retrieved per question for the metrics (default 10)")
    ev.add_argument("--retrieval-only", action="store_true", help="skip the answer step (answer left empty)")
    ev.add_argument("--limit", type=int, help="only the first N questions (after --split)")
    ev.add_argument("--split", choices=["dev", "test", "all"], default="all", help="fixed half of the questions by id hash (default all)")
    ev.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    command("usage", cmd_usage, "API usage and estimated spend by day and model (this month)")
    command("sources", cmd_sources, "list the folders the index holds files from (and whether they still exist)")
    forget = command("forget", cmd_forget, "remove every file the index holds from one folder (as `sources` lists it)")
    forget.add_argument("root", help="the folder, as `sources` lists it")
    gaps = command(
        "gaps", cmd_gaps, "documentation gaps: refused, weakly answered and 👎-rated questions grouped by topic, with missing names"
    )
    gaps.add_argument("--since", type=float, metavar="DAYS", help="only questions asked in the last DAYS days")
    form = gaps.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print the gaps as JSON")
    form.add_argument("--csv", action="store_true", help="print the gaps as CSV (one row per topic)")
    command("doctor", cmd_doctor, "check the active profile end to end: token, models, Ollama, index (exit 1 on failure)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from app.composition import quiet_noisy_loggers

    quiet_noisy_loggers()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        if (refused := _refused_write(args, exc)) is not None:
            return refused
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if (refused := _refused_write(args, exc, lost_store=True)) is not None:
            return refused
        raise


def _one_line(exc: Exception) -> str:
    """A settings error as the messages of its fields (each names its setting), not pydantic's multi-line report."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())
    return str(exc)


def _refused_write(args: argparse.Namespace, exc: BaseException, lost_store: bool = False) -> int | None:
    """A write the disk refused (full, read-only) or, with ``lost_store``, a store server gone mid-command, as one line
    with the fix; None for other failures."""
    from app.storage_errors import lost_store_message, storage_message

    try:
        storage = _settings(args).storage
        where, uri = str(storage.index_dir), storage.milvus_uri()
    except Exception:  # noqa: BLE001 - the settings loaded once already; this only names the folder
        where, uri = "the index folder", "storage.uri"
    message = storage_message(exc, where) or (lost_store_message(exc, uri) if lost_store else None)
    if message is None:
        return None
    print(f"error: {message}", file=sys.stderr)
    return 1
