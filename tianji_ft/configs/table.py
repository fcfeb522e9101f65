"""Models, datasets and workflows the configs in ``xtuner_configs`` are rendered from.

Everything a config says lives here once; ``template.py`` only lays it out.
Values are the seeds' own settings (the tutorial or stock config each
workflow reproduces, named in its ``source``). Changing a workflow's
behaviour means bumping its ``version`` and adding a line to
``xtuner_configs/CHANGELOG.md``; ``python -m tianji_ft.configs.render``
then rewrites the files.
"""

from __future__ import annotations

# Where training batches come from: (module, function). XTuner's own
# ``process_hf_dataset``, or the project's cached builder, which takes the
# same arguments plus ``seed=`` and packs deterministically.
XTUNER_BUILDER = ("xtuner.dataset", "process_hf_dataset")
CACHED_BUILDER = ("tianji_ft.configs.dataset_cache", "cached_process_hf_dataset")
DATASET_BUILDER = CACHED_BUILDER

# Seed tutorials and configs, pinned to the commit they were read at.
SRC_XTUNER = "InternLM/xtuner @ v0.2.0 : xtuner/configs/"
SRC_INTERNLM_TUTORIAL = "InternLM/Tutorial @ c4a5fdcffafb290fc44d9eabb249a253c8fd64a1 : xtuner/README.md (branch camp1)"
SRC_TIANJI_DOC = "SocialAI-tianji/Tianji @ 657832ec79f3450f919334bafdcff78cb90a08bc : docs/finetune/tianji-wishes-chinese.md"
SRC_TIANJI_QLORA = "SocialAI-tianji/Tianji @ 9f0f3ae3ee62d011ad26d481fc3c8964d26b7124 : tianji/finetune/xtuner/internlm2_chat_7b_qlora_oasst1_e3.py"
SRC_TIANJI_FULL = "SocialAI-tianji/Tianji @ 9f0f3ae3ee62d011ad26d481fc3c8964d26b7124 : tianji/finetune/xtuner/internlm2_chat_7b_full_finetune.py"
SRC_LLAMA3_CN = "CrazyBoyM/llama3-Chinese-chat @ ff32d17a1c90f954f7eb1ce358246c48ffc69258 : README.md (training data)"

# family: which chat format the weights expect; template: XTuner PROMPT_TEMPLATE
# name used for training, the evaluation hook and later chat/convert steps.
# local_dir: where `tianji-ft models download` puts the weights by default and
# where the config looks for them when TIANJI_MODEL is unset.
MODELS = {
    "internlm-chat-7b": dict(
        family="internlm",
        template="internlm_chat",
        hub=dict(modelscope="Shanghai_AI_Laboratory/internlm-chat-7b", huggingface="internlm/internlm-chat-7b"),
        local_dir="models/internlm-chat-7b",
    ),
    # A base model: the MS-Agent seed trains it with the plain `default` template.
    "internlm-7b": dict(
        family="internlm",
        template="default",
        hub=dict(modelscope="Shanghai_AI_Laboratory/internlm-7b", huggingface="internlm/internlm-7b"),
        local_dir="models/internlm-7b",
    ),
    "internlm2-chat-7b": dict(
        family="internlm2",
        template="internlm2_chat",
        hub=dict(modelscope="Shanghai_AI_Laboratory/internlm2-chat-7b", huggingface="internlm/internlm2-chat-7b"),
        local_dir="models/internlm2-chat-7b",
    ),
    # llama3_chat: stop word <|eot_id|>, no default system prompt.
    "llama3-8b-instruct": dict(
        family="llama3",
        template="llama3_chat",
        hub=dict(modelscope="LLM-Research/Meta-Llama-3-8B-Instruct", huggingface="meta-llama/Meta-Llama-3-8B-Instruct"),
        local_dir="models/Meta-Llama-3-8B-Instruct",
    ),
}

# format: what the rows look like; it picks the dataset map function
# ("conversation": none, "oasst1": oasst1_map_fn, "msagent": msagent_react_map_fn;
# "preference": prompt/chosen/rejected records, tianji_ft/data/preference.py, no map function).
# file: default training file (TIANJI_DATA overrides), relative to where training runs.
# tiny_data: small sample in the same format, for `tianji-ft train --tiny`.
DATASETS = {
    # timdettmers/openassistant-guanaco, downloaded as in the InternLM tutorial.
    "oasst1": dict(
        format="oasst1",
        file="data/openassistant-guanaco/openassistant_best_replies_train.jsonl",
        tiny_data=["data/samples_small/guanaco.jsonl"],
    ),
    # MedQA2019 (Medication QA) converted to conversations with the doctor system prompt.
    "medqa2019": dict(
        format="conversation",
        file="data/medqa/train.jsonl",
        tiny_data=["data/samples_small/medqa.jsonl"],
    ),
    # damo/MSAgent-Bench raw rows (`tianji-ft data convert msagent --keep-raw`).
    "msagent": dict(
        format="msagent",
        file="data/msagent/train.jsonl",
        tiny_data=["data/samples_small/msagent.jsonl"],
    ),
    # sanbu/tianji-wishes-chinese, or `tianji-ft synth wishes` output.
    "wishes": dict(
        format="conversation",
        file="data/wishes/tianji-wishes-chinese-v0.2.json",
        tiny_data=["data/demo/wishes.jsonl"],
    ),
    # firefly + moss-003 + school_math + ruozhiba, built by `tianji-ft data mix data/mix/llama3_chinese.json`.
    "llama3_chinese_mix": dict(
        format="conversation",
        file="work_dirs/data/llama3_chinese_mix.jsonl",
        tiny_data=["data/samples_small/llama3_mix.jsonl"],
    ),
    # Preference pairs for the wishes model: `tianji-ft synth pairs -o data/wishes/pairs` (judged answers of the SFT model).
    "wishes_pairs": dict(
        format="preference",
        file="data/wishes/pairs/pairs.jsonl",
        tiny_data=["data/samples_small/wishes_pairs.jsonl"],
    ),
    # Any preference data in the same format (e.g. converted UltraFeedback or HH-RLHF pairs).
    "preference": dict(
        format="preference",
        file="data/preference/train.jsonl",
        tiny_data=["data/samples_small/wishes_pairs.jsonl"],
    ),
}

QLORA = dict(r=64, lora_alpha=16, lora_dropout=0.1)

# The XTuner stock QLoRA recipe; each workflow overrides what its seed changes.
STOCK_QLORA = dict(
    method="qlora",
    lora=QLORA,
    max_length=2048,
    pack=True,
    batch_size=1,
    accum=16,
    num_workers=0,
    epochs=3,
    lr=2e-4,
    betas=(0.9, 0.999),
    weight_decay=0,
    max_norm=1,
    warmup_ratio=0.03,
    warmup_start_factor=1e-5,
    eta_min_ratio=0.0,
    save_steps=500,
    save_total_limit=2,
    eval_freq=500,
    log_interval=10,
    seed=0,
    deepspeed="zero2",
    gpus=1,
    system="",
    eval_prompts=["请给我介绍五个上海的景点", "Please tell me five scenic spots in Shanghai"],
)

# XTuner's stock preference recipes: the QLoRA recipe with the settings of
# xtuner/configs/dpo/internlm/internlm2_chat_7b_dpo_qlora_varlenattn.py and
# xtuner/configs/orpo/internlm/internlm2_chat_7b_orpo_qlora_varlenattn_ultrafeedback_e5.py
# (lr from the alignment handbook / the ORPO repo, as their comments say).
# Not packed: XTuner packs preference pairs only with varlen attention.
STOCK_DPO = dict(
    STOCK_QLORA,
    objective="dpo",
    loss_type="sigmoid",
    beta=0.1,
    label_smoothing=0.0,
    lr=5e-7,
    epochs=3,
    warmup_ratio=0.03,
    pack=False,
    num_proc=32,
)
STOCK_ORPO = dict(
    STOCK_QLORA,
    objective="orpo",
    beta=0.1,
    lr=5e-6,
    epochs=5,
    warmup_ratio=0.01,
    pack=False,
    num_proc=32,
)

WISHES_SYSTEM = "你现在是一个送祝福大师，帮我针对不同人和事情、节日送对应的祝福"
WISHES_PROMPTS = [
    "祝姐姐生日快乐",
    "祝姐姐生日快乐，严肃风格",
    "祝姐姐生日快乐,小红书风格",
    "祝妹妹谈判顺利，小红书风格",
    "祝大家元宵节快乐",
    "祝领导春节快乐，严肃风格",
]
DOCTOR_SYSTEM = (
    "You are a professional, highly experienced doctor professor. You always provide accurate, "
    "comprehensive, and detailed answers based on the patients' questions."
)
# XTuner's MS-Agent system prompt, as written in its stock config.
MSAGENT_SYSTEM = (
    "你是一个可以调用外部工具的助手，可以使用的工具包括：\n"
    "{{'GoogleSearch': '一个可以从谷歌搜索结果的API。\\n"
    "当你需要对于一个特定问题找到简短明了的回答时，可以使用它。\\n"
    "输入应该是一个搜索查询。\\n\\n',"
    "'PythonInterpreter': \"用来执行Python代码。代码必须是一个函数，\\n"
    "函数名必须得是 'solution'，代码对应你的思考过程。代码实例格式如下：\\n"
    "```python\\n# import 依赖包\\nimport xxx\\ndef solution():"
    "\\n    # 初始化一些变量\\n    variable_names_with_real_meaning = xxx"
    "\\n    # 步骤一\\n    mid_variable = func(variable_names_with_real_meaning)"
    "\\n    # 步骤 x\\n    mid_variable = func(mid_variable)\\n    # 最后结果"
    "\\n    final_answer =  func(mid_variable)\\n    return final_answer"
    '\\n```\\n"}}\n'
    "如果使用工具请遵循以下格式回复：\n```\n"
    "Thought:思考你当前步骤需要解决什么问题，是否需要使用工具\n"
    "Action:工具名称，你的工具必须从 [['GoogleSearch', 'PythonInterpreter']] 选择"
    "\nAction Input:工具输入参数\n```\n工具返回按照以下格式回复：\n"
    "```\nResponse:调用工具后的结果\n```"
    "\n如果你已经知道了答案，或者你不需要工具，请遵循以下格式回复\n```"
    "\nThought:给出最终答案的思考过程\nFinal Answer:最终答案\n```\n开始!\n"
)

WORKFLOWS = {
    # source: InternLM/xtuner @ v0.2.0 : xtuner/configs/internlm/internlm_chat_7b/internlm_chat_7b_qlora_oasst1_e3.py
    #         with the local model and data paths of InternLM/Tutorial @ c4a5fdc : xtuner/README.md (camp1, 2.3.4)
    "internlm_chat_7b_qlora_oasst1_e3": dict(
        STOCK_QLORA,
        version="1.3.0",
        model="internlm-chat-7b",
        dataset="oasst1",
        source=[SRC_XTUNER + "internlm/internlm_chat_7b/internlm_chat_7b_qlora_oasst1_e3.py", SRC_INTERNLM_TUTORIAL],
    ),
    # source: InternLM/Tutorial @ c4a5fdc : xtuner/README.md (camp1, 3.2-3.3: MedQA2019, dataset_map_fn=None)
    "internlm_chat_7b_qlora_medqa2019_e3": dict(
        STOCK_QLORA,
        version="1.3.0",
        model="internlm-chat-7b",
        dataset="medqa2019",
        system=DOCTOR_SYSTEM,
        source=[SRC_INTERNLM_TUTORIAL, SRC_XTUNER + "internlm/internlm_chat_7b/internlm_chat_7b_qlora_oasst1_e3.py"],
    ),
    # source: InternLM/xtuner @ v0.2.0 : xtuner/configs/internlm/internlm_7b/internlm_7b_qlora_msagent_react_e3_gpu8.py
    "internlm_7b_qlora_msagent_react_e3_gpu8": dict(
        STOCK_QLORA,
        version="1.3.0",
        model="internlm-7b",
        dataset="msagent",
        pack=False,
        batch_size=8,
        accum=1,
        num_workers=2,
        gpus=8,
        system=MSAGENT_SYSTEM,
        eval_prompts=["上海明天天气怎么样？"],
        source=[SRC_XTUNER + "internlm/internlm_7b/internlm_7b_qlora_msagent_react_e3_gpu8.py", SRC_INTERNLM_TUTORIAL],
    ),
    # source: SocialAI-tianji/Tianji @ 9f0f3ae : tianji/finetune/xtuner/internlm2_chat_7b_qlora_oasst1_e3.py
    #         (the config printed in docs/finetune/tianji-wishes-chinese.md, trained with --deepspeed deepspeed_zero2)
    "internlm2_chat_7b_qlora_wishes_e3": dict(
        STOCK_QLORA,
        version="1.3.0",
        model="internlm2-chat-7b",
        dataset="wishes",
        save_steps=50,
        save_total_limit=10,
        eval_freq=50,
        system=WISHES_SYSTEM,
        eval_prompts=WISHES_PROMPTS,
        source=[SRC_TIANJI_QLORA, SRC_TIANJI_DOC],
    ),
    # source: SocialAI-tianji/Tianji @ 9f0f3ae : tianji/finetune/xtuner/internlm2_chat_7b_full_finetune.py
    #         (run as in docs/finetune/tianji-wishes-chinese.md: NPROC_PER_NODE=2 ... --deepspeed deepspeed_zero3),
    #         with the wishes system prompt and evaluation prompts, since it trains on the wishes data
    "internlm2_chat_7b_full_wishes_e1": dict(
        STOCK_QLORA,
        version="1.3.0",
        model="internlm2-chat-7b",
        dataset="wishes",
        method="full",
        lora=None,
        pack=False,
        batch_size=1,
        accum=1,
        num_workers=4,
        epochs=1,
        lr=4e-5,
        betas=(0.9, 0.95),
        weight_decay=0.01,
        warmup_ratio=0.025,
        warmup_start_factor=1 / 40,
        eta_min_ratio=0.15,
        save_steps=150,
        save_total_limit=10,
        eval_freq=150,
        log_interval=1,
        seed=1024,
        deepspeed="zero3",
        gpus=2,
        system=WISHES_SYSTEM,
        eval_prompts=WISHES_PROMPTS,
        source=[SRC_TIANJI_FULL, SRC_TIANJI_DOC],
    ),
    # source: InternLM/xtuner @ v0.2.0 : xtuner/configs/llama/llama3_8b_instruct/llama3_8b_instruct_qlora_alpaca_e3.py
    #         trained one epoch on the Chinese SFT mix of CrazyBoyM/llama3-Chinese-chat @ ff32d17 : README.md
    "llama3_8b_instruct_qlora_chinese_e1": dict(
        STOCK_QLORA,
        version="1.3.0",
        model="llama3-8b-instruct",
        dataset="llama3_chinese_mix",
        epochs=1,
        system="",
        source=[SRC_XTUNER + "llama/llama3_8b_instruct/llama3_8b_instruct_qlora_alpaca_e3.py", SRC_LLAMA3_CN],
    ),
    # source: InternLM/xtuner @ v0.2.0 : xtuner/configs/dpo/internlm/internlm2_chat_7b_dpo_qlora_varlenattn.py
    #         from the merged SFT model of internlm2_chat_7b_qlora_wishes_e3, on judged wishes pairs
    "internlm2_chat_7b_qlora_wishes_dpo_e1": dict(
        STOCK_DPO,
        version="1.0.0",
        model="internlm2-chat-7b",
        start_from="internlm2_chat_7b_qlora_wishes_e3",
        dataset="wishes_pairs",
        epochs=1,
        system=WISHES_SYSTEM,
        eval_prompts=WISHES_PROMPTS,
        source=[SRC_XTUNER + "dpo/internlm/internlm2_chat_7b_dpo_qlora_varlenattn.py"],
    ),
    # source: InternLM/xtuner @ v0.2.0 : xtuner/configs/orpo/internlm/internlm2_chat_7b_orpo_qlora_varlenattn_ultrafeedback_e5.py
    #         from the merged SFT model of internlm2_chat_7b_qlora_wishes_e3, on judged wishes pairs
    "internlm2_chat_7b_qlora_wishes_orpo_e1": dict(
        STOCK_ORPO,
        version="1.0.0",
        model="internlm2-chat-7b",
        start_from="internlm2_chat_7b_qlora_wishes_e3",
        dataset="wishes_pairs",
        epochs=1,
        system=WISHES_SYSTEM,
        eval_prompts=WISHES_PROMPTS,
        source=[SRC_XTUNER + "orpo/internlm/internlm2_chat_7b_orpo_qlora_varlenattn_ultrafeedback_e5.py"],
    ),
    # source: InternLM/xtuner @ v0.2.0 : xtuner/configs/dpo/llama/llama3_8b_instruct_dpo_qlora_varlenattn.py
    #         on any preference data in the prompt/chosen/rejected format, from the instruct model itself
    "llama3_8b_instruct_qlora_dpo_e1": dict(
        STOCK_DPO,
        version="1.0.0",
        model="llama3-8b-instruct",
        dataset="preference",
        epochs=1,
        system="",
        source=[SRC_XTUNER + "dpo/llama/llama3_8b_instruct_dpo_qlora_varlenattn.py"],
    ),
}
