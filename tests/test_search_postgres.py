"""Two search workers on one study through a real PostgreSQL server, as on several machines.

The server is Debian's `postgresql` package (./course test installs it), started here in a temporary
data folder, listening on 127.0.0.1 only, on a free port, and stopped at the end. PostgreSQL refuses to
run as root, so under root (CI's container) it runs as the `postgres` user the package creates.
"""
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from recipe_kit import search


def server_binaries():
    """initdb and pg_ctl: on PATH, or where Debian keeps them (/usr/lib/postgresql/<version>/bin)."""
    found = [shutil.which("initdb"), shutil.which("pg_ctl")]
    if all(found):
        return found
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    if versions:
        folder = Path(versions[-1]).parent
        return [str(folder / "initdb"), str(folder / "pg_ctl")]
    message = ("PostgreSQL's server binaries (initdb, pg_ctl) are missing: `sudo apt-get install postgresql` "
               "(./course test installs it when run as root or with passwordless sudo).")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " CI must run this test.")
    pytest.skip(message)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    pytest.importorskip("psycopg2", reason="the test extra's psycopg2-binary: pip install -e '.[test]'")
    initdb, pg_ctl = server_binaries()
    as_user = []
    folder = Path(tempfile.mkdtemp(prefix="recipe-pg-"))
    if os.geteuid() == 0:  # the server refuses root: hand the folder to the package's `postgres` user
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()
    run = lambda *args: subprocess.run(as_user + list(args), check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(initdb, "-D", str(data), "--auth=trust", "--username=postgres", "--encoding=UTF8")
        run(pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60", "start",
            "-o", f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder}")
    except subprocess.CalledProcessError as e:
        log = (folder / "server.log").read_text() if (folder / "server.log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {e.stderr}{log}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_a_study_through_postgresql(postgres_url, two_search_workers):
    for out, err in two_search_workers(postgres_url, "pg", timeout=300):
        assert "Warning" not in err, err   # no RuntimeWarning, no Optuna warning

    trials = search.open_study("pg", postgres_url).get_trials()
    assert sorted(t.number for t in trials) == list(range(20))      # none lost, none twice
    assert all(t.state.name == "COMPLETE" for t in trials)
    per_worker = pd.Series([t.user_attrs["worker"] for t in trials]).value_counts()
    assert sorted(per_worker.tolist()) == [10, 10]
    assert len({(t.params["lr"], t.params["wd"]) for t in trials}) == 20
    for t in trials:
        assert t.value == pytest.approx(search.toy_accuracy(t.params["lr"], t.params["wd"]))
