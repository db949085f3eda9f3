"""The statements the writer runs for a batch: the rows' upserts and the events' insert.

Rows are plain tuples of values in the column order below, not model instances: building and
saving a model instance per row (what ``bulk_create`` does) costs several times more.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, cast

from django.db import connections
from django.db.models import Field, Model

from ..models import Execution, ExecutionEvent

__all__ = [
    "EVENT_COLUMNS",
    "EXECUTION_COLUMNS",
    "EventRow",
    "escape_nul",
    "execute_many",
    "insert_events",
    "upsert",
    "upsert_executions",
]

#: An event row: node id, execution id (None for node-level events), timestamp, level, message.
EventRow = tuple[uuid.UUID, uuid.UUID | None, datetime, str, str]
#: Rows per multi-row INSERT on PostgreSQL (x 12 columns: well under its 65,535 parameters).
ROWS_PER_STATEMENT: Final = 500
EVENT_COLUMNS: Final = ("node", "execution", "timestamp", "level", "message")
EXECUTION_COLUMNS: Final = (
    "id",
    "node",
    "worker",
    "attempt",
    "max_attempts",
    "status",
    "started_at",
    "finished_at",
    "duration",
    "error",
    "traceback",
    "created_at",
)
#: What an upsert of an attempt's row updates: everything but its identity and creation.
EXECUTION_UPDATE_FIELDS: Final = tuple(
    name for name in EXECUTION_COLUMNS if name not in ("id", "node", "worker", "created_at")
)


def execute_many(
    database: str, model: type[Model], names: Sequence[str], rows: Sequence[Sequence[Any]], tail: str
) -> None:
    """``INSERT INTO <model> (<names>) VALUES (...) <tail>`` for every row.

    On PostgreSQL the values are what the ORM gives psycopg already (UUIDs, aware datetimes) and
    go in multi-row statements of ``ROWS_PER_STATEMENT`` rows; elsewhere they go through each
    field's ``get_db_prep_save`` (strings on SQLite) and one ``executemany``.
    """
    connection = connections[database]
    fields = [cast("Field[Any, Any]", model._meta.get_field(name)) for name in names]
    quote = connection.ops.quote_name
    sql = "INSERT INTO {} ({}) VALUES ({}){}".format(
        quote(model._meta.db_table),
        ", ".join(quote(str(field.column)) for field in fields),
        ", ".join(["%s"] * len(fields)),
        tail,
    )
    if connection.vendor == "postgresql":
        # One statement per chunk of rows: the server plans and runs one INSERT, not one per row.
        one = "({})".format(", ".join(["%s"] * len(fields)))
        head, _, _ = sql.partition(" VALUES ")
        with connection.cursor() as cursor:
            for start in range(0, len(rows), ROWS_PER_STATEMENT):
                chunk = rows[start : start + ROWS_PER_STATEMENT]
                cursor.execute(
                    f"{head} VALUES {', '.join([one] * len(chunk))}{tail}",
                    [value for row in chunk for value in row],
                )
        return
    preps = [field.get_db_prep_save for field in fields]
    params = [[prep(value, connection) for prep, value in zip(preps, row, strict=True)] for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _columns(database: str, model: type[Model], names: Sequence[str]) -> list[str]:
    """The quoted columns of ``model``'s fields ``names`` (``node_id`` for the foreign key ``node``)."""
    quote = connections[database].ops.quote_name
    return [quote(str(cast("Field[Any, Any]", model._meta.get_field(name)).column)) for name in names]


def upsert(
    database: str,
    model: type[Model],
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    conflict: Sequence[str],
    update: Sequence[str] = (),
    add: Sequence[str] = (),
) -> None:
    """Insert ``rows`` or, where a row with the same ``conflict`` fields exists, update it.

    :func:`execute_many` with ``ON CONFLICT (<conflict>) DO UPDATE SET ...`` (PostgreSQL and
    SQLite both speak it): each field of ``update`` takes the new row's value, each of ``add``
    has the new row's value added to the stored one. All are field names, as ``names`` are.
    """
    table = connections[database].ops.quote_name(model._meta.db_table)
    sets = [f"{column} = EXCLUDED.{column}" for column in _columns(database, model, update)]
    sets += [f"{column} = {table}.{column} + EXCLUDED.{column}" for column in _columns(database, model, add)]
    target = ", ".join(_columns(database, model, conflict))
    execute_many(database, model, names, rows, f" ON CONFLICT ({target}) DO UPDATE SET {', '.join(sets)}")


def upsert_executions(database: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert or update attempts' rows, by id."""
    upsert(database, Execution, EXECUTION_COLUMNS, rows, conflict=("id",), update=EXECUTION_UPDATE_FIELDS)


def insert_events(database: str, rows: Sequence[EventRow]) -> None:
    """Insert event rows: ``COPY`` on PostgreSQL (its fastest way in), else :func:`execute_many`."""
    connection = connections[database]
    if connection.vendor != "postgresql":
        execute_many(database, ExecutionEvent, EVENT_COLUMNS, rows, "")
        return
    table = connection.ops.quote_name(ExecutionEvent._meta.db_table)
    columns = ", ".join(_columns(database, ExecutionEvent, EVENT_COLUMNS))
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(  # the psycopg cursor under Django's wrapper
            f"COPY {table} ({columns}) FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)


def escape_nul(value: str) -> str:
    """PostgreSQL rejects NUL characters in text: show them escaped instead of losing the batch."""
    return value.replace("\x00", "\\x00") if "\x00" in value else value
