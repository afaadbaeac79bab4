/* NonMaxSuppression: greedy selection per (batch, class) by descending
 * score (ties: lower box index first), dropping boxes whose IoU with a
 * selected one exceeds iou_threshold. */
#include "runtime/cpu/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cand {
    double score;
    int64_t box;
} cand;

static int cand_cmp(const void *pa, const void *pb)
{
    const cand *a = pa, *b = pb;
    bool an = isnan(a->score), bn = isnan(b->score); /* NaN last: the order must be total */
    if (an != bn)
        return an ? 1 : -1;
    if (!an && a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return a->box < b->box ? -1 : a->box > b->box;
}

/* A box as (ymin, xmin, ymax, xmax) from either encoding. */
typedef struct box {
    double y0, x0, y1, x1;
} box;

static box box_at(const kn_rt_tensor *t, int64_t base, bool center)
{
    double v[4];
    for (int k = 0; k < 4; k++)
        v[k] = kn_get_f64(t->dtype, t->data, base + k);
    box b;
    if (center) { /* x_center, y_center, width, height */
        b.x0 = v[0] - v[2] / 2;
        b.x1 = v[0] + v[2] / 2;
        b.y0 = v[1] - v[3] / 2;
        b.y1 = v[1] + v[3] / 2;
    } else { /* any two opposite corners (y1, x1, y2, x2) */
        b.y0 = v[0] < v[2] ? v[0] : v[2];
        b.y1 = v[0] < v[2] ? v[2] : v[0];
        b.x0 = v[1] < v[3] ? v[1] : v[3];
        b.x1 = v[1] < v[3] ? v[3] : v[1];
    }
    return b;
}

static bool suppresses(const box *a, const box *b, double iou_threshold)
{
    double ix0 = a->x0 > b->x0 ? a->x0 : b->x0, ix1 = a->x1 < b->x1 ? a->x1 : b->x1;
    double iy0 = a->y0 > b->y0 ? a->y0 : b->y0, iy1 = a->y1 < b->y1 ? a->y1 : b->y1;
    if (ix1 <= ix0 || iy1 <= iy0)
        return false;
    double inter = (ix1 - ix0) * (iy1 - iy0);
    double area_a = (a->x1 - a->x0) * (a->y1 - a->y0), area_b = (b->x1 - b->x0) * (b->y1 - b->y0);
    double uni = area_a + area_b - inter;
    if (area_a <= 0 || area_b <= 0 || uni <= 0)
        return false;
    return inter / uni > iou_threshold;
}

kn_status kn_ref_NonMaxSuppression(kn_kctx *c)
{
    const kn_rt_tensor *boxes = kn_kctx_in(c, 0), *scores = kn_kctx_in(c, 1);
    if (!boxes || !scores)
        return kn_kctx_fail(c, KN_ERR_INVALID, "inputs boxes and scores are required");
    if (!kn_dt_is_float(boxes->dtype) || !kn_dt_is_float(scores->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "boxes and scores must be float tensors");
    if (boxes->rank != 3 || boxes->dims[2] != 4)
        return kn_kctx_fail(c, KN_ERR_INVALID, "boxes must have shape [batches, boxes, 4]");
    if (scores->rank != 3 || scores->dims[0] != boxes->dims[0] || scores->dims[2] != boxes->dims[1])
        return kn_kctx_fail(c, KN_ERR_INVALID, "scores must have shape [%lld, classes, %lld]",
                            (long long)boxes->dims[0], (long long)boxes->dims[1]);
    int64_t n_batch = boxes->dims[0], n_box = boxes->dims[1], n_class = scores->dims[1];
    int64_t center = kn_kctx_attr_int(c, "center_point_box", 0);
    if (center != 0 && center != 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "center_point_box must be 0 or 1, got %lld", (long long)center);
    int64_t max_out = 0;
    double iou_th = 0, score_th = 0;
    bool has_score_th = false;
    const kn_rt_tensor *t;
    if ((t = kn_kctx_in(c, 2)) && t->numel) {
        if (t->numel != 1 || !kn_dt_is_int(t->dtype))
            return kn_kctx_fail(c, KN_ERR_INVALID, "max_output_boxes_per_class must be a single integer");
        max_out = kn_get_i64(t->dtype, t->data, 0);
    }
    if ((t = kn_kctx_in(c, 3)) && t->numel) {
        if (t->numel != 1 || !kn_dt_is_float(t->dtype))
            return kn_kctx_fail(c, KN_ERR_INVALID, "iou_threshold must be a single float");
        iou_th = kn_get_f64(t->dtype, t->data, 0);
    }
    if ((t = kn_kctx_in(c, 4)) && t->numel) {
        if (t->numel != 1 || !kn_dt_is_float(t->dtype))
            return kn_kctx_fail(c, KN_ERR_INVALID, "score_threshold must be a single float");
        score_th = kn_get_f64(t->dtype, t->data, 0);
        has_score_th = true;
    }
    if (max_out < 0)
        max_out = 0;
    /* at most min(max_out, n_box) selections per (batch, class) */
    int64_t per = max_out < n_box ? max_out : n_box;
    int64_t cap = kn_numel(3, (int64_t[]){n_batch, n_class, per});
    if (cap < 0 || (uint64_t)cap > SIZE_MAX / (3 * sizeof(int64_t)) - 1 ||
        (uint64_t)n_box > SIZE_MAX / sizeof(cand) - 1)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "too many boxes");
    int64_t *sel = kn_kctx_scratch(c, (size_t)(3 * cap + 1) * sizeof *sel);
    cand *cands = kn_kctx_scratch(c, (size_t)(n_box + 1) * sizeof *cands);
    box *kept = kn_kctx_scratch(c, (size_t)(per + 1) * sizeof *kept);
    if (!sel || !cands || !kept)
        return KN_ERR_NOMEM;
    int64_t n_sel = 0;
    for (int64_t b = 0; b < n_batch && per > 0; b++)
        for (int64_t k = 0; k < n_class; k++) {
            int64_t n_cand = 0;
            for (int64_t i = 0; i < n_box; i++) {
                double s = kn_get_f64(scores->dtype, scores->data, (b * n_class + k) * n_box + i);
                if (!has_score_th || s > score_th)
                    cands[n_cand++] = (cand){s, i};
            }
            qsort(cands, (size_t)n_cand, sizeof *cands, cand_cmp);
            int64_t n_kept = 0;
            for (int64_t i = 0; i < n_cand && n_kept < per; i++) {
                box bx = box_at(boxes, (b * n_box + cands[i].box) * 4, center == 1);
                bool keep = true;
                for (int64_t q = 0; q < n_kept && keep; q++)
                    keep = !suppresses(&bx, &kept[q], iou_th);
                if (!keep)
                    continue;
                kept[n_kept++] = bx;
                sel[3 * n_sel] = b;
                sel[3 * n_sel + 1] = k;
                sel[3 * n_sel + 2] = cands[i].box;
                n_sel++;
            }
        }
    int64_t dims[2] = {n_sel, 3};
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, KN_I64, 2, dims, &y));
    if (n_sel)
        memcpy(y->data, sel, (size_t)n_sel * 3 * sizeof *sel);
    return KN_OK;
}
