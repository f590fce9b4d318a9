"""``tracking=server``: a real ``mlflow server`` on 127.0.0.1 with a temporary SQLite store and
artifact folder. A tiny run is logged to it by lineage-train's runner and read back through the
server's REST API, lineage-report builds the study's table from it, and the server is stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import CONF, free_port
from mlflow.tracking import MlflowClient

from lineage.report.summary import report
from lineage.tracking import EXPERIMENT_KIND_TAG
from lineage.train import run

START_TIMEOUT_S = 180  # ~10 s on an idle 2-core machine; much longer when other jobs share it


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def mlflow_server(tmp_path):
    """``mlflow server --workers 1`` in its own process group; yields (url, process)."""
    root = tmp_path / "server"
    root.mkdir()
    port = free_port()
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the uvicorn worker stops with it
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _healthy(url):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            pytest.fail(
                "mlflow server did not start:\n" + (root / "server.log").read_text()[-3000:]
            )
        time.sleep(0.5)
    yield url, process
    _stop(process)
    log.close()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_a_run_logged_to_a_tracking_server_is_read_back(mlflow_server, tiny_cfg, tmp_path):
    url, process = mlflow_server
    cfg = tiny_cfg("model=ngram_kn3", "study=served", f"tracking.uri={url}", tracking="server")
    results = run(cfg)

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("served")
    assert experiment.tags[EXPERIMENT_KIND_TAG[0]] == EXPERIMENT_KIND_TAG[1]
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]
    served = runs[0]
    assert served.data.metrics["test/ppl"] == pytest.approx(results["test/ppl"], rel=1e-12)
    assert served.data.tags["config_hash"] and served.data.tags["family"] == "ngram"
    artifacts = {a.path for a in client.list_artifacts(served.info.run_id)}
    assert {"config.yaml", "results.json", "model"} <= artifacts
    local = client.download_artifacts(served.info.run_id, "results.json", str(tmp_path))
    assert json.loads(Path(local).read_text())["results"]["test/ppl"] == results["test/ppl"]

    # the same config again is found FINISHED on the server and skipped
    run(tiny_cfg("model=ngram_kn3", "study=served", f"tracking.uri={url}", tracking="server"))
    assert len(client.search_runs([experiment.experiment_id])) == 1

    # lineage-report reads the study from the server and logs its report run there
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        rcfg = compose(
            "report",
            [
                f"paths.root_dir={tmp_path}",
                "study=served",
                "tracking=server",
                f"tracking.uri={url}",
            ],
        )
    result = report(rcfg)
    assert list(result["table"].frame["model"]) == ["ngram_kn3"]
    assert (tmp_path / "experiments" / "served" / "tables" / "table.md").is_file()
    assert client.get_run(result["report_run_id"]).data.tags["kind"] == "report"

    _stop(process)
    assert process.returncode is not None and not _healthy(url)


def test_an_unreachable_server_is_one_clear_error(tiny_cfg, tmp_path):
    """MLflow alone retries for minutes, printing only urllib3 warnings."""
    import time

    from lineage.data.sources import DataError

    port = free_port()  # nothing listens there
    cfg = tiny_cfg("model=rule", f"tracking.uri=http://127.0.0.1:{port}", tracking="server")
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        run(cfg)
    assert time.perf_counter() - start < 60
    assert str(err.value).startswith(
        f"tracking.uri=http://127.0.0.1:{port}: the MLflow server does not answer"
    )
    assert "tracking=mlflow" in str(err.value)
