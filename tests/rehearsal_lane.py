"""One lane of the gpu-profile rehearsal (tests/test_gpu_rehearsal.py): a process that runs, one after another,
the commands its lane sends (one JSON line each: the CLI sweep of a stage, or its notebook through papermill) and
answers each with one JSON line ({"rc": exit status, "stderr": its last lines}).

Each command runs as its own process would (`python -m replication sweep ...`, `python -m papermill ...`), in
this process: the imports (torch, papermill) are paid once per lane instead of once per command. A notebook
still runs in a kernel of its own.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback


def _sweep(args: list[str]) -> int:
    from replication.cli import main

    try:
        return main(args)
    except SystemExit as exit_:  # argparse's own exit
        return exit_.code if isinstance(exit_.code, int) else 1


def _notebook(stage: str) -> int:
    import papermill

    papermill.execute_notebook(f"notebooks/{stage}.ipynb", f"notebooks/executed/{stage}.ipynb", parameters={"profile": "gpu"},
                               kernel_name="python3", cwd=".", progress_bar=False, log_output=False)
    return 0


def serve() -> None:
    for line in sys.stdin:
        command = json.loads(line)
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                rc = _sweep(command["sweep"]) if "sweep" in command else _notebook(command["notebook"])
        except Exception:  # noqa: BLE001 (the lane reports every failure as the command's outcome)
            stderr.write(traceback.format_exc())
            rc = 1
        sys.stdout.write(json.dumps({"rc": rc, "stderr": stderr.getvalue()[-3000:]}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
