"""Regenerate the *_pb2 modules from the .proto files: `python -m serving.wire.generate [OUT_ROOT]`.

Runs grpcio-tools' protoc, then points each module at the private descriptor pool (pool.py) instead of
protobuf's default one, so the subset can live beside TensorFlow's protos in one process.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "serving" / "wire").glob("*.proto"))
SERVICES = "serving/wire/services.proto"
DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
PRIVATE_POOL = "_wire_pool.POOL.AddSerializedFile("
POOL_IMPORT = "from serving.wire import pool as _wire_pool  # private pool, see pool.py\n"


def generate(out_root: Path) -> list[Path]:
    """Write the generated modules under `out_root` (the repository root by default); returns them."""
    import grpc_tools
    from grpc_tools import protoc

    # protoc needs the well-known types (wrappers, any) that grpcio-tools ships.
    includes = [f"-I{ROOT}", f"-I{Path(grpc_tools.__file__).parent / '_proto'}"]
    files = [str(ROOT / proto) for proto in PROTOS]
    args = ["protoc", *includes, f"--python_out={out_root}", f"--pyi_out={out_root}", *files]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + " ".join(PROTOS))
    services = ["protoc", *includes, f"--grpc_python_out={out_root}", str(ROOT / SERVICES)]
    if protoc.main(services) != 0:
        raise RuntimeError(f"protoc failed on {SERVICES}")
    written = []
    for proto in PROTOS:
        module = out_root / proto.replace(".proto", "_pb2.py")
        text = module.read_text()
        if DEFAULT_POOL not in text:
            raise RuntimeError(f"{module}: protoc output no longer uses the default pool call")
        text = text.replace(DEFAULT_POOL, PRIVATE_POOL)
        text = text.replace(
            "\n_sym_db = _symbol_database.Default()\n",
            "\n_sym_db = _symbol_database.Default()\n" + POOL_IMPORT,
            1,
        )
        module.write_text(text)
        written += [module, module.with_suffix(".pyi")]
    written.append(out_root / SERVICES.replace(".proto", "_pb2_grpc.py"))
    return written


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
