"""Answers are correct by construction: every question is re-read from its text and answered again from the
scene record (shapes' attributes and visible boxes), without the generator's helpers."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from synthvqa_checks import find, match, parse_ref

from stepprune.data.synthvqa import SUBFAMILIES, scene_record
from stepprune.data.synthvqa.questions import SceneView
from stepprune.data.synthvqa.questions.existence import pick_pair
from stepprune.data.synthvqa.vocab import COLOR_NAMES, COLOR_PRIOR, NUMBER_WORDS, SHAPE_PRIOR, SHAPES

SHORT = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."
LETTERS = "ABCD"


def _questions(samples, family):
    out = [(scene_record(s), q) for s in samples for q in s.questions if q.family == family]
    assert out, f"no {family} question in the sample"
    return out


def _unique(objects, phrase):
    hits = find(objects, parse_ref(phrase))
    assert len(hits) == 1, f"{phrase!r} names {len(hits)} shapes"
    return hits[0]


def _left_of(a, b):
    return a["bbox"][2] < b["bbox"][0]


def _above(a, b):
    return a["bbox"][3] < b["bbox"][1]


def _relations(a, b) -> dict[str, bool]:
    return {"left": _left_of(a, b), "right": _left_of(b, a), "above": _above(a, b), "below": _above(b, a)}


def test_every_family_and_subfamily_occurs(samples):
    seen = Counter((q.family, q.subfamily) for s in samples for q in s.questions)
    for family, subs in SUBFAMILIES.items():
        for sub in subs:
            assert seen[(family, sub)] > 0, f"{family}/{sub} never generated"
    for s in samples:
        texts = [q.question for q in s.questions]
        assert len(set(texts)) == len(texts), "a question repeats within an image"
        assert 4 <= len(s.questions) <= 8


def test_existence_answers_and_balance(samples):
    qs = _questions(samples, "existence")
    for scene, q in qs:
        m = match(r"Is there an? (\w+) (\w+) in the image\?", q.question)
        present = bool(find(scene["objects"], {"color": m[1], "shape": m[2]}))
        assert q.answer == ("yes" if present else "no")
        assert q.prompt == q.question + SHORT
    pairs = Counter()
    for _, q in qs:
        pairs[q.pair_id] += 1 if q.answer == "yes" else 100
    assert set(pairs.values()) == {101}, "each pair is one yes and one no"


def _views(samples):
    return [SceneView(s.scene, s.geometry) for s in samples]


def _prior(cat):
    return COLOR_PRIOR[COLOR_NAMES.index(cat[0])] * SHAPE_PRIOR[SHAPES.index(cat[1])]


def test_existence_negatives_follow_pope_sampling(samples):
    rng = np.random.default_rng(0)
    mean_prior = {}
    for sub in ("random", "popular", "adversarial"):
        negs = []
        for view in _views(samples):
            present = {(o.color, o.shape) for o in view.objects}
            for _ in range(5):
                pos, neg = pick_pair(view, rng, sub)
                assert pos in present and neg not in present
                negs.append(neg)
                # adversarial: the absent category with the most near misses (its color / shape elsewhere)
                if sub == "adversarial":
                    def score(cat):
                        others = [o for o in view.objects if (o.color, o.shape) != cat]
                        return any(o.color == cat[0] for o in others) + any(o.shape == cat[1] for o in others)
                    absent = [(c, s) for c in COLOR_NAMES for s in SHAPES if (c, s) not in present]
                    assert score(neg) == max(map(score, absent))
                    assert score(pos) == max(map(score, present))
        mean_prior[sub] = np.mean([_prior(c) for c in negs])
    assert mean_prior["popular"] > mean_prior["random"] * 1.12, "popular negatives favour frequent categories"


def test_existence_category_does_not_predict_the_answer(samples):
    """Every category is about as often a yes as a no question, so a blind model that answers by category is
    near chance (POPE's own top-k popular rule would give it ~73 % on this generator)."""
    rng = np.random.default_rng(1)
    answers = {}
    for view in _views(samples):
        for sub in ("random", "popular", "adversarial"):
            for _ in range(10):
                pos, neg = pick_pair(view, rng, sub)
                answers.setdefault(pos, Counter())["yes"] += 1
                answers.setdefault(neg, Counter())["no"] += 1
    blind = sum(max(c.values()) for c in answers.values()) / sum(sum(c.values()) for c in answers.values())
    assert blind < 0.62


def test_attribute_answers(samples):
    for scene, q in _questions(samples, "attribute"):
        m = match(r"What (color|shape|size) is the ([\w ]+)\?", q.question)
        assert m[1] == q.subfamily and m[1] not in parse_ref(m[2])
        assert q.answer == _unique(scene["objects"], m[2])[m[1]]


def test_relation_answers(samples):
    for scene, q in _questions(samples, "relation"):
        m = (match(r"Is the ([\w ]+) to the (?:left or to the right|right or to the left) of the ([\w ]+)\?",
                   q.question) if q.subfamily == "horizontal" else
             match(r"Is the ([\w ]+) (?:above or below|below or above) the ([\w ]+)\?", q.question))
        a, b = _unique(scene["objects"], m[1]), _unique(scene["objects"], m[2])
        assert _relations(a, b)[q.answer]


def test_counting_answers(samples):
    answers = Counter()
    for scene, q in _questions(samples, "counting"):
        m = match(r"How many ([\w ]+) are there\?", q.question)
        assert q.answer == str(len(find(scene["objects"], parse_ref(m[1]))))
        answers[q.answer == "0"] += 1
    assert answers[True] > 0 and answers[False] > answers[True]


def test_mmbench_answers(samples):
    letters = Counter()
    for scene, q in _questions(samples, "mc_mmbench"):
        assert len(q.choices) == 4 and len(set(q.choices)) == 4
        options = "\n".join(f"{L}. {c}" for L, c in zip(LETTERS, q.choices))
        assert q.prompt == f"{q.question}\n{options}{LETTER}"
        picked = q.choices[LETTERS.index(q.answer)]
        letters[q.answer] += 1
        objs = scene["objects"]
        if q.subfamily == "attribute_recognition":
            m = match(r"What is the (color|shape) of the ([\w ]+)\?", q.question)
            assert picked == _unique(objs, m[2])[m[1]]
        elif q.subfamily == "object_localization":
            o = _unique(objs, match(r"Where is the ([\w ]+) located in the image\?", q.question)[1])
            x, y = o["centroid"]
            assert abs(x - 96) >= 12 and abs(y - 96) >= 12
            assert picked == f"{'top' if y < 96 else 'bottom'} {'left' if x < 96 else 'right'}"
        elif q.subfamily == "spatial_relationship":
            m = match(r"Where is the ([\w ]+) relative to the ([\w ]+)\?", q.question)
            a, b = _unique(objs, m[1]), _unique(objs, m[2])
            assert [d for d, t in _relations(a, b).items() if t] == [picked], "exactly one direction holds"
        else:
            color = match(r"Which word is written in (\w+)\?", q.question)[1]
            assert [t["word"] for t in scene["texts"] if t["color"] == color] == [picked]
    assert len(letters) == 4, "every letter is sometimes the answer"


def test_science_answers(samples):
    temperature = {"red": "warm", "orange": "warm", "yellow": "warm", "pink": "warm", "green": "cool",
                   "blue": "cool", "purple": "cool", "black": "neither"}
    for scene, q in _questions(samples, "mc_science"):
        assert 2 <= len(q.choices) <= 4 and q.hint
        assert q.prompt.startswith(f"Context: {q.hint}\n{q.question}\nA. ") and q.prompt.endswith(LETTER)
        picked = q.choices[LETTERS.index(q.answer)]
        objs = scene["objects"]
        if q.subfamily == "temperature":
            o = _unique(objs, match(r"Is the ([\w ]+) warm, cool, or neither\?", q.question)[1])
            assert picked == temperature[o["color"]]
        elif q.subfamily == "extreme":
            edge = match(r".*beyond the (\w+) edge of the picture\.", q.hint)[1]
            dist = {"left": lambda o: o["bbox"][0], "top": lambda o: o["bbox"][1],
                    "right": lambda o: 191 - o["bbox"][2], "bottom": lambda o: 191 - o["bbox"][3]}[edge]
            options = {c: dist(_unique(objs, c.removeprefix("the "))) for c in q.choices}
            assert min(options, key=options.get) == picked
            assert sorted(options.values())[1] - options[picked] >= 6
        else:
            votes = Counter(o["color"] for o in objs)
            assert max(q.choices, key=lambda c: votes[c]) == picked
            assert all(votes[picked] > votes[c] for c in q.choices if c != picked)


def test_text_answers(samples):
    for scene, q in _questions(samples, "text"):
        words = {t["word"]: t for t in scene["texts"]}
        assert sorted(q.ocr_tokens) == sorted(words)
        assert q.prompt == f"{q.question}\nReference OCR token: {', '.join(q.ocr_tokens)}{SHORT}"
        if q.subfamily == "word_by_color":
            color = match(r"What word is written in (\w+)\?", q.question)[1]
            assert words[q.answer]["color"] == color
        elif q.subfamily == "color_of_word":
            assert q.answer == words[match(r'What color is the word "(\w+)"\?', q.question)[1]]["color"]
        else:
            side = match(r"What is the (\w+)most word in the image\?", q.question)[1]
            key = {"left": lambda t: t["bbox"][0], "top": lambda t: t["bbox"][1],
                   "right": lambda t: -t["bbox"][2], "bottom": lambda t: -t["bbox"][3]}[side]
            assert min(words.values(), key=key)["word"] == q.answer


def _mme_truth(scene, q) -> bool:
    objs, texts = scene["objects"], scene["texts"]
    if q.subfamily == "existence":
        m = match(r"Is there an? (\w+) (\w+) in this image\?", q.question)
        return bool(find(objs, {"color": m[1], "shape": m[2]}))
    if q.subfamily == "count":
        m = match(r"(?:Are|Is) there exactly (\w+) ([\w ]+) in this image\?", q.question)
        return len(find(objs, parse_ref(m[2]))) == NUMBER_WORDS.index(m[1])
    if q.subfamily == "position":
        m = match(r"Is the ([\w ]+?) (?:on the (left|right) side of|(above|below)) the ([\w ]+)\?",
                  q.question)
        a, b = _unique(objs, m[1]), _unique(objs, m[4])
        rel = m[2] or m[3]
        return _relations(a, b)[m[2] or m[3]]
    if q.subfamily == "color":
        m = match(r"Is the ([\w ]+) (\w+)\?", q.question)
        return _unique(objs, m[1])["color"] == m[2]
    m = match(r'Does the (\w+) word read "(\w+)"\?', q.question)
    return [t["word"] for t in texts if t["color"] == m[1]] == [m[2]]


def test_mme_pairs(samples):
    by_pair = {}
    for scene, q in _questions(samples, "mme"):
        assert q.answer == ("yes" if _mme_truth(scene, q) else "no")
        by_pair.setdefault(q.pair_id, []).append(q)
    for qs in by_pair.values():
        assert [q.answer for q in qs] == ["yes", "no"] and qs[0].subfamily == qs[1].subfamily
    per_image = Counter(pid.rsplit("_p", 1)[0] for pid in by_pair)
    assert max(per_image.values()) == 1, "one MME pair per image"


def test_describe_reference_lists_every_element(samples):
    for scene, q in _questions(samples, "describe"):
        assert q.prompt == "Describe the image in detail."
        n = len(scene["objects"])
        assert q.answer.startswith(f"The image shows {n} object")
        for o in scene["objects"]:
            phrase = f"{o['size']} {o['color']} {o['shape']}"
            expected = sum(f"{p['size']} {p['color']} {p['shape']}" == phrase for p in scene["objects"])
            assert q.answer.count(phrase) == expected
        for t in scene["texts"]:
            assert f'The word "{t["word"]}" is written in {t["color"]}' in q.answer


@pytest.mark.parametrize("family", ["attribute", "relation", "counting", "mme"])
def test_short_answer_prompt_suffix(samples, family):
    for _, q in _questions(samples, family):
        assert q.prompt == q.question + SHORT
