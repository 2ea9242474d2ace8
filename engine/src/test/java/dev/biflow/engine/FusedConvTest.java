// Tests of Fused.conv2d, avgPool2d, maxPool2d, patchify and unpatchify against naive loops and finite differences.
package dev.biflow.engine;

import org.junit.jupiter.api.Test;

import static dev.biflow.engine.FusedTest.assertBad;
import static dev.biflow.engine.FusedTest.assertClose;
import static dev.biflow.engine.FusedTest.dbl;
import static dev.biflow.engine.FusedTest.gradCheck;
import static dev.biflow.engine.FusedTest.grads;
import static dev.biflow.engine.FusedTest.randn;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.longs;

class FusedConvTest {

    // ================================================================ references

    /** The naive 6-loop convolution (plus the batch loop), in double; bias may be null. */
    static double[] conv2dRef(double[] x, double[] w, double[] bias, int n, int c, int h, int wi, int o, int kh, int kw,
                              int stride, int pad) {
        int ho = (h + 2 * pad - kh) / stride + 1, wo = (wi + 2 * pad - kw) / stride + 1;
        double[] y = new double[n * o * ho * wo];
        for (int b = 0; b < n; b++)
            for (int oc = 0; oc < o; oc++)
                for (int oh = 0; oh < ho; oh++)
                    for (int ow = 0; ow < wo; ow++) {
                        double s = bias == null ? 0 : bias[oc];
                        for (int ic = 0; ic < c; ic++)
                            for (int i = 0; i < kh; i++)
                                for (int j = 0; j < kw; j++) {
                                    int ih = oh * stride - pad + i, iw = ow * stride - pad + j;
                                    if (ih < 0 || ih >= h || iw < 0 || iw >= wi) continue;
                                    s += x[((b * c + ic) * h + ih) * wi + iw] * w[((oc * c + ic) * kh + i) * kw + j];
                                }
                        y[((b * o + oc) * ho + oh) * wo + ow] = s;
                    }
        return y;
    }

    static double[] poolRef(double[] x, int planes, int h, int w, int k, int stride, boolean max) {
        int ho = (h - k) / stride + 1, wo = (w - k) / stride + 1;
        double[] y = new double[planes * ho * wo];
        for (int p = 0; p < planes; p++)
            for (int oh = 0; oh < ho; oh++)
                for (int ow = 0; ow < wo; ow++) {
                    double acc = max ? Double.NEGATIVE_INFINITY : 0;
                    for (int i = 0; i < k; i++)
                        for (int j = 0; j < k; j++) {
                            double v = x[(p * h + oh * stride + i) * w + ow * stride + j];
                            acc = max ? Math.max(acc, v) : acc + v;
                        }
                    y[(p * ho + oh) * wo + ow] = max ? acc : acc / (k * k);
                }
        return y;
    }

    /** patchify by its definition: out[n, hi*Wp + wi, c*p*p + r*p + s] = x[n, c, hi*p + r, wi*p + s]. */
    static double[] patchifyRef(double[] x, int n, int c, int h, int w, int p) {
        int hp = h / p, wp = w / p, t = hp * wp, dp = c * p * p;
        double[] y = new double[x.length];
        for (int b = 0; b < n; b++)
            for (int hi = 0; hi < hp; hi++)
                for (int wi = 0; wi < wp; wi++)
                    for (int ch = 0; ch < c; ch++)
                        for (int r = 0; r < p; r++)
                            for (int s = 0; s < p; s++)
                                y[(b * t + hi * wp + wi) * dp + ch * p * p + r * p + s] = x[((b * c + ch) * h + hi * p + r) * w + wi * p + s];
        return y;
    }

    static double[] unpatchifyRef(double[] z, int n, int c, int h, int w, int p) {
        // the inverse permutation: read patchify's index map backwards
        int hp = h / p, wp = w / p, t = hp * wp, dp = c * p * p;
        double[] x = new double[z.length];
        for (int b = 0; b < n; b++)
            for (int hi = 0; hi < hp; hi++)
                for (int wi = 0; wi < wp; wi++)
                    for (int ch = 0; ch < c; ch++)
                        for (int r = 0; r < p; r++)
                            for (int s = 0; s < p; s++)
                                x[((b * c + ch) * h + hi * p + r) * w + wi * p + s] = z[(b * t + hi * wp + wi) * dp + ch * p * p + r * p + s];
        return x;
    }

    // ================================================================ conv2d

    @Test
    void conv2dMatchesTheNaiveLoopAndFiniteDifferences() {
        qt().withExamples(40).forAll(integers().between(1, 9), integers().between(1, 9), integers().between(1, 3), longs().all())
                .checkAssert((h, w, kmax, seed) -> {
                    Rng rng = new Rng(seed);
                    int n = 1 + rng.nextInt(2), c = 1 + rng.nextInt(3), o = 1 + rng.nextInt(4);
                    int kh = 1 + rng.nextInt(kmax), kw = 1 + rng.nextInt(kmax), stride = 1 + rng.nextInt(2), pad = rng.nextInt(3);
                    if (h + 2 * pad < kh || w + 2 * pad < kw) return; // kernel does not fit: covered by rejectsBadShapes
                    boolean hasBias = rng.nextInt(3) != 0;
                    Tensor x = randn(rng, n, c, h, w), wt = randn(rng, o, c, kh, kw), b = randn(rng, o);
                    String what = "conv2d x" + Shape.str(x.shape()) + " w" + Shape.str(wt.shape()) + " stride " + stride + " pad " + pad
                            + (hasBias ? " bias" : "");
                    gradCheck(what, in -> Fused.conv2d(in[0], in[1], hasBias ? in[2] : null, stride, pad),
                            d -> conv2dRef(d[0], d[1], hasBias ? d[2] : null, n, c, h, w, o, kh, kw, stride, pad), seed, 150, x, wt, b);
                });
    }

    @Test
    void conv2dOverManyImagesSplitsIntoGroupsWithTheSameResult() {
        // with the im2col budget cut to 2 images' worth of columns, 7 images run as 4 groups (the last one short)
        Rng rng = new Rng(3);
        int n = 7, c = 3, h = 6, o = 4;
        Tensor x = randn(rng, n, c, h, h), w = randn(rng, o, c, 3, 3), b = randn(rng, o), g = randn(rng, n, o, h, h);
        FusedTest.Fn f = in -> Fused.conv2d(in[0], in[1], in[2], 1, 1);
        int budget = Fused.colsBudget;
        float[] y;
        float[][] all;
        try {
            Fused.colsBudget = 2 * (c * 9) * (h * h);
            y = f.apply(new Tensor[]{x, w, b}).data();
            all = grads(f, g, x, w, b);
        } finally {
            Fused.colsBudget = budget;
        }
        // one group of all 7 images: outputs and input gradients agree, parameter gradients too
        assertClose("output", y, f.apply(new Tensor[]{x, w, b}).data(), 1e-5, 1e-5);
        float[][] one = grads(f, g, x, w, b);
        assertClose("grad x", all[0], one[0], 1e-5, 1e-5);
        assertClose("grad w", all[1], one[1], 1e-4, 1e-4);
        assertClose("grad bias", all[2], one[2], 1e-4, 1e-4);
        assertClose("output vs naive loop", y, conv2dRef(dbl(x.data()), dbl(w.data()), dbl(b.data()), n, c, h, h, o, 3, 3, 1, 1), 1e-4, 1e-4);
    }

    @Test
    void conv2dRejectsBadShapes() {
        assertBad(() -> Fused.conv2d(Tensor.zeros(1, 3, 8, 8), Tensor.zeros(4, 2, 3, 3), null, 1, 0),
                "conv2d", "(1, 3, 8, 8)", "(4, 2, 3, 3)", "channels");
        assertBad(() -> Fused.conv2d(Tensor.zeros(1, 3, 2, 8), Tensor.zeros(4, 3, 5, 3), null, 1, 1), "conv2d", "kernel 5x3", "does not fit");
        assertBad(() -> Fused.conv2d(Tensor.zeros(1, 3, 8, 8), Tensor.zeros(4, 3, 3, 3), Tensor.zeros(3), 1, 0), "conv2d", "bias is (3)", "(4)");
        assertBad(() -> Fused.conv2d(Tensor.zeros(3, 8, 8), Tensor.zeros(4, 3, 3, 3), null, 1, 0), "conv2d", "x", "(N, C, H, W)", "(3, 8, 8)");
        assertBad(() -> Fused.conv2d(Tensor.zeros(1, 3, 8, 8), Tensor.zeros(4, 3, 3, 3), null, 0, 0), "conv2d", "stride");
        assertBad(() -> Fused.conv2d(Tensor.zeros(1, 3, 8, 8), Tensor.zeros(4, 3, 3, 3), null, 1, -1), "conv2d", "padding");
    }

    // ================================================================ pooling

    @Test
    void poolingMatchesNaiveLoopsAndFiniteDifferences() {
        qt().withExamples(40).forAll(integers().between(1, 11), integers().between(1, 11), integers().between(1, 4), longs().all())
                .checkAssert((h, w, k, seed) -> {
                    if (k > h || k > w) return;
                    Rng rng = new Rng(seed);
                    int n = 1 + rng.nextInt(2), c = 1 + rng.nextInt(3), stride = 1 + rng.nextInt(3); // stride < k overlaps windows
                    // distinct values so the max is unique and finite differences do not straddle a tie
                    int numel = n * c * h * w;
                    float[] v = new float[numel];
                    for (int i = 0; i < numel; i++) v[i] = i * 0.01f;
                    for (int i = numel - 1; i > 0; i--) {
                        int j = rng.nextInt(i + 1);
                        float t = v[i]; v[i] = v[j]; v[j] = t;
                    }
                    Tensor x = Tensor.of(v, n, c, h, w);
                    String what = " x" + Shape.str(x.shape()) + " k " + k + " stride " + stride;
                    gradCheck("avgPool2d" + what, in -> Fused.avgPool2d(in[0], k, stride),
                            d -> poolRef(d[0], n * c, h, w, k, stride, false), seed, x);
                    gradCheck("maxPool2d" + what, in -> Fused.maxPool2d(in[0], k, stride),
                            d -> poolRef(d[0], n * c, h, w, k, stride, true), seed, x);
                });
    }

    @Test
    void poolingRejectsBadShapes() {
        assertBad(() -> Fused.avgPool2d(Tensor.zeros(1, 1, 3, 8), 4, 4), "avgPool2d", "kernel 4", "3x8");
        assertBad(() -> Fused.maxPool2d(Tensor.zeros(1, 8, 8), 2, 2), "maxPool2d", "(N, C, H, W)", "(1, 8, 8)");
        assertBad(() -> Fused.maxPool2d(Tensor.zeros(1, 1, 8, 8), 0, 2), "maxPool2d", "kernel");
        assertBad(() -> Fused.avgPool2d(Tensor.zeros(1, 1, 8, 8), 2, 0), "avgPool2d", "stride");
    }

    // ================================================================ patchify

    @Test
    void patchifyFollowsUnfoldOrderOnAHandComputedExample() {
        // x[0, c, r, s] = 16 c + 4 r + s on a 2x4x4 image, p = 2: 4 tokens of 2*2*2 = 8 values
        Tensor x = Tensor.arange(32).reshape(1, 2, 4, 4);
        Tensor z = Fused.patchify(x, 2);
        assertArrayEquals(new int[]{1, 4, 8}, z.shape());
        float[][] expected = {
                {0, 1, 4, 5, 16, 17, 20, 21},     // patch (0, 0): channel 0 rows 0-1 cols 0-1, then channel 1
                {2, 3, 6, 7, 18, 19, 22, 23},     // patch (0, 1)
                {8, 9, 12, 13, 24, 25, 28, 29},   // patch (1, 0)
                {10, 11, 14, 15, 26, 27, 30, 31}, // patch (1, 1)
        };
        for (int t = 0; t < 4; t++) assertArrayEquals(expected[t], Ops.narrow(z, 1, t, 1).data(), "token " + t);
        assertArrayEquals(x.data(), Fused.unpatchify(z, 2, 4, 4, 2).data());
    }

    @Test
    void patchifyRoundTripsAndItsGradientsArePermutations() {
        qt().withExamples(30).forAll(integers().between(1, 4), integers().between(1, 4), integers().between(1, 3), longs().all())
                .checkAssert((hp, wp, p, seed) -> {
                    Rng rng = new Rng(seed);
                    int n = 1 + rng.nextInt(2), c = 1 + rng.nextInt(3), h = hp * p, w = wp * p;
                    Tensor x = randn(rng, n, c, h, w);
                    Tensor z = Fused.patchify(x, p);
                    assertArrayEquals(new int[]{n, hp * wp, c * p * p}, z.shape());
                    assertArrayEquals(x.data(), Fused.unpatchify(z, c, h, w, p).data(), "round trip");
                    assertArrayEquals(z.data(), Fused.patchify(Fused.unpatchify(z, c, h, w, p), p).data(), "inverse round trip");
                    String what = " x" + Shape.str(x.shape()) + " p " + p;
                    gradCheck("patchify" + what, in -> Fused.patchify(in[0], p), d -> patchifyRef(d[0], n, c, h, w, p), seed, x);
                    gradCheck("unpatchify" + what, in -> Fused.unpatchify(in[0], c, h, w, p),
                            d -> unpatchifyRef(d[0], n, c, h, w, p), seed, z);
                    assertClose("patchify vs definition", z.data(), patchifyRef(dbl(x.data()), n, c, h, w, p), 0, 0);
                });
    }

    @Test
    void patchifyRejectsBadShapes() {
        assertBad(() -> Fused.patchify(Tensor.zeros(1, 3, 6, 8), 4), "patchify", "(1, 3, 6, 8)", "H=6", "patch size 4");
        assertBad(() -> Fused.patchify(Tensor.zeros(3, 8, 8), 4), "patchify", "(N, C, H, W)");
        assertBad(() -> Fused.patchify(Tensor.zeros(1, 3, 8, 8), 0), "patchify", "patch size");
        assertBad(() -> Fused.unpatchify(Tensor.zeros(1, 4, 48), 2, 8, 8, 4), "unpatchify", "(1, 4, 48)", "(N, 4, 32)");
        assertBad(() -> Fused.unpatchify(Tensor.zeros(1, 4, 12), 3, 8, 8, 4), "unpatchify", "(1, 4, 12)", "(N, 4, 48)");
        assertBad(() -> Fused.unpatchify(Tensor.zeros(1, 4, 48), 3, 8, 7, 4), "unpatchify", "W=7");
    }
}
