"""Sweep: respmask against the nonce reference on chat templates outside the fixtures.

The same run as ``template_truth.py`` (every case of ``tests/support/conversations.py``: the shared
shapes, the keyword-argument cases the template reads, the hostile cases made of its own markers, x
both small tokenizer styles, ``ChatMasker(tok).encode(case.sample())`` judged by
``tests/support/reference.py``, a timeout per case, never stopping on a failure) and the same table
and grouped failures, on a folder of ``<name>.jinja`` files described by a JSON in the fixture
manifest's format (``{name: {bos_token, eos_token, special_tokens, stop_tokens, template_kwargs}}``;
a template it does not describe runs with no special tokens):

    python scripts/template_sweep.py DIR INFO.json                 # every DIR/*.jinja, 2 processes
    python scripts/template_sweep.py DIR INFO.json name1 name2 -v  # two of them, every failing run
    python scripts/template_sweep.py DIR INFO.json --json out.json --cases hostile

Options are template_truth.py's (without --shared). Exit status 1 when anything failed or errored.

A template whose entry has ``"excluded": "<why>"`` (a safety classifier, a template that ignores the
roles it is given) is run but not judged: its runs are left out of the table and the totals and
listed apart, each with its counts and its reason, so that "every template passes" means every
template where passing means something.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import template_truth as truth  # noqa: E402

ENV = "RESPMASK_SWEEP"  # 'DIR<newline>INFO.json', read by the worker processes
_run_unit = truth.run_unit


def sweep_unit(template: str, tokenizer: str, case_filter: list[str] | None, timeout: float) -> list[dict]:
    """``template_truth.run_unit`` with the fixture folder and manifest swapped for the sweep's."""
    truth._setup_path()
    import support.tokenizers as st

    folder, info_path = os.environ[ENV].split("\n")
    info = json.loads(Path(info_path).read_text(encoding="utf-8"))
    st.FIXTURES = Path(folder)  # template_source reads FIXTURES/<name>.jinja
    st.manifest = lambda: {**{template: {}}, **info}
    return _run_unit(template, tokenizer, case_filter, timeout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="folder of <name>.jinja chat templates")
    p.add_argument("info", type=Path, help="JSON of per-template info in the fixture manifest's format")
    p.add_argument("templates", nargs="*", help="template names (default: every .jinja in the folder)")
    truth.add_run_options(p)
    args = truth.parse_run_options(p, argv)
    names = sorted(x.stem for x in args.folder.glob("*.jinja"))
    if args.templates:
        unknown = [n for n in args.templates if n not in names]
        if unknown:
            sys.exit(f"no {', '.join(unknown)}.jinja in {args.folder}")
        names = args.templates
    info = json.loads(args.info.read_text(encoding="utf-8"))  # fail here, not in every worker
    excluded = {n: str(info[n]["excluded"]) for n in names if "excluded" in info.get(n, {})}
    os.environ[ENV] = f"{args.folder.resolve()}\n{args.info.resolve()}"
    truth.run_unit = sweep_unit  # run_all submits run_unit by name; workers unpickle sweep_unit
    truth.mark_ledger = lambda records: None  # the fixtures' known-failure ledger does not apply
    todo = [(n, s) for n in names for s in args.styles]
    t0 = time.perf_counter()
    records = truth.run_all(todo, args)
    status = truth.report([r for r in records if r["template"] not in excluded], args, time.perf_counter() - t0)
    if excluded:
        print(f"\nexcluded, run but not judged ({len(excluded)}):")
        for name, why in excluded.items():
            mine = [r for r in records if r["template"] == name]
            counts = {s: sum(r["status"] == s for r in mine) for s in ("pass", "fail", "error")}
            print(f"- {name} ({counts['pass']} pass, {counts['fail']} fail, {counts['error']} error): {why}")
    return status


if __name__ == "__main__":
    sys.exit(main())
