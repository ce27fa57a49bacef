"""Exact lazy greedy for MIG over a sparse propagated sample matrix.

The tie rule (README, method): each round let m be the best gain among the remaining samples;
every sample whose gain is at least m - TIE * |m| ties with it, and the lowest input position
among the tied samples is taken. The window makes the rule, not the last bits of two sums added in
different orders, decide between gains that are equal in exact arithmetic. Zero gains are exact
ties (a zero gain stays zero), so a round whose best gain is 0 takes the lowest position left.

Why lazy greedy is exact here: phi' only decreases as the label mass x grows and propagated
vectors are non-negative, so a sample's gain never increases; a gain computed in an earlier
round is an upper bound. The heap holds (gain, input position) ordered by gain descending, then
position ascending. Once the top entry is fresh for the current round its gain is m; every stale
entry whose bound reaches the tie window of m is then re-evaluated, and the pick is the lowest
position among the fresh gains inside the window: what a full rescan applying the rule takes.

The loop is compiled with numba; the state lives in numpy arrays so that a run can be continued
in chunks (progress bars, checkpoints) or driven round by round by a shard actor.

Rows stay in input order. The kernels address rows by rank through `rrow` (rank -> input row), so
that the rows could be stored in rank order (initial gain descending): while a gain cost a power per
term that copy paid (1.3-1.4x for lazy_greedy at N = 1M, K = 50K); with the gain a dot product with
the labels' slopes it costs more than it saves (the copy 0.5 s and 250 MB; in place 1.93 s against
2.15-2.24 s for the whole greedy, same order), so rank is the input row and `rrow` the identity.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp

from mig_ray.core.limits import Limits, RowLimits, Usage, best_under_budget
from mig_ray.core.objective import GAIN_GRADIENT, PHI_POW, GainMode, Phi, gain_code, information

TIE = 1e-9  # relative width of the tie window below the round's best gain


@numba.njit(cache=True, inline="always")
def _before(ka: float, ra: int, kb: float, rb: int, rrow) -> bool:
    return ka > kb or (ka == kb and rrow[ra] < rrow[rb])


@numba.njit(cache=True)
def _sift_down(hkey, hpos, size, i, rrow):
    key, pos = hkey[i], hpos[i]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and _before(hkey[c + 1], hpos[c + 1], hkey[c], hpos[c], rrow):
            c += 1
        if not _before(hkey[c], hpos[c], key, pos, rrow):
            break
        hkey[i], hpos[i] = hkey[c], hpos[c]
        i = c
    hkey[i], hpos[i] = key, pos


@numba.njit(cache=True)
def _sift_up(hkey, hpos, i, rrow):
    key, pos = hkey[i], hpos[i]
    while i > 0:
        p = (i - 1) // 2
        if not _before(key, pos, hkey[p], hpos[p], rrow):
            break
        hkey[i], hpos[i] = hkey[p], hpos[p]
        i = p
    hkey[i], hpos[i] = key, pos


@numba.njit(cache=True, nogil=True)  # two greedies may run side by side (limited_greedy)
def _heapify(hkey, hpos, size, rrow):
    for i in range(size // 2 - 1, -1, -1):
        _sift_down(hkey, hpos, size, i, rrow)


@numba.njit(cache=True)
def _pop(hkey, hpos, meta, rrow):
    size = meta[0]
    key, pos = hkey[0], hpos[0]
    size -= 1
    meta[0] = size
    if size > 0:
        hkey[0], hpos[0] = hkey[size], hpos[size]
        _sift_down(hkey, hpos, size, 0, rrow)
    return key, pos


@numba.njit(cache=True)
def _push(hkey, hpos, meta, key, pos, rrow):
    size = meta[0]
    hkey[size], hpos[size] = key, pos
    meta[0] = size + 1
    _sift_up(hkey, hpos, size, rrow)


@numba.njit(cache=True)
def _rekey_top(hkey, hpos, meta, key, rrow):
    """Lower the top entry's key in place: one sift-down instead of a pop and a push."""
    hkey[0] = key
    _sift_down(hkey, hpos, meta[0], 0, rrow)


@numba.njit(cache=True, inline="always")
def slope(xl, family, a, b, alpha):
    """phi'(xl): a label's weight in the gradient gain."""
    if family == PHI_POW:
        return b * (xl + a) ** (b - 1.0)
    return alpha * np.exp(-alpha * xl)


@numba.njit(cache=True, nogil=True)
def slopes(x, family, a, b, alpha):
    """phi' of every label's mass: the gradient gain of a row is its dot product with these."""
    out = np.empty(len(x), dtype=np.float64)
    for i in range(len(x)):
        out[i] = slope(x[i], family, a, b, alpha)
    return out


@numba.njit(cache=True)
def row_gain(indptr, indices, data, row, x, family, a, b, alpha, mode):
    s = 0.0
    for p in range(indptr[row], indptr[row + 1]):
        xl = x[indices[p]]
        v = data[p]
        if mode == GAIN_GRADIENT:
            s += slope(xl, family, a, b, alpha) * v
        elif family == PHI_POW:
            s += (xl + v + a) ** b - (xl + a) ** b
        else:
            s += (1.0 - np.exp(-alpha * (xl + v))) - (1.0 - np.exp(-alpha * xl))
    return s


@numba.njit(cache=True, inline="always")
def _key(indptr, indices, data, row, x, w, family, a, b, alpha, mode):
    """row_gain, the gradient gain as a dot product with the labels' slopes `w` (kept equal to
    slopes(x)): the same terms in the same order, so the same float, without a power per term
    (the power was most of the greedy's time: 52M of them at 1M records, K = 50K)."""
    if mode != GAIN_GRADIENT:
        return row_gain(indptr, indices, data, row, x, family, a, b, alpha, mode)
    s = 0.0
    for p in range(indptr[row], indptr[row + 1]):
        s += w[indices[p]] * data[p]
    return s


@numba.njit(cache=True, nogil=True)
def add_rows_slopes(x, w, ptr, idx, val, family, a, b, alpha):
    """add_rows, keeping w = slopes(x) on the labels it touches."""
    for i in range(len(ptr) - 1):
        for p in range(ptr[i], ptr[i + 1]):
            j = idx[p]
            x[j] += val[p]
            w[j] = slope(x[j], family, a, b, alpha)


@numba.njit(cache=True, nogil=True)  # two greedies may run side by side (limited_greedy)
def _initial_gains(indptr, indices, data, n, x, w, family, a, b, alpha, mode):
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        out[i] = _key(indptr, indices, data, i, x, w, family, a, b, alpha, mode)
    return out


@numba.njit(cache=True)
def _certified(best, gpos, bound_key, bound_gpos):
    """May the pick at global position `gpos`, in a round whose best fresh gain is `best`, be
    committed although candidates held elsewhere (other shards) have gains up to `bound_key`?

    Yes when the bound lies below the tie window of `best`: nothing elsewhere ties or wins. A bound
    inside the window is not enough, since entries below the top of that shard's heap may hold
    lower positions; the driver then ends the round and the shards propose again. Zero is exact: a
    bound of 0 means every gain elsewhere is 0, and the top of a heap of zeros is its lowest
    position, so a zero-gain pick is certified when it lies before that position.
    """
    if best > 0.0:
        return bound_key < best - best * TIE
    return bound_key < 0.0 or (bound_key == 0.0 and gpos < bound_gpos)


@numba.njit(cache=True, inline="always")
def _fits(pos, grp, caps, counts, cost, fb) -> bool:
    """May the row at rank `pos` still be picked: its group below its cap and its cost within what is
    left of the budget (fb = [budget, used])? Both only tighten as samples are committed, so a row
    that does not fit now never will: it leaves the heap for good."""
    g = grp[pos]
    return counts[g] < caps[g] and fb[1] + cost[pos] <= fb[0]


@numba.njit(cache=True, nogil=True)  # two greedies may run side by side (limited_greedy)
def _run(indptr, indices, data, x, w, hkey, hpos, stamp, meta, order, order_gain,
         family, a, b, alpha, mode, n_rounds, tmp_key, tmp_pos, gpos, bound_key, bound_gpos, rrow,
         grp, caps, counts, cost, div, fb):
    """Commit up to n_rounds samples; meta = [heap size, committed, evaluations].

    Rows, heap entries, `stamp` and `gpos` are by rank (the input row); `order` receives input rows.
    The key of a row is its gain divided by div[row] (1: the gain; its cost: cost-benefit greedy);
    rows that no longer fit (`_fits`) are dropped when they reach the top or the tie window.

    Stops early when the next pick is not certified against (bound_key, bound_gpos): an upper bound
    on candidates that are not in this heap (other shards). -inf means no such candidates.
    """
    done = 0
    while done < n_rounds and meta[0] > 0:
        r = meta[1]
        pos = hpos[0]
        if not _fits(pos, grp, caps, counts, cost, fb):
            _pop(hkey, hpos, meta, rrow)
            continue
        if stamp[pos] != r:
            g = _key(indptr, indices, data, pos, x, w, family, a, b, alpha, mode) / div[pos]
            meta[2] += 1
            stamp[pos] = r
            _rekey_top(hkey, hpos, meta, g, rrow)
            continue
        # The top is fresh: its gain is the round's best m. Take out every entry whose bound reaches
        # the tie window of m, refreshing the stale ones; a zero m needs none (zeros are exact and
        # the heap already puts the lowest position first).
        key, pos = _pop(hkey, hpos, meta, rrow)
        tmp_key[0] = key
        tmp_pos[0] = pos
        n_tmp = 1
        best = key
        if key > 0.0:
            floor = key - key * TIE
            while meta[0] > 0 and hkey[0] >= floor:
                k2, p2 = _pop(hkey, hpos, meta, rrow)
                if not _fits(p2, grp, caps, counts, cost, fb):
                    continue
                if stamp[p2] != r:
                    k2 = _key(indptr, indices, data, p2, x, w, family, a, b, alpha, mode) / div[p2]
                    meta[2] += 1
                    stamp[p2] = r
                tmp_key[n_tmp] = k2
                tmp_pos[n_tmp] = p2
                n_tmp += 1
                best = max(best, k2)  # rounding may lift a refreshed gain a hair above its bound
        # The pick: the lowest input position among the fresh gains inside the window of the best.
        floor = best - best * TIE if best > 0.0 else 0.0
        win = 0
        for t in range(1, n_tmp):
            if tmp_key[t] >= floor and (tmp_key[win] < floor or rrow[tmp_pos[t]] < rrow[tmp_pos[win]]):
                win = t
        key, pos = tmp_key[win], tmp_pos[win]
        for t in range(n_tmp):
            if t != win:
                _push(hkey, hpos, meta, tmp_key[t], tmp_pos[t], rrow)
        if bound_key != -np.inf and not _certified(best, gpos[pos], bound_key, bound_gpos):
            _push(hkey, hpos, meta, key, pos, rrow)
            break
        # Commit.
        order[r] = rrow[pos]
        order_gain[r] = key
        for p in range(indptr[pos], indptr[pos + 1]):
            j = indices[p]
            x[j] += data[p]
            w[j] = slope(x[j], family, a, b, alpha)
        counts[grp[pos]] += 1
        fb[1] += cost[pos]
        meta[1] = r + 1
        done += 1
    return done


@dataclass
class GreedyResult:
    order: np.ndarray  # input positions in selection order
    gains: np.ndarray  # key of each pick when it was committed (its gain, or gain / cost)
    evaluations: int  # gain evaluations after the initial pass
    x: np.ndarray  # final label mass
    usage: Usage | None = None  # per-group counts and cost used
    key: str = "gain"  # which greedy produced it: "gain" or "ratio" (cost-benefit)


class LazyGreedy:
    """Lazy greedy state over a CSR matrix of propagated sample vectors (rows = input positions).

    `step(n)` commits up to n more samples; the state can be continued or inspected between steps.
    `order` holds input rows; the heap, `stamp` and `taken` are by rank (the input row).
    """

    def __init__(self, vectors: sp.csr_matrix, phi: Phi, mode: GainMode = "gradient",
                 x0: np.ndarray | None = None, positions: np.ndarray | None = None,
                 rows: RowLimits | None = None, limits: Limits | None = None,
                 usage: Usage | None = None) -> None:
        """`x0`: label mass already committed; `positions`: increasing global input positions of the
        rows (ties and bounds compare these), default 0..n-1; `rows`: each row's group and cost,
        `limits`: the caps and budget they count against, `usage`: what commits made elsewhere
        (earlier rounds, other shards) already took of them."""
        v = vectors.tocsr()
        if not v.has_sorted_indices:
            v = v.sorted_indices()
        if v.data.size and (not np.all(np.isfinite(v.data)) or v.data.min() < 0):
            raise ValueError("propagated sample vectors must be finite and non-negative")
        self.n, self.n_labels = v.shape
        self.phi = phi
        self.mode = mode
        self._params = (*phi.code(), gain_code(mode))
        self.x = np.zeros(self.n_labels) if x0 is None else np.array(x0, dtype=np.float64)
        self.positions = (np.arange(self.n, dtype=np.int64) if positions is None
                          else np.asarray(positions, dtype=np.int64))
        if self.positions.size > 1 and np.any(np.diff(self.positions) <= 0):
            raise ValueError("row positions must be strictly increasing")
        self.limits = limits or Limits()
        if self.limits.floors is not None:
            raise ValueError("one greedy state runs one phase: run floors by Limits.phases (lazy_greedy)")
        rows = rows or RowLimits.none(self.n)
        self.limits.check(rows)
        usage = usage or Usage.empty(self.limits)
        self.counts = usage.counts.astype(np.int64, copy=True)
        self.fb = np.array([self.limits.budget, usage.used], dtype=np.float64)  # [budget, used]
        self.caps = self.limits.cap_array()
        div = rows.costs if self.limits.key == "ratio" else np.ones(self.n)
        data = v.data.astype(np.float64, copy=False)
        self.w = slopes(self.x, *self._params[:4])  # phi'(x), kept up to date with x
        first = _initial_gains(v.indptr, v.indices, data, self.n, self.x, self.w, *self._params) / div
        self.rrow = np.arange(self.n, dtype=np.int64)  # rank = input row (module docstring)
        self.indptr, self.indices, self.data = v.indptr, v.indices, data  # read only: no copy
        self._rank_positions = self.positions
        self.grp = rows.groups
        self.cost = rows.costs
        self.div = div
        self.hkey = first
        self.hpos = np.arange(self.n, dtype=np.int64)
        _heapify(self.hkey, self.hpos, self.n, self.rrow)
        self.stamp = np.zeros(self.n, dtype=np.int64)
        self.meta = np.array([self.n, 0, 0], dtype=np.int64)
        self.order = np.empty(self.n, dtype=np.int64)
        self.order_gain = np.empty(self.n, dtype=np.float64)
        self._tmp_key = np.empty(self.n, dtype=np.float64)
        self._tmp_pos = np.empty(self.n, dtype=np.int64)

    def _limit_args(self) -> tuple:
        return self.grp, self.caps, self.counts, self.cost, self.div, self.fb

    @property
    def usage(self) -> Usage:
        return Usage(self.counts.copy(), float(self.fb[1]))

    @property
    def committed(self) -> int:
        return int(self.meta[1])

    @property
    def evaluations(self) -> int:
        return int(self.meta[2])

    def step(self, n_rounds: int, bound: tuple[float, int] = (-np.inf, -1)) -> int:
        """Commit up to n_rounds more samples while each is certified against `bound` = (gain,
        global position), an upper bound on candidates held elsewhere (`_certified`: the bound lies
        below the tie window of the round's best gain); returns how many were committed."""
        return int(
            _run(self.indptr, self.indices, self.data, self.x, self.w, self.hkey, self.hpos, self.stamp,
                 self.meta, self.order, self.order_gain, *self._params, int(n_rounds),
                 self._tmp_key, self._tmp_pos, self._rank_positions, float(bound[0]), int(bound[1]),
                 self.rrow, *self._limit_args())
        )

    def result(self) -> GreedyResult:
        k = self.committed
        return GreedyResult(self.order[:k].copy(), self.order_gain[:k].copy(), self.evaluations,
                            self.x.copy(), self.usage)


def lazy_greedy(vectors: sp.csr_matrix, k: int, phi: Phi | None = None, mode: GainMode = "gradient",
                chunk: int = 0, progress=None, rows: RowLimits | None = None,
                limits: Limits | None = None) -> GreedyResult:
    """Select up to k rows greedily (fewer when the caps or the budget leave nothing that fits);
    identical to a naive full rescan per round applying the same limits. With floors, one greedy
    state per phase (Limits.phases): a floor phase over the rows of its group only (every other
    group is capped at 0 there), each phase starting from the mass and usage committed before.

    `progress`, if given, is called with the number committed after each chunk.
    """
    phi = phi or Phi()
    limits = limits or Limits()
    n = vectors.shape[0]
    rows = rows or RowLimits.none(n)
    k = min(int(k), n)
    chunk = chunk or max(1, k)
    x = np.zeros(vectors.shape[1])
    usage = Usage.empty(limits)
    taken = np.zeros(n, dtype=bool)
    orders, keys, evaluations = [], [], 0
    for phase in limits.phases():
        g = limits.floor_group(phase)
        rest = np.flatnonzero(~taken & (True if g is None else rows.groups == g))
        whole = limits.floors is None  # one phase over every row: no copy of the matrix
        state = LazyGreedy(vectors if whole else vectors[rest], phi, mode, x0=x,
                           positions=None if whole else rest, rows=rows if whole else rows.take(rest),
                           limits=phase, usage=usage)
        before = int(taken.sum())
        while before + state.committed < k:
            if state.step(min(chunk, k - before - state.committed)) == 0:
                break
            if progress is not None:
                progress(before + state.committed)
        picked = state.order[:state.committed] if whole else rest[state.order[:state.committed]]
        taken[picked] = True
        orders.append(picked)
        keys.append(state.order_gain[:state.committed].copy())
        evaluations += state.evaluations
        x, usage = state.x, state.usage
    out = GreedyResult(np.concatenate(orders), np.concatenate(keys), evaluations, x.copy(), usage)
    out.key = limits.key
    return out


def limited_greedy(vectors: sp.csr_matrix, k: int, phi: Phi, mode: GainMode, rows: RowLimits,
                   limits: Limits, chunk: int = 0, progress=None) -> tuple[GreedyResult, dict]:
    """The selection in process under quotas, floors and a budget: `lazy_greedy`, and under a budget
    that binds twice (cost-benefit and plain gain, the one of higher information kept:
    limits.best_under_budget). What `select` runs and what `compare` runs for `mig`, so both give
    one order. Returns the result kept and what was decided."""
    done: dict[str, int] = {}
    lock = threading.Lock()

    def run(lim: Limits) -> GreedyResult:
        def step(n: int) -> None:  # with two greedies at once, the bar follows their mean
            with lock:
                done[lim.key] = n
                progress(sum(done.values()) // len(done))

        return lazy_greedy(vectors, k, phi, mode, chunk=chunk, progress=step if progress else None,
                           rows=rows, limits=lim)

    def run_both(both: list[Limits]) -> list[GreedyResult]:
        """The cost-benefit and the plain greedy side by side: the compiled loops release the GIL."""
        if (os.cpu_count() or 1) < 2:
            return [run(lim) for lim in both]
        with ThreadPoolExecutor(len(both)) as pool:
            return list(pool.map(run, both))

    return best_under_budget(run, lambda r: information(phi, r.x), limits, float(np.sum(rows.costs)),
                             run_both)


@numba.njit(cache=True, nogil=True)  # shards propose side by side (certified.threaded_greedy)
def _propose(indptr, indices, data, x, w, hkey, hpos, stamp, meta, taken, family, a, b, alpha, mode,
             n_want, out_rows, out_keys, gpos, bound, rrow, grp, caps, counts, cost, div, fb):
    """Extract this shard's best fresh candidates (at least n_want, plus any whose fresh gain is
    within the tie window of the last one) and the bound of everything left: bound = [key, global
    position]. The bound then lies below the tie window of every candidate taken, so the driver's
    first pick of a round is always certified (see `_certified`)."""
    r = meta[1]
    n_c = 0
    while meta[0] > 0:
        top_key, top_pos = hkey[0], hpos[0]
        if taken[top_pos] or not _fits(top_pos, grp, caps, counts, cost, fb):
            _pop(hkey, hpos, meta, rrow)
            continue
        if n_c >= n_want:
            last = out_keys[n_c - 1]
            if not (last > 0.0 and top_key >= last - last * TIE):
                break
        if stamp[top_pos] != r:
            g = _key(indptr, indices, data, top_pos, x, w, family, a, b, alpha, mode) / div[top_pos]
            meta[2] += 1
            stamp[top_pos] = r
            _rekey_top(hkey, hpos, meta, g, rrow)
            continue
        key, pos = _pop(hkey, hpos, meta, rrow)
        out_rows[n_c] = pos
        out_keys[n_c] = key
        n_c += 1
    if meta[0] > 0:
        bound[0] = hkey[0]
        bound[1] = gpos[hpos[0]]
    else:
        bound[0] = -np.inf
        bound[1] = -1
    for i in range(n_c):
        _push(hkey, hpos, meta, out_keys[i], out_rows[i], rrow)
    return n_c


@numba.njit(cache=True, nogil=True)  # two greedies may run side by side (limited_greedy)
def _gather_rows(indptr, indices, data, rows):
    """CSR rows `rows` of (indptr, indices, data), copied out: O(their nnz), not O(matrix)."""
    n = len(rows)
    ptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        ptr[i + 1] = ptr[i] + indptr[rows[i] + 1] - indptr[rows[i]]
    idx = np.empty(ptr[n], dtype=indices.dtype)  # int32 from propagate: half the bytes to copy and hold
    val = np.empty(ptr[n], dtype=np.float64)
    for i in range(n):  # element loops: slice assignments cost more than the copy for short rows
        q = ptr[i]
        for p in range(indptr[rows[i]], indptr[rows[i] + 1]):
            idx[q] = indices[p]
            val[q] = data[p]
            q += 1
    return ptr, idx, val


@numba.njit(cache=True)
def add_costs(fb, costs):
    """fb[1] += each cost in commit order: every engine sums the used budget in the same order, so
    that "fits" is decided on the same float everywhere."""
    for c in costs:
        fb[1] += c


@numba.njit(cache=True)
def add_rows(x, ptr, idx, val):
    for i in range(len(ptr) - 1):
        for p in range(ptr[i], ptr[i + 1]):
            x[idx[p]] += val[p]


@dataclass
class Proposal:
    """A shard's fresh candidates (global positions ascending, their vectors) and its bound."""

    positions: np.ndarray
    gains: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    bound: tuple[float, int]
    groups: np.ndarray  # group code of each candidate
    costs: np.ndarray  # cost of each candidate

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.positions, self.gains, self.indptr, self.indices, self.data,
                                      self.groups, self.costs))


class ShardGreedy(LazyGreedy):
    """One shard's part of the pool: proposes its best fresh candidates, applies global commits."""

    def __init__(self, vectors: sp.csr_matrix, phi: Phi, mode: GainMode, positions: np.ndarray,
                 rows: RowLimits | None = None, limits: Limits | None = None) -> None:
        super().__init__(vectors, phi, mode, positions=positions, rows=rows, limits=limits)
        self.taken = np.zeros(self.n, dtype=bool)  # by rank
        self._rank = np.empty(self.n, dtype=np.int64)  # input row -> rank
        self._rank[self.rrow] = np.arange(self.n)
        self._bound = np.empty(2, dtype=np.float64)

    def propose(self, n_want: int) -> Proposal:
        n_c = _propose(self.indptr, self.indices, self.data, self.x, self.w, self.hkey, self.hpos, self.stamp,
                       self.meta, self.taken, *self._params, max(1, int(n_want)), self._tmp_pos,
                       self._tmp_key, self._rank_positions, self._bound, self.rrow, *self._limit_args())
        by_row = np.argsort(self.rrow[self._tmp_pos[:n_c]])
        ranks, keys = self._tmp_pos[:n_c][by_row], self._tmp_key[:n_c][by_row]
        # A gather of the proposed rows only: wrapping the whole shard in a scipy CSR here would
        # copy (and downcast) all its indices every round.
        ptr, idx, val = _gather_rows(self.indptr, self.indices, self.data, ranks)
        return Proposal(self._rank_positions[ranks], keys, ptr, idx, val,
                        (float(self._bound[0]), int(self._bound[1])), self.grp[ranks], self.cost[ranks])

    def apply(self, positions: np.ndarray, ptr: np.ndarray, idx: np.ndarray, val: np.ndarray,
              groups: np.ndarray | None = None, costs: np.ndarray | None = None) -> None:
        """Add committed vectors (global commit order) to x and their groups and costs to the usage;
        mark the ones this shard owns."""
        add_rows_slopes(self.x, self.w, ptr, idx, val, *self._params[:4])
        if groups is not None:
            np.add.at(self.counts, groups, 1)
            add_costs(self.fb, costs)
        rows = np.searchsorted(self.positions, positions)
        mine = rows < self.n
        mine[mine] = self.positions[rows[mine]] == positions[mine]
        self.taken[self._rank[rows[mine]]] = True
        self.meta[1] += len(positions)
