"""A Python client for ``ringattn serve`` (the wire protocol is docs/service.md).

Runs with Debian's ``/usr/bin/python3`` and its ``python3-zmq`` (pyzmq) and
``python3-numpy`` packages; nothing else.

A request is one ZeroMQ multipart message from a DEALER socket::

    frame 0      b""                      (the REQ/REP delimiter)
    frame 1      header: a JSON object, UTF-8
    frame 2 ...  one raw array per entry of header["arrays"], in that order

Arrays travel as C-ordered little-endian bytes with no padding, described in
the header as ``{"name": ..., "dtype": "f32" | "f16" | "i64", "shape": [...]}``.
The reply has the same form; ``{"ok": false, "class": ..., "error": ...}`` is
raised here as :class:`ServiceError`.

Example::

    import numpy as np
    from ringattn_client import Client, reference_attention

    with Client("/tmp/ringattn-1000/sock") as c:
        print(c.ping())                          # {'ok': True, 'version': ..., 'ranks': 4, ...}
        k = np.random.default_rng(0).standard_normal((2, 1000, 64), dtype=np.float32)
        v = np.random.default_rng(1).standard_normal((2, 1000, 64), dtype=np.float32)
        c.create("doc", heads_kv=2, head_dim=64, k=k, v=v)
        q = np.random.default_rng(2).standard_normal((4, 3, 64), dtype=np.float32)
        o, lse = c.attend("doc", q, q_start=500, causal=True, window="100,0")
        ref_o, ref_lse = reference_attention(q, k, v, 500, causal=True, window="100,0")

A Client is not thread-safe: use one per thread (they are cheap).
"""

import json
import math
import os
import time

import numpy as np
import zmq

__all__ = [
    "Client",
    "ServiceError",
    "ProtocolError",
    "reference_attention",
    "parse_window",
    "window_text",
    "read_secret",
    "DTYPES",
]

#: Wire dtype names and the numpy types they decode to.
DTYPES = {
    "f32": np.dtype(np.float32),
    "f16": np.dtype(np.float16),
    "i64": np.dtype(np.int64),
}

#: Job states after which a job's state never changes.
FINAL_JOB_STATES = ("done", "failed", "stopped", "cancelled")


class ServiceError(Exception):
    """The service refused a request: a reply ``{"ok": false, ...}``.

    ``cls`` is the reply's ``"class"`` (``usage``, ``input``, ``busy``, ``io``
    or ``internal``), ``message`` its one-line ``"error"``, ``header`` the
    whole reply header.
    """

    def __init__(self, cls, message, header=None):
        super().__init__("%s: %s" % (cls, message))
        self.cls = cls
        self.message = message
        self.header = header if header is not None else {}


class ProtocolError(Exception):
    """A reply that does not follow the wire format (a server bug, or not a
    ringattn server at the endpoint)."""


def read_secret(path):
    """The secret for a TCP server started with ``--secret-file``: the file's
    text without a trailing newline."""
    with open(path, "r", encoding="utf-8") as f:
        return f.read().rstrip("\r\n")


def normalize_endpoint(endpoint):
    """A ZeroMQ endpoint: strings with ``://`` are kept, a plain filesystem
    path becomes ``ipc://`` + path (``~`` expanded)."""
    if not isinstance(endpoint, str) or not endpoint:
        raise ValueError("endpoint must be a non-empty string, got %r" % (endpoint,))
    if "://" in endpoint:
        return endpoint
    return "ipc://" + os.path.expanduser(endpoint)


# ---------------------------------------------------------------------------
# Windows (DESIGN.md's rule: key j is visible to the query at position p when
# p - left <= j <= p + right; causal caps right at 0).


def parse_window(window):
    """``(left, right)`` of a window, each an int or None for unbounded.

    Accepts None or ``"none"`` (both unbounded), ``"L"`` (right unbounded),
    ``"L,R"`` (either side may be ``"inf"``), an int L, or a pair (L, R)
    whose entries are ints or None.
    """
    if window is None:
        return (None, None)
    if isinstance(window, (int, np.integer)) and not isinstance(window, bool):
        return (_window_side(int(window)), None)
    if isinstance(window, (tuple, list)):
        if len(window) != 2:
            raise ValueError("a window pair must be (left, right), got %r" % (window,))
        return (_window_side(window[0]), _window_side(window[1]))
    if isinstance(window, str):
        text = window.strip()
        if text == "none":
            return (None, None)
        parts = text.split(",")
        if len(parts) == 1:
            return (_window_side(parts[0]), None)
        if len(parts) == 2:
            return (_window_side(parts[0]), _window_side(parts[1]))
    raise ValueError('window must be None, "none", "L" or "L,R", got %r' % (window,))


def _window_side(side):
    if side is None:
        return None
    if isinstance(side, str):
        side = side.strip()
        if side == "inf":
            return None
        if not side.isdigit():
            raise ValueError("a window side must be a whole number >= 0 or inf, got %r" % side)
        return int(side)
    if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 0:
        raise ValueError("a window side must be a whole number >= 0 or None, got %r" % (side,))
    return int(side)


def window_text(window):
    """The wire form of a window (``"none"``, ``"L"`` or ``"L,R"``); a string
    is passed through unchanged so the server judges it."""
    if window is None or isinstance(window, str):
        return window
    left, right = parse_window(window)
    if left is None and right is None:
        return "none"
    if right is None:
        return str(left)
    return "%s,%d" % ("inf" if left is None else str(left), right)


# ---------------------------------------------------------------------------
# The float64 reference.


def reference_attention(q, k, v, q_start, causal=False, window=None, scale=None):
    """Exact attention in float64, the service's masking rule.

    q: ``[H, n, D]``; k, v: ``[H_kv, T, D]`` with H a multiple of H_kv (query
    head h reads kv head ``h // (H // H_kv)``). Query row i is at position
    ``q_start + i``, key j at position j; key j is visible to the query at p
    when ``(not causal or j <= p)`` and ``p - left <= j <= p + right``
    (see :func:`parse_window`; causal caps right at 0). scale defaults to
    ``1 / sqrt(D)``.

    Returns ``(o, lse)``: o float64 ``[H, n, D]``, lse float64 ``[H, n]``
    (natural log of the sum of exp(scaled scores) over visible keys). A row
    that sees no key has o = 0 and lse = -inf.

    Inputs are widened exactly to float64 (pass f16 arrays, or q rounded to
    f16, to reproduce an f16 context).
    """
    q = np.asarray(q).astype(np.float64)
    k = np.asarray(k).astype(np.float64)
    v = np.asarray(v).astype(np.float64)
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise ValueError("q, k and v must be 3-D: q [H, n, D], k and v [H_kv, T, D]")
    H, n, D = q.shape
    H_kv, T, Dk = k.shape
    if v.shape != k.shape or Dk != D:
        raise ValueError("shapes disagree: q %s, k %s, v %s" % (q.shape, k.shape, v.shape))
    if H_kv == 0 or H % H_kv != 0:
        raise ValueError("H = %d is not a multiple of H_kv = %d" % (H, H_kv))
    group = H // H_kv
    if scale is None:
        scale = 1.0 / math.sqrt(D) if D > 0 else 1.0
    left, right = parse_window(window)
    if causal:
        right = 0 if right is None else min(right, 0)

    p = int(q_start) + np.arange(n, dtype=np.int64)[:, None]  # [n, 1]
    j = np.arange(T, dtype=np.int64)[None, :]  # [1, T]
    visible = np.ones((n, T), dtype=bool)
    if left is not None:
        visible &= j >= p - left
    if right is not None:
        visible &= j <= p + right
    any_visible = visible.any(axis=1)  # [n]

    o = np.zeros((H, n, D), dtype=np.float64)
    lse = np.full((H, n), -np.inf, dtype=np.float64)
    for h in range(H):
        kh = k[h // group]
        vh = v[h // group]
        s = (q[h] @ kh.T) * scale  # [n, T]
        s = np.where(visible, s, -np.inf)
        m = np.max(s, axis=1, initial=-np.inf)  # [n]
        m_safe = np.where(any_visible, m, 0.0)
        e = np.where(visible, np.exp(s - m_safe[:, None]), 0.0)
        total = e.sum(axis=1)
        rows = any_visible
        o[h, rows] = (e[rows] @ vh) / total[rows, None]
        lse[h, rows] = m_safe[rows] + np.log(total[rows])
    return o, lse


# ---------------------------------------------------------------------------
# Encoding.


def _wire_dtype(a):
    for name, dt in DTYPES.items():
        if a.dtype.kind == dt.kind and a.dtype.itemsize == dt.itemsize:
            return name
    raise TypeError(
        "arrays travel as float32 (f32), float16 (f16) or int64 (i64), got %s" % a.dtype
    )


def _as_wire(a):
    """``(dtype name, shape list, C-contiguous little-endian array)``."""
    a = np.asarray(a)
    name = _wire_dtype(a)
    a = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False)
    return name, [int(s) for s in a.shape], a


def _array_items(arrays):
    if arrays is None:
        return []
    if isinstance(arrays, dict):
        return list(arrays.items())
    items = []
    for entry in arrays:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
            raise TypeError("arrays must be a dict or a list of (name, array) pairs")
        items.append((entry[0], entry[1]))
    return items


def _json_default(x):
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError("%r (%s) cannot go in a JSON header" % (x, type(x).__name__))


def _frame_bytes(frame):
    return frame.bytes if isinstance(frame, zmq.Frame) else bytes(frame)


def _frame_buffer(frame):
    return frame.buffer if isinstance(frame, zmq.Frame) else memoryview(frame)


def _peek_header(frames):
    """The reply's header dict, or None when there is none to read."""
    frames = list(frames)
    if frames and len(_frame_buffer(frames[0])) == 0:
        frames = frames[1:]
    try:
        header = json.loads(_frame_bytes(frames[0]).decode("utf-8"))
    except (IndexError, UnicodeDecodeError, ValueError):
        return None
    return header if isinstance(header, dict) else None


def decode_reply(frames):
    """Reply frames (with or without the leading empty delimiter) into
    ``(header dict, {name: ndarray})``; raises :class:`ProtocolError` when
    they disagree with the wire format. Does not look at ``"ok"``."""
    frames = list(frames)
    if frames and len(_frame_buffer(frames[0])) == 0:
        frames = frames[1:]
    if not frames:
        raise ProtocolError("the reply has no header frame")
    try:
        header = json.loads(_frame_bytes(frames[0]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError("the reply header is not JSON: %s" % e)
    if not isinstance(header, dict):
        raise ProtocolError("the reply header is not a JSON object: %r" % (header,))
    entries = header.get("arrays", [])
    if not isinstance(entries, list):
        raise ProtocolError("the reply's 'arrays' is not a list")
    if len(entries) != len(frames) - 1:
        raise ProtocolError(
            "the reply lists %d arrays but %d array frames came" % (len(entries), len(frames) - 1)
        )
    arrays = {}
    for entry, frame in zip(entries, frames[1:]):
        try:
            name = entry["name"]
            dt = DTYPES[entry["dtype"]]
            shape = tuple(int(s) for s in entry["shape"])
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("bad 'arrays' entry in the reply: %r" % (entry,))
        buf = _frame_buffer(frame)
        want = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if len(buf) != want:
            raise ProtocolError(
                "reply array %r: its frame holds %d bytes, shape %s of %s needs %d"
                % (name, len(buf), list(shape), entry["dtype"], want)
            )
        # Copy into a native-order, writable array independent of the frame.
        a = np.frombuffer(buf, dtype=dt.newbyteorder("<")).reshape(shape)
        arrays[name] = a.astype(dt, copy=True)
    return header, arrays


# ---------------------------------------------------------------------------
# The client.


class Client:
    """One connection to a ``ringattn serve`` endpoint.

    endpoint: ``ipc:///path/sock``, ``tcp://host:port``, or a plain path to the
    Unix socket (meaning ``ipc://`` + path). secret: the server's secret (the
    text of its ``--secret-file`` without the trailing newline, see
    :func:`read_secret`), sent in every header when given. timeout_s: how long
    a request waits for its reply (None: forever).

    Every method sends one request and waits for its reply; a refused request
    raises :class:`ServiceError`, no reply in time raises ``TimeoutError``
    (and the socket is replaced, so a late reply is never taken for the next
    one). Each request carries an ``"id"`` that the reply must echo.
    """

    def __init__(self, endpoint, secret=None, timeout_s=30.0):
        self.endpoint = normalize_endpoint(endpoint)
        if isinstance(secret, bytes):
            secret = secret.decode("utf-8")
        self.secret = secret
        self.timeout_s = timeout_s
        self._context = zmq.Context.instance()
        self._socket = None
        self._next_id = 1
        self._connect()

    # -- the socket ---------------------------------------------------------

    def _connect(self):
        s = self._context.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self.endpoint)
        self._socket = s

    def _reset(self):
        """Drops the socket (and whatever reply may still come to it) and
        connects a new one."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        self._connect()

    def close(self):
        """Closes the socket; the Client is unusable afterwards."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    @property
    def closed(self):
        return self._socket is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        return "Client(%r%s)" % (self.endpoint, ", closed" if self.closed else "")

    # -- requests -----------------------------------------------------------

    def _exchange(self, frames, what, expect_id=None, timeout_s=None):
        """Sends [b"", *frames] and returns the reply frames (delimiter
        stripped by decode_reply later). Replies whose "id" differs from
        expect_id are discarded. Any failure while waiting (timeout,
        KeyboardInterrupt) replaces the socket."""
        if self._socket is None:
            raise ValueError("the Client is closed")
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        s = self._socket
        done = False
        try:
            if not self._poll(s, zmq.POLLOUT, deadline):
                raise TimeoutError(self._timeout_text(what, timeout_s, "could not send"))
            s.send_multipart([b""] + list(frames), copy=False)
            while True:
                if not self._poll(s, zmq.POLLIN, deadline):
                    raise TimeoutError(self._timeout_text(what, timeout_s, "no reply"))
                reply = s.recv_multipart(copy=False)
                if expect_id is not None and not self._id_matches(reply, expect_id):
                    continue  # a reply to an earlier request: not ours
                done = True
                return reply
        finally:
            if not done:
                self._reset()

    @staticmethod
    def _poll(s, event, deadline):
        if deadline is None:
            return bool(s.poll(None, event))
        remaining_ms = max(0, int(math.ceil((deadline - time.monotonic()) * 1000)))
        return bool(s.poll(remaining_ms, event))

    def _timeout_text(self, what, timeout_s, problem):
        return "%s from %s within %.3g s to %s (is `ringattn serve` running there?)" % (
            problem,
            self.endpoint,
            timeout_s,
            what,
        )

    @staticmethod
    def _id_matches(reply, expect_id):
        # A reply that cannot be decoded, or carries no id (the server could
        # not read ours), is taken as the answer; decode_reply judges it.
        header = _peek_header(reply)
        return header is None or "id" not in header or header["id"] == expect_id

    def request_raw(self, frames, timeout_s=None):
        """Sends ``[b"", *frames]`` exactly as given (bytes-like frames: a
        header frame, array frames) and returns the decoded reply
        ``(header, arrays)``, raising :class:`ServiceError` on ``ok: false``.
        For tests of malformed requests; nothing is checked or added (no id,
        no secret). A str frame is sent as its UTF-8 bytes."""
        frames = [f.encode("utf-8") if isinstance(f, str) else f for f in frames]
        reply = self._exchange(frames, "a raw request", timeout_s=timeout_s)
        return self._finish(reply)

    def request(self, header, arrays=None, timeout_s=None):
        """Sends one request and returns the reply as ``(header dict,
        {name: numpy array})``.

        header: a dict with at least ``"op"``; ``"arrays"`` is written from
        arrays, ``"secret"`` added when the Client has one, ``"id"`` added
        unless given. arrays: a dict ``{name: array}`` or a list of
        ``(name, array)`` pairs, in frame order; each float32, float16 or
        int64, sent C-contiguous little-endian.

        Raises :class:`ServiceError` on ``{"ok": false}``, ``TimeoutError``
        when no reply comes within timeout_s (default: the Client's),
        :class:`ProtocolError` on a malformed reply.
        """
        if not isinstance(header, dict):
            raise TypeError("header must be a dict")
        h = dict(header)
        if self.secret is not None and "secret" not in h:
            h["secret"] = self.secret
        if "id" not in h:
            h["id"] = self._next_id
            self._next_id += 1
        entries = []
        frames = []
        for name, a in _array_items(arrays):
            dtype, shape, wire = _as_wire(a)
            entries.append({"name": name, "dtype": dtype, "shape": shape})
            frames.append(wire if wire.size else b"")
        if entries:
            h["arrays"] = entries
        else:
            h.pop("arrays", None)
        text = json.dumps(h, default=_json_default, allow_nan=False, separators=(",", ":"))
        what = "op %r" % (h.get("op"),)
        reply = self._exchange(
            [text.encode("utf-8")] + frames, what, expect_id=h["id"], timeout_s=timeout_s
        )
        return self._finish(reply)

    @staticmethod
    def _finish(reply):
        header, arrays = decode_reply(reply)
        ok = header.get("ok")
        if ok is True:
            return header, arrays
        if ok is False:
            raise ServiceError(
                header.get("class", "unknown"), header.get("error", "(no message)"), header
            )
        raise ProtocolError("the reply header has no boolean 'ok': %r" % (header,))

    def _call(self, op, arrays=None, **fields):
        """A request of op with the fields that are not None."""
        header = {"op": op}
        header.update({k: v for k, v in fields.items() if v is not None})
        return self.request(header, arrays)

    # -- operations ---------------------------------------------------------

    def ping(self):
        """``{"ok": True, "version": ..., "ranks": ...}``."""
        header, _ = self._call("ping")
        return header

    def create(self, context, heads_kv, head_dim, dtype="f32", k=None, v=None):
        """Creates a context; with k and v (``[H_kv, T, D]`` or
        ``[1, H_kv, T, D]``, converted to dtype ``"f32"`` or ``"f16"``) it
        holds their T tokens, without them it starts empty. Returns its
        token count."""
        if (k is None) != (v is None):
            raise ValueError("create: give both k and v, or neither")
        arrays = None
        if k is not None:
            np_dtype = DTYPES.get(dtype)
            if np_dtype is None or dtype == "i64":
                raise ValueError('create: dtype must be "f32" or "f16", got %r' % (dtype,))
            arrays = [("k", np.asarray(k, dtype=np_dtype)), ("v", np.asarray(v, dtype=np_dtype))]
        header, _ = self._call(
            "create", arrays, context=context, heads_kv=heads_kv, head_dim=head_dim, dtype=dtype
        )
        return header.get("tokens")

    def load(self, context, path, k="k", v="v", batch=0):
        """Creates a context from datasets k and v (batch entry ``batch``) of
        an HDF5 file inside the server's data directory. Returns its token
        count."""
        header, _ = self._call("load", context=context, path=path, k=k, v=v, batch=batch)
        return header.get("tokens")

    def append(self, context, k, v):
        """Appends keys and values ``[H_kv, t, D]`` to a context; float32 and
        float16 arrays go as they are (they must match the context's dtype),
        any other type as float32. Returns the token count after."""
        header, _ = self._call("append", [("k", _float_array(k)), ("v", _float_array(v))],
                               context=context)
        return header.get("tokens")

    def drop(self, context):
        """Drops a context (its memory is freed on every rank)."""
        self._call("drop", context=context)

    def list(self):
        """The resident contexts: ``[{"name", "tokens", "heads_kv",
        "head_dim", "dtype", "bytes_per_rank"}]``."""
        header, _ = self._call("list")
        return header.get("contexts", [])

    def contexts(self):
        """:meth:`list` as a dict by name."""
        return {c.get("name"): c for c in self.list()}

    def status(self):
        """The server's status header: ``uptime_s``, ``ranks``, ``queue``
        ``{depth, limit}``, ``contexts``, ``requests``, ``batches``, ``jobs``."""
        header, _ = self._call("status")
        return header

    def attend(self, context, q, q_start=None, causal=False, window=None, lse=True):
        """Attention of q ``[H, n, D]`` (float16 sent as f16, anything else as
        f32; the server rounds it to the context's dtype) over a context.

        q_start: the position of q's first row (None: the context's token
        count, right after its last token). causal: mask keys after each
        query. window: None (the server's default, unbounded), ``"none"``,
        ``"L"``, ``"L,R"``, an int L or a pair (L, R) (see
        :func:`parse_window`).

        Returns ``(o, lse)``: o float32 ``[H, n, D]``, lse float32 ``[H, n]``
        (natural log, -inf for a row that sees no key); only o when lse is
        False (the server sends lse either way).
        """
        if q_start is not None:
            q_start = int(q_start)
        header, arrays = self._call(
            "attend",
            [("q", _float_array(q))],
            context=context,
            q_start=q_start,
            causal=bool(causal),
            window=window_text(window),
        )
        for name in ("o", "lse"):
            if name not in arrays:
                raise ProtocolError("the attend reply has no array %r" % name)
        return (arrays["o"], arrays["lse"]) if lse else arrays["o"]

    def job(self, config_text):
        """Submits a run: config_text is a TOML run configuration (the text of
        a configs/*.toml file). Returns the job id."""
        header, _ = self._call("job", config=config_text)
        if "job" not in header:
            raise ProtocolError("the job reply has no 'job' id: %r" % (header,))
        return int(header["job"])

    def job_status(self, job_id):
        """``{"job", "state", "error" (when failed), "report" (when done)}``;
        state is queued, running, done, failed or stopped."""
        header, _ = self._call("job_status", job=int(job_id))
        return header

    def wait_job(self, job_id, timeout_s, poll_s=0.2):
        """Polls job_status until the job is done, failed or stopped and
        returns that status; TimeoutError after timeout_s (None: forever)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            st = self.job_status(job_id)
            if st.get("state") in FINAL_JOB_STATES:
                return st
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    "job %d still %s after %.3g s" % (int(job_id), st.get("state"), timeout_s)
                )
            pause = poll_s
            if deadline is not None:
                pause = max(0.0, min(poll_s, deadline - time.monotonic()))
            time.sleep(pause)


def _float_array(a):
    a = np.asarray(a)
    if a.dtype == np.float16 or a.dtype == np.float32:
        return a
    return a.astype(np.float32)
