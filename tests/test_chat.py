"""Follow-up condensation when the LLM chain cannot answer: the keyword rule, decided by the error, not by reply labels."""

from __future__ import annotations

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.chat_engine.condense_question import DEFAULT_PROMPT
from llama_index.core.memory import Memory

from app.chat import DocsChatEngine
from integrations.fallback_llm import FallbackLLM
from integrations.hf_chat_llm import HFChatLLM
from tests.conftest_hf import FAKE_TOKEN

HISTORY = [
    ChatMessage(role=MessageRole.USER, content="How do I configure the widget daemon?"),
    ChatMessage(role=MessageRole.ASSISTANT, content="Edit widget.toml [1]."),
]
CONDENSED = "and what about its timeout? (configure widget daemon)"


def engine(llm) -> DocsChatEngine:
    # Condensing never touches the query engine.
    return DocsChatEngine(query_engine=None, condense_question_prompt=DEFAULT_PROMPT, memory=Memory.from_defaults(), llm=llm)


def test_a_chain_whose_every_member_fails_condenses_with_the_keyword_rule(refused) -> None:
    chain = FallbackLLM(members=[HFChatLLM(model_name="org/down", token=FAKE_TOKEN, base_url=refused, timeout=0.5)])
    assert engine(chain)._condense_question(HISTORY, "and what about its timeout?") == CONDENSED


def test_without_an_llm_follow_ups_are_condensed_with_the_keyword_rule() -> None:
    assert engine(None)._condense_question(HISTORY, "and what about its timeout?") == CONDENSED
    assert engine(None)._condense_question([], "and what about its timeout?") == "and what about its timeout?"
