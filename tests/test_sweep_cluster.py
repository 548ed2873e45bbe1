"""Issue 22: `bptt sweep --address` against a real Ray cluster started with token
authentication (`RAY_AUTH_MODE=token ray start --head`): without the token the driver stops
with a message naming the variables to export (not 20 s of InvalidAuthToken lines ending in
"Failed to connect"); a wrong token is named as refused; with RAY_AUTH_MODE=token and the
token the sweep runs on the cluster."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="needs the 'sweep' extra (ray[tune])")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ray") is None, reason="needs Ray's `ray` command"),
]

TOKEN = "bptt0test0token0" + "0123456789abcdef"
SPEC = """
[base]
task = "adding"
seq_len = 10
batch = 8
hidden = 8
steps = 20
eval_every = 10
eval_size = 32
plot = false

[sweep]
metric = "val_mse"
"""
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    src = str(Path(__file__).parents[1] / "src")
    return env | {"PYTHONPATH": src, "RAY_memory_monitor_refresh_ms": "0"} | more


def _free_port() -> int:
    for port in range(26000 + os.getpid() % 1000, 27000):  # above Ray's worker ports
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("head") / "head.log"
    cmd = ["ray", "start", "--head", "--port", str(port), "--num-cpus", "1"]
    cmd += ["--include-dashboard", "false", "--block"]
    # its own temporary folder: the "current cluster" file `ray start` writes there must not
    # make other programs' ray.init() look for this cluster once it is gone
    temp = tempfile.mkdtemp(prefix="bptt-ray-", dir="/tmp")  # short: Ray's socket paths
    cmd += ["--temp-dir", temp]
    with open(log, "wb") as f:
        head = subprocess.Popen(
            cmd,
            env=_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN),
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the cluster's processes in one group, ended below
        )
    try:
        deadline = time.monotonic() + 120
        while "--block" not in log.read_text(errors="replace"):  # ray start printed its end
            assert head.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the Ray head did not start in time"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def _sweep(tmp_path: Path, address: str, **env: str) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    cmd = [sys.executable, "-m", "bptt", "sweep", str(spec), "--out", str(tmp_path / "sweep")]
    return subprocess.run(
        [*cmd, "--address", address, "--quiet"],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_no_token_names_the_variables(token_cluster: str, tmp_path: Path) -> None:
    done = _sweep(tmp_path, token_cluster)
    assert done.returncode == 2, done.stderr[-3000:]
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1, err  # Ray's 20 lines of retries are not shown
    assert "requires token authentication" in err and "RAY_AUTH_MODE=token" in err, err
    assert "RAY_AUTH_TOKEN" in err, err
    assert not (tmp_path / "sweep" / "sweep.json").exists()


def test_a_wrong_token_is_named(token_cluster: str, tmp_path: Path) -> None:
    done = _sweep(tmp_path, token_cluster, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="x" * 32)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "refused the token from RAY_AUTH_TOKEN" in done.stderr, done.stderr[-3000:]


def test_token_mode_and_token_run_the_sweep(token_cluster: str, tmp_path: Path) -> None:
    done = _sweep(tmp_path, token_cluster, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = (tmp_path / "sweep" / "trials").glob("*/trial.json")
    assert json.loads(record.read_text())["status"] == "done"
