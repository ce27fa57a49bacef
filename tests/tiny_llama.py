"""A tiny random-weight Llama built at test time, so vLLM tests need no hub download.

Byte-level BPE (any string, hence any JSON, is expressible; structured outputs need that), digits
split one per token so "1".."6" are single tokens as in the DEITA scorers, and a chat template so
the tagger's chat path is exercised. Random weights: outputs are noise, but real vLLM code runs.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_CORPUS = [
    "Write a Python function that sorts a list of numbers.",
    "Explain the theory of relativity in simple terms.",
    "Translate this sentence into French, please.",
    "What is the capital of France? Answer briefly.",
    "Give me a recipe for a vegetarian lasagna with spinach.",
    "Summarise the following article about climate change.",
    'JSON: ["programming", "math", "translation"] {"tag": "coding", "explanation": "asks for code"}',
    "You are a helpful assistant. Please identify the quality score of the Response.",
    "Please identify the complexity score of the following user query. ##Complexity: ",
    "score 1 2 3 4 5 6 7 8 9 0 tags intent information request creative writing data analysis",
]


def build_tiny_llama(out_dir: str | Path, hidden_size: int = 128, num_layers: int = 2,
                     vocab_size: int = 512, seed: int = 0) -> Path:
    """Train a small BPE tokenizer and save a random Llama with it; returns the model folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=2048, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id, tie_word_embeddings=False, torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.generation_config.do_sample = False
    model.save_pretrained(out, safe_serialization=True)
    return out


if __name__ == "__main__":
    import sys

    print(build_tiny_llama(sys.argv[1] if len(sys.argv) > 1 else "tiny_llama"))
