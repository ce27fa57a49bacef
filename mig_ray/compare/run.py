"""`mig-ray compare` as a function: read the pool once, build this run's graph, run each method,
measure every order the same way, write compare.json, one manifest per method and the samples the
report's browser shows."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mig_ray import __version__
from mig_ray.compare import metrics as M
from mig_ray.compare.longest import response_chars
from mig_ray.compare.methods import DEFAULT, METHODS, about, method_options
from mig_ray.compare.pool import ComparePool, unit_rows
from mig_ray.core.limits import any_fits, take_in_order
from mig_ray.core.vectors import propagate, sample_matrix
from mig_ray.errors import PoolError
from mig_ray.pools.annotated import AnnotatedPool, load_valid_tags
from mig_ray.pools.rejects import Rejects
from mig_ray.pools.write import write_jsonl
from mig_ray.report.browse import BROWSER_ROWS, first_user_turn
from mig_ray.selection.config import SelectConfig
from mig_ray.selection.limits import account, has_limits, local_limits
from mig_ray.selection.run import Timer, build_graph, label_vectors, log, phi_of, read_pool

EMBED_CHARS = 2000  # --embed-samples: user turns joined and cut to this many characters
TEXT_BLOCK = 100_000  # conversations read at a time for the methods that need text
COMPARE_FILE = "compare.json"
SAMPLES_FILE = "samples.jsonl"
LIMITS_NOTE = ("every method's ranking is walked in its order and a sample taken when its group is "
               "below its cap and its cost fits what is left of the budget, until n are taken (floors "
               "first: each floor group's samples in the method's order up to the floor); mig is the "
               "constrained greedy of select itself")
INFORMATION_NOTE = ("information is E(D) on this run's label graph: MIG's own objective, which `mig` "
                    "maximises greedily; it favours `mig` by construction")

Messages = Callable[[np.ndarray, list[str]], list[list[dict] | None]]  # (positions, their ids)
# ids -> (their vectors [N, d] and where from) or (None, why there are none): a job's tagger cache
CachedVectors = Callable[[list[str]], tuple[np.ndarray | None, str]]


@dataclass(frozen=True)
class CompareOptions:
    """What `compare` adds to the `select` options."""

    methods: tuple[str, ...] = DEFAULT
    seed: int = 0
    sample_embeddings: Path | None = None  # .npz with `ids` (str [N]) and `embeddings` (float [N, d])
    embeddings_field: str | None = None  # dotted path to a list of floats in each record
    embed_samples: bool = False  # embed the user turns with the graph's embedding model
    embed_with: str = "model"  # with embed_samples: "model" itself, or "static", the model distilled from it
    deita_threshold: float = 0.9
    extra: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # {method: {option: value}}

    def options(self) -> dict[str, dict[str, Any]]:
        """Every method's options with their defaults filled in (deita_threshold is deita's threshold
        unless method_options names one)."""
        given = {name: dict(v) for name, v in self.method_options.items()}
        given.setdefault("deita", {}).setdefault("threshold", self.deita_threshold)
        return method_options(given)


def pool_records(pool: AnnotatedPool) -> Callable[[np.ndarray], list[dict]]:
    """The raw records at positions of a pool read by `read_annotated` (JSONL: one seek each)."""

    def get(positions: np.ndarray) -> list[dict]:
        if pool.format == "jsonl":
            out = []
            with open(pool.path, "rb") as f:
                for p in positions:
                    f.seek(int(pool.locations[p]))
                    out.append(orjson.loads(f.readline()))
            return out
        import pyarrow.parquet as pq

        return pq.read_table(pool.path).take(pool.locations[np.asarray(positions)]).to_pylist()

    return get


def messages_of_records(records: Callable[[np.ndarray], list[dict]]) -> Messages:
    from mig_ray.errors import BadRecord
    from mig_ray.pools.layouts import normalise

    def get(positions: np.ndarray, ids: list[str]) -> list[list[dict] | None]:
        out = []
        for rec in records(positions):
            try:
                out.append(normalise(rec)[1])
            except BadRecord:
                out.append(None)
        return out

    return get


def _dotted(rec: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(rec, dict) or part not in rec:
            return None
        rec = rec[part]
    return rec


def sample_embeddings(opts: CompareOptions, cfg: SelectConfig, ids: list[str],
                      records: Callable[[np.ndarray], list[dict]] | None,
                      messages: Messages | None, cached: CachedVectors | None = None,
                      ) -> tuple[np.ndarray | None, str | None, str | None, str | None]:
    """(unit embeddings [N, d], where from, or why there are none, why the tagger cache was not used).
    A file or field the user named comes first; then vectors a job's tagger already cached, so the
    model does not run again; then --embed-samples. A cache that lacks them (written before they
    were stored) says so, and the existing behaviour follows."""
    n = len(ids)
    if opts.sample_embeddings is not None:
        path = opts.sample_embeddings
        try:
            with np.load(path, allow_pickle=False) as z:
                if "ids" not in z.files or "embeddings" not in z.files:
                    raise PoolError(f"{path}: needs arrays 'ids' and 'embeddings' (has {sorted(z.files)})")
                file_ids = [str(s) for s in z["ids"]]
                emb = np.asarray(z["embeddings"], dtype=np.float32)
        except (OSError, ValueError) as e:
            raise PoolError(f"{path}: cannot read sample embeddings ({e})") from e
        if emb.ndim != 2 or emb.shape[0] != len(file_ids):
            raise PoolError(f"{path}: embeddings shape {emb.shape} does not match {len(file_ids)} ids")
        index = {s: i for i, s in enumerate(file_ids)}
        missing = [s for s in ids if s not in index]
        if missing:
            raise PoolError(f"{path}: {len(missing)} selectable ids have no embedding, e.g. {missing[0]!r}")
        return unit_rows(emb[[index[s] for s in ids]]), f"file {path}", None, None
    if opts.embeddings_field is not None and records is not None:
        rows = records(np.arange(n))
        vals = [_dotted(r, opts.embeddings_field) for r in rows]
        bad = next((i for i, v in enumerate(vals) if not isinstance(v, list) or not v), None)
        if bad is not None:
            raise PoolError(f"{cfg.pool}: record {ids[bad]!r}: field {opts.embeddings_field!r} must be a "
                            "non-empty list of numbers")
        try:
            emb = np.asarray(vals, dtype=np.float32).reshape(n, -1) if n else np.zeros((0, 0), np.float32)
        except (ValueError, TypeError) as e:  # lists of other lengths, or of things not numbers
            raise PoolError(f"{cfg.pool}: field {opts.embeddings_field!r}: not one length of numbers "
                            f"({e})") from e
        if emb.shape[1:] != (len(vals[0]) if n else 0,):  # nested lists: [[1, 2], [3, 4]] per record
            raise PoolError(f"{cfg.pool}: field {opts.embeddings_field!r}: each must be a flat list of "
                            "numbers")
        return unit_rows(emb), f"field {opts.embeddings_field}", None, None
    no_cache = None
    if cached is not None:
        emb, said = cached(ids)
        if emb is not None:
            return unit_rows(emb), said, None, None
        no_cache = said
        log(f"compare: {said}")
    if opts.embed_samples and messages is not None:
        from mig_ray.embeddings import embed_labels

        texts = ["\n".join(m["content"] for m in (msgs or []) if m.get("role") == "user")[:EMBED_CHARS]
                 for msgs in messages(np.arange(n), ids)]
        model = Path(cfg.embedding_model).name or cfg.embedding_model
        if opts.embed_with == "static":
            return unit_rows(static_embeddings(texts, cfg.embedding_model)), \
                f"static model distilled from {model} on user turns", None, no_cache
        emb = embed_labels(texts, cfg.embedding_model, batch_size=64, progress=cfg.progress)
        return unit_rows(emb), f"model {model} on user turns", None, no_cache
    why = "no sample embeddings: give --sample-embeddings FILE.npz, --sample-embeddings-field FIELD or " \
          "--embed-samples"
    return None, None, f"{why} ({no_cache})" if no_cache else why, no_cache


def static_embeddings(texts: list[str], model: str, batch: int = 4096) -> np.ndarray:
    """The texts embedded with the static model distilled from `model` (the static tagger's, with its
    default settings: distilled once and cached under the user cache, then thousands of texts a
    second on one core where the sentence transformer does tens)."""
    from mig_ray.annotate.static_tagger import StaticEncoder, StaticTaggerConfig

    encode = StaticEncoder(StaticTaggerConfig(model=model))
    parts = [encode(texts[i:i + batch]) for i in range(0, len(texts), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def _mig_from_manifest(manifest: Path, ids: list[str]) -> Callable[[int], np.ndarray]:
    index = {s: i for i, s in enumerate(ids)}

    def order(k: int) -> np.ndarray:
        rows = [orjson.loads(line)["id"] for line in manifest.read_bytes().splitlines() if line.strip()]
        return np.array([index[r] for r in rows[:k]], dtype=np.int64)

    return order


def run_compare(cfg: SelectConfig, out_dir: Path, opts: CompareOptions,
                messages: Messages | None = None, mig_manifest: Path | None = None,
                cached_vectors: CachedVectors | None = None) -> dict[str, Any]:
    """Compare the methods on cfg's pool and graph; writes OUT_DIR/compare.json,
    OUT_DIR/<method>.manifest.jsonl and OUT_DIR/samples.jsonl; returns what compare.json holds.

    `messages` gives the conversations at positions (default: read from cfg.pool's records);
    `mig_manifest` is a `select` manifest over the same pool whose order `mig` takes (a job's select
    stage). With shards > 1 or a Ray address and no manifest, `select` runs on Ray for `mig`.
    `cached_vectors` gives sample vectors already computed (a job's embedding tagger cache).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    phi = phi_of(cfg)
    valid = load_valid_tags(cfg.valid_tags) if cfg.valid_tags else None
    timer = Timer()
    with label_vectors(cfg, valid) as lv:
        with timer.stage("read"), Rejects(out_dir / "rejects.jsonl", cfg.strict) as rejects:
            apool = read_pool(cfg, rejects, valid)
        labels, codes = apool.node_labels()
        with timer.stage("embed_labels"):
            graph = build_graph(cfg, labels, lv)
    with timer.stage("vectors"):
        e = sample_matrix(apool.label_indptr, codes, apool.scores, graph.n_labels, cfg.norm)
        vectors = propagate(e, graph.propagation(cfg.propagation, cfg.prop_weight))
    # e's rows as distinct graph labels with the score: what coverage and instag count
    e_lab = sample_matrix(apool.label_indptr, codes, apool.scores, graph.n_labels, False) if cfg.norm else e
    records = pool_records(apool)
    messages = messages or messages_of_records(records)
    k = cfg.k(len(apool))
    limits, group_names = None, None
    if has_limits(cfg):
        rows, limits, group_names = local_limits(cfg, apool.groups, apool.costs, cfg.n, len(apool))
    methods = list(opts.methods)
    options = opts.options()
    needs = set().union(*(METHODS[m].NEEDS for m in methods))
    needs_emb = "embeddings" in needs
    t = time.perf_counter()
    asked = needs_emb or opts.sample_embeddings or opts.embeddings_field or opts.embed_samples
    emb, emb_source, no_emb, not_cached = (
        sample_embeddings(opts, cfg, apool.ids, records, messages, cached_vectors) if asked
        else (None, None, "no sample embeddings asked for", None))
    emb_seconds = time.perf_counter() - t
    pool = ComparePool(apool.ids, apool.scores, e_lab, vectors, graph, phi, cfg.gain, emb, emb_source,
                       limits=limits, groups=None if limits is None or cfg.groups is None else rows.groups,
                       group_names=group_names if cfg.groups is not None else None,
                       costs=None if limits is None or apool.costs is None else rows.costs)
    text_seconds = 0.0
    if "text" in needs:
        t = time.perf_counter()
        pool.response_chars = response_lengths(messages, apool.ids)
        text_seconds = time.perf_counter() - t
    mig_from, mig_seconds = "the lazy greedy of select, in process", 0.0
    if "mig" in methods and mig_manifest is None and (cfg.shards > 1 or cfg.ray_address):
        from mig_ray.selection.run import run_select

        t = time.perf_counter()
        mig_manifest = Path(run_select(cfg.model_copy(update={"out": out_dir / "mig" / "selected.jsonl"}))
                            ["outputs"]["manifest"])
        mig_from, mig_seconds = f"select on Ray ({cfg.shards} shards), its seconds included", \
            time.perf_counter() - t
    elif mig_manifest is not None:
        mig_from = f"the manifest {mig_manifest} (seconds: reading it only)"
    if mig_manifest is not None:
        pool.mig_order = _mig_from_manifest(Path(mig_manifest), apool.ids)

    orders: dict[str, np.ndarray] = {}
    result: dict[str, Any] = {"methods": {}, "skipped": {}, "about": {m: about(m) for m in methods}}
    for name in methods:
        mod = METHODS[name]
        if "embeddings" in mod.NEEDS and emb is None:
            result["skipped"][name] = no_emb
            log(f"compare: {name} skipped: {no_emb}")
            continue
        t = time.perf_counter()
        order = under_limits(lambda want, mod=mod, name=name: mod.select(pool, want, opts.seed,
                                                                         **options[name]), pool, k)
        seconds = time.perf_counter() - t + (mig_seconds if name == "mig" else 0.0)
        orders[name] = np.asarray(order, dtype=np.int64)
        log(f"compare: {name} picked {len(order):,} in {seconds:.2f} s")
        path = out_dir / f"{name}.manifest.jsonl"
        with timer.stage(f"manifest_{name}"):
            keys, gains = M.keys_and_gains(vectors, orders[name], phi, cfg.gain)
            names = graph.labels
            ind, ptr = e_lab.indices, e_lab.indptr
            write_jsonl(path, ({"rank": r, "id": apool.ids[i], "score": float(apool.scores[i]),
                                "labels": [names[j] for j in ind[ptr[i]:ptr[i + 1]]],
                                "greedy_key": float(key), "gain": float(g)}
                               for r, (i, key, g) in enumerate(zip(orders[name].tolist(), keys.tolist(),
                                                                   gains.tolist(), strict=True), 1)))
        with timer.stage(f"metrics_{name}"):
            result["methods"][name] = {"metrics": M.metrics(pool, orders[name], opts.seed),
                                       "seconds": seconds, "manifest": str(path),
                                       "curve": M.curve(pool, orders[name]), **about(name),
                                       "options": options[name]}
            if limits is not None:
                chosen = rows.take(orders[name])
                result["methods"][name]["constraints"] = account(group_names, limits, rows.groups, rows.costs,
                                                                 chosen.groups, chosen.costs, {})
    with timer.stage("samples"):
        _write_samples(out_dir / SAMPLES_FILE, orders, apool.ids, messages)
    result.update({
        "mig_ray_version": __version__,
        "command": "compare",
        "pool": str(cfg.pool),
        "k": k,
        "seed": opts.seed,
        "counts": {**apool.counts, "selected": k, "requested": cfg.n},
        "graph": vars(graph.stats()),
        "overlap": M.overlap(orders),
        "text_seconds": text_seconds,
        "sample_embeddings": {"source": emb_source, "seconds": emb_seconds,
                              "dimensions": None if emb is None else int(emb.shape[1]),
                              **({"tagger_cache_unused": not_cached} if not_cached else {})},
        "deita_threshold": options["deita"]["threshold"],
        "mig_order_from": mig_from,
        **({"constraints": {"groups": cfg.groups, "quotas": cfg.quotas, "floors": cfg.floors,
                            "budget_tokens": cfg.budget_tokens,
                            "cost": cfg.cost if cfg.budget_tokens is not None else None,
                            "applied": LIMITS_NOTE}} if limits is not None else {}),
        "browser_rows": BROWSER_ROWS,
        "notes": {"information": INFORMATION_NOTE,
                  "gain": "manifest gain: the increase of E(D) when the sample joins, in that method's order",
                  "greedy_key": "manifest greedy_key: the key MIG's greedy ranks by (gain mode "
                                f"{cfg.gain!r}: " + ("phi'(x) . e_i, the gradient" if cfg.gain == "gradient"
                                                     else "E(D + i) - E(D), as gain") +
                                ") of the sample after the ones before it in that method's order",
                  "vendi": "Vendi score (cosine kernel); vendi_on names the vectors and the subsample"},
        "config": json.loads(cfg.model_dump_json()),
        "seconds_total": time.perf_counter() - t_all,
        "seconds_by_step": timer.seconds,
        **opts.extra,
    })
    tmp = out_dir / (COMPARE_FILE + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out_dir / COMPARE_FILE)
    return result


def under_limits(select: Callable[[int], np.ndarray], pool: ComparePool, k: int) -> np.ndarray:
    """A method's order under the pool's quotas, floors and budget (one filter for every method:
    core/limits.take_in_order walks the method's ranking). The method ranks `want` samples, k at
    first; while the walk ends short of k and a longer ranking could change what it takes (the
    method had more to give and some sample beyond the ranking still fits, or a floor is not met),
    it ranks twice as many. Without limits: the method's order as it is."""
    if pool.limits is None:
        return np.asarray(select(k), dtype=np.int64)
    n, rows = len(pool), pool.rows()
    want = min(k, n)
    while True:
        order = np.asarray(select(want), dtype=np.int64)
        taken, usage, short = take_in_order(order, rows, pool.limits, k)
        if len(order) < want or want >= n:
            return taken
        left = np.ones(n, dtype=bool)
        left[order] = False
        if not short and (len(taken) >= k or not any_fits(rows, pool.limits, usage, left)):
            return taken
        want = min(n, 2 * want)


def response_lengths(messages: Messages, ids: list[str], block: int = TEXT_BLOCK) -> np.ndarray:
    """Characters of each sample's assistant turns, reading TEXT_BLOCK conversations at a time."""
    out = np.zeros(len(ids), dtype=np.int64)
    for lo in range(0, len(ids), block):
        pos = np.arange(lo, min(lo + block, len(ids)))
        out[lo:lo + len(pos)] = [response_chars(m) for m in messages(pos, ids[lo:lo + len(pos)])]
    return out


def _write_samples(path: Path, orders: dict[str, np.ndarray], ids: list[str], messages: Messages) -> None:
    """The first user turn of every sample some method ranks within BROWSER_ROWS, once each."""
    shown = np.unique(np.concatenate([o[:BROWSER_ROWS] for o in orders.values()])) if orders \
        else np.zeros(0, dtype=np.int64)
    turns = messages(shown, [ids[i] for i in shown.tolist()])
    write_jsonl(path, ({"id": ids[i], "first_turn": first_user_turn(m)} for i, m in
                       zip(shown.tolist(), turns, strict=True)))


def table(result: dict) -> str:
    """The metric table printed at the end of `mig-ray compare`."""
    cols = [("information", "information"), ("label_coverage", "label cov"), ("mass_coverage", "mass cov"),
            ("effective_labels", "eff labels"), ("mean_score", "mean score"), ("mean_labels", "labels/smp"),
            ("vendi", "vendi")]
    if any(m["metrics"].get("tokens") is not None for m in result["methods"].values()):
        cols.append(("tokens", "tokens"))
    head = f"{'method':<9}" + "".join(f"{h:>13}" for _, h in cols) + f"{'seconds':>10}"
    lines = [head]
    for name, m in result["methods"].items():
        v = m["metrics"]
        lines.append(f"{name:<9}" + "".join(f"{v[c]:>13.5g}" for c, _ in cols) + f"{m['seconds']:>10.2f}")
        if v.get("groups") is not None:
            lines.append(f"{'':<9}per group: " + ", ".join(f"{g} {c}" for g, c in v["groups"].items()))
    for name, why in result["skipped"].items():
        lines.append(f"{name:<9} skipped: {why}")
    first = next(iter(result["methods"].values()), None)
    if first is not None:
        lines.append(f"vendi on {first['metrics']['vendi_on']}")
    lines.append(result["notes"]["information"])
    return "\n".join(lines)
