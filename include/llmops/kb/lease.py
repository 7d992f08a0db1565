"""One writer per knowledge base across pods and machines: a lease that lives in the knowledge base's Milvus.

A local file lock covers one machine (one `$LLMOPS_HOME`); two pods re-indexing the same knowledge base would
both write, and an incremental run's clean-up could drop a concurrent full build's unfinished version. The
lease lives where the data lives, so every process that can write the knowledge base sees it.

Milvus has no conditional update, but it has one atomic create-if-absent: `create_alias` fails when the alias
exists. The lease is built on that:

* each contender creates its own small collection `llmops_lease_<alias>_h<token>`; its properties hold the
  record `{holder, expires_at, released}` (written before claiming, renewed every ttl/3);
* the lease of generation N is the alias `llmops_lease_<alias>_g<N>`; the holder is the collection the highest
  generation points at. A contender reads the highest generation; if its record is released, expired
  (`expires_at` + `CLOCK_SKEW_S` in the past by the contender's clock) or gone, it claims N+1 with
  `create_alias` (one contender wins, the others get "already exists" and read again); otherwise the lease is
  held: wait, or give up with `KbAlreadyRunning` (not a failure);
* a winner then lists the generations: if one above its own exists (it read a stale state and claimed a
  generation a later winner had already cleaned up), it withdraws. Only then does it drop the generations below
  its own with their collections. The highest generation ever created is never dropped, so this check sees
  every later claim, and a takeover is possible only from a holder whose record was expired or released when
  read after its claim;
* the holder renews from a thread; when a renewal finds a higher generation or its own alias gone (it stalled
  for longer than the ttl and another process took over), `check()` raises `LeaseLost` at the pipeline's next
  step (a `Stopped`: a full build drops its unfinished version, the exit status is 143, the retry finds the
  lease held and exits "already running").

Wall clocks of different machines meet in `expires_at`: they must agree within `CLOCK_SKEW_S` (NTP does far
better). Released leases stay as the top generation (one alias and one tiny collection per knowledge base), so
generation numbers only grow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable

from llmops.kb.errors import KbAlreadyRunning, KbError, LeaseLost, Stopped  # noqa: F401 - LeaseLost re-exported
from llmops.kb.milvus_client import DataType, MilvusClient, MilvusException

log = logging.getLogger(__name__)

RECORD_PROPERTY = "llmops.kb.lease"
CLOCK_SKEW_S = 5.0  # how far two machines' wall clocks may disagree (added before a lease counts as expired)


def holder_name() -> str:
    """Who holds a lease, for people: host, pid and LLMOPS_HOME (different homes and pods tell apart)."""
    from llmops.settings import get_settings

    return f"{socket.gethostname()} pid {os.getpid()} home {get_settings().home}"


class MilvusLease:
    """The lease on knowledge base `alias` in the Milvus of `client` (see the module docstring).

        with MilvusLease(client, "product_docs", ttl_s=60).hold(wait_s=0):
            ...   # the only writer of product_docs; lease.check() raises LeaseLost if that stopped being true
    """

    def __init__(self, client: MilvusClient, alias: str, ttl_s: float = 60.0, holder: str | None = None,
                 clock: Callable[[], float] = time.time):
        if ttl_s < 3 * 1.0:
            raise KbError(f"a lease ttl of {ttl_s:g} s is too short (renewals come every ttl/3)",
                          fix="set LLMOPS_KB_LEASE_TTL_S to 3 or more (60 by default)")
        self.client, self.alias, self.ttl_s = client, alias, float(ttl_s)
        self.holder = holder or holder_name()
        self.clock = clock
        self.prefix = f"llmops_lease_{alias}"
        self._gen_re = re.compile(rf"^{re.escape(self.prefix)}_g(\d+)$")
        self.own = f"{self.prefix}_h{secrets.token_hex(6)}"
        self.generation: int | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- names and records -----------------------------------------------------------------------

    def gen_alias(self, generation: int) -> str:
        return f"{self.prefix}_g{generation}"

    def generations(self) -> list[int]:
        found = []
        for name in self.client.list_aliases().get("aliases", []):
            match = self._gen_re.match(name)
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    def _target_of(self, generation: int) -> str | None:
        try:
            return self.client.describe_alias(self.gen_alias(generation))["collection_name"]
        except MilvusException:
            return None

    def record_of(self, collection: str | None) -> dict | None:
        if collection is None:
            return None
        try:
            properties = self.client.describe_collection(collection).get("properties", {}) or {}
        except MilvusException:
            return None
        raw = properties.get(RECORD_PROPERTY)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _write_record(self, released: bool = False) -> None:
        record = {"holder": self.holder, "expires_at": self.clock() + self.ttl_s, "released": released}
        self.client.alter_collection_properties(self.own, properties={RECORD_PROPERTY: json.dumps(record)})

    def _create_own(self) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants one; no row is ever written
        self.client.create_collection(self.own, schema=schema)

    def _free(self, record: dict | None) -> bool:
        return record is None or bool(record.get("released")) or \
            float(record.get("expires_at", 0)) + CLOCK_SKEW_S < self.clock()

    # --- acquire, renew, release -----------------------------------------------------------------

    def acquire(self, wait_s: float = 0.0, poll_s: float | None = None) -> None:
        """Take the lease, waiting up to `wait_s` for a holder to finish; KbAlreadyRunning when it does not."""
        poll_s = poll_s if poll_s is not None else min(max(self.ttl_s / 6, 0.5), 5.0)
        deadline = time.monotonic() + wait_s
        self._create_own()
        try:
            while True:
                # Fresh on every look: a winner cleaning up spares a contender whose record is alive, and whoever
                # sees our alias after the claim below sees a live record.
                self._write_record()
                gens = self.generations()
                top = gens[-1] if gens else 0
                record = self.record_of(self._target_of(top)) if top else None
                if top and not self._free(record):
                    if time.monotonic() >= deadline:
                        raise KbAlreadyRunning(
                            f"knowledge base alias {self.alias} is being re-indexed by {record.get('holder')} "
                            f"(its lease in Milvus runs until {time.strftime('%H:%M:%S', time.localtime(record['expires_at']))}"
                            " and is renewed while it works); nothing was done here",
                            fix="nothing to fix: that run does the work; to queue behind it instead, set "
                            "LLMOPS_KB_LEASE_WAIT_S")
                    time.sleep(poll_s)
                    continue
                try:
                    self.client.create_alias(self.own, self.gen_alias(top + 1))
                except MilvusException:
                    continue  # another contender claimed top + 1 first: read again
                if any(g > top + 1 for g in self.generations()):  # claimed below a later winner: withdraw
                    self._drop_alias(top + 1)
                    continue
                self.generation = top + 1
                break
        except BaseException:
            self._drop_collection(self.own)
            raise
        self._clean_below(self.generation)
        log.info("lease on %s taken (generation %d, ttl %.0f s) by %s", self.alias, self.generation, self.ttl_s,
                 self.holder)
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{self.alias}", daemon=True)
        self._thread.start()

    def still_held(self) -> bool:
        gens = self.generations()
        return bool(gens) and gens[-1] == self.generation and self._target_of(self.generation) == self.own

    def renew(self) -> None:
        if not self.still_held():
            self._lost = (f"the lease on {self.alias} was taken over by another process (this run stalled for "
                          f"longer than the lease ttl, {self.ttl_s:g} s)")
            log.error("%s", self._lost)
            return
        self._write_record()

    def check(self) -> None:
        """Raise LeaseLost once the renewal saw another process take the lease over."""
        if self._lost:
            raise LeaseLost(self._lost, fix="nothing to fix here: the other run does the work (this one was "
                            "stopped; raise LLMOPS_KB_LEASE_TTL_S if runs stall that long)")

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew()
            except MilvusException as exc:  # Milvus briefly unreachable: the next renewal tries again
                log.warning("lease on %s: renewal failed (%s); retrying in %.0f s", self.alias, exc, self.ttl_s / 3)
            if self._lost:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl_s)
        if self.generation is None:
            return
        try:
            if self.still_held():
                self._write_record(released=True)  # the alias stays: generation numbers only grow
        except MilvusException as exc:
            log.warning("lease on %s: could not mark it released (%s); it expires in %.0f s", self.alias, exc,
                        self.ttl_s)
        self.generation = None

    def hold(self, wait_s: float = 0.0):
        lease = self

        class _Held:
            def __enter__(self):
                lease.acquire(wait_s)
                return lease

            def __exit__(self, *exc):
                lease.release()

        return _Held()

    # --- clean-up --------------------------------------------------------------------------------

    def _drop_alias(self, generation: int) -> None:
        with contextlib.suppress(MilvusException):
            self.client.drop_alias(self.gen_alias(generation))

    def _drop_collection(self, name: str) -> None:
        with contextlib.suppress(MilvusException):
            self.client.drop_collection(name)

    def _clean_below(self, generation: int) -> None:
        """Drop the generations below ours and their holders' collections (a Milvus server refuses to drop a
        collection an alias points at, so the alias goes first), and contenders' collections left by killed
        processes (no alias points at them and their record expired)."""
        pointed = set()
        for gen in self.generations():
            target = self._target_of(gen)
            if gen < generation:
                self._drop_alias(gen)
                if target and target != self.own:
                    self._drop_collection(target)
            elif target:
                pointed.add(target)
        for name in self.client.list_collections():
            if name.startswith(f"{self.prefix}_h") and name != self.own and name not in pointed \
                    and self._free(self.record_of(name)):
                self._drop_collection(name)
