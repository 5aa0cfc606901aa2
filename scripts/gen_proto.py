#!/usr/bin/env python3
"""Generate saga/service/proto_gen/ from protos/ (run by ``make proto``)."""

from __future__ import annotations

import sys

from saga.service.protogen import generate, is_current


def main() -> int:
    force = "--force" in sys.argv[1:]
    if is_current() and not force:
        print("saga/service/proto_gen is up to date")
        return 0
    files = generate()
    print(f"generated {len(files)} files in saga/service/proto_gen")
    return 0


if __name__ == "__main__":
    sys.exit(main())
