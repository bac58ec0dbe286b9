"""What the prediction log costs a model server: `treadle serve` with and without
`--log-predictions`, under the serving benchmark's load (wrk, 16 connections, /predict).

Target (monitoring issue): the log keeps up with the request rate (every prediction
logged, none dropped) and slows the server by no more than 5 %.

Measured two ways:

- **Rates.** Every round starts three servers side by side: one logging, one not, and a
  second one not logging as a control; wrk loads each in turn. The slowdown is the median
  over rounds of the logging server's rate over the plain one's, measured seconds apart;
  the rounds take the six orders of the three in turn, so each goes first, and follows
  each other one, equally often. The control's ratio, the same way, is the noise floor:
  two processes of one server on a shared virtual machine differ by several per cent.
  With two cores or more, the servers run on the first and wrk and the log's converter
  on the others, as a load generator on another machine would. After each round of the
  logging server the benchmark waits until its log has caught up (queue empty, every
  spool file converted), counts the converter's CPU too, and has the kernel write the
  log's files to disk, so that no work of the log falls into another server's round.
- **CPU.** The log's own work in the server's process (the request loop's append, the
  writer thread's spool files) run on the same requests in this process, per request,
  against the server's CPU per request without the log; and the converter's, in the
  process of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

# the serving benchmark's helpers: wrk, servers, the model
import serving

TARGET_SLOWDOWN = 0.05
CONVERTER = "treadle.serving.predlog"
MODES = ("on", "off", "control")
ORDERS = list(itertools.permutations(MODES))
SERVER_CPUS = {0}
"""Where the servers run when the machine has two cores or more; wrk and the converter
take the rest."""


def _others() -> set[int]:
    cpus = os.sched_getaffinity(0)
    return cpus - SERVER_CPUS if len(cpus) >= 2 and cpus > SERVER_CPUS else set()


def _converters(server_pid: int) -> list[int]:
    """The server's converter processes (children in a session of their own)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != server_pid:
                continue
            if CONVERTER in (stat.parent / "cmdline").read_text():
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _caught_up(home: Path, port: int) -> bool:
    status, text = serving.http_get(port, "/metrics", timeout=10)
    queued = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.decode().splitlines()
        if line.startswith("treadle_prediction_log_queue ")
    )
    spooled = list((home / "predictions").rglob(".spool/*.jsonl"))
    return status == 200 and queued == 0 and not spooled


def _wait_caught_up(home: Path, port: int, timeout_s: float = 60) -> float:
    started = time.monotonic()
    while not _caught_up(home, port):
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"the prediction log did not catch up in {timeout_s:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - started


@contextlib.contextmanager
def _servers(tmp: Path, home: Path) -> Iterator[dict[str, serving.Server]]:
    servers: dict[str, serving.Server] = {}
    pin = ["taskset", "-c", ",".join(map(str, sorted(SERVER_CPUS)))] if _others() else []
    try:
        for mode in MODES:
            port = serving.free_port()
            flag = "--log-predictions" if mode == "on" else "--no-log-predictions"
            args = ["serve", f"{serving.MODEL_NAME}@{serving.ALIAS}", "--port", str(port)]
            servers[mode] = serving.Server(
                f"treadle serve {flag}",
                [*pin, *serving.treadle_command(), *args, flag],
                serving.isolated_env(home),
                port,
                "/v2/health/ready",
                tmp / f"{mode}.log",
            )
            servers[mode].start(serving.START_TIMEOUT_S)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _in_process_cost(body: bytes, requests: int = 20_000) -> tuple[float, float]:
    """CPU µs per request of the log's work in a server's process (append, then the
    writer's spool file every 2,000 requests, half a second at the served rate) and in
    the converter's, on the benchmark's own request."""
    from treadle.serving.predlog import PredictionLog, convert_spool

    payload = orjson.loads(body)
    columns, dtypes = payload["columns"], {c: "float64" for c in payload["columns"]}
    dtypes["prediction"] = "int64"
    # what the request loop holds for each request: its parsed rows, a fresh id
    parsed = [orjson.loads(body)["data"] for _ in range(2_000)]
    ids = [uuid.uuid4().hex for _ in range(requests)]
    with tempfile.TemporaryDirectory(prefix="treadle-bench-predlog-cpu-") as folder:
        log = PredictionLog(Path(folder), flush_seconds=3600, convert=False)
        started = time.process_time()
        for i in range(requests):
            log.append(ids[i], "m", 1, 1.5, columns, parsed[i % 2_000], [1], dtypes)
            if i % 2_000 == 1_999:
                log.flush()
        log.flush()
        server_s = time.process_time() - started
        started = time.process_time()
        convert_spool(Path(folder))
        converter_s = time.process_time() - started
        log.close()
    return server_s / requests * 1e6, converter_s / requests * 1e6


def _median(values: list[float], digits: int = 1) -> float | None:
    return round(statistics.median(values), digits) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=4, help="seconds of wrk per round")
    parser.add_argument(
        "--rounds", type=int, default=12, help="a multiple of 6 takes every order alike"
    )
    args = parser.parse_args()
    serving.wrk_binary()
    with tempfile.TemporaryDirectory(prefix="treadle-bench-predlog-") as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "home"
        model, X = serving.train()
        expected = int(model.predict(X[:1])[0])
        body = serving.bodies(X[0].tolist())["predict"]
        serving.register(home, model, X)
        others = _others()
        serving.emit(
            benchmark="predlog_setup",
            **serving.machine(),
            duration_s=args.duration,
            rounds=args.rounds,
            servers_on_cpus=sorted(SERVER_CPUS) if others else "any",
            wrk_and_converter_on_cpus=sorted(others) if others else "any",
        )
        # the in-process figures first, before any server runs
        log_us, converter_us_alone = _in_process_cost(body)  # {columns, data}
        if others:
            os.sched_setaffinity(0, others)  # wrk, started from here, runs there
        bench = serving.Bench(tmp, args.duration, {})
        rates: dict[str, list[float]] = {mode: [] for mode in MODES}
        cpu_us: dict[str, list[float]] = {"on": [], "off": [], "converter": []}
        drain_s: list[float] = []
        served = dropped = 0
        for round_ in range(args.rounds):
            # fresh servers every round: two processes of one program differ by a few per
            # cent (where their memory lies), and that must average out too
            with _servers(tmp, home) as servers:
                logging = servers["on"]
                assert logging.proc is not None
                for server in servers.values():
                    serving.warm_up(
                        server.port, "/predict", body, lambda r: r.get("predictions") == [expected]
                    )
                _wait_caught_up(home, logging.port)
                converters = _converters(logging.proc.pid)
                if others:
                    for pid in converters:
                        os.sched_setaffinity(pid, others)
                # every order in turn: each server goes first, and follows each other one,
                # equally often
                for mode in ORDERS[round_ % len(ORDERS)]:
                    server = servers[mode]
                    converted = _cpu_s(converters)
                    with contextlib.redirect_stdout(sys.stderr):  # one line per server, aside
                        result = bench.measure(
                            f"predlog_{mode}", server, "predict", "/predict", body, 16
                        )
                    rates[mode].append(result.requests_per_s)
                    cpu = bench.cpu[(f"predlog_{mode}", "predict", 16)]
                    if mode in cpu_us and result.requests and "server_cpu_cores" in cpu:
                        per_request = result.seconds / result.requests * 1e6
                        cpu_us[mode].append(cpu["server_cpu_cores"] * per_request)
                    if mode == "on":
                        drain_s.append(_wait_caught_up(home, server.port))
                        # the log's files go to disk now, not in whichever round the
                        # kernel's writeback would fall
                        os.sync()
                        if result.requests:
                            spent = _cpu_s(converters) - converted
                            cpu_us["converter"].append(spent / result.requests * 1e6)
                round_served, round_dropped = serving.served_and_dropped(logging.port)
                served, dropped = served + round_served, dropped + round_dropped
        logged = serving.logged_rows(home / "predictions")
        complete = logged == served and dropped == 0

        def slowdown(mode: str) -> float:
            ratios = [a / b for a, b in zip(rates[mode], rates["off"], strict=True)]
            return round(1 - statistics.median(ratios), 4)

        plain_us = _median(cpu_us["off"])
        serving.emit(
            benchmark="predlog_cost",
            slowdown=slowdown("on"),
            noise_floor=slowdown("control"),
            requests_per_s_logging=_median(rates["on"]),
            requests_per_s_not_logging=_median(rates["off"]),
            requests_per_s_control=_median(rates["control"]),
            server_cpu_us_per_request_logging=_median(cpu_us["on"]),
            server_cpu_us_per_request_not_logging=plain_us,
            log_cpu_us_per_request_in_server=round(log_us, 2),
            log_share_of_server_cpu=round(log_us / plain_us, 4) if plain_us else None,
            converter_cpu_us_per_request=_median(cpu_us["converter"]),
            converter_cpu_us_per_request_alone=round(converter_us_alone, 2),
            catch_up_after_round_s=_median(drain_s, 2),
            predictions_served=served,
            predictions_logged=logged,
            dropped=dropped,
            every_prediction_logged=complete,
            rounds=args.rounds,
            target_slowdown=TARGET_SLOWDOWN,
            meets_target=complete and slowdown("on") <= TARGET_SLOWDOWN,
        )


if __name__ == "__main__":
    main()
