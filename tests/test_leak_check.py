"""The leak check itself: it must catch what it claims to catch."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = (Path(__file__).parent / "conftest.py").read_text(encoding="utf-8")


def test_a_forgotten_task_and_thread_fail_their_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The conftest loads the repository's fixture plugins (tests.*): the subprocess needs the
    # repository on its path.
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        """
        import asyncio, threading

        def test_forgets_a_task():
            async def main():
                asyncio.get_running_loop().create_task(asyncio.sleep(10), name="forgotten")
                await asyncio.sleep(0)
            asyncio.run(main())

        def test_forgets_a_thread():
            stop = threading.Event()
            threading.Thread(target=stop.wait, args=(5,), name="stray", daemon=True).start()

        def test_clean():
            async def main():
                t = asyncio.get_running_loop().create_task(asyncio.sleep(10))
                t.cancel()
            asyncio.run(main())
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.re_match_lines([r".*asyncio tasks left pending: \['forgotten'\]"])
    result.stdout.re_match_lines([r".*threads left running: \['stray'\]"])
