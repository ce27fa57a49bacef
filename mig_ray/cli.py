"""The `mig-ray` command line: a thin shell over mig_ray.selection."""

from __future__ import annotations

import errno
import inspect
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from mig_ray.embeddings import DEFAULT_MODEL
from mig_ray.errors import PoolError

app = typer.Typer(
    help="MIG data selection for instruction tuning: pick the subset of a pool that carries the most "
    "information in a semantic label graph.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

EXIT_USAGE = 2


CONTROL = {c: f"\\x{c:02x}" for c in range(32)} | {10: "\\n", 13: "\\r", 9: "\\t", 127: "\\x7f"}


def error_line(msg: object) -> str:
    """`error: MSG` on one line: a newline or other control character in a name the user gave
    (a path, a field) is shown escaped, so the error stays one line a script can read."""
    return f"error: {str(msg).translate(CONTROL)}"


def _fail(msg: str) -> None:
    typer.echo(error_line(msg), err=True)
    raise typer.Exit(EXIT_USAGE)


def _print_summary(s: dict) -> None:
    c, sec = s["counts"], s["seconds"]
    typer.echo(
        f"selected {c['selected']} of {c['selectable']} selectable records "
        f"(read {c['read']}, rejected {c['rejected']}, no valid label {c['no_valid_label']})"
    )
    typer.echo(f"information: {s['information']['selected']:.6g} (gain {s['information']['gain']:.6g} "
               "over the empty set)")
    prev = s["information"].get("previous_selection")
    if prev is not None:
        typer.echo(f"previous selection ({prev['samples']} samples, {prev['manifest']}) on this graph: "
                   f"information {prev['selected']:.6g}")
    typer.echo("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in sec.items()))
    out = s["outputs"]
    typer.echo(f"output:   {out['selected']}\nmanifest: {out['manifest']}\nrejects:  {out['rejects']}\n"
               f"summary:  {out['summary']}")


def _flag(loc: tuple, flags: dict[str, str]) -> str:
    """The CLI flag a validation error's location names ('options' for the model as a whole)."""
    name = ".".join(map(str, loc))
    return flags.get(name, name.replace("_", "-")) or "options"


def _run(**kwargs) -> dict:
    from mig_ray.core.options import option_fields
    from mig_ray.selection.config import SelectConfig
    from mig_ray.selection.run import run_select

    flags = option_fields()
    try:
        cfg = SelectConfig(**cli_options(kwargs))
    except ValidationError as e:
        _fail("; ".join(f"--{_flag(err['loc'], flags)}: {err['msg'].removeprefix('Value error, ')}"
                        for err in e.errors()))
    try:
        summary = run_select(cfg)
    except PoolError as e:
        _fail(str(e))
    _print_summary(summary)
    return summary


def select(
    pool: Annotated[Path, typer.Argument(help="Annotated pool: .jsonl (one record per line) or .parquet.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Selected records, in selection order "
                                      "(.jsonl or .parquet). Beside it: <stem>.manifest.jsonl, "
                                      "<stem>.rejects.jsonl, <stem>.summary.json.")],
    valid_tags: Annotated[Path | None, typer.Option(help="Keep only these labels, matched exactly: a JSON "
                                                     "list (or object: its keys) or one tag per line "
                                                     "(e.g. the released Tulu3 list).")] = None,
    embedding_model: Annotated[str, typer.Option(help="Local sentence-transformers folder for label "
                                                 "embeddings; the default is the bundled offline "
                                                 "all-MiniLM-L6-v2.")] = DEFAULT_MODEL,
    label_embeddings: Annotated[Path | None, typer.Option(help=".npz with `labels` (str [L]) and "
                                                          "`embeddings` (float [L,d]); skips the "
                                                          "model.")] = None,
    embedding_cache: Annotated[bool, typer.Option(help="With --valid-tags (up to 50,000 tags), the "
                                                  "whole sorted tag list is embedded once and kept on "
                                                  "disk; without, the pool's sorted label list (the 16 "
                                                  "most recently used lists are kept). A later run with "
                                                  "the same list, model and versions loads it (same "
                                                  "vectors, bit for bit).")] = True,
    embedding_cache_dir: Annotated[Path | None, typer.Option(help="Folder of that cache (default "
                                                             "~/.cache/mig_ray/label-embeddings or "
                                                             "under $XDG_CACHE_HOME).")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join ('auto' or an address); "
                                                    "default starts a local one (loopback, no dashboard) "
                                                    "when --shards > 1.")] = None,
    labels_field: Annotated[str | None, typer.Option(help="Dotted path to the label list (default "
                                                     "annotation.instag.content).")] = None,
    score_field: Annotated[str | None, typer.Option(help="Dotted path to a numeric score (default: "
                                                    "mean over turns of annotation.deita quality x "
                                                    "complexity).")] = None,
    id_field: Annotated[str | None, typer.Option(help="Dotted path to the record id (default _id, then "
                                                 "id, else a content hash).")] = None,
    strict: Annotated[bool, typer.Option(help="Stop at the first bad record (exit 2) instead of "
                                         "quarantining it.")] = False,
    progress: Annotated[bool, typer.Option(help="Progress bars on stderr.")] = True,
    previous_manifest: Annotated[Path | None, typer.Option(help="Manifest of an earlier selection (e.g. "
                                                           "yesterday's <stem>.manifest.jsonl): its "
                                                           "information on this run's graph goes into "
                                                           "the summary beside this one's.")] = None,
    force: Annotated[bool, typer.Option(help="Replace the outputs of a job (mig-ray run) found at --out "
                                        "(its selected.* and manifest have the same names).")] = False,
    n: Annotated[int | None, typer.Option("-n", "--n", help="How many samples to select (K); optional "
                                          "with --budget-tokens.")] = None,
    **options,
) -> None:
    """Select the N most informative samples of an annotated POOL (MIG greedy, exact)."""
    _run(pool=pool, n=n, out=out, valid_tags=valid_tags, embedding_model=embedding_model,
         label_embeddings=label_embeddings, embedding_cache=embedding_cache,
         embedding_cache_dir=embedding_cache_dir, ray_address=ray_address, labels_field=labels_field,
         score_field=score_field, id_field=id_field, strict=strict, progress=progress,
         previous_manifest=previous_manifest, force=force, **options)


def option_parameters() -> list[inspect.Parameter]:
    """One typer option per selection option (mig_ray.core.options): its flag, default, bounds in
    the help and choices all come from the model, so the CLI cannot drift from the job file."""
    from mig_ray.core.options import DICT_OPTIONS, SelectionOptions, option_fields

    params = []
    for name, flag in option_fields().items():
        f = SelectionOptions.model_fields[name]
        decls = () if flag == name.replace("_", "-") else (f"--{flag}",)
        bounds = ", ".join(f"{op} {getattr(m, attr)}" for m in f.metadata for attr, op in _BOUNDS
                           if hasattr(m, attr))
        help_text = f"{f.description} [{bounds}]" if bounds else f.description
        annotation, default, extra = f.annotation, f.default, {}
        if name in DICT_OPTIONS:  # a repeatable NAME=VALUE flag; cli_options makes it the dict
            annotation, default, extra = list[str] | None, None, {"metavar": "GROUP=CAP"}
        params.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default,
            annotation=Annotated[annotation, typer.Option(*decls, help=help_text, **extra)]))
    return params


def cli_options(kwargs: dict) -> dict:
    """The CLI's values as the model's: each repeatable NAME=VALUE flag as a dict."""
    from mig_ray.core.options import DICT_OPTIONS, option_fields, parse_pairs

    flags = option_fields()
    out = dict(kwargs)
    for name in DICT_OPTIONS:
        if name in out:
            try:
                out[name] = parse_pairs(f"--{flags[name]}", out[name])
            except ValueError as e:
                _fail(str(e))
    return out


_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def _with_options(fn, before: str) -> inspect.Signature:
    """fn's own parameters with the selection options inserted before the parameter `before`."""
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
           for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "options"]
    at = [p.name for p in own].index(before)
    return inspect.Signature(own[:at] + option_parameters() + own[at:])


select.__signature__ = _with_options(select, "ray_address")
app.command()(select)


COMPARE_OWN = ("out", "previous_manifest", "force")  # select options compare does not take


def compare(pool: Path, n: int | None, out_dir: Path, methods: str | None, seed: int,
            sample_embeddings: Path | None, sample_embeddings_field: str | None, embed_samples: bool,
            embed_with: str, deita_threshold: float, method_option: list[str] | None = None,
            **select_options) -> None:
    """Run MIG and the baselines (see --methods) on the same selectable records of POOL; measure each the
    same way; write OUTDIR/compare.json, OUTDIR/<method>.manifest.jsonl and print a table. Takes every
    `select` option (graph, phi, gain, fields, valid tags, embeddings, quotas, floors, budget): every
    method's order is put under the same quotas, floors and budget."""
    from mig_ray.compare.methods import DEFAULT, parse_method_options, parse_methods
    from mig_ray.compare.run import CompareOptions, run_compare, table
    from mig_ray.selection.config import SelectConfig

    try:
        names = parse_methods(methods or DEFAULT)
    except ValueError as e:
        _fail(f"--methods: {e}")
    try:
        given = parse_method_options(method_option or [])
    except ValueError as e:
        _fail(f"--method-option: {e}")
    kw = cli_options(select_options)
    try:
        cfg = SelectConfig(pool=pool, n=n, out=out_dir / "mig" / "selected.jsonl", **kw)
    except ValidationError as e:
        _fail("; ".join(f"{'.'.join(map(str, err['loc'])) or 'options'}: {err['msg']}" for err in e.errors()))
    if not 0.0 < deita_threshold <= 1.0:
        _fail(f"--deita-threshold must be in (0, 1], got {deita_threshold}")
    if embed_with not in ("model", "static"):
        _fail(f"--embed-with must be model or static, got {embed_with!r}")
    opts = CompareOptions(tuple(names), seed, sample_embeddings, sample_embeddings_field, embed_samples,
                          embed_with, deita_threshold, method_options=given)
    try:
        opts.options()
    except ValueError as e:
        _fail(f"--method-option: {e}")
    try:
        result = run_compare(cfg, out_dir, opts)
    except PoolError as e:
        _fail(str(e))
    typer.echo(table(result))
    typer.echo(f"compare: {out_dir / 'compare.json'}")


def _compare_signature() -> inspect.Signature:
    """compare's own parameters, then every `select` option but OUT (the same definitions)."""
    kind = inspect.Parameter.KEYWORD_ONLY
    opt_path, opt_str = Path | None, str | None

    def par(name: str, default=inspect.Parameter.empty, annotation=None) -> inspect.Parameter:
        return inspect.Parameter(name, kind, default=default, annotation=annotation)

    own = [
        par("pool", annotation=Annotated[Path, typer.Argument(
            help="Annotated pool: .jsonl or .parquet (as for select).")]),
        par("n", default=None, annotation=Annotated[int | None, typer.Option(
            "-n", "--n", help="How many samples each method selects (K); optional with --budget-tokens "
                              "(then each method ranks the whole pool and the budget decides).")]),
        par("out_dir", annotation=Annotated[Path, typer.Option(
            "-o", "--out-dir", help="Where compare.json, <method>.manifest.jsonl and samples.jsonl go.")]),
        par("methods", default=None, annotation=Annotated[opt_str, typer.Option(
            help="Comma list of methods (default: every method mig_ray.compare.methods registers).")]),
        par("seed", default=0, annotation=Annotated[int, typer.Option(
            help="Seed of random, kcenter's first pick and the Vendi subsample.")]),
        par("sample_embeddings", default=None, annotation=Annotated[opt_path, typer.Option(
            help=".npz with `ids` (str [N]) and `embeddings` (float [N,d]): sample embeddings for deita, "
                 "kcenter and Vendi.")]),
        par("sample_embeddings_field", default=None, annotation=Annotated[opt_str, typer.Option(
            help="Or a dotted path to each record's embedding (a list of numbers).")]),
        par("embed_samples", default=False, annotation=Annotated[bool, typer.Option(
            help="Or embed the user turns with --embedding-model (slow on large pools; see --embed-with).")]),
        par("embed_with", default="model", annotation=Annotated[str, typer.Option(
            help="With --embed-samples: `model` (--embedding-model itself) or `static` (the static model "
                 "distilled from it, as tagger kind static: distilled once per machine and cached, about "
                 "20 s for MiniLM on 2 cores, then thousands of records/s on one core).")]),
        par("deita_threshold", default=0.9, annotation=Annotated[float, typer.Option(
            help="deita: take a sample only when its cosine similarity to every taken one is below this.")]),
        par("method_option", default=None, annotation=Annotated[list[str] | None, typer.Option(
            help="A method's option as NAME.KEY=VALUE, repeatable (e.g. qdit.alpha=0.7); each method's "
                 "options and defaults are in compare.json and the README.")]),
    ]
    params = inspect.signature(select, eval_str=True).parameters
    skip = ("pool", "n", *COMPARE_OWN)
    select_params = [p.replace(kind=kind) for name, p in params.items() if name not in skip]
    return inspect.Signature(own + select_params)


compare.__signature__ = _compare_signature()
app.command("compare")(compare)


@app.command()
def run(
    job_file: Annotated[Path, typer.Argument(help="The job file (YAML): input, annotate, graph, selection, "
                                             "output, ray. Every key, its default and bounds: "
                                             "docs/job-file.md; examples: jobs/.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output directory (overrides "
                                                "output.dir).")] = None,
    incremental: Annotated[bool, typer.Option(help="Nightly curation: the pool may have grown since the "
                                              "last run in this output directory; only new ids are "
                                              "annotated and diff.json says what changed.")] = False,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join ('auto' or an address; "
                                                    "overrides ray.address).")] = None,
    shards: Annotated[int | None, typer.Option(help="Shard actors for the selection (overrides "
                                               "selection.shards; where they run: ray.shard_actors, "
                                               "num_cpus / custom_resources / spread).")] = None,
    progress: Annotated[bool, typer.Option(help="Progress bars on stderr.")] = True,
    until: Annotated[str, typer.Option(help="Stop after this stage: ingest, tag, score, assemble, select "
                                       "or write (the default: everything).")] = "write",
    check: Annotated[bool, typer.Option(
        "--check", help="Only check the job: its keys and values, the annotators' options, that the "
        "inputs exist and that no output would overwrite an input; starts no Ray and writes "
        "nothing.")] = False,
) -> None:
    """Run a whole job: ingest, tag, score, label graph, selection, output. Resumable: re-running the
    same job skips completed stages and gives byte-identical outputs."""
    _run_job(job_file, output, incremental, ray_address, shards, progress, until, check)


def _run_job(job_file: Path, output: Path | None, incremental: bool, ray_address: str | None,
             shards: int | None, progress: bool, until: str, check: bool = False) -> None:
    from mig_ray.errors import JobError
    from mig_ray.job.jobfile import load_job
    from mig_ray.job.pipeline import run_job

    overrides: dict = {}
    if output is not None:
        overrides["output.dir"] = str(output)
    if incremental:
        overrides["incremental"] = True
    if ray_address is not None:
        overrides["ray.address"] = ray_address
    if shards is not None:
        overrides["selection.shards"] = shards
    if not progress:
        overrides["progress"] = False
    try:
        job = load_job(job_file, overrides)
        summary = run_job(job, str(job_file), until, check_only=check)
    except (JobError, PoolError) as e:
        _fail(str(e))
    if check:
        typer.echo(f"{job_file}: the job is valid; outputs would go to {job.output_dir()}")
        return
    if until != "write":
        typer.echo(f"stopped after stage {until}; outputs under {job.output_dir()}")
        return
    c = summary["counts"]
    typer.echo(f"selected {c['selected']} of {c['selectable']} selectable records "
               f"(records in {c['records_in']}, rejected {c['rejected']}, unselectable {c['unselectable']})")
    typer.echo(f"information: {summary['information']['selected']:.6g}")
    for key, path in summary["outputs"].items():
        typer.echo(f"{key + ':':<13} {path}")
    if "compare" in summary:
        typer.echo(f"{'compare:':<13} {summary['compare']['compare']}")


JobArg = Annotated[Path, typer.Argument(help="The job file (YAML); see jobs/.")]
OutOpt = Annotated[Path | None, typer.Option("-o", "--output", help="Output directory (overrides "
                                             "output.dir).")]


@app.command()
def dedup(job_file: JobArg, output: OutOpt = None,
          incremental: Annotated[bool, typer.Option(
              "--incremental", help="Also drop tonight's records that duplicate an earlier night's kept "
              "ones (their signatures are in the cache).")] = False,
          progress: Annotated[bool, typer.Option(help="Progress bars on stderr.")] = True) -> None:
    """Ingest the job's pool and remove duplicates and benchmark-contaminated records only (the job's
    `dedup:` and `decontaminate:`); the lists land in OUTDIR/dedup/."""
    _run_job(job_file, output, incremental, None, None, progress, "dedup")


@app.command()
def tag(job_file: JobArg, output: OutOpt = None,
        progress: Annotated[bool, typer.Option(help="Progress bars on stderr.")] = True) -> None:
    """Ingest and tag the job's pool only (annotate.tagger); results land in the annotation cache."""
    _run_job(job_file, output, False, None, None, progress, "tag")


@app.command()
def score(job_file: JobArg, output: OutOpt = None,
          progress: Annotated[bool, typer.Option(help="Progress bars on stderr.")] = True) -> None:
    """Ingest, tag and score the job's pool (annotate.scorer); results land in the annotation cache."""
    _run_job(job_file, output, False, None, None, progress, "score")


@app.command()
def report(
    path: Annotated[str, typer.Argument(help="A selection (OUT of `select`, or its <stem>.summary.json) or "
                                        "a job output directory (its select/ stage is found), on local "
                                        "disk.")],
    out_dir: Annotated[Path | None, typer.Option("-o", "--out-dir", help="Where to write report.html and "
                                                 "summary.json (default: OUTDIR/report for a job, "
                                                 "<stem>.report/ beside a selection).")] = None,
) -> None:
    """Write a self-contained HTML report of what a selection covers, and its numbers as JSON."""
    from mig_ray.errors import ReportError
    from mig_ray.report.build import write_report
    from mig_ray.storage import is_uri

    if is_uri(path):
        _fail(f"{path}: the report reads a local folder; copy the job's output down first "
              f"(e.g. aws s3 sync {path} ./out) and run mig-ray report ./out")
    try:
        paths = write_report(Path(path), out_dir)
    except ReportError as e:
        _fail(str(e))
    typer.echo(f"report:  {paths['html']}\nsummary: {paths['summary']}")


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("-o", "--out-dir", help="Where to write the demo's "
                                          "selection (not demo_out/: the demo job writes "
                                          "there).")] = Path("demo_select"),
    n: Annotated[int, typer.Option("-n", help="How many samples to select.")] = 30,
    progress: Annotated[bool, typer.Option(help="Progress bars on stderr.")] = True,
    force: Annotated[bool, typer.Option(help="Replace a job's outputs found in --out-dir.")] = False,
) -> None:
    """Select from the bundled demo pool (synthetic, see mig_ray/demo/README.md) with the defaults."""
    pool = Path(str(resources.files("mig_ray") / "demo" / "demo_pool.jsonl"))
    _run(pool=pool, n=n, out=out_dir / "selected.jsonl", progress=progress, force=force)


def main(argv: list[str] | None = None) -> None:
    """The `mig-ray` entry point: every error a user can cause ends in one line on stderr, exit 2."""
    import os

    from typer._click import exceptions as click  # typer vendors its own click

    from mig_ray.errors import JobError, ReportError
    from mig_ray.runtime.task_errors import task_cause

    try:
        try:
            code = app(args=argv, prog_name="mig-ray", standalone_mode=False)
        except Exception as e:  # a Ray task's own error, out of Ray's wrappers (its message is one line)
            cause = task_cause(e)
            if cause is e:
                raise
            raise cause from e
    except click.NoArgsIsHelpError as e:
        typer.echo(e.ctx.get_help() if e.ctx else str(e), err=True)
        sys.exit(EXIT_USAGE)
    except click.UsageError as e:
        cmd = f" {e.ctx.command_path.removeprefix('mig-ray').strip()}" if e.ctx else ""
        msg = e.format_message().replace("Value error, ", "").replace("\n", " ")
        typer.echo(error_line(f"{msg} (see mig-ray{cmd.rstrip()} --help)"), err=True)
        sys.exit(EXIT_USAGE)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    except (PoolError, JobError, ReportError) as e:  # raised outside a command body, or in a Ray task
        typer.echo(error_line(e), err=True)
        sys.exit(EXIT_USAGE)
    except OSError as e:  # a file the checks could not foresee (disk full, permissions changed)
        where = f"{e.filename}: " if e.filename else ""
        full = " (the disk is full: free space and run again)" if e.errno == errno.ENOSPC else ""
        typer.echo(error_line(f"{where}{e.strerror or e}{full}"), err=True)
        sys.exit(EXIT_USAGE)
    except Exception as e:
        if os.environ.get("MIG_RAY_DEBUG"):
            raise
        text = str(e).splitlines()[0][:300] if str(e) else ""
        typer.echo(f"error: internal error {type(e).__name__}: {text} (a bug: please report it; "
                   "MIG_RAY_DEBUG=1 shows the traceback)", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
