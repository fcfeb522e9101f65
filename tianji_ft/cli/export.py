"""``tianji-ft export ollama|gguf``: a merged model, or a base plus its LoRA adapter -> GGUF (+ Modelfile)."""

from __future__ import annotations

from tianji_ft.cli._common import add_verb

EXAMPLE = """tianji-ft export ollama work_dirs/wishes/merged --quant q8_0        # -> work_dirs/wishes/ollama
cd work_dirs/wishes/ollama && ollama create wishes -f Modelfile && ollama run wishes
tianji-ft export ollama models/internlm2-chat-7b --adapter work_dirs/wishes/adapter -o ollama/wishes-lora"""


def register(sub) -> None:
    verb = add_verb(sub, "export", "Export a model for other runtimes.", EXAMPLE)
    verb.set_defaults(func=lambda args: verb.print_help() or 2)
    targets = verb.add_subparsers(dest="export_target", metavar="TARGET")
    for target, summary, func in (
            ("ollama", "Write GGUF (InternLM2 or Llama family) and a Modelfile (template, stop tokens, system "
                       "prompt, sampling defaults) for Ollama / llama.cpp.", run_ollama),
            ("gguf", "Write only the GGUF file(s) (InternLM2 or Llama family), for llama.cpp.", run_gguf)):
        p = add_verb(targets, target, summary, EXAMPLE, func)
        p.add_argument("model_dir", metavar="MODEL_DIR",
                       help="merged model folder (tianji-ft merge or convert), or the base model with --adapter")
        p.add_argument("-o", "--output", metavar="DIR",
                       help="folder for the files written (default: WORK_DIR/ollama for a model or adapter in a work "
                            "dir's layout; required otherwise)")
        p.add_argument("--adapter", metavar="ADAPTER_DIR",
                       help="a LoRA adapter trained on MODEL_DIR: written as a GGUF LoRA beside the base GGUF "
                            "(the Modelfile loads it with ADAPTER), so the adapter ships on its own")
        p.add_argument("--quant", default="f16", choices=["f16", "q8_0", "q5_1"],
                       help="GGUF weight type of the model (default: f16; the LoRA is f16)")
        p.add_argument("--overwrite", action="store_true",
                       help="replace an existing, non-empty output folder this command did not make "
                            "(never one holding an input)")
        p.add_argument("--name", help="model name inside the GGUF and the file names (default: the work dir's name "
                                      "for a run's folder, else the folder's name)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def default_output(model_dir: str, adapter: str | None) -> str:
    from tianji_ft.core.errors import UserError
    from tianji_ft.core.layout import OLLAMA, work_dir_of

    work_dir = work_dir_of(adapter) or work_dir_of(model_dir)
    if work_dir is None:
        raise UserError(f"{model_dir} is not a folder of a training work dir (WORK_DIR/merged or WORK_DIR/adapter): "
                        "say where the files go with -o DIR")
    return str(work_dir / OLLAMA)


def default_name(model_dir: str, adapter: str | None) -> str | None:
    """A run's folders are named for their role (merged, adapter): the model is named for its run."""
    from tianji_ft.core.layout import work_dir_of

    work_dir = work_dir_of(adapter) or work_dir_of(model_dir)
    return work_dir.name if work_dir else None


def _export(args, modelfile: bool):
    from tianji_ft.weights.gguf import export_ollama

    args.output = args.output or default_output(args.model_dir, args.adapter)
    args.name = args.name or default_name(args.model_dir, args.adapter)
    result = export_ollama(args.model_dir, args.output, quant=args.quant, name=args.name, overwrite=args.overwrite,
                           adapter=args.adapter, modelfile=modelfile, quiet=args.quiet)
    print(f"wrote {result.gguf}" + (f" and {result.adapter}" if result.adapter else ""))
    return result


def run_ollama(args) -> int:
    result = _export(args, modelfile=True)
    print(f"wrote {result.modelfile}")
    print(f"next: cd {result.modelfile.parent} && ollama create {result.name} -f Modelfile && ollama run {result.name}")
    return 0


def run_gguf(args) -> int:
    result = _export(args, modelfile=False)
    lora = f" --lora {result.adapter}" if result.adapter else ""
    print(f"next: llama-cli -m {result.gguf}{lora} -cnv")
    return 0
