"""Prompts of the vLLM tagger and scorers, versioned: a change here must bump the version in identity().

Tagger: the InsTag instruction (name the intents of a user query, one explanation per tag) over the
user turns of a conversation. Chat models get it through their chat template; models without one
(OFA-Sys/InsTagger, trained with FastChat's Vicuna v1.1 template) get the Vicuna v1.1 frame.
Scorers: the fixed templates the DEITA quality and complexity scorers were trained on, sent as
raw text (no chat template), the score token being the next token after the template.
"""

from __future__ import annotations

from typing import Literal

TAG_PROMPT_VERSION = "instag-v1"
SCORE_PROMPT_VERSION = "deita-v1"

OutputSchema = Literal["tags", "instag"]

_TAG_INSTRUCTION = {
    "instag": ("Please identify tags of user intentions in the following user query and provide an "
               "explanation for each tag. Please respond in the JSON format "
               '[{"tag": str, "explanation": str}].'),
    "tags": ("Please identify tags of user intentions in the following user query. Tags are short "
             "(one to three words), lower case and name what the user wants, such as the task, the "
             "topic and the skills needed. Please respond with a JSON list of tags: [str, ...]."),
}

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")


def user_query(user_turns: list[str]) -> str:
    """All user turns as one query; several turns are numbered so the tagger sees the whole request."""
    if len(user_turns) == 1:
        return user_turns[0]
    return "\n\n".join(f"[Turn {i + 1}] {t}" for i, t in enumerate(user_turns))


def tag_message(query: str, schema: OutputSchema, vocabulary_hint: bool = False) -> str:
    """The user message asking for the tags of one query."""
    text = _TAG_INSTRUCTION[schema]
    if vocabulary_hint:
        text += " Use tags from the allowed tag vocabulary."
    return f"{text}\nUser query: {query}"


def vicuna_prompt(message: str) -> str:
    """FastChat's Vicuna v1.1 conversation frame (what InsTagger was fine-tuned on)."""
    return f"{VICUNA_SYSTEM} USER: {message} ASSISTANT:"


# The DEITA scorers' training templates (hkust-nlp/deita, selection/scorer), reproduced as text:
# the trailing space matters, the score digit is the next token.
COMPLEXITY_TEMPLATE = ("You are a helpful assistant. Please identify the complexity score of the following "
                       "user query. \n##Query: {instruction}  \n##Complexity: ")
QUALITY_TEMPLATE = ("You are a helpful assistant. Please identify the quality score of the Response "
                    "corresponding to the Question. \n #Question#:\n{instruction}\n#Response#:\n{output} "
                    "\n##Quality: ")


def complexity_prompt(instruction: str) -> str:
    return COMPLEXITY_TEMPLATE.format(instruction=instruction)


def quality_prompt(instruction: str, output: str) -> str:
    return QUALITY_TEMPLATE.format(instruction=instruction, output=output)
