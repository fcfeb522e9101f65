"""``tianji-ft merge``: merge a LoRA adapter into its base model, shard by shard, in low memory."""

from __future__ import annotations

from tianji_ft.cli._common import add_verb

EXAMPLE = """tianji-ft merge models/internlm2-chat-7b work_dirs/wishes/hf_adapter -o work_dirs/wishes/merged
tianji-ft merge models/llama3-8b-instruct work_dirs/llama3/hf_adapter -o merged --dtype bf16 --max-shard-size 5GB"""


def register(sub) -> None:
    p = add_verb(sub, "merge", "Merge a LoRA adapter into its base model (one tensor at a time, fp32 merge, "
                               "safetensors out).", EXAMPLE, run)
    p.add_argument("base", metavar="BASE", help="base model folder (the model the adapter was trained on)")
    p.add_argument("adapter", metavar="ADAPTER", help="adapter folder (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for the merged model (written atomically)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing, non-empty output folder this command did not make (never one holding an input)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                   help="output dtype; auto keeps the base model's (default: auto)")
    p.add_argument("--max-shard-size", default="2GB", metavar="SIZE", help="largest shard, e.g. 2GB, 500MB (default: 2GB)")


def run(args) -> int:
    import time

    from tianji_ft.weights.merge import merge

    start = time.monotonic()
    out = merge(args.base, args.adapter, args.output, dtype=args.dtype, max_shard_size=args.max_shard_size,
                overwrite=args.overwrite, quiet=args.quiet)
    print(f"merged -> {out} ({time.monotonic() - start:.1f} s)")
    return 0
