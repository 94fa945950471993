"""Ray Data for the instruction corpus: validate and pack it into Parquet shards, then stream it into training.

* :func:`prepare_shards` reads a LLaVA-Instruct JSON file with its image folder, checks every record (fields,
  turn structure, the image file decodes) in ``map_batches`` tasks, and writes the good ones to Parquet with
  :data:`SHARD_SCHEMA` (image bytes + conversation JSON). Bad records are counted, logged with their row and id,
  and skipped up to ``max_bad_records``; one more fails the job with a :class:`DataError` listing them. With
  ``split_turns`` each question-answer pair of a multi-turn record becomes a record of its own
  (:func:`single_turn_records`).
* :func:`training_dataset` reads the shards and decodes + resizes + tokenises them in ``map_batches`` on CPU
  workers (streaming into the training workers), with the backbone's model-free :class:`Preprocessor`; rows that
  still fail are counted by a :class:`RecordGuard` actor under the same tolerance.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from PIL import Image

from stepprune.backbones.preprocess import IMAGE_MARKER, Preprocessor

log = logging.getLogger(__name__)

SHARD_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("row", pa.int64(), nullable=False),
    pa.field("image", pa.binary(), nullable=False),
    pa.field("conversations", pa.string(), nullable=False),
])


class DataError(RuntimeError):
    """The corpus has more bad records than the configured tolerance."""


def check_record(record: Any) -> str:
    """Returns '' for a well-formed LLaVA-Instruct record, else "field '<name>': <problem>"."""
    if not isinstance(record, dict):
        return f"field '<record>': expected an object, got {type(record).__name__}"
    for name in ("id", "image", "conversations"):
        if name not in record:
            return f"field '{name}': missing"
    if not isinstance(record["image"], str) or not record["image"]:
        return "field 'image': expected a relative path"
    conv = record["conversations"]
    if not isinstance(conv, list) or len(conv) < 2:
        return "field 'conversations': expected a list of at least one human and one gpt turn"
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict) or turn.get("from") != ("human" if i % 2 == 0 else "gpt"):
            return f"field 'conversations[{i}].from': turns must alternate human/gpt starting with human"
        if not isinstance(turn.get("value"), str) or not turn["value"].strip():
            return f"field 'conversations[{i}].value': expected non-empty text"
    if sum(IMAGE_MARKER in t["value"] for t in conv) != 1:
        return f"field 'conversations': exactly one turn must hold the {IMAGE_MARKER} marker"
    return ""


def single_turn_records(record: Any) -> list[Any]:
    """One single-turn record per human/gpt pair of a well-formed multi-turn record; anything else unchanged.

    Why: a selector conditioned on a multi-turn conversation reads all its questions at once (the spec's Eq. (3)
    input for multi-turn samples), so the LM loss of all the answers asks it to keep what *any* of them needs.
    On SynthVQA that is the union of every question's evidence about the image, which scores no better than random
    on the tiny backbone, while evaluation asks one question at a time. Split, each sample trains the selection
    for its own question.

    Each piece keeps the record's other fields, gets the id ``<id>_t<j>`` (j counts pairs from 0), and holds the
    image marker at the start of its human turn, as LLaVA's first turns do. A trailing question without an answer
    (nothing to train on) is dropped. A malformed record is returned whole, so that the packer reports it against
    its corpus row.
    """
    if check_record(record) or len(record["conversations"]) <= 2:
        return [record]
    conv = record["conversations"]
    pieces = []
    for j in range(len(conv) // 2):
        human, gpt = conv[2 * j], conv[2 * j + 1]
        question = human["value"].replace(IMAGE_MARKER, "").strip("\n")
        pieces.append({**record, "id": f"{record['id']}_t{j}",
                       "conversations": [{**human, "value": f"{IMAGE_MARKER}\n{question}"}, gpt]})
    return pieces


def _pack_batch(batch: dict[str, np.ndarray], image_folder: str) -> dict[str, np.ndarray]:
    """map_batches UDF: parse + validate records, read and verify their images."""
    out: dict[str, list] = {"id": [], "row": [], "image": [], "conversations": [], "error": []}
    for row, text in zip(batch["row"], batch["record"]):
        record, error, blob = None, "", b""
        try:
            record = json.loads(text)
            error = check_record(record)
        except json.JSONDecodeError as e:
            error = f"field '<record>': invalid JSON ({e})"
        if not error:
            path = Path(image_folder) / record["image"]
            try:
                blob = path.read_bytes()
                with Image.open(io.BytesIO(blob)) as im:
                    im.load()  # a truncated or corrupt file fails here, not at training time
            except FileNotFoundError:
                error = f"field 'image': file not found: {path}"
            except Exception as e:  # noqa: BLE001 - PIL raises many types for corrupt files
                error = f"field 'image': cannot decode {path} ({type(e).__name__}: {e})"
        rid = str(record.get("id", "")) if isinstance(record, dict) else ""
        out["id"].append(rid)
        out["row"].append(int(row))
        out["image"].append(b"" if error else blob)
        out["conversations"].append("" if error else json.dumps(record["conversations"]))
        out["error"].append(error)
    packed = {k: np.array(v, dtype=object if k in ("image", "id", "conversations", "error") else np.int64)
              for k, v in out.items()}
    return {"pos": batch["pos"], **packed}


def _write_runs(batch: dict[str, np.ndarray], out_dir: str) -> dict[str, np.ndarray]:
    """map_batches UDF: writes the batch's good rows as Parquet, one file per run of consecutive positions.

    A file is named for the first position of its run and holds the run's rows in position order. Runs are
    intervals that no other batch shares, so the files in name order hold the rows in position order however
    Ray split, merged or scheduled the blocks. Rows still carry the bad ones, so that a bad row does not split a
    run. Returns one row per file written (its first position and row count).
    """
    pos = np.asarray(batch["pos"], dtype=np.int64)
    order = np.argsort(pos, kind="stable")
    starts = [0] + [i for i in range(1, len(order)) if pos[order[i]] != pos[order[i - 1]] + 1]
    first, rows = [], []
    for a, b in zip(starts, starts[1:] + [len(order)]):
        keep = [i for i in order[a:b] if batch["error"][i] == ""]
        if not keep:
            continue
        start = int(pos[order[a]])
        table = pa.table({name: pa.array([batch[name][i] for i in keep], type=SHARD_SCHEMA.field(name).type)
                          for name in SHARD_SCHEMA.names}, schema=SHARD_SCHEMA)
        pq.write_table(table, str(Path(out_dir) / f"part-{start:012d}.parquet"))
        first.append(start)
        rows.append(len(keep))
    return {"first": np.array(first, dtype=np.int64), "rows": np.array(rows, dtype=np.int64)}


def prepare_shards(corpus: str | Path, image_folder: str | Path, out_dir: str | Path, *,
                   max_bad_records: int = 0, max_samples: int | None = None,
                   rows_per_shard: int = 1000, shuffle_seed: int | None = None,
                   split_turns: bool = False) -> dict[str, Any]:
    """Packs a LLaVA-Instruct corpus into Parquet shards. Returns the manifest it also writes.

    The shards hold the records in corpus order, or with ``shuffle_seed`` in that seed's random permutation of
    it (after ``max_samples``), so that a training run reading them front to back sees a random sample of the
    whole corpus. Either order is deterministic. Error messages keep the corpus row numbers. With
    ``split_turns`` every question-answer pair is a record (:func:`single_turn_records`), split after ``max_samples``
    (which counts corpus records) and before the shuffle (so one image's questions are spread over the shards).

    Raises:
        DataError: more than ``max_bad_records`` bad records; the message names each (file, row, id, field).
        FileNotFoundError / ValueError: the corpus file is missing or is not a JSON list.
    """
    corpus = Path(corpus)
    try:
        records = json.loads(corpus.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"corpus not found: {corpus}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{corpus}: not valid JSON ({e})") from None
    if not isinstance(records, list):
        raise ValueError(f"{corpus}: the LLaVA-Instruct format is a JSON list of records")
    if max_samples is not None:
        records = records[:max_samples]
    # (corpus row, record): error messages name the corpus row, also for a piece of a split record
    rows = [(i, piece) for i, r in enumerate(records) for piece in (single_turn_records(r) if split_turns else [r])]
    order = range(len(rows)) if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(
        len(rows)).tolist()
    # ``pos`` is each row's place in the shards. Rows are written by position (see :func:`_write_runs`), never
    # in Ray's task-completion order, which made two preparations of one corpus differ and two otherwise
    # identical training runs diverge once they reached the first reordered rows.
    items = [{"pos": pos, "row": rows[i][0], "record": json.dumps(rows[i][1])} for pos, i in enumerate(order)]
    # One block per shard: each block is a run of consecutive positions and becomes one file (or a few, where
    # Ray splits an output block larger than its target block size).
    n_blocks = max(1, (len(items) + rows_per_shard - 1) // rows_per_shard)
    return _write_shards(corpus, image_folder, out_dir, items, n_blocks, max_bad_records, shuffle_seed)


def _write_shards(corpus: Path, image_folder: str | Path, out_dir: str | Path, items: list[dict[str, Any]],
                  n_blocks: int, max_bad_records: int, shuffle_seed: int | None) -> dict[str, Any]:
    """:func:`prepare_shards` after the corpus is read: pack, count the bad rows, write the shards by position."""
    # batch_size=None: a whole block per task, so that small blocks are not coalesced into one shard.
    ds = ray.data.from_items(items, override_num_blocks=n_blocks).map_batches(
        _pack_batch, fn_kwargs={"image_folder": str(image_folder)}, batch_size=None, batch_format="numpy")
    ds = ds.materialize()
    bad = ds.filter(lambda r: r["error"] != "").select_columns(["row", "id", "error"]).take_all()
    bad.sort(key=lambda r: r["row"])
    for b in bad:
        log.warning("%s: row %d (id %r): %s -- skipped", corpus, b["row"], b["id"], b["error"])
    if len(bad) > max_bad_records:
        listed = "\n".join(f"  {corpus}: row {b['row']} (id {b['id']!r}): {b['error']}" for b in bad[:20])
        raise DataError(f"{len(bad)} bad records exceed data.max_bad_records={max_bad_records}:\n{listed}")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.parquet"):
        old.unlink()
    # ``out`` must be visible to every node (a shared filesystem on a cluster).
    files = ds.map_batches(_write_runs, fn_kwargs={"out_dir": str(out)}, batch_size=None,
                           batch_format="numpy").take_all()
    written, good = sum(int(f["rows"]) for f in files), len(items) - len(bad)
    if written != good:
        raise RuntimeError(f"{out}: wrote {written} rows, expected {good}")
    manifest = {"corpus": str(corpus), "image_folder": str(image_folder), "records": len(items), "written": good,
                "bad": [dict(b) for b in bad], "shuffle_seed": shuffle_seed, "schema": SHARD_SCHEMA.to_string()}
    (out / "_manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


@ray.remote(num_cpus=0)
class RecordGuard:
    """Counts records that fail at training time (decode / tokenise) and enforces the tolerance."""

    def __init__(self, max_bad: int):
        self.max_bad, self.bad = max_bad, []

    def report(self, rid: str, error: str) -> bool:
        """Records one bad row; returns False once the tolerance is exceeded."""
        self.bad.append((rid, error))
        log.warning("training record %r skipped: %s", rid, error)
        return len(self.bad) <= self.max_bad

    def count(self) -> int:
        return len(self.bad)


_PREPROCESSORS: dict[str, Preprocessor] = {}


def _encode_batch(batch: dict[str, np.ndarray], backbone: str, guard_name: str | None) -> dict[str, np.ndarray]:
    """map_batches UDF: decode + resize (the image processor) + tokenise each row; failed rows are dropped."""
    pre = _PREPROCESSORS.get(backbone)
    if pre is None:  # once per worker process
        pre = _PREPROCESSORS[backbone] = Preprocessor.from_pretrained(backbone)
    rows, ids = [], []
    for rid, blob, conv in zip(batch["id"], batch["image"], batch["conversations"]):
        try:
            with Image.open(io.BytesIO(blob)) as im:
                image = im.convert("RGB")
            rows.append(pre.encode_one(image, json.loads(conv)))
            ids.append(rid)
        except Exception as e:  # noqa: BLE001
            ok = True
            if guard_name is not None:
                ok = ray.get(ray.get_actor(guard_name).report.remote(str(rid), f"{type(e).__name__}: {e}"))
            if not ok:
                raise DataError(f"bad training records exceed the tolerance (last: id {rid!r}: {e})") from e
    if not rows:
        return {}
    out = {k: _ragged([r[k] for r in rows]) for k in rows[0]}
    out["id"] = np.array(ids, dtype=object)
    return out


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """Stacks equal-shape arrays; keeps different shapes as an object array (a ragged tensor column)."""
    if all(a.shape == arrays[0].shape for a in arrays):
        return np.stack(arrays)
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out


def training_dataset(shards: str | Path, backbone: str, *, batch_size: int = 16, guard_name: str | None = None,
                     seed: int = 0) -> ray.data.Dataset:
    """The streaming training dataset: Parquet shards -> decoded, tokenised rows (one per conversation)."""
    folder = Path(shards)
    files = sorted(str(p) for p in folder.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet shards in {folder}; run jobs/prepare_data.py first")
    # A resumed run skips the micro-batches its checkpointed steps consumed, so the order must not depend on
    # which task finishes first.
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    # Per-operator progress bars redraw many times a second into the job's log (and bury a sweep's trial
    # table); the training loop reports throughput itself.
    ctx.enable_progress_bars = False
    ds = ray.data.read_parquet(files, schema=SHARD_SCHEMA)
    missing = set(SHARD_SCHEMA.names) - set(ds.schema().names)
    if missing:
        raise ValueError(f"{folder}: shards lack columns {sorted(missing)} (expected {SHARD_SCHEMA.names})")
    ds = ds.randomize_block_order(seed=seed)
    return ds.map_batches(_encode_batch, fn_kwargs={"backbone": str(backbone), "guard_name": guard_name},
                          batch_size=batch_size, batch_format="numpy", num_cpus=0.5)


def rows_to_batch(batch: dict[str, np.ndarray], pad_token_id: int) -> dict[str, Any]:
    """``iter_batches`` batch (dict of numpy columns, ragged as object arrays) -> the collated tensor dict and
    the row ids (see :func:`stepprune.backbones.preprocess.collate`)."""
    from stepprune.backbones.preprocess import collate

    n = len(batch["id"])
    keys = [k for k in batch if k != "id"]
    rows = [{k: np.asarray(batch[k][i]) for k in keys} for i in range(n)]
    return {"encoded": collate(rows, pad_token_id), "ids": [str(x) for x in batch["id"]]}
