"""TextVQA-style reading questions. The prompt lists the image's OCR tokens (as LLaVA-1.5 does with Rosetta
tokens), in a shuffled order, so the model knows *which* words exist but must still look to tell which is
which:

* ``word_by_color``: "What word is written in red?" (two or more words in the image);
* ``word_by_position``: "What is the leftmost word in the image?" (two or more words; the winner's visible box
  is at least 4 px further that way than every other word's);
* ``color_of_word``: 'What color is the word "lamp"?'.

Words in one image are distinct and have distinct colors, so every referent is unique.
"""

from __future__ import annotations

import numpy as np

from stepprune.data.synthvqa.prompts import textvqa
from stepprune.data.synthvqa.questions.base import Question, SceneView, TextView, shuffled

FAMILY = "text"
SUBFAMILIES = ("word_by_color", "word_by_position", "color_of_word")
POSITION_MARGIN = 4
# superlative -> key whose smallest value wins
_EXTREMES = {
    "leftmost": lambda t: t.bbox[0],
    "rightmost": lambda t: -t.bbox[2],
    "topmost": lambda t: t.bbox[1],
    "bottommost": lambda t: -t.bbox[3],
}


def _q(view: SceneView, subfamily: str, text: str, answer: str, target: TextView) -> Question:
    tokens = list(view.scene.ocr_tokens)
    return Question(FAMILY, subfamily, text, textvqa(text, tokens), answer, [target.id],
                    view.evidence([target.id]), ocr_tokens=tokens)


def make(view: SceneView, rng: np.random.Generator, asked: set[str]) -> list[Question]:
    """One reading question, or [] if the image has no (suitable) words."""
    if not view.texts:
        return []
    for subfamily in shuffled(rng, SUBFAMILIES):
        if subfamily == "word_by_color" and len(view.texts) >= 2:
            for t in shuffled(rng, view.texts):
                text = f"What word is written in {t.color}?"
                if text not in asked:
                    return [_q(view, subfamily, text, t.word, t)]
        elif subfamily == "word_by_position" and len(view.texts) >= 2:
            for name in shuffled(rng, list(_EXTREMES)):
                key = _EXTREMES[name]
                ranked = sorted(view.texts, key=key)
                text = f"What is the {name} word in the image?"
                if key(ranked[1]) - key(ranked[0]) >= POSITION_MARGIN and text not in asked:
                    return [_q(view, subfamily, text, ranked[0].word, ranked[0])]
        elif subfamily == "color_of_word":
            for t in shuffled(rng, view.texts):
                text = f'What color is the word "{t.word}"?'
                if text not in asked:
                    return [_q(view, subfamily, text, t.color, t)]
    return []
