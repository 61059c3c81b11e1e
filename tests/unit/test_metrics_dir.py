"""The folder a forking process counts in: its own, emptied at start, removed at exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.harness import ROOT

# A process that counts rows in multi-process mode and prints its folder and what it serves.
# Given a folder, it first puts that folder's counter files in its own, as a predecessor
# with its pid would have left them (PID 1 in a container, restarted).
SCRIPT = textwrap.dedent(
    """
    import os, shutil, sys
    from pathlib import Path
    from etl_tasks import metrics
    base, rows, stale = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    mine = Path(base) / f"baton-metrics-worker-{os.getpid()}"
    if stale:
        mine.mkdir(parents=True)
        for f in Path(stale[0]).iterdir():
            shutil.copy(f, mine / f.name)
    folder = metrics.use_multiprocess_dir(base, "worker")
    metrics.ROWS.labels("loaded").inc(rows)
    print(folder)
    print(metrics.exposition()[0].decode())
    """
)


def _run(base: Path, rows: int, *stale: str) -> tuple[Path, str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(base), str(rows), *stale],
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    folder, text = done.stdout.split("\n", 1)
    return Path(folder), text


def test_a_process_counts_in_its_own_folder_emptied_when_it_starts(tmp_path: Path) -> None:
    # Given a process that counted 5 rows and left its folder behind (killed)
    first, text = _run(tmp_path, 5)
    assert first.parent == tmp_path and list(first.glob("counter_*.db"))
    assert 'baton_rows_total{stage="loaded"} 5.0' in text
    # When a process restarted under the same pid finds those files in its folder
    second, text = _run(tmp_path, 2, str(first))
    # Then it counts from zero: its predecessor's counts are not added to its own
    assert 'baton_rows_total{stage="loaded"} 2.0' in text
    assert second != first
