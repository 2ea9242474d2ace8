// im2col / col2im for 2-D convolution: unrolls receptive fields into GEMM columns and folds gradients back.
package dev.biflow.engine.kernels;

import java.util.Arrays;

/**
 * Column matrix layout: row (c*kh + i)*kw + j, column oh*wo + ow (plus a caller-chosen column
 * offset, so several images can sit side by side in one matrix of row stride ld). Entry =
 * x[c, oh*stride - pad + i, ow*stride - pad + j], 0 outside the image.
 */
public final class Im2col {
    private Im2col() {}

    /** Unrolls image x[xOff ..] (c, h, w) into cols[colOff + row*ld + l]. */
    public static void im2col(float[] x, int xOff, int c, int h, int w, int kh, int kw, int stride, int pad,
                              int ho, int wo, float[] cols, int colOff, int ld) {
        for (int ch = 0; ch < c; ch++)
            for (int i = 0; i < kh; i++)
                for (int j = 0; j < kw; j++) {
                    int dst = colOff + ((ch * kh + i) * kw + j) * ld;
                    // output columns whose input column ow*stride - pad + j falls inside [0, w)
                    int owLo = firstInside(j - pad, stride), owHi = lastInsideExcl(j - pad, stride, w, wo);
                    for (int oh = 0; oh < ho; oh++) {
                        int ih = oh * stride - pad + i;
                        int d = dst + oh * wo;
                        if (ih < 0 || ih >= h || owLo >= owHi) {
                            Arrays.fill(cols, d, d + wo, 0f);
                            continue;
                        }
                        int src = xOff + (ch * h + ih) * w - pad + j;
                        if (owLo > 0) Arrays.fill(cols, d, d + owLo, 0f);
                        if (stride == 1) System.arraycopy(x, src + owLo, cols, d + owLo, owHi - owLo);
                        else for (int ow = owLo; ow < owHi; ow++) cols[d + ow] = x[src + ow * stride];
                        if (owHi < wo) Arrays.fill(cols, d + owHi, d + wo, 0f);
                    }
                }
    }

    /** Adds cols back into gx[gxOff ..] (c, h, w): the adjoint of {@link #im2col}. */
    public static void col2im(float[] cols, int colOff, int ld, int c, int h, int w, int kh, int kw, int stride, int pad,
                              int ho, int wo, float[] gx, int gxOff) {
        for (int ch = 0; ch < c; ch++)
            for (int i = 0; i < kh; i++)
                for (int j = 0; j < kw; j++) {
                    int srcRow = colOff + ((ch * kh + i) * kw + j) * ld;
                    int owLo = firstInside(j - pad, stride), owHi = lastInsideExcl(j - pad, stride, w, wo);
                    if (owLo >= owHi) continue;
                    for (int oh = 0; oh < ho; oh++) {
                        int ih = oh * stride - pad + i;
                        if (ih < 0 || ih >= h) continue;
                        int s = srcRow + oh * wo;
                        int dst = gxOff + (ch * h + ih) * w - pad + j;
                        if (stride == 1) Vec.axpy(1f, cols, s + owLo, gx, dst + owLo, owHi - owLo);
                        else for (int ow = owLo; ow < owHi; ow++) gx[dst + ow * stride] += cols[s + ow];
                    }
                }
    }

    /** Smallest ow >= 0 with ow*stride + base >= 0. */
    private static int firstInside(int base, int stride) {
        return base >= 0 ? 0 : (-base + stride - 1) / stride;
    }

    /** One past the largest ow < wo with ow*stride + base < w (may be <= firstInside: none). */
    private static int lastInsideExcl(int base, int stride, int w, int wo) {
        if (base >= w) return 0;
        int last = (w - 1 - base) / stride; // floor, base < w so numerator >= 0
        return Math.min(wo, last + 1);
    }
}
