"""Running the simulator: in the foreground until a signal (`run`), or on a background
thread with its own event loop for tests and the demo (`SimulatorServer`,
`running_simulator`)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import threading
from collections.abc import Iterator

from aiohttp import web

from sms_pipeline.simulator.server import (
    SEND_PATH,
    STATE_KEY,
    STATUS_PATH,
    SimulatorConfig,
    create_app,
)
from sms_pipeline.simulator.state import SimState

log = logging.getLogger(__name__)


async def _start(
    config: SimulatorConfig, *, handle_signals: bool, state: SimState | None = None
) -> tuple[web.AppRunner, str, SimState]:
    app = create_app(config, state)
    # Access logging costs about a third of the throughput; the simulator keeps counters.
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=handle_signals,
        shutdown_timeout=config.shutdown_timeout,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024)
    await site.start()
    host, port = runner.addresses[0][:2]
    if ":" in host:
        host = f"[{host}]"
    return runner, f"http://{host}:{port}", app[STATE_KEY]


def run(config: SimulatorConfig) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM). Prints the listening URL on stdout."""

    async def serve() -> None:
        runner, base_url, _ = await _start(config, handle_signals=False)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Exit 0 on `docker stop` / Ctrl-C after closing connections properly.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)
        print(f"gateway simulator listening on {base_url}", flush=True)
        log.info("gateway simulator listening on %s", base_url)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
        log.info("gateway simulator stopped")

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


class SimulatorServer:
    """The simulator on a background thread with its own event loop (tests, demo)."""

    def __init__(self, config: SimulatorConfig, state: SimState | None = None) -> None:
        """`state`: the store of an earlier run to carry on with (a restart keeps what the
        gateway had accepted)."""
        self.config = config
        self.base_url = ""
        self._state: SimState | None = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def state(self) -> SimState:
        """The live store (read it from tests; it is mutated on the server thread)."""
        assert self._state is not None, "simulator not started"
        return self._state

    @property
    def send_url(self) -> str:
        return self.base_url + SEND_PATH

    @property
    def status_url(self) -> str:
        return self.base_url + STATUS_PATH

    def start(self, timeout: float = 10.0) -> str:
        """Start serving; returns the base URL (``http://127.0.0.1:PORT``)."""
        self._thread = threading.Thread(target=self._serve, name="gateway-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("gateway simulator did not start in time")
        if self._error is not None:
            raise RuntimeError("gateway simulator failed to start") from self._error
        return self.base_url

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._runner, self.base_url, self._state = loop.run_until_complete(
                _start(self.config, handle_signals=False, state=self._state)
            )
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

    def stop(self) -> None:
        """Stop serving; in-flight slow answers are cut after ``shutdown_timeout``."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self.config.shutdown_timeout + 10)

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_simulator(
    config: SimulatorConfig | None = None, *, port: int | None = 0
) -> Iterator[str]:
    """Run the simulator on a background thread for the block; yields its base URL.

    It listens on a free port by default (``port=0``); ``port=None`` keeps
    ``config.port``. The send URL is ``base_url + SEND_PATH`` (``/ip2sms/``), the status
    URL ``base_url + STATUS_PATH`` (``/ip2sms-request/``).
    """
    config = config or SimulatorConfig()
    if port is not None:
        config = dataclasses.replace(config, port=port)
    server = SimulatorServer(config)
    base_url = server.start()
    try:
        yield base_url
    finally:
        server.stop()


__all__ = ["SimulatorServer", "run", "running_simulator"]
