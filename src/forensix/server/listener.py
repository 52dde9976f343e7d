"""``forensix server``: the log host. mTLS listener, verification on receipt, durable write, ack.

One thread per connection; a malformed or unauthentic message closes that connection
with a logged reason and never affects the others. Frames are checked (MAC under their
own epoch's key, epoch bound to the sealing time, epochs never going back, the chain),
written to evidence and fsynced, and then acknowledged; the ingest thread appends them to
the store (coalesced), and frames in evidence but not yet in the store are ingested at start.

Hostile or broken agents: a frame that fails its checks is refused for good (``R``, the
connection goes on; the agent keeps it aside and ships the next); a connection is refused
(``E``, then closed; the agent keeps its frames and retries) when its certificate is
revoked, its host is over a per-host limit (connections, streams, evidence bytes) or the
disk is nearly full. A revocation made while a host is connected closes its connections
within a fraction of a second (the CRL is polled). Every refusal is logged, counted in the
metrics and written into the evidence (``guard.RefusalLog``).
"""

from __future__ import annotations

import json
import logging
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from forensix.agent import wire
from forensix.agent.frame import RAW_TABLE, Frame, FrameError, decode_body, parse_frame
from forensix.agent.sink import Sink
from forensix.errors import ForensixError
from forensix.metrics import lost_by_class
from forensix.model.timefmt import format_ns
from forensix.pki.authority import Authority, PKIError
from forensix.pki.sealkey import KeySchedule, SealState, write_atomic
from forensix.pki.tls import RevocationList, peer_identity, server_context
from forensix.server.checks import null_problem, seal_problem
from forensix.server.evidence import (
    EvidenceStore,
    StreamLog,
    append_problem,
)
from forensix.server.guard import Broadcast, HostLimits, RefusalLog, evidence_bytes, free_bytes
from forensix.server.ingest import Ingestor
from forensix.server.metrics import ServerMetrics
from forensix.server.quarantine import is_transient
from forensix.server.rawdecode import RawDecoders
from forensix.server.startup import replay_and_load, set_aside
from forensix.store.base import Writer

__all__ = ["HostLimits", "LogServer", "Refused", "ServerConfig"]

log = logging.getLogger("forensix.server")
_STREAM_RE = re.compile(r"^[0-9a-f]{32}$")


class Refused(ForensixError):
    """A connection the log host does not accept (the reason is logged and sent, then it closes).

    ``kind`` names the rule broken, for the metrics and the evidence: revoked, identity,
    connections, streams, quota, disk, clock, refusals, protocol.
    """

    def __init__(self, message: str, hint: str | None = None, kind: str = "protocol") -> None:
        super().__init__(message, hint)
        self.kind = kind
        self.frame: Frame | None = None  # the frame on its way when it happened (kept by the agent)


class FrameRefused(ForensixError):
    """One frame the log host will never store (bad MAC, chain, epoch, rows; or evidence it
    could not write, ``kind`` evidence): the agent keeps it aside and moves on."""

    def __init__(self, message: str, hint: str | None = None, kind: str = "frame") -> None:
        super().__init__(message, hint)
        self.kind = kind


@dataclass
class ServerConfig:
    pki: Path
    listen: tuple[str, int]
    evidence: Path
    silence_s: float = 60.0
    checkpoint_s: float = 1.0
    handshake_timeout_s: float = 10.0
    limits: HostLimits = field(default_factory=HostLimits)
    max_connections: int = 1024  # all connections, authenticated or not (each is a thread)
    crl_poll_s: float = 0.2  # how soon a revocation closes open connections
    store_attempts: int = 3  # a frame the store refuses this often is quarantined (0: retried for ever)
    reingest: bool = False  # at start, try the quarantined frames again (after their cause is fixed)
    # seconds between checkpoints of a raw stream's decoder (a restart decodes the frames after it again)
    decoder_checkpoint_s: float = 300.0


@dataclass(eq=False)
class _Session:
    """One authenticated connection."""

    host: str
    serial: int
    peer: str
    stream: str = ""
    cut: str | None = None  # set by another thread: close this connection, saying why
    cut_kind: str = ""
    refused_frames: int = 0
    enrollment: str = ""  # serial of the certificate the seal key was issued with ("" before serials)


@dataclass
class _HostState:
    info: dict[str, Any] = field(default_factory=dict)
    last_seen: int = 0
    alerted: bool = False
    connections: int = 0
    clean_stop: bool = False
    last_frame_ns: int = 0
    evidence_bytes: int | None = None  # counted on first contact, then kept up to date
    sessions: set[_Session] = field(default_factory=set)


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
        self.ingest = Ingestor(store, live=live, attempts=config.store_attempts)
        self.raw = RawDecoders()  # one decoder per (host, stream) of raw-record agents (server/rawdecode.py)
        self.ingest.on_quarantine = self._quarantine
        self.hosts: dict[str, _HostState] = {}
        self.hosts_lock = threading.Lock()
        self._schedules: dict[tuple[str, bytes], KeySchedule] = {}  # (host, key_0) -> schedule
        self._newest: dict[str, tuple[Any, str]] = {}  # host -> (seal file stamp, newest enrollment)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.sock: socket.socket | None = None
        self.refusals: list[str] = []
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._open = 0  # accepted connections not yet ended (handshakes included)
        self.limits = config.limits
        self.refusal_log = RefusalLog(config.evidence, self.ingest.batch, key=self.checkpoint_key)
        self.metrics = ServerMetrics(self)
        self.ingest.on_append = self.metrics.appended
        self.ingest.on_error = self.metrics.store_error
        self._free = (0.0, 0)  # (checked at, free bytes): statvfs at most once a second
        self._wake = Broadcast()  # ends every connection's wait: a revocation, a stop
        self._refused_seqs: dict[tuple[str, str], set[int]] = {}  # (host, stream) -> frames refused here
        self._append_fails: dict[tuple[str, str, int], int] = {}  # (host, stream, seq) -> failed evidence writes
        self._checkpoint_errors: dict[tuple[str, str], str] = {}  # logged once per stream until it recovers
        self._held: dict[tuple[str, str], int] = {}  # (host, stream) -> frames quarantined
        self._replay_and_load()

    # -- start-up ------------------------------------------------------------------
    def _replay_and_load(self) -> None:
        """Frames durably written but not yet in the store (a crash between the two) go in now
        (``server.startup``)."""
        replay_and_load(self)

    def _quarantine(self, table: str, mark: object, seq: int, err: BaseException, attempts: int) -> None:
        """A frame the store refuses for good (``server.startup.set_aside``)."""
        set_aside(self, table, mark, seq, err, attempts)

    def not_ingested(self) -> dict[str, int]:
        """Frames quarantined per host (the metrics' gauge)."""
        with self.hosts_lock:
            out: dict[str, int] = {}
            for (host, _), n in self._held.items():
                if n:
                    out[host] = out.get(host, 0) + n
            return out

    def _enrollment(self, host: str, serial: int) -> SealState:
        """The epoch-0 seal key of the enrollment the connection's certificate belongs to.

        ``pki issue`` writes each seal key together with the serial of the certificate it
        issued with it; a re-issue makes a new enrollment. The certificate is the authority:
        a connection is checked only with its own certificate's seal key, and a certificate of
        an enrollment that a re-issue replaced may no longer write (whoever holds the old
        certificate and seal key, e.g. stolen from the host, is refused). Keys made before
        enrollments named their certificate go with any certificate of the host.
        """
        path = self.pki.seal_path(host)
        if not path.exists():
            raise Refused(f"{host} has no seal key on the log host ({path})", "enroll it: forensix pki issue",
                          kind="identity")
        state = SealState.load(path)
        mine = f"{serial:x}"
        if state.serial and state.serial != mine:
            if self.pki.seal_path(host, mine).exists():
                raise Refused(f"certificate of {host} (serial {mine}) belongs to an enrollment that a re-issue "
                              f"replaced (now certificate serial {state.serial}, seal key from "
                              f"{format_ns(state.t0_ns)}): only the newest enrollment may write",
                              "install the new bundle from forensix pki issue on the host and restart its "
                              "agent; if nobody re-enrolled it, the old key may be in other hands",
                              kind="identity")
            raise Refused(f"certificate of {host} (serial {mine}) has no seal key on the log host",
                          "re-enroll the host: forensix pki issue HOST", kind="identity")
        return state

    def _still_enrolled(self, sess: _Session) -> None:
        """A re-issue while the host is connected ends the old enrollment's connection too.

        Costs a stat per message: the seal file is parsed again only when it changed.
        """
        if not sess.enrollment:
            return
        path = self.pki.seal_path(sess.host)
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._newest.get(sess.host)
        if cached is None or cached[0] != stamp:
            try:
                cached = self._newest[sess.host] = (stamp, SealState.load(path).serial)
            except ForensixError:
                return
        if cached[1] and cached[1] != sess.enrollment:
            raise Refused(f"{sess.host} was re-enrolled (certificate serial {cached[1]}): this connection's "
                          f"certificate (serial {sess.enrollment}) may no longer write",
                          "install the new bundle on the host and restart its agent", kind="identity")

    def _schedule(self, host: str, state: SealState) -> KeySchedule:
        """The verifier's key schedule of one enrollment (read again at each connection)."""
        copy = self.config.evidence / host / "seal.json"
        if not copy.exists():  # the host's first enrollment seen: streams from before per-stream keys
            copy.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(copy, state.to_json())
        # No batch can honestly be sealed in an epoch that has not begun yet (5 min of skew).
        max_epoch = state.epoch_of(time.time_ns() + 300 * 10**9)
        ks = self._schedules.get((host, state.key))
        if ks is None:
            ks = self._schedules[(host, state.key)] = KeySchedule(state, max_epoch)
        ks.max_epoch = max_epoch
        return ks

    def _bind_stream(self, host: str, stream: str, state: SealState) -> None:
        """A stream is one chain under one enrollment: its seal key is kept beside it.

        A re-enrolled agent starts a new stream; a stream sealed under another enrollment's
        key (an old spool with a new certificate, or the other way round) is refused.
        """
        sdir = self.config.evidence / host / stream
        own = sdir / "seal.json"
        if own.exists():
            bound = SealState.load(own)
        elif sdir.is_dir() and any(sdir.glob("seg-*.fxe")):  # a stream from before per-stream keys
            bound = SealState.load(self.config.evidence / host / "seal.json")
        else:
            sdir.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(own, state.to_json())
            return
        if bound.key != state.key:
            raise Refused(f"stream {stream} of {host} was sealed under the enrollment of certificate "
                          f"{bound.serial or '(unnamed)'} (seal key from {format_ns(bound.t0_ns)}), not under "
                          f"this certificate's ({state.serial or '(unnamed)'}): a new enrollment starts a new "
                          "stream", "restart the agent with the new bundle: it starts a new stream",
                          kind="identity")

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
        crl = threading.Thread(target=self._watch_crl, name="fx-crl", daemon=True)
        crl.start()
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    break
                raise
            with self._conns_lock:
                full = self._open >= self.config.max_connections
                if not full:
                    self._open += 1
            if full:  # before the handshake: a flood of connections costs no thread each
                self._refuse(f"{addr[0]}:{addr[1]}", f"{self._open} connections open (limit "
                             f"{self.config.max_connections}): closed before the TLS handshake")
                self.metrics.refused.labels("", "connections").inc()
                conn.close()
                continue
            t = threading.Thread(target=self._connection, args=(conn, addr), daemon=True,
                                 name=f"fx-conn-{addr[0]}:{addr[1]}")
            t.start()
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        mon.join(timeout=2)
        crl.join(timeout=2)

    def stop(self) -> None:
        self._stop.set()
        self._wake.fire()
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
        self.raw.checkpoint_all(self.evidence.streams(), self.config.decoder_checkpoint_s)  # none decoded again
        self.evidence.close()
        self._wake.close()

    def _refuse(self, peer: str, reason: str) -> None:
        log.warning("refused %s: %s", peer, reason)
        self.refusals.append(f"{peer}: {reason}")

    def _connection(self, raw: socket.socket, addr: Any) -> None:
        try:
            self._handshake_and_serve(raw, f"{addr[0]}:{addr[1]}")
        finally:
            with self._conns_lock:
                self._open -= 1

    def _handshake_and_serve(self, raw: socket.socket, peer: str) -> None:
        raw.settimeout(self.config.handshake_timeout_s)
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self._refuse(peer, f"TLS handshake failed: {e}")
            raw.close()
            return
        with self._conns_lock:
            self._conns.add(conn)
        sess: _Session | None = None
        try:
            host, serial = peer_identity(conn)
            sess = _Session(host, serial, peer)
            self._session(conn, sess)
        except Refused as e:
            if e.kind == "superseded":  # the same agent reconnected: not a refusal
                log.info("connection %s of %s: %s", peer, sess.host if sess else "?", e.message)
            else:
                self._refused(sess, peer, e.kind, e.message, frame=e.frame)
            self._send_error(conn, e.message)
        except FrameError as e:
            self._refused(sess, peer, "protocol", f"malformed message: {e.message}")
            self._send_error(conn, f"malformed message: {e.message}")
        except (OSError, wire.WireClosed, ssl.SSLError) as e:
            log.info("connection %s ended: %s", peer, e)
        except Exception as e:  # one bad connection never takes the server down
            log.exception("connection %s failed", peer)
            self._send_error(conn, f"internal error: {type(e).__name__}")
        finally:
            if sess is not None:
                self._leave(sess)
            with self._conns_lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def _refused(self, sess: _Session | None, peer: str, kind: str, reason: str, *,
                 frame: Frame | None = None) -> None:
        """Log, count, and (for a known host) write the refusal into the evidence and the store."""
        self._refuse(peer, reason)
        host = sess.host if sess is not None else ""
        self.metrics.refused.labels(host, kind).inc()
        if sess is not None:
            with self.hosts_lock:
                st = self.hosts.get(host)
                info = dict(st.info) if st is not None else {}
            self.refusal_log.record(host, kind, reason, peer, stream=sess.stream, info=info, frame=frame)

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

    def _session(self, conn: ssl.SSLSocket, sess: _Session) -> None:
        host, serial, peer = sess.host, sess.serial, sess.peer
        if self.crl.is_revoked(serial):
            raise Refused(f"certificate of {host} (serial {serial:x}) is revoked", kind="revoked")
        self._admit(sess)
        enrollment = self._enrollment(host, serial)
        sess.enrollment = enrollment.serial
        keys = self._schedule(host, enrollment)
        kind, body = wire.recv(conn)
        if kind != b"H":
            raise FrameError(f"expected hello, got message type {kind!r}")
        hello = wire.recv_json(body)
        if hello.get("host") != host:
            raise Refused(f"certificate is for {host!r} but the agent says it is {hello.get('host')!r}",
                          kind="identity")
        stream = str(hello.get("stream", ""))
        if not _STREAM_RE.match(stream):
            raise FrameError(f"bad stream id {stream!r}")
        self._admit_stream(sess, stream)
        self._check_room(host, 0)
        try:
            self._bind_stream(host, stream, enrollment)
            slog = self.evidence.stream(host, stream)
        except OSError as e:  # the agent keeps its frames and comes back (E): logged, counted, said why
            cause, fix = self._evidence_error(host, self.config.evidence / host / stream, e)
            raise Refused(f"the log host cannot open the evidence of {host} stream {stream}: {cause}; on the "
                          f"log host: {fix}", fix, kind="evidence") from None
        self._agent_seen(host, hello)
        with slog.lock:
            wire.send(conn, b"W", {"next_seq": slog.last_seq + 1})
        log.info("%s connected from %s (stream %s, next seq %d)", host, peer, stream, slog.last_seq + 1)
        idle = max(60.0, self.config.silence_s * 2)
        conn.settimeout(idle)
        while not self._stop.is_set():
            if not self._readable(conn, sess, idle):
                continue
            kind, body = wire.recv(conn)
            self._still_enrolled(sess)
            self._touch(host)
            if kind == b"F":
                self._receive_frame(conn, sess, hello, slog, keys, body)
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
    def _receive_frame(self, conn: ssl.SSLSocket, sess: _Session, hello: dict[str, Any], slog: StreamLog,
                       keys: KeySchedule, body: bytes) -> None:
        host = sess.host
        self.metrics.frames.labels(host).inc()
        frame = parse_frame(body)  # not even a frame: the stream cannot be trusted, close it
        try:
            seq = self._frame(sess, hello, slog, keys, frame)
        except Refused as e:  # not for good (quota, disk, clock, revoked): the agent sends it again
            e.frame = frame
            raise
        except FrameRefused as e:
            sess.refused_frames += 1
            seqs = self._refused_seqs.setdefault((host, slog.stream), set())
            if len(seqs) < 10_000:  # a bound for a host that sends nothing but forgeries
                seqs.add(frame.seq)
            self._refuse(sess.peer, e.message)
            self.metrics.refused.labels(host, e.kind).inc()
            with self.hosts_lock:
                info = dict(self.hosts[host].info) if host in self.hosts else {}
            # Each frame refused for good gets its own signed line (verify bridges the chain
            # over it), as long as the host's quota has room for the line.
            self.refusal_log.record(host, e.kind, e.message, sess.peer, stream=sess.stream, info=info,
                                    frame=frame, final=True, each=self._room_for(host, 1024))
            wire.send(conn, b"R", {"seq": frame.seq, "reason": e.message})
            limit = self.limits.refused_frames
            if limit and sess.refused_frames >= limit:
                raise Refused(f"{sess.refused_frames} frames of {host} refused on one connection "
                              f"(limit {limit}): closing it", kind="refusals") from None
            return
        wire.send(conn, b"A", seq.to_bytes(8, "big"))
        self.metrics.acked.labels(host).inc()

    def _frame(self, sess: _Session, hello: dict[str, Any], slog: StreamLog, keys: KeySchedule,
               frame: Frame) -> int:
        host = sess.host
        if frame.host != host or frame.stream.hex() != slog.stream:
            raise FrameRefused(f"frame for {frame.host}/{frame.stream.hex()} on the connection of "
                               f"{host}/{slog.stream}")
        with slog.lock:
            if frame.seq <= slog.last_seq:
                return frame.seq  # a resend of what we have: acknowledge again, keep once
            if sess.cut is not None:  # revoked while this frame was on its way: not stored
                raise Refused(sess.cut, kind=sess.cut_kind)
            if keys.mac_key(frame.epoch) is None:  # may be a clock ahead: refuse now, keep it for later
                raise Refused(f"{host} seq {frame.seq}: sealed in epoch {frame.epoch}, which has not begun "
                              "on the log host (more than 5 min ahead)",
                              "check the clocks of the host and the log host; the frame stays in the "
                              "agent's spool and is sent again", kind="clock")
            problem = seal_problem(frame, keys)
            if problem:
                raise FrameRefused(f"{host} seq {frame.seq}: {problem}")
            if frame.epoch < slog.last_epoch or frame.seal_ns < slog.last_seal_ns:
                raise FrameRefused(f"{host} seq {frame.seq}: sealed in epoch {frame.epoch} at {frame.seal_ns} "
                                   f"ns, before the previous frame (epoch {slog.last_epoch}, "
                                   f"{slog.last_seal_ns} ns)")
            expected = slog.last_seq + 1
            if frame.seq == expected and slog.last_hash is not None and frame.prev != slog.last_hash:
                raise FrameRefused(f"{host} seq {frame.seq}: does not chain to seq {slog.last_seq}")
            try:
                data = decode_body(frame)
                self.ingest.check_origin(host, data)
                nulls = null_problem(frame.table, data)
                if nulls:
                    raise FrameError(nulls)
            except FrameError as e:
                raise FrameRefused(f"{host} seq {frame.seq}: {e.message}") from None
            self._check_room(host, len(frame.raw))
            try:
                slog.append(frame)  # durable (fsync) before anything else
            except OSError as e:
                self._append_failed(host, slog, frame, e)
            if self._append_fails:
                self._append_fails.pop((host, slog.stream, frame.seq), None)
            self._stored(host, len(frame.raw))
            if frame.seq > expected:
                # frames this log host refused itself are not "missing": the gap says so
                refused = self._refused_seqs.get((host, slog.stream), set())
                why = "refused" if all(q in refused for q in range(expected, frame.seq)) else "sequence-gap"
                log.warning("%s: frames %d..%d %s", host, expected, frame.seq - 1,
                            "were refused" if why == "refused" else "never arrived")
                self.ingest.gap(host, hello, slog.last_seal_ns, frame.seal_ns, frame.seq - expected,
                                why, "batches")
            if frame.table == "gaps":
                self.metrics.lost_events(host, lost_by_class(data))
            if frame.table == RAW_TABLE:  # decoded here, in sequence order, with the stream's decoder
                dec = self.raw.get(host, slog.stream)
                self.ingest.submit(frame.table, dec.feed(data, frame.seq), slog, frame.seq)
                dec.maybe_checkpoint(self.config.decoder_checkpoint_s, slog.dir, slog.ingested)
            else:
                self.ingest.submit(frame.table, data, slog, frame.seq)
            return frame.seq

    def _evidence_error(self, host: str, directory: Path, err: OSError) -> tuple[str, str]:
        name, cause, fix = append_problem(err, directory)
        self.metrics.evidence_errors.labels(host, name).inc()
        return cause, fix

    def _append_failed(self, host: str, slog: StreamLog, frame: Frame, err: OSError) -> None:
        """A frame the evidence would not take (a full disk, EIO, a read-only or unwritable
        directory): never retried for ever. The agent is told why with ``E`` and sends it again
        (the problem may be fixed meanwhile) up to ``limits.evidence_attempts`` times; then the
        frame is refused for good (``R``) and the agent keeps it in its spool's refused/.
        Other hosts and streams are served meanwhile; each failure is logged and counted."""
        cause, fix = self._evidence_error(host, slog.dir, err)
        key = (host, slog.stream, frame.seq)
        if len(self._append_fails) >= 10_000:  # frames whose agent never came back
            self._append_fails.clear()
        n = self._append_fails[key] = self._append_fails.get(key, 0) + 1
        limit = self.limits.evidence_attempts
        what = f"cannot write frame {frame.seq} of {host} into the evidence ({slog.dir}): {cause}"
        if limit and n >= limit:
            del self._append_fails[key]
            log.error("%s; refused for good after %d attempt(s): the agent keeps it in its spool's refused/. "
                      "Fix: %s", what, n, fix)
            raise FrameRefused(f"{what}; refused for good after {n} attempt(s); on the log host: {fix}", fix,
                               kind="evidence")
        log.error("%s; attempt %d of %s, the agent keeps the frame and sends it again. Fix: %s", what, n,
                  limit or "unlimited", fix)
        raise Refused(f"{what} (attempt {n} of {limit or 'unlimited'}); on the log host: {fix}", fix,
                      kind="evidence")

    # -- limits, revocation ------------------------------------------------------------
    def host_states(self) -> Iterator[tuple[str, _HostState]]:
        with self.hosts_lock:
            items = list(self.hosts.items())
        yield from items

    def _admit(self, sess: _Session) -> None:
        """Count the connection for its host (before its hello: at most the cap of those too)."""
        with self.hosts_lock:
            st = self.hosts.setdefault(sess.host, _HostState())
            limit = self.limits.connections
            waiting = sum(1 for x in st.sessions if not x.stream)
            if limit and waiting >= limit:
                raise Refused(f"{sess.host} already has {waiting} connections open without a hello "
                              f"(limit {limit})", kind="connections")
            st.sessions.add(sess)
            if st.evidence_bytes is None:
                st.evidence_bytes = evidence_bytes(self.config.evidence / sess.host)

    def _admit_stream(self, sess: _Session, stream: str) -> None:
        """One connection per stream (a new one replaces the old: it is a reconnect), and the caps."""
        self._check_streams(sess.host, stream)
        limit = self.limits.connections
        with self.hosts_lock:
            st = self.hosts[sess.host]
            same = [x for x in st.sessions if x is not sess and x.stream == stream and x.cut is None]
            open_ = sum(1 for x in st.sessions if x is not sess and x.stream and x.cut is None) - len(same)
            if limit and open_ >= limit:
                raise Refused(f"{sess.host} already has {open_} connections open (limit {limit})",
                              "one agent needs one; raise --host-max-connections on the log host if more "
                              "agents share this certificate", kind="connections")
            for other in same:  # the agent reconnected before the old connection timed out here
                other.cut, other.cut_kind = f"superseded by a new connection from {sess.peer}", "superseded"
            sess.stream = stream
        if same:
            self._wake.fire()

    def _check_streams(self, host: str, stream: str) -> None:
        known = {s.stream for s in self.evidence.streams() if s.host == host}
        if stream in known or not self.limits.streams:
            return
        on_disk = self.config.evidence / host
        if on_disk.is_dir():
            known |= {p.name for p in on_disk.iterdir() if p.is_dir()}
        if stream not in known and len(known) >= self.limits.streams:
            raise Refused(f"{host} already has {len(known)} streams on the log host (limit "
                          f"{self.limits.streams}); a new spool directory makes a new stream",
                          "keep the agent's --spool directory across restarts; raise --host-max-streams "
                          "on the log host if the host really needs more", kind="streams")

    def _room_for(self, host: str, length: int) -> bool:
        try:
            self._check_room(host, length)
        except Refused:
            return False
        return True

    def _check_room(self, host: str, length: int) -> None:
        """The host's evidence quota and the disk's floor, before a frame is written."""
        with self.hosts_lock:
            used = (self.hosts[host].evidence_bytes or 0) + self.refusal_log.host_bytes.get(host, 0)
        quota = self.limits.evidence_bytes
        if quota and used + length > quota:
            raise Refused(f"evidence of {host} on the log host is {used} bytes, at its limit of {quota}",
                          "archive or move the host's old evidence, or raise --host-max-bytes; the "
                          "agent keeps its frames meanwhile", kind="quota")
        floor = self.limits.min_free_bytes
        if floor:
            checked, free = self._free
            if time.monotonic() - checked > 1.0:
                free = free_bytes(self.config.evidence)
                self._free = (time.monotonic(), free)
            if free - length < floor:
                raise Refused(f"the log host's evidence disk has {free} bytes free (floor {floor})",
                              "free space on the log host; agents keep their frames meanwhile", kind="disk")

    def _stored(self, host: str, length: int) -> None:
        with self.hosts_lock:
            st = self.hosts[host]
            st.evidence_bytes = (st.evidence_bytes or 0) + length
            st.last_frame_ns = time.time_ns()
        self.metrics.bytes.labels(host).inc(length)

    def _leave(self, sess: _Session) -> None:
        with self.hosts_lock:
            st = self.hosts.get(sess.host)
            if st is not None:
                st.sessions.discard(sess)

    def _readable(self, conn: ssl.SSLSocket, sess: _Session, idle_s: float) -> bool:
        """Wait for the next message, or for the log host to end this connection.

        Only this thread reads and writes the connection (an SSL object is not for two
        threads at once): the CRL watcher marks the session (``cut``) and wakes the waits
        (``Broadcast``); this thread then sends the reason and closes the connection.
        """
        deadline = time.monotonic() + idle_s
        while True:
            wake = self._wake.fd()  # before the checks: a fire() after them still ends the wait
            if sess.cut is not None:
                raise Refused(sess.cut, kind=sess.cut_kind)
            if self._stop.is_set():
                return False
            if conn.pending():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"nothing from {sess.host} for {idle_s:g} s")
            fd = conn.fileno()
            if fd in select.select([fd, wake], [], [], left)[0]:
                return True

    def _watch_crl(self) -> None:
        seen = -1
        while not self._stop.wait(self.config.crl_poll_s):
            try:
                revoked = self.crl.serials()
            except PKIError as e:  # a damaged CRL: keep serving, say so (new connections fail closed)
                if seen != -2:
                    log.error("cannot read the CRL: %s", e.message)
                seen = -2
                continue
            if self.crl.version == seen:
                continue
            seen = self.crl.version
            with self.hosts_lock:
                victims = [x for st in self.hosts.values() for x in st.sessions
                           if x.serial in revoked and x.cut is None]
                for x in victims:
                    x.cut, x.cut_kind = (f"certificate of {x.host} (serial {x.serial:x}) was revoked: "
                                         "connection closed by the log host"), "revoked"
            if victims:
                self._wake.fire()
            for x in victims:
                log.warning("%s revoked: closing its connection from %s", x.host, x.peer)
                self.metrics.cutoffs.labels(x.host).inc()

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
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, json.dumps(st.info).encode())
            except OSError as e:  # what the agent said of itself (read at the next start): not evidence
                cause, fix = self._evidence_error(host, path.parent, e)
                log.error("cannot write %s: %s. Fix: %s", path, cause, fix)
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
                err = self.ingest.error
                how = ("the store is away: retried until it is back" if is_transient(err) else
                       f"the store refuses the rows: retried, quarantined after {self.config.store_attempts or 'no'} "
                       "attempts")
                log.error("store append failed (kept in evidence; %s; the ingested mark waits for it): %s", how, err)
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
                err = s.mark_error
            except OSError as e:
                err = e
            self._evidence_trouble(s, err)

    def _evidence_trouble(self, s: StreamLog, err: OSError | None) -> None:
        """A checkpoint or an ingested mark a stream's directory would not take: both are tried
        again (at the next tick, with the next mark); said and counted once per cause, not per try."""
        key = (s.host, s.stream)
        if err is None:
            if self._checkpoint_errors:
                self._checkpoint_errors.pop(key, None)
            return
        name, cause, fix = append_problem(err, s.dir)
        if self._checkpoint_errors.get(key) != cause:
            self._checkpoint_errors[key] = cause
            self.metrics.evidence_errors.labels(s.host, name).inc()
            log.error("cannot write the checkpoint or ingested mark of %s/%s: %s (tried again). Fix: %s",
                      s.host, s.stream, cause, fix)
