"""Tag normalisation and vocabulary mapping (no Ray, no vLLM)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mig_ray.annotate.tags import (
    VocabularyMapper,
    clean_tag,
    load_vocabulary,
    normalize_tag,
    normalize_tags,
    singular_word,
)


def test_clean_case_whitespace_punctuation() -> None:
    assert clean_tag("  Python\t  Programming. ") == "python programming"
    assert clean_tag('"Data Analysis"') == "data analysis"
    assert clean_tag("**C#**") == "c#"
    assert clean_tag("ｄａｔａ") == "data"  # NFKC folds full-width letters
    assert clean_tag(" .;- ") == ""


@pytest.mark.parametrize(("word", "singular"), [
    ("strategies", "strategy"), ("boxes", "box"), ("tags", "tag"), ("matches", "match"),
    ("analysis", "analysis"), ("mathematics", "mathematics"), ("business", "business"),
    ("focus", "focus"), ("news", "news"), ("series", "series"), ("aws", "aws"), ("node.js", "node.js"),
    ("awareness", "awareness"), ("is", "is"),
])
def test_simple_plurals(word: str, singular: str) -> None:
    assert singular_word(word) == singular


def test_normalize_tags_dedupes_in_order_and_caps() -> None:
    raw = ["Python Programmings", "python programming", " ", "Recipes", "recipe", "Math", "Code Reviews"]
    assert normalize_tags(raw) == ["python programming", "recipe", "math", "code review"]
    assert normalize_tags(raw, max_tags=2) == ["python programming", "recipe"]
    assert normalize_tag("Data  Analyses") == "data analyse"  # simple rules, not a lemmatiser


def test_load_vocabulary_formats(tmp_path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(["Math", "math", "coding ", " .; "]))
    (tmp_path / "b.json").write_text(json.dumps({"Math": 3, "poetry": 1}))
    (tmp_path / "c.txt").write_text("math\n\n poetry \n")
    (tmp_path / "e.tags").write_text(json.dumps(["json", "without a .json name"]))
    # the file's spellings, one per cleaned form (first wins); nothing that cleans to ""
    assert load_vocabulary(tmp_path / "a.json") == ["Math", "coding "]
    assert load_vocabulary(tmp_path / "b.json") == ["Math", "poetry"]
    assert load_vocabulary(tmp_path / "c.txt") == ["math", "poetry"]
    assert load_vocabulary(tmp_path / "e.tags") == ["json", "without a .json name"]
    (tmp_path / "d.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="list of strings"):
        load_vocabulary(tmp_path / "d.json")
    (tmp_path / "f.json").write_text(json.dumps([" ", "--"]))
    with pytest.raises(ValueError, match="no tags"):
        load_vocabulary(tmp_path / "f.json")


def test_tagger_vocabulary_passes_the_selection_filter(tmp_path) -> None:
    """Whatever the mapper answers is in the valid-tag set `mig-ray select` reads from the same file,
    also for a file whose tags are not in cleaned form."""
    from mig_ray.pools.annotated import load_valid_tags

    tags = ["Code Generation", "code generation", "  Data Analysis", "Recipes", "poetry"]
    for name, text in (("v.json", json.dumps(tags)), ("v.txt", "\n".join(tags) + "\n")):
        path = tmp_path / name
        path.write_text(text)
        vocab = load_vocabulary(path)
        m = VocabularyMapper(vocab, threshold=0.99, encoder=_fake_encoder({}))
        got = m.map_many([["code generation", "CODE GENERATION!", "data analysis", "recipe", "Poetry"]],
                         embed=False)[0]
        assert len(got) == 4
        assert set(got) <= load_valid_tags(path), (name, got)


def _fake_encoder(table: dict[str, list[float]]):
    def encode(texts: list[str]) -> np.ndarray:
        v = np.asarray([table[t] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    encode.calls = []  # type: ignore[attr-defined]

    def counted(texts: list[str]) -> np.ndarray:
        encode.calls.append(list(texts))  # type: ignore[attr-defined]
        return encode(texts)
    counted.calls = encode.calls  # type: ignore[attr-defined]
    return counted


def test_mapper_exact_singular_nearest_and_threshold() -> None:
    table = {"programming": [1, 0, 0], "keywords": [0, 1, 0], "cooking": [0, 0, 1],
             "coding": [0.95, 0.05, 0], "baking": [0.1, 0, 0.9], "astronomy": [0.5, 0.5, 0.5]}
    enc = _fake_encoder(table)
    m = VocabularyMapper(["Programming", "keywords", "cooking"], threshold=0.9, encoder=enc)
    got = m.map_many([["Programming", "Coding", "keywords", "Keyword"], ["baking", "astronomy", "cooking"]])
    # exact (answered in the vocabulary's spelling); nearest above threshold (dup of programming
    # dropped); exact plural tag kept; singular match
    assert got == [["Programming", "keywords"], ["cooking"]]
    # vocabulary embedded once, each unknown tag once, in one batch
    assert enc.calls == [["coding", "baking", "astronomy"], ["programming", "keywords", "cooking"]]
    assert m.map(["coding", "baking"]) == ["Programming", "cooking"]
    assert len(enc.calls) == 2  # answers cached
    assert m.map_many([["Coding", "unknown"]], embed=False) == [[]]


def test_mapper_with_bundled_model() -> None:
    vocab = ["python programming", "cooking", "translation", "mathematics", "poetry write", "travel planning"]
    m = VocabularyMapper(vocab, threshold=0.75)
    got = m.map_many([["Python coding"], ["poem writing"], ["xyzzy blorp"]])
    assert got == [["python programming"], ["poetry write"], []]
