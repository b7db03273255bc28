"""Generate the Python stubs and Envoy's descriptor set from protos/.

`python tools/protogen.py` writes into cortado/v1/ and cortado/mesh/envoy/cortado.pb;
`python tools/protogen.py --check` regenerates into a temporary folder and
exits 1, naming the files, if the committed output differs.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import google.api.annotations_pb2
import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = Path("cortado") / "v1"
DESCRIPTOR = Path("cortado") / "mesh" / "envoy" / "cortado.pb"


def _include_dirs() -> list[str]:
    # google.api is a namespace package without __file__: use its module's
    # location to find the site-packages root that holds google/api/*.proto.
    googleapis_root = Path(google.api.annotations_pb2.__file__).resolve().parents[2]
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    return [str(PROTO_ROOT), str(googleapis_root), str(well_known)]


def generate(out: Path) -> None:
    """Write stubs under out/cortado/v1 and the descriptor set under out/cortado/mesh/envoy."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    (out / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    (out / DESCRIPTOR).parent.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    args = [
        "protoc",
        *(f"-I{d}" for d in _include_dirs()),
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        f"--descriptor_set_out={out / DESCRIPTOR}",
        "--include_imports",
        "--include_source_info",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out / PACKAGE_DIR / "__init__.py").write_text('"""Generated protobuf contracts of Cortado (make proto)."""\n')


def _outputs(base: Path) -> set[Path]:
    files = {p.relative_to(base) for p in (base / PACKAGE_DIR).glob("*") if p.is_file()}
    return files | {DESCRIPTOR}


def main() -> int:
    """Generate, or with --check compare against, the committed output."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed output is stale")
    options = parser.parse_args()
    if not options.check:
        for stale in (ROOT / PACKAGE_DIR).glob("*_pb2*"):
            stale.unlink()
        generate(ROOT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        expected = _outputs(fresh)
        present = _outputs(ROOT)
        differing = sorted(
            str(p)
            for p in expected | present
            if not (ROOT / p).is_file()
            or not (fresh / p).is_file()
            or not filecmp.cmp(ROOT / p, fresh / p, shallow=False)
        )
        shutil.rmtree(fresh, ignore_errors=True)
    if differing:
        print("generated files are stale; run `make proto`:", *differing, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
