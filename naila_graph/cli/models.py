"""``naila models list | fetch | path``: the model bundles."""

from __future__ import annotations

import argparse
from typing import Any

from naila_graph.cli.errors import AddCommon, CLIError, action, command_group, print_table


def register(sub: Any, common: AddCommon) -> None:
    actions = command_group(sub, common, "models", "model bundles: list, fetch, path")
    action(actions, common, "list", "known bundles", cmd_models_list)
    fetch = action(
        actions, common, "fetch", "download, assemble and verify a bundle; prints its path", cmd_models_fetch
    )
    fetch.add_argument("name")
    path = action(actions, common, "path", "print the path of a fetched bundle", cmd_models_path)
    path.add_argument("name")


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
