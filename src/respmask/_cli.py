"""The ``respmask`` command: ``respmask preview``, ``respmask check`` and ``respmask tokenize``.

With no file and no tokenizer both run on the demo conversations and demo tokenizer that ship
inside the package, so a fresh install shows the main job offline.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from ._check import check
from ._errors import RespmaskError, TokenizerError, string_boolean
from ._formats import FORMATS, MessageMapping


def load_tokenizer(name: str) -> Any:
    """The tokenizer in directory ``name`` (or a name ``AutoTokenizer`` resolves), loaded with
    ``AutoTokenizer``.

    Raises:
        RespmaskError: it does not load (a path that is not a directory, a directory without a
            tokenizer): named as what the user gave, with transformers' own reason.
    """
    from transformers import AutoTokenizer

    name = os.path.expanduser(name)
    if os.path.isdir(name) and not any(os.path.isfile(os.path.join(name, f))
                                       for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise RespmaskError(f"--tokenizer {name}: no tokenizer there (no tokenizer.json or tokenizer_config.json, as "
                            "tokenizer.save_pretrained writes them)")
    if not os.path.isdir(name) and (os.path.isabs(name) or name.startswith((".", "~"))):  # a path, not a name
        raise RespmaskError(f"--tokenizer {name}: no such directory")
    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - transformers' own reason, named
        raise RespmaskError(f"--tokenizer {name}: AutoTokenizer.from_pretrained could not load it "
                            f"({type(exc).__name__}: {str(exc).strip()[:300]})") from None


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative(text: str) -> int:
    """An argparse type: an integer of at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def load_processor(directory: str) -> Any:
    """A processor saved in ``directory`` (``processor.save_pretrained(directory)``: a
    processor_config.json), loaded with ``AutoProcessor`` (a name that is not a local directory is
    given to ``AutoProcessor`` as it is).

    Raises:
        RespmaskError: it does not load, or what loads is not a processor with a tokenizer.
    """
    from transformers import AutoProcessor

    from ._media import is_processor

    configs = ("processor_config.json", "preprocessor_config.json")
    if os.path.isdir(directory) and not any(os.path.isfile(os.path.join(directory, c)) for c in configs):
        raise RespmaskError(f"--processor {directory}: no processor there (no processor_config.json or "
                            "preprocessor_config.json, as processor.save_pretrained writes them); for a tokenizer "
                            "alone use --tokenizer")
    try:
        processor = AutoProcessor.from_pretrained(directory)
    except Exception as exc:  # noqa: BLE001 - transformers' own reason, named
        raise RespmaskError(f"--processor {directory}: AutoProcessor.from_pretrained could not load it "
                            f"({type(exc).__name__}: {str(exc).strip()[:300]})") from None
    if not is_processor(processor):
        raise RespmaskError(f"--processor {directory}: AutoProcessor loads a {type(processor).__name__} there, not a "
                            "processor with a tokenizer (the directory needs processor_config.json, as "
                            "processor.save_pretrained writes it); for text rows use --tokenizer")
    return processor


def _processor_note(tokenizer_dir: str | None) -> None:
    """Say on stderr that a tokenizer directory also holds a processor (rows with images need it)."""
    if tokenizer_dir and os.path.isfile(os.path.join(tokenizer_dir, "processor_config.json")):
        print(f"note: {tokenizer_dir} also holds a processor (processor_config.json); rows with images need it: "
              f"--processor {tokenizer_dir}", file=sys.stderr)


def _load(args: argparse.Namespace, bad_lines: str = "raise") -> tuple[Iterable[Any], Any, str]:
    from . import demo

    if getattr(args, "processor", None):
        if args.tokenizer:
            raise RespmaskError("give --processor DIR or --tokenizer DIR, not both: the processor holds its tokenizer")
        tok = load_processor(args.processor)
        tok_name = f"{args.processor} ({type(tok).__name__}: processor, media expanded as the model sees them)"
    elif args.tokenizer:
        tok = load_tokenizer(args.tokenizer)
        tok_name = args.tokenizer
        _processor_note(args.tokenizer)
    elif args.file:
        raise RespmaskError("--tokenizer DIR is required with a data file (a directory with tokenizer.json), or "
                            "--processor DIR for rows with images (a saved processor)")
    else:
        tok = demo.tokenizer()
        tok_name = "respmask demo tokenizer (Qwen3 chat template)"
    if args.file:
        from ._shards import iter_rows

        samples: Iterable[Any] = iter_rows(args.file, bad_lines=bad_lines)
    else:
        samples = demo.samples()
    return samples, tok, tok_name


def _format_options(args: argparse.Namespace) -> dict[str, Any]:
    """``data_format`` and ``mapping`` from --format and the mapping flags (only when given)."""
    opts: dict[str, Any] = {}
    if args.format != "auto":
        opts["data_format"] = args.format
    mapping: dict[str, Any] = {}
    for flag, key in (("field_messages", "field_messages"), ("role_key", "role_key"), ("content_key", "content_key")):
        if getattr(args, flag):
            mapping[key] = getattr(args, flag)
    if args.role_map:
        try:
            mapping["role_map"] = json.loads(args.role_map)
        except json.JSONDecodeError as exc:
            raise RespmaskError(f"--role-map is not JSON ({exc.msg}): give an object such as '{{\"human\": \"user\"}}'")
    if mapping:
        if args.format != "auto":
            raise RespmaskError(
                "--format and the mapping flags (--field-messages, --role-key, --content-key, --role-map) exclude "
                "each other: the mapping reads every row"
            )
        try:
            opts["mapping"] = dataclasses.asdict(MessageMapping.of(mapping))
        except ValueError as exc:
            raise RespmaskError(f"mapping flags: {exc}") from None
    return opts


def _options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {"train_on": args.train_on}
    if args.template_kwargs:
        try:
            kwargs = json.loads(args.template_kwargs)
        except json.JSONDecodeError as exc:
            raise RespmaskError(f"--template-kwargs is not JSON ({exc.msg}): give an object such as "
                                "'{\"enable_thinking\": false}'") from None
        if not isinstance(kwargs, dict):
            raise RespmaskError(f"--template-kwargs must be a JSON object of keyword arguments, got "
                                f"{type(kwargs).__name__} {args.template_kwargs!r}")
        problem = string_boolean(kwargs, "--template-kwargs")
        if problem:  # '"false"' would read as true in the template: refused before it trains the opposite
            fixed = {k: v.strip().lower() == "true" if isinstance(v, str) and v.strip().lower() in ("true", "false")
                     else v for k, v in kwargs.items()}
            raise RespmaskError(f"{problem.rstrip('.')}: --template-kwargs '{json.dumps(fixed)}'")
        opts["template_kwargs"] = kwargs
    if args.no_reasoning:
        opts["reasoning_in_loss"] = False
    if args.split != "never":
        opts["split"] = args.split
    if args.text_only:
        opts["text_only"] = True
    if args.stop_tokens:
        opts["stop_tokens"] = args.stop_tokens
    if args.chat_template:
        try:
            with open(args.chat_template, encoding="utf-8-sig") as f:  # a BOM is not template text
                opts["chat_template"] = f.read()
        except OSError as exc:
            raise RespmaskError(f"--chat-template {args.chat_template}: cannot read it ({exc.strerror or exc})") from None
    opts.update(_format_options(args))
    return opts


def cut_options(p: argparse.ArgumentParser, what: str) -> None:
    """``--max-length`` (its help: ``what``), ``--truncation`` and ``--on-image-cut``, as the collator's."""
    p.add_argument("--max-length", type=positive, help=what)
    p.add_argument("--truncation", choices=["right", "left"], default="right")
    p.add_argument("--on-image-cut", choices=["truncate", "drop"], default="truncate",
                   help="with --processor: a row whose cut would drop images or audio clips is truncated (default; "
                        "the media past the cut are counted) or left out, as the collator's on_image_cut")


def check_cut_flags(args: argparse.Namespace) -> None:
    """Refuse the cut flags that would have no effect with the others given (each a mistake on a
    command line): ``--on-image-cut drop`` without ``--processor`` (a tokenizer's rows hold no
    media) or without a length to cut to, ``--truncation left`` without one (``--max-length``;
    ``tokenize``: or ``--pack``, which cuts to its length).

    Raises:
        RespmaskError: such a flag, with what would make it apply.
    """
    on_image_cut = getattr(args, "on_image_cut", "truncate")
    length = "--max-length N or --pack L" if hasattr(args, "pack") else "--max-length N"
    cuts = bool(args.max_length or getattr(args, "pack", None))
    if on_image_cut != "truncate" and not args.processor:
        raise RespmaskError("--on-image-cut applies to rows with images, read with --processor DIR (a tokenizer's rows "
                            "hold no images or audio to cut): pass --processor DIR, or leave --on-image-cut out")
    unused = [f"--{flag.replace('_', '-')} {value}" for flag, value, default in (
        ("truncation", args.truncation, "right"), ("on_image_cut", on_image_cut, "truncate")) if value != default]
    if unused and not cuts:
        raise RespmaskError(f"{' and '.join(unused)}: no effect without {length} (nothing is cut): add "
                            f"{length.split(' or ')[0]}, or leave {' and '.join(u.split()[0] for u in unused)} out")


def cmd_preview(args: argparse.Namespace) -> int:
    from ._masker import ChatMasker
    from ._preview import collated_preview, legend, preview, use_color

    check_cut_flags(args)
    samples, tok, tok_name = _load(args)
    masker = ChatMasker(tok, **_options(args))
    # --no-color / --color decide; else only on a terminal, never with NO_COLOR, always with FORCE_COLOR
    color = use_color(False if args.no_color else True if args.color else None)
    html_parts = []
    print(f"tokenizer: {tok_name}")
    print(legend(color))
    for i, sample in enumerate(itertools.islice(samples, args.n)):
        try:
            if args.max_length:  # the row as a collator with these settings cuts it
                p = collated_preview(sample, masker, max_length=args.max_length, truncation=args.truncation,
                                     on_image_cut=args.on_image_cut)
            else:
                p = preview(sample, masker)
        except TokenizerError:
            raise  # no sample renders (no chat template): the command's error (exit 2), not each sample's
        except RespmaskError as exc:
            print(f"\n── sample {i} " + "─" * 60)
            print(f"error: {exc}")
            continue
        if isinstance(p, list):  # a conversation that --split makes several rows of: every row, numbered
            for k, row in enumerate(p):
                print(f"\n── sample {i}, row {k + 1} of {len(p)} " + "─" * 50)
                print(row.to_text(color=color, legend=False))
                html_parts.append(f"<h3>sample {i}, row {k + 1} of {len(p)}</h3>" + row.to_html())
            continue
        print(f"\n── sample {i} " + "─" * 60)
        print(p.to_text(color=color, legend=False))
        html_parts.append(f"<h3>sample {i}</h3>" + p.to_html())
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write("<!doctype html><meta charset='utf-8'><title>respmask preview</title>" + "".join(html_parts))
        print(f"\nwrote {args.html}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    check_cut_flags(args)
    samples, tok, tok_name = _load(args, bad_lines="yield")  # a bad line is recorded, and checking goes on
    report = check(samples, tok, max_length=args.max_length, truncation=args.truncation,
                   **({"on_image_cut": args.on_image_cut} if args.processor else {}), **_options(args))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"tokenizer: {tok_name}")
        print(report)
    return 0 if report.ok else 1


def left_out_lines(summary: Any) -> list[str]:
    """What the written rows hold that the chat template leaves out, as ``respmask check`` says it."""
    lines = []
    if summary.reasoning_left_out_messages:
        lines.append(f"  reasoning the template leaves out (earlier turns): {summary.reasoning_left_out_messages} "
                     f"message(s), about {summary.reasoning_left_out_tokens} tokens, not trained (--split auto "
                     "trains it)")
    if summary.lost_data_rows:
        lines.append(f"  data the chat template leaves out, kept (--keep-lost-data): {summary.lost_data_rows} row(s), "
                     f"{summary.lost_data_messages} message(s), about {summary.lost_data_tokens} tokens, not trained")
    if summary.empty_replies:
        lines.append(f"  empty replies (only their stop token is trained): {summary.empty_replies}")
    return lines


def cmd_tokenize(args: argparse.Namespace) -> int:
    from ._shards import tokenize_files

    if args.processor:
        raise RespmaskError(
            f"respmask tokenize writes token ids to Parquet; rows with images are made at training time instead, by "
            f"ResponseOnlyCollator(processor) (the processor expands each image into its tokens and returns its pixel "
            f"values with them, which the shards do not hold). Check such a dataset with respmask check DATA "
            f"--processor {args.processor} --max-length N, or tokenize its text alone with --tokenizer DIR --text-only")
    if not args.tokenizer:
        raise RespmaskError("--tokenizer DIR is required (a directory with tokenizer.json)")
    check_cut_flags(args)
    tok = load_tokenizer(args.tokenizer)
    _processor_note(args.tokenizer)
    options = _options(args)
    if args.max_length:
        options["max_length"] = args.max_length
    if args.max_length or args.pack:  # --pack L truncates a longer sample to L, from this side
        options["truncation"] = args.truncation
    options["on_lost_data"] = "keep" if args.keep_lost_data else "reject"
    summary = tokenize_files(
        args.input, args.output, tok, engine=args.engine, num_proc=args.num_proc, shard_size=args.shard_size,
        pack=args.pack, drop_untrainable=args.drop_untrainable, progress=not args.quiet, **options,
    )
    # one policy with `check`: a row that cannot train (rejected, or written with no trained token) fails the run
    unusable = summary.rejected_rows + summary.untrainable_rows - summary.rejected_untrainable_rows
    failed = bool(unusable) and (not args.allow_rejects or summary.written_rows == 0)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    elif not args.quiet or failed:
        stream = sys.stderr if failed and args.quiet else sys.stdout
        parts = os.path.join(args.output, "part-*.parquet")
        rejects = os.path.join(args.output, "rejects-*.jsonl")
        # with --split the counts after the first are of the rows it made (several per input row): said so
        rows = " rows" if summary.split_rows else ""
        made = (f" split into {summary.input_rows + summary.split_rows} rows (--split {args.split})"
                if summary.split_rows else "")
        print(f"respmask tokenize: {summary.input_rows} input rows{made} -> {summary.written_rows}{rows} written to "
              f"{parts}" + (f" (packed into {summary.packed_rows} rows)" if args.pack else "")
              + f", {summary.rejected_rows}{rows} rejected ({rejects}); {summary.tokens} tokens, "
              f"{100 * summary.trained_fraction:.1f}% trained; {summary.truncated_rows}{rows and ' written rows'} "
              f"truncated, {summary.untrainable_rows}{rows} untrainable; "
              f"{summary.resumed_shards} of {summary.shards} shard(s) resumed", file=stream)
        if summary.truncated_rows:
            by = f" by --pack {args.pack}" if summary.max_length != args.max_length else ""
            unit = "written row(s)" if summary.split_rows else "sample(s)"
            print(f"  truncated to {summary.max_length} tokens{by}: {summary.truncated_rows} {unit}, "
                  f"{summary.truncated_tokens} token(s) cut, {summary.truncated_trained_tokens} of them trained"
                  + (f" (--truncation {args.truncation})" if args.truncation != "right" else ""), file=stream)
        for reason, n in sorted(summary.reject_reasons.items(), key=lambda r: -r[1])[:8]:
            print(f"  {n} x {reason}", file=stream)
            if reason in summary.reject_details:  # the first one's where and what to do
                print(f"    {summary.reject_details[reason]}", file=stream)
        for line in left_out_lines(summary):
            print(line, file=stream)
    if failed:
        written_untrainable = summary.untrainable_rows - summary.rejected_untrainable_rows
        what = []
        if summary.rejected_rows:
            of = (f"{summary.rejected_rows} of the {summary.input_rows + summary.split_rows} rows --split "
                  f"{args.split} made of the {summary.input_rows} input rows were rejected" if summary.split_rows else
                  f"{summary.rejected_rows} of {summary.input_rows} input rows were rejected")
            what.append(f"{of} (reasons in {os.path.join(args.output, 'rejects-*.jsonl')})")
        if written_untrainable:
            what.append(f"{written_untrainable} written row(s) train no token (their loss is NaN or missing; "
                        "--drop-untrainable moves them to the rejects)")
        print("respmask tokenize: " + "; ".join(what) + ("" if args.allow_rejects else
              ". Pass --allow-rejects to exit 0 when some rows were written"), file=sys.stderr)
        return 1
    return 0


SPLIT_HELP = (
    '"auto": split conversations whose template rewrites earlier turns (Qwen3 drops their reasoning) into the '
    'fewest rows in which every trained turn reads as at inference; "turns": one row per trained turn '
    '(default: never)'
)


PROCESSOR_HELP = (
    "a saved processor directory (processor.save_pretrained(DIR): processor_config.json, the tokenizer and the chat "
    "template), loaded with AutoProcessor: rows with images or audio go through it as through "
    "ResponseOnlyCollator(processor) (media tokens expanded and never trained; with --max-length, images past the cut "
    "are dropped and counted)"
)


STOP_TOKENS_HELP = (
    "a token (or string) that also ends generation, besides EOS and the end-of-turn tokens learned from the template "
    "(the API's stop_tokens); repeat the flag for several, e.g. --stop-tokens '<|user|>' --stop-tokens "
    "'<|observation|>' (GLM-4.5's turns end at the next role)"
)


TEXT_ONLY_HELP = (
    "train rows that hold images (an 'images' column, image parts) on their text alone, the images dropped "
    "(default: such rows are errors, since a text tokenizer cannot use their images)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="respmask",
        description="See and check which tokens of chat samples are trained (assistant-only loss masks).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def data_options(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group(
            "data format",
            "Rows are read as OpenAI messages, ShareGPT / LLaMA-Factory, Alpaca or prompt/completion, "
            "detected per row; the mapping flags read any other list of messages.",
        )
        g.add_argument("--format", choices=["auto", *FORMATS], default="auto",
                       help="the layout of every row (default: auto, decided per row)")
        g.add_argument("--field-messages", metavar="COLUMN", help="the column holding the list of messages")
        g.add_argument("--role-key", metavar="KEY", help="the message key holding the role (default: role)")
        g.add_argument("--content-key", metavar="KEY", help="the message key holding the text (default: content)")
        g.add_argument("--role-map", metavar="JSON",
                       help='JSON object of data roles to respmask roles, e.g. \'{"human": "user", "bot": "assistant"}\'')

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("file", nargs="?", help="data file: JSON Lines, a JSON array of rows, Parquet, or a saved "
                       "datasets directory (default: the demo samples)")
        p.add_argument("--tokenizer", "-t", help="tokenizer directory or name (default: the demo tokenizer)")
        p.add_argument("--processor", metavar="DIR", help=PROCESSOR_HELP)
        p.add_argument("--chat-template", help="a Jinja file to use instead of the tokenizer's template")
        p.add_argument("--template-kwargs", help='JSON object of template kwargs, e.g. \'{"enable_thinking": false}\'')
        p.add_argument("--train-on", choices=["all", "last"], default="all", help="assistant turns to train")
        p.add_argument("--no-reasoning", action="store_true", help="leave reasoning blocks out of the loss")
        p.add_argument("--split", choices=["never", "auto", "turns"], default="never", help=SPLIT_HELP)
        p.add_argument("--text-only", action="store_true", help=TEXT_ONLY_HELP)
        p.add_argument("--stop-tokens", action="append", metavar="TOKEN", help=STOP_TOKENS_HELP)
        data_options(p)

    p = sub.add_parser("preview", help="show samples with trained tokens highlighted")
    common(p)
    p.add_argument("-n", type=non_negative, default=3, help="number of samples to show (default 3)")
    p.add_argument("--color", action="store_true",
                   help="force ANSI colours (default: on a terminal unless NO_COLOR is set, or FORCE_COLOR)")
    p.add_argument("--no-color", action="store_true", help="mark trained tokens with ⟦ ⟧ instead of colours")
    p.add_argument("--html", help="also write the previews as an HTML page")
    cut_options(p, "show each sample as the collator would cut it, with what the cut took")
    p.set_defaults(func=cmd_preview)

    c = sub.add_parser("check", help="count trained tokens and report untrainable or truncated samples")
    common(c)
    cut_options(c, "truncate as the collator would, and count the samples and trained tokens it cuts")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=cmd_check)

    t = sub.add_parser("tokenize", help="pre-tokenize a dataset into Parquet shards (resumable)")
    t.add_argument("input", help="JSON Lines file, JSON array of rows, Parquet file, or a saved datasets directory")
    t.add_argument("output", help="output directory (part-*.parquet, rejects-*.jsonl, summary.json)")
    t.add_argument("--tokenizer", "-t", help="tokenizer directory or name (required)")
    t.add_argument("--processor", metavar="DIR",
                   help="not supported: rows with images are made by the collator at training time (the error says "
                        "what to do)")
    t.add_argument("--chat-template", help="a Jinja file to use instead of the tokenizer's template")
    t.add_argument("--template-kwargs", help="JSON object of template kwargs")
    t.add_argument("--train-on", choices=["all", "last"], default="all")
    t.add_argument("--no-reasoning", action="store_true", help="leave reasoning blocks out of the loss")
    t.add_argument("--split", choices=["never", "auto", "turns"], default="never", help=SPLIT_HELP)
    t.add_argument("--text-only", action="store_true", help=TEXT_ONLY_HELP)
    t.add_argument("--stop-tokens", action="append", metavar="TOKEN", help=STOP_TOKENS_HELP)
    t.add_argument("--max-length", type=positive, help="truncate samples to this many tokens")
    t.add_argument("--truncation", choices=["right", "left"], default="right")
    t.add_argument("--engine", choices=["datasets", "ray"], default="datasets")
    t.add_argument("--num-proc", type=positive, default=1, help="processes (datasets) or CPUs (local Ray)")
    t.add_argument("--shard-size", type=positive, default=10_000, help="input rows per output shard")
    t.add_argument("--pack", type=positive, metavar="L", help="pack samples into rows of at most L tokens")
    t.add_argument("--drop-untrainable", action="store_true",
                   help="move samples with no trained token to the rejects instead of writing them")
    t.add_argument("--keep-lost-data", action="store_true",
                   help="write rows holding data the chat template leaves out (tool calls on a template without "
                        "tools, unknown roles, replies that train only their stop token) instead of rejecting them")
    t.add_argument("--allow-rejects", action="store_true",
                   help="exit 0 when some rows cannot train (rejected, or written with no trained token) as long as "
                        "some rows were written (default: exit 1 when any row cannot train, as respmask check does)")
    t.add_argument("--quiet", action="store_true",
                   help="print nothing but errors: no progress bars, no engine logs, no summary unless rows were "
                        "rejected (or --json)")
    t.add_argument("--json", action="store_true", help="print the summary as JSON (as in out/summary.json)")
    data_options(t)
    t.set_defaults(func=cmd_tokenize)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ._media import media_dir

    args = build_parser().parse_args(argv)
    data = getattr(args, "file", None) or getattr(args, "input", None)
    # relative media paths that are no file in the current directory are read next to the data file,
    # as LLaMA-Factory reads them from its dataset_dir (a saved dataset directory: from inside it)
    folder = None if not data else data if os.path.isdir(data) else os.path.dirname(os.path.abspath(data))
    try:
        with media_dir(folder):
            return int(args.func(args))
    except RespmaskError as exc:
        print(f"respmask: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`respmask preview ... | head`): stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that flushing stdout at exit raises nothing either
        return 128 + 13  # a shell's status for a process SIGPIPE ended


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
