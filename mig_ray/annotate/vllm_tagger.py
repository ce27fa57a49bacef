"""InsTag-style tagging on vLLM, as a Ray Data callable class (one engine per actor).

Output is constrained with vLLM structured outputs (xgrammar), so a finished answer always parses:
a JSON list of tags, or InsTagger's own list of {"tag", "explanation"} objects. With a valid-tag
vocabulary the tag strings are an enum of it (xgrammar compiles the 4,531-tag Tulu3 enum in well
under a second); otherwise tag length and count are bounded in the schema. An answer that still
does not parse or stops at max_tokens is retried once (sampling at retry_temperature, since a greedy
retry would repeat itself) and then recorded as failed with the reason: never dropped.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from mig_ray.annotate import prompts
from mig_ray.annotate.tags import VocabularyMapper, load_vocabulary, normalize_tags
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
from mig_ray.bundled import resolve_bundled


class VLLMTaggerConfig(EngineOptions):
    """A vLLM tagger: model, answer schema, vocabulary and generation bounds."""

    output_schema: prompts.OutputSchema = Field(
        "tags", description='"tags": a JSON list of strings; "instag": [{"tag","explanation"}] (InsTagger)')
    valid_tags: str | None = Field(None, description="valid-tag file (JSON list or one per line)")
    vocabulary_mode: Literal["enum", "map"] = Field(
        "enum", description="with valid_tags: constrain tags to the vocabulary (enum) or generate freely "
                            "and map each tag to the nearest valid tag (map)")
    map_threshold: float = Field(0.75, ge=-1, le=1, description="cosine floor of the embedding mapping")
    map_model: str | None = Field(None, description="sentence-transformers folder (default: bundled)")
    max_tags: int = Field(8, ge=1, le=64, description="most tags per record (the answer's JSON list)")
    max_tag_chars: int = Field(48, ge=2, le=512, description="longest tag the answer may hold")
    max_explanation_chars: int = Field(160, ge=1, le=4096, description="longest explanation per tag")
    max_query_chars: int = Field(6000, ge=16, description="user text beyond this is cut before tokenising")
    max_tokens: int = Field(512, ge=1, description="tokens the answer may take; one that stops there is "
                                                 "retried once")
    temperature: float = Field(0.0, ge=0, description="sampling temperature (0: greedy)")
    retry_temperature: float = Field(0.7, ge=0, description="temperature of the one retry")
    prompt_format: Literal["auto", "chat", "plain"] = Field(
        "auto", description="auto: the tokenizer's chat template when it has one, else the Vicuna v1.1 frame")
    prompt_version: str = Field(prompts.TAG_PROMPT_VERSION, description="the tagging prompt (part of the "
                                "cache key: a new prompt re-annotates)")

    @model_validator(mode="after")
    def _check(self) -> VLLMTaggerConfig:
        if self.valid_tags is not None and not resolve_bundled(self.valid_tags).is_file():
            raise ValueError(f"valid_tags {self.valid_tags!r} is not a file")
        return self

    def vocabulary(self) -> list[str] | None:
        return load_vocabulary(resolve_bundled(self.valid_tags)) if self.valid_tags else None

    def identity(self) -> dict[str, Any]:
        """What decides the labels: model, prompt, schema, vocabulary content, generation bounds."""
        vocab = self.vocabulary()
        ident = {
            "kind": "vllm_tagger", **self.engine_identity(), "prompt_version": self.prompt_version,
            "prompt_format": self.prompt_format, "output_schema": self.output_schema,
            "vocabulary": hashlib.sha256("\n".join(vocab).encode()).hexdigest()[:16] if vocab else None,
            "vocabulary_mode": self.vocabulary_mode if vocab else None,
            "max_tags": self.max_tags, "max_tag_chars": self.max_tag_chars,
            "max_explanation_chars": self.max_explanation_chars, "max_query_chars": self.max_query_chars,
            "max_tokens": self.max_tokens, "temperature": self.temperature,
            "retry_temperature": self.retry_temperature, "seed": self.seed,
        }
        if vocab and self.vocabulary_mode == "map":
            ident["map_threshold"] = self.map_threshold
            ident["map_model"] = self.map_model
        return ident

    def identity_hash(self) -> str:
        return identity_hash(self.identity())

    def json_schema(self, vocabulary: list[str] | None = None) -> dict[str, Any]:
        """The JSON schema the answer is constrained to."""
        if vocabulary is not None and self.vocabulary_mode == "enum":
            tag: dict[str, Any] = {"type": "string", "enum": vocabulary}
        else:
            tag = {"type": "string", "minLength": 1, "maxLength": self.max_tag_chars}
        if self.output_schema == "instag":
            item: dict[str, Any] = {
                "type": "object",
                "properties": {"tag": tag, "explanation": {"type": "string",
                                                           "maxLength": self.max_explanation_chars}},
                "required": ["tag", "explanation"], "additionalProperties": False,
            }
        else:
            item = tag
        return {"type": "array", "items": item, "minItems": 1, "maxItems": self.max_tags}


def parse_answer(text: str, schema: prompts.OutputSchema) -> list[str]:
    """Tags of one answer; ValueError says why an answer is unusable."""
    try:
        data = json.loads(text, strict=False)  # the grammar lets raw control characters into strings
    except json.JSONDecodeError as e:
        raise ValueError(f"answer is not JSON ({e.msg} at {e.pos})") from None
    if not isinstance(data, list):
        raise ValueError("answer is not a JSON list")
    tags: list[str] = []
    for item in data:
        if schema == "instag":
            if not isinstance(item, dict) or not isinstance(item.get("tag"), str):
                raise ValueError('answer item is not {"tag": str, "explanation": str}')
            tags.append(item["tag"])
        else:
            if not isinstance(item, str):
                raise ValueError("answer item is not a string")
            tags.append(item)
    return tags


class VLLMTagger:
    """Callable class for `Dataset.map_batches`: columns id, messages -> id, labels, status, error, calls.

    Extra column `raw_labels`: the model's tags before normalisation and mapping (for audits).
    """

    def __init__(self, config: VLLMTaggerConfig | dict[str, Any]) -> None:
        self.config = cfg = VLLMTaggerConfig.model_validate(config)
        self.vocabulary = cfg.vocabulary()
        self.mapper = (VocabularyMapper(self.vocabulary, cfg.map_threshold, model=cfg.map_model)
                       if self.vocabulary else None)
        self.llm = load_llm(cfg, structured_outputs_config={"backend": "xgrammar"})
        self.tokenizer = self.llm.get_tokenizer()
        use_chat = cfg.prompt_format == "chat" or (
            cfg.prompt_format == "auto" and bool(getattr(self.tokenizer, "chat_template", None)))
        self.use_chat = use_chat
        self.budget = (cfg.max_model_len or self.llm.llm_engine.model_config.max_model_len) - cfg.max_tokens
        if self.budget < 16:
            raise ValueError(f"max_model_len leaves {self.budget} prompt tokens, max_tokens={cfg.max_tokens}")
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        schema = cfg.json_schema(self.vocabulary)
        so = StructuredOutputsParams(json=schema, disable_any_whitespace=True)
        self.params = SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                     seed=cfg.seed, structured_outputs=so)
        self.retry_params = SamplingParams(max_tokens=cfg.max_tokens,
                                           temperature=max(cfg.temperature, cfg.retry_temperature),
                                           seed=cfg.seed + 1, structured_outputs=so)
        self._frame = self._chat_frame() if use_chat else None

    def _chat(self, message: str) -> str:
        return self.tokenizer.apply_chat_template([{"role": "user", "content": message}],
                                                  tokenize=False, add_generation_prompt=True)

    def _chat_frame(self) -> tuple[str, str] | None:
        """(prefix, suffix) around the user message when the template inserts it verbatim.

        Rendering a Jinja chat template per record costs more than tokenising it; most templates
        just wrap the message, which two different probes detect.
        """
        a, b = "\x00probe-A\x00", "\x00probe-B\x00"
        ra, rb = self._chat(a), self._chat(b)
        if ra.count(a) != 1 or ra.replace(a, b) != rb:
            return None
        pre, post = ra.split(a)
        return pre, post

    def _render(self, query: str) -> str:
        message = prompts.tag_message(query, self.config.output_schema,
                                      vocabulary_hint=self.vocabulary is not None)
        if not self.use_chat:
            return prompts.vicuna_prompt(message)
        if self._frame is not None:
            return self._frame[0] + message + self._frame[1]
        return self._chat(message)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=not self.use_chat)

    def prompt_ids(self, messages_json: Any) -> list[int]:
        """Token ids of the tagging prompt of one conversation; ValueError when it cannot be built."""
        msgs = parse_messages(messages_json)
        users = [m["content"].strip() for m in msgs if m["role"] == "user" and m["content"].strip()]
        if not users:
            raise ValueError("no user turn to tag")
        query = prompts.user_query(users)[: self.config.max_query_chars]
        ids = fit_prompt(lambda f: self._render(cut(query, f)), self._encode, self.budget)
        if ids is None:
            raise ValueError(f"prompt does not fit in {self.budget} tokens")
        return ids

    def _generate(self, prompt_ids: list[list[int]], params: Any) -> list[tuple[str, str | None]]:
        if not prompt_ids:
            return []
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompt_ids], params, use_tqdm=False)
        return [(o.outputs[0].text, o.outputs[0].finish_reason) for o in outs]

    def _check(self, text: str, finish: str | None) -> tuple[list[str] | None, str]:
        if finish == "length":
            return None, f"answer stopped at max_tokens={self.config.max_tokens}"
        try:
            return parse_answer(text, self.config.output_schema), ""
        except ValueError as e:
            return None, str(e)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        ids = [str(x) for x in batch_column(batch, "id")]
        raw_msgs = batch_column(batch, "messages")
        n = len(ids)
        raw: list[list[str]] = [[] for _ in range(n)]
        status = ["failed"] * n
        error = [""] * n
        calls = [0] * n
        todo: list[int] = []
        pids: list[list[int]] = []
        for i, m in enumerate(raw_msgs):
            try:
                pids.append(self.prompt_ids(m))
                todo.append(i)
            except ValueError as e:
                error[i] = str(e)
        retry: list[int] = []
        for i, (text, finish) in zip(todo, self._generate(pids, self.params), strict=True):
            calls[i] = 1
            tags, why = self._check(text, finish)
            if tags is None:
                retry.append(i)
                error[i] = why
            else:
                raw[i], status[i] = tags, "ok"
        if retry:
            where = {i: k for k, i in enumerate(todo)}
            again = self._generate([pids[where[i]] for i in retry], self.retry_params)
            for i, (text, finish) in zip(retry, again, strict=True):
                calls[i] = 2
                tags, why = self._check(text, finish)
                if tags is None:
                    error[i] = f"{error[i]}; retry: {why}"
                else:
                    raw[i], status[i], error[i] = tags, "ok", ""
        cfg = self.config
        if self.mapper is None:
            labels = [normalize_tags(r, cfg.max_tags) for r in raw]
        else:
            labels = self.mapper.map_many(raw, cfg.max_tags, embed=cfg.vocabulary_mode == "map")
        return {
            "id": object_column(ids),
            "labels": object_column(labels),
            "raw_labels": object_column(raw),
            "status": object_column(status),
            "error": object_column(error),
            "calls": np.asarray(calls, dtype=np.int64),
        }
