"""``tianji-ft export ollama``: a merged (or fully fine-tuned) model -> GGUF + Modelfile for Ollama."""

from __future__ import annotations

from tianji_ft.cli._common import add_verb

EXAMPLE = """tianji-ft export ollama work_dirs/llama3/merged -o ollama/llama3-tianji --quant q5_1
cd ollama/llama3-tianji && ollama create llama3-tianji -f Modelfile && ollama run llama3-tianji"""


def register(sub) -> None:
    verb = add_verb(sub, "export", "Export a model for other runtimes.", EXAMPLE)
    verb.set_defaults(func=lambda args: verb.print_help() or 2)
    targets = verb.add_subparsers(dest="export_target", metavar="TARGET")
    p = add_verb(targets, "ollama", "Write a GGUF file and a Modelfile (template, stop tokens, system prompt, "
                                    "sampling defaults) for Ollama / llama.cpp.", EXAMPLE, run_ollama)
    p.add_argument("model_dir", metavar="MODEL_DIR", help="merged model folder (from tianji-ft merge or convert)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the .gguf and the Modelfile")
    p.add_argument("--quant", default="f16", choices=["f16", "q8_0", "q5_1"], help="GGUF weight type (default: f16)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing, non-empty output folder this command did not make (never one holding an input)")
    p.add_argument("--name", help="model name inside the GGUF and the file name (default: the folder's name)")


def run_ollama(args) -> int:
    from tianji_ft.weights.gguf import export_ollama

    result = export_ollama(args.model_dir, args.output, quant=args.quant, name=args.name, overwrite=args.overwrite)
    print(f"wrote {result.gguf} and {result.modelfile}")
    print(f"next: cd {result.modelfile.parent} && ollama create {result.name} -f Modelfile && ollama run {result.name}")
    return 0
