"""The background training process: ``python -m trainer.worker --db FILE --job ID``.

Started by ``leafe train --background`` and the TUI; it runs one job and exits. Everything it has to
say goes to the job's row; its stdout/stderr (the job folder's ``log.txt``) keeps tracebacks.
"""

from __future__ import annotations

import argparse
import sys

from engine.store import Store
from trainer.train import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainer.worker")
    parser.add_argument("--db", required=True)
    parser.add_argument("--job", type=int, required=True)
    args = parser.parse_args(argv)
    store = Store(args.db, create=False)
    try:
        row = run_job(store, args.job)
    except Exception as exc:  # already recorded on the job's row; the log keeps the traceback
        print(f"job {args.job} failed: {exc}", file=sys.stderr)
        raise
    finally:
        store.close()
    print(f"job {args.job}: {row['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
