"""``naila chat``: one turn (or an interactive session) with NAILA."""

from __future__ import annotations

import argparse
import sys

from langchain_core.messages import HumanMessage, SystemMessage


def run_chat(args: argparse.Namespace) -> int:
    from llm import LLMSettings, load_chat_model
    from prompts.persona import load_persona

    overrides = {"model_path": args.model} if args.model else {}
    settings = LLMSettings(**overrides)
    model = load_chat_model(settings)
    text = args.text
    if text is None and not sys.stdin.isatty():
        text = sys.stdin.read()
    if not text or not text.strip():
        print("naila: error: nothing to say (empty message)", file=sys.stderr)
        return 2
    messages = [SystemMessage(load_persona()), HumanMessage(text.strip())]
    answer = model.invoke(messages)
    print(answer.text.strip())
    if args.verbose:
        meta = answer.response_metadata
        print(
            f"[source=llm model={meta.get('model_name')} finish={meta.get('finish_reason')}"
            f" tokens/s={meta.get('tokens_per_second')}]",
            file=sys.stderr,
        )
    return 0
