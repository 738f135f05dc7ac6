"""A small GGUF reader: header, metadata and tensor table, without loading tensors.

gguf-py's GGUFReader builds numpy views of every field and tensor (about 10 s
for a 151k-token vocabulary); the launcher and the download check only need
a handful of keys and a proof that the file is well-formed.
"""
from __future__ import annotations

import struct
from pathlib import Path

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# bytes per block and elements per block of each ggml type, for the size check
_BLOCK = {0: (4, 1), 1: (2, 1), 2: (18, 32), 3: (20, 32), 6: (22, 32), 7: (24, 32), 8: (34, 32), 9: (36, 32),
          10: (84, 256), 11: (110, 256), 12: (144, 256), 13: (176, 256), 14: (210, 256), 15: (292, 256),
          24: (1, 1), 25: (2, 1), 26: (4, 1), 27: (8, 1), 28: (8, 1), 30: (2, 1)}


class GGUFError(ValueError):
    pass


class _Reader:
    def __init__(self, f):
        self.f = f

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        b = self.f.read(size)
        if len(b) != size:
            raise GGUFError("file ends inside the header")
        return struct.unpack(fmt, b)[0]

    def string(self) -> str:
        n = self.take("<Q")
        if n > 1 << 24:
            raise GGUFError("implausible string length in header")
        return self.f.read(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep_array: bool = False):
        """A scalar or string; arrays (the vocabulary, merges) are skipped and read as None, unless
        `keep_array`."""
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            itype, count = self.take("<I"), self.take("<Q")
            if keep_array:
                return [self.value(itype) for _ in range(count)]
            if itype in _SCALARS:
                self.f.seek(struct.calcsize(_SCALARS[itype]) * count, 1)
            else:
                for _ in range(count):
                    self.value(itype)
            return None
        raise GGUFError(f"unknown metadata value type {vtype}")


CONTROL = 3  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL


def control_tokens(path: str | Path) -> set[str]:
    """The texts of the vocabulary's control tokens (its chat markers, BOS, EOS): what llama.cpp
    parses as special tokens in a prompt, and nothing else does."""
    arrays: dict = {}
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFError(f"{path} is not a GGUF file (bad magic)")
        r = _Reader(f)
        r.take("<I")
        _, n_kv = r.take("<Q"), r.take("<Q")
        for _ in range(n_kv):
            key = r.string()
            wanted = key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type")
            arrays[key] = r.value(r.take("<I"), keep_array=wanted)
            if all(arrays.get(k) is not None for k in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type")):
                break
    tokens, types = arrays.get("tokenizer.ggml.tokens") or [], arrays.get("tokenizer.ggml.token_type") or []
    return {t for t, kind in zip(tokens, types) if kind == CONTROL}


def read_gguf(path: str | Path) -> tuple[dict, list[dict]]:
    """(metadata, tensors); raises GGUFError if the file is not well-formed GGUF."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFError(f"{path} is not a GGUF file (bad magic)")
        r = _Reader(f)
        version = r.take("<I")
        if version not in (2, 3):
            raise GGUFError(f"unsupported GGUF version {version}")
        n_tensors, n_kv = r.take("<Q"), r.take("<Q")
        meta: dict = {"GGUF.version": version}
        for _ in range(n_kv):
            key = r.string()
            meta[key] = r.value(r.take("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = r.string()
            dims = [r.take("<Q") for _ in range(r.take("<I"))]
            tensors.append({"name": name, "dims": dims, "type": r.take("<I"), "offset": r.take("<Q")})
        align = int(meta.get("general.alignment", 32))
        data_start = (f.tell() + align - 1) // align * align
    for t in tensors:
        n = 1
        for d in t["dims"]:
            n *= d
        bpb, epb = _BLOCK.get(t["type"], (0, 1))
        end = data_start + t["offset"] + n * bpb // epb
        if end > size:
            raise GGUFError(f"{path}: tensor {t['name']} ends at byte {end}, past the end of the file ({size})")
    return meta, tensors
