"""`python -m bench run|loadgen|raw ...` (see bench/__init__.py)."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    commands = {"run": "bench.sweep", "loadgen": "bench.loadgen", "raw": "bench.models_raw", "report": "bench.report"}
    usage = "usage: python -m bench {run|loadgen|raw|report} [--help]"
    if argv[:1] in (["-h"], ["--help"]):
        print(usage)
        return 0
    if not argv or argv[0] not in commands:
        print(usage, file=sys.stderr)
        return 2
    import importlib

    module = importlib.import_module(commands[argv[0]])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
