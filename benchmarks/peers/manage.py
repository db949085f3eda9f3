#!/usr/bin/env python
"""``manage.py`` of the peers benchmark's project (benchmarks/bench_peers.py starts every process with it)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peersite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
