"""The vocabulary words the vision stage knows: the names of every colour, shape, size and rendered word.

SynthVQA's tokenizer makes each of them one token when spelled as questions and answers spell them (``" red"``).
Two language-stage aids use them: :mod:`.language_init` (their embeddings start along the per-patch head's
class directions) and :class:`~.packing.QAPacker` (it marks where a question names them, for the query term of
:func:`~.steps.query_grounding_loss`).
"""

from __future__ import annotations

from stepprune.data.synthvqa.vocab import COLOR_NAMES, SHAPES, SIZE_NAMES, WORDS

# The per-patch head's classes that are also question / answer words, with their names in class order.
NAMED_CLASSES: dict[str, tuple[str, ...]] = {"color": tuple(COLOR_NAMES), "shape": tuple(SHAPES),
                                             "size": tuple(SIZE_NAMES), "word": tuple(WORDS)}


def word_token(tokenizer, name: str) -> int:
    """The single token of ``" name"``.

    Raises:
        ValueError: when the tokenizer splits it (not a SynthVQA tokenizer).
    """
    ids = tokenizer(" " + name, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"' {name}' is {len(ids)} tokens in this tokenizer; SynthVQA's names must be one token")
    return ids[0]


def named_word_ids(tokenizer) -> frozenset[int]:
    """The token ids of every name of :data:`NAMED_CLASSES`."""
    return frozenset(word_token(tokenizer, n) for names in NAMED_CLASSES.values() for n in names)
