"""ShardActor: one block of the pool, read, vectorised and searched where it lives."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from mig_ray.core.certified import Commit
from mig_ray.core.greedy import Proposal, ShardGreedy
from mig_ray.core.limits import Limits, RowLimits
from mig_ray.core.objective import GainMode, Phi
from mig_ray.core.stats import score_hist
from mig_ray.core.vectors import propagate, sample_matrix
from mig_ray.pools.annotated import AnnotatedPool, Block, count_lines, parquet_rows, read_annotated
from mig_ray.pools.fields import FieldSpec
from mig_ray.pools.hashes import id_hashes
from mig_ray.pools.rejects import Rejects
from mig_ray.storage import location


class ShardLost(RuntimeError):
    """Raised by an actor that Ray restarted and that lost its block: the driver must restore it.

    Ray may deliver calls made while an actor restarts to the fresh instance; without this check
    such an instance would answer from empty state instead of failing loudly.
    """


class ShardActor:
    """Holds one block: its records' labels and scores, then its propagated CSR and lazy heap.

    Constructed with only where its block is, so that Ray can restart it; `restore` rebuilds the
    rest from the driver's plan and the committed history.
    """

    def __init__(self, path: str, block: Block, spec: FieldSpec, valid_tags: set[str] | None,
                 strict: bool) -> None:
        self.path, self.block, self.spec = location(path), block, spec
        self.valid, self.strict = valid_tags, strict
        self.pool: AnnotatedPool | None = None
        self.keep: np.ndarray | None = None
        self.engine: ShardGreedy | None = None
        self.carriers: np.ndarray | None = None

    def _loaded(self) -> AnnotatedPool:
        if self.pool is None:
            raise ShardLost("shard actor has no block loaded (restarted?)")
        return self.pool

    def _built(self) -> ShardGreedy:
        if self.engine is None:
            raise ShardLost("shard actor has no vectors built (restarted?)")
        return self.engine

    def count_lines(self) -> int:
        """Lines of this block, so that the driver can number every block's lines globally."""
        return count_lines(self.path, self.block)

    def load(self, first_line: int, check_ids: bool = True) -> dict:
        """Read the block; returns its size, counts, reject rows and, with `check_ids`, the id
        hashes and lines for the global duplicate check (a pool known to hold unique ids skips it)."""
        self.block = Block(self.block.start, self.block.end, first_line)
        rejects = Rejects(None, strict=self.strict)
        self.pool = read_annotated(self.path, self.spec, self.valid, rejects, block=self.block)
        self.keep = np.arange(len(self.pool))
        none = np.zeros(0, np.uint64)
        return {"n": len(self.pool), "counts": self.pool.counts, "rejects": rejects.rows,
                "hashes": id_hashes(self.pool.ids) if check_ids else none,
                "lines": self.pool.lines if check_ids else none}

    def ids(self, rows: np.ndarray) -> list[str]:
        """Ids of local rows (to confirm a hash collision is a real duplicate)."""
        p = self._loaded()
        return [p.ids[int(r)] for r in rows]

    def reload(self, first_line: int, drop_rows: np.ndarray) -> None:
        """After a restart before the vectors exist: reread the block and drop the same rows (the
        duplicate check is done: no hashes)."""
        self.load(first_line, check_ids=False)
        self.keep = np.setdiff1d(np.arange(len(self.pool)), drop_rows)

    def drop(self, rows: np.ndarray, reasons: list[str]) -> tuple[list[dict], dict[str, int]]:
        """Reject records found duplicated in an earlier block; returns their reject rows and the
        corrections to this block's counts (they were counted as accepted)."""
        import orjson

        p = self._loaded()
        out, fix = [], {"no_valid_label": 0, "labels_dropped_by_valid_tags": 0}
        where = "line" if p.format == "jsonl" else "row"
        for r, raw in zip(rows.tolist(), self.records(rows, local=True), strict=True):
            rec = orjson.loads(raw) if isinstance(raw, bytes) else raw
            kept = int(p.label_indptr[r + 1] - p.label_indptr[r])
            fix["no_valid_label"] -= kept == 0
            fix["labels_dropped_by_valid_tags"] -= len(self.spec.labels(rec)) - kept
            out.append({"file": str(self.path), where: int(p.lines[r]), "reason": reasons[len(out)],
                        "raw": raw.decode("utf-8", errors="replace").rstrip("\r\n")
                        if isinstance(raw, bytes) else raw})
        self.keep = np.setdiff1d(np.arange(len(p)), rows)
        return out, fix

    def labels(self) -> list[str]:
        """Distinct valid labels of the records kept."""
        p = self._loaded()
        kept = np.zeros(len(p), dtype=bool)
        kept[self.keep] = True
        row_of_code = np.repeat(kept, np.diff(p.label_indptr))
        used = np.zeros(len(p.vocab), dtype=bool)
        used[p.label_codes[row_of_code]] = True
        return [p.vocab[i] for i in np.flatnonzero(used)]

    def limit_info(self) -> tuple[dict[str, int], float, float]:
        """Records per group of the kept records, their cheapest and their total cost (0 without costs)."""
        p = self._loaded()
        names: dict[str, int] = {}
        if p.groups is not None:
            for i in self.keep.tolist():
                names[p.groups[i]] = names.get(p.groups[i], 0) + 1
        if p.costs is None:
            return names, 0.0, 0.0
        c = p.costs[self.keep]
        return names, float(c.min(initial=np.inf)), float(np.sum(c))

    def kept_limits(self, group_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Global group code and cost of each kept record (for the per-group account)."""
        p = self._loaded()
        code = {name: j for j, name in enumerate(group_names)}
        n = len(self.keep)
        groups = np.zeros(n, np.int64) if p.groups is None else \
            np.array([code[p.groups[i]] for i in self.keep.tolist()], dtype=np.int64)
        return groups, np.zeros(n) if p.costs is None else p.costs[self.keep]

    def build(self, nodes: list[str], prop: sp.csr_matrix, offset: int, phi: Phi, mode: GainMode,
              norm: bool, group_names: list[str] | None = None, limits: Limits | None = None) -> int:
        """Propagated vectors of the kept records and the lazy heap; positions start at `offset`;
        `group_names` are the global group codes' names, `limits` the caps and budget."""
        p = self._loaded()
        node = {name: i for i, name in enumerate(nodes)}
        remap = np.array([node.get(v, -1) for v in p.vocab], dtype=np.int64)
        lengths = np.diff(p.label_indptr)
        kept = np.zeros(len(p), dtype=bool)
        kept[self.keep] = True
        codes = remap[p.label_codes[np.repeat(kept, lengths)]]
        indptr = np.concatenate([[0], np.cumsum(lengths[self.keep])]).astype(np.int64)
        e = sample_matrix(indptr, codes, p.scores[self.keep], len(nodes), norm)
        self.carriers = np.bincount(e.indices, minlength=len(nodes))
        vectors = propagate(e, prop)
        rows = None
        if p.groups is not None or p.costs is not None:
            code = {name: j for j, name in enumerate(group_names or [])}
            groups = None if p.groups is None else np.array([code[p.groups[i]] for i in self.keep.tolist()])
            rows = RowLimits.of(len(self.keep), groups, None if p.costs is None else p.costs[self.keep])
        self.engine = ShardGreedy(vectors, phi, mode, offset + np.arange(len(self.keep)), rows, limits)
        return int(vectors.nnz)

    def score_range(self) -> tuple[float, float]:
        """Lowest and highest score of the kept records (for the report's shared histogram bins)."""
        s = self._loaded().scores[self.keep]
        return float(s.min(initial=np.inf)), float(s.max(initial=-np.inf))

    def pool_stats(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Kept records carrying each graph label, and their score histogram over `edges`."""
        self._built()
        return self.carriers, score_hist(self.pool.scores[self.keep], edges)

    def propose(self, n_want: int) -> Proposal:
        """This shard's best fresh candidates and the bound of the rest (one round's first wave)."""
        return self._built().propose(n_want)

    def apply(self, commit: Commit) -> None:
        """Add a round's committed vectors to x (the round's broadcast)."""
        self._built().apply(commit.positions, commit.ptr, commit.idx, commit.val, commit.groups, commit.costs)

    def propose_after(self, commit: Commit, n_want: int) -> Proposal:
        """Apply the last round's commit, then propose: a round costs one wave of calls, not two."""
        self.apply(commit)
        return self.propose(n_want)

    def restore(self, first_line: int, drop_rows: np.ndarray, nodes: list[str], prop: sp.csr_matrix,
                offset: int, phi: Phi, mode: GainMode, norm: bool, group_names: list[str] | None,
                limits: Limits | None, history: Commit) -> int:
        """After a restart: reread the block, drop the same rows, rebuild, replay the commits."""
        self.reload(first_line, drop_rows)
        nnz = self.build(nodes, prop, offset, phi, mode, norm, group_names, limits)
        if len(history.positions):
            self.apply(history)
        return nnz

    def _rows(self, positions: np.ndarray) -> np.ndarray:
        return self.keep[positions - self._built().positions[0]] if len(positions) else positions

    def records(self, positions: np.ndarray, local: bool = False) -> list:
        """The records at global positions (local rows with local=True), as they are in the file:
        JSONL lines as bytes, Parquet rows as dicts."""
        rows = positions if local else self._rows(positions)
        p = self._loaded()
        if p.format == "jsonl":
            out = []
            with open(self.path, "rb") as f:
                for r in rows:
                    f.seek(int(p.locations[r]))
                    line = f.readline()
                    out.append(line if line.endswith(b"\n") else line + b"\n")
            return out
        return parquet_rows(self.path, p.locations[rows]).to_pylist()

    def peak_rss_mb(self) -> float:
        """This actor's peak resident memory since it (re)started: docs/scaling.md's memory per shard."""
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def describe(self, positions: np.ndarray) -> list[dict]:
        """Manifest rows (id, score, labels, line) of selected global positions."""
        p = self._loaded()
        return [{"id": p.ids[r], "score": float(p.scores[r]), "labels": p.labels_of(r),
                 "line": int(p.lines[r])} for r in self._rows(positions).tolist()]
