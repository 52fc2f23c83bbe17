"""What the online forecast costs per evaluation point, against one training step.

The loop calls :func:`latephase.forecast.forecast` once per evaluation point on all records
so far; this times it on the last 200 records of a calibration run (the test fixture),
padded to ~60 keys as a real record, and prints it as a ratio to the matrix multiplies of
one training step of the paper's MLP measured in the same process.

    python benchmarks/forecast_cost.py
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

from latephase.bench import best_time, matmul_floor
from latephase.forecast import forecast

FIXTURE = Path(__file__).parent.parent / "tests" / "data" / "forecast" / "calib_records.json.gz"


def main() -> None:
    torch.set_num_threads(1)
    runs = json.loads(gzip.decompress(FIXTURE.read_bytes()))
    records = next(iter(runs.values()))["records"][:200]
    pad = {f"test/extra{i}": float(i) for i in range(54)}
    records = [{**r, **pad} for r in records]
    t_fc = best_time(lambda: forecast(records), 7, 20)
    t_step = best_time(matmul_floor([784, 200, 200, 200, 10], 100), 7, 20)
    print(f"forecast on {len(records)} records of {len(records[0])} keys: {t_fc * 1e3:.2f} ms "
          f"= {t_fc / t_step:.2f} x the matmuls of one paper-MLP training step")


if __name__ == "__main__":
    main()
