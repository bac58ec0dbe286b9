"""Run every benchmarks/bench_*.py and benchmarks/serving.py, passing their JSON lines
through (`make bench`).

Each benchmark runs in its own process, with this interpreter, so one benchmark's
imports and open databases cannot flatter or slow down the next. Exits non-zero if a
benchmark fails; with --strict, also if a figure misses its target.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true", help="fail when a target is missed")
    args = parser.parse_args()
    failed: list[str] = []
    missed: list[str] = []
    for script in [*sorted(HERE.glob("bench_*.py")), HERE / "serving.py"]:
        proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=HERE.parent
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            try:
                result = json.loads(line)
            except ValueError:
                continue
            if isinstance(result, dict) and result.get("meets_target") is False:
                missed.append(str(result.get("benchmark")))
        if proc.wait() != 0:
            failed.append(script.name)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
    if missed:
        print(f"targets missed: {', '.join(missed)}", file=sys.stderr)
    return 1 if failed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
