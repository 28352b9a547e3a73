"""Per-stage times and the DAG's wall time of a pipeline run, from its stage manifests.

    python bench/stage_times.py runs/fer2013_fusion
"""

import sys
from pathlib import Path

from common import dag_wall_seconds, stage_seconds

if __name__ == "__main__":
    out = Path(sys.argv[1])
    for name, seconds in stage_seconds(out).items():
        print(f"{name:>24}  {seconds:9.1f} s")
    print(f"{'DAG wall time':>24}  {dag_wall_seconds(out):9.1f} s")
