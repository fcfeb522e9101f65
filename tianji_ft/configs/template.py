"""The one layout every file in ``xtuner_configs`` is rendered from.

A ``string.Template``: ``render.py`` fills the ``$name`` fields from
``table.py``. The output is a flat, self-contained mmengine config, so plain
``xtuner train`` reads it and no setting can be re-assigned after the dicts
built from it (the trap of ``read_base()`` inheritance).

Settings come from ``TIANJI_*`` environment variables through ``_env``,
bound with ``__import__`` because mmengine parses these files in lazy-import
mode, where an ``import os`` statement becomes a LazyObject that cannot be
called. ``_env`` is deleted at the end of the settings block so that neither
it nor the environment ends up in the config copy XTuner dumps into the work
dir.
"""

from string import Template

CONFIG = Template('''\
$header
$imports

#######################################################################
#                          PART 1  Settings                           #
#######################################################################
# Each setting with a TIANJI_* variable can be changed without editing this
# file: export the variable (or pass the matching flag to `tianji-ft train`).
# Unset variables keep the value written here.
_env = __import__("os").environ.get

$model_comment
pretrained_model_name_or_path = _env("TIANJI_MODEL", $model_default)
use_varlen_attn = False$loss_settings

$data_settings

# Scheduler & Optimizer
batch_size = int(_env("TIANJI_BATCH_SIZE", "$batch_size"))  # per device
accumulative_counts = int(_env("TIANJI_ACCUM", "$accum"))
dataloader_num_workers = $num_workers
max_epochs = int(_env("TIANJI_EPOCHS", "$epochs"))
optim_type = AdamW
lr = float(_env("TIANJI_LR", "$lr"))
betas = $betas
weight_decay = $weight_decay
max_norm = $max_norm  # grad clip
warmup_ratio = float(_env("TIANJI_WARMUP_RATIO", "$warmup_ratio"))
seed = int(_env("TIANJI_SEED", "$seed"))

# Save (work_dir None: xtuner's default, work_dirs/<config file name>)
work_dir = _env("TIANJI_WORK_DIR")
save_steps = int(_env("TIANJI_SAVE_STEPS", "$save_steps"))
save_total_limit = int(_env("TIANJI_SAVE_TOTAL_LIMIT", "$save_total_limit"))  # -1: keep all

# Evaluate the generation performance during the training
evaluation_freq = int(_env("TIANJI_EVAL_FREQ", "$eval_freq"))
evaluation_max_new_tokens = int(_env("TIANJI_EVAL_MAX_NEW_TOKENS", "600"))  # XTuner's default

# Experiment tracking: none, tensorboard, wandb, or both comma-separated (loss, lr, grad norm)
report_to = _env("TIANJI_REPORT_TO", "none").split(",")
SYSTEM = _env("TIANJI_SYSTEM", $system)
# TIANJI_EVAL_PROMPTS: a JSON list of strings
evaluation_inputs = (
    __import__("json").loads(_env("TIANJI_EVAL_PROMPTS"))
    if _env("TIANJI_EVAL_PROMPTS")
    else $eval_prompts
)
del _env

#######################################################################
#                      PART 2  Model & Tokenizer                      #
#######################################################################
tokenizer = dict(
    type=AutoTokenizer.from_pretrained,
    pretrained_model_name_or_path=pretrained_model_name_or_path,
    trust_remote_code=True,
    padding_side="right",
)

model = dict(
    type=$model_type,
    use_varlen_attn=use_varlen_attn,$model_args
    llm=dict(
        type=AutoModelForCausalLM.from_pretrained,
        pretrained_model_name_or_path=pretrained_model_name_or_path,
        trust_remote_code=True,$llm_extra
    ),$lora
)

#######################################################################
#                      PART 3  Dataset & Dataloader                   #
#######################################################################
$dataset_section#######################################################################
#                    PART 4  Scheduler & Optimizer                    #
#######################################################################
optim_wrapper = dict(
    type=AmpOptimWrapper,
    optimizer=dict(type=optim_type, lr=lr, betas=betas, weight_decay=weight_decay),
    clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False),
    accumulative_counts=accumulative_counts,
    loss_scale="dynamic",$optim_extra
)

# Linear warmup, then cosine decay; without warmup (TIANJI_WARMUP_RATIO=0) only
# the cosine part, since mmengine rejects a zero-length scheduler.
param_scheduler = [
    dict(
        type=LinearLR,
        start_factor=$warmup_start_factor,
        by_epoch=True,
        begin=0,
        end=warmup_ratio * max_epochs,
        convert_to_iter_based=True,
    ),
    dict(
        type=CosineAnnealingLR,
        eta_min=$eta_min,
        by_epoch=True,
        begin=warmup_ratio * max_epochs,
        end=max_epochs,
        convert_to_iter_based=True,
    ),
]
if warmup_ratio <= 0:
    param_scheduler = param_scheduler[1:]

train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)

#######################################################################
#                           PART 5  Runtime                           #
#######################################################################
custom_hooks = [
    dict(type=DatasetInfoHook, tokenizer=tokenizer),
    dict(
        type=EvaluateChatHook,
        tokenizer=tokenizer,
        every_n_iters=evaluation_freq,
        evaluation_inputs=evaluation_inputs,
        system=SYSTEM,
        prompt_template=prompt_template,
        max_new_tokens=evaluation_max_new_tokens,
    ),
]

default_hooks = dict(
    timer=dict(type=IterTimerHook),
    logger=dict(type=LoggerHook, log_metric_by_epoch=False, interval=$log_interval),
    param_scheduler=dict(type=ParamSchedulerHook),
    checkpoint=dict(type=CheckpointHook, by_epoch=False, interval=save_steps, max_keep_ckpts=save_total_limit),
    sampler_seed=dict(type=DistSamplerSeedHook),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),
)

vis_backends = []
if "tensorboard" in report_to:  # event files under WORK_DIR/<timestamp>/vis_data
    vis_backends.append(dict(type=TensorboardVisBackend))
if "wandb" in report_to:  # WANDB_MODE=offline keeps the run on disk
    vis_backends.append(dict(type=WandbVisBackend))
visualizer = dict(type=Visualizer, vis_backends=vis_backends) if vis_backends else None
if vis_backends:  # the evaluation hook's sample answers go to the trackers too, beside the loss
    custom_hooks.append(dict(type=SamplesToTrackers))
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=seed, deterministic=False)
log_processor = dict(by_epoch=False)

#######################################################################
#                      Metadata (read by tianji-ft)                   #
#######################################################################
# Parsed without running this file; training ignores it. `template` is the
# --prompt-template for chat/convert; `hub` names the weights it was written for.
tianji_meta = $meta
''')

QLORA_LLM = '''
        torch_dtype=torch.float16,
        quantization_config=dict(
            type=BitsAndBytesConfig,
            load_in_4bit=True,
            load_in_8bit=False,
            llm_int8_threshold=6.0,
            llm_int8_has_fp16_weight=False,
            bnb_4bit_compute_dtype=torch.float16,
            bnb_4bit_use_double_quant=True,
            bnb_4bit_quant_type="nf4",
        ),'''

LORA = Template('''
    lora=dict(
        type=LoraConfig,
        r=$r,
        lora_alpha=$lora_alpha,
        lora_dropout=$lora_dropout,
        bias="none",
        task_type="CAUSAL_LM",
    ),''')

# ------------------------------------------------------------------ per objective
# Supervised fine-tuning (SFT) and preference training (DPO, ORPO) share the
# layout above; these fill in where they differ.

SFT_MODEL_COMMENT = "# Model: a local folder (`tianji-ft models download CONFIG_NAME` puts it there) or a hub id"

SFT_DATA = Template('''\
# Data: local .json/.jsonl files; several are separated by os.pathsep (":" on Linux)
data_files = _env("TIANJI_DATA", $data_default).split(__import__("os").pathsep)
prompt_template = PROMPT_TEMPLATE.$template_name
max_length = int(_env("TIANJI_MAX_LENGTH", "$max_length"))
pack_to_max_length = _env("TIANJI_PACK", "$pack") == "1"''')

SFT_DATASET = Template('''\
train_dataset = dict(
    type=$builder,
    dataset=dict(type=load_dataset, path="json", data_files=data_files),
    tokenizer=tokenizer,
    max_length=max_length,
    dataset_map_fn=$map_fn,
    template_map_fn=dict(type=template_map_fn_factory, template=prompt_template),
    remove_unused_columns=True,
    shuffle_before_pack=True,
    pack_to_max_length=pack_to_max_length,
    use_varlen_attn=use_varlen_attn,$builder_extra
)

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=dataloader_num_workers,
    dataset=train_dataset,
    sampler=dict(type=DefaultSampler, shuffle=True),
    collate_fn=dict(type=default_collate_fn, use_varlen_attn=use_varlen_attn),
)

''')

# Preference training starts from the SFT model: its merged folder (`tianji-ft
# merge`), which is also the frozen reference for DPO (the policy is that model
# plus a fresh LoRA; the reference is the same model with the LoRA switched off).
PREFERENCE_MODEL_COMMENT = Template('''\
# Model: the model to start from, a local folder; by default the SFT model of
# $start_from, merged (where `tianji-ft pipeline $start_from` puts it)''')

DPO_LOSS = Template('''

# DPO loss (XTuner's DPO): one of sigmoid, hinge, ipo, kto_pair, sppo_hard, nca_pair, robust
dpo_loss_type = "$loss_type"
loss_beta = $beta  # strength of the pull towards the reference model
label_smoothing = $label_smoothing''')

ORPO_LOSS = Template('''

# ORPO loss (XTuner's ORPO): NLL on the chosen answer plus beta x the odds-ratio term; no reference model
loss_beta = $beta''')

DPO_ARGS = '''
    loss_type=dpo_loss_type,
    beta=loss_beta,
    label_smoothing=label_smoothing,'''

ORPO_ARGS = '''
    beta=loss_beta,'''

PREFERENCE_DATA = Template('''\
# Data: preference records (prompt / chosen / rejected message lists; `tianji-ft data validate`
# checks them), local .json/.jsonl files; several are separated by os.pathsep (":" on Linux)
data_files = _env("TIANJI_DATA", $data_default).split(__import__("os").pathsep)
# XTuner lays the pairs out with the tokenizer's own chat template; prompt_template
# is the same format as XTuner writes it, for the evaluation hook and later chat.
prompt_template = PROMPT_TEMPLATE.$template_name
max_length = int(_env("TIANJI_MAX_LENGTH", "$max_length"))  # per answer, prompt included
# Tokenizing processes: XTuner's stock 32, at most one per CPU.
dataset_num_proc = min($num_proc, __import__("os").cpu_count() or 1)''')

PREFERENCE_DATASET = '''\
train_dataset = dict(
    type=build_preference_dataset,
    dataset=dict(type=load_dataset, path="json", data_files=data_files),
    tokenizer=tokenizer,
    max_length=max_length,
    dataset_map_fn=None,
    is_dpo=True,
    is_reward=False,
    reward_token_id=-1,
    num_proc=dataset_num_proc,
    use_varlen_attn=use_varlen_attn,
    shuffle_before_pack=True,
)

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=dataloader_num_workers,
    dataset=train_dataset,
    sampler=dict(type=DefaultSampler, shuffle=True),
    collate_fn=dict(type=preference_collate_fn, use_varlen_attn=use_varlen_attn),
)

'''
