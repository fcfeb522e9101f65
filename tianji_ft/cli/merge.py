"""``tianji-ft merge``: merge a LoRA adapter into its base model, shard by shard, in low memory."""

from __future__ import annotations

from pathlib import Path

from tianji_ft.cli._common import add_verb
from tianji_ft.core.errors import UserError

EXAMPLE = """tianji-ft merge work_dirs/wishes/adapter              # BASE from the adapter's manifest -> work_dirs/wishes/merged
tianji-ft merge models/internlm2-chat-7b work_dirs/wishes/adapter -o work_dirs/wishes/merged
tianji-ft merge models/llama3-8b-instruct work_dirs/llama3/adapter -o merged --dtype bf16 --max-shard-size 5GB"""


def register(sub) -> None:
    p = add_verb(sub, "merge", "Merge a LoRA adapter into its base model (one tensor at a time, fp32 merge, "
                               "safetensors out).", EXAMPLE, run)
    p.add_argument("models", metavar="[BASE] ADAPTER", nargs="+",
                   help="base model folder (default: the one the adapter's run manifest names) and the adapter "
                        "folder (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="folder for the merged model, written atomically (default: WORK_DIR/merged for an adapter in a "
                        "work dir's layout, else ADAPTER-merged beside it)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing, non-empty output folder this command did not make (never one holding an input)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                   help="output dtype; auto keeps the base model's (default: auto)")
    p.add_argument("--max-shard-size", default="2GB", metavar="SIZE", help="largest shard, e.g. 2GB, 500MB (default: 2GB)")


def run(args) -> int:
    import time

    from tianji_ft.core.layout import MERGED, OLLAMA, sibling_output
    from tianji_ft.weights.merge import merge

    if len(args.models) > 2:
        raise UserError(f"merge takes BASE and ADAPTER (or ADAPTER alone), not {len(args.models)} folders")
    base, adapter = (args.models if len(args.models) == 2 else (base_from_manifest(args.models[0]), args.models[0]))
    start = time.monotonic()
    output = args.output or sibling_output(adapter, MERGED)
    out = merge(base, adapter, output, dtype=args.dtype, max_shard_size=args.max_shard_size,
                overwrite=args.overwrite, quiet=args.quiet)
    print(f"merged -> {out} ({time.monotonic() - start:.1f} s)")
    print(f"next: tianji-ft chat {out}   (or tianji-ft eval {out} --data TEST.jsonl; "
          f"tianji-ft export ollama {out} -o {sibling_output(out, OLLAMA)})")
    return 0


def base_from_manifest(adapter: str) -> str:
    """The base model an adapter was trained on, from the run manifest convert copied beside it."""
    from tianji_ft.core.manifest import model_manifest

    base = model_manifest(adapter).get("model") if Path(adapter).is_dir() else None
    if not base:
        raise UserError(f"{adapter}: no run manifest names its base model; pass it: tianji-ft merge BASE {adapter} "
                        "-o OUT")
    return base
