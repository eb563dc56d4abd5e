"""A pure-Python MQTT 3.1.1 broker (amqtt) for running NAILA without installing mosquitto.

A convenience for ``naila serve --embedded-broker``, not a production broker: amqtt speaks MQTT 3.1.1 only
(clients must connect with protocol 3.1.1) and must run in its own thread and event loop, because a blocking
call in its loop would freeze every client. Install it with ``pip install 'naila-graph[broker]'``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from amqtt.broker import Broker

logger = logging.getLogger(__name__)

INSTALL_HINT = "install it with: pip install 'naila-graph[broker]'"


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not start or stop (port in use, amqtt missing, timeout)."""


class EmbeddedBroker:
    """amqtt listening on ``host:port`` (TCP, anonymous access), run in a background thread with its own loop.

    Use as a context manager (sync or async) or call ``start()``/``stop()``; both may be called again.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *, startup_timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        """Start the broker and block until it accepts connections (no-op when it already runs).

        Raises ``EmbeddedBrokerError`` when amqtt is not installed, the port is taken or startup times out.
        """
        with self._lock:
            if self.is_running:
                return self
            broker_class = _import_broker_class()
            self._ready.clear()
            self._startup_error = None
            self._thread = threading.Thread(
                target=self._run, args=(broker_class,), name=f"naila-embedded-broker-{self.port}", daemon=True
            )
            self._thread.start()
            if not self._ready.wait(self.startup_timeout):
                self._request_stop()
                self._thread.join(timeout=5.0)
                if not self._thread.is_alive():
                    self._thread = None
                raise EmbeddedBrokerError(
                    f"embedded MQTT broker did not start on {self.host}:{self.port} within {self.startup_timeout:g} s"
                )
            if self._startup_error is not None:
                self._thread.join(timeout=5.0)
                self._thread = None
                raise _startup_failure(self.host, self.port, self._startup_error) from self._startup_error
            logger.info("embedded MQTT broker (amqtt, MQTT 3.1.1) listening on %s:%d", self.host, self.port)
            return self

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect all clients, close the listener and join the broker thread (no-op when stopped)."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            self._request_stop()
            thread.join(timeout)
            if thread.is_alive():
                raise EmbeddedBrokerError(
                    f"embedded MQTT broker on {self.host}:{self.port} did not stop in {timeout:g} s"
                )
            self._thread = None
            logger.info("embedded MQTT broker on %s:%d stopped", self.host, self.port)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        return f"EmbeddedBroker({self.host}:{self.port}, {'running' if self.is_running else 'stopped'})"

    def _request_stop(self) -> None:
        loop, stop_requested = self._loop, self._stop_requested
        if loop is not None and stop_requested is not None:
            try:
                loop.call_soon_threadsafe(stop_requested.set)
            except RuntimeError:  # the loop has already closed: the thread is ending on its own
                pass

    def _run(self, broker_class: type[Broker]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(broker_class))
        except BaseException as exc:  # keep a crash from being lost in the thread
            logger.exception("embedded MQTT broker on %s:%d failed", self.host, self.port)
            if not self._ready.is_set():
                self._startup_error = exc
        finally:
            try:
                _cancel_leftover_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                self._loop = None
                self._stop_requested = None
                loop.close()
                self._ready.set()

    async def _serve(self, broker_class: type[Broker]) -> None:
        self._stop_requested = asyncio.Event()
        broker = broker_class(self._config())
        try:
            await broker.start()
        except Exception as exc:
            self._startup_error = exc
            return
        finally:
            self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            await asyncio.wait_for(broker.shutdown(), timeout=8.0)

    def _config(self) -> dict[str, Any]:
        # Only the anonymous-auth plugin: no $SYS publisher, no packet logging, nothing written to disk.
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }


def _import_broker_class() -> type[Broker]:
    try:
        from amqtt.broker import Broker
    except ImportError as exc:
        raise EmbeddedBrokerError(f"the embedded MQTT broker needs the 'amqtt' package; {INSTALL_HINT}") from exc
    return Broker


def _startup_failure(host: str, port: int, error: BaseException) -> EmbeddedBrokerError:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            return EmbeddedBrokerError(
                f"cannot start the embedded MQTT broker: {host}:{port} is already in use (another broker, "
                "e.g. a system mosquitto, may be listening there); choose another port with --broker-port "
                "or connect to that broker instead of using --embedded-broker"
            )
        if isinstance(cause, OSError) and cause.errno == errno.EACCES:
            return EmbeddedBrokerError(
                f"cannot start the embedded MQTT broker: no permission to listen on {host}:{port}; "
                "choose a port above 1023 with --broker-port"
            )
        cause = cause.__cause__ or cause.__context__
    return EmbeddedBrokerError(f"cannot start the embedded MQTT broker on {host}:{port}: {error}")


def _cancel_leftover_tasks(loop: asyncio.AbstractEventLoop) -> None:
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
