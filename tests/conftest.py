"""Shared test setup: one thread (results on CPU depend on the thread count), fixed seeds."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def two_search_workers():
    """Run two `recipe_kit.search worker` processes, 10 toy trials each, on one study; return their
    outputs after checking each exited 0 and ran its trials (the SQLite and PostgreSQL tests share it)."""
    import subprocess
    import sys
    from recipe_kit.data import PROJECT_ROOT

    def run(storage, study, timeout=120):
        command = [sys.executable, "-m", "recipe_kit.search", "worker", "--study", study, "--trials", "10",
                   "--storage", storage, "--objective", "recipe_kit.search:slow_toy_objective"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        workers = [subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [w.communicate(timeout=timeout) for w in workers]
        for w, (out, err) in zip(workers, outputs):
            assert w.returncode == 0, err
            assert "ran trials" in out
        return outputs
    return run
