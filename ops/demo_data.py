"""A deterministic demo *legacy* database for ``make demo``, and the spec that migrates it.

Why generate it instead of shipping a file: a generated database is reproducible from a
seed, costs nothing in the repository, and can be built at any size (tests build a tiny
one, the demo a 100k-row one in well under three seconds).

The data imitates an old desktop product on purpose: mixed-case table names, dates kept
as ``DD/MM/YYYY`` text, money kept as decimal strings, one-letter codes, unicode names,
messy e-mail addresses. A few rows per table are *dirty* in ways the demo spec's
transforms reject (an impossible date, a quantity that is not an integer, an unknown
status code), so the demo shows quarantine at work. Each dirty row breaks exactly one
transform, and :class:`DemoStats` counts them from the generated values themselves, so
the demo can announce exactly how many rows will land in quarantine.

Only the standard library is used: this module must run before any dependency is set up.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

#: Base sizes at ``scale=1.0`` (total 105,500 rows).
BASE_ROWS: dict[str, int] = {
    "Customer": 5_000,
    "Product": 500,
    "Invoice": 25_000,
    "InvoiceLine": 75_000,
}

#: Share of Customer, Invoice and InvoiceLine rows made dirty (0.2%).
DIRTY_RATE = 0.002

#: The legacy date format, as the demo spec's ``date`` transforms read it.
DATE_FORMAT = "%d/%m/%Y"

#: Legacy invoice status codes and what the cloud product calls them.
STATUS_MAP: dict[str, str] = {"P": "paid", "S": "sent", "C": "cancelled"}

#: Spellings the ``bool`` transform accepts (compared case-insensitively).
BOOL_WORDS = frozenset({"true", "false", "yes", "no", "y", "n", "1", "0", "t", "f", "on", "off"})

#: Values that the ``date`` transform must reject (impossible dates, placeholders, ISO).
BAD_DATES = ("31/02/2019", "n/a", "30/02/2021", "31/04/2018", "2019-03-14", "00/01/2020")
#: Values that the ``int`` transform must reject.
BAD_QUANTITIES = ("twelve", "1.5", "3 units", "2,5", "?")
#: A status code that is not in :data:`STATUS_MAP`.
BAD_STATUS = "X"

SCHEMA = """
CREATE TABLE Customer (
    CustomerId   INTEGER PRIMARY KEY,
    FirstName    TEXT,
    LastName     TEXT,
    Email        TEXT,
    Country      TEXT,
    SupportRepId INTEGER,
    CreatedOn    TEXT,
    Balance      NUMERIC
);
CREATE TABLE Product (
    Sku          TEXT PRIMARY KEY,
    Name         TEXT,
    UnitPrice    TEXT,
    Discontinued TEXT
);
CREATE TABLE Invoice (
    InvoiceId    INTEGER PRIMARY KEY,
    CustomerId   INTEGER REFERENCES Customer (CustomerId),
    InvoiceDate  TEXT,
    Total        TEXT,
    Status       TEXT
);
CREATE TABLE InvoiceLine (
    InvoiceId    INTEGER REFERENCES Invoice (InvoiceId),
    LineNo       INTEGER,
    Sku          TEXT REFERENCES Product (Sku),
    Quantity     TEXT,
    UnitPrice    TEXT,
    PRIMARY KEY (InvoiceId, LineNo)
);
"""

#: (display name, ASCII handle for the e-mail address); unicode on purpose.
FIRST_NAMES = (
    ("Zoë", "zoe"),
    ("Łukasz", "lukasz"),
    ("李", "li"),
    ("José", "jose"),
    ("Anaïs", "anais"),
    ("Søren", "soren"),
    ("Björn", "bjorn"),
    ("Siobhán", "siobhan"),
    ("Дмитрий", "dmitry"),
    ("Ngọc", "ngoc"),
    ("Françoise", "francoise"),
    ("Ángel", "angel"),
    ("Mary", "mary"),
    ("John", "john"),
    ("Aisha", "aisha"),
    ("Kenji", "kenji"),
    ("Olga", "olga"),
    ("Priya", "priya"),
)
LAST_NAMES = (
    ("Müller", "muller"),
    ("Nowak", "nowak"),
    ("王", "wang"),
    ("García", "garcia"),
    ("O'Brien", "obrien"),
    ("Øvergaard", "overgaard"),
    ("Nguyễn", "nguyen"),
    ("Smith", "smith"),
    ("Kowalczyk", "kowalczyk"),
    ("Fernández", "fernandez"),
    ("Ivanova", "ivanova"),
    ("Tanaka", "tanaka"),
    ("Dubois", "dubois"),
    ("Patel", "patel"),
    ("Lindqvist", "lindqvist"),
)
COUNTRIES = (
    "France",
    "Germany",
    "Poland",
    "China",
    "Spain",
    "Denmark",
    "Sweden",
    "Ireland",
    "Russia",
    "Vietnam",
    "USA",
    "Japan",
    "India",
    "Brazil",
    "United Kingdom",
)
DOMAINS = ("example.com", "mail.example.org", "corp.example.net")
ADJECTIVES = (
    "Classic",
    "Deluxe",
    "Compact",
    "Heavy-Duty",
    "Eco",
    "Pro",
    "Mini",
    "Café",
    "Ultra",
    "Vintage",
)
NOUNS = (
    "Stapler",
    "Desk Lamp",
    "Notebook",
    "Chair",
    "Monitor Arm",
    "Kettle",
    "Backpack",
    "Headset",
    "Whiteboard",
    "Label Printer",
    "Shredder",
    "Crème Brûlée Torch",
)

Row = tuple[Any, ...]
Tables = dict[str, list[Row]]


@dataclass(frozen=True)
class DemoStats:
    """What :func:`build_legacy_db` wrote, so callers can check the migration's numbers."""

    path: str
    rows: dict[str, int]
    dirty: dict[str, int]

    @property
    def total_rows(self) -> int:
        """Rows over all tables."""
        return sum(self.rows.values())


def build_legacy_db(path: str | Path, *, scale: float = 1.0, seed: int = 7) -> DemoStats:
    """(Re)create the demo legacy SQLite database at ``path`` and describe it.

    The same ``seed`` and ``scale`` always give the same content. Rows scale linearly
    with ``scale`` (at ``1.0``: 105,500 rows). Any existing file is replaced, so a demo
    can be rerun from scratch.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    target = Path(path)
    _remove_db_files(target)
    tables = _generate(scale, random.Random(seed))
    _write(target, tables)
    return DemoStats(
        path=str(target),
        rows={name: len(rows) for name, rows in tables.items()},
        dirty=_count_dirty(tables),
    )


def demo_spec(
    source_url: str, target_url: str, *, chunk_rows: int = 2000, dirty_rows: int = 0
) -> dict[str, Any]:
    """The migration spec (a JSON-able dict) that moves the demo database to the cloud schema.

    Its transforms are the ones the dirty rows are built to fail, so running it
    quarantines exactly ``DemoStats.dirty`` rows; ``dirty_rows`` (their sum) raises its
    ``max_bad_rows`` for a legacy DB large enough to have more than that allows.
    """
    return {
        "name": "demo-legacy-to-cloud",
        "source": {"url": source_url},
        "target": {"url": target_url},
        "chunk_rows": chunk_rows,
        "on_bad_row": "quarantine",
        "max_bad_rows": max(10_000, dirty_rows),
        "streams": [
            _customers_stream(),
            _products_stream(),
            _invoices_stream(),
            _invoice_lines_stream(),
        ],
    }


# --------------------------------------------------------------------------- spec


def _date_col(source: str) -> dict[str, Any]:
    return {"from": source, "transform": "date", "args": {"format": DATE_FORMAT}}


def _col(source: str, transform: str) -> dict[str, Any]:
    return {"from": source, "transform": transform}


_TENANT = {"value": "acme"}


def _customers_stream() -> dict[str, Any]:
    return {
        "source_table": "Customer",
        "target_table": "customers",
        "key": "CustomerId",
        "create_target": True,
        "columns": {
            "customer_id": "CustomerId",
            "first_name": _col("FirstName", "strip"),
            "last_name": _col("LastName", "strip"),
            "email": _col("Email", "lower"),
            "country": "Country",
            "support_rep_id": "SupportRepId",
            "created_on": _date_col("CreatedOn"),
            "balance": _col("Balance", "decimal"),
            "tenant_id": dict(_TENANT),
        },
    }


def _products_stream() -> dict[str, Any]:
    return {
        "source_table": "Product",
        "target_table": "products",
        "key": "Sku",
        "create_target": True,
        "columns": {
            "sku": "Sku",
            "name": _col("Name", "strip"),
            "unit_price": _col("UnitPrice", "decimal"),
            "discontinued": _col("Discontinued", "bool"),
            "tenant_id": dict(_TENANT),
        },
    }


def _invoices_stream() -> dict[str, Any]:
    return {
        "source_table": "Invoice",
        "target_table": "invoices",
        "key": "InvoiceId",
        "create_target": True,
        "after": ["customers"],
        "columns": {
            "invoice_id": "InvoiceId",
            "customer_id": "CustomerId",
            "invoice_date": _date_col("InvoiceDate"),
            "total": _col("Total", "decimal"),
            "status": {"from": "Status", "transform": "map", "args": {"mapping": dict(STATUS_MAP)}},
            "tenant_id": dict(_TENANT),
        },
    }


def _invoice_lines_stream() -> dict[str, Any]:
    return {
        "source_table": "InvoiceLine",
        "target_table": "invoice_lines",
        "key": ["InvoiceId", "LineNo"],
        "create_target": True,
        "after": ["invoices"],
        "columns": {
            "invoice_id": "InvoiceId",
            "line_no": "LineNo",
            "sku": "Sku",
            "quantity": _col("Quantity", "int"),
            "unit_price": _col("UnitPrice", "decimal"),
            "tenant_id": dict(_TENANT),
        },
    }


# --------------------------------------------------------------------------- generation


def _scaled(table: str, scale: float) -> int:
    return max(1, round(BASE_ROWS[table] * scale))


def _dirty_quota(n: int) -> int:
    """About DIRTY_RATE of ``n``, but at least one row once a table has 10 rows."""
    return min(n // 10, max(1, round(n * DIRTY_RATE)))


def _legacy_date(ordinal: int) -> str:
    d = date.fromordinal(ordinal)
    return f"{d.day:02d}/{d.month:02d}/{d.year}"


def _money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def _generate(scale: float, rng: random.Random) -> Tables:
    customers, joined = _customers(rng, _scaled("Customer", scale))
    products = _products(rng, _scaled("Product", scale))
    invoices, lines = _invoices_and_lines(
        rng, _scaled("Invoice", scale), _scaled("InvoiceLine", scale), joined, products
    )
    _inject(rng, customers, [(6, BAD_DATES)])
    _inject(rng, invoices, [(2, BAD_DATES), (4, (BAD_STATUS,))])
    _inject(rng, lines, [(3, BAD_QUANTITIES)])
    return {"Customer": customers, "Product": products, "Invoice": invoices, "InvoiceLine": lines}


def _email(rng: random.Random, first: str, last: str, customer_id: int) -> str | None:
    roll = rng.random()
    if roll < 0.04:
        return None
    address = f"{first}.{last}{customer_id}@{rng.choice(DOMAINS)}"
    if roll < 0.10:  # typed by hand into the old product: capitals and stray spaces
        return f"  {address.title()} "
    return address


def _customers(rng: random.Random, n: int) -> tuple[list[Row], list[int]]:
    """Customer rows, and each customer's join date as an ordinal (invoices come later)."""
    start, span = date(2012, 1, 1).toordinal(), 3_650
    rows: list[Row] = []
    joined: list[int] = []
    for cid in range(1, n + 1):
        first, first_ascii = rng.choice(FIRST_NAMES)
        last, last_ascii = rng.choice(LAST_NAMES)
        if rng.random() < 0.05:
            first = f" {first}  "
        ordinal = start + rng.randrange(span)
        joined.append(ordinal)
        rep = None if rng.random() < 0.1 else rng.randint(1, 8)
        rows.append(
            (
                cid,
                first,
                last,
                _email(rng, first_ascii, last_ascii, cid),
                rng.choice(COUNTRIES),
                rep,
                _legacy_date(ordinal),
                _money(rng.randrange(-5_000, 250_000)),
            )
        )
    return rows, joined


def _products(rng: random.Random, n: int) -> list[Row]:
    rows: list[Row] = []
    for i in range(1, n + 1):
        name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
        price = _money(rng.randrange(99, 50_000))
        rows.append((f"SKU-{i:05d}", name, price, "Y" if rng.random() < 0.1 else "N"))
    return rows


def _line_counts(rng: random.Random, n_invoices: int, n_lines: int) -> list[int]:
    """Lines per invoice: at least one each, the rest spread at random; sums to n_lines."""
    counts = [1] * n_invoices
    for i in rng.choices(range(n_invoices), k=max(0, n_lines - n_invoices)):
        counts[i] += 1
    return counts


def _invoices_and_lines(
    rng: random.Random, n_invoices: int, n_lines: int, joined: list[int], products: list[Row]
) -> tuple[list[Row], list[Row]]:
    prices = [(sku, price, int(price.replace(".", ""))) for sku, _, price, _ in products]
    statuses = rng.choices(list(STATUS_MAP), weights=(70, 20, 10), k=n_invoices)
    invoices: list[Row] = []
    lines: list[Row] = []
    for index, count in enumerate(_line_counts(rng, n_invoices, n_lines)):
        invoice_id = index + 1
        customer = rng.randrange(len(joined))
        total = 0
        for line_no in range(1, count + 1):
            sku, price, cents = prices[rng.randrange(len(prices))]
            quantity = rng.randint(1, 20)
            total += quantity * cents
            lines.append((invoice_id, line_no, sku, str(quantity), price))
        invoice_date = _legacy_date(joined[customer] + rng.randrange(1_000))
        invoices.append((invoice_id, customer + 1, invoice_date, _money(total), statuses[index]))
    return invoices, lines


def _inject(
    rng: random.Random, rows: list[Row], faults: Sequence[tuple[int, Sequence[str]]]
) -> None:
    """Break ``_dirty_quota`` distinct rows, each in exactly one column (faults take turns)."""
    chosen = rng.sample(range(len(rows)), _dirty_quota(len(rows)))
    for turn, index in enumerate(sorted(chosen)):
        column, bad_values = faults[turn % len(faults)]
        row = rows[index]
        rows[index] = (*row[:column], rng.choice(bad_values), *row[column + 1 :])


# --------------------------------------------------------------------------- dirty rows


def _date_ok(value: str | None) -> bool:
    if value is None:
        return True
    try:
        datetime.strptime(value, DATE_FORMAT)
    except ValueError:
        return False
    return True


def _int_ok(value: str | None) -> bool:
    if value is None:
        return True
    try:
        int(value)
    except ValueError:
        return False
    return True


def _bool_ok(value: str | None) -> bool:
    return value is None or value.strip().lower() in BOOL_WORDS


#: Per table, the checks mirroring the demo spec's transforms that can fail: (column, ok?).
_CHECKS: dict[str, list[tuple[int, Callable[[Any], bool]]]] = {
    "Customer": [(6, _date_ok)],
    "Product": [(3, _bool_ok)],
    "Invoice": [(2, _date_ok), (4, lambda v: v is None or v in STATUS_MAP)],
    "InvoiceLine": [(3, _int_ok)],
}


def _count_dirty(tables: Tables) -> dict[str, int]:
    """Rows the demo spec will quarantine, counted from the generated values themselves."""
    return {
        name: sum(1 for row in rows if not all(ok(row[col]) for col, ok in _CHECKS[name]))
        for name, rows in tables.items()
    }


# --------------------------------------------------------------------------- writing


def _remove_db_files(path: Path) -> None:
    for leftover in (path, *(path.with_name(path.name + s) for s in ("-journal", "-wal", "-shm"))):
        leftover.unlink(missing_ok=True)


def _write(path: Path, tables: Tables) -> None:
    """Write all rows in one transaction with journaling off, then leave a normal database.

    Journaling is only off while the file is being built from scratch: if the build dies,
    the file is garbage either way and the next build deletes it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.executescript(SCHEMA)
        with conn:
            for name, rows in tables.items():
                marks = ", ".join("?" * len(rows[0]))
                conn.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
