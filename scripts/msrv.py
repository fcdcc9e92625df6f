#!/usr/bin/env python3
"""The minimum supported Rust version check that one toolchain can make.

Reads `cargo metadata` (every feature) and walks the dependency graph of each
publishable workspace package through its normal and build dependencies (what a user
compiles; dev-dependencies are ours alone). Fails if a dependency declares a
`rust-version` newer than the package's own, and names it. Language features newer than
the MSRV are not caught here: only a build with that toolchain would see them; clippy's
`incompatible_msrv` lint (on in `cargo clippy`) catches standard-library APIs.
"""

import json
import subprocess
import sys


def version(text):
    """`1.85` and `1.85.0` are the same version: compare three parts."""
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def host():
    rustc = subprocess.check_output(["rustc", "-vV"], text=True)
    return next(line.split()[1] for line in rustc.splitlines() if line.startswith("host:"))


def main():
    # Dependencies of this platform only: a crate that only wasm or Windows builds pull
    # in (wasip2, windows-sys) says nothing about a build here.
    metadata = json.loads(
        subprocess.check_output(
            [
                "cargo", "metadata", "--format-version", "1", "--all-features",
                "--locked", "--filter-platform", host(),
            ]
        )
    )
    packages = {p["id"]: p for p in metadata["packages"]}
    graph = {node["id"]: node for node in metadata["resolve"]["nodes"]}
    failed = False
    for member in metadata["workspace_members"]:
        package = packages[member]
        if package.get("publish") == []:
            continue
        ours = package.get("rust_version")
        if not ours:
            print(f"{package['name']}: no rust-version in Cargo.toml")
            failed = True
            continue
        newest, seen, todo = None, set(), [member]
        while todo:
            node = graph[todo.pop()]
            for dep in node["deps"]:
                kinds = {kind["kind"] for kind in dep["dep_kinds"]}
                if not kinds & {None, "build"} or dep["pkg"] in seen:
                    continue
                seen.add(dep["pkg"])
                todo.append(dep["pkg"])
                needs = packages[dep["pkg"]].get("rust_version")
                if needs and (newest is None or version(needs) > version(newest[1])):
                    newest = (packages[dep["pkg"]]["name"], needs)
        if newest and version(newest[1]) > version(ours):
            print(
                f"{package['name']}: rust-version {ours}, but {newest[0]} needs {newest[1]}"
            )
            failed = True
        else:
            needs = f"{newest[0]} {newest[1]}" if newest else "none declared"
            print(
                f"{package['name']}: rust-version {ours}; {len(seen)} dependencies, "
                f"the newest needs {needs}"
            )
    sys.exit(1 if failed else 0)


main()
