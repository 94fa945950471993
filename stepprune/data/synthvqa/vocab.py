"""The fixed vocabulary of SynthVQA: image geometry, colors, shapes, sizes, words and their sampling priors.

Everything a question can mention is defined here once, so question templates, the renderer and the scorers
agree on spelling. Colors are spelled the American way ("color", "gray") because every real benchmark does.
"""

from __future__ import annotations

IMAGE_SIZE = 192
PATCH_SIZE = 8
GRID = IMAGE_SIZE // PATCH_SIZE  # 24 x 24 = 576 patch tokens, the visual sequence length of LLaVA-1.5
N_PATCHES = GRID * GRID

# A patch is evidence for an element when the element's *visible* pixels cover at least this share of the
# patch (13 of 64 pixels). Lower values would count the slivers of an edge that spill into a neighbouring
# patch; higher ones would leave the thin arms of crosses and stars without evidence.
EVIDENCE_MIN_COVERAGE = 0.2

# Object colors: saturated, far apart in RGB and from the pale backgrounds, each with one everyday name.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 38, 38),
    "orange": (245, 135, 20),
    "yellow": (235, 200, 15),
    "green": (40, 160, 60),
    "blue": (40, 90, 220),
    "purple": (135, 60, 190),
    "pink": (240, 110, 190),
    "black": (25, 25, 25),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
SHAPE_PLURALS: dict[str, str] = {
    "circle": "circles", "square": "squares", "triangle": "triangles",
    "star": "stars", "diamond": "diamonds", "cross": "crosses",
}

# Bounding-box extent in pixels. Each class is ~1.6x the previous one so that size is a clear, absolute
# category (it never depends on the other objects in the image); a +-1 px jitter keeps it from being a
# pixel-exact template.
SIZES: dict[str, int] = {"small": 14, "medium": 24, "large": 36}
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)
SIZE_JITTER = 1

# Mildly non-uniform priors, so that POPE-style "popular" negatives (the most frequent categories absent from
# an image) are well defined without a second pass over the corpus. Kept mild so the answer prior stays weak.
COLOR_PRIOR: tuple[float, ...] = (0.17, 0.15, 0.14, 0.13, 0.12, 0.11, 0.10, 0.08)
SHAPE_PRIOR: tuple[float, ...] = (0.22, 0.20, 0.17, 0.15, 0.14, 0.12)
SIZE_PRIOR: tuple[float, ...] = (0.35, 0.35, 0.30)

# Words that can be rendered. Short, concrete, and disjoint from every answer word of the other families (no
# colors, shapes, sizes, numbers, yes/no or option letters), so a text answer can never be confused with them.
WORDS: tuple[str, ...] = (
    "apple", "bird", "boat", "book", "cake", "cat", "cloud", "coin", "cup", "dog",
    "door", "duck", "egg", "fish", "frog", "gift", "hat", "key", "kite", "lamp",
    "leaf", "lion", "map", "milk", "moon", "nest", "owl", "pen", "rain", "ring",
    "road", "rock", "bell", "ship", "shoe", "snow", "sock", "sun", "tree", "wave",
)
FONT_SIZES: tuple[int, ...] = (15, 17, 19, 21)

NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
)


def article(word: str) -> str:
    """'a' or 'an' for the word that follows."""
    return "an" if word[0] in "aeiou" else "a"


def region_of(x: float, y: float) -> tuple[str, str]:
    """(row, column) of a point on a 3x3 layout: row in top/middle/bottom, column in left/center/right."""
    third = IMAGE_SIZE / 3
    row = ("top", "middle", "bottom")[min(2, int(y // third))]
    col = ("left", "center", "right")[min(2, int(x // third))]
    return row, col


def region_phrase(row: str, col: str) -> str:
    """Where a point is, as a phrase: 'in the top left', 'at the top', 'in the center', ..."""
    if row == "middle" and col == "center":
        return "in the center"
    if row == "middle":
        return f"on the {col}"
    if col == "center":
        return f"at the {row}"
    return f"in the {row} {col}"
