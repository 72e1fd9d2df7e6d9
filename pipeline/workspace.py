"""Every path the build uses, named in one place (mkosi's context idea): tasks, check and tests share it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Templates live at the top of the repository (the package is installed editable, see README).
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


@dataclass(frozen=True)
class Workspace:
    spec_file: Path  # cluster.yaml
    build: Path  # everything generated; `doit clean` removes it
    generated: Path  # committed copies of the text outputs, for pull-request review

    @classmethod
    def from_env(cls, cwd: Path | None = None) -> Workspace:
        """NFSROOT_SPEC, NFSROOT_BUILD and NFSROOT_GENERATED override the defaults (relative to cwd)."""
        base = cwd or Path()  # relative paths keep messages short: "cluster.yaml:3:12: ..."
        return cls(
            spec_file=base / os.environ.get("NFSROOT_SPEC", "cluster.yaml"),
            build=base / os.environ.get("NFSROOT_BUILD", "build"),
            generated=base / os.environ.get("NFSROOT_GENERATED", "generated"),
        )

    @property
    def base(self) -> Path:
        """Relative paths in the spec (repack source, deploy root) are relative to the spec's directory."""
        return self.spec_file.parent

    @property
    def spec_dir(self) -> Path:
        return self.build / "spec"

    @property
    def gateway(self) -> Path:
        return self.build / "gateway"

    @property
    def review(self) -> Path:
        return self.build / "review"

    @property
    def parts(self) -> Path:
        return self.build / "parts"

    @property
    def manifest(self) -> Path:
        return self.build / "manifest.json"

    def seal(self, task: str) -> Path:
        """What a task wrote and read, with checksums (pipeline/seal.py): lets `doit` see a damaged build/."""
        return self.build / ".seals" / f"{task}.json"

    def part_file(self, part: str) -> Path:
        return self.spec_dir / f"{part}.json"

    def fragment(self, family: str) -> Path:
        return self.parts / f"{family}.json"

    def staged(self, gateway_path: str) -> Path:
        return self.gateway / gateway_path.lstrip("/")
