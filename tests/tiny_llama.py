"""A tiny random Llama with a sentencepiece tokenizer, made offline, for the GGUF export tests."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = (
    "the bottle screw cable tile part is looks normal defective anomalous region regions at top bottom left "
    "right center covering of image score threshold above below reject pass it small large medium"
).split()


def make_tiny_llama(out: Path, hidden: int = 256, broken_tokenizer: bool = False) -> Path:
    """Write a Hugging Face Llama directory (random weights) to ``out``.

    ``hidden=256`` keeps rows divisible by 256, so Q4_K_M is a real K-quant.
    ``broken_tokenizer`` writes a vocabulary that does not fit the model,
    the kind of file that makes llama.cpp abort.
    """
    import sentencepiece as spm
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choices(WORDS, k=12)) + " 0.42 1.3%." for _ in range(3000)))
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(out / "tokenizer"),
        vocab_size=512,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        pad_id=-1,
        unk_id=0,
        bos_id=1,
        eos_id=2,
    )
    corpus.unlink()
    tokenizer = LlamaTokenizer.from_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    vocab = 3 if broken_tokenizer else tokenizer.vocab_size
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(str(out))
    return out
