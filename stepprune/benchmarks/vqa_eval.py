"""The VQA answer normaliser (EvalAI's answer processor, as used by LLaVA's ``m4c_evaluator`` and lmms-eval)
and the leave-one-out VQA soft accuracy, shared by VQAv2 and TextVQA.

The processor is reproduced *with its quirks*, because scores must match the official numbers:

1. tokenise: lowercase, delete every ``,`` and ``?``, turn ``'s`` into `` 's``, strip;
2. newlines and tabs become spaces, strip;
3. punctuation (``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !``): each character is deleted if it touches a
   space anywhere in the text, or if the text holds a digit-comma-digit run; otherwise it becomes a space
   (``t-shirt`` -> ``t shirt``). ``: ' $ % # & *`` are not in the list and survive;
4. periods not followed by a digit are dropped. The official look-behind is malformed (``(?!<=\\d)`` is a
   look-*ahead* for the text "<=" and so never protects anything): ``3.`` -> ``3`` while ``3.5`` stays. The
   official call also passes ``re.UNICODE`` (= 32) as the ``count`` argument, capping it at 32 removals;
5. split on whitespace (lowercasing again); map ``none, zero, one ... ten`` to digits (nothing above ten:
   "eleven" stays a word); drop ``a``, ``an``, ``the``; expand the contraction table, whose keys are forms
   *without* apostrophes (``dont`` -> ``don't``); join with single spaces.

:func:`normalize` runs all five steps (LLaVA's TextVQA evaluator and VQAv2 submission converter, lmms-eval
TextVQA). lmms-eval 0.7.3's ``vqav2_process_results`` skips step 1 on the prediction (so ``man's`` is not split
and ``?`` survives until step 3) and runs steps 2-5 on each reference: :func:`normalize_vqav2_lmms`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Step 3's list, in the official order (the order matters only through the "touches a space" test, which
# looks at the input text, so any order gives the same result).
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
# One or more commas between digits: when present anywhere, every listed punctuation mark is deleted.
_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d),+(?=\d)")
# What the malformed official pattern effectively matches: a period not followed by a digit.
_PERIOD = re.compile(r"\.(?!\d)")
_PERIOD_STRIP_CAP = int(re.UNICODE)  # == 32: the official code passes this flag as ``count``

NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
           "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})

# The official contraction table, written as "full form: keys". The keys are spellings with some or all
# apostrophes missing, exactly as listed officially, irregular entries included: "let's" and "she's" map to
# themselves, "somebody'd" maps to "somebodyd", and the capitalised keys (Im, Ive, Id've, I'dve) can never
# match because step 5 lowercases first.
_CONTRACTION_TABLE = """
'ow's'at: ow's'at 'ows'at 'ow'sat | 'twas: twas | I'd've: Id've I'dve | I'm: Im | I've: Ive | ain't: aint
aren't: arent | can't: cant | could've: couldve | couldn't: couldnt | couldn't've: couldn'tve couldnt've
didn't: didnt | doesn't: doesnt | don't: dont | hadn't: hadnt | hadn't've: hadnt've hadn'tve | hasn't: hasnt
haven't: havent | he'd: hed | he'd've: hed've he'dve | he's: hes | how'd: howd | how'll: howll | how's: hows
isn't: isnt | it'd: itd | it'd've: itd've it'dve | it'll: itll | let's: let's | ma'am: maam
might've: mightve | mightn't: mightnt | mightn't've: mightnt've mightn'tve | must've: mustve
mustn't: mustnt | needn't: neednt | not've: notve | o'clock: oclock | oughtn't: oughtnt | shan't: shant
she'd've: shed've she'dve | she's: she's | should've: shouldve | shouldn't: shouldnt
shouldn't've: shouldnt've shouldn'tve | somebody'd've: somebodyd've somebody'dve | somebody'll: somebodyll
somebody's: somebodys | somebodyd: somebody'd | someone'd: someoned | someone'd've: someoned've someone'dve
someone'll: someonell | someone's: someones | something'd: somethingd
something'd've: somethingd've something'dve | something'll: somethingll | that's: thats | there'd: thered
there'd've: thered've there'dve | there're: therere | there's: theres | they'd: theyd
they'd've: theyd've they'dve | they'll: theyll | they're: theyre | they've: theyve | wasn't: wasnt
we'd've: wed've we'dve | we've: weve | weren't: werent | what'll: whatll | what're: whatre | what's: whats
what've: whatve | when's: whens | where'd: whered | where's: wheres | where've: whereve | who'd: whod
who'd've: whod've who'dve | who'll: wholl | who's: whos | who've: whove | why'll: whyll | why're: whyre
why's: whys | won't: wont | would've: wouldve | wouldn't: wouldnt | wouldn't've: wouldnt've wouldn'tve
y'all: yall | y'all'd've: yall'd've y'alld've y'all'dve | y'all'll: yall'll y'allll | you'd: youd
you'd've: youd've you'dve | you'll: youll | you're: youre | you've: youve
"""


def _parse_contractions(table: str) -> dict[str, str]:
    out = {}
    for entry in table.replace("\n", " | ").split("|"):
        if entry.strip():
            full, keys = entry.split(": ")
            out.update({key: full.strip() for key in keys.split()})
    return out


CONTRACTIONS: dict[str, str] = _parse_contractions(_CONTRACTION_TABLE)


def tokenize(text: str) -> str:
    """Step 1: lowercase, delete ``,`` and ``?``, split off ``'s``, strip."""
    return text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()


def process_punctuation(text: str) -> str:
    """Steps 3 and 4: the punctuation rule, then the (capped) period strip."""
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        # The test looks at the *input* text, the replacement acts on the running output (as officially).
        touches_space = (mark + " " in text) or (" " + mark in text)
        out = out.replace(mark, "" if touches_space or delete_all else " ")
    return _PERIOD.sub("", out, count=_PERIOD_STRIP_CAP)


def process_digit_article(text: str) -> str:
    """Step 5: number words up to ten, article removal, contraction expansion, single-space join."""
    words = [NUMBERS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def _whitespace(text: str) -> str:
    """Step 2."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize(text: str) -> str:
    """The full EvalAI answer processor (steps 1-5).

    Example::

        normalize("Yes, it is.")  # -> "yes it is"
    """
    return process_digit_article(process_punctuation(_whitespace(tokenize(text))))


def normalize_vqav2_lmms(text: str) -> str:
    """lmms-eval 0.7.3's VQAv2 processing (steps 2-5, no tokenise): ``"man's"`` stays ``"man's"``."""
    return process_digit_article(process_punctuation(_whitespace(text)))


def soft_accuracy(prediction: str, references: Sequence[str]) -> float:
    """The VQA leave-one-out soft accuracy of an already-normalised prediction.

    For each reference left out in turn, ``min(#matches among the others / 3, 1)``; the mean of those values.
    With k of 10 references equal to the prediction this gives 0, 0.3, 0.6, 0.9, then 1.0 for k >= 4.

    Args:
        prediction: the normalised prediction.
        references: the normalised human answers (10 in VQAv2 / TextVQA).
    """
    if not references:
        raise ValueError("soft accuracy needs at least one reference answer")
    k = sum(ref == prediction for ref in references)
    # Leaving out a matching reference leaves k - 1 matches, leaving out another one leaves k.
    per_drop = [min((k - (ref == prediction)) / 3, 1.0) for ref in references]
    return sum(per_drop) / len(per_drop)
