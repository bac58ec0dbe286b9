"""Pipeline packages: build, write, read (checked) and unpack `.treadle` files."""

from treadle.packaging.package import (
    Manifest,
    Package,
    build_package,
    parse_source,
    read_package,
    source_of,
    unpack,
    write_package,
)

__all__ = [
    "Manifest",
    "Package",
    "build_package",
    "parse_source",
    "read_package",
    "source_of",
    "unpack",
    "write_package",
]
