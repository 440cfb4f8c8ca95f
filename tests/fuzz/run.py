"""Fuzz batch mode with mutated demo data, in process.

    python -m tests.fuzz.run --cases 100000 [--seed N] [--patients 2]

Each case: the shared lines of the demo data (Practitioners, ...), every line of a few patients,
one or more of those lines mutated (see ``mutate.py``), sometimes a whole-file damage (a BOM,
truncation). It runs ``rems-adapter run`` in this process and checks: no exception escapes, the
exit code is 0 (the file exists; bad input is reported, never fatal), no case runs longer than
``--hang-seconds`` (measured with an alarm, reported as a hang), and every patient no mutation
touched has exactly the baseline's decisions (else its lines were lost).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import random
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import orjson

from tests.fuzz import corpus as corpus_module
from tests.fuzz.corpus import Corpus, decisions, run_in_process
from tests.fuzz.mutate import BOMS, mutate


class Hang(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang


@dataclass
class Figures:
    cases: int = 0
    crashes: int = 0
    hangs: int = 0
    bad_exit: int = 0
    lost_lines: int = 0
    lost_patients: int = 0
    slowest: float = 0.0
    seconds: float = 0.0
    places: Counter[str] = field(default_factory=Counter)
    examples: dict[str, bytes] = field(default_factory=dict)

    def ok(self) -> bool:
        return not (self.crashes or self.hangs or self.bad_exit or self.lost_lines)

    def report(self) -> str:
        lines = [
            f"cases {self.cases}, crashes {self.crashes}, hangs {self.hangs}, "
            f"bad exit codes {self.bad_exit}, lost lines {self.lost_lines} "
            f"({self.lost_patients} good patients changed), slowest case {self.slowest:.3f} s, "
            f"total {self.seconds:.0f} s"
        ]
        lines += [f"  {count} x {place}" for place, count in self.places.most_common()]
        return "\n".join(lines)


def make_case(
    corpus: Corpus, rng: random.Random, patients: int
) -> tuple[bytes, set[str], set[str]]:
    """(file bytes, patients in the case, patients a mutation may have touched)."""
    chosen = rng.sample(sorted(corpus.by_patient), patients)
    numbers = list(corpus.shared) + [n for p in chosen for n in corpus.by_patient[p]]
    rng.shuffle(numbers)
    lines = [corpus.lines[n] for n in numbers]
    touched: set[str] = set()
    for _ in range(rng.choice((1, 1, 1, 2, 5))):
        at = rng.randrange(len(lines))
        before = lines[at]
        after = mutate(before, rng)
        lines[at] = after
        touched |= corpus.affected(before, after) | corpus.owners[numbers[at]]
    if rng.random() < 0.2:  # the same lines as the entries of one Bundle (a .json file)
        data = b'{"resourceType":"Bundle","type":"collection","entry":['
        data += b",".join(b'{"resource":' + line + b"}" for line in lines) + b"]}"
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError:
            touched |= set(chosen)  # one bad byte makes the whole file unreadable
        return data, set(chosen), touched
    data = b"\n".join(lines) + b"\n"
    whole = rng.randrange(40)
    if whole == 0:  # a byte order mark on the file
        data = rng.choice(BOMS[:1]) + data
    elif whole == 1:  # truncated file: whatever follows the cut is gone
        cut = rng.randrange(len(data))
        touched |= corpus.affected(data[cut - 4096 if cut > 4096 else 0 :])
        for n in numbers:
            touched |= corpus.owners[n] if corpus.lines[n] not in data[:cut] else set()
        data = data[:cut]
    elif whole == 2:  # the whole file in UTF-16 with its BOM
        with contextlib.suppress(UnicodeDecodeError):
            data = data.decode("utf-8").encode("utf-16")
    return data, set(chosen), touched


def run_case(
    corpus: Corpus,
    data: bytes,
    chosen: set[str],
    touched: set[str],
    folder: Path,
    figures: Figures,
    hang_seconds: float,
) -> None:
    source = folder / (
        "case.json" if data.startswith(b'{"resourceType":"Bundle"') else "case.ndjson"
    )
    for stale in folder.glob("case.*"):
        stale.unlink()
    out = folder / "out"
    source.write_bytes(data)
    started = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, hang_seconds)
    try:
        code, _ = run_in_process(source, out)
    except Hang:
        figures.hangs += 1
        figures.places["hang"] += 1
        figures.examples.setdefault("hang", data)
        return
    except Exception as error:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        place = f"{type(error).__name__} at {Path(frame.filename).name}:{frame.lineno}"
        figures.crashes += 1
        figures.places[place] += 1
        figures.examples.setdefault(place, data)
        return
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed = time.perf_counter() - started
        figures.slowest = max(figures.slowest, elapsed)
    if code != 0:
        figures.bad_exit += 1
        figures.places[f"exit {code}"] += 1
        figures.examples.setdefault(f"exit {code}", data)
        return
    got = decisions(out)
    for patient in chosen - touched:
        if got.get(patient, []) != corpus.baseline.get(patient, []):
            figures.lost_patients += 1
            figures.lost_lines += len(corpus.by_patient[patient])
            figures.places["good patient changed"] += 1
            figures.examples.setdefault("good patient changed", data)


def fuzz(
    cases: int,
    seed: int,
    patients: int = 1,
    hang_seconds: float = 10.0,
    budget_seconds: float | None = None,
    corpus: Corpus | None = None,
) -> Figures:
    corpus = corpus or corpus_module.load()
    rng = random.Random(seed)
    figures = Figures()
    previous = signal.signal(signal.SIGALRM, _alarm)
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            for _ in range(cases):
                if budget_seconds is not None and time.perf_counter() - started > budget_seconds:
                    break
                data, chosen, touched = make_case(corpus, rng, patients)
                run_case(corpus, data, chosen, touched, folder, figures, hang_seconds)
                figures.cases += 1
    finally:
        signal.signal(signal.SIGALRM, previous)
        figures.seconds = time.perf_counter() - started
    return figures


def _worker(job: tuple[int, int, int, float]) -> Figures:
    cases, seed, patients, hang_seconds = job
    return fuzz(cases, seed, patients, hang_seconds)


def _add(total: Figures, figures: Figures) -> None:
    for name in ("cases", "crashes", "hangs", "bad_exit", "lost_lines", "lost_patients"):
        setattr(total, name, getattr(total, name) + getattr(figures, name))
    total.slowest = max(total.slowest, figures.slowest)
    total.places.update(figures.places)
    for key, value in figures.examples.items():
        total.examples.setdefault(key, value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__)
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--patients", type=int, default=1, help="good patients per case")
    parser.add_argument("--hang-seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1, help="processes (each its own seeds)")
    parser.add_argument("--chunk", type=int, default=1000, help="cases per job (progress)")
    parser.add_argument("--keep", type=Path, help="write one input per failure class here")
    args = parser.parse_args(argv)
    jobs = [
        (
            min(args.chunk, args.cases - start),
            args.seed * 1_000_003 + start,
            args.patients,
            args.hang_seconds,
        )
        for start in range(0, args.cases, args.chunk)
    ]
    total = Figures()
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        for figures in pool.imap_unordered(_worker, jobs):
            known = set(total.places)
            _add(total, figures)
            total.seconds = time.perf_counter() - started
            print(total.report().splitlines()[0], flush=True)
            for place in set(total.places) - known:
                print(f"  new: {place}", flush=True)
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    name = "".join(c if c.isalnum() else "-" for c in place)
                    (args.keep / f"{name}.case").write_bytes(total.examples[place])
    print(total.report())
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        for number, (place, data) in enumerate(sorted(total.examples.items())):
            (args.keep / f"{number:02d}.ndjson").write_bytes(data)
            print(f"  {number:02d}.ndjson: {place}")
    return 0 if total.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
