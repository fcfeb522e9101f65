"""The Tianji wishes demo: ``streamlit run app.py -- MODEL [flags]`` (``tianji-ft web MODEL`` runs it).

A system prompt box (the wishes master by default), style buttons that add
the style to the request the way the wishes data phrases it
("祝{name}{scene},{style}风格"), sampling sliders, streamed answers and a
reset button. The model is loaded once per server process and shared by all
browser sessions.
"""

from __future__ import annotations

import sys

import streamlit as st

from tianji_ft.web.options import WISHES_SYSTEM, app_parser

STYLES = {"正常": "", "小红书": ",小红书风格", "严肃": ",严肃风格"}


@st.cache_resource(show_spinner="加载模型… Loading the model…")
def load_engine(model: str, adapter: str | None, template: str, bits: int | None, device: str):
    from tianji_ft.chat.engine import ChatEngine

    return ChatEngine(model, adapter=adapter, template=template, bits=bits, device=device)


def with_style(text: str, style: str | None) -> str:
    return text + STYLES.get(style or "正常", "")


def conversation(system: str, turns: list[dict], question: str, history_turns: int) -> list[dict]:
    """system + the newest ``history_turns`` turns + the question.

    The system message is sent even when the box is empty, so clearing the
    box means "no system prompt" rather than the model's default one.
    """
    from tianji_ft.chat.history import HistoryWindow

    window = HistoryWindow(history_turns)
    for user, assistant in zip(turns[::2], turns[1::2]):
        window.add(user["content"], assistant["content"])
    return [{"role": "system", "content": system}, *window.messages(question)]


def sidebar(args, engine):
    from tianji_ft.chat.engine import GenerationParams

    with st.sidebar:
        default_system = args.system if args.system is not None else (engine.prompter.system or WISHES_SYSTEM)
        system = st.text_area("系统提示 System prompt", value=default_system, key="system", height=120)
        style = st.segmented_control("风格 Style", list(STYLES), default="正常", key="style")
        params = GenerationParams(
            temperature=st.slider("temperature", 0.0, 1.5, float(args.temperature), 0.05, key="temperature"),
            top_p=st.slider("top_p", 0.05, 1.0, float(args.top_p), 0.05, key="top_p"),
            top_k=st.slider("top_k", 0, 100, int(args.top_k), 1, key="top_k"),
            repetition_penalty=st.slider("repetition penalty", 1.0, 2.0, float(args.repetition_penalty), 0.05,
                                         key="repetition_penalty"),
            max_new_tokens=st.slider("max new tokens", 16, 4096, int(args.max_new_tokens), 16, key="max_new_tokens"),
            seed=None,
        )
        if st.button("清空对话 Reset", key="reset", use_container_width=True):
            st.session_state.turns = []
        st.caption(f"{engine.name} · template {engine.prompter.name} ({engine.prompter.source})")
    return system, style, params


def main(argv: list[str] | None = None) -> None:
    args = app_parser().parse_args(sys.argv[1:] if argv is None else argv)
    st.set_page_config(page_title=args.title, page_icon="🎉")
    engine = load_engine(args.model, args.adapter, args.template, args.bits, args.device)
    system, style, params = sidebar(args, engine)
    st.title(args.title)
    turns = st.session_state.setdefault("turns", [])
    for message in turns:
        with st.chat_message(message["role"]):
            st.markdown(message["content"])
    prompt = st.chat_input("想给谁送祝福？例如：祝姐姐生日快乐")
    if not prompt:
        return
    question = with_style(prompt.strip(), style)
    with st.chat_message("user"):
        st.markdown(question)
    messages = conversation(system, turns, question, args.history_turns)
    with st.chat_message("assistant"):
        pieces = engine.stream(messages, params)
        st.write_stream(pieces)
        if pieces.reply and pieces.reply.finish_reason == "length":
            st.caption("（回答达到长度上限 / cut at the token limit）")
    turns += [{"role": "user", "content": question}, {"role": "assistant", "content": pieces.reply.text}]


if __name__ == "__main__":
    main()
