"""Layouts: detection, normalisation to messages, errors that name the field, stable ids."""

from __future__ import annotations

import json

import pytest
from fixtures import DATA

from mig_ray.errors import BadRecord
from mig_ray.pools.fields import FieldSpec
from mig_ray.pools.layouts import (
    IdRule,
    conversation_id,
    detect_layout,
    messages_json,
    normalise,
    released_annotations,
)

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"}]


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_detect_each_layout():
    assert detect_layout({"dialogs": []}) == "released"
    assert detect_layout({"conversations": []}) == "sharegpt"
    assert detect_layout({"messages": []}) == "openai"
    assert detect_layout({"instruction": "x", "output": "y"}) == "alpaca"
    with pytest.raises(BadRecord, match="no conversation: none of the fields dialogs, conversations"):
        detect_layout({"text": "hello"})
    with pytest.raises(BadRecord, match="not a JSON object"):
        detect_layout([1, 2])


def test_sharegpt_roles_map_to_chat_roles():
    rec = {"conversations": [{"from": "system", "value": "Be brief."},
                             {"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4"}]}
    assert normalise(rec) == ("sharegpt", CHAT)


def test_openai_messages_and_text_parts():
    assert normalise({"messages": CHAT}) == ("openai", CHAT)
    text_parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    parts = {"messages": [{"role": "user", "content": text_parts}, {"role": "assistant", "content": "c"}]}
    assert normalise(parts)[1][0] == {"role": "user", "content": "a\nb"}
    with pytest.raises(BadRecord, match=r"content part not text: messages\[0\].content\[0\]"):
        normalise({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})


def test_alpaca_with_and_without_input():
    assert normalise({"instruction": "Sum.", "input": "2, 2", "output": "4"})[1] == [
        {"role": "user", "content": "Sum.\n\n2, 2"}, {"role": "assistant", "content": "4"}]
    assert normalise({"instruction": "Say hi.", "input": "", "output": "hi"})[1][0]["content"] == "Say hi."


def test_self_instruct_seed_tasks_use_their_first_instance():
    rec = json.loads(_lines(DATA / "alpaca_seed_tasks_175.jsonl")[1])
    layout, msgs = normalise(rec)
    inst = rec["instances"][0]
    assert layout == "alpaca"
    assert msgs == [{"role": "user", "content": f"{rec['instruction']}\n\n{inst['input']}"},
                    {"role": "assistant", "content": inst["output"]}]


def test_released_layout_from_the_real_pool():
    rec = json.loads(_lines(DATA / "mig_example_tulu3_10.jsonl")[0])
    layout, msgs = normalise(rec)
    assert layout == "released"
    assert msgs == rec["dialogs"]
    labels, score = released_annotations(rec)
    assert labels == rec["annotation"]["instag"]["content"]
    assert score == FieldSpec().score(rec)
    assert released_annotations({"dialogs": CHAT}) == (None, None)


@pytest.mark.parametrize(("rec", "layout", "reason"), [
    ({"conversations": [{"from": "alien", "value": "x"}]}, "auto",
     r"unknown role: conversations\[0\].from = 'alien'"),
    ({"conversations": [{"value": "x"}]}, "auto", r"missing role: conversations\[0\].from"),
    ({"conversations": [{"from": "human"}]}, "auto", r"missing content: conversations\[0\].value"),
    ({"conversations": [{"from": "human", "value": " "}]}, "auto",
     r"empty content: conversations\[0\].value"),
    ({"conversations": "hi"}, "auto", r"conversation not a list: conversations"),
    ({"conversations": []}, "auto", r"empty conversation: conversations"),
    ({"messages": [{"role": "user", "content": 3}]}, "auto", r"content not a string: messages\[0\].content"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, "auto", r"no user turn: messages"),
    ({"dialogs": ["x"]}, "auto", r"turn not an object: dialogs\[0\]"),
    ({"instruction": "", "output": "y"}, "auto", r"empty content: instruction"),
    ({"instruction": "x"}, "auto", r"missing content: output"),
    ({"instruction": "x", "instances": [{"input": "", "output": ""}]}, "auto",
     r"empty content: instances\[0\].output"),
    ({"messages": CHAT}, "sharegpt", r"missing field: conversations \(layout sharegpt\)"),
])
def test_bad_records_name_the_field(rec, layout, reason):
    with pytest.raises(BadRecord, match=reason):
        normalise(rec, layout)


def test_unknown_layout_name_is_a_usage_error():
    with pytest.raises(ValueError, match="unknown layout 'vicuna'"):
        normalise({"messages": CHAT}, "vicuna")


def test_empty_system_prompt_is_dropped():
    msgs = normalise({"messages": [{"role": "system", "content": ""}, *CHAT[1:]]})[1]
    assert msgs == CHAT[1:]


def test_conversation_id_is_a_stable_content_hash():
    sharegpt = {"conversations": [{"value": "What is 2+2?", "from": "human"}, {"from": "gpt", "value": "4"}]}
    openai = {"messages": [{"content": "What is 2+2?", "role": "user"},
                           {"role": "assistant", "content": "4"}]}
    a = conversation_id(normalise(sharegpt)[1])
    assert a == conversation_id(normalise(openai)[1])
    assert len(a) == 24 and int(a, 16) >= 0
    assert a == "63afddb8985d47d7211285fe"  # pinned: ids must not change between releases
    changed = {"messages": [{"role": "user", "content": "What is 2+3?"},
                            {"role": "assistant", "content": "4"}]}
    assert conversation_id(normalise(changed)[1]) != a
    assert json.loads(messages_json(CHAT)) == CHAT


def test_pool_id_wins_over_the_content_hash():
    msgs = normalise({"messages": CHAT})[1]
    assert IdRule()({"_id": "a", "id": "b", "messages": CHAT}, msgs) == "a"
    assert IdRule()({"id": 7, "messages": CHAT}, msgs) == "7"
    assert IdRule()({"messages": CHAT}, msgs) == conversation_id(msgs)
    rule = IdRule("meta.uid")
    assert rule({"meta": {"uid": "u1"}, "messages": CHAT}, msgs) == "u1"
    with pytest.raises(BadRecord, match="missing id: meta.uid"):
        rule({"messages": CHAT}, msgs)
    with pytest.raises(BadRecord, match="id not a string"):
        IdRule()({"_id": ["x"], "messages": CHAT}, msgs)


def test_malformed_released_annotations_are_bad_records():
    with pytest.raises(BadRecord, match="labels not a list of strings: annotation.instag.content"):
        released_annotations({"annotation": {"instag": {"content": "math"}}})
    with pytest.raises(BadRecord, match="annotation.deita"):
        released_annotations({"annotation": {"deita": {"quality_scores": [1], "complexity_scores": []}}})


def _outcome(fn, *args):
    try:
        return "ok", fn(*args)
    except BadRecord as e:
        return "bad", e.reason


def test_the_fast_turn_reader_equals_the_checked_one_on_hostile_turns():
    """`read_turns` reads well-formed turns in a few lookups and hands anything else to
    `read_turns_checked`: on every turn list, well-formed or not, both give the same messages or the
    same reason. Turns are drawn from parts that break one rule each (role spelling and type,
    content type, blank content, missing keys, non-dict turns)."""
    import random

    from mig_ray.pools.layouts import OPENAI_ROLES, SHAREGPT_ROLES, read_turns, read_turns_checked

    rng = random.Random(7)
    roles = ["user", "assistant", "system", "developer", "User", " user ", "ASSISTANT", "human", "gpt",
             "Human", "alien", "", 3, None, ["user"], True]
    contents = ["hi", "", "  ", "\n", "x" * 5, 3, None, ["a"], [{"type": "text", "text": "a"}],
                [{"type": "image"}], {"text": "a"}, 1.5]

    def turn():
        kind = rng.random()
        if kind < 0.5:  # well-formed in both layouts
            return {"role": "user", "from": "human", "content": "hi", "value": "hi"}
        if kind < 0.53:
            return rng.choice(["a turn", 1, None, ["user", "hi"]])
        t = {}
        if rng.random() > 0.05:
            t["role"] = t["from"] = rng.choice(roles)
        if rng.random() > 0.05:
            t["content"] = t["value"] = rng.choice(contents)
        return t

    fast_hits = 0
    for _ in range(4000):
        turns = [turn() for _ in range(rng.randint(0, 4))]
        if rng.random() < 0.05:
            turns = rng.choice(["x", None, {}])
        for key, role_key, text_key, table in (("messages", "role", "content", OPENAI_ROLES),
                                               ("conversations", "from", "value", SHAREGPT_ROLES)):
            got, want = _outcome(read_turns, turns, key, role_key, text_key, table), \
                _outcome(read_turns_checked, turns, key, role_key, text_key, table)
            assert got == want, turns
            fast_hits += got[0] == "ok"
    assert fast_hits > 1000  # the draw reaches well-formed lists too, not only errors
