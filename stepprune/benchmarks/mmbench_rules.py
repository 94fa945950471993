"""MMBench answer extraction: the official rule-based prefetch (``can_infer``, used by OpenCompass / VLMEvalKit
and lmms-eval's ``mmbench_evals.py``) and lmms-eval's "static" multiple-choice extractor
(``extract_mcq_answer``, which ``mmbench_*_dev_static`` uses instead of the GPT judge).

Prefetch, in order (the first rule that yields a unique letter wins; None means "ask the LLM judge"):

1. split the answer on whitespace; if exactly one token is a bare letter of ``ABCDE`` take it, *unless* ``A``
   is a token and there are more than 3 tokens: then ``A`` may be the article ("A dog is ...") and this rule
   is skipped;
2. the decorated forms ``X.``, ``X,``, ``X:``, ``X)``, ``X).``, ``(X)``, ``(X).``, ``:X``, ``:X,``, ``:X.``,
   ``:X)``, ``:X).`` as whole tokens, tried form by form, each needing exactly one letter to match;
3. the option whose lowercased text is a substring of the lowercased answer, if exactly one is.

``E`` counts as a letter in steps 1-2 even on 4-option questions (the judge's "none of these"), so an answer
``E`` is resolved, and wrong.

Static extractor: strip the answer, strip ``, . ! ? ; : ' "`` from both ends (one character class after the
other), then collect candidates for each valid letter X: ``(X)`` (priority 6), ``X.`` (5), ``X:`` (4), ``X)``
(3), ``X`` + space (2), X after an answer phrase such as "the answer is" / "答案是" / "选" (7), a leading X not
followed by a letter (10), a trailing X not preceded by a letter (9); with no candidate at all, any occurrence
of X (0). The highest priority wins, then the latest position. Returns "" when nothing matches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

PREFETCH_LETTERS = "ABCDE"
# (prefix, suffix) decorations tried by step 2, in the official order.
DECORATIONS = (("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."), (":", ""),
               (":", ","), (":", "."), (":", ")"), (":", ")."))


def _unique_token(tokens: list[str], prefix: str = "", suffix: str = "") -> str | None:
    found = [c for c in PREFETCH_LETTERS if prefix + c + suffix in tokens]
    return found[0] if len(found) == 1 else None


def infer_option(answer: str) -> str | None:
    """Prefetch steps 1-2: a letter written as a token, bare or decorated."""
    tokens = answer.split()
    bare = _unique_token(tokens)
    # The article trap: "A dog is sitting on a mat" must not be read as option A.
    if bare is not None and not ("A" in tokens and len(tokens) > 3):
        return bare
    for prefix, suffix in DECORATIONS:
        letter = _unique_token(tokens, prefix, suffix)
        if letter is not None:
            return letter
    return None


def infer_text(answer: str, options: Mapping[str, str]) -> str | None:
    """Prefetch step 3: the single option whose text occurs in the answer (case-insensitive)."""
    lowered = answer.lower()
    hits = [letter for letter, text in options.items() if str(text).lower() in lowered]
    return hits[0] if len(hits) == 1 else None


def can_infer(answer: str, options: Mapping[str, str]) -> str | None:
    """The rule-based prefetch: a letter, or None when the official grader would call its LLM judge.

    Args:
        answer: the model's answer.
        options: letter -> option text for the options the question has.
    """
    return infer_option(answer) or infer_text(answer, options)


ANSWER_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select",
    "i pick", "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)
_EDGE_CHARS = (",", ".", "!", "?", ";", ":", "'", '"')


def extract_static(answer: str, letters: Sequence[str]) -> str:
    """lmms-eval's static extractor (see the module docstring); "" when no letter is found."""
    if not answer.strip():
        return ""
    text = answer.strip()
    for char in _EDGE_CHARS:  # one character at a time, as lmms-eval does: '"A."' -> 'A.'
        text = text.strip(char)
    text = f" {text} "
    lowered = text.lower()
    stripped = text.strip()
    found: list[tuple[int, int, str]] = []  # (priority, position, letter)
    for pattern, priority in (("({})", 6), ("{}.", 5), ("{}:", 4), ("{})", 3), ("{} ", 2)):
        for letter in letters:
            position = text.rfind(pattern.format(letter))
            if position != -1:
                found.append((priority, position, letter))
    for phrase in ANSWER_PHRASES:
        start = lowered.find(phrase)
        if start != -1:
            for letter in letters:
                position = text.find(letter, start + len(phrase))
                if position != -1:
                    found.append((7, position, letter))
    for letter in letters:
        if stripped.startswith(letter) and (len(stripped) == 1 or not stripped[1].isalpha()):
            found.append((10, 0, letter))
        if stripped.endswith(letter) and (len(stripped) == 1 or not stripped[-2].isalpha()):
            found.append((9, len(text) - 1, letter))
    if not found:
        found = [(0, text.rfind(letter), letter) for letter in letters if letter in text]
    if not found:
        return ""
    # Highest priority, then latest position; ties keep the order found (a stable sort, as lmms-eval).
    return sorted(found, key=lambda c: (c[0], c[1]), reverse=True)[0][2]
