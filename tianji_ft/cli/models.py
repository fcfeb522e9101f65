"""``tianji-ft models download``: fetch the base model a config was written for."""

from __future__ import annotations

import sys

from tianji_ft.cli._common import add_verb, old_names

EXAMPLE = """tianji-ft models download internlm2_chat_7b_qlora_wishes_e3            # Hugging Face -> models/internlm2-chat-7b
tianji-ft models download llama3_8b_instruct_qlora_chinese_e1 --source modelscope -o /data/llama3
tianji-ft models download Shanghai_AI_Laboratory/internlm2-chat-7b -o models/internlm2-chat-7b"""


def register(subparsers) -> None:
    from tianji_ft.models.download import DEFAULT_SOURCE

    verb = add_verb(subparsers, "models", "Download base models (ModelScope or Hugging Face).", EXAMPLE.splitlines()[0])
    sub = verb.add_subparsers(dest="models_command", metavar="COMMAND", required=True)
    p = add_verb(sub, "download",
                 "Download a config's model (resumable); prints the local path to pass as --model. Needs the network.",
                 EXAMPLE, func=_download)
    p.add_argument("name", help="config name/path (its tianji_meta.hub names the model) or a hub id owner/model")
    p.add_argument("--source", choices=("modelscope", "huggingface"), default=DEFAULT_SOURCE,
                   help="hub to download from (default: %(default)s, which the install includes; modelscope needs "
                        "`pip install modelscope`; "
                        "for Hugging Face through a mirror set HF_ENDPOINT=https://hf-mirror.com)")
    p.add_argument("-o", "--output", "--out", dest="out", metavar="DIR", action=old_names("--out"),
                   help="folder for the weights (default: where the config looks, e.g. models/internlm2-chat-7b)")


def _download(args) -> int:
    from tianji_ft.models.download import download_model, model_target

    repo_id, default_dir = model_target(args.name, args.source)
    print(f"downloading {repo_id} from {args.source} to {args.out or default_dir} (rerun to resume)", file=sys.stderr)
    path = download_model(args.name, source=args.source, out=args.out)
    print(path)
    return 0
