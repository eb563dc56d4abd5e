"""``naila models list | fetch | path``: the model bundles."""

from __future__ import annotations

import argparse
from typing import Any

from naila_graph.cli.errors import AddCommon, CLIError, print_table


def register(sub: Any, common: AddCommon) -> None:
    models = sub.add_parser("models", help="model bundles: list, fetch, path")
    common(models)
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    mlist = msub.add_parser("list", help="known bundles")
    common(mlist)
    mlist.set_defaults(handler=cmd_models_list)
    mfetch = msub.add_parser("fetch", help="download, assemble and verify a bundle; prints its path")
    common(mfetch)
    mfetch.add_argument("name")
    mfetch.set_defaults(handler=cmd_models_fetch)
    mpath = msub.add_parser("path", help="print the path of a fetched bundle")
    common(mpath)
    mpath.add_argument("name")
    mpath.set_defaults(handler=cmd_models_path)


def cmd_models_list(args: argparse.Namespace) -> int:
    from llm.bundles import BUNDLES, bundle_path, is_fetched

    rows = [("NAME", "SIZE", "FETCHED", "DEFAULT", "PATH")]
    for name, bundle in BUNDLES.items():
        rows.append(
            (
                name,
                f"{bundle.size_bytes / 1e6:,.0f} MB",
                "yes" if is_fetched(name) else "no",
                "yes" if bundle.default else "",
                str(bundle_path(name)),
            )
        )
    print_table(rows)
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from llm.bundles import fetch_bundle

    print(fetch_bundle(args.name, progress=True))
    return 0


def cmd_models_path(args: argparse.Namespace) -> int:
    from llm.bundles import bundle_path, get_bundle, is_fetched

    get_bundle(args.name)
    if not is_fetched(args.name):
        raise CLIError(f"bundle {args.name!r} is not fetched yet; run `naila models fetch {args.name}`")
    print(bundle_path(args.name))
    return 0
