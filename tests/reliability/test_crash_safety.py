"""Crash safety of results (issue 9, item 3).

A writer subprocess is SIGKILLed between writing the new file and renaming it onto the old
one (the ``ARNAS_RAY_ATOMIC_SLEEP`` hook of :mod:`arnas_ray._atomic` holds it there, and it
says so on stdout first), and the previous complete file is still there, readable, with the
same content. Without the helper (a write in place) the hook never fires and the test fails.
A second test kills a writer at arbitrary moments of a stream of table rewrites, without the
hook. Truncated or corrupt files give a clear error naming the file and how to recover.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from arnas_ray.checkpoint import load_checkpoint, save_checkpoint
from arnas_ray.errors import CheckpointError
from arnas_ray.results import read_table, upsert_rows, write_table
from arnas_ray.results.table import CorruptTableError

REPO = Path(__file__).resolve().parents[2]
_SIGNAL_SLEEP = """
import sys, time
_sleep = time.sleep
def _announce(seconds):
    sys.stdout.write("BETWEEN-WRITE-AND-RENAME\\n"); sys.stdout.flush(); _sleep(seconds)
time.sleep = _announce
"""


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)


def _rows(n: int, tag: str) -> list[dict]:
    return [{"sweep_id": "s", "stage": "search", "trial_id": f"{tag}-{i:06d}", "status": "finished",
             "nat_acc": i / n, "genotype": "x" * 200, "seed": i} for i in range(n)]


def _kill_between_write_and_rename(code: str, target: Path) -> None:
    """Run ``code`` in a subprocess with the sleep hook; SIGKILL it once it sits before the rename."""
    env = {**os.environ, "ARNAS_RAY_ATOMIC_SLEEP": "60", "PYTHONPATH": _pythonpath()}
    proc = subprocess.Popen([sys.executable, "-c", _SIGNAL_SLEEP + textwrap.dedent(code)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == "BETWEEN-WRITE-AND-RENAME", (line, proc.stderr.read())  # type: ignore[union-attr]
        tmp = [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
        assert tmp and tmp[0].stat().st_size > 0  # the new file is fully written, not renamed yet
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def test_table_survives_sigkill_between_write_and_rename(tmp_path):
    path = tmp_path / "results.parquet"
    write_table(pd.DataFrame(_rows(50, "old")), path)
    before = read_table(path)
    _kill_between_write_and_rename(f"""
        import pandas as pd
        from arnas_ray.results import upsert_rows
        rows = [{{"sweep_id": "s", "stage": "search", "trial_id": f"new-{{i:06d}}", "status": "running",
                 "genotype": "y" * 200}} for i in range(100_000)]
        upsert_rows({str(path)!r}, rows)
    """, path)
    after = read_table(path)
    pd.testing.assert_frame_equal(after, before)
    assert len(after) == 50
    # a leftover temp file does not disturb the next writer
    upsert_rows(path, _rows(1, "next"))
    assert len(read_table(path)) == 51


def test_checkpoint_survives_sigkill_between_write_and_rename(tmp_path):
    path = tmp_path / "search.pt"
    save_checkpoint(path, {"epoch": 3, "w": torch.arange(10.0)})
    _kill_between_write_and_rename(f"""
        import torch
        from arnas_ray.checkpoint import save_checkpoint
        save_checkpoint({str(path)!r}, {{"epoch": 4, "w": torch.zeros(4_000_000)}})
    """, path)
    state = load_checkpoint(path)
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.arange(10.0))


def test_genotype_and_report_writes_survive_sigkill(tmp_path):
    """Genotypes and report files go through the same helper (atomic_write_text/bytes)."""
    path = tmp_path / "genotype.json"
    path.write_text('{"old": true}\n')
    _kill_between_write_and_rename(f"""
        from arnas_ray._atomic import atomic_write_text
        from arnas_ray.space.genotype import GENOTYPES
        atomic_write_text({str(path)!r}, GENOTYPES["ARNAS"].to_json(indent=2))
    """, path)
    assert path.read_text() == '{"old": true}\n'


def test_table_survives_sigkill_at_random_moments(tmp_path):
    """No hook: a writer rewrites a growing table in a loop and is killed at several moments;
    every time the file on disk is a complete table (old or new), never a partial one."""
    path = tmp_path / "results.parquet"
    write_table(pd.DataFrame(_rows(10, "seed")), path)
    code = textwrap.dedent(f"""
        import sys
        from arnas_ray.results import upsert_rows
        for k in range(1000):
            upsert_rows({str(path)!r}, [{{"sweep_id": "s", "stage": "search", "trial_id": f"t{{k}}-{{i}}",
                        "status": "finished", "genotype": "z" * 300}} for i in range(20_000)])
            print(k, flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": _pythonpath()}
    env.pop("ARNAS_RAY_ATOMIC_SLEEP", None)
    sizes = []
    for delay in (0.05, 0.3, 0.9):
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # type: ignore[union-attr]  # at least one rewrite done
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        table = read_table(path)  # never CorruptTableError
        assert len(table) % 20_000 == 10 and not table.duplicated(["stage", "trial_id"]).any()
        sizes.append(len(table))
    assert sizes == sorted(sizes) and sizes[-1] > 10


def test_truncated_table_names_file_and_recovery(tmp_path):
    path = tmp_path / "results.parquet"
    write_table(pd.DataFrame(_rows(20, "a")), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptTableError) as info:
        read_table(path)
    msg = str(info.value)
    assert str(path) in msg and "truncated or corrupt" in msg and "sweep resume" in msg
    before = path.read_bytes()
    with pytest.raises(CorruptTableError):
        upsert_rows(path, _rows(1, "b"))
    assert path.read_bytes() == before  # a corrupt table is never overwritten silently


def test_garbage_table_names_file(tmp_path):
    path = tmp_path / "results.parquet"
    path.write_bytes(b"PAR1" + os.urandom(256))
    with pytest.raises(CorruptTableError, match="results.parquet"):
        read_table(path)


@pytest.mark.parametrize("cut", [0, 10, 0.5, -1])
def test_truncated_checkpoint_names_file(tmp_path, cut):
    path = tmp_path / "search.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.randn(1000)})
    data = path.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert "resume" in str(info.value) or "refused" in str(info.value) or "holds" in str(info.value)


def test_missing_checkpoint_names_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


# ---- every write in the package goes through the atomic helper ---------------------------
_WRITES = r"(\.write_text\(|\.write_bytes\(|torch\.save\(|\.savefig\(|\.to_parquet\(|\.to_csv\(|" \
          r"pq\.write_table\(|open\([^)]*['\"][wax]b?['\"])"
# (file, text of the line) pairs that are themselves the atomic machinery or a lock file
_ALLOWED = {
    ("_atomic.py", "tmp.write_bytes(data)"),
    ("checkpoint.py", "torch.save(state, tmp)"),
    ("table.py", "pq.write_table(table, tmp)"),
    ("table.py", "pq.write_table(table, sink)"),
    ("plots.py", "fig.savefig(buf"),
    ("cells.py", "fig.savefig(buf"),
    ("lock.py", 'with os.fdopen(fd, "w") as fh:'),  # the O_EXCL lock file itself
    # the spec copied into a fresh Ray Jobs staging directory (uploaded, never a result)
    ("jobs.py", "(Path(workdir) / SPEC_NAME).write_text(spec.to_yaml())"),
    # RunDir's own plumbing: text as bytes, the table as bytes, and a scratch copy of a
    # remote file in a private temporary directory (read-only use, removed after)
    ("rundir.py", 'self.write_bytes(name, text.encode("utf-8"))'),
    ("rundir.py", "self.write_bytes(TABLE, table_to_bytes(df))"),
    ("rundir.py", "path.write_bytes(self.read_bytes(name))"),
    ("rundir.py", '>>> rd.write_text(SUMMARY, "{}")'),
}
# RunDir.write_bytes/write_text(NAME, ...) with a run-directory file-name constant (or a name
# from one) is atomic by construction: temp + rename locally, one whole-object PUT remotely
# (tests/results/test_rundir.py checks both)
_RUNDIR_WRITE = r"\b(run_dir|root|rd|self\.run_dir)\.write_(text|bytes)\(([A-Z_]+|name),"


def test_every_file_write_is_atomic():
    import re

    offenders = []
    for path in sorted((REPO / "arnas_ray").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(_WRITES, line) and not line.lstrip().startswith("#"):
                if re.search(_RUNDIR_WRITE, line):
                    continue
                if not any(path.name == f and text in line for f, text in _ALLOWED):
                    offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == [], "non-atomic writes (use arnas_ray._atomic):\n" + "\n".join(offenders)
