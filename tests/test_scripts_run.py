"""The long-running sidecar: sync loop, POST /sync, SIGHUP, /status, clean SIGTERM."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import Sidecar, cli
from tests.gitrepos import Upstream, git

MAIN = "node-deployment/main.al"


def post(sc: Sidecar, path: str, body: bytes = b"", **headers: str) -> int:
    req = urllib.request.Request(sc.url + path, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def head_of(link: Path) -> str:
    return git("rev-parse", "HEAD", cwd=link)


def test_run_publishes_serves_status_and_stops_on_sigterm(tmp_path: Path, sidecar_factory: Any) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    sc = sidecar_factory(["--repo", up.url, "--link", str(link), "--period", "3600"])
    sc.wait_for(lambda: sc.status()["scripts"]["published"], what="published")
    status = sc.status()
    scripts = status["scripts"]
    assert scripts["source"] == "git"
    assert scripts["revision"] == up.head()
    assert scripts["last_sync_result"] == "ok"
    assert scripts["next_sync_time"] is not None
    assert scripts["local_edits"] == 0
    assert status["config"]["period"] == 3600
    assert sc.get("/livez")[0] == 200
    # `edgelake-sidecar status -o json` prints the same JSON (what a person runs in `kubectl exec`).
    printed = cli(["status", "-o", "json", "--http-port", str(sc.port)])
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["scripts"]["revision"] == up.head()
    # stop() SIGKILLs after 10 s and a killed sidecar does not exit 0; how fast it stops is measured
    # by bench/bench_stop.py (the chart allows 5 s), not asserted on a shared machine.
    assert sc.stop(signal.SIGTERM, timeout=10) == 0
    assert link.is_symlink() and (link / MAIN).exists()


def test_polling_picks_up_a_push_and_counts_local_edits(tmp_path: Path, sidecar_factory: Any) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    sc = sidecar_factory(["--repo", up.url, "--link", str(link), "--period", "0.3"])
    sc.wait_for(lambda: sc.status()["scripts"]["published"], what="published")
    (link / "mine.al").write_text("mine\n")
    new = up.commit({MAIN: "v2\n"})
    sc.wait_for(lambda: sc.status()["scripts"]["revision"] == new, what="new revision")
    assert (link / MAIN).read_text() == "v2\n"
    assert (link / "mine.al").read_text() == "mine\n"
    sc.wait_for(lambda: sc.status()["scripts"]["local_edits"] == 1, what="edit counted")
    assert sc.status()["scripts"]["local_edit_files"] == ["mine.al"]


def test_post_sync_with_token_and_hmac(tmp_path: Path, sidecar_factory: Any) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-value\n")
    hmac_file = tmp_path / "hmac"
    hmac_file.write_text("webhook-secret")
    sc = sidecar_factory(["--repo", up.url, "--link", str(link), "--period", "3600",
                          "--sync-token-file", str(token_file), "--sync-hmac-secret-file", str(hmac_file)])
    sc.wait_for(lambda: sc.status()["scripts"]["published"], what="published")

    assert post(sc, "/sync") == 401
    assert post(sc, "/sync", Authorization="Bearer wrong") == 401
    assert post(sc, "/sync", b"{}", **{"X-Hub-Signature-256": "sha256=" + "0" * 64}) == 401
    assert sc.get("/sync")[0] == 405

    new = up.commit({MAIN: "v2\n"})
    assert post(sc, "/sync", Authorization="Bearer s3cret-token-value") == 202
    sc.wait_for(lambda: head_of(link) == new, what="sync by token")

    # Token rotation: the file is re-read, the old token stops working.
    token_file.write_text("rotated-token-value")
    assert post(sc, "/sync", Authorization="Bearer s3cret-token-value") == 401

    body = b'{"ref": "refs/heads/main"}'
    signature = "sha256=" + hmac.new(b"webhook-secret", body, hashlib.sha256).hexdigest()
    newer = up.commit({MAIN: "v3\n"})
    assert post(sc, "/sync", body, **{"X-Hub-Signature-256": signature}) == 202
    sc.wait_for(lambda: head_of(link) == newer, what="sync by HMAC")

    status_text = sc.get("/status")[1]
    sc.stop()
    for secret in ("s3cret-token-value", "rotated-token-value", "webhook-secret"):
        assert secret not in sc.output()
        assert secret not in status_text


def test_post_sync_is_off_without_a_secret(tmp_path: Path, sidecar_factory: Any) -> None:
    up = Upstream(tmp_path)
    sc = sidecar_factory(["--repo", up.url, "--link", str(tmp_path / "vol" / "s"), "--period", "3600"])
    assert post(sc, "/sync", Authorization="Bearer anything") == 404


def test_sighup_triggers_a_sync_and_pinned_sha_is_not_polled(tmp_path: Path, sidecar_factory: Any) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    sc = sidecar_factory(["--repo", up.url, "--link", str(link), "--period", "3600"])
    sc.wait_for(lambda: sc.status()["scripts"]["published"], what="published")
    new = up.commit({MAIN: "v2\n"})
    assert sc.proc is not None
    sc.proc.send_signal(signal.SIGHUP)
    sc.wait_for(lambda: sc.status()["scripts"]["revision"] == new, what="sync by SIGHUP")

    pinned_link = tmp_path / "vol2" / "scripts"
    pinned = sidecar_factory(["--repo", up.url, "--ref", new, "--link", str(pinned_link), "--period", "0.1"])
    pinned.wait_for(lambda: pinned.status()["scripts"]["published"], what="published")
    time.sleep(1.0)
    status = pinned.status()["scripts"]
    assert status["next_sync_time"] is None
    assert sum(status["syncs"].values()) == 1, status["syncs"]


def test_sync_errors_keep_the_tree_back_off_and_recover(tmp_path: Path, sidecar_factory: Any) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    sc = sidecar_factory(["--repo", up.url, "--link", str(link), "--period", "0.2", "--backoff-max", "1"])
    sc.wait_for(lambda: sc.status()["scripts"]["published"], what="published")
    moved = tmp_path / "moved.git"
    up.bare.rename(moved)
    sc.wait_for(lambda: sc.status()["scripts"]["consecutive_failures"] >= 2, what="failures")
    status = sc.status()["scripts"]
    assert status["last_sync_result"] == "error"
    assert "upstream.git" in status["last_sync_error"]
    assert sc.get("/livez")[0] == 200, "git trouble never fails liveness"
    assert (link / MAIN).exists()
    moved.rename(up.bare)
    new = up.commit({MAIN: "back\n"})
    sc.wait_for(lambda: sc.status()["scripts"]["revision"] == new, timeout=60, what="recovered")
    assert sc.status()["scripts"]["consecutive_failures"] == 0
