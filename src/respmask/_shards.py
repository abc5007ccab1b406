"""``respmask tokenize``: pre-tokenize a dataset file into Parquet shards, resumably.

Input: JSON Lines, a JSON array of rows (or one JSON object), Parquet, or a saved ``datasets``
directory. Output directory:
``part-00000.parquet`` ... (``input_ids``, ``labels`` as list<int32>, ``index`` of the input row;
with packing also ``position_ids`` and ``lengths``, and ``index`` lists the input rows of the
samples in each packed row, in the order of ``lengths``), ``rejects-00000.jsonl`` (every input row that
could not be used, with its index and the reason), ``stats-00000.json`` per shard and
``summary.json``. Each shard is written atomically, so re-running after an interruption skips
finished shards; ``run.json`` records what the shards are made of (the input's content, the chat
template, the tokenizer, every option), and a run in which any of it changed is refused rather
than mixed with them. Nothing is dropped silently: every input row is in a part or in a rejects
file, and the summary's counts add up (a sample longer than ``--pack L`` is truncated to L and
counted as truncated, as ``--max-length`` would).

The work runs inside the engine you choose: ``datasets`` (``Dataset.map(num_proc=N)``) or Ray Data
(``map_batches``); JSON Lines rows travel as JSON strings, so rows of any shape (even ones Arrow
could not put in one table) reach respmask and get a precise error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ._errors import RespmaskError, SampleError, warn, without_sample
from ._masks import IGNORE_INDEX
from ._encode import (
    CONTENT_PRINTED, CONTENT_PRINTED_FIX, CONTENT_PRINTED_WHY, EVERY_TOKEN_TRAINED, REASONING_AGAINST_PROMPT,
    TrainingRow, printed_content, reasoning_against, reasoning_against_fix, reasoning_against_why, trained_against,
)
from ._masker import _safe_signature
from ._pretokenize import Pretokenizer, columns_to_arrow

#: run.json's layout. 2: it records the input's content, the chat template used and the
#: tokenizer's identity (format 1 did not, so its shards cannot be checked before resuming)
FORMAT_VERSION = 2


@dataclass
class Summary:
    """Counts over a whole run (input rows + split rows = written + rejected, before packing)."""

    input_rows: int = 0
    written_rows: int = 0
    rejected_rows: int = 0
    split_rows: int = 0  # rows added by splitting conversations (split="auto"/"turns")
    tokens: int = 0
    trained_tokens: int = 0
    untrainable_rows: int = 0
    rejected_untrainable_rows: int = 0  # of the untrainable rows, those --drop-untrainable moved to the rejects
    truncated_rows: int = 0
    # what truncation cut from the written rows: to --max-length, or to --pack L when that is smaller
    # (a packed row holds at most L tokens); max_length is the length they were cut to (None: none)
    truncated_tokens: int = 0
    truncated_trained_tokens: int = 0
    max_length: int | None = None
    packed_rows: int = 0
    # of the written rows: earlier turns' reasoning the template leaves out (Qwen3; split="auto" trains it),
    # data it leaves out of rows kept with --keep-lost-data, and empty replies (only their stop token trains)
    reasoning_left_out_messages: int = 0
    reasoning_left_out_tokens: int = 0
    lost_data_rows: int = 0
    lost_data_messages: int = 0
    lost_data_tokens: int = 0
    empty_replies: int = 0
    shards: int = 0
    resumed_shards: int = 0
    seconds: float = 0.0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    # per reason: the rest of its first reject's error (where and what to do), where it says more than the reason
    reject_details: dict[str, str] = field(default_factory=dict)

    @property
    def trained_fraction(self) -> float:
        return self.trained_tokens / self.tokens if self.tokens else 0.0

    def add(self, other: Mapping[str, Any]) -> None:
        for key in ("input_rows", "written_rows", "rejected_rows", "split_rows", "tokens", "trained_tokens", "untrainable_rows",
                    "rejected_untrainable_rows", "truncated_rows", "packed_rows", *DETAILS):
            setattr(self, key, getattr(self, key) + int(other.get(key, 0)))
        for reason, n in other.get("reject_reasons", {}).items():
            self.reject_reasons[reason] = self.reject_reasons.get(reason, 0) + n
        for reason, detail in other.get("reject_details", {}).items():
            self.reject_details.setdefault(reason, detail)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["trained_fraction"] = self.trained_fraction
        return d


_SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z(])")


def _reason(message: str) -> tuple[str, str | None]:
    """The reason rejects are grouped and counted under: the error's first sentence, whole, without
    its sample index (respmask's errors say what happened first, then where and what to do); and
    the rest of the error (None when it is one sentence). The rejects file keeps every error in full."""
    text = without_sample(message)
    end = _SENTENCE_END.search(text)
    if end is None:
        return text, None
    return text[: end.end()], text[end.end():].strip() or None


def bad_json_line(line: int, exc: json.JSONDecodeError) -> str:
    """What a JSON Lines line that is not JSON gets as its error, in ``check`` and ``tokenize`` alike:
    its line number in the file and where on that line JSON broke."""
    return f"line {line}: not valid JSON ({exc.msg} at column {exc.colno})"


#: per written row, what the template leaves out of it and what truncation cut from it (summed into
#: the Summary's fields of these names)
DETAILS = ("reasoning_left_out_messages", "reasoning_left_out_tokens", "lost_data_rows", "lost_data_messages",
           "lost_data_tokens", "empty_replies", "truncated_tokens", "truncated_trained_tokens")


def _details(row: TrainingRow) -> tuple[int, ...]:
    """:data:`DETAILS` of one training row (zeros for a row that raised)."""
    enc = row.encoded
    if enc is None or row.input_ids is None:
        return (0,) * len(DETAILS)
    lost = enc.lost_data
    reasoning = len(enc.dropped) - len(lost)
    return (reasoning, enc.reasoning_tokens_dropped, int(bool(lost)), len(lost),
            enc.dropped_tokens - enc.reasoning_tokens_dropped, len(row.empty_replies),
            len(enc.input_ids) - len(row.input_ids), enc.n_trained - row.trained)


class _JsonRows:
    """The batch function run inside the engine: JSON strings in, token columns out (and, per
    row, what the template leaves out of it: :data:`DETAILS`)."""

    def __init__(self, pretokenizer: Pretokenizer):
        self.pretokenizer = pretokenizer

    @property
    def features(self) -> Any:
        """The output's ``datasets.Features``: the Pretokenizer's and :data:`DETAILS`."""
        import datasets

        features = self.pretokenizer.features
        for name in DETAILS:
            features[name] = datasets.Value("int64")
        return features

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list]:
        texts = list(batch["json"])
        indices = [int(i) for i in batch["index"]]
        lines = [int(n) for n in batch["line"]] if "line" in batch else [None] * len(texts)
        rows: list[Any] = []
        parse_errors: dict[int, str] = {}
        for j, (text, index) in enumerate(zip(texts, indices)):
            try:
                rows.append(json.loads(text))
            except json.JSONDecodeError as exc:
                where = bad_json_line(lines[j], exc) if lines[j] is not None else f"not valid JSON ({exc.msg})"
                parse_errors[j] = f"sample {index}: {where}"
                rows.append({})
                continue
            if lines[j] is not None and not isinstance(rows[-1], (Mapping, list)):
                parse_errors[j] = f"sample {index}: line {lines[j]}: not a JSON object"
                rows[-1] = {}
        out, kept = self.pretokenizer._encode_rows(rows, indices)
        kept = self._reject_findings(rows, out, kept)
        details = [_details(row) for row in kept]
        for k, name in enumerate(DETAILS):
            out[name] = [d[k] for d in details]
        # a row that is not JSON was read as {} and gave one error row: put the JSON error there
        where = {index: r for r, index in enumerate(out["index"])}
        for j, message in parse_errors.items():
            out["error"][where[indices[j]]] = message
        return out

    def _reject_findings(self, rows: list[Any], out: dict[str, list], kept: list[TrainingRow]) -> list[TrainingRow]:
        """Turn into rejects (in ``out``, in place) the rows ``check`` reports as problems that the
        Pretokenizer writes as given: labels on every token, content lists the template prints,
        reasoning trained against the generation prompt. Found as ``check`` finds them (the same
        functions, the same cheap tests first), said in its words. A sample split into rows is
        rejected once: its first row carries the error, the others are left out.

        Returns:
            The training row of each row left in ``out``."""
        masker = self.pretokenizer.masker
        errors = out["error"]
        rejected: dict[int, str] = {}  # sample (batch position) -> what check says of it
        against: dict[int, tuple[list[int], Any]] = {}  # per sample: reasoning_against
        for r, row in enumerate(kept):
            enc = row.encoded
            if errors[r] is not None or enc is None or row.sample in rejected:
                continue
            sample = rows[row.sample]
            problem = None
            if row.problem == EVERY_TOKEN_TRAINED:
                problem = EVERY_TOKEN_TRAINED
            elif printed := printed_content(masker, sample, enc):
                roles = ", ".join(repr(role) for role in dict.fromkeys(role for _, role in printed))
                problem = (f"{CONTENT_PRINTED}. Messages {[m for m, _ in printed]} (roles {roles}): "
                           f"{CONTENT_PRINTED_WHY}. What to do: {CONTENT_PRINTED_FIX}")
            elif enc.text is not None:
                if row.sample not in against:
                    against[row.sample] = reasoning_against(masker, sample)
                replies, how = against[row.sample]
                if messages := trained_against(enc, replies):
                    problem = (f"{REASONING_AGAINST_PROMPT}. Messages {messages}: "
                               f"{reasoning_against_why(how.kwargs, how.prompt)}. What to do: "
                               f"{reasoning_against_fix(how.kwargs, how.prompt_without)}")
            if problem is not None:
                rejected[row.sample] = problem
        if not rejected:
            return kept
        left, carried = [], set()
        for r, row in enumerate(kept):
            problem = rejected.get(row.sample)
            if problem is None:
                left.append(r)
            elif row.sample not in carried:  # the sample's first row carries the error
                carried.add(row.sample)
                left.append(r)
                errors[r] = str(SampleError(problem, row.index))
                out["input_ids"][r] = out["labels"][r] = np.zeros(0, dtype=np.int32)
                out["truncated"][r], out["untrainable"][r] = False, None
        for name, column in out.items():
            out[name] = [column[r] for r in left]
        return [kept[r] for r in left]


JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
#: How data files are read: UTF-8, and a byte-order mark at the start (Windows editors and PowerShell
#: write one) is not part of the first row, as ``datasets`` reads them. Lines may end in CRLF.
DATA_ENCODING = "utf-8-sig"


def _json_layout(path: str) -> str:
    """How a JSON file holds its rows: ``"lines"`` (JSON Lines) or ``"document"`` (one JSON
    value: an array of rows, or one object). Only the first lines are read.

    A first line that is a JSON value by itself starts JSON Lines, except a file that is one
    array on one line and is not named ``.jsonl``/``.ndjson`` (an array of rows). A first line
    that is the start of a longer value (``[``, ``{``, a pretty-printed row) starts a document;
    a first line that breaks off before its end is a broken JSON Lines row, reported as such.
    """
    first = None
    more = False
    with open(path, encoding=DATA_ENCODING) as f:
        for line in f:
            if not line.strip():
                continue
            if first is None:
                first = line.strip()
            else:
                more = True
                break
    if first is None:
        return "lines"
    try:
        json.loads(first)
    except json.JSONDecodeError as exc:
        return "document" if exc.pos >= len(first) else "lines"
    if first.startswith("[") and not more and Path(path).suffix not in JSON_LINES_SUFFIXES:
        return "document"
    return "lines"


def _json_document(path: str) -> list[Any]:
    """The rows of a file holding one JSON array (its items) or one JSON object (one row)."""
    with open(path, encoding=DATA_ENCODING) as f:
        try:
            value = json.load(f)
        except json.JSONDecodeError as exc:
            raise RespmaskError(
                f"{path}: not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); respmask reads a "
                "JSON array of rows, one JSON object, or JSON Lines (one object per line)"
            ) from exc
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    raise RespmaskError(f"{path}: holds a JSON {type(value).__name__}, not an array of rows or an object")


def open_input(path: str) -> tuple[str, Any]:
    """A data file or directory, opened: ``("jsonl", path)`` for JSON Lines (read as a stream),
    ``("rows", list)`` for a JSON array (or a single JSON object), ``("dataset", Dataset)`` for
    Parquet and saved ``datasets`` directories.

    A saved DatasetDict is read as its 'train' split, with a warning naming the other splits and
    their directories when it holds more (their rows are in no count).

    Raises:
        RespmaskError: no such file, a saved DatasetDict without a 'train' split, or a JSON
            document that does not parse (its line and column).
    """
    p = Path(path)
    if p.is_dir():
        import datasets

        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise RespmaskError(f"{path}: a DatasetDict without a 'train' split ({list(ds)})")
            others = [name for name in ds if name != "train"]
            if others:  # read one split, and say so: the others' rows are not in any count
                n = len(ds["train"])
                warn(f"respmask: {path} holds the splits {list(ds)}: only 'train' ({n} rows) is read; "
                     "to read another, give its directory ("
                     + ", ".join(f"{name!r}: {p / name}" for name in others) + ")")
            ds = ds["train"]
        return "dataset", ds
    if not p.is_file():
        raise RespmaskError(f"{path}: no such file or directory")
    if p.suffix in (".parquet", ".pq"):
        import datasets

        return "dataset", datasets.Dataset.from_parquet(str(p))
    if _json_layout(str(p)) == "document":
        return "rows", _json_document(str(p))
    return "jsonl", str(p)


class BadLine(NamedTuple):
    """A JSON Lines line that holds no row: what :func:`iter_rows` yields in its place with
    ``bad_lines="yield"`` (so that a reader can record it and go on, as ``tokenize`` does)."""

    line: int
    message: str


def iter_rows(path: str, bad_lines: str = "raise") -> Iterator[Any]:
    """Every row of a data file (JSON Lines, a JSON array or object, Parquet, a saved dataset).

    Args:
        path: the file or directory.
        bad_lines: ``"raise"`` at a JSON Lines line that is not valid JSON or not an object or
            list, or ``"yield"`` a :class:`BadLine` in its place.

    Raises:
        RespmaskError: as :func:`open_input`, and bad lines with ``bad_lines="raise"`` (their line
            number).
    """
    kind, source = open_input(path)
    if kind == "rows":
        yield from source
    elif kind == "dataset":
        yield from source
    else:
        with open(source, encoding=DATA_ENCODING) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    problem = bad_json_line(n, exc)
                    if bad_lines == "yield":
                        yield BadLine(n, problem)
                        continue
                    raise RespmaskError(f"{path}:{problem}") from exc
                if not isinstance(value, (Mapping, list)):
                    if bad_lines == "yield":
                        yield BadLine(n, f"line {n}: not a JSON object")
                        continue
                    raise RespmaskError(f"{path}:{n}: each line must be a JSON object")
                yield value


def _jsonl_shards(path: str, size: int) -> Iterator[tuple[int, list[str], list[int], list[int]]]:
    """(shard number, lines, input indices, line numbers) of a JSON Lines file, streamed (blank
    lines skipped; line numbers count every line of the file from 1, as editors do)."""
    lines: list[str] = []
    indices: list[int] = []
    numbers: list[int] = []
    index = 0
    shard = 0
    with open(path, encoding=DATA_ENCODING) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            lines.append(line)
            indices.append(index)
            numbers.append(n)
            index += 1
            if len(lines) == size:
                yield shard, lines, indices, numbers
                shard += 1
                lines, indices, numbers = [], [], []
    if lines:
        yield shard, lines, indices, numbers


def _count_jsonl(path: str) -> int:
    with open(path, encoding=DATA_ENCODING) as f:
        return sum(1 for line in f if line.strip())


@contextlib.contextmanager
def _engine_output(engine: str, quiet: bool) -> Iterator[None]:
    """With ``quiet``, silence the engine's progress bars and logs for the run, and put back the
    caller's settings afterwards."""
    if not quiet:
        yield
        return
    undo: list[Callable[[], None]] = []
    try:
        if engine == "datasets":
            import datasets.utils as ds_utils
            from datasets.utils import logging as ds_logging

            if not ds_utils.are_progress_bars_disabled():
                ds_utils.disable_progress_bars()
                undo.append(ds_utils.enable_progress_bars)
            level = ds_logging.get_verbosity()
            ds_logging.set_verbosity_error()
            undo.append(lambda: ds_logging.set_verbosity(level))
        else:
            import ray.data

            ctx = ray.data.DataContext.get_current()
            bars = ctx.enable_progress_bars
            ctx.enable_progress_bars = False
            undo.append(lambda: setattr(ctx, "enable_progress_bars", bars))
            for name in ("ray", "ray.data"):
                logger = logging.getLogger(name)
                old = logger.level
                logger.setLevel(logging.ERROR)
                undo.append(lambda logger=logger, old=old: logger.setLevel(old))
        yield
    finally:
        for fn in reversed(undo):
            fn()


def _run_engine(engine: str, table: Any, fn: _JsonRows, num_proc: int, batch_size: int, quiet: bool = False) -> Any:
    """Run ``fn`` over a shard (a pyarrow table with 'json' and 'index') inside the engine; the
    result is a pyarrow table (input_ids, labels, error, truncated, index) in input order."""
    if engine == "datasets":
        import datasets

        ds = datasets.Dataset(table)
        features = fn.features
        out = ds.map(fn, batched=True, batch_size=batch_size, num_proc=num_proc if num_proc > 1 else None,
                     remove_columns=ds.column_names, features=features, load_from_cache_file=False,
                     keep_in_memory=True, desc="respmask tokenize")
        return out.data.table
    if engine == "ray":
        import pyarrow as pa
        import ray
        import ray.data

        if not ray.is_initialized():
            ray.init(num_cpus=num_proc if num_proc > 1 else None, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR if quiet else logging.INFO)

        def arrow_fn(batch: Any) -> Any:
            return columns_to_arrow(fn(batch.to_pydict()))

        blocks = max(2, 2 * num_proc)
        step = -(-table.num_rows // blocks) or 1
        ds = ray.data.from_arrow([table.slice(a, step) for a in range(0, table.num_rows, step)])
        result = pa.concat_tables(ray.get(ds.map_batches(arrow_fn, batch_format="pyarrow",
                                                         batch_size=batch_size).to_arrow_refs()))
        return result.sort_by("index")
    raise RespmaskError(f"unknown engine {engine!r}: use 'datasets' or 'ray'")


def tokenize_files(
    input_path: str,
    output_dir: str,
    tokenizer: Any,
    *,
    engine: str = "datasets",
    num_proc: int = 1,
    shard_size: int = 10_000,
    batch_size: int = 256,
    pack: int | None = None,
    drop_untrainable: bool = False,
    progress: bool = True,
    **options: Any,
) -> Summary:
    """Pre-tokenize ``input_path`` into Parquet shards under ``output_dir`` (see module doc).

    ``options`` are :class:`respmask.Pretokenizer` options (``max_length``, ``truncation``,
    ``train_on``, ``template_kwargs`` ...); ``on_lost_data`` defaults to ``"reject"`` here: a row
    holding data the chat template leaves out goes to the rejects with what it lost. ``pack=L`` packs
    each shard's samples into rows of at most L tokens (best-fit decreasing); a longer sample is
    truncated to L first, as ``max_length=L`` would (and counted so). ``drop_untrainable`` moves samples with no trained token to
    the rejects instead of writing them. Rows ``check`` fails on that the Pretokenizer writes as
    they are (labels on every token, content lists the template prints, reasoning trained against
    the generation prompt) go to the rejects too, in ``check``'s words.

    Raises:
        RespmaskError: no such input; or ``output_dir`` holds finished shards of a run with other
            settings (input content, chat template, tokenizer, respmask version or an option; or a
            run.json an older respmask wrote), naming what changed.
        TokenizerError: the tokenizer has no chat template (and no ``chat_template`` option) while
            the rows need one: raised before anything is written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.time()
    options.setdefault("on_lost_data", "reject")
    # a packed row holds at most `pack` tokens: a longer sample is truncated to it, as --max-length
    # truncates (with its side, its counts, and its untrainable rows), never cut silently by packing
    cut_at = options.get("max_length")
    if pack and (cut_at is None or pack < cut_at):
        cut_at = pack
    pretokenizer = Pretokenizer(tokenizer, on_error="collect", **{**options, "max_length": cut_at})
    template = _template_sha256(pretokenizer)
    if template is None and not _pretokenized(input_path):
        pretokenizer.masker.template_source()  # raises the TokenizerError before anything is written
    settings = {
        "format": FORMAT_VERSION, "respmask": _version(), "input": os.path.abspath(input_path),
        "input_content": _content(input_path), "pack": pack,
        "drop_untrainable": drop_untrainable, "shard_size": shard_size,
        "options": {k: v for k, v in sorted(options.items())},
        "tokenizer": getattr(tokenizer, "name_or_path", None), "vocab_size": len(tokenizer),
        "tokenizer_sha256": _tokenizer_sha256(tokenizer),
        "chat_template_sha256": template,
    }
    settings = json.loads(json.dumps(settings, default=str))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings_file = out / "run.json"
    if settings_file.exists():
        _check_resumable(json.loads(settings_file.read_text()), settings, output_dir, settings_file)
    else:
        settings_file.write_text(json.dumps(settings, indent=2))

    fn = _JsonRows(pretokenizer)
    kind, source = open_input(input_path)
    if kind == "jsonl":
        total = _count_jsonl(source)
        shards: Iterator[tuple[int, Any]] = (
            (k, pa.table({"json": lines, "index": pa.array(idx, type=pa.int64()),
                          "line": pa.array(numbers, type=pa.int64())}))
            for k, lines, idx, numbers in _jsonl_shards(source, shard_size)
        )
    else:
        total = len(source)

        def dataset_shards() -> Iterator[tuple[int, Any]]:
            for k, a in enumerate(range(0, total, shard_size)):
                b = min(a + shard_size, total)
                rows = source[a:b] if kind == "rows" else source.select(range(a, b)).to_list()
                yield k, pa.table({"json": [json.dumps(r, default=_json_default) for r in rows],
                                   "index": pa.array(range(a, b), type=pa.int64())})

        shards = dataset_shards()
    n_shards = -(-total // shard_size) if total else 0
    summary = Summary(shards=n_shards, max_length=cut_at)
    bar = _progress(n_shards, progress)
    for k, table in shards:
        stats_file = out / f"stats-{k:05d}.json"
        if stats_file.exists() and (out / f"part-{k:05d}.parquet").exists():
            summary.add(json.loads(stats_file.read_text()))
            summary.resumed_shards += 1
            bar.update(1)
            continue
        with _engine_output(engine, quiet=not progress):
            cols = _run_engine(engine, table, fn, num_proc, batch_size, quiet=not progress)
        stats, part, rejects = _finish_shard(cols, pack, drop_untrainable)
        _write_atomic(out / f"rejects-{k:05d}.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects).encode())
        tmp = out / f"part-{k:05d}.parquet.tmp"
        pq.write_table(part, tmp)
        os.replace(tmp, out / f"part-{k:05d}.parquet")
        _write_atomic(stats_file, json.dumps(stats).encode())  # last: marks the shard as done
        summary.add(stats)
        bar.update(1)
    bar.close()
    summary.seconds = time.time() - started
    if summary.input_rows + summary.split_rows != summary.written_rows + summary.rejected_rows and not pack:
        raise RespmaskError(f"internal error: counts do not add up: {summary.to_dict()}")
    (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
    return summary


def _version() -> str:
    from . import __version__

    return __version__


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _content(path: str) -> dict[str, Any]:
    """What the input holds, cheaply comparable: its size in bytes and the sha256 of its bytes (a
    directory: of its files' relative paths and bytes, in order; ``datasets``' ``cache-*`` files
    left out, as they come and go without changing the data). Hashing reads about 1 GB/s, far
    faster than tokenizing; a modification time alone would take a file rewritten with the same
    rows for a new one and miss one rewritten within the clock's resolution.

    Raises:
        RespmaskError: no such file or directory.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("cache-"))
    elif p.is_file():
        files = [p]
    else:
        raise RespmaskError(f"{path}: no such file or directory")
    digest = hashlib.sha256()
    size = 0
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        one = h.hexdigest()
        if f != p:
            digest.update(f.relative_to(p).as_posix().encode("utf-8") + b"\0")
        digest.update(one.encode("ascii"))
        size += f.stat().st_size
    return {"bytes": size, "sha256": one if files == [p] else digest.hexdigest()}


def _tokenizer_sha256(tokenizer: Any) -> str:
    """The sha256 of what the tokenizer makes of text: ChatMasker's signature of it (type, size,
    chat template, special tokens) and its whole serialized backend (vocabulary, merges, normalizer,
    pre-tokenizer, added tokens; the signature samples only some of the vocabulary). About 0.1 s
    for a 150k vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    serialized = ""
    if backend is not None:  # without the padding and truncation a call leaves set (respmask encodes without)
        from ._media import _settings_kept

        with _settings_kept(tokenizer):
            backend.no_truncation()
            backend.no_padding()
            serialized = backend.to_str()
    return _sha256(repr(_safe_signature(tokenizer)) + serialized)


def _pretokenized(input_path: str) -> bool:
    """Whether the input's first row is pre-tokenized (``input_ids``: no chat template needed)."""
    first = next(iter_rows(input_path, bad_lines="yield"), None)
    return isinstance(first, Mapping) and "input_ids" in first


def _template_sha256(pretokenizer: Pretokenizer) -> str | None:
    """The sha256 of the chat template the rows are rendered with (None: there is none, which
    only pre-tokenized rows can do without: the run stops at the first row that needs one)."""
    try:
        return _sha256(pretokenizer.masker.template_source())
    except RespmaskError:
        return None


#: what each run.json key stands for, in the error that refuses to resume
_SETTING_NAMES = {
    "respmask": "the respmask version",
    "input": "the input path",
    "input_content": "the input's content",
    "tokenizer": "the tokenizer's name or path",
    "vocab_size": "the tokenizer's vocabulary size",
    "tokenizer_sha256": "the tokenizer's vocabulary, special tokens or chat template",
    "chat_template_sha256": "the chat template used",
    "pack": "pack (--pack)",
    "shard_size": "shard_size (--shard-size)",
    "drop_untrainable": "drop_untrainable (--drop-untrainable)",
}


def _shown(value: Any) -> str:
    """A run.json value as an error shows it: a long text by its length and hash, a hash by its start."""
    if isinstance(value, dict) and set(value) == {"bytes", "sha256"}:
        return f"{value['bytes']} bytes, sha256 {value['sha256'][:12]}"
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return f"sha256 {value[:12]}"
    if isinstance(value, str) and len(value) > 60:  # a template: its length, and its sha256 as run.json records it
        return f"<{len(value)} characters, sha256 {_sha256(value)[:12]}>"
    text = json.dumps(value)
    if len(text) > 60:
        return f"<{len(text)} characters of JSON, sha256 {_sha256(text)[:12]}>"
    return text


def _check_resumable(previous: Mapping[str, Any], settings: Mapping[str, Any], output_dir: str,
                     settings_file: Path) -> None:
    """Refuse to resume a run whose finished shards were made from anything else than this run
    would use (their rows would mix with this run's), naming each thing that changed.

    Raises:
        RespmaskError: ``previous`` (run.json) differs from ``settings``, or comes from a respmask
            that did not record the input's content, the chat template and the tokenizer.
    """
    fmt = previous.get("format")
    if fmt != settings["format"]:
        older = not isinstance(fmt, int) or fmt < settings["format"]
        why = ("which did not record the input's content, the chat template and the tokenizer it used: its "
               "finished shards cannot be checked against this run" if older else
               f"whose run.json this respmask (format {settings['format']}) cannot read")
        raise RespmaskError(
            f"{output_dir} holds a run written by {'an older' if older else 'a newer'} respmask ({settings_file}, "
            f"format {fmt}), {why}. Delete {output_dir} to start over, or write to another output directory"
        )
    changes = []
    for key in dict.fromkeys([*settings, *previous]):
        if key == "options":
            old, new = previous.get(key) or {}, settings[key]
            for name in dict.fromkeys([*new, *old]):
                if old.get(name) != new.get(name):
                    changes.append(f"option {name} ({_shown(old.get(name))} -> {_shown(new.get(name))})")
        elif previous.get(key) != settings.get(key):
            changes.append(f"{_SETTING_NAMES.get(key, key)} ({_shown(previous.get(key))} -> {_shown(settings.get(key))})")
    if changes:
        raise RespmaskError(
            f"{output_dir} holds the finished shards of a run with other settings ({settings_file}); changed since: "
            f"{'; '.join(changes)}. Resuming would mix rows made two ways. Delete {output_dir} to start over, or "
            "write to another output directory"
        )


def _finish_shard(table: Any, pack: int | None,
                  drop_untrainable: bool) -> tuple[dict[str, Any], Any, list[dict[str, Any]]]:
    """Split an engine's output into the part to write, the rejects and the shard's counts
    (columnar: no Python loop over tokens, and none over rows but for rejects)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ._packing import pack as pack_rows

    n = table.num_rows
    index = table.column("index").to_numpy()
    failed = pc.is_valid(table.column("error")).to_numpy(zero_copy_only=False)
    labels = table.column("labels").combine_chunks()
    offsets = labels.offsets.to_numpy()
    offsets = offsets - offsets[0]  # (a sliced array starts past 0)
    lengths = np.diff(offsets)
    trained_flat = labels.flatten().to_numpy(zero_copy_only=False) != IGNORE_INDEX
    running = np.concatenate([[0], np.cumsum(trained_flat, dtype=np.int64)])
    trained = running[offsets[1:]] - running[offsets[:-1]]  # trained tokens per row
    untrainable = pc.is_valid(table.column("untrainable")).to_numpy(zero_copy_only=False)
    rejected = failed | (untrainable & drop_untrainable)
    keep = ~rejected

    rejects: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    details: dict[str, str] = {}
    errors = table.column("error").to_pylist()
    why = table.column("untrainable").to_pylist()
    for j in np.flatnonzero(rejected):
        message = errors[j] or f"sample {index[j]}: {why[j]}"
        rejects.append({"index": int(index[j]), "error": message})
        reason, detail = _reason(message)
        reasons[reason] += 1
        if detail is not None and reason not in details:
            details[reason] = f"sample {int(index[j])}: {detail}"

    stats: dict[str, Any] = {
        "input_rows": int(len(np.unique(index))),
        "split_rows": int(n - len(np.unique(index))),
        "written_rows": int(keep.sum()),
        "rejected_rows": int(rejected.sum()),
        "untrainable_rows": int(untrainable.sum()),
        "rejected_untrainable_rows": int((untrainable & rejected).sum()),
        "truncated_rows": int((table.column("truncated").to_numpy(zero_copy_only=False) & keep).sum()),
        "tokens": int(lengths[keep].sum()),
        "trained_tokens": int(trained[keep].sum()),
        "reject_reasons": dict(reasons),
        "reject_details": details,
    }
    for name in DETAILS:
        stats[name] = int(table.column(name).to_numpy(zero_copy_only=False)[keep].sum())
    kept = table.filter(pa.array(keep)).select(["input_ids", "labels", "index"])
    if pack:
        rows = [{"input_ids": i, "labels": lab, "index": k} for i, lab, k in
                zip(kept.column("input_ids").to_pylist(), kept.column("labels").to_pylist(),
                    kept.column("index").to_pylist())]
        packed, cut = pack_rows(rows, pack)
        if cut:  # the Pretokenizer truncated every sample to `pack` tokens at most
            raise RespmaskError(f"internal error: packing cut {cut} sample(s) longer than {pack} tokens")
        stats["packed_rows"] = len(packed)
        # what is written: packing masks each sample's first label (no sample predicts the next one's start)
        stats["tokens"] = int(sum(len(p["input_ids"]) for p in packed))
        stats["trained_tokens"] = int(sum(int((p["labels"] != IGNORE_INDEX).sum()) for p in packed))
        part = pa.table({
            "input_ids": pa.array([p["input_ids"] for p in packed], type=pa.list_(pa.int32())),
            "labels": pa.array([p["labels"] for p in packed], type=pa.list_(pa.int32())),
            "position_ids": pa.array([p["position_ids"] for p in packed], type=pa.list_(pa.int32())),
            "lengths": pa.array([p["lengths"] for p in packed], type=pa.list_(pa.int32())),
            "index": pa.array([p["index"] for p in packed], type=pa.list_(pa.int64())),  # its samples' input rows
        })
        return stats, part, rejects
    return stats, kept, rejects


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="shard", desc="respmask tokenize")
    except ImportError:  # pragma: no cover
        return _NoBar()


def read_parts(output_dir: str) -> Any:
    """The written parts as one ``datasets.Dataset`` (sorted by shard)."""
    import datasets

    files = sorted(str(p) for p in Path(output_dir).glob("part-*.parquet"))
    if not files:
        raise SampleError(f"{output_dir} has no part-*.parquet files")
    return datasets.Dataset.from_parquet(files)


def read_rejects(output_dir: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(Path(output_dir).glob("rejects-*.jsonl")):
        out += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return out
