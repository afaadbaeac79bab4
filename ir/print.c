/* The IR's text form: stable (depends only on the graph), diffable, one
 * line per value or node, subgraphs indented inside their attribute. */
#include "ir/ir.h"

#include <inttypes.h>
#include <string.h>

static void indent(FILE *f, int depth)
{
    for (int i = 0; i < depth; i++)
        fputs("  ", f);
}

static void put_bytes(FILE *f, const uint8_t *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned c = s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 32 || c >= 127)
            fprintf(f, "\\x%02x", c);
        else
            fputc((int)c, f);
    }
    fputc('"', f);
}

static void put_type(FILE *f, const kn_type *t)
{
    char buf[1024];
    kn_type_format(t, buf, sizeof buf);
    fputs(buf, f);
}

static void put_tensor(FILE *f, const kn_tensor *t)
{
    kn_type ty = {KN_TYPE_TENSOR, t->dtype, {t->rank, NULL}, NULL};
    kn_dim dims[64];
    ty.shape.rank = t->rank > 64 ? -1 : t->rank;
    ty.shape.dims = dims;
    for (int32_t i = 0; i < ty.shape.rank; i++) {
        dims[i].value = t->dims[i];
        dims[i].sym = NULL;
    }
    fputs("tensor ", f);
    put_type(f, &ty);
    if (t->is_external)
        fputs(" external", f);
}

static void print_graph(const kn_graph *g, FILE *f, int depth);

static void put_attr(FILE *f, const kn_attr *a, int depth)
{
    fprintf(f, "%s: ", a->name);
    switch (a->kind) {
    case KN_ATTR_FLOAT: fprintf(f, "%.9g", (double)a->u.f); break;
    case KN_ATTR_INT: fprintf(f, "%" PRId64, a->u.i); break;
    case KN_ATTR_STRING: put_bytes(f, a->u.s.data, a->u.s.len); break;
    case KN_ATTR_TENSOR: put_tensor(f, a->u.t); break;
    case KN_ATTR_TYPE: fputs("type ", f); put_type(f, a->u.tp); break;
    case KN_ATTR_GRAPH:
        fputc('\n', f);
        print_graph(a->u.g, f, depth + 1);
        indent(f, depth);
        break;
    case KN_ATTR_FLOATS:
    case KN_ATTR_INTS:
    case KN_ATTR_STRINGS:
    case KN_ATTR_TENSORS:
    case KN_ATTR_TYPES:
        fputc('[', f);
        for (uint32_t i = 0; i < a->n; i++) {
            if (i)
                fputs(", ", f);
            if (a->kind == KN_ATTR_FLOATS) fprintf(f, "%.9g", (double)a->u.floats[i]);
            else if (a->kind == KN_ATTR_INTS) fprintf(f, "%" PRId64, a->u.ints[i]);
            else if (a->kind == KN_ATTR_STRINGS) put_bytes(f, a->u.strings[i].data, a->u.strings[i].len);
            else if (a->kind == KN_ATTR_TENSORS) put_tensor(f, a->u.tensors[i]);
            else put_type(f, a->u.types[i]);
        }
        fputc(']', f);
        break;
    case KN_ATTR_GRAPHS:
        fputs("[\n", f);
        for (uint32_t i = 0; i < a->n; i++)
            print_graph(a->u.graphs[i], f, depth + 1);
        indent(f, depth);
        fputc(']', f);
        break;
    default: fputs("?", f); break;
    }
}

static void put_ref(FILE *f, const kn_graph *g, kn_id id)
{
    if (id == KN_NONE)
        fputs("-", f);
    else if (id < g->n_values)
        fprintf(f, "%%%s", g->values[id].name);
    else
        fprintf(f, "%%<bad id %u>", id);
}

static void print_graph(const kn_graph *g, FILE *f, int depth)
{
    indent(f, depth);
    fprintf(f, "graph '%s' {\n", g->name ? g->name : "");
    for (uint32_t i = 0; i < g->n_inputs; i++) {
        indent(f, depth + 1);
        fputs("input ", f);
        put_ref(f, g, g->inputs[i]);
        fputs(": ", f);
        if (g->inputs[i] < g->n_values)
            put_type(f, &g->values[g->inputs[i]].type);
        fputc('\n', f);
    }
    for (kn_id i = 0; i < g->n_values; i++) {
        const kn_value *v = &g->values[i];
        if (v->kind != KN_VAL_CONST && v->kind != KN_VAL_OUTER)
            continue;
        indent(f, depth + 1);
        fprintf(f, "%s %%%s: ", v->kind == KN_VAL_CONST ? "const" : "outer", v->name);
        put_type(f, &v->type);
        if (v->kind == KN_VAL_CONST && v->tensor && v->tensor->is_external)
            fputs(" external", f);
        fputc('\n', f);
    }
    for (kn_id i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        indent(f, depth + 1);
        fputc('(', f);
        for (uint32_t k = 0; k < n->n_outputs; k++) {
            if (k)
                fputs(", ", f);
            put_ref(f, g, n->outputs[k]);
            if (n->outputs[k] < g->n_values && g->values[n->outputs[k]].type.kind != KN_TYPE_UNKNOWN) {
                fputs(": ", f);
                put_type(f, &g->values[n->outputs[k]].type);
            }
        }
        fprintf(f, ") = %s%s%s<%lld>%s(", *n->domain ? n->domain : "", *n->domain ? "." : "", n->op_type,
                (long long)n->opset, n->op == KN_OP_UNSUPPORTED ? "!unsupported" : "");
        for (uint32_t k = 0; k < n->n_inputs; k++) {
            if (k)
                fputs(", ", f);
            put_ref(f, g, n->inputs[k]);
        }
        fputc(')', f);
        if (n->n_attrs) {
            fputs(" {", f);
            for (uint32_t k = 0; k < n->n_attrs; k++) {
                if (k)
                    fputs(", ", f);
                put_attr(f, &n->attrs[k], depth + 1);
            }
            fputc('}', f);
        }
        fprintf(f, "  # '%s'", n->name);
        if (n->function)
            fprintf(f, " from %s", n->function);
        fputc('\n', f);
    }
    for (uint32_t i = 0; i < g->n_outputs; i++) {
        indent(f, depth + 1);
        fputs("output ", f);
        put_ref(f, g, g->outputs[i]);
        fputc('\n', f);
    }
    indent(f, depth);
    fputs("}\n", f);
}

kn_status kn_graph_print(const kn_graph *g, FILE *f)
{
    if (!g || !f)
        return KN_ERR_INVALID;
    print_graph(g, f, 0);
    return ferror(f) ? KN_ERR_IO : KN_OK;
}
