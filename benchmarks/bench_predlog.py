"""What the prediction log costs a model server: `treadle serve` with and without
`--log-predictions`, under the serving benchmark's load (wrk, 16 connections, /predict).

Target (monitoring issue): the log keeps up with the request rate (every prediction
logged, none dropped) and slows the server by no more than 5 %. The two servers take
turns, several rounds, the first of each round alternating, so a drift of the machine's
speed falls on both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# the serving benchmark's helpers: wrk, servers, the model
import serving

TARGET_SLOWDOWN = 0.05


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    serving.wrk_binary()
    with tempfile.TemporaryDirectory(prefix="treadle-bench-predlog-") as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "home"
        model, X = serving.train()
        expected = int(model.predict(X[:1])[0])
        body = serving.bodies(X[0].tolist())["predict"]
        serving.register(home, model, X)
        serving.emit(benchmark="predlog_setup", **serving.machine(), duration_s=args.duration)
        bench = serving.Bench(tmp, args.duration, {})
        rates: dict[str, list[float]] = {"on": [], "off": []}
        # the server's CPU time per request: less sensitive than the rate to whatever
        # else the machine is doing, since both servers are saturated by the same load
        cpu_us: dict[str, list[float]] = {"on": [], "off": []}
        complete = True
        for round_ in range(args.rounds):
            # which server goes first alternates: a machine that speeds up or slows down
            # over the run favours neither
            for mode in ("on", "off") if round_ % 2 == 0 else ("off", "on"):
                port = serving.free_port()
                flag = "--log-predictions" if mode == "on" else "--no-log-predictions"
                args_ = ["serve", f"{serving.MODEL_NAME}@{serving.ALIAS}", "--port", str(port)]
                server = serving.Server(
                    f"treadle serve {flag}",
                    [*serving.treadle_command(), *args_, flag],
                    serving.isolated_env(home),
                    port,
                    "/v2/health/ready",
                    tmp / f"{mode}-{round_}.log",
                )
                before = serving.logged_rows(home / "predictions")
                with serving.running(server):
                    serving.warm_up(
                        port, "/predict", body, lambda r: r.get("predictions") == [expected]
                    )
                    result = bench.measure(
                        f"predlog_{mode}", server, "predict", "/predict", body, 16
                    )
                    served, dropped = serving.served_and_dropped(port)
                rates[mode].append(result.requests_per_s)
                cores = bench.cpu[(f"predlog_{mode}", "predict", 16)].get("server_cpu_cores")
                if cores is not None and result.requests:
                    cpu_us[mode].append(cores * result.seconds / result.requests * 1e6)
                if mode == "on":
                    logged = serving.logged_rows(home / "predictions") - before
                    complete &= logged + dropped == served and dropped == 0
        on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
        slowdown = 1 - on / off if off else 0.0
        serving.emit(
            benchmark="predlog_cost",
            requests_per_s_logging=round(on, 1),
            requests_per_s_not_logging=round(off, 1),
            slowdown=round(slowdown, 4),
            server_cpu_us_per_request_logging=_median(cpu_us["on"]),
            server_cpu_us_per_request_not_logging=_median(cpu_us["off"]),
            every_prediction_logged=complete,
            rounds=args.rounds,
            target_slowdown=TARGET_SLOWDOWN,
            meets_target=complete and slowdown <= TARGET_SLOWDOWN,
        )


if __name__ == "__main__":
    main()
