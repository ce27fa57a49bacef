"""DEITA-style quality and complexity scores on vLLM, as a Ray Data callable class.

Each (user, assistant) turn gets a complexity prompt (the query) and a quality prompt (query and
response) in the DEITA scorers' fixed templates. The score is the expectation of the next token
over "1".."6": softmax of those six tokens' logprobs, sum p_i * i. vLLM is asked for exactly those
six tokens' logprobs (`SamplingParams(logprob_token_ids=...)`), computed from the raw logits, so no
top-k cut-off can hide one; a missing or NaN logprob fails the record with the reason instead of
defaulting to 3.0 as DEITA's own code does. Combined score: mean over turns of quality x complexity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mig_ray.annotate import prompts
from mig_ray.annotate.vllm_engine import (
    EngineOptions,
    batch_column,
    cut,
    fit_prompt,
    identity_hash,
    load_llm,
    object_column,
    parse_messages,
)

SCORE_DIGITS = ("1", "2", "3", "4", "5", "6")


class VLLMScorerConfig(EngineOptions):
    """A DEITA-style scorer: `model` scores quality (and complexity unless complexity_model is given)."""

    mode: Literal["combined", "quality", "complexity"] = Field(
        "combined", description="combined: mean over turns of quality x complexity; else that score's mean")
    complexity_model: str | None = Field(
        None, description="a separate complexity model (hkust-nlp/deita-complexity-scorer); default: `model`")
    score_token_ids: list[int] | None = Field(
        None, min_length=6, max_length=6, description='token ids of "1".."6"; default: from the tokenizer')
    max_turns: int = Field(32, ge=1, description="turns scored per record (the first ones)")
    prompt_version: str = Field(prompts.SCORE_PROMPT_VERSION, description="the DEITA scoring templates "
                                "(part of the cache key)")

    def identity(self) -> dict[str, Any]:
        """What decides the scores: models, templates, mode, score tokens, context length."""
        ident = {"kind": "vllm_scorer", **self.engine_identity(), "mode": self.mode,
                 "prompt_version": self.prompt_version, "score_token_ids": self.score_token_ids,
                 "max_turns": self.max_turns}
        if self.complexity_model is not None and self.mode != "quality":
            other = self.model_copy(update={"model": self.complexity_model})
            ident["complexity_model"] = other.engine_identity()
        return ident

    def identity_hash(self) -> str:
        return identity_hash(self.identity())


def expected_score(logprobs: Sequence[float]) -> float:
    """Expectation of the score 1..6 under the softmax of the six score tokens' logprobs."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if lp.shape != (6,) or np.isnan(lp).any() or not np.isfinite(lp).any() or np.isposinf(lp).any():
        raise ValueError(f"need six finite score logprobs, got {lp.tolist()}")
    p = np.exp(lp - lp.max())
    p /= p.sum()
    return float(p @ np.arange(1, 7, dtype=np.float64))


def score_token_ids(tokenizer: Any) -> list[int]:
    """Ids of the single tokens "1".."6" (Llama: 29896...; byte-level BPE: the digit bytes)."""
    ids: list[int] = []
    unk = getattr(tokenizer, "unk_token_id", None)
    for d in SCORE_DIGITS:
        tid = tokenizer.convert_tokens_to_ids(d)
        if tid is None or tid == unk:
            enc = tokenizer.encode(d, add_special_tokens=False)
            if len(enc) != 1:
                raise ValueError(f"score digit {d!r} is not one token ({enc}); set score_token_ids")
            tid = enc[0]
        ids.append(int(tid))
    if len(set(ids)) != 6:
        raise ValueError(f"score digits map to duplicate token ids {ids}; set score_token_ids")
    return ids


def turn_pairs(messages: list[dict[str, str]], need_response: bool) -> list[tuple[str, str]]:
    """(query, response) per user turn; a query without an answer counts only when no response is needed."""
    pairs: list[tuple[str, str]] = []
    for k, m in enumerate(messages):
        if m["role"] != "user" or not m["content"].strip():
            continue
        nxt = messages[k + 1] if k + 1 < len(messages) else None
        if nxt is not None and nxt["role"] == "assistant":
            pairs.append((m["content"], nxt["content"]))
        elif not need_response:
            pairs.append((m["content"], ""))
    return pairs


class _Engine:
    """One vLLM engine and its score-token ids, prompt budget and sampling parameters."""

    def __init__(self, opts: EngineOptions, token_ids: list[int] | None) -> None:
        from vllm import SamplingParams

        if "logprob_token_ids" not in getattr(SamplingParams, "__struct_fields__", ()):
            raise RuntimeError("this vLLM has no SamplingParams.logprob_token_ids (vLLM >= 0.32 needed): "
                               "mig_ray does not score from top-k logprobs, which can miss a score token")
        self.llm = load_llm(opts)
        self.tokenizer = self.llm.get_tokenizer()
        self.token_ids = token_ids or score_token_ids(self.tokenizer)
        self.budget = (opts.max_model_len or self.llm.llm_engine.model_config.max_model_len) - 1
        self.params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=self.token_ids)

    def ids(self, build: Any) -> list[int] | None:
        return fit_prompt(build, self.tokenizer.encode, self.budget)

    def logprobs(self, prompt_ids: list[list[int]]) -> list[list[float] | str]:
        """Six logprobs per prompt, or the reason they are missing."""
        if not prompt_ids:
            return []
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompt_ids], self.params, use_tqdm=False)
        res: list[list[float] | str] = []
        for o in outs:
            steps = o.outputs[0].logprobs
            if not steps:
                res.append("no logprobs returned")
                continue
            got = steps[0]
            missing = [d for d, t in zip(SCORE_DIGITS, self.token_ids, strict=True) if t not in got]
            if missing:
                res.append(f"no logprob for score token(s) {', '.join(missing)}")
                continue
            vals = [float(got[t].logprob) for t in self.token_ids]
            res.append(vals if not any(math.isnan(v) for v in vals) else f"NaN score logprob {vals}")
        return res


class VLLMScorer:
    """Callable class for `Dataset.map_batches`: id, messages -> id, score, status, error, calls,
    quality, complexity (per-turn lists; empty when that score is not computed)."""

    def __init__(self, config: VLLMScorerConfig | dict[str, Any]) -> None:
        self.config = cfg = VLLMScorerConfig.model_validate(config)
        self.engines: dict[str, _Engine] = {}
        main = _Engine(cfg, cfg.score_token_ids)
        if cfg.mode != "complexity":
            self.engines["quality"] = main
        if cfg.mode != "quality":
            same = cfg.complexity_model in (None, cfg.model)
            self.engines["complexity"] = main if same else _Engine(
                cfg.model_copy(update={"model": cfg.complexity_model}), cfg.score_token_ids)

    def _prompt(self, kind: str, query: str, response: str) -> list[int] | None:
        eng = self.engines[kind]
        if kind == "complexity":
            return eng.ids(lambda f: prompts.complexity_prompt(cut(query, f)))
        return eng.ids(lambda f: prompts.quality_prompt(cut(query, f), cut(response, f)))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        ids = [str(x) for x in batch_column(batch, "id")]
        n = len(ids)
        error = [""] * n
        calls = [0] * n
        kinds = list(self.engines)
        per: dict[str, list[list[float]]] = {k: [[] for _ in range(n)] for k in ("quality", "complexity")}
        jobs: dict[str, list[tuple[int, int, list[int]]]] = {k: [] for k in kinds}
        nturns = [0] * n
        for i, raw in enumerate(batch_column(batch, "messages")):
            try:
                pairs = turn_pairs(parse_messages(raw), need_response="quality" in kinds)[: cfg.max_turns]
                if not pairs:
                    raise ValueError("no user turn with an assistant response to score"
                                     if "quality" in kinds else "no user turn to score")
                built: dict[str, list[tuple[int, int, list[int]]]] = {k: [] for k in kinds}
                for t, (q, r) in enumerate(pairs):
                    for k in kinds:
                        pid = self._prompt(k, q, r)
                        if pid is None:
                            raise ValueError(f"turn {t + 1}: {k} prompt does not fit in "
                                             f"{self.engines[k].budget} tokens")
                        built[k].append((i, t, pid))
            except ValueError as e:
                error[i] = str(e)
                continue
            nturns[i] = len(pairs)
            for k in kinds:
                jobs[k].extend(built[k])
                per[k][i] = [math.nan] * len(pairs)
        for k in kinds:
            results = self.engines[k].logprobs([pid for _, _, pid in jobs[k]])
            for (i, t, _), res in zip(jobs[k], results, strict=True):
                calls[i] += 1
                if isinstance(res, str):
                    if not error[i]:
                        error[i] = f"turn {t + 1} {k}: {res}"
                    continue
                per[k][i][t] = expected_score(res)
        score = np.full(n, np.nan, dtype=np.float64)
        status = ["failed"] * n
        for i in range(n):
            if error[i] or nturns[i] == 0:
                continue
            if cfg.mode == "combined":
                vals = [q * c for q, c in zip(per["quality"][i], per["complexity"][i], strict=True)]
            else:
                vals = per[cfg.mode][i]
            score[i] = float(np.mean(vals))
            status[i] = "ok"
        return {
            "id": object_column(ids),
            "score": score,
            "status": object_column(status),
            "error": object_column(error),
            "calls": np.asarray(calls, dtype=np.int64),
            "quality": object_column(per["quality"]),
            "complexity": object_column(per["complexity"]),
        }
