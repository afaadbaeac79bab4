/* The program of a kiln.FusedElementwise node (passes/fuse_elementwise.c
 * writes it; the CPU kernel runtime/cpu/k_fused_elementwise.c interprets
 * it; the CUDA emitter codegen/cuda/e_fused_elementwise.c turns it into
 * straight-line code). Attributes, one entry per step in SSA order:
 *   ops    STRINGS  the step's op (names below: ONNX op names, plus
 *                   "GeluTanh" for Gelu(approximate=tanh))
 *   args   INTS     3 per step: operand indices, -1 for none; index
 *                   i < n_inputs is node input i, else the result of step
 *                   i - n_inputs (an earlier step)
 *   dtypes INTS     the step's output dtype (kn_dtype); the result is
 *                   rounded / wrapped to it, as the separate node's output
 *   imm    FLOATS   2 per step: attribute values (LeakyRelu/Elu alpha,
 *                   Selu alpha and gamma, HardSigmoid alpha and beta, Clip
 *                   min and max before opset 11 or when a bound is absent)
 * The last step's result is the node's one output, of the broadcast shape
 * of all inputs. Dtypes: f16, bf16, f32, f64, i8..i64 and bool. */
#ifndef KILN_IR_FUSED_EW_H
#define KILN_IR_FUSED_EW_H

#include <string.h>

#define KN_FE_ARGS 3 /* operands per step */
#define KN_FE_IMMS 2 /* immediates per step */

#define KN_FE_OPS(X)                                                                                         \
    X(Neg) X(Abs) X(Exp) X(Log) X(Sqrt) X(Reciprocal) X(Sigmoid) X(Tanh) X(Relu) X(LeakyRelu) X(Elu) X(Selu)  \
    X(HardSigmoid) X(HardSwish) X(Softplus) X(Erf) X(Cos) X(Sin) X(Floor) X(Ceil) X(Round) X(Clip) X(Cast)    \
    X(Not) X(Add) X(Sub) X(Mul) X(Div) X(Pow) X(Max) X(Min) X(Equal) X(Less) X(Greater) X(And) X(Or)          \
    X(Where) X(Gelu) X(GeluTanh) X(Silu) X(SwiGlu)

typedef enum kn_fe_op {
    KN_FE_NONE = 0,
#define KN_FE_X(n) KN_FE_##n,
    KN_FE_OPS(KN_FE_X)
#undef KN_FE_X
    KN_FE_COUNT
} kn_fe_op;

/* The step op called `name` (len bytes), or KN_FE_NONE. */
static inline kn_fe_op kn_fe_lookup(const char *name, size_t len)
{
    static const char *const names[] = {
#define KN_FE_X(n) #n,
        KN_FE_OPS(KN_FE_X)
#undef KN_FE_X
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
            return (kn_fe_op)(i + 1);
    return KN_FE_NONE;
}

/* How many operands step op takes (Clip: 1 to 3). */
static inline int kn_fe_arity(kn_fe_op op)
{
    switch (op) {
    case KN_FE_Add: case KN_FE_Sub: case KN_FE_Mul: case KN_FE_Div: case KN_FE_Pow: case KN_FE_Max:
    case KN_FE_Min: case KN_FE_Equal: case KN_FE_Less: case KN_FE_Greater: case KN_FE_And: case KN_FE_Or:
    case KN_FE_SwiGlu:
        return 2;
    case KN_FE_Where: case KN_FE_Clip: return 3;
    default: return 1;
    }
}

#endif
