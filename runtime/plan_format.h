/* kiln plan file format v1: the on-disk layout shared by the writer
 * (codegen/plan_write.c) and the loader (runtime/plan_read.c). All
 * integers little-endian; docs/plan-format.md describes it in prose. */
#ifndef KILN_PLAN_FORMAT_H
#define KILN_PLAN_FORMAT_H

#include <stdint.h>

#define KN_PLAN_MAGIC "KILNPLAN"
/* Version 3: a target-cuda program with persistent memory (META
 * cuda*.zero_slot) that a version-2 reader would not zero. Every other
 * plan is still written as version 2, byte-identical to before; the
 * reader takes both. */
#define KN_PLAN_VERSION 3u
#define KN_PLAN_VERSION_BASE 2u
#define KN_PLAN_HEADER_SIZE 128u
#define KN_PLAN_WEIGHT_ALIGN 64u     /* each constant's data */
#define KN_PLAN_WEIGHTS_PAGE 4096u   /* the weights section's start */
#define KN_PLAN_NONE 0xffffffffu

typedef struct kn_plan_header {
    char magic[8];           /* "KILNPLAN" */
    uint32_t version;        /* KN_PLAN_VERSION_BASE or KN_PLAN_VERSION */
    uint32_t header_size;    /* KN_PLAN_HEADER_SIZE */
    uint64_t file_size;      /* bytes */
    uint64_t checksum;       /* kn_plan_checksum of the whole file with this field zero */
    uint64_t sections_off;   /* section table */
    uint32_t n_sections;
    uint32_t flags;          /* 0 */
    char kiln_version[16];   /* NUL-padded */
    uint8_t reserved[128 - 64]; /* zero */
} kn_plan_header;

typedef enum kn_plan_section_kind {
    KN_SEC_STRINGS = 1, /* NUL-terminated strings; referenced by byte offset */
    KN_SEC_META,        /* kn_plan_kv[] */
    KN_SEC_GRAPHS,      /* kn_plan_graph[]; index 0 is the main graph */
    KN_SEC_VALUES,      /* kn_plan_value[] (the tensor table), all graphs */
    KN_SEC_NODES,       /* kn_plan_node[] (the step table), all graphs, in execution order */
    KN_SEC_IDS,         /* uint32_t[]: node and graph input/output value indices */
    KN_SEC_ATTRS,       /* kn_plan_attr[] */
    KN_SEC_BLOB,        /* attribute payloads and encoded types, 8-byte aligned items */
    KN_SEC_CONSTS,      /* kn_plan_const[] */
    KN_SEC_BUFFERS,     /* kn_plan_buffer[]: one per computed value */
    KN_SEC_WEIGHTS,     /* constant data, each KN_PLAN_WEIGHT_ALIGN-aligned */
    /* target cuda only (all present or all absent) */
    KN_SEC_CU_KERNELS,  /* kn_plan_cu_kernel[] */
    KN_SEC_CU_IMAGES,   /* kn_plan_cu_image[]: CUBIN per arch, PTX */
    KN_SEC_CU_SLOTS,    /* kn_plan_cu_slot[]: tensor slots */
    KN_SEC_CU_STEPS,    /* kn_plan_cu_step[] */
    KN_SEC_CU_ARGS,     /* kn_plan_cu_arg[] */
    KN_SEC_CU_PARAMS,   /* kernel parameter blobs and GEMM descriptors */
    KN_SEC_CU_BLOBS,    /* the images' bytes, each 256-byte aligned */
    /* optional (any target) */
    KN_SEC_NAMED,       /* named blobs: u32 count, u32 0, kn_plan_named[], then their bytes */
    /* target cuda decoders only: the prefill program (all present or all
     * absent; only with the CUDA sections above, which hold the decode
     * program). Same layouts as KN_SEC_CU_*, META keys cuda.prefill.* */
    KN_SEC_CUP_KERNELS,
    KN_SEC_CUP_IMAGES,
    KN_SEC_CUP_SLOTS,
    KN_SEC_CUP_STEPS,
    KN_SEC_CUP_ARGS,
    KN_SEC_CUP_PARAMS,
    KN_SEC_CUP_BLOBS,
    /* target cuda decoders, optional: batched decode programs ([B, 1] new
     * tokens, kiln compile --decode-batch), program k (0-based) in the seven
     * sections from KN_SEC_CUB_KERNELS + 7k, laid out as KN_SEC_CU_*, META
     * keys cuda.batchK.*; only with the prefill program, and program k only
     * with programs 0 ... k-1 */
    KN_SEC_CUB_KERNELS,
    KN_SEC_COUNT = KN_SEC_CUB_KERNELS + 7 * 4
} kn_plan_section_kind;

#define KN_SEC_CU_END (KN_SEC_CU_BLOBS + 1) /* the CUDA sections are [KN_SEC_CU_KERNELS, KN_SEC_CU_END) */
#define KN_SEC_CUP_END (KN_SEC_CUP_BLOBS + 1) /* the prefill program's: [KN_SEC_CUP_KERNELS, KN_SEC_CUP_END) */
#define KN_SEC_CU_N (KN_SEC_CU_END - KN_SEC_CU_KERNELS)
#define KN_PLAN_MAX_DECODE_BATCHES 4u        /* batched decode programs per plan (KN_SEC_CUB_*) */
#define KN_SEC_CUB(k) (KN_SEC_CUB_KERNELS + KN_SEC_CU_N * (int)(k)) /* program k's first section */
#define KN_PLAN_MAX_NAMED 1024u             /* named blobs per plan */

typedef struct kn_plan_section {
    uint32_t kind;
    uint32_t reserved; /* 0 */
    uint64_t offset;   /* from the start of the file */
    uint64_t size;     /* bytes */
} kn_plan_section;

typedef struct kn_plan_kv {
    uint32_t key, value; /* strings */
} kn_plan_kv;

typedef struct kn_plan_graph {
    uint32_t name;
    uint32_t parent;         /* graph index, KN_PLAN_NONE for the main graph */
    uint32_t first_value, n_values; /* slice of VALUES; value ids are local to the graph */
    uint32_t first_node, n_nodes;   /* slice of NODES */
    uint32_t inputs, n_inputs;      /* slice of IDS */
    uint32_t outputs, n_outputs;    /* slice of IDS */
} kn_plan_graph;

typedef struct kn_plan_value {
    uint32_t name;
    uint32_t kind;       /* kn_value_kind */
    uint32_t producer;   /* NODE: node index local to the graph */
    uint32_t out_index;
    uint32_t outer;      /* OUTER: value id in the parent graph */
    uint32_t constant;   /* CONST: index into CONSTS */
    uint64_t type;       /* offset of the encoded type in BLOB */
} kn_plan_value;

typedef struct kn_plan_node {
    uint32_t name, op_type, domain, function; /* strings (function: KN_PLAN_NONE if none) */
    int64_t opset;
    uint32_t inputs, n_inputs;   /* slice of IDS (KN_PLAN_NONE entries: omitted) */
    uint32_t outputs, n_outputs; /* slice of IDS */
    uint32_t attrs, n_attrs;     /* slice of ATTRS */
} kn_plan_node;

typedef struct kn_plan_attr {
    uint32_t name;
    uint32_t kind;      /* kn_attr_kind */
    uint32_t n;         /* elements for list kinds */
    uint32_t reserved;  /* 0 */
    uint64_t payload;   /* offset in BLOB: float/int64/bytes/uint32 indices (consts, graphs) or types */
    uint64_t size;      /* payload bytes */
} kn_plan_attr;

typedef struct kn_plan_const {
    uint32_t name;
    int32_t dtype;
    int32_t rank;
    uint32_t reserved;  /* 0 */
    uint64_t dims;      /* offset in BLOB of rank int64 dims */
    int64_t n_elems;
    uint64_t data;      /* offset from the WEIGHTS section's start (strings: in BLOB) */
    uint64_t nbytes;    /* strings: bytes of the encoded (u64 len, bytes) list in BLOB */
} kn_plan_const;

typedef struct kn_plan_buffer {
    uint32_t graph, value; /* which computed value */
    int64_t bytes;         /* static size when the shape is known, -1 when set at run time */
} kn_plan_buffer;

/* A named blob (KN_SEC_NAMED): files carried along with the graph, such as
 * the tokenizer ("tokenizer.json", "tokenizer_config.json",
 * "generation_config.json"). Names are unique and non-empty; each blob's
 * bytes start 8-byte aligned after the table. */
typedef struct kn_plan_named {
    uint32_t name;      /* string */
    uint32_t reserved;  /* 0 */
    uint64_t offset;    /* from the section's start, past the table */
    uint64_t size;      /* bytes */
} kn_plan_named;

/* ---- target cuda ---- */

#define KN_CU_MAX_RANK 8
#define KN_CU_ARCH_PTX 0u /* image arch value for PTX (of the newest arch) */

enum {
    KN_CU_STEP_LAUNCH = 1, /* a kernel launch */
    KN_CU_STEP_GEMM,       /* a cuBLASLt matmul (descriptor in PARAMS) */
    KN_CU_STEP_COPY,       /* device-to-device copy */
    KN_CU_STEP_HOST,       /* a node without a CUDA kernel, run on the CPU reference backend:
                            * its HOST_IN args copied to the host, the node run, HOST_OUT args
                            * copied back (their shapes must be the slots') */
};

enum {
    KN_CU_ARG_SLOT = 1,    /* a device pointer: slot base + offset */
    KN_CU_ARG_PARAMS,      /* bytes from PARAMS passed by value */
    KN_CU_ARG_HOST_IN,     /* HOST steps: slot holding graph value `size` (a value the node reads) */
    KN_CU_ARG_HOST_OUT,    /* HOST steps: slot receiving graph value `size` (a node output) */
    KN_CU_ARG_KV,          /* a device pointer into the session's KV cache: `slot` is a KN_CU_KV_*,
                            * `offset` the layer (KEYS/VALUES: the pointer is that layer's first
                            * block; 0 for TABLE/PAST), `size` 0. Plans with such arguments carry
                            * META cuda.kv_rows and cuda.kv_tokens and the kiln.kv.* cache shape */
};

/* What a KN_CU_ARG_KV argument points at (docs/plan-format.md). */
enum {
    KN_CU_KV_KEYS = 0,     /* the key pool [layer][block][kv head][slot][head dim], kiln.kv.dtype */
    KN_CU_KV_VALUES,       /* the value pool, same layout */
    KN_CU_KV_TABLE,        /* int32 [cuda.kv_rows, ceil(max_seq_len / block_size)] block ids per row */
    KN_CU_KV_PAST,         /* int32 [cuda.kv_rows]: tokens each row's sequence held before the run */
    KN_CU_KV_COUNT
};

typedef struct kn_plan_cu_kernel {
    uint32_t entry;        /* string */
    uint32_t first_image, n_images;
    uint32_t reserved;     /* 0 */
    uint64_t hash;         /* of the source */
} kn_plan_cu_kernel;

typedef struct kn_plan_cu_image {
    uint32_t kernel;
    uint32_t arch;         /* 80, 86, 89, 90 ... or KN_CU_ARCH_PTX */
    uint64_t offset;       /* in CU_BLOBS */
    uint64_t size;
} kn_plan_cu_image;

typedef struct kn_plan_cu_slot {
    uint32_t place;        /* 1 pool, 2 weight (CONSTS index), 3 graph input */
    uint32_t index;
    uint64_t offset;       /* pool byte offset */
    uint64_t nbytes;
    int32_t dtype;
    int32_t rank;
    int64_t dims[KN_CU_MAX_RANK];
    uint32_t value;        /* value id in the main graph, or KN_PLAN_NONE */
    uint32_t reserved;     /* 0 */
} kn_plan_cu_slot;

typedef struct kn_plan_cu_step {
    uint32_t kind;
    uint32_t kernel;
    uint32_t grid[3], block[3];
    uint32_t smem;
    uint32_t first_arg, n_args;
    uint32_t node;
    uint64_t extra;        /* GEMM: descriptor offset in PARAMS; COPY: bytes */
} kn_plan_cu_step;

typedef struct kn_plan_cu_arg {
    uint32_t kind;
    uint32_t slot;
    uint64_t offset;
    uint64_t size;
} kn_plan_cu_arg;

/* The largest k of an int8 GEMM: k·128·128 fits int32, so the int32
 * accumulation is exact. */
#define KN_CU_GEMM_I8_MAX_K 131071

/* A GEMM descriptor as stored in CU_PARAMS (row-major operands; the
 * runtime maps it to cuBLASLt's column-major view). */
typedef struct kn_plan_cu_gemm {
    int64_t m, n, k;
    int64_t lda, ldb, ldc, ldd;
    int64_t batch;
    int64_t stride_a, stride_b, stride_c, stride_d;
    float alpha, beta;
    int32_t dtype;         /* of A, B, C, D; KN_I8: int8 A and B, int32 C and D with int32
                            * accumulation (cuBLASLt CUBLAS_COMPUTE_32I), only as alpha 1,
                            * beta 0, no C, no epilogue, trans_a 0, trans_b 1, k, n, lda,
                            * ldb, ldd and the batch strides multiples of 4, k at most
                            * KN_CU_GEMM_I8_MAX_K, operand byte offsets multiples of 4 */
    uint32_t trans_a, trans_b;
    uint32_t epilogue;     /* 0 none, 1 relu, 2 gelu (tanh form), 3 bias, 4 relu+bias, 5 gelu+bias;
                            * the step's args are A, B, C, D, and for 3-5 with a C matrix a 5th,
                            * the bias row (with 4 args, C is the bias row) */
    uint32_t has_c;
    uint32_t reserved;     /* 0 */
} kn_plan_cu_gemm;

/* Encoded type in BLOB: int32 kind, int32 dtype, int32 rank, int32 has_elem,
 * then rank × (int64 value, uint32 sym string or KN_PLAN_NONE, uint32 0),
 * then the element type (same encoding) when has_elem. */

/* FNV-1a over 64-bit little-endian words, then the tail bytes. */
static inline uint64_t kn_plan_checksum_update(uint64_t h, const uint8_t *p, uint64_t n)
{
    const uint64_t prime = 1099511628211ull;
    while (n >= 8) {
        uint64_t w = (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
                     (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
        h = (h ^ w) * prime;
        p += 8;
        n -= 8;
    }
    while (n--)
        h = (h ^ *p++) * prime;
    return h;
}
#define KN_PLAN_CHECKSUM_SEED 14695981039346656037ull

#endif
