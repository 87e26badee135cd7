/* heatmap.h — heatmap pictures (layers × experts) as PNG through libpng: one or more panels side by
 * side sharing rows and columns, a title, axis labels with tick numbers, and a legend — colour
 * swatches for categories (bit widths) or a colour bar for a continuous scale (frequencies).
 * Text is drawn with a built-in 5×7 bitmap font (upper case, digits, a little punctuation; lower
 * case letters are drawn as upper case), scaled ×2, so no font file is needed.
 *
 * Continuous values map linearly from [vmin, vmax] onto a perceptually ordered palette (dark blue
 * → green → yellow); NAN cells are drawn light grey. The file is written atomically (io.h).
 */
#ifndef MODE_HEATMAP_H
#define MODE_HEATMAP_H

#include "mode.h"

struct mode_heatmap_panel {
    const char *title;
    const double *v; /* (rows, cols) */
};

struct mode_heatmap {
    const char *title;
    const char *row_label, *col_label; /* "layer", "expert" */
    int rows, cols;
    const int *row_names; /* (rows) numbers printed beside the rows; NULL: 0..rows-1 */
    int n_panel;
    const struct mode_heatmap_panel *panel;
    /* categorical when n_cat > 0: value cat_value[i] is drawn in colour i and labelled cat_label[i] */
    int n_cat;
    const double *cat_value;
    const char *const *cat_label;
    /* continuous */
    double vmin, vmax;
    const char *scale_label;
};

/* Writes the picture to path. MODE_ECANTCREAT / MODE_EIO for the file, MODE_EUSAGE for a
 * picture too large (more than 16384 pixels a side). */
int mode_heatmap_png(const struct mode_heatmap *h, const char *path, struct mode_err *err);

/* For tests: the RGB colour of a continuous value t in [0, 1]. */
void mode_heatmap_color(double t, unsigned char rgb[3]);

#endif
