"""LLaVA-1.5's prompt strings, byte-identical to its evaluation question files (see the design note
``benchmarks.md``). The native format stores the prompt each question would get from its mirrored benchmark's
loader, and the LLaVA-Instruct corpus trains on exactly these strings.
"""

from __future__ import annotations

from collections.abc import Sequence

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
LETTER_ANSWER = "\nAnswer with the option's letter from the given choices directly."
OCR_PREFIX = "\nReference OCR token: "
DESCRIBE = "Describe the image in detail."
MME_SUFFIX = " Please answer yes or no."  # in MME's .txt files; LLaVA replaces it with SHORT_ANSWER
LETTERS = "ABCDE"


def short_answer(question: str) -> str:
    """GQA / VQAv2 / POPE / MME prompt: the question plus the single-word suffix."""
    return question + SHORT_ANSWER


def options_block(choices: Sequence[str]) -> str:
    """``"A. x\\nB. y..."``, the option lines of MMBench and ScienceQA prompts."""
    if not 2 <= len(choices) <= len(LETTERS):
        raise ValueError(f"need 2..{len(LETTERS)} choices, got {len(choices)}")
    return "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))


def mmbench(question: str, choices: Sequence[str], hint: str | None = None) -> str:
    """LLaVA's ``model_vqa_mmbench --single-pred-prompt``: ``[hint\\n]question\\nA. ..\\n<letter suffix>``."""
    head = f"{hint}\n{question}" if hint else question
    return f"{head}\n{options_block(choices)}{LETTER_ANSWER}"


def scienceqa(question: str, choices: Sequence[str], hint: str | None) -> str:
    """LLaVA's ScienceQA prompt (CQM-A with single-pred-prompt):
    ``[Context: hint\\n]question\\nA. ..\\n<letter suffix>``."""
    head = f"Context: {hint}\n{question}" if hint else question
    return f"{head}\n{options_block(choices)}{LETTER_ANSWER}"


def textvqa(question: str, ocr_tokens: Sequence[str]) -> str:
    """LLaVA's TextVQA prompt with Rosetta OCR tokens: exactly three lines (its scorer asserts that)."""
    return f"{question}{OCR_PREFIX}{', '.join(ocr_tokens)}{SHORT_ANSWER}"
