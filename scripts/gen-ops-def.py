#!/usr/bin/env python3
"""Generate ir/ops.def, kiln's X-macro op table, from the operator schemas of
the `onnx` Python package, plus a few hand-written com.microsoft (ONNX
Runtime contrib) entries listed at the end of this script.

Usage: python3 scripts/gen-ops-def.py [OUTPUT]   (default: ir/ops.def next to
this script's parent directory)

The output depends only on the installed onnx version, so rerunning it with
the same onnx gives a byte-identical file.
"""

import os
import sys

import onnx
from onnx import defs

# Newest ai.onnx opset kiln targets (must match KN_ONNX_OPSET_MAX in ir/ir.h).
ONNX_OPSET_MIN = 7
ONNX_OPSET_MAX = 23
# `last` value meaning "still present in the newest opset".
LAST_OPEN = 99

DOM_ONNX, DOM_ML, DOM_MS, DOM_KILN = "KN_DOM_ONNX", "KN_DOM_ML", "KN_DOM_MS", "KN_DOM_KILN"
DOM_ORDER = {DOM_ONNX: 0, DOM_ML: 1, DOM_MS: 2, DOM_KILN: 3}
ID_PREFIX = {DOM_ONNX: "", DOM_ML: "ML_", DOM_MS: "MS_", DOM_KILN: "KILN_"}

# Schema domains that are read from the onnx package. Everything else
# (ai.onnx.preview.training, ai.onnx.preview, ...) is skipped.
SCHEMA_DOMAINS = {"": DOM_ONNX, "ai.onnx": DOM_ONNX, "ai.onnx.ml": DOM_ML}

AT = defs.OpSchema.AttrType
KIND_LETTERS = {
    AT.FLOAT: "f",
    AT.INT: "i",
    AT.STRING: "s",
    AT.TENSOR: "t",
    AT.GRAPH: "g",
    AT.SPARSE_TENSOR: "sp",
    AT.TYPE_PROTO: "tp",
    AT.FLOATS: "fs",
    AT.INTS: "is",
    AT.STRINGS: "ss",
    AT.TENSORS: "ts",
    AT.GRAPHS: "gs",
    AT.SPARSE_TENSORS: "sps",
    AT.TYPE_PROTOS: "tps",
}


def collect_schema_ops(notes):
    """Returns a list of (dom, name, first, last, attrs) from the onnx package."""
    groups = {}
    skipped_domains = set()
    for s in defs.get_all_schemas_with_history():
        dom = SCHEMA_DOMAINS.get(s.domain)
        if dom is None:
            skipped_domains.add(s.domain)
            continue
        groups.setdefault((dom, s.name), []).append(s)
    for d in sorted(skipped_domains):
        notes.append("skipped schema domain %r" % d)

    ops = []
    for (dom, name), versions in sorted(groups.items()):
        versions.sort(key=lambda s: s.since_version)
        first = versions[0].since_version
        if dom == DOM_ONNX and first > ONNX_OPSET_MAX:
            notes.append("excluded %s (first ai.onnx version %d > %d)"
                         % (name, first, ONNX_OPSET_MAX))
            continue
        newest = versions[-1]
        last = newest.since_version - 1 if newest.deprecated else LAST_OPEN

        # Versions whose attributes count: for ai.onnx, those in effect at
        # some opset in [ONNX_OPSET_MIN, ONNX_OPSET_MAX] (the newest one
        # defined at or before ONNX_OPSET_MIN, and every later one up to MAX).
        in_range = versions
        if dom == DOM_ONNX:
            older = [s for s in versions if s.since_version <= ONNX_OPSET_MIN]
            in_range = older[-1:] + [s for s in versions
                                     if ONNX_OPSET_MIN < s.since_version <= ONNX_OPSET_MAX]
            if not in_range:
                in_range = versions[-1:]
        kinds = {}      # name -> (since_version, kind letter) of newest
        required = {}   # name -> every version in range has it and requires it
        for s in in_range:  # ascending since_version: newest type wins
            for an, a in s.attributes.items():
                k = KIND_LETTERS[a.type]
                prev = kinds.get(an)
                if prev is not None and prev[1] != k:
                    notes.append("%s.%s: attribute kind changed %s (v%d) -> %s (v%d); using %s"
                                 % (name, an, prev[1], prev[0], k, s.since_version, k))
                kinds[an] = (s.since_version, k)
                required[an] = required.get(an, True) and bool(a.required)
        for an in required:  # required only if every version has it, required
            if any(an not in s.attributes for s in in_range):
                required[an] = False
        attrs = " ".join("%s:%s%s" % (an, kinds[an][1], "!" if required[an] else "")
                         for an in sorted(kinds))
        ops.append((dom, name, first, last, attrs))
    return ops


# ---- hand-written entries ---------------------------------------------------
# ONNX Runtime contrib ops (com.microsoft), which the onnx package does not
# know. Attributes follow ONNX Runtime's docs/ContribOperators.md. All are
# first=1, last=99. SimplifiedLayerNormalization is registered by ONNX Runtime
# in the default (ai.onnx) domain, so it goes in as KN_DOM_ONNX, and only if
# ai.onnx does not define an op of that name itself.
HAND_WRITTEN = [
    (DOM_MS, "Attention",
     "do_rotary:i mask_filter_value:f num_heads:i! past_present_share_buffer:i "
     "qkv_hidden_sizes:is rotary_embedding_dim:i scale:f unidirectional:i"),
    (DOM_MS, "MultiHeadAttention",
     "mask_filter_value:f num_heads:i! scale:f unidirectional:i"),
    (DOM_MS, "GroupQueryAttention",
     "do_rotary:i kv_num_heads:i! local_window_size:i num_heads:i! "
     "rotary_interleaved:i scale:f softcap:f smooth_softmax:i"),
    (DOM_MS, "RotaryEmbedding",
     "interleaved:i is_packed_batching:i num_heads:i rotary_embedding_dim:i scale:f"),
    (DOM_MS, "MatMulNBits", "K:i! N:i! accuracy_level:i bits:i block_size:i!"),
    (DOM_MS, "MatMulIntegerToFloat", ""),
    (DOM_MS, "SkipLayerNormalization", "epsilon:f"),
    (DOM_MS, "SkipSimplifiedLayerNormalization", "epsilon:f"),
    (DOM_ONNX, "SimplifiedLayerNormalization", "axis:i epsilon:f stash_type:i"),
    (DOM_MS, "Gelu", ""),
    (DOM_MS, "FastGelu", ""),
    (DOM_MS, "BiasGelu", ""),
    (DOM_MS, "QuickGelu", "alpha:f"),
    (DOM_MS, "FusedMatMul", "alpha:f transA:i transB:i transBatchA:i transBatchB:i"),
    (DOM_MS, "BiasAdd", ""),
    (DOM_MS, "EmbedLayerNormalization", "epsilon:f mask_index_type:i"),
    (DOM_MS, "DequantizeLinear", "axis:i"),
    (DOM_MS, "QuantizeLinear", "axis:i"),
    (DOM_MS, "GatherBlockQuantized", "bits:i block_size:i gather_axis:i quantize_axis:i"),
    # kiln's own fused ops (passes/fuse_*.c), for patterns ONNX has no op for.
    (DOM_KILN, "Silu", ""),      # x * Sigmoid(x)
    (DOM_KILN, "SwiGlu", ""),    # Silu(gate) * up: inputs (gate, up), or one packed input [..., gate | up]
    # act(MatMul/Gemm(A, B) + bias) + residual: inputs (A, B, bias?, residual?)
    (DOM_KILN, "GemmEpilogue",
     "act_alpha:f act_beta:f activation:s alpha:f beta:f gemm:i transA:i transB:i"),
    (DOM_KILN, "RotaryHalf", ""),  # x*cos + rotate_half(x)*sin: inputs (x, cos, sin)
    # passes/fuse_skip_norm.c: (x, skip, scale) -> (RMSNormalization(x + skip), x + skip);
    # (x, skip, scale, [bias]) -> (LayerNormalization(x + skip), x + skip)
    (DOM_KILN, "SkipRMSNorm", "axis:i epsilon:f stash_type:i"),
    (DOM_KILN, "SkipLayerNorm", "axis:i epsilon:f stash_type:i"),
    # a chain of elementwise ops as one program (passes/fuse_elementwise.c):
    # per step its op name, 3 operand indices, output dtype and 2 immediates
    (DOM_KILN, "FusedElementwise", "ops:ss! args:is! dtypes:is! imm:fs!"),
    # passes/kv_cache.c: attention over the runtime's paged KV cache; inputs
    # (Q, new K, new V, [mask]), appends K/V to the cache of the layer;
    # causal=1 (passes/kv_mask.c): query i sees keys j <= past + i.
    # rotary=1 (passes/kv_rotary.c): inputs 4, 5 are cos, sin; Q and K rotated
    # (RotaryHalf) in the kernel.
    (DOM_KILN, "PagedAttention", "causal:i head_dim:i! kv_heads:i! kv_repeat:i! layer:i! rotary:i scale:f!"),
]


def header():
    letters = [
        ("f", "FLOAT"), ("i", "INT"), ("s", "STRING"), ("t", "TENSOR"),
        ("g", "GRAPH"), ("sp", "SPARSE_TENSOR"), ("tp", "TYPE_PROTO"),
        ("fs", "FLOATS"), ("is", "INTS"), ("ss", "STRINGS"), ("ts", "TENSORS"),
        ("gs", "GRAPHS"), ("sps", "SPARSE_TENSORS"), ("tps", "TYPE_PROTOS"),
    ]
    lines = [
        "/* kiln op table (X-macro). GENERATED FILE -- do not edit by hand.",
        " *",
        " * Generated by scripts/gen-ops-def.py from the operator schemas of the",
        " * onnx Python package, version %s (onnx.defs.get_all_schemas_with_history)," % onnx.__version__,
        " * domains ai.onnx (ops first defined at opset <= %d) and ai.onnx.ml." % ONNX_OPSET_MAX,
        " * The com.microsoft entries (and SimplifiedLayerNormalization, which ONNX",
        " * Runtime registers in the default domain) are hand-written in the",
        " * HAND_WRITTEN list at the end of that script; edit them there and rerun.",
        " *",
        " * KN_OP(id, \"OnnxName\", domain, first, last, \"attrs\")",
        " *   id        enum member suffix: KN_OP_<id>. ai.onnx: the op name;",
        " *             ai.onnx.ml: ML_<name>; com.microsoft: MS_<name>.",
        " *   OnnxName  the node's op_type.",
        " *   domain    KN_DOM_ONNX (\"\" / ai.onnx), KN_DOM_ML (ai.onnx.ml),",
        " *             KN_DOM_MS (com.microsoft).",
        " *   first     first opset version of the domain that defines the op.",
        " *   last      last opset version that has it: one less than the version",
        " *             that deprecated (removed) it, or %d if still present." % LAST_OPEN,
        " *   attrs     space-separated name:kind entries, sorted by name, over the",
        " *             union of the attributes of the op's versions in effect",
        " *             at opsets %d..%d (ai.onnx); a trailing '!' marks an" % (ONNX_OPSET_MIN, ONNX_OPSET_MAX),
        " *             attribute that all of them have and require. Where the kind",
        " *             changed between versions the newest one is given.",
        " *",
        " * Attribute kinds:",
    ]
    for i in range(0, len(letters), 4):
        row = "  ".join("%-3s %-14s" % (l, n) for l, n in letters[i:i + 4]).rstrip()
        lines.append(" *   " + row)
    lines.append(" */")
    return "\n".join(lines) + "\n"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "ir", "ops.def")

    notes = []
    ops = [op + (False,) for op in collect_schema_ops(notes)]
    have = {(dom, name) for dom, name, *_ in ops}
    for dom, name, attrs in HAND_WRITTEN:
        if (dom, name) in have:
            notes.append("hand-written %s %s skipped: the onnx schemas define it" % (dom, name))
            continue
        ops.append((dom, name, 1, LAST_OPEN, attrs, True))

    ops.sort(key=lambda o: (DOM_ORDER[o[0]], o[1]))

    ids = set()
    counts = {d: 0 for d in DOM_ORDER}
    body = []
    for dom, name, first, last, attrs, hand in ops:
        ident = ID_PREFIX[dom] + name
        if ident in ids or ident in ("UNSUPPORTED", "COUNT"):
            sys.exit("gen-ops-def: duplicate or reserved id %s" % ident)
        ids.add(ident)
        counts[dom] += 1
        line = 'KN_OP(%s, "%s", %s, %d, %d, "%s")' % (ident, name, dom, first, last, attrs)
        if hand and dom == DOM_ONNX:
            line += " /* hand-written: ONNX Runtime op in the default domain */"
        body.append(line)

    text = header() + "\n" + "\n".join(body) + "\n"
    with open(out_path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)

    for n in notes:
        print("note: " + n)
    print("wrote %s (onnx %s): %s, total %d"
          % (os.path.normpath(out_path), onnx.__version__,
             ", ".join("%s %d" % (d, counts[d]) for d in DOM_ORDER), len(ops)))


if __name__ == "__main__":
    main()
