"""Run a notebook's code cells in a fresh kernel, with hard time limits, from a throw-away folder.

Why a kill and not only an interrupt: a student cell can ignore SIGINT
(`signal.signal(signal.SIGINT, signal.SIG_IGN); while True: pass`), and a kernel that never answers
an interrupt keeps nbclient waiting forever, and every later student with it. So a cell over its
limit is interrupted, given GRACE seconds to stop (a probe cell must come back), and its kernel is
killed (SIGKILL to its process group) if it does not; the cells after it are marked as not run.

With Debian's bubblewrap (`bwrap`) the kernel runs in a sandbox: the whole file system read-only,
the grading folder the only writable place, no network, its own process ids, and the paths the
caller names (instructor notebooks, other submissions, feedback) replaced by empty ones.
"""
import asyncio
import atexit
import contextlib
import functools
import os
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

GRACE = 10                    # seconds an interrupted cell gets to stop before its kernel is killed
MAX_OUTPUT_CHARS = 2_000_000  # per cell: a print loop must not fill the grader's memory
ENV_KEPT = ("PATH", "LANG", "LC_ALL", "TZ", "RECIPE_DATA_DIR", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "VIRTUAL_ENV")  # not the grader's tokens or keys
NO_SANDBOX = ("bubblewrap (bwrap) is not installed, so student code runs with your own user's rights: it can "
              "read and change any file you can, the instructor notebooks included. Install it "
              "(Debian/Ubuntu: apt-get install bubblewrap) or grade in a container or a throw-away account "
              "(docs/instructors.md).")


def sandbox_problem():
    """None when bubblewrap can sandbox a kernel on this machine, else why not (a note for the grader)."""
    path = shutil.which("bwrap")
    if path is None:
        return NO_SANDBOX
    error = bwrap_error(path)
    if error:
        return (f"bubblewrap cannot make a sandbox on this machine ({error}; are user namespaces disabled, "
                "as in many containers?), so student code runs with your own user's rights: "
                "grade in a throw-away account or a VM (docs/instructors.md).")
    return None


@functools.lru_cache
def bwrap_error(path):
    """bwrap's complaint when it cannot create namespaces here (tried once per process), else None."""
    try:
        run = subprocess.run([path, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-net",
                              "--unshare-pid", "--die-with-parent", "true"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if run.returncode == 0 else (run.stderr.strip().split("\n")[-1] or f"exit status {run.returncode}")


def bwrap_available():
    return sandbox_problem() is None


def bwrap_prefix(writable, hidden=()):
    """bwrap arguments: everything read-only but `writable`, no network, own pids; hidden paths emptied."""
    needed = [Path(__file__).parent, Path(sys.prefix), Path(sys.executable).resolve()]
    if os.environ.get("RECIPE_DATA_DIR"):
        needed.append(Path(os.environ["RECIPE_DATA_DIR"]))
    private_tmp = not any(p.resolve().is_relative_to("/tmp") for p in needed)  # other graders' files live there
    args = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--tmpfs", "/dev/shm", "--proc", "/proc",
            *(["--tmpfs", "/tmp"] if private_tmp else []), "--bind", str(writable), str(writable),
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent"]
    needed.append(Path(writable))
    for path in map(Path, hidden):
        if any(p.resolve().is_relative_to(path.resolve()) for p in needed):
            continue  # e.g. a course folder that holds the package: hiding it would break the kernel
        if path.is_dir():
            args += ["--tmpfs", str(path)]
        elif path.exists():
            args += ["--ro-bind", "/dev/null", str(path)]
    return args


class SandboxedKernelManager(AsyncKernelManager):
    """An AsyncKernelManager (nbclient polls asynchronously) whose kernel command starts with
    a bwrap prefix (empty: no sandbox)."""
    prefix = []

    def format_kernel_cmd(self, extra_arguments=None):
        return self.prefix + super().format_kernel_cmd(extra_arguments)


class LimitedClient(NotebookClient):
    """nbclient with a cap on each cell's output, which also notes the cells that printed `mark`."""
    mark = None

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        if self.mark and msg["msg_type"] == "stream" and self.mark in content.get("text", ""):
            self.marked.add(cell_index)
            content["text"] = content["text"].replace(self.mark + "\n", "").replace(self.mark, "")
        self.chars[cell_index] = self.chars.get(cell_index, 0) + len(str(content))
        if self.chars[cell_index] > MAX_OUTPUT_CHARS:
            if cell_index not in self.capped:
                self.capped.add(cell_index)
                outs.append(nbformat.v4.new_output("stream", name="stderr",
                                                   text=f"[grader: output over {MAX_OUTPUT_CHARS} characters cut]\n"))
            return None
        return super().output(outs, msg, display_id, cell_index)


def error_output(ename, evalue):
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def kernel_env(home):
    """A small environment: no secrets of the grader, a throw-away HOME, this recipe_kit first on the path."""
    env = {k: os.environ[k] for k in ENV_KEPT if k in os.environ}
    package_parent = str(Path(__file__).resolve().parent.parent)
    env.update(HOME=str(home), MPLCONFIGDIR=str(home / ".matplotlib"), IPYTHONDIR=str(home / ".ipython"),
               PYTHONHASHSEED="0", PYTHONPATH=package_parent, MPLBACKEND="agg", JUPYTER_PLATFORM_DIRS="1")
    env.setdefault("PATH", str(Path(sys.executable).parent))
    return env


def run_cells(nb, folder, labels, timeout_per_cell, timeout_per_notebook, sandbox, hidden=(), mark=None):
    """Execute nb's code cells in place, in folder/work, a failing cell not stopping the rest.
    labels[i] names cell i in messages. Returns the indices of the cells that printed `mark`.
    A cell over its limit gets a TimeoutError output; cells the kernel did not reach get a NotRun one."""
    folder = Path(folder)
    work, home, run = folder / "work", folder / "home", folder / "kernel"
    for d in (work, home, run):
        d.mkdir(parents=True, exist_ok=True)
    km = SandboxedKernelManager(kernel_name="python3")
    if os.name == "posix":
        km.transport = "ipc"  # unix sockets: no port for other users, and the sandbox has no network at all
        km.ip = str(run / "ipc")
    if sandbox:
        # ipykernel exits when its parent looks gone (parent pid 1, as bwrap's is): --die-with-parent does that job
        km.prefix = bwrap_prefix(folder, hidden) + ["--chdir", str(work), "--setenv", "JPY_PARENT_PID", "1"]
        km.kernel_spec.interrupt_mode = "message"  # a SIGINT to the process group would end bwrap itself
    km.connection_file = str(run / "kernel.json")
    client = LimitedClient(nb, km=km, timeout=None, allow_errors=True, kernel_name="python3", startup_timeout=120)
    client.mark, client.marked, client.chars, client.capped = mark, set(), {}, set()
    run_sync(run_all)(client, labels, timeout_per_cell, timeout_per_notebook, kernel_env(home), work)
    return client.marked


async def run_all(client, labels, timeout_per_cell, timeout_per_notebook, env, work):
    km, started, stopped = client.km, time.monotonic(), None
    try:
        async with client.async_setup_kernel(env=env, cwd=str(work)):
            for index, cell in enumerate(client.nb.cells):
                if cell.cell_type != "code":
                    continue
                if stopped:
                    cell.outputs = [error_output("NotRun", stopped)]
                    continue
                limit = min(timeout_per_cell, timeout_per_notebook - (time.monotonic() - started))
                if limit <= 0:
                    stopped = f"not run: the notebook's {timeout_per_notebook:g} s were used up"
                    cell.outputs = [error_output("NotRun", stopped)]
                    continue
                try:
                    finished = await within(client.async_execute_cell(cell, index), limit)
                except DeadKernelError as e:
                    cell.outputs = [error_output("DeadKernelError", f"the kernel died in cell {labels[index]}: {e}")]
                    stopped = f"not run: the kernel died in cell {labels[index]}"
                    continue
                if not finished:
                    message = f"timed out after {limit:g} s in cell {labels[index]}"
                    cell.outputs = [error_output("TimeoutError", message)]
                    if limit < timeout_per_cell or not await recovered(client, index):
                        await km.shutdown_kernel(now=True)
                        stopped = f"not run: the kernel was stopped after cell {labels[index]} timed out"
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)
        if client.kc is not None:
            client.kc.stop_channels()
        atexit.unregister(client._cleanup_kernel)  # nbclient leaves these behind when a kernel fails to start
        for signum in signal.SIGINT, signal.SIGTERM:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_event_loop().remove_signal_handler(signum)


async def within(coroutine, seconds):
    """True if the coroutine finished within `seconds`; else it is cancelled (nbclient then stops
    listening to that cell) and False. Its exceptions propagate."""
    task = asyncio.ensure_future(coroutine)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        task.result()
        return True
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, DeadKernelError):  # nbclient turns a cancel into DeadKernelError
        pass
    return False


async def recovered(client, index):
    """Interrupt the kernel; True if it answers a probe within GRACE seconds (the cell did stop)."""
    await client.km.interrupt_kernel()
    cell = client.nb.cells[index]
    try:
        return await within(client.async_execute_cell(nbformat.v4.new_code_cell("pass"), index), GRACE)
    except DeadKernelError:
        return False
    finally:
        client.nb.cells[index] = cell  # nbclient stores the cell it ran at its index
