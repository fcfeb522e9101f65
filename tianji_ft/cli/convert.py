"""``tianji-ft convert``: a training checkpoint -> a Hugging Face adapter (LoRA) or model (full fine-tune)."""

from __future__ import annotations

from tianji_ft.cli._common import add_verb

EXAMPLE = """tianji-ft convert work_dirs/wishes                      # last checkpoint -> work_dirs/wishes/adapter
tianji-ft convert work_dirs/wishes --iter 500 -o adapters/wishes_iter500"""


def register(sub) -> None:
    p = add_verb(sub, "convert", "Convert a work dir's checkpoint (.pth or DeepSpeed folder) to safetensors, "
                                 "with the tokenizer, using the run's own config.", EXAMPLE, run)
    p.add_argument("work_dir", metavar="WORK_DIR", help="the training work dir (holds tianji_run.json and iter_*.pth)")
    p.add_argument("--iter", type=int, dest="iteration", metavar="N", help="convert iter_N.pth (default: the last checkpoint)")
    p.add_argument("-o", "--output", metavar="OUT", help="output folder (default: WORK_DIR/adapter for LoRA, WORK_DIR/merged for a full fine-tune)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing, non-empty output folder this command did not make (never one holding an input)")


def run(args) -> int:
    from tianji_ft.core.layout import MERGED, sibling_output
    from tianji_ft.weights.convert import convert

    out = convert(args.work_dir, iteration=args.iteration, out_dir=args.output, overwrite=args.overwrite)
    print(f"converted -> {out}")
    if (out / "adapter_config.json").is_file():
        merged = sibling_output(out, MERGED)
        print(f"next: tianji-ft merge {out}   (-> {merged}; or chat with the adapter as it is: tianji-ft chat {out})")
    else:
        print(f"next: tianji-ft chat {out}")
    return 0
