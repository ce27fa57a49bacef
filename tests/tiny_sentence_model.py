"""A tiny random-weight sentence transformer built at test time: the bundled MiniLM's tokenizer
(the same 30,522 tokens) on a one-layer BERT of width 32. Distilling a static model from it takes
seconds where the bundled MiniLM takes minutes, and every step of the static tagger runs the same."""

from __future__ import annotations

import shutil
from pathlib import Path

WIDTH = 32


def build_tiny_sentence_model(folder: Path) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mig_ray.embeddings import DEFAULT_MODEL, resolve_model

    source = Path(resolve_model(DEFAULT_MODEL))
    bert_dir = folder / "bert"
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=WIDTH, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=2 * WIDTH, max_position_embeddings=512)
    bert = BertModel(config)
    bert.save_pretrained(str(bert_dir))
    tokenizer.save_pretrained(str(bert_dir))
    model = SentenceTransformer(modules=[models.Transformer(str(bert_dir), max_seq_length=256),
                                         models.Pooling(WIDTH, pooling_mode="mean"), models.Normalize()],
                                device="cpu")
    out = folder / "tiny-sentence-model"
    model.save(str(out))
    shutil.rmtree(bert_dir)
    return out
