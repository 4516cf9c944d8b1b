#!/usr/bin/python3
"""The Python client (clients/python/ringattn_client.py) against a running
``ringattn serve`` (docs/service.md).

    /usr/bin/python3 tests/serve/test_python_client.py --endpoint ENDPOINT

The C++ test driver starts the server and passes its endpoint; this script
only talks to it. It prints one line per check (PASS or FAIL with what
differed) and exits 1 when any check failed, 2 when it could not start.
It leaves no context behind (py_ctx and py_ctx_f16 are dropped at the end,
and dropped first should an earlier run have left them).
"""

import argparse
import json
import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "clients", "python"))

import numpy as np  # noqa: E402

from ringattn_client import (  # noqa: E402
    Client,
    ServiceError,
    read_secret,
    reference_attention,
)

SEED = 20240611
TOL = 2e-5  # max|o - ref| / max|ref|, and |lse - ref| / max(1, |ref|)

H_KV, T, D = 2, 1000, 64  # the f32 context
H, N = 4, 3  # queries
APPEND = 37
T16 = 300  # the f16 context

CTX = "py_ctx"
CTX16 = "py_ctx_f16"


class Failure(AssertionError):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


# ---------------------------------------------------------------------------
# Comparing with the float64 reference.


def compare(o, lse, ref_o, ref_lse, what):
    """o, lse from the service against the reference: shapes, dtypes, and the
    tolerances; -inf must match -inf, nothing may be NaN."""
    check(isinstance(o, np.ndarray) and o.dtype == np.float32,
          "%s: o should be a float32 array, got %r" % (what, getattr(o, "dtype", type(o))))
    check(isinstance(lse, np.ndarray) and lse.dtype == np.float32,
          "%s: lse should be a float32 array, got %r" % (what, getattr(lse, "dtype", type(lse))))
    check(o.shape == ref_o.shape, "%s: o has shape %s, expected %s" % (what, o.shape, ref_o.shape))
    check(lse.shape == ref_lse.shape,
          "%s: lse has shape %s, expected %s" % (what, lse.shape, ref_lse.shape))
    check(not np.isnan(o).any(), "%s: o holds NaN" % what)
    check(not np.isnan(lse).any(), "%s: lse holds NaN" % what)
    check(np.isfinite(o).all(), "%s: o holds Inf" % what)

    o64 = o.astype(np.float64)
    err = np.abs(o64 - ref_o)
    scale = float(np.max(np.abs(ref_o))) if ref_o.size else 0.0
    max_err = float(err.max()) if err.size else 0.0
    if scale > 0:
        rel = max_err / scale
        at = np.unravel_index(int(np.argmax(err)), err.shape)
        check(rel <= TOL,
              "%s: max|o - ref| / max|ref| = %.3g > %.0e (at %s: %r vs ref %r)"
              % (what, rel, TOL, tuple(int(i) for i in at), float(o64[at]), float(ref_o[at])))
    else:  # every row sees no key: o must be 0
        check(max_err <= TOL, "%s: the reference o is 0 everywhere, max|o| = %.3g" % (what, max_err))

    lse64 = lse.astype(np.float64)
    ref_inf = np.isneginf(ref_lse)
    got_inf = np.isneginf(lse64)
    if not np.array_equal(ref_inf, got_inf):
        bad = np.argwhere(ref_inf != got_inf)[0]
        at = tuple(int(i) for i in bad)
        raise Failure("%s: lse[%s] = %r, the reference has %r (-inf must match -inf)"
                      % (what, at, float(lse64[at]), float(ref_lse[at])))
    check(np.isfinite(lse64[~got_inf]).all(), "%s: lse holds +inf" % what)
    fin = ~ref_inf
    if fin.any():
        lerr = np.abs(lse64[fin] - ref_lse[fin]) / np.maximum(1.0, np.abs(ref_lse[fin]))
        worst = int(np.argmax(lerr))
        check(float(lerr[worst]) <= TOL,
              "%s: |lse - ref| / max(1, |ref|) = %.3g > %.0e (%r vs ref %r)"
              % (what, float(lerr[worst]), TOL, float(lse64[fin][worst]),
                 float(ref_lse[fin][worst])))
    # Rows that see no key have o = 0 (README: "o = 0, lse = -inf").
    if ref_inf.any():
        check(np.all(o64[ref_inf] == 0.0), "%s: a row that sees no key has o != 0" % what)


# ---------------------------------------------------------------------------
# The run.


class Run:
    def __init__(self, client):
        self.c = client
        self.results = []  # (name, ok)
        self.rng = np.random.default_rng(SEED)
        self.ranks = None
        self.k = self.v = None  # the f32 context's keys and values, as sent
        self.k16 = self.v16 = None
        self.dead = False  # the server stopped answering

    def run(self, name, fn):
        if self.dead:
            self._fail(name, "not run: the server stopped answering")
            return
        try:
            fn()
        except Failure as e:
            self._fail(name, str(e))
            self.check_alive()
        except ServiceError as e:
            self._fail(name, "the service refused a request: class %r, error %r" % (e.cls, e.message))
        except TimeoutError as e:
            self._fail(name, "timeout: %s" % e)
            self.check_alive()
        except Exception as e:  # a bug here or a malformed reply: still one line
            self._fail(name, "%s: %s" % (type(e).__name__, e))
            traceback.print_exc(file=sys.stderr)
        else:
            self.results.append((name, True))
            print("PASS %s" % name, flush=True)

    def check_alive(self):
        """After a timeout or a failed check: does the server still answer?
        If not, the remaining checks are not run (each would wait out its
        timeout)."""
        try:
            self.c.request({"op": "ping"}, timeout_s=10.0)
        except ServiceError:
            pass  # it answered
        except Exception as e:
            self.dead = True
            print("FAIL the server no longer answers ping: %s: %s" % (type(e).__name__, e),
                  flush=True)

    def _fail(self, name, message):
        self.results.append((name, False))
        print("FAIL %s: %s" % (name, message), flush=True)

    # -- helpers ------------------------------------------------------------

    def q(self, heads=H, rows=N, dim=D, dtype=np.float32):
        return self.rng.standard_normal((heads, rows, dim)).astype(dtype)

    def contexts(self):
        listed = self.c.list()
        check(isinstance(listed, list), "list: 'contexts' should be a list, got %r" % (listed,))
        return {entry.get("name"): entry for entry in listed}

    def expect_refused(self, what, fn):
        """fn must raise ServiceError of class usage or input, and the service
        must still answer ping afterwards."""
        try:
            fn()
        except ServiceError as e:
            check(e.cls in ("usage", "input"),
                  "%s: refused with class %r (expected usage or input): %s" % (what, e.cls, e.message))
            check(isinstance(e.message, str) and e.message and "\n" not in e.message,
                  "%s: the error should be one non-empty line, got %r" % (what, e.message))
        else:
            raise Failure("%s: the service accepted it (expected ok: false, class usage or input)" % what)
        try:
            pong = self.c.ping()
        except Exception as e:
            raise Failure("%s: ping after it failed: %s: %s" % (what, type(e).__name__, e))
        check(pong.get("ranks") == self.ranks or self.ranks is None,
              "%s: ping after it says ranks %r, before %r" % (what, pong.get("ranks"), self.ranks))

    def raw_header(self, header):
        """A JSON header frame as the client would send it (with the secret),
        for request_raw."""
        h = dict(header)
        if self.c.secret is not None:
            h["secret"] = self.c.secret
        return json.dumps(h).encode("utf-8")

    def attend_check(self, what, ctx, q, k, v, q_start, causal=False, window=None,
                     ref_q=None, ref_q_start=None):
        """attend on the service and compare with the reference; q_start None
        sends none (the service's default), ref_q_start is then the token
        count it stands for."""
        check(k is not None and v is not None,
              "%s: context %s was not created (an earlier check failed)" % (what, ctx))
        o, lse = self.c.attend(ctx, q, q_start=q_start, causal=causal, window=window)
        ref_o, ref_lse = reference_attention(
            q if ref_q is None else ref_q, k, v,
            q_start if ref_q_start is None else ref_q_start, causal=causal, window=window)
        compare(o, lse, ref_o, ref_lse, what)
        return ref_lse

    # -- checks -------------------------------------------------------------

    def check_ping(self):
        pong = self.c.ping()
        check(pong.get("ok") is True, "ping: reply %r" % (pong,))
        ranks = pong.get("ranks")
        check(isinstance(ranks, int) and not isinstance(ranks, bool) and ranks >= 1,
              "ping: ranks should be an integer >= 1, got %r" % (ranks,))
        check("version" in pong, "ping: the reply has no 'version': %r" % (pong,))
        self.ranks = ranks

    def check_id_echo(self):
        header, _ = self.c.request({"op": "ping", "id": "py-check-7"})
        check(header.get("id") == "py-check-7",
              "ping with id 'py-check-7': the reply's id is %r" % (header.get("id"),))
        header, _ = self.c.request({"op": "ping", "id": {"n": [1, 2]}})
        check(header.get("id") == {"n": [1, 2]},
              "ping with id {'n': [1, 2]}: the reply's id is %r" % (header.get("id"),))

    def check_status(self):
        st = self.c.status()
        missing = [f for f in ("uptime_s", "ranks", "queue", "contexts", "requests", "batches", "jobs")
                   if f not in st]
        check(not missing, "status: fields %s missing from %r" % (missing, st))
        check(st["ranks"] == self.ranks, "status: ranks %r, ping said %r" % (st["ranks"], self.ranks))
        check(isinstance(st["queue"], dict) and "depth" in st["queue"] and "limit" in st["queue"],
              "status: queue should be {depth, limit}, got %r" % (st["queue"],))

    def cleanup_leftovers(self):
        for name in (CTX, CTX16):
            try:
                self.c.drop(name)
            except ServiceError:
                pass

    def check_create(self):
        self.k = self.rng.standard_normal((H_KV, T, D)).astype(np.float32)
        self.v = self.rng.standard_normal((H_KV, T, D)).astype(np.float32)
        tokens = self.c.create(CTX, heads_kv=H_KV, head_dim=D, dtype="f32", k=self.k, v=self.v)
        check(tokens == T, "create %s: tokens %r, expected %d" % (CTX, tokens, T))

    def check_attend_noncausal_default(self):
        self.attend_check("attend non-causal, default q_start (= %d)" % T,
                          CTX, self.q(), self.k, self.v, None, ref_q_start=T)

    def check_attend_noncausal_500(self):
        self.attend_check("attend non-causal q_start=500", CTX, self.q(), self.k, self.v, 500)

    def check_attend_causal_500(self):
        self.attend_check("attend causal q_start=500", CTX, self.q(), self.k, self.v, 500,
                          causal=True)

    def check_attend_causal_window(self):
        self.attend_check('attend causal q_start=500 window "100,0"', CTX, self.q(), self.k,
                          self.v, 500, causal=True, window="100,0")

    def check_attend_noncausal_window(self):
        self.attend_check('attend non-causal q_start=500 window "3,2"', CTX, self.q(), self.k,
                          self.v, 500, window="3,2")

    def check_attend_no_visible_key(self):
        # Queries at 1000.. with window "0" (left 0, right unbounded) see keys
        # >= their own position: none exist.
        ref_lse = self.attend_check('attend window "0" at the default q_start (no key visible)',
                                    CTX, self.q(), self.k, self.v, None, window="0",
                                    ref_q_start=T)
        check(np.isneginf(ref_lse).all(), "the reference should see no key here (test bug)")

    def check_append(self):
        k2 = self.rng.standard_normal((H_KV, APPEND, D)).astype(np.float32)
        v2 = self.rng.standard_normal((H_KV, APPEND, D)).astype(np.float32)
        tokens = self.c.append(CTX, k2, v2)
        self.k = np.concatenate([self.k, k2], axis=1)
        self.v = np.concatenate([self.v, v2], axis=1)
        check(tokens == T + APPEND,
              "append %d tokens: tokens after %r, expected %d" % (APPEND, tokens, T + APPEND))

    def check_attend_after_append(self):
        self.attend_check("attend after append, default q_start (= %d)" % (T + APPEND), CTX,
                          self.q(), self.k, self.v, None, ref_q_start=T + APPEND)

    def check_attend_after_append_window(self):
        # Keys 937 .. 1036 of the default q_start: across the append's seam.
        self.attend_check('attend after append, causal, window "100", default q_start', CTX,
                          self.q(), self.k, self.v, None, causal=True, window="100",
                          ref_q_start=T + APPEND)

    def check_create_f16(self):
        self.k16 = self.rng.standard_normal((H_KV, T16, D)).astype(np.float16)
        self.v16 = self.rng.standard_normal((H_KV, T16, D)).astype(np.float16)
        tokens = self.c.create(CTX16, heads_kv=H_KV, head_dim=D, dtype="f16", k=self.k16,
                               v=self.v16)
        check(tokens == T16, "create %s (f16): tokens %r, expected %d" % (CTX16, tokens, T16))

    def check_attend_f16_q32(self):
        # An f32 q is rounded to f16 by the service before the products.
        q = self.q()
        self.attend_check("f16 context, f32 q, causal q_start=150", CTX16, q, self.k16, self.v16,
                          150, causal=True, ref_q=q.astype(np.float16))

    def check_attend_f16_q16(self):
        q = self.q(dtype=np.float16)
        self.attend_check("f16 context, f16 q, non-causal default q_start", CTX16, q, self.k16,
                          self.v16, None, ref_q_start=T16)

    def check_list(self, what="list"):
        listed = self.contexts()
        for name, tokens, dtype in ((CTX, T + APPEND, "f32"), (CTX16, T16, "f16")):
            check(name in listed, "%s: context %s missing from %s" % (what, name, sorted(listed)))
            e = listed[name]
            check(e.get("tokens") == tokens,
                  "%s: %s has tokens %r, expected %d" % (what, name, e.get("tokens"), tokens))
            check(e.get("heads_kv") == H_KV and e.get("head_dim") == D,
                  "%s: %s has heads_kv %r head_dim %r, expected %d, %d"
                  % (what, name, e.get("heads_kv"), e.get("head_dim"), H_KV, D))
            check(e.get("dtype") == dtype,
                  "%s: %s has dtype %r, expected %r" % (what, name, e.get("dtype"), dtype))
            b = e.get("bytes_per_rank")
            check(isinstance(b, list) and len(b) == self.ranks
                  and all(isinstance(x, int) and x >= 0 for x in b),
                  "%s: %s: bytes_per_rank should be %r integers >= 0, got %r"
                  % (what, name, self.ranks, b))

    # -- malformed requests -------------------------------------------------

    def check_unknown_op(self):
        self.expect_refused("unknown op", lambda: self.c.request({"op": "no_such_op"}))

    def check_not_json(self):
        self.expect_refused("header that is not JSON",
                            lambda: self.c.request_raw([b"{this is not json"]))

    def check_not_object(self):
        self.expect_refused("header that is JSON but not an object",
                            lambda: self.c.request_raw([b"[1, 2, 3]"]))

    def check_missing_context(self):
        self.expect_refused("attend on a missing context",
                            lambda: self.c.attend("py_no_such_ctx", self.q()))

    def check_missing_field(self):
        self.expect_refused("attend without 'context'",
                            lambda: self.c.request({"op": "attend"}, {"q": self.q()}))

    def check_wrong_type(self):
        self.expect_refused("attend with causal \"yes\"",
                            lambda: self.c.request({"op": "attend", "context": CTX, "causal": "yes"},
                                                   {"q": self.q()}))

    def check_wrong_head_dim(self):
        self.expect_refused("q with head_dim %d on a head_dim %d context" % (D // 2, D),
                            lambda: self.c.attend(CTX, self.q(dim=D // 2)))

    def check_wrong_heads(self):
        self.expect_refused("q with 3 heads on heads_kv %d" % H_KV,
                            lambda: self.c.attend(CTX, self.q(heads=3)))

    def check_nan_q(self):
        q = self.q()
        q[1, 2, 5] = np.nan
        self.expect_refused("q with NaN", lambda: self.c.attend(CTX, q))

    def check_inf_q(self):
        q = self.q()
        q[0, 0, 0] = np.inf
        self.expect_refused("q with Inf", lambda: self.c.attend(CTX, q))

    def check_bad_frame_length(self):
        header = self.raw_header({
            "op": "attend", "context": CTX,
            "arrays": [{"name": "q", "dtype": "f32", "shape": [H, N, D]}],
        })
        short = self.q().tobytes()[:-4]  # one float short of [H, N, D]
        self.expect_refused("array frame 4 bytes shorter than its shape",
                            lambda: self.c.request_raw([header, short]))

    def check_missing_frame(self):
        header = self.raw_header({
            "op": "attend", "context": CTX,
            "arrays": [{"name": "q", "dtype": "f32", "shape": [H, N, D]}],
        })
        self.expect_refused("header lists an array, no array frame",
                            lambda: self.c.request_raw([header]))

    def check_bad_append_unchanged(self):
        k = self.rng.standard_normal((H_KV, 5, D)).astype(np.float32)
        v = k.copy()
        k[0, 3, 7] = np.nan
        self.expect_refused("append with NaN in k", lambda: self.c.append(CTX, k, v))
        self.expect_refused("append with head_dim %d" % (D + 1),
                            lambda: self.c.append(CTX, self.rng.standard_normal((H_KV, 5, D + 1)),
                                                  self.rng.standard_normal((H_KV, 5, D + 1))))
        tokens = self.contexts().get(CTX, {}).get("tokens")
        check(tokens == T + APPEND,
              "refused appends changed %s: tokens %r, expected %d" % (CTX, tokens, T + APPEND))

    def check_state_after_refusals(self):
        self.check_list("list after the refused requests")
        # And the context still computes the same.
        self.attend_check("attend after the refused requests", CTX, self.q(), self.k, self.v, 700,
                          causal=True, window="50")

    # -- the end ------------------------------------------------------------

    def check_drop(self):
        self.c.drop(CTX)
        self.c.drop(CTX16)
        listed = self.contexts()
        left = [n for n in (CTX, CTX16) if n in listed]
        check(not left, "list after drop still shows %s" % left)

    def check_attend_dropped(self):
        self.expect_refused("attend on a dropped context", lambda: self.c.attend(CTX, self.q()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", required=True,
                    help="the server's endpoint: ipc:///path, tcp://host:port or a socket path")
    ap.add_argument("--secret-file", help="the server's --secret-file (TCP)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per request (60)")
    args = ap.parse_args()

    secret = read_secret(args.secret_file) if args.secret_file else None
    try:
        client = Client(args.endpoint, secret=secret, timeout_s=args.timeout)
    except Exception as e:
        print("FAIL connect to %s: %s: %s" % (args.endpoint, type(e).__name__, e), flush=True)
        return 2

    with client:
        r = Run(client)
        r.run("ping answers with ranks >= 1", r.check_ping)
        if not r.results[-1][1]:
            print("FAIL: no working ping, nothing else can be checked", flush=True)
            return 1
        r.run("the reply echoes the request's id", r.check_id_echo)
        r.run("status has its fields", r.check_status)
        r.cleanup_leftovers()

        r.run("create %s f32 [%d, %d, %d]" % (CTX, H_KV, T, D), r.check_create)
        r.run("attend non-causal, default q_start", r.check_attend_noncausal_default)
        r.run("attend non-causal q_start=500", r.check_attend_noncausal_500)
        r.run("attend causal q_start=500", r.check_attend_causal_500)
        r.run('attend causal q_start=500 window "100,0"', r.check_attend_causal_window)
        r.run('attend non-causal q_start=500 window "3,2"', r.check_attend_noncausal_window)
        r.run("attend with no visible key: lse -inf, o 0", r.check_attend_no_visible_key)
        r.run("append %d tokens" % APPEND, r.check_append)
        r.run("attend after append, default q_start", r.check_attend_after_append)
        r.run('attend after append, causal window "100"', r.check_attend_after_append_window)

        r.run("create %s f16 [%d, %d, %d]" % (CTX16, H_KV, T16, D), r.check_create_f16)
        r.run("attend f16 context with f32 q", r.check_attend_f16_q32)
        r.run("attend f16 context with f16 q", r.check_attend_f16_q16)
        r.run("list shows both contexts", r.check_list)

        r.run("refused: unknown op", r.check_unknown_op)
        r.run("refused: header not JSON", r.check_not_json)
        r.run("refused: header not an object", r.check_not_object)
        r.run("refused: attend on a missing context", r.check_missing_context)
        r.run("refused: missing field", r.check_missing_field)
        r.run("refused: wrongly typed field", r.check_wrong_type)
        r.run("refused: q with wrong head_dim", r.check_wrong_head_dim)
        r.run("refused: q heads not a multiple of heads_kv", r.check_wrong_heads)
        r.run("refused: q with NaN", r.check_nan_q)
        r.run("refused: q with Inf", r.check_inf_q)
        r.run("refused: array frame length disagrees with its shape", r.check_bad_frame_length)
        r.run("refused: array listed without its frame", r.check_missing_frame)
        r.run("refused appends change nothing", r.check_bad_append_unchanged)
        r.run("contexts unchanged after the refusals", r.check_state_after_refusals)

        r.run("drop both contexts", r.check_drop)
        r.run("refused: attend on a dropped context", r.check_attend_dropped)

    failed = [name for name, ok in r.results if not ok]
    print("%d checks, %d failed%s" % (len(r.results), len(failed),
                                       (": " + "; ".join(failed)) if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
