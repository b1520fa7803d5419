"""Metering and budget control for paid API calls: reserve the worst case, settle with the real usage (docs/security.md)."""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from integrations.adapters.sqlite_file import open_sqlite
from integrations.backend_errors import BackendUnavailableError
from settings.model import BudgetSettings, ModelPrice

logger = logging.getLogger(__name__)

# A reservation older than this is settled even if its process seems alive (a reused pid): no call runs this long.
RESERVATION_TTL_S = 600
INTERRUPTED = "interrupted"  # the provider of a usage row settled from a killed process's reservation


class BudgetExceeded(BackendUnavailableError):
    """The monthly API budget would be passed by this call; the chain moves on to local backends."""


class BudgetDegraded(BackendUnavailableError):
    """Spend is past the degrade threshold and this model is not the cheapest one; the chain moves on."""


@dataclass
class Reservation:
    id: int
    amount: float


@dataclass
class Alert:
    name: str
    message: str


def usd(amount: float) -> str:
    """'$25.00', or '$0.005' for amounts under a cent (which two decimals would show as $0.00)."""
    if 0 < abs(amount) < 0.01:
        return "$" + f"{amount:.6f}".rstrip("0")
    return f"${amount:,.2f}"


def month_start(now: float | None = None) -> float:
    moment = datetime.fromtimestamp(now if now is not None else time.time(), tz=UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


class UsageMeter:
    """Persistent usage records, spend per month, a hard cap and alerts that fire once per crossing."""

    def __init__(self, path: str | Path, budget: BudgetSettings | None = None, on_alert: Callable[[Alert], None] | None = None) -> None:
        self.budget = budget or BudgetSettings()
        self.on_alert = on_alert
        self._lock = threading.Lock()
        self._conn = open_sqlite(
            path,
            """
            CREATE TABLE IF NOT EXISTS usage (
                ts REAL NOT NULL, kind TEXT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL,
                tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL, requests INTEGER NOT NULL,
                latency_ms REAL NOT NULL, ok INTEGER NOT NULL, estimated INTEGER NOT NULL, cost_usd REAL NOT NULL);
            CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
            CREATE TABLE IF NOT EXISTS reservations (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, amount REAL NOT NULL,
                pid INTEGER NOT NULL DEFAULT 0, kind TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '');
            CREATE TABLE IF NOT EXISTS alerts (name TEXT PRIMARY KEY, active INTEGER NOT NULL, since REAL NOT NULL);
            """,
            fix=(
                "the usage ledger counts this month's API spend against budget.monthly_cap_usd, so paid calls wait until it is "
                f"fixed. Move it aside (mv {path} {path}.damaged): the month's spend then counts from zero, so lower the cap "
                "by what the provider's billing page shows as spent"
            ),
            verify=True,
        )
        known = {row[1] for row in self._conn.execute("PRAGMA table_info(reservations)")}
        for column in ("pid INTEGER NOT NULL DEFAULT 0", "kind TEXT NOT NULL DEFAULT ''", "model TEXT NOT NULL DEFAULT ''"):
            if column.split()[0] not in known:  # a ledger from before reservations named their process
                self._conn.execute(f"ALTER TABLE reservations ADD COLUMN {column}")

    def close(self) -> None:
        self._conn.close()

    def price(self, model: str) -> ModelPrice:
        return self.budget.prices.get(model) or self.budget.prices.get(model.split(":")[0]) or self.budget.default_price

    def cost(self, model: str, tokens_in: int = 0, tokens_out: int = 0, calls: int = 0) -> float:
        p = self.price(model)
        return tokens_in * p.input_per_m / 1e6 + tokens_out * p.output_per_m / 1e6 + calls * p.per_k_calls / 1e3

    def cheapest(self, models: list[str], tokens_in: int = 1000, tokens_out: int = 300) -> str:
        return min(models, key=lambda m: (self.cost(m, tokens_in, tokens_out, 1), models.index(m)))

    def month_spend(self, now: float | None = None) -> float:
        with self._lock:
            row = self._conn.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM usage WHERE ts >= ?", (month_start(now),)).fetchone()
        return float(row[0])

    def state(self) -> str:
        """'ok', 'degraded' (past degrade_fraction of the cap) or 'capped'."""
        spent = self.month_spend()
        if spent >= self.budget.monthly_cap_usd:
            return "capped"
        return "degraded" if spent >= self.budget.degrade_fraction * self.budget.monthly_cap_usd else "ok"

    def reserve(self, model: str, tokens_in: int = 0, tokens_out: int = 0, calls: int = 0, kind: str = "") -> Reservation:
        """Reserve the worst-case cost of a call, or raise BudgetExceeded."""
        amount = self.cost(model, tokens_in, tokens_out, calls)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")  # serialises reservations across threads and processes
            try:
                self._settle_orphans()
                spent = self._conn.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM usage WHERE ts >= ?", (month_start(),)).fetchone()[0]
                held = self._conn.execute("SELECT COALESCE(SUM(amount), 0) FROM reservations").fetchone()[0]
                if spent + held + amount > self.budget.monthly_cap_usd + 1e-12:
                    self._conn.execute("ROLLBACK")
                    raise BudgetExceeded(
                        f"monthly API budget of {usd(self.budget.monthly_cap_usd)} reached (${spent:.4f} spent, ${held:.4f} in flight): "
                        "answering with local backends; raise budget.monthly_cap_usd to continue"
                    )
                cursor = self._conn.execute(
                    "INSERT INTO reservations (ts, amount, pid, kind, model) VALUES (?, ?, ?, ?, ?)",
                    (time.time(), amount, os.getpid(), kind, model),
                )
                self._conn.execute("COMMIT")
            except sqlite3.Error:
                self._conn.execute("ROLLBACK")
                raise
        return Reservation(id=int(cursor.lastrowid), amount=amount)

    def _settle_orphans(self) -> None:
        """Inside a write transaction: reservations of dead processes (or too old) become usage rows at their worst case."""
        rows = self._conn.execute("SELECT id, ts, amount, pid, kind, model FROM reservations").fetchall()
        for id_, ts, amount, pid, kind, model in rows:
            if _alive(pid) and ts > time.time() - RESERVATION_TTL_S:
                continue
            self._conn.execute(
                "INSERT INTO usage VALUES (?, ?, ?, ?, 0, 0, 1, 0, 1, 1, ?)", (ts, kind or "call", model or "unknown", INTERRUPTED, amount)
            )
            self._conn.execute("DELETE FROM reservations WHERE id = ?", (id_,))
            logger.warning("settled a reservation of %s left by a process that stopped mid-call (pid %s): %s", model, pid, usd(amount))

    def settle_orphans(self) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._settle_orphans()
                self._conn.execute("COMMIT")
            except sqlite3.Error:
                self._conn.execute("ROLLBACK")
                raise

    def in_flight(self) -> tuple[int, float]:
        """(calls, dollars) reserved by calls running now."""
        with self._lock:
            count, amount = self._conn.execute("SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM reservations").fetchone()
        return int(count), float(amount)

    def interrupted(self) -> tuple[int, float]:
        """(calls, dollars) this month of calls whose process stopped mid-call, counted at their reserved worst case."""
        with self._lock:
            count, amount = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(cost_usd), 0) FROM usage WHERE provider = ? AND ts >= ?", (INTERRUPTED, month_start())
            ).fetchone()
        return int(count), float(amount)

    def record(
        self,
        kind: str,
        model: str,
        provider: str,
        tokens_in: int,
        tokens_out: int,
        latency_ms: float,
        ok: bool,
        requests: int = 1,
        estimated: bool = False,
        reservation: Reservation | None = None,
    ) -> float:
        """Store one API call (settling its reservation) and return its cost."""
        calls = requests if kind in ("embedding", "rerank") else 0
        # What the server reported is what was spent, even past the reservation (an estimate made before the call).
        cost = self.cost(model, tokens_in, tokens_out, calls) if ok else 0.0
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
                "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), kind, model, provider, tokens_in, tokens_out, requests, latency_ms, int(ok), int(estimated), cost),
            )
            if reservation is not None:
                self._conn.execute("DELETE FROM reservations WHERE id = ?", (reservation.id,))
            self._conn.execute("COMMIT")
        self._check_alerts()
        return cost

    def by_day_and_model(self, since: float | None = None) -> list[tuple[str, str, int, int, int, float]]:
        """Rows (day, model, requests, tokens_in, tokens_out, cost) since a time (default: this month)."""
        with self._lock:
            rows = self._conn.execute(
                """SELECT date(ts, 'unixepoch') AS day, model, SUM(requests), SUM(tokens_in), SUM(tokens_out), SUM(cost_usd)
                   FROM usage WHERE ts >= ? GROUP BY day, model ORDER BY day, model""",
                (since if since is not None else month_start(),),
            ).fetchall()
        return [(d, m, int(r), int(i), int(o), float(c)) for d, m, r, i, o, c in rows]

    def error_rate(self) -> float:
        with self._lock:
            rows = self._conn.execute("SELECT ok FROM usage ORDER BY ts DESC LIMIT ?", (self.budget.alert_window,)).fetchall()
        return 0.0 if not rows else sum(1 for (ok,) in rows if not ok) / len(rows)

    def active_alerts(self) -> list[str]:
        with self._lock:
            return [name for (name,) in self._conn.execute("SELECT name FROM alerts WHERE active = 1 ORDER BY name")]

    def observe_answer(self, latency_ms: float) -> None:
        """Feed one question's end-to-end latency to the latency alert."""
        limit = self.budget.alert_latency_s
        self._set_alert("latency", latency_ms > limit * 1000, f"an answer took {latency_ms / 1000:.1f} s (> {limit:g} s)")

    def _check_alerts(self) -> None:
        spend = self.month_spend()
        conditions = {
            "error_rate": (
                (rate := self.error_rate()) > self.budget.alert_error_rate,
                f"API error rate {rate:.0%} over the last {self.budget.alert_window} calls (> {self.budget.alert_error_rate:.0%})",
            ),
            "spend": (
                self.budget.alert_spend_usd is not None and spend > self.budget.alert_spend_usd,
                f"this month's API spend ${spend:.2f} passed the alert threshold ${self.budget.alert_spend_usd or math.inf:.2f}",
            ),
        }
        for name, (crossed, message) in conditions.items():
            self._set_alert(name, crossed, message)

    def _set_alert(self, name: str, crossed: bool, message: str) -> None:
        with self._lock:
            row = self._conn.execute("SELECT active FROM alerts WHERE name = ?", (name,)).fetchone()
            was_active = bool(row and row[0])
            if crossed == was_active:
                return
            self._conn.execute("INSERT OR REPLACE INTO alerts VALUES (?, ?, ?)", (name, int(crossed), time.time()))
        if crossed:  # once per crossing: only on the transition into the alert state
            logger.warning("alert: %s", message)
            if self.on_alert:
                self.on_alert(Alert(name=name, message=message))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (0: a reservation from before they named their process)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def estimate_tokens(text: str) -> int:
    """Tokens of a text by the tokenizer bundled with LlamaIndex (used when an API reports no usage)."""
    from llama_index.core.utils import get_tokenizer

    return len(get_tokenizer()(text))


@dataclass
class Metering:
    """What the metered call learned about itself; the caller fills it before the block ends."""

    tokens_in: int = 0
    tokens_out: int = 0
    estimated: bool = False


@contextmanager
def metered(
    meter: UsageMeter | None, kind: str, model: str, provider: str, *, max_tokens_in: int = 0, max_tokens_out: int = 0, calls: int = 0
) -> Iterator[Metering]:
    """Reserve a call's worst-case cost (or raise BudgetExceeded), run the block, then record what it used."""
    usage = Metering()
    if meter is None:
        yield usage
        return
    reservation = meter.reserve(model, tokens_in=max_tokens_in, tokens_out=max_tokens_out, calls=calls, kind=kind)
    started = time.perf_counter()
    try:
        yield usage
    except GeneratorExit:  # the reader stopped a stream early: the tokens it got were still paid for
        meter.record(kind, model, provider, usage.tokens_in, usage.tokens_out, (time.perf_counter() - started) * 1000,
                     ok=True, requests=max(calls, 1), estimated=usage.estimated, reservation=reservation)  # fmt: skip
        raise
    except BaseException:
        meter.record(kind, model, provider, 0, 0, (time.perf_counter() - started) * 1000, ok=False, reservation=reservation)
        raise
    meter.record(
        kind, model, provider, usage.tokens_in, usage.tokens_out, (time.perf_counter() - started) * 1000,
        ok=True, requests=max(calls, 1), estimated=usage.estimated, reservation=reservation,
    )  # fmt: skip
