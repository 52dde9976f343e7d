"""``forensix server``: the log host. mTLS listener, verification on receipt, durable write, ack.

One thread per connection; a malformed or unauthentic message closes that connection
with a logged reason and never affects the others. Frames are checked (MAC under their
own epoch's key, epoch bound to the sealing time, epochs never going back, the chain),
written to evidence and fsynced, and then acknowledged; the ingest thread appends them to
the store (coalesced), and frames in evidence but not yet in the store are ingested at start.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from forensix.agent import wire
from forensix.agent.frame import Frame, FrameError, decode_body, parse_frame
from forensix.agent.sink import Sink
from forensix.errors import ForensixError
from forensix.pki.authority import Authority, PKIError
from forensix.pki.sealkey import KeySchedule, SealState, write_atomic
from forensix.pki.tls import RevocationList, peer_identity, server_context
from forensix.server.checks import seal_problem
from forensix.server.evidence import EvidenceStore, StreamLog, read_frame, walk_segment
from forensix.server.ingest import Ingestor, frame_key
from forensix.store.base import Writer

__all__ = ["LogServer", "Refused", "ServerConfig"]

log = logging.getLogger("forensix.server")
_STREAM_RE = re.compile(r"^[0-9a-f]{32}$")


class Refused(ForensixError):
    """A connection or message the log host does not accept (the reason is logged)."""


@dataclass
class ServerConfig:
    pki: Path
    listen: tuple[str, int]
    evidence: Path
    silence_s: float = 60.0
    checkpoint_s: float = 1.0
    handshake_timeout_s: float = 10.0


@dataclass
class _HostState:
    info: dict[str, Any] = field(default_factory=dict)
    last_seen: int = 0
    alerted: bool = False
    connections: int = 0
    clean_stop: bool = False


class LogServer:
    def __init__(self, config: ServerConfig, store: Writer, live: Sink | None = None) -> None:
        self.config = config
        self.pki = Authority(config.pki)
        self.context = server_context(self.pki.ca_cert_path, self.pki.server_cert_path,
                                      self.pki.server_key_path)
        self.crl = RevocationList(self.pki.crl_path, self.pki.ca_cert_path)
        key = serialization.load_pem_private_key(self.pki.checkpoint_key_path.read_bytes(), None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise PKIError("checkpoint.key is not an Ed25519 key", "re-create the PKI")
        self.checkpoint_key = key
        self.evidence = EvidenceStore(config.evidence)
        write_atomic(config.evidence / "checkpoint.pub", self.pki.checkpoint_pub_path.read_bytes(), 0o644)
        self.ingest = Ingestor(store, live=live)
        self.hosts: dict[str, _HostState] = {}
        self.hosts_lock = threading.Lock()
        self._schedules: dict[str, KeySchedule] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.sock: socket.socket | None = None
        self.refusals: list[str] = []
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._replay_and_load()

    # -- start-up ------------------------------------------------------------------
    def _replay_and_load(self) -> None:
        """Frames durably written but not yet in the store (a crash between the two) go in now."""
        now = time.time_ns()
        for s in self.evidence.open_all():
            done = s.ingested()
            for seg in s.segments():
                for off, seq, length in walk_segment(seg):
                    if seq <= done:
                        continue
                    try:
                        fr = read_frame(seg, off, length)
                        self.ingest.batch(fr.table, decode_body(fr), key=frame_key(s, seq))
                    except FrameError as e:
                        log.error("cannot re-ingest %s offset %d: %s", seg, off, e.message)
                    done = seq
            if done != s.ingested():
                s.set_ingested(done)
            s.checkpointed = s.last_seq  # what was there at start is covered by earlier checkpoints
        for hdir in self.config.evidence.iterdir():
            info_path = hdir / "agent.json"
            if info_path.exists():
                info = json.loads(info_path.read_text())
                self.hosts[hdir.name] = _HostState(info=info, last_seen=now)

    def _schedule(self, host: str) -> KeySchedule:
        path = self.pki.seal_path(host)
        if not path.exists():
            raise Refused(f"{host} has no seal key on the log host ({path})", "enroll it: forensix pki issue")
        state = SealState.load(path)
        copy = self.config.evidence / host / "seal.json"
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(copy, state.to_json())
        # No batch can honestly be sealed in an epoch that has not begun yet (5 min of skew).
        max_epoch = state.epoch_of(time.time_ns() + 300 * 10**9)
        ks = self._schedules.get(host)
        if ks is None:
            ks = self._schedules[host] = KeySchedule(state, max_epoch)
        ks.max_epoch = max_epoch
        return ks

    # -- serving ---------------------------------------------------------------------
    def bind(self) -> tuple[str, int]:
        host, port = self.config.listen
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(64)
        s.settimeout(0.5)
        self.sock = s
        addr = s.getsockname()
        return addr[0], addr[1]

    def serve_forever(self) -> None:
        if self.sock is None:
            self.bind()
        assert self.sock is not None
        mon = threading.Thread(target=self._monitor, name="fx-monitor", daemon=True)
        mon.start()
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    break
                raise
            t = threading.Thread(target=self._connection, args=(conn, addr), daemon=True,
                                 name=f"fx-conn-{addr[0]}:{addr[1]}")
            t.start()
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        mon.join(timeout=2)

    def stop(self) -> None:
        self._stop.set()
        if self.sock is not None:
            self.sock.close()
        with self._conns_lock:
            for c in self._conns:  # wake connection threads blocked in recv
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in list(self._threads):
            t.join(timeout=2)
        self._checkpoint_all()
        self.ingest.close()
        self.evidence.close()

    def _refuse(self, peer: str, reason: str) -> None:
        log.warning("refused %s: %s", peer, reason)
        self.refusals.append(f"{peer}: {reason}")

    def _connection(self, raw: socket.socket, addr: Any) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        raw.settimeout(self.config.handshake_timeout_s)
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self._refuse(peer, f"TLS handshake failed: {e}")
            raw.close()
            return
        with self._conns_lock:
            self._conns.add(conn)
        try:
            self._session(conn, peer)
        except Refused as e:
            self._refuse(peer, e.message)
            self._send_error(conn, e.message)
        except FrameError as e:
            self._refuse(peer, f"malformed message: {e.message}")
            self._send_error(conn, f"malformed message: {e.message}")
        except (OSError, wire.WireClosed, ssl.SSLError) as e:
            log.info("connection %s ended: %s", peer, e)
        except Exception as e:  # one bad connection never takes the server down
            log.exception("connection %s failed", peer)
            self._send_error(conn, f"internal error: {type(e).__name__}")
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    @staticmethod
    def _send_error(conn: ssl.SSLSocket, reason: str) -> None:
        try:
            wire.send(conn, b"E", reason.encode())
            # Read what the peer already sent, so closing does not reset the connection
            # and destroy the reason before the peer reads it.
            conn.settimeout(1.0)
            end = time.monotonic() + 1.0
            while time.monotonic() < end and conn.recv(65536):
                pass
        except (OSError, ssl.SSLError):
            pass

    def _session(self, conn: ssl.SSLSocket, peer: str) -> None:
        host, serial = peer_identity(conn)
        if self.crl.is_revoked(serial):
            raise Refused(f"certificate of {host} (serial {serial:x}) is revoked")
        keys = self._schedule(host)
        kind, body = wire.recv(conn)
        if kind != b"H":
            raise FrameError(f"expected hello, got message type {kind!r}")
        hello = wire.recv_json(body)
        if hello.get("host") != host:
            raise Refused(f"certificate is for {host!r} but the agent says it is {hello.get('host')!r}")
        stream = str(hello.get("stream", ""))
        if not _STREAM_RE.match(stream):
            raise FrameError(f"bad stream id {stream!r}")
        slog = self.evidence.stream(host, stream)
        self._agent_seen(host, hello)
        with slog.lock:
            wire.send(conn, b"W", {"next_seq": slog.last_seq + 1})
        log.info("%s connected from %s (stream %s, next seq %d)", host, peer, stream, slog.last_seq + 1)
        conn.settimeout(max(60.0, self.config.silence_s * 2))
        while not self._stop.is_set():
            kind, body = wire.recv(conn)
            self._touch(host)
            if kind == b"F":
                seq = self._frame(host, hello, slog, keys, parse_frame(body))
                wire.send(conn, b"A", seq.to_bytes(8, "big"))
            elif kind == b"K":
                beat = wire.recv_json(body)
                with slog.lock:
                    last = slog.last_seq
                if last >= 0:
                    wire.send(conn, b"A", last.to_bytes(8, "big"))
                log.debug("heartbeat from %s: %s", host, beat)
            elif kind == b"B":
                with self.hosts_lock:
                    self.hosts[host].clean_stop = True
                self.ingest.agent_event(host, hello, "stop", time.time_ns(),
                                        f"forensix agent on {host} stopped (pid {hello.get('pid')})")
                log.info("%s stopped cleanly", host)
                return
            else:
                raise FrameError(f"unexpected message type {kind!r} from an agent")

    # -- frames ---------------------------------------------------------------------
    def _frame(self, host: str, hello: dict[str, Any], slog: StreamLog, keys: KeySchedule,
               frame: Frame) -> int:
        if frame.host != host or frame.stream.hex() != slog.stream:
            raise Refused(f"frame for {frame.host}/{frame.stream.hex()} on the connection of "
                          f"{host}/{slog.stream}")
        with slog.lock:
            if frame.seq <= slog.last_seq:
                return frame.seq  # a resend of what we have: acknowledge again, keep once
            problem = seal_problem(frame, keys)
            if problem:
                raise Refused(f"{host} seq {frame.seq}: {problem}")
            if frame.epoch < slog.last_epoch or frame.seal_ns < slog.last_seal_ns:
                raise Refused(f"{host} seq {frame.seq}: sealed in epoch {frame.epoch} at {frame.seal_ns} ns, "
                              f"before the previous frame (epoch {slog.last_epoch}, {slog.last_seal_ns} ns)")
            expected = slog.last_seq + 1
            if frame.seq == expected and slog.last_hash is not None and frame.prev != slog.last_hash:
                raise Refused(f"{host} seq {frame.seq}: does not chain to seq {slog.last_seq}")
            data = decode_body(frame)
            self.ingest.check_origin(host, data)
            slog.append(frame)  # durable (fsync) before anything else
            if frame.seq > expected:
                log.warning("%s: frames %d..%d never arrived", host, expected, frame.seq - 1)
                self.ingest.gap(host, hello, slog.last_seal_ns, frame.seal_ns, frame.seq - expected,
                                "sequence-gap", "batches")
            self.ingest.submit(frame.table, data, slog, frame.seq)
            return frame.seq

    # -- hosts, heartbeats, checkpoints ---------------------------------------------
    def _agent_seen(self, host: str, hello: dict[str, Any]) -> None:
        now = time.time_ns()
        with self.hosts_lock:
            st = self.hosts.setdefault(host, _HostState())
            started = hello.get("agent_start_ns")
            new_start = started != st.info.get("agent_start_ns")
            st.info = {k: hello.get(k) for k in ("host_id", "boot_id", "agent_start_ns", "pid", "version")}
            st.last_seen, st.alerted, st.clean_stop = now, False, False
            st.connections += 1
        if new_start:
            path = self.config.evidence / host / "agent.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(st.info).encode())
            ts = started if isinstance(started, int) else now
            self.ingest.agent_event(host, hello, "start", ts,
                                    f"forensix agent on {host} started (pid {hello.get('pid')})")

    def _touch(self, host: str) -> None:
        with self.hosts_lock:
            st = self.hosts.get(host)
            if st is not None:
                st.last_seen, st.alerted = time.time_ns(), False

    def _monitor(self) -> None:
        while not self._stop.wait(min(1.0, self.config.checkpoint_s)):
            self._checkpoint_all()
            if self.ingest.error is not None:
                log.error("store ingest failed (evidence is kept; it is re-ingested at start): %s",
                          self.ingest.error)
                self.ingest.error = None
            now = time.time_ns()
            with self.hosts_lock:
                silent = [(h, st) for h, st in self.hosts.items()
                          if not st.alerted and now - st.last_seen > self.config.silence_s * 1e9]
                for _, st in silent:
                    st.alerted = True
            for h, st in silent:
                log.warning("%s silent for more than %g s", h, self.config.silence_s)
                self.ingest.silent_alert(h, st.info, st.last_seen, self.config.silence_s, st.clean_stop)

    def _checkpoint_all(self) -> None:
        for s in self.evidence.streams():
            try:
                s.checkpoint(self.checkpoint_key)
            except OSError as e:
                log.error("checkpoint of %s/%s failed: %s", s.host, s.stream, e)
