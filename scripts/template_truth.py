"""Dashboard: respmask against the independent nonce reference, on every fixture chat template.

Runs every fixture template (or those named) x every case of ``tests/support/conversations.py``
(the shared shapes, the keyword-argument cases the template reads, hostile content made of its own
markers) x both small tokenizer styles built by ``tests/support/tokenizers.py`` (and, with
``--shared``, the real tokenizer the manifest names in ``shared_tokenizer``), calling
``ChatMasker(tok).encode(case.sample())`` and ``tests/support/reference.py``. Never stops on a
failure. Run from anywhere:

    python scripts/template_truth.py                      # everything, 2 processes
    python scripts/template_truth.py qwen3 gemma4 -v      # two templates, every failure listed
    python scripts/template_truth.py --cases hostile --matrix
    python scripts/template_truth.py --shared --json truth.json

Per template: ``checked`` (case x tokenizer runs the template renders), ``pass``, ``fail``
(violations), ``error`` (respmask raised: type and first line), ``rej`` (the template rejects the
conversation and respmask raised a SampleError too), ``undec`` (checked runs where the reference
left a check undone because it could not decide it; ``--undecided`` lists every kind, including the
checks it only narrowed); then the distinct failures, grouped, with one example each, and a total
line. Exit status 1 when anything failed or errored.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import json
import multiprocessing
import os
import re
import signal
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
DEFAULT_SHARED = ROOT.parent / "shared" / "tokenizers"
STYLES = ("bytelevel", "metaspace")
STATUS_CHAR = {"pass": ".", "fail": "F", "error": "E", "reference-error": "R", "rejected": "r", "timeout": "T",
               "crash": "C"}


def _setup_path() -> None:
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")


class _Timeout(BaseException):  # not an Exception: the reference's own guards must not swallow it
    pass


def _alarm(signum, frame):  # pragma: no cover - signal handler
    raise _Timeout()


# --------------------------------------------------------------------------------------------
# worker: one template on one tokenizer, every case


def run_unit(template: str, tokenizer: str, case_filter: list[str] | None, timeout: float) -> list[dict]:
    """Every case of ``template`` on ``tokenizer`` ('bytelevel', 'metaspace' or 'shared:<folder>')."""
    _setup_path()
    from respmask import ChatMasker
    from support.reference import Outcome, evaluate
    from support.tokenizers import fixture_cases, fixture_tokenizer, manifest, shared_tokenizer, template_source

    info = manifest().get(template, {})
    stops = info.get("stop_tokens", [])
    base = {"template": template, "tokenizer": tokenizer}
    use_alarm = hasattr(signal, "SIGALRM") and timeout > 0
    if use_alarm:
        signal.signal(signal.SIGALRM, _alarm)
    t0 = time.perf_counter()
    try:
        if tokenizer.startswith("shared:"):
            tok = shared_tokenizer(tokenizer.split(":", 1)[1], template_source(template))
        else:
            tok = fixture_tokenizer(template, tokenizer)
        masker = ChatMasker(tok)
        cases = fixture_cases(template, tok)
    except Exception as exc:  # the unit cannot even start: one record says why
        first = (str(exc).strip().splitlines() or [""])[0]
        return [{**base, "case": "(setup)", "status": "error", "problems": [], "undecided": [],
                 "error": f"setup: {type(exc).__name__}: {first}", "seconds": round(time.perf_counter() - t0, 3)}]
    if case_filter:
        cases = [c for c in cases if any(f in c.name for f in case_filter)]
    out = []
    for case in cases:
        t = time.perf_counter()
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            res = evaluate(tok, masker, case, stops)
        except _Timeout:
            res = Outcome("timeout", error=f"Timeout: no answer within {timeout:g} s")
        except Exception as exc:  # evaluate never raises; this is a last guard
            res = Outcome("reference-error", error=f"{type(exc).__name__}: {exc}")
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
        out.append({**base, "case": case.name, "status": res.status, "problems": res.problems,
                    "undecided": res.undecided, "error": res.error, "seconds": round(time.perf_counter() - t, 4)})
    return out


# --------------------------------------------------------------------------------------------
# grouping


_NONCE = re.compile(r"\b([a-z]{3})nonce[a-z]+\b")


def normalize(message: str) -> str:
    """A failure message with its particulars (nonce words, message numbers, token lists) abstracted,
    so that the same failure on different cases and templates groups together."""
    s = _NONCE.sub(lambda m: m.group(1).upper() + "-nonce", message)
    s = re.sub(r"tokens \[.*?\] trained", "tokens [...] trained", s)
    s = re.sub(r"\(\d+ vs \d+ tokens\)", "(N vs M tokens)", s)
    s = re.sub(r"\b(sample|message|messages|index|position|line|column)\s+\d+", r"\1 N", s)
    s = re.sub(r"\[\d+\]", "[N]", s)
    s = re.sub(r"'[^']{40,}'", "'...'", s)
    return s


def failure_keys(rec: dict) -> list[tuple[str, str]]:
    """The (category, normalized message) pairs of one record."""
    st = rec["status"]
    if st == "fail":
        # several nonces of one kind in one case count once
        return sorted({("violation", normalize(p)) for p in rec["problems"]})
    if st in ("error", "reference-error", "timeout", "crash"):
        return [(st, normalize(rec["error"] or ""))]
    return []


def _short(names: list[str], width: int) -> str:
    out, used = [], 0
    for i, n in enumerate(names):
        if used + len(n) + 1 > width and out:
            return " ".join(out) + f" +{len(names) - i}"
        out.append(n)
        used += len(n) + 1
    return " ".join(out)


def _unchecked(rec: dict) -> bool:
    """Whether the reference left a check undone on this run (notes starting 'partly:' only narrowed one)."""
    return any(not n.startswith("partly:") for n in rec["undecided"])


def _tok_tag(tokenizer: str) -> str:
    return {"bytelevel": "b", "metaspace": "m"}.get(tokenizer, "s")


def mark_ledger(records: list[dict]) -> tuple[int, int, list[str]] | None:
    """Compare with the known-failure ledger (tests/fixtures/chat_templates/known_failures.json,
    {template: {style: {case: problem}}}): each failing record gets ``ledger`` 'known' or 'new';
    returns (known, new, ledger entries that pass now or no longer run) or None without a ledger."""
    path = TESTS / "fixtures" / "chat_templates" / "known_failures.json"
    if not path.exists():
        return None
    ledger = json.loads(path.read_text(encoding="utf-8"))
    known = new = 0
    fixed = []
    ran = {(r["template"], r["tokenizer"]) for r in records}
    cases = {(r["template"], r["tokenizer"], r["case"]) for r in records}
    # entries for a template and tokenizer that ran, whose case did not run at all (it no longer
    # applies to the template): the ledger test counts them as fixed
    stale = [f"{t}/{st}/{c}" for t, by_style in ledger.items() for st, by_case in by_style.items()
             for c in by_case if (t, st) in ran and (t, st, c) not in cases]
    for r in records:
        listed = r["case"] in ledger.get(r["template"], {}).get(r["tokenizer"], {})
        if r["status"] not in ("pass", "rejected"):
            r["ledger"] = "known" if listed else "new"
            known, new = known + listed, new + (not listed)
        elif listed:
            fixed.append(f"{r['template']}/{r['tokenizer']}/{r['case']}")
    return known, new, fixed + [f"{x} (no longer run)" for x in stale]


def report(records: list[dict], args: argparse.Namespace, elapsed: float) -> int:
    ledger = mark_ledger(records)
    by_template: dict[str, list[dict]] = collections.defaultdict(list)
    for r in records:
        by_template[r["template"]].append(r)
    w = max([len(t) for t in by_template] + [8])
    head = (f"{'template':<{w}} {'checked':>7} {'pass':>5} {'fail':>5} {'error':>5} {'rej':>4} {'undec':>5}  "
            + ("cases" if args.matrix else "failing cases"))
    print(head)
    case_order: list[str] = []
    for r in records:
        if r["case"] not in case_order:
            case_order.append(r["case"])
    if args.matrix:  # column numbers above the matrix (tens, then units)
        pad = " " * (w + 39)
        print(pad + "".join(str(i // 10) if i >= 10 else " " for i in range(len(case_order))))
        print(pad + "".join(str(i % 10) for i in range(len(case_order))))
    print("-" * len(head))
    totals = collections.Counter()
    hidden = 0
    for t in sorted(by_template):
        rs = by_template[t]
        c = collections.Counter(r["status"] for r in rs)
        if args.only_failing and not any(r["status"] not in ("pass", "rejected") for r in rs):
            hidden += 1
            totals.update(checked=c["pass"], passed=c["pass"], rejected=c["rejected"],
                          undec=sum(1 for r in rs if _unchecked(r)), templates=1)
            continue
        errors = c["error"] + c["reference-error"] + c["timeout"] + c["crash"]
        checked = c["pass"] + c["fail"] + errors
        undec = sum(1 for r in rs if _unchecked(r))
        bad: dict[str, list[str]] = collections.defaultdict(list)
        for r in rs:
            if r["status"] not in ("pass", "rejected"):
                bad[r["case"]].append(_tok_tag(r["tokenizer"]) + STATUS_CHAR.get(r["status"], "?"))
        n_toks = len({r["tokenizer"] for r in rs})
        new_cases = {r["case"] for r in rs if r.get("ledger") == "new"}
        names = [(f"{k}({','.join(v)})" if len(v) < n_toks else k) + ("!" if k in new_cases else "")
                 for k, v in bad.items()]
        line = f"{t:<{w}} {checked:>7} {c['pass']:>5} {c['fail']:>5} {errors:>5} {c['rejected']:>4} {undec:>5}  "
        if args.matrix:
            line += _matrix_row(rs, case_order)
        else:
            line += _short(names, max(20, 118 - len(line)))
        print(line)
        totals.update(checked=checked, passed=c["pass"], fail=c["fail"], errors=errors, rejected=c["rejected"],
                      undec=undec, templates=1)
    if hidden:
        print(f"({hidden} templates where every run passes are not shown)")
    if args.matrix:
        print("\ncolumns: " + " ".join(f"{i}={n}" for i, n in enumerate(case_order)))
        print("cell: '.' pass on every tokenizer, 'F' violation, 'E' respmask error, 'R' reference error, "
              "'r' rejected by the template, '?' passed with undecided notes, 'T' timeout, 'C' crash")

    # distinct failures
    groups: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
    for r in records:
        for key in failure_keys(r):
            groups[key].append(r)
    if groups:
        print(f"\n{len(groups)} distinct failure(s):")
    by_spread = sorted(groups.items(), key=lambda kv: (-len({r["template"] for r in kv[1]}), -len(kv[1])))
    for (cat, msg), rs in by_spread:
        templates = sorted({r["template"] for r in rs})
        ex = rs[0]
        raw = next((p for p in ex["problems"] if normalize(p) == msg), None) if cat == "violation" else ex["error"]
        print(f"- [{cat}] {msg[:160]}")
        print(f"    {len(rs)} run(s) on {len(templates)} template(s): {_short(templates, 100)}")
        if args.verbose:
            for r in rs:
                print(f"      {r['template']}/{r['tokenizer']}/{r['case']}")
        else:
            print(f"    e.g. {ex['template']}/{ex['tokenizer']}/{ex['case']}: {(raw or '')[:220]}")

    # what the reference could not decide
    notes: dict[str, list[dict]] = collections.defaultdict(list)
    for r in records:
        for n in dict.fromkeys(normalize(x) for x in r["undecided"]):
            notes[n].append(r)
    if notes:
        n_runs = sum(1 for r in records if _unchecked(r))
        n_partly = sum(1 for r in records if r["undecided"] and not _unchecked(r))
        print(f"\nundecided: the reference left a check undone in {n_runs} run(s) and narrowed one in "
              f"{n_partly} more ({len(notes)} kind(s){'' if args.undecided else '; --undecided lists them'})")
        if args.undecided:
            for n, rs in sorted(notes.items(), key=lambda kv: -len(kv[1])):
                print(f"- {n[:150]}\n    {len(rs)} run(s): {_short(sorted({r['template'] for r in rs}), 100)}")

    # slowest runs, when asked
    if args.slow:
        print("\nslowest runs:")
        for r in sorted(records, key=lambda r: -r["seconds"])[: args.slow]:
            print(f"  {r['seconds']:7.3f}s  {r['template']}/{r['tokenizer']}/{r['case']}")
        per_case = collections.defaultdict(float)
        for r in records:
            per_case[r["case"]] += r["seconds"]
        print("time per case shape: " + ", ".join(f"{k} {v:.1f}s" for k, v in
                                                   sorted(per_case.items(), key=lambda kv: -kv[1])[:12]))

    if ledger is not None:
        known, new, fixed = ledger
        print(f"\nledger (known_failures.json): {known} failing run(s) listed, {new} not listed (marked '!')"
              + (f"; {len(fixed)} listed that pass now: {_short(fixed, 90)}" if fixed else ""))
    print(f"\nTOTAL {totals['templates']} templates, {len(records)} runs: {totals['checked']} checked, "
          f"{totals['passed']} pass, {totals['fail']} fail, {totals['errors']} error, {totals['rejected']} rejected, "
          f"{totals['undec']} with a check left undone; {len(groups)} distinct failures; {elapsed:.0f} s")
    if args.json:
        payload = {
            "totals": dict(totals), "elapsed_seconds": round(elapsed, 1), "records": records,
            "ledger": None if ledger is None else {"known": ledger[0], "new": ledger[1], "pass_now": ledger[2]},
            "groups": [{"category": cat, "message": msg, "runs": len(rs),
                        "templates": sorted({r["template"] for r in rs}),
                        "examples": [f"{r['template']}/{r['tokenizer']}/{r['case']}" for r in rs]}
                       for (cat, msg), rs in groups.items()],
        }
        Path(args.json).write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
        print(f"details written to {args.json}")
    return 1 if (totals["fail"] or totals["errors"]) else 0


def _matrix_row(rs: list[dict], case_order: list[str]) -> str:
    rank = {"crash": 6, "timeout": 5, "reference-error": 4, "error": 3, "fail": 2, "undecided": 1, "pass": 0,
            "rejected": -1}
    cells = {}
    for r in rs:
        st = "undecided" if r["status"] == "pass" and _unchecked(r) else r["status"]
        if r["case"] not in cells or rank.get(st, 0) > rank.get(cells[r["case"]], 0):
            cells[r["case"]] = st
    char = {**STATUS_CHAR, "undecided": "?"}
    return "".join(char.get(cells[c], "?") if c in cells else " " for c in case_order)


# --------------------------------------------------------------------------------------------
# driver


def units(args: argparse.Namespace) -> list[tuple[str, str]]:
    _setup_path()
    from support.tokenizers import manifest, template_names

    names = template_names()
    if args.templates:
        unknown = [n for n in args.templates if n not in names]
        if unknown:
            sys.exit(f"unknown template(s): {', '.join(unknown)} (fixtures: {', '.join(names)})")
        names = args.templates
    info = manifest()
    out = []
    for n in names:
        out += [(n, s) for s in args.styles]
        if args.shared and info.get(n, {}).get("shared_tokenizer"):
            out.append((n, f"shared:{info[n]['shared_tokenizer']}"))
    return out


def run_all(todo: list[tuple[str, str]], args: argparse.Namespace) -> list[dict]:
    records: list[dict] = []
    done = 0

    def progress(unit) -> None:
        nonlocal done
        done += 1
        if sys.stderr.isatty():
            print(f"\r{done}/{len(todo)} {unit[0]}/{unit[1]}".ljust(70), end="", file=sys.stderr, flush=True)

    if args.jobs <= 1:
        for u in todo:
            records += run_unit(*u, args.cases, args.timeout)
            progress(u)
    else:
        retry: list[tuple[str, str]] = []
        ctx = multiprocessing.get_context("spawn")  # no Rust tokenizer state crosses a fork
        with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
            futures = {pool.submit(run_unit, *u, args.cases, args.timeout): u for u in todo}
            for fut in cf.as_completed(futures):
                u = futures[fut]
                try:
                    records += fut.result()
                except cf.process.BrokenProcessPool:
                    retry.append(u)
                except Exception as exc:
                    records.append({"template": u[0], "tokenizer": u[1], "case": "(worker)", "status": "crash",
                                    "problems": [], "undecided": [], "error": f"{type(exc).__name__}: {exc}",
                                    "seconds": 0.0})
                progress(u)
        for u in retry:  # a worker died (segfault, OOM ...): run each unit alone to find the one
            with cf.ProcessPoolExecutor(1, mp_context=ctx) as pool:
                try:
                    records += pool.submit(run_unit, *u, args.cases, args.timeout).result()
                except Exception as exc:
                    records.append({"template": u[0], "tokenizer": u[1], "case": "(worker)", "status": "crash",
                                    "problems": [], "undecided": [], "error": f"{type(exc).__name__}: {exc}",
                                    "seconds": 0.0})
    if sys.stderr.isatty():
        print("\r".ljust(72) + "\r", end="", file=sys.stderr)
    order = {u: i for i, u in enumerate(todo)}
    records.sort(key=lambda r: (order.get((r["template"], r["tokenizer"]), 0)))
    return records


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of a run and its report (template_sweep.py takes them too)."""
    p.add_argument("--styles", default=",".join(STYLES), help="small tokenizer styles (comma list; '' for none)")
    p.add_argument("--cases", default=None, help="only cases whose name contains one of these (comma list)")
    p.add_argument("--json", metavar="PATH", help="write every record and failure group as JSON")
    p.add_argument("-j", "--jobs", type=int, default=2, help="processes (default 2)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a timeout")
    p.add_argument("--matrix", action="store_true", help="one character per case instead of the failing names")
    p.add_argument("-f", "--only-failing", action="store_true", help="table rows only for templates with a failure")
    p.add_argument("-u", "--undecided", action="store_true", help="list what the reference could not decide")
    p.add_argument("--slow", type=int, default=0, metavar="N", help="show the N slowest runs")
    p.add_argument("-v", "--verbose", action="store_true", help="list every run of each failure group")


def parse_run_options(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    args.styles = [s for s in args.styles.split(",") if s]
    args.cases = [c for c in args.cases.split(",") if c] if args.cases else None
    return args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("templates", nargs="*", help="fixture template names (default: all)")
    p.add_argument("--shared", nargs="?", const=str(DEFAULT_SHARED), default=None, metavar="DIR",
                   help="also run the real tokenizer named in the manifest's shared_tokenizer "
                        f"(DIR defaults to $RESPMASK_SHARED_TOKENIZERS or {DEFAULT_SHARED})")
    add_run_options(p)
    args = parse_run_options(p, argv)
    if args.shared is not None:
        if not os.environ.get("RESPMASK_SHARED_TOKENIZERS"):
            os.environ["RESPMASK_SHARED_TOKENIZERS"] = args.shared
        if not Path(os.environ["RESPMASK_SHARED_TOKENIZERS"]).is_dir():
            sys.exit(f"--shared: no tokenizer folder at {os.environ['RESPMASK_SHARED_TOKENIZERS']}")
    args.shared = args.shared is not None
    todo = units(args)
    t0 = time.perf_counter()
    records = run_all(todo, args)
    return report(records, args, time.perf_counter() - t0)


if __name__ == "__main__":
    sys.exit(main())
