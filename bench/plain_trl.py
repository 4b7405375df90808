"""Plain TRL SFT (full fine-tune), written the way a user would, as the baseline for `make bench`.

Runs SFTTrainer with assistant-only loss on a chat JSONL file and prints one JSON object:
wall_s (whole script: imports, load, train, save), train_s (trainer.train only), tokens
(non-padding tokens trained), train_tokens_per_s, steps, final_loss, peak_rss_mib and, with
--validation, eval_loss (after training). Everything else is SFTConfig's defaults: padded
batches, no packing, TRL's gradient checkpointing. The only dashtune code used is
ensure_tiny_model, to get the same built-in model a dashtune job trains.

    python bench/plain_trl.py --data train.jsonl [--validation val.jsonl] [--model DIR]
        [--epochs 3] [--batch-size 8]
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help='JSONL of {"messages": [...]} samples')
    p.add_argument("--validation", help="JSONL evaluated after training (eval_loss)")
    p.add_argument("--model", help="model dir (default: build dashtune-tiny in a temp dir)")
    p.add_argument("--output", help="output dir (default: a temp dir)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--lr-scheduler", default="cosine")
    p.add_argument("--warmup-ratio", type=float, default=0.05)
    p.add_argument("--logging-steps", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="plain-trl-")
    model_dir = args.model
    if model_dir is None:
        from dashtune.trainer.tiny import ensure_tiny_model

        model_dir = ensure_tiny_model(os.path.join(work, "dashtune-tiny"))
    output = args.output or os.path.join(work, "out")

    def read(path: str) -> Dataset:
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return Dataset.from_list([{"messages": r["messages"]} for r in rows])

    dataset = read(args.data)
    eval_dataset = read(args.validation) if args.validation else None
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)

    config = SFTConfig(
        output_dir=output,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type=args.lr_scheduler,
        warmup_steps=args.warmup_ratio,
        max_length=args.max_length,
        assistant_only_loss=True,
        logging_steps=args.logging_steps,
        save_strategy="no",
        seed=args.seed,
        include_num_input_tokens_seen="non_padding",
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
    )
    result = trainer.train()
    eval_loss = trainer.evaluate()["eval_loss"] if eval_dataset is not None else None
    trainer.save_model(os.path.join(output, "final"))

    tokens = int(trainer.state.num_input_tokens_seen)
    train_s = float(result.metrics["train_runtime"])
    print(
        json.dumps(
            {
                "wall_s": round(time.perf_counter() - STARTED, 3),
                "train_s": round(train_s, 3),
                "tokens": tokens,
                "train_tokens_per_s": round(tokens / train_s, 1) if train_s else None,
                "steps": trainer.state.global_step,
                "final_loss": round(float(result.training_loss), 4),
                "eval_loss": None if eval_loss is None else round(float(eval_loss), 4),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
    )


if __name__ == "__main__":
    main()
