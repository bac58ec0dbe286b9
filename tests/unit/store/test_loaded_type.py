"""Type checks on values must not trip over a module another thread is still importing."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from treadle.store.materializers import loaded_type


def test_a_module_still_being_imported_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"treadle_slow_import_{time.monotonic_ns()}"
    (tmp_path / f"{name}.py").write_text("import time\ntime.sleep(0.5)\n\nclass Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importer = threading.Thread(target=__import__, args=(name,))
    importer.start()
    try:
        deadline = time.monotonic() + 5
        while name not in sys.modules and time.monotonic() < deadline:
            time.sleep(0.001)
        assert name in sys.modules
        assert not hasattr(sys.modules[name], "Thing")  # half imported right now
        thing = loaded_type(name, "Thing")
        assert thing is not None and thing.__name__ == "Thing"
    finally:
        importer.join()
        sys.modules.pop(name, None)


def test_a_module_nobody_imported_is_not_imported() -> None:
    name = "treadle_never_imported_module"
    assert loaded_type(name, "Thing") is None
    assert name not in sys.modules
