"""Data-parallel training: 2 CPU processes (torch.distributed, gloo, launched by torchrun) train with
ResponseOnlyCollator on raw messages; every rank's batches are masked correctly and losses are finite."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("datasets")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_training(tmp_path):
    script = Path(__file__).parent / "ddp_train_script.py"
    for attempt in range(3):  # a port taken between choosing and binding is retried, nothing else
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(script), str(tmp_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        network = any(s in proc.stderr for s in ("EADDRINUSE", "address already in use", "DistNetworkError"))
        if proc.returncode == 0 or not network:
            break
    assert proc.returncode == 0, proc.stderr[:3000] + "\n...\n" + proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rep in reports:
        assert rep["world_size"] == 2 and rep["finite"] and len(rep["losses"]) >= 1
        assert rep["checked_batches"] >= 6  # every training batch went through the mask check
    # DistributedSampler gives the ranks different samples
    assert set(reports[0]["seen"][:6]) != set(reports[1]["seen"][:6])
