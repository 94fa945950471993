"""A tiny LLaVA-Instruct corpus with deliberately bad records, for data-pipeline tests."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import make_images


def write_corpus(root: Path, n_good: int = 8) -> tuple[Path, Path, dict[int, str]]:
    """Writes ``corpus.json`` + ``images/``; returns (corpus, image_folder, {row: expected problem}) for the bad rows."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for i, im in enumerate(make_images(n_good, seed=11)):
        im.save(images / f"{i}.png")
        records.append({"id": f"good-{i}", "image": f"images/{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat color is the square?"}, {"from": "gpt", "value": "red"},
            {"from": "human", "value": "How many objects?"}, {"from": "gpt", "value": str(i)}]})
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    bad = [
        ({"id": "corrupt", "image": "images/corrupt.png",
          "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]}, "cannot decode"),
        ({"id": "missing", "image": "images/nope.png",
          "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]}, "file not found"),
        ({"id": "no-conv", "image": "images/0.png"}, "field 'conversations': missing"),
        ({"id": "two-humans", "image": "images/0.png", "conversations": [
            {"from": "human", "value": "<image>\nq"}, {"from": "human", "value": "q"}]}, "conversations[1].from"),
    ]
    problems = {}
    for rec, problem in bad:
        problems[len(records)] = problem
        records.append(rec)
    corpus = root / "corpus.json"
    corpus.write_text(json.dumps(records))
    return corpus, root, problems
