"""The shipping thread: sends unacknowledged spooled frames to the log host over mTLS.

It never holds up the recorder: the recorder only appends to the spool. This thread
connects, says hello (the server answers with the next sequence it wants), sends
frames with a bounded window, reads acks on a second thread, sends heartbeats, and on
any error closes the connection and reconnects with back-off, resending what is unacked.

A frame the log host refuses for good (``R``: its MAC, chain or rows do not hold) is never
resent: the spool keeps it aside with the reason (``refused/``) and shipping goes on with
the next frames. A refusal of the connection (``E``: revoked, over a per-host limit, the
log host's disk full) keeps every frame and retries with back-off.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from forensix.agent import wire
from forensix.agent.frame import FrameError
from forensix.agent.spool import Spool

__all__ = ["Shipper", "ShipperStats"]

log = logging.getLogger("forensix.agent")

WINDOW = 64  # frames in flight


@dataclass
class ShipperStats:
    connected: bool = False
    connects: int = 0
    sent: int = 0
    acked: int = -1
    refused: int = 0
    last_ack_ns: int = 0
    last_error: str = ""
    last_refusal: str = ""
    errors: list[str] = field(default_factory=list)


class Shipper(threading.Thread):
    def __init__(
        self,
        spool: Spool,
        address: tuple[str, int],
        context: ssl.SSLContext,
        server_name: str,
        hello: dict[str, Any],
        *,
        heartbeat_s: float = 5.0,
        on_tick: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(name="forensix-shipper", daemon=True)
        self.spool = spool
        self.address = address
        self.context = context
        self.server_name = server_name
        self.hello = hello
        self.heartbeat_s = heartbeat_s
        self.on_tick = on_tick or (dict)
        self.stats = ShipperStats()
        self._halt = threading.Event()
        self._draining = threading.Event()
        self._sock: ssl.SSLSocket | None = None
        self._bye_sent = threading.Event()
        self._refused_now = False  # this session ended with the log host's E

    # -- control -----------------------------------------------------------------
    def stop(self, drain_s: float = 5.0) -> None:
        """Try to deliver what is spooled for up to ``drain_s``, say bye, and stop."""
        deadline = time.monotonic() + drain_s
        self._draining.set()
        with self.spool.cond:
            while self.spool.unacked() and time.monotonic() < deadline:
                self.spool.cond.wait(0.1)
        self._halt.set()
        with self.spool.cond:
            self.spool.cond.notify_all()
        self.join(timeout=max(1.0, deadline - time.monotonic() + 1.0))

    # -- loop --------------------------------------------------------------------
    def run(self) -> None:
        backoff = 0.2
        while not self._halt.is_set():
            self._refused_now = False
            try:
                self._session()
                backoff = 0.2
            except (OSError, ssl.SSLError, wire.WireClosed, FrameError) as e:
                self._error(e)
            finally:
                self._close()
            if self._refused_now:
                backoff = max(backoff, 1.0)  # the log host said no: do not hammer it
            if self._halt.wait(backoff):
                break
            backoff = min(backoff * 2, 5.0)

    def _error(self, e: BaseException) -> None:
        if self._refused_now:
            return  # the log host's reason is kept and was logged, not the close that followed
        msg = f"{type(e).__name__}: {e}"
        if msg != self.stats.last_error:
            log.warning("connection to %s:%d: %s", *self.address, msg)
        self.stats.last_error = msg

    def _close(self) -> None:
        self.stats.connected = False
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        with self.spool.cond:
            self.spool.cond.notify_all()

    def _connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection(self.address, timeout=10)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock = self.context.wrap_socket(raw, server_hostname=self.server_name)
        except BaseException:
            raw.close()
            raise
        return sock

    def _session(self) -> None:
        sock = self._connect()
        self._sock = sock
        wire.send(sock, b"H", dict(self.hello, stream=self.spool.stream.hex()))
        kind, body = wire.recv(sock)
        if kind == b"E":
            self._refused_connection(body)
            raise ConnectionRefusedError(f"refused by the log host: {body.decode(errors='replace')}")
        if kind != b"W":
            raise FrameError(f"expected welcome, got {kind!r}")
        welcome = wire.recv_json(body)
        self.spool.ack(int(welcome.get("next_seq", 0)) - 1)
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.last_error = ""
        log.info("connected to %s:%d, server has frames below %s", *self.address, welcome.get("next_seq"))
        sock.settimeout(self.heartbeat_s * 3 + 10)
        reader = threading.Thread(target=self._read_acks, args=(sock,), daemon=True)
        reader.start()
        try:
            self._send_loop(sock, reader)
        finally:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            reader.join(timeout=2)

    def _read_acks(self, sock: ssl.SSLSocket) -> None:
        try:
            while True:
                kind, body = wire.recv(sock)
                if kind == b"A" and len(body) == 8:
                    seq = int.from_bytes(body, "big")
                    self.spool.ack(seq)
                    self.stats.acked = max(self.stats.acked, seq)
                    self.stats.last_ack_ns = time.time_ns()
                elif kind == b"R":
                    self._refused_frame(wire.recv_json(body))
                elif kind == b"E":
                    self._refused_connection(body)
                    break
        except (OSError, wire.WireClosed, FrameError, ValueError):
            pass
        finally:
            self.stats.connected = False
            with self.spool.cond:
                self.spool.cond.notify_all()

    def _refused_connection(self, body: bytes) -> None:
        reason = body.decode(errors="replace")
        self._refused_now = True
        if "refused: " + reason != self.stats.last_refusal:  # once per reason, not per retry
            log.warning("log host %s:%d refused the connection: %s (frames stay in the spool)",
                        *self.address, reason)
        self.stats.last_error = self.stats.last_refusal = "refused: " + reason

    def _refused_frame(self, msg: dict[str, Any]) -> None:
        seq, reason = msg.get("seq"), str(msg.get("reason", ""))
        if not isinstance(seq, int):
            raise FrameError("refusal without a sequence number")
        server = "{}:{}".format(*self.address)
        if self.spool.refuse(seq, reason, server):
            self.stats.refused += 1
            self.stats.last_refusal = f"frame {seq} refused: {reason}"
            log.error("log host refused frame %d for good: %s; kept in %s/refused, not resent",
                      seq, reason, self.spool.dir)

    def _send_loop(self, sock: ssl.SSLSocket, reader: threading.Thread) -> None:
        sent_upto = self.spool.acked
        next_beat = 0.0
        while reader.is_alive():
            if self._halt.is_set():
                wire.send(sock, b"B", {"ts": time.time_ns()})
                self._bye_sent.set()
                time.sleep(0.05)
                return
            now = time.monotonic()
            if now >= next_beat:
                wire.send(sock, b"K", dict(self.on_tick(), ts=time.time_ns(), unacked=self.spool.unacked()))
                next_beat = now + self.heartbeat_s
            sent_upto = max(sent_upto, self.spool.acked)
            room = WINDOW - (sent_upto - self.spool.acked)
            batch = self.spool.pending(sent_upto, room) if room > 0 else []
            for e in batch:
                wire.send(sock, b"F", self.spool.read(e))
                sent_upto = e.seq
                self.stats.sent += 1
            self.spool.save_acked()
            if not batch:
                with self.spool.cond:
                    room = WINDOW - (sent_upto - self.spool.acked)
                    if room <= 0 or not self.spool.pending(sent_upto, 1):
                        self.spool.cond.wait(min(0.5, max(0.01, next_beat - time.monotonic())))
