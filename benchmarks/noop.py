"""noop: what a user waits for when nothing changed, the real ``prolab`` process timed from outside.

A Prefect server of its own (SQLite, 127.0.0.1, a temporary home) and an empty store; the
demo classes' descriptions imported from a small file (K = 6), the shipped ``demo`` config
trained for 2 iterations (the ViT-Adapter-T of the demo: a 114 MB checkpoint) and evaluated.
Those three commands run once cold, then five rounds of ``prolab --help``, ``prolab status``
and the three commands again, unchanged, round-robin so that every row sees the same load.
Each figure is the median of the five; CPU is the command's own user + system time. A command
that hands the Prefect run to a background recorder names its pid: the round waits for it to
end before the next command (so that it does not slow the next one) and reports how long after
the command returned the run was recorded.

Then where the time goes: each command once more under ``python -X importtime``, its wall time
beside the time its imports took (top-level modules, cumulative) and the largest of them; the
rest is the command's own work (planning, store lookups, the Prefect flow when it runs one).
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 5
TINY = ["--cfg-options", "train_cfg.max_iters=2", "train_dataloader.batch_size=2"]
RECORDER = re.compile(r"\(pid (\d+)")
IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)")


def _prolab() -> str:
    return str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "prolab")


def _run(env: dict[str, str], args: list[str]) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """The command, its wall seconds and its CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([_prolab(), *args], check=False, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"prolab {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _wait_for(pid: int, timeout: float = 120) -> float:
    """Seconds until process ``pid`` (not our child) has ended."""
    started = time.perf_counter()
    while Path(f"/proc/{pid}").exists() and time.perf_counter() - started < timeout:
        time.sleep(0.05)
    return time.perf_counter() - started


def _imports(env: dict[str, str], args: list[str]) -> tuple[float, float, list[tuple[float, str]]]:
    """One run under ``-X importtime``: wall seconds, seconds in top-level imports, the largest five."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "flows.cli", *args], check=False, env=env,
                            capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - started
    if found := RECORDER.search(result.stderr):
        _wait_for(int(found.group(1)))
    top = [(int(m.group(1)) / 1e6, m.group(2)) for line in result.stderr.splitlines()
           if (m := IMPORT_LINE.match(line))]
    return wall, sum(seconds for seconds, _ in top), sorted(top, reverse=True)[:5]


def main() -> None:
    from data.demo import DEMO_CLASSES
    from flows.server import LocalServer, server_env, start, stop
    from tasks.processes import free_port

    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        server = start(LocalServer(Path(tmp) / "prefect", free_port()))
        env = {**os.environ, **server_env(server), "PROLAB_ARTIFACTS": str(Path(tmp) / "artifacts"),
               "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                                   os.environ.get("PYTHONPATH")]))}
        try:
            descriptors = Path(tmp) / "demo.json"
            descriptors.write_text(json.dumps({c: [f"{c} shape", f"colour of a {c}", f"where a {c} is"]
                                               for c in DEMO_CLASSES}))
            label_space_args = ["--dataset", "demo", "--descriptors", str(descriptors), "--k", "6"]
            cold, wall, _ = _run(env, ["label-space", *label_space_args])
            label_space = cold.stdout.strip().splitlines()[-1]
            print(f"cold label-space {wall:.1f} s")
            cold, wall, _ = _run(env, ["train", "--config", "demo", "--label-space", label_space, *TINY])
            run = cold.stdout.strip().splitlines()[-1]
            print(f"cold train {wall:.1f} s")
            cold, wall, _ = _run(env, ["evaluate", "--config", "demo", "--label-space", label_space,
                                       "--checkpoint", run, *TINY])
            print(f"cold evaluate {wall:.1f} s")
            rows = {
                "prolab --help": ["--help"],
                "prolab status": ["status", *label_space_args],
                "prolab label-space": ["label-space", *label_space_args],
                "prolab train": ["train", "--config", "demo", "--label-space", label_space, *TINY],
                "prolab evaluate": ["evaluate", "--config", "demo", "--label-space", label_space,
                                    "--checkpoint", run, *TINY],
            }
            walls: dict[str, list[float]] = {name: [] for name in rows}
            cpus: dict[str, list[float]] = {name: [] for name in rows}
            recorded: dict[str, list[float]] = {name: [] for name in rows}
            for _ in range(ROUNDS):
                for name, args in rows.items():
                    result, wall, cpu = _run(env, args)
                    walls[name].append(wall)
                    cpus[name].append(cpu)
                    if found := RECORDER.search(result.stderr):
                        recorded[name].append(_wait_for(int(found.group(1))))
            where = {name: _imports(env, args) for name, args in rows.items()}
        finally:
            stop(server)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print("| command | median wall s | min | max | median CPU s | run recorded in Prefect after (median s) |")
    print("|---|---|---|---|---|---|")
    for name in rows:
        after = f"{statistics.median(recorded[name]):.2f}" if recorded[name] else "in the command"
        print(f"| `{name}` | {statistics.median(walls[name]):.2f} | {min(walls[name]):.2f} | {max(walls[name]):.2f} "
              f"| {statistics.median(cpus[name]):.2f} | {after} |")
    print()
    print("| command (once, under -X importtime) | wall s | in imports s | largest imports (cumulative s) |")
    print("|---|---|---|---|")
    for name, (wall, imports, largest) in where.items():
        print(f"| `{name}` | {wall:.2f} | {imports:.2f} | {', '.join(f'{m} {t:.2f}' for t, m in largest)} |")
    slowest = max(statistics.median(walls[name]) for name in ("prolab label-space", "prolab train", "prolab evaluate"))
    print(f"noop_slowest_median_seconds={slowest:.2f}")


if __name__ == "__main__":
    sys.exit(main())
