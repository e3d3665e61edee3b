"""Start `lucebox serve` on the committed tiny checkpoint for the client tests.

Environment:
  LUCEBOX_BIN             path of the built `lucebox` binary (required)
  LUCEBOX_SERVE_BACKEND   backend to serve with (default: cpu)
  LUCEBOX_SERVE_MODEL     model to serve (default: the committed tiny checkpoint),
                          e.g. a real Qwen3.5 directory for a GPU run
"""

import os
import pathlib
import subprocess
import threading

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
MODEL = REPO / "cli" / "tests" / "assets" / "tiny-chat-model"


@pytest.fixture(scope="session")
def server_url(tmp_path_factory):
    binary = os.environ.get("LUCEBOX_BIN")
    if not binary:
        pytest.fail("set LUCEBOX_BIN to the path of the built lucebox binary")
    backend = os.environ.get("LUCEBOX_SERVE_BACKEND", "cpu")
    model = os.environ.get("LUCEBOX_SERVE_MODEL", str(MODEL))
    # The server's log goes to a file (a pipe nobody reads could fill and block it).
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [binary, "serve", "--model", model, "--port", "0", "--backend", backend],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "LUCEBOX_LOG": os.environ.get("LUCEBOX_LOG", "info")},
    )
    # The first stdout line is "lucebox serve: listening on http://HOST:PORT".
    line = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=600)  # a real model on a GPU takes a while to load
    if not line or "listening on" not in line[0]:
        proc.kill()
        proc.wait(timeout=10)
        pytest.fail(f"lucebox serve did not start: {line!r}\n{log_path.read_text()}")
    url = line[0].strip().rsplit(" ", 1)[-1]
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
