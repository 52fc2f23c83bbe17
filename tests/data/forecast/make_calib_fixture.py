"""Rebuild calib_records.json.gz from the calib sweep (fig3-small at 60k steps):
``python tests/data/forecast/make_calib_fixture.py /work/fc/sweeps/calib``.

Keeps each run's config.json (whole: its digest identifies the run) and, of metrics.jsonl,
only the keys the forecaster reads, at full precision."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

from latephase.forecast import SIGNALS
from latephase.keys import STEP, record_key
from latephase.runs import RunDir

KEYS = [STEP, record_key("train", "acc"), record_key("test", "acc"),
        *sorted({record_key("train" if s.role == "train" else "test", s.measure)
                 for s in SIGNALS.values()})]


def main(sweep: str) -> None:
    runs = {}
    for d in sorted(p for p in Path(sweep).iterdir() if (p / "config.json").is_file()):
        rd = RunDir(d)
        runs[d.name] = {"info": rd.info(),
                        "records": [{k: r[k] for k in KEYS if k in r} for r in rd.records()]}
    out = Path(__file__).with_name("calib_records.json.gz")
    out.write_bytes(gzip.compress(json.dumps(runs).encode(), mtime=0))
    print(out, out.stat().st_size, "bytes")


if __name__ == "__main__":
    main(sys.argv[1])
