"""Exit 0 when the PostgreSQL server at DATABASE_URL answers, 1 otherwise (used by the Makefile)."""

import os
import sys

import psycopg

try:
    psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=5).close()
except Exception as exc:
    print(f"cannot connect to DATABASE_URL: {exc}", file=sys.stderr)
    sys.exit(1)
