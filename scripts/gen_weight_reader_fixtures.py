#!/usr/bin/env python3
"""Writes the fixtures of native/tests/weight_readers_test.cc into test/fixtures/weight-readers/.

Needs PyTorch (Debian: apt install python3-torch, then run with /usr/bin/python3). The outputs
are committed; run this only to change them:

    /usr/bin/python3 scripts/gen_weight_reader_fixtures.py

Each case directory holds model.pt (torch.save), model.safetensors (written here byte by byte,
independently of any safetensors library) and expected.json with every tensor's shape and its
values upcast to float32 and then to Python floats (non-finite values as "nan"/"inf"/"-inf").
refuse/ holds files the readers must reject; manifest.json lists the cases and, for each
refused file, substrings its error message must contain.
"""
import io
import json
import math
import random
import shutil
import struct
import zipfile
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent.parent / "test" / "fixtures" / "weight-readers"

SAFETENSORS_DTYPES = {
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.float64: "F64",
}


def expected_value(x):
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def write_expected(case_dir, tensors):
    expected = {
        name: {
            "shape": list(t.shape),
            "values": [expected_value(v) for v in t.detach().to(torch.float32).flatten().tolist()],
        }
        for name, t in tensors.items()
    }
    (case_dir / "expected.json").write_text(json.dumps({"tensors": expected}, indent=1) + "\n")


def raw_bytes(t):
    """Little-endian bytes of a tensor's elements in row-major order."""
    t = t.detach().contiguous()
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def write_safetensors(path, tensors):
    header = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name, t in tensors.items():
        blob = raw_bytes(t)
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def write_case(name, saved, expected=None, **save_args):
    """saved: the object given to torch.save; expected: the tensors as a reader must return them."""
    case_dir = OUT / name
    case_dir.mkdir(parents=True)
    torch.save(saved, case_dir / "model.pt", **save_args)
    tensors = dict(expected if expected is not None else saved)
    write_safetensors(case_dir / "model.safetensors", tensors)
    write_expected(case_dir, tensors)
    return name


# ---- hand-assembled pickles and torch-like archives for what torch.save would never write ----

def op_unicode(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def op_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_int(value):
    return b"J" + struct.pack("<i", value)


def tensor_v2(key, storage_class, numel, offset, size, stride):
    """_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()) as protocol 2."""
    pid = b"(" + op_unicode("storage") + op_global("torch", storage_class) + op_unicode(key)
    pid += op_unicode("cpu") + op_int(numel) + b"tQ"
    sizes = b"(" + b"".join(op_int(s) for s in size) + b"t"
    strides = b"(" + b"".join(op_int(s) for s in stride) + b"t"
    hooks = op_global("collections", "OrderedDict") + b")R"
    return (op_global("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + op_int(offset) +
            sizes + strides + b"\x89" + hooks + b"tR")


def state_dict_pickle(items):
    """A protocol 2 pickle of {name: value_ops} built from already-assembled value opcodes."""
    body = b"".join(op_unicode(name) + value for name, value in items)
    return b"\x80\x02}(" + body + b"u."


def op_long1(value):
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def hand_assembled_case_pickle():
    """A state dict using every opcode the reader accepts that torch.save rarely writes.

    'w' is _rebuild_tensor_v3 over an untyped (byte) storage read as float16, with offset 1 and
    stride 2; BUILD attaches a state dict of assorted values, which the reader must skip.
    """
    pid = (b"(" + op_unicode("storage") + op_global("torch", "UntypedStorage") +
           b"U\x010" + b"T\x03\x00\x00\x00cpu" + b"M\x0a\x00" + b"t")
    tensor = (op_global("torch._utils", "_rebuild_tensor_v3") + b"r\x00\x01\x00\x00" + b"(" + pid + b"Q" +
              b"K\x01" + op_long1(2) + b"\x85" + op_long1(2) + b"\x85" + b"\x88" +
              op_global("collections", "OrderedDict") + b")R" + op_global("torch", "float16") +
              b"tR")
    state = (b"(" + b"\x8c\x01f" + b"G" + struct.pack(">d", 0.5) +
             b"\x8c\x01l" + b"](K\x01K\x02e" +
             b"\x8c\x01n" + b"N" + b"\x8c\x01b" + b"\x89" +
             b"\x8c\x01t" + b"K\x01K\x02K\x03\x87" +
             b"\x8c\x02u8" + b"\x8d" + struct.pack("<Q", 2) + b"hi" +
             b"\x8c\x03neg" + op_long1(-300) + b"\x8c\x03big" + op_long1(1 << 40) +
             b"\x8c\x04list" + b"(K\x07l" + b"\x8c\x05again" + b"j\x00\x01\x00\x00" + b"d")
    return b"\x80\x04\x95" + struct.pack("<Q", 0) + b"\x8c\x0bcollections\x8c\x0bOrderedDict\x93\x94)R\x94" + \
        b"(" + op_unicode("w") + tensor + b"u" + state + b"b."


def add_file(archive, name, data, compression=zipfile.ZIP_STORED):
    """Adds an entry with a fixed timestamp, so regenerating gives identical bytes."""
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = compression
    archive.writestr(info, data)


def write_torch_like_zip(path, pickle_bytes, storages=None):
    with zipfile.ZipFile(path, "w") as archive:
        add_file(archive, "archive/data.pkl", pickle_bytes)
        for key, blob in (storages or {}).items():
            add_file(archive, f"archive/data/{key}", blob)
        add_file(archive, "archive/version", b"3\n")


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    torch.manual_seed(20240611)
    cases = []

    linear = torch.nn.Linear(4, 3).half()
    cases.append(write_case("fp16_linear", linear.state_dict()))

    special = [0.0, -0.0, 1.0, -2.5, 65504.0, -65504.0, 2.0 ** -14, 2.0 ** -24, 3.0 * 2.0 ** -20,
               -(2.0 ** -24) * 1023, float("inf"), float("-inf"), float("nan"), 0.1, 1.0 / 3.0]
    cases.append(write_case("fp16_special", {"values": torch.tensor(special, dtype=torch.float16)}))

    bf16 = {"weight": torch.randn(2, 5).to(torch.bfloat16),
            "edges": torch.tensor([1e-40, 3.0e38, -float("inf"), float("nan"), -0.0, 1.0 / 3.0],
                                  dtype=torch.bfloat16)}
    cases.append(write_case("bf16", bf16))

    fp32 = {"weight": torch.randn(3, 4), "bias": torch.randn(3), "scalar": torch.tensor(0.625),
            "empty": torch.zeros(0, 4)}
    cases.append(write_case("fp32", fp32))
    cases.append(write_case("fp32_protocol4", {"w": torch.randn(2, 3)}, pickle_protocol=4))
    cases.append(write_case("fp64", {"w": torch.randn(2, 2, dtype=torch.float64) * 1e3,
                                     "tiny": torch.tensor([1e-300, -1e300], dtype=torch.float64)}))

    base = torch.randn(3, 5)
    cases.append(write_case("noncontiguous", {"transposed": base.t()}))

    grid = torch.arange(24, dtype=torch.float32).reshape(4, 6).half()
    views = {"row": grid[1], "column": grid[:, 2], "block": grid[1:3, 2:5], "all": grid,
             "every_other": grid[::2, 1::2]}
    cases.append(write_case("shared_storage", views))

    # Parameters and rebuild variants: save a module's parameters themselves, not detached data.
    params = {name: p for name, p in torch.nn.Linear(2, 2).named_parameters()}
    cases.append(write_case("parameters", params,
                            expected={k: v.detach() for k, v in params.items()}))

    hand_dir = OUT / "hand_assembled"
    hand_dir.mkdir()
    halves = struct.pack("<5e", 1.0, 2.0, 3.0, 4.0, 5.0)
    write_torch_like_zip(hand_dir / "model.pt", hand_assembled_case_pickle(), {"0": halves})
    hand_expected = {"w": torch.tensor([2.0, 4.0], dtype=torch.float16)}
    write_safetensors(hand_dir / "model.safetensors", hand_expected)
    write_expected(hand_dir, hand_expected)
    cases.append("hand_assembled")

    refuse = OUT / "refuse"
    refuse.mkdir()
    refusals = []

    def refusal(name, contains):
        refusals.append({"file": f"refuse/{name}", "contains": contains})
        return refuse / name

    write_torch_like_zip(refusal("global_os_system.pt", ["global 'os.system'",
                                                         "weights_only=True",
                                                         "torch.save(module.state_dict(), path)"]),
                         b"\x80\x02" + op_global("os", "system") + op_unicode("echo pwned") +
                         b"\x85R.")
    stack_global = (b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x0b" + b"print('hi')" +
                    b"\x85R.")
    write_torch_like_zip(refusal("stack_global_eval.pt", ["global 'builtins.eval'"]), stack_global)
    write_torch_like_zip(refusal("inst_opcode.pt", ["opcode INST"]),
                         b"\x80\x02(X\x02\x00\x00\x00idios\nsystem\n.")
    write_torch_like_zip(refusal("reduce_storage_class.pt", ["calls 'torch.FloatStorage'"]),
                         b"\x80\x02" + op_global("torch", "FloatStorage") + b")R.")
    torch.save([torch.ones(2)], refusal("top_level_list.pt", ["top level is a list"]))
    torch.save({"step": 3}, refusal("dict_of_int.pt", ["entry 'step' holds an int"]))
    write_torch_like_zip(refusal("deep_nesting.pt", ["deeper than 64"]),
                         b"\x80\x02" + b"(" * 1000 + b"l" * 1000 + b".")
    write_torch_like_zip(refusal("self_cycle.pt", ["stored inside itself"]),
                         b"\x80\x02]q\x00h\x00a.")
    write_torch_like_zip(refusal("huge_memo_index.pt", ["memo lookup"]),
                         b"\x80\x02j\xff\xff\xff\xff.")
    write_torch_like_zip(refusal("huge_long_binunicode.pt", ["truncated"]),
                         b"\x80\x02X\xff\xff\xff\x7f.")
    out_of_bounds = tensor_v2("0", "FloatStorage", 4, 2, [3], [1])
    write_torch_like_zip(refusal("view_outside_storage.pt", ["reaches outside its storage"]),
                         state_dict_pickle([("w", out_of_bounds)]),
                         {"0": struct.pack("<4f", 1, 2, 3, 4)})
    huge = tensor_v2("0", "FloatStorage", 4, 0, [1 << 30, 1 << 30], [0, 0])
    write_torch_like_zip(refusal("expanded_huge.pt", ["more elements than a file of this size"]),
                         state_dict_pickle([("w", huge)]), {"0": struct.pack("<4f", 1, 2, 3, 4)})
    write_torch_like_zip(refusal("missing_storage.pt", ["archive/data/7", "missing"]),
                         state_dict_pickle([("w", tensor_v2("7", "FloatStorage", 1, 0, [1], [1]))]))

    valid_pt = (OUT / "fp16_linear" / "model.pt").read_bytes()
    (refuse / "truncated.pt").write_bytes(valid_pt[: len(valid_pt) // 2])
    refusals.append({"file": "refuse/truncated.pt", "contains": ["end-of-central-directory"]})
    valid_st = (OUT / "fp16_linear" / "model.safetensors").read_bytes()
    (refuse / "truncated.safetensors").write_bytes(valid_st[:-3])
    refusals.append({"file": "refuse/truncated.safetensors", "contains": ["outside the"]})
    rng = random.Random(7)
    (refuse / "random.bin").write_bytes(bytes(rng.randrange(256) for _ in range(64)))
    refusals.append({"file": "refuse/random.bin", "contains": ["neither a torch.save() zip"]})
    with zipfile.ZipFile(io.BytesIO(valid_pt)) as source:
        with zipfile.ZipFile(refuse / "deflate.pt", "w") as target:
            for info in source.infolist():
                add_file(target, info.filename, source.read(info.filename), zipfile.ZIP_DEFLATED)
    refusals.append({"file": "refuse/deflate.pt", "contains": ["zip method 8, deflate"]})
    torch.save({"w": torch.ones(2)}, refuse / "legacy.pt", _use_new_zipfile_serialization=False)
    refusals.append({"file": "refuse/legacy.pt", "contains": ["legacy (non-zip) torch.save format"]})
    with zipfile.ZipFile(refuse / "not_torch.zip", "w") as archive:
        add_file(archive, "readme.txt", b"hello")
    refusals.append({"file": "refuse/not_torch.zip", "contains": ["no '<name>/data.pkl' entry"]})

    def safetensors_variant(name, header, data, contains):
        text = json.dumps(header).encode()
        (refuse / name).write_bytes(struct.pack("<Q", len(text)) + text + data)
        refusals.append({"file": f"refuse/{name}", "contains": contains})

    safetensors_variant("int64.safetensors",
                        {"ids": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8),
                        ["dtype \"I64\"", "not supported"])
    safetensors_variant("offsets_outside.safetensors",
                        {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8),
                        ["tensor 'w'", "outside the 8-byte data section"])
    safetensors_variant("size_mismatch.safetensors",
                        {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8),
                        ["covers 8 bytes", "needs 12 bytes of float32"])
    (refuse / "bad_json.safetensors").write_bytes(struct.pack("<Q", 9) + b'{"w": [1,')
    refusals.append({"file": "refuse/bad_json.safetensors", "contains": ["invalid JSON"]})

    manifest = {"cases": cases, "refusals": refusals}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {len(cases)} cases and {len(refusals)} refusals ({total} bytes) to {OUT}")


if __name__ == "__main__":
    main()
