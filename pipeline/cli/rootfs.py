"""`nfsroot rootfs build|install|rollback`: the root built from the spec's rootfs section, as generations."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli import EXIT_OK
from pipeline.errors import PipelineError
from pipeline.rootbuild.build import build_root
from pipeline.rootbuild.generations import generations_dir, install_generation, rollback_generation
from pipeline.rootbuild.prepare import prepare_generation
from pipeline.spec.load import load_cluster
from pipeline.spec.model import Cluster


def _cluster(args: argparse.Namespace) -> Cluster:
    cluster, _ = load_cluster(Path(args.file))
    if cluster.rootfs is None:
        raise PipelineError(f"{args.file} has no rootfs section: its root is adopted, not built")
    return cluster


def _target(args: argparse.Namespace, cluster: Cluster) -> Path:
    return Path(args.target) if args.target else Path(args.file).parent / cluster.deploy.root


def cmd_build(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    assert cluster.rootfs is not None
    tarball, built = build_root(cluster.rootfs, Path(args.build) / "rootfs")
    print(f"{'built' if built else 'cached'}: {tarball}")
    return EXIT_OK


def cmd_install(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    assert cluster.rootfs is not None
    if not (Path(args.build) / "manifest.json").is_file():  # needed before the switch: fail before building
        raise PipelineError(f"{args.build}/manifest.json does not exist: run `doit` first")
    tarball, _ = build_root(cluster.rootfs, Path(args.build) / "rootfs")
    key = tarball.name.removeprefix("rootfs-").removesuffix(".tar")
    share = cluster.root_share.path
    target = _target(args, cluster)
    build = Path(args.build)

    def prepare(generation: str) -> None:  # the manifest's entries for the root, in the new generation first
        changed = prepare_generation(build, target, share, generation, cluster.deploy.capabilities)
        print(f"{generation}: {changed} changes from the build applied before the switch")

    switch = install_generation(target, share, tarball, key, cluster.deploy.keep_initrds, prepare)
    print(f"{share} -> {generations_dir(share)}/{switch.current} (was {switch.previous or 'nothing'})")
    print("Reload the exports (deploy.reload) so new boots use it; running nodes stay on theirs until rebooted.")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    cluster, _ = load_cluster(Path(args.file))
    share = cluster.root_share.path
    switch = rollback_generation(_target(args, cluster), share)
    print(f"{share} -> {generations_dir(share)}/{switch.current} (was {switch.previous})")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rootfs", help="build the root from the spec's rootfs section; install it as a generation")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, handler, text in (
        ("build", cmd_build, "mmdebstrap the root into build/rootfs/ (cached by its inputs; needs root)"),
        ("install", cmd_install, "build if needed, unpack as a new generation and switch the root share to it"),
        ("rollback", cmd_rollback, "switch the root share back to the previous generation"),
    ):
        v = verbs.add_parser(name, help=text)
        v.add_argument("--build", default="build", help="the build directory (default: build)")
        v.add_argument("--target", help="the target root (default: deploy.root of the spec)")
        v.set_defaults(handler=handler)
