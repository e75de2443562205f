"""Writing the fixture models in the layouts users find: the BAAI/bge-m3 snapshot (ONNX with
external data, .pt or .safetensors heads) and heads-baked exports under both output namings."""

import copy
import inspect
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import onnx
import onnx.numpy_helper
import torch
import torch.nn.functional as F
from torch import nn

from m3_fixture_tokenizer import *  # noqa: F401,F403,E402
from m3_reference_model import *  # noqa: F401,F403,E402

def model_config(cfg):
    return {
        "architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta",
        "hidden_size": cfg["hidden_size"], "num_hidden_layers": cfg["num_hidden_layers"],
        "num_attention_heads": cfg["num_attention_heads"],
        "intermediate_size": cfg["intermediate_size"],
        "max_position_embeddings": cfg["max_position_embeddings"],
        "vocab_size": cfg["vocab_size"], "type_vocab_size": 1, "pad_token_id": PAD,
        "bos_token_id": BOS, "eos_token_id": EOS, "layer_norm_eps": LN_EPS,
        "hidden_act": "gelu", "position_embedding_type": "absolute", "torch_dtype": "float32",
    }


def write_json(path, obj, indent=2):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")


def export_onnx(module, path, output_names, output_axes):
    """torch.onnx.export with int64 inputs and dynamic batch/sequence axes."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ids = torch.tensor([[BOS, 10, 11, 12, 13, EOS], [BOS, 14, 15, EOS, PAD, PAD]])
    mask = ids.ne(PAD).long()
    seq_axes = {0: "batch", 1: "sequence"}
    # Newer torch defaults to the dynamo exporter, which turns small constants (Unsqueeze axes)
    # into initializers that ONNX Runtime cannot shape-infer once moved to external data; the
    # TorchScript exporter gives the same graph on every torch version.
    extra = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(
        module, (ids, mask), path, opset_version=14, do_constant_folding=True,
        input_names=["input_ids", "attention_mask"], output_names=output_names,
        dynamic_axes={"input_ids": seq_axes, "attention_mask": seq_axes, **output_axes}, **extra)


def move_weights_external(path, dest=None):
    """Rewrite an exported graph the way the BAAI snapshot ships it: all initializers in one
    side file `model.onnx_data` next to `model.onnx` (at `dest`, default in place)."""
    dest = dest or path
    model = onnx.load(path)
    data = os.path.join(os.path.dirname(dest), "model.onnx_data")
    if os.path.exists(data):
        os.remove(data)  # save_model appends to an existing data file
    onnx.save_model(model, dest, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx_data", size_threshold=0)


def rename_outputs(src, dst, mapping):
    model = onnx.load(src)
    for node in model.graph.node:
        node.output[:] = [mapping.get(o, o) for o in node.output]
        node.input[:] = [mapping.get(i, i) for i in node.input]
    for out in model.graph.output:
        out.name = mapping.get(out.name, out.name)
    onnx.save_model(model, dst)


def pin_last_dim(path, outputs, size):
    """torch 1.13's shape inference loses the static hidden size through F.normalize and
    declares it symbolic ('Div..._dim_1'); restore it so the graph states its width."""
    model = onnx.load(path)
    for out in model.graph.output:
        if out.name in outputs:
            out.type.tensor_type.shape.dim[-1].dim_value = size  # clears the dim_param
    onnx.save_model(model, path)


def check_onnx(path, inputs, outputs):
    onnx.checker.check_model(path)  # path form, so external data is resolved
    graph = onnx.load(path, load_external_data=False).graph
    assert [i.name for i in graph.input] == inputs, [i.name for i in graph.input]
    assert [o.name for o in graph.output] == outputs, [o.name for o in graph.output]


def save_pt_heads(heads, root):
    for name in ("colbert", "sparse"):
        linear = copy.deepcopy(getattr(heads, name))
        torch.save(linear.half().state_dict(), os.path.join(root, f"{name}_linear.pt"))


def write_safetensors(path, tensors):
    """Minimal safetensors writer: u64 LE header size, JSON header, raw little-endian data."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        raw = tensors[name].detach().half().numpy().astype("<f2").tobytes()
        header[name] = {"dtype": "F16", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # align the data section, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def write_snapshot(root, encoder, heads, cfg, tok, pt_heads=True):
    """BAAI/bge-m3 snapshot layout: onnx/model.onnx (+ external data) giving last_hidden_state,
    heads next to it as files, tokenizer.json and config.json at the root."""
    os.makedirs(root, exist_ok=True)
    onnx_path = os.path.join(root, "onnx", "model.onnx")
    # Graphs over protobuf's 2 GB limit come out of the exporter with one external file per
    # tensor; export into a scratch folder so only the single model.onnx_data is left.
    scratch = os.path.join(root, "onnx", "export-tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    export_onnx(HiddenOnly(encoder), os.path.join(scratch, "model.onnx"), ["last_hidden_state"],
                {"last_hidden_state": {0: "batch", 1: "sequence"}})
    move_weights_external(os.path.join(scratch, "model.onnx"), onnx_path)
    shutil.rmtree(scratch)
    check_onnx(onnx_path, ["input_ids", "attention_mask"], ["last_hidden_state"])
    write_json(os.path.join(root, "tokenizer.json"), tok, indent=None)
    write_json(os.path.join(root, "config.json"), model_config(cfg))
    if pt_heads:
        save_pt_heads(heads, root)


def write_baked(root, encoder, heads, cfg, tok, alt_root):
    names = ["dense_vecs", "sparse_vecs", "colbert_vecs"]
    path = os.path.join(root, "model.onnx")
    export_onnx(BakedM3(encoder, heads), path, names, {
        "dense_vecs": {0: "batch"}, "sparse_vecs": {0: "batch", 1: "sequence"},
        "colbert_vecs": {0: "batch", 1: "colbert_rows"}})
    pin_last_dim(path, ["dense_vecs", "colbert_vecs"], cfg["hidden_size"])
    check_onnx(path, ["input_ids", "attention_mask"], names)
    alt_names = ["dense_embeddings", "sparse_weights", "colbert_vectors"]
    os.makedirs(alt_root, exist_ok=True)
    alt_path = os.path.join(alt_root, "model.onnx")
    rename_outputs(path, alt_path, dict(zip(names, alt_names)))
    check_onnx(alt_path, ["input_ids", "attention_mask"], alt_names)
    for d in (root, alt_root):
        write_json(os.path.join(d, "tokenizer.json"), tok, indent=None)
        write_json(os.path.join(d, "config.json"), model_config(cfg))


def write_half_outputs(src_root, onnx_rel, root, outputs, elem_type):
    """The model in src_root with the graph outputs `outputs` cast to a 16-bit float type (what
    fp16 exports give): each output's producer writes `<name>_f32`, a Cast makes `<name>` from
    it. Everything else (weights, heads, tokenizer, config) is copied, so the outputs are exactly
    the fp32 model's, rounded."""
    src = os.path.join(src_root, onnx_rel)
    model = onnx.load(src)  # external data, if any, is read in
    graph = model.graph
    for name in outputs:
        for node in graph.node:
            node.output[:] = [f"{name}_f32" if o == name else o for o in node.output]
        graph.node.append(onnx.helper.make_node("Cast", [f"{name}_f32"], [name], to=elem_type,
                                                name=f"cast_{name}"))
        out = next(o for o in graph.output if o.name == name)
        out.type.tensor_type.elem_type = elem_type
    dst = os.path.join(root, onnx_rel)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    onnx.save(model, dst)  # small enough for one file
    onnx.checker.check_model(dst)
    for rel in os.listdir(src_root):
        if os.path.isfile(os.path.join(src_root, rel)) and not rel.endswith((".onnx", ".onnx_data")):
            shutil.copyfile(os.path.join(src_root, rel), os.path.join(root, rel))


def write_int32_inputs(src_root, onnx_rel, root):
    """The model in src_root taking int32 input_ids / attention_mask (as some exports do): each
    input becomes int32 and a Cast gives the graph its int64 tensor back, so the outputs are
    exactly the int64 model's. Everything else is copied, the external weights included."""
    src = os.path.join(src_root, onnx_rel)
    model = onnx.load(src, load_external_data=False)
    graph = model.graph
    casts = []
    for inp in graph.input:
        if inp.name not in ("input_ids", "attention_mask"):
            continue
        wide = f"{inp.name}_int64"
        for node in graph.node:
            node.input[:] = [wide if i == inp.name else i for i in node.input]
        casts.append(onnx.helper.make_node("Cast", [inp.name], [wide], to=onnx.TensorProto.INT64,
                                           name=f"cast_{inp.name}"))
        inp.type.tensor_type.elem_type = onnx.TensorProto.INT32
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    copy_model_dir(src_root, onnx_rel, model, root)


def copy_model_dir(src_root, onnx_rel, model, root):
    """Writes `model` as root/onnx_rel and copies every other file of src_root (the external
    weights included), then checks the graph."""
    dst = os.path.join(root, onnx_rel)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    onnx.save(model, dst)
    for dirpath, _, files in os.walk(src_root):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), src_root)
            if rel != onnx_rel:
                os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
                shutil.copyfile(os.path.join(src_root, rel), os.path.join(root, rel))
    onnx.checker.check_model(dst)


def attention_blocks(graph):
    """(matmul, div, add, softmax) of each attention block of an eager-exported graph, in order."""
    producer = {o: n for n in graph.node for o in n.output}
    blocks = []
    for node in graph.node:
        if node.op_type == "Softmax":
            add = producer[node.input[0]]
            div = producer[add.input[0]]
            blocks.append((producer[div.input[0]], div, add, node))
    return blocks


def constant_value(graph, name):
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return float(onnx.numpy_helper.to_array(node.attribute[0].t))
    raise KeyError(name)


def write_attention_variants(src_root, onnx_rel, sdpa_root, partial_root):
    """Two rewrites of src_root's eager attention that compute the same outputs, for the fused
    attention's pattern matcher:
    - sdpa_root: block 0 as torch exports scaled_dot_product_attention (q and k each scaled by
      c^-1/2 before the MatMul, the mask added on the left); block 1 scaled by Mul with a scalar
      initializer on the left, Softmax with an explicit axis 3.
    - partial_root: block 0 with the heads folded into the batch (rank-3 q, kt, v and a
      [B*H, 1, L] mask, as some exports give); block 1's attention probabilities also read by a
      dangling Identity, so only block 0 may be fused."""
    model = onnx.load(os.path.join(src_root, onnx_rel), load_external_data=False)
    graph = model.graph
    (mm0, div0, add0, _), (_, div1, _, sm1) = [[n.name for n in block] for block in attention_blocks(graph)[:2]]
    c0 = constant_value(graph, next(n for n in graph.node if n.name == div0).input[1])
    root_scale = onnx.numpy_helper.from_array(np.array(c0 ** -0.5, dtype=np.float32))
    nodes = []
    for node in graph.node:
        if node.name == mm0:
            nodes.append(onnx.helper.make_node("Constant", [], ["sdpa_scale_0"], value=root_scale, name="sdpa_scale_0"))
            for i, side in enumerate(("q", "k")):
                nodes.append(onnx.helper.make_node("Mul", [node.input[i], "sdpa_scale_0"], [f"sdpa_{side}_0"], name=f"sdpa_{side}_0"))
            node.input[:] = ["sdpa_q_0", "sdpa_k_0"]
            scores0 = node.output[0]
        elif node.name == div0:
            continue
        elif node.name == add0:
            node.input[:] = [node.input[1], scores0]
        elif node.name == div1:
            c1 = constant_value(graph, node.input[1])
            graph.initializer.append(onnx.numpy_helper.from_array(np.array(1.0 / c1, dtype=np.float32), "attn_scale_1"))
            node = onnx.helper.make_node("Mul", ["attn_scale_1", node.input[0]], [node.output[0]], name="attn_scale_mul_1")
        elif node.name == sm1:
            del node.attribute[:]
            node.attribute.append(onnx.helper.make_attribute("axis", 3))
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    copy_model_dir(src_root, onnx_rel, model, sdpa_root)

    model = onnx.load(os.path.join(src_root, onnx_rel), load_external_data=False)
    graph = model.graph
    (mm0, _, add0, sm0), (_, _, _, sm1) = attention_blocks(graph)[:2]
    mm0, add0, probs0, probs1 = mm0.name, add0.name, sm0.output[0], sm1.output[0]
    mm2 = next(n for n in graph.node if n.op_type == "MatMul" and n.input[0] == probs0).name
    with open(os.path.join(src_root, "config.json"), encoding="utf-8") as f:
        heads = json.load(f)["num_attention_heads"]
    for name, value in (("r3_minus1", [-1]), ("r3_one", [1]), ("r3_two", [2]), ("r3_three", [3]), ("r3_four", [4]),
                        ("r3_heads", [1, heads, 1, 1])):
        graph.initializer.append(onnx.numpy_helper.from_array(np.array(value, dtype=np.int64), name))

    def fold(x, tag):  # [B, H, a, b] -> [B*H, a, b]
        return [onnx.helper.make_node("Shape", [x], [f"r3_{tag}_shape"]),
                onnx.helper.make_node("Slice", [f"r3_{tag}_shape", "r3_two", "r3_four"], [f"r3_{tag}_tail"]),
                onnx.helper.make_node("Concat", ["r3_minus1", f"r3_{tag}_tail"], [f"r3_{tag}_to"], axis=0),
                onnx.helper.make_node("Reshape", [x, f"r3_{tag}_to"], [f"r3_{tag}"])]

    nodes = []
    for node in graph.node:
        if node.name == mm0:
            nodes += fold(node.input[0], "q") + fold(node.input[1], "k")
            node.input[:] = ["r3_q", "r3_k"]
        elif node.name == add0:
            mask = node.input[1]
            nodes += [onnx.helper.make_node("Expand", [mask, "r3_heads"], ["r3_mask4"]),
                      onnx.helper.make_node("Shape", [mask], ["r3_mask_shape"]),
                      onnx.helper.make_node("Slice", ["r3_mask_shape", "r3_three", "r3_four"], ["r3_mask_len"]),
                      onnx.helper.make_node("Concat", ["r3_minus1", "r3_one", "r3_mask_len"], ["r3_mask_to"], axis=0),
                      onnx.helper.make_node("Reshape", ["r3_mask4", "r3_mask_to"], ["r3_mask"])]
            node.input[1] = "r3_mask"
        elif node.name == mm2:
            nodes += fold(node.input[1], "v")
            out = node.output[0]
            node.input[1] = "r3_v"
            node.output[0] = "r3_out"
            nodes.append(node)
            node = onnx.helper.make_node("Reshape", ["r3_out", "r3_q_shape"], [out])
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.node.append(onnx.helper.make_node("Identity", [probs1], ["unused_probs_1"], name="unused_probs_1"))
    copy_model_dir(src_root, onnx_rel, model, partial_root)


def write_safetensors_copy(snapshot, root, heads):
    """Same model as the snapshot, with the heads only as .safetensors."""
    os.makedirs(os.path.join(root, "onnx"), exist_ok=True)
    for rel in ("onnx/model.onnx", "onnx/model.onnx_data", "tokenizer.json", "config.json"):
        shutil.copyfile(os.path.join(snapshot, rel), os.path.join(root, rel))
    for name in ("colbert", "sparse"):
        write_safetensors(os.path.join(root, f"{name}_linear.safetensors"),
                          dict(getattr(heads, name).state_dict()))


DEMO_README = """# demo-model: a tiny BGE-M3-shaped model with RANDOM weights

This directory has the layout of the `BAAI/bge-m3` snapshot (`onnx/model.onnx` with external
weights in `onnx/model.onnx_data`, `colbert_linear.pt`, `sparse_linear.pt`, `tokenizer.json`,
`config.json`), but the weights are random and the vocabulary has about {vocab} pieces. Its
embeddings and scores carry no meaning: it exists so tests, examples and demos run without a
2 GB download. Dimension {dim}, at most {maxlen} tokens per text.

For real embeddings download the BAAI/bge-m3 repository from Hugging Face (for example
`huggingface-cli download BAAI/bge-m3 --local-dir ./bge-m3`) and point `BGEM3.load()` at that
directory instead; the engine reads the same files.

Regenerate with `scripts/gen-fixtures.sh` (needs python3-torch, python3-onnx, python3-numpy).
"""


def write_linear_variants(src_root, onnx_rel, root):
    """src_root's model with its Linears exported in two other common forms, same outputs:
    layer 0's as MatMul(x, Transpose(W)) with W stored [out, in] (an export without constant
    folding); layer 1's as Gemm(x, W, b, transB=1) on x flattened to 2-D and reshaped back (a
    2-D export). For `precision: 'bf16'`, whose rewrite must find all twelve."""
    model = onnx.load(os.path.join(src_root, onnx_rel), load_external_data=False)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    graph.initializer.extend([onnx.numpy_helper.from_array(np.array(v, dtype=np.int64), n)
                              for n, v in (("lin_zero", [0]), ("lin_two", [2]))])
    nodes, skip = [], set()
    for node in graph.node:
        if node.name in skip:
            continue
        if node.op_type != "MatMul" or node.input[1] not in inits:
            nodes.append(node)
            continue
        layer = 0 if "layers.0/" in node.name else 1
        w = onnx.numpy_helper.to_array(inits[node.input[1]], os.path.dirname(os.path.join(src_root, onnx_rel)))  # [in, out]
        tag = node.name.strip("/").replace("/", "_")
        wt_name = f"{tag}_wt"
        graph.initializer.append(onnx.numpy_helper.from_array(np.ascontiguousarray(w.T), wt_name))
        if layer == 0:
            nodes.append(onnx.helper.make_node("Transpose", [wt_name], [f"{tag}_w"], perm=[1, 0], name=f"{tag}_transpose"))
            node.input[1] = f"{tag}_w"
            nodes.append(node)
            continue
        add = readers[node.output[0]][0]
        bias = next(i for i in add.input if i != node.output[0])
        x, out = node.input[0], add.output[0]
        skip.add(add.name)
        nodes += [
            onnx.helper.make_node("Shape", [x], [f"{tag}_shape"], name=f"{tag}_shape"),
            onnx.helper.make_node("Slice", [f"{tag}_shape", "lin_zero", "lin_two"], [f"{tag}_lead"], name=f"{tag}_lead"),
            onnx.helper.make_node("Constant", [], [f"{tag}_width"], name=f"{tag}_width",
                                  value=onnx.numpy_helper.from_array(np.array([w.shape[1]], dtype=np.int64))),
            onnx.helper.make_node("Concat", [f"{tag}_lead", f"{tag}_width"], [f"{tag}_to"], axis=0, name=f"{tag}_to"),
            onnx.helper.make_node("Constant", [], [f"{tag}_flat_to"], name=f"{tag}_flat_to",
                                  value=onnx.numpy_helper.from_array(np.array([-1, w.shape[0]], dtype=np.int64))),
            onnx.helper.make_node("Reshape", [x, f"{tag}_flat_to"], [f"{tag}_x2"], name=f"{tag}_flat"),
            onnx.helper.make_node("Gemm", [f"{tag}_x2", wt_name, bias], [f"{tag}_y2"], transB=1, name=f"{tag}_gemm"),
            onnx.helper.make_node("Reshape", [f"{tag}_y2", f"{tag}_to"], [out], name=f"{tag}_unflat"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    copy_model_dir(src_root, onnx_rel, model, root)  # checks the written graph
