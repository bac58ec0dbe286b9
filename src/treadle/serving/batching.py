"""Adaptive micro-batching: concurrent requests for the same model join one predict call.

A request never waits for company: the batch is cut at the end of the event-loop turn
in which its first request arrived, so an idle server answers at once and a busy one
gathers every request that came in meanwhile (up to `max_batch` rows). `max_wait_ms`
adds an optional wait for more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class MicroBatcher:
    def __init__(
        self,
        predict: Callable[[Any], Any],
        *,
        max_batch: int = 256,
        max_wait_ms: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.predict = predict
        self.on_batch = on_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._rows = 0
        self._scheduled = False
        self.batches = 0
        self.last_batch_rows = 0

    async def submit(self, X: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((X, future))
        self._rows += len(X)
        if self._rows >= self.max_batch:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            if self.max_wait > 0:
                loop.call_later(self.max_wait, self._flush)
            else:
                loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending, self._rows = self._pending, [], 0
        if not batch:
            return
        import numpy as np

        try:
            if len(batch) == 1:
                results = [self.predict(batch[0][0])]
            else:
                first = batch[0][0]
                if isinstance(first, np.ndarray):
                    joined = np.concatenate([x for x, _ in batch])
                else:  # DataFrames
                    import pandas as pd

                    joined = pd.concat([x for x, _ in batch], ignore_index=True)
                out = np.asarray(self.predict(joined))
                results, start = [], 0
                for x, _ in batch:
                    results.append(out[start : start + len(x)])
                    start += len(x)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        self.last_batch_rows = sum(len(x) for x, _ in batch)
        if self.on_batch is not None:
            self.on_batch(self.last_batch_rows)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
