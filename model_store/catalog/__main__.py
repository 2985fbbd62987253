"""python -m model_store.catalog MODEL: the model directory of `demo`, `demo-metadata`, a
published model of the catalog (`ham10000`: fetched by hash and exported once, cached) or a
model directory, printed on the last line. Exit 2 with the cause when it cannot."""

from __future__ import annotations

import argparse
import sys

from model_store import catalog


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_store.catalog", description=__doc__)
    parser.add_argument(
        "name",
        help=f"one of {', '.join([*catalog.BUILT_IN, *catalog.MODELS])}, or a model directory",
    )
    parser.add_argument("--index-url", help="another package index (default: pip's own)")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        if args.index_url:
            folder = catalog.ensure(args.name, log, args.index_url)
        else:
            folder = catalog.resolve(args.name, log)
    except (catalog.FetchError, ValueError, OSError) as exc:
        print(
            f"{args.name} is not available: {exc}. The offline demo needs nothing: "
            "make run MODEL=demo",
            file=sys.stderr,
        )
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
