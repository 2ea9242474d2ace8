// Fused ops with hand-written gradients: softmax, layernorm, attention, losses, conv/pool and patchify.
package dev.biflow.engine;

import dev.biflow.engine.kernels.Attention;
import dev.biflow.engine.kernels.GemmEpilogue;
import dev.biflow.engine.kernels.Im2col;
import dev.biflow.engine.kernels.LayerNormKernel;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.engine.kernels.Softmax;
import dev.biflow.engine.kernels.Vec;

import java.util.Arrays;

/**
 * Ops that would be slow or memory-hungry as compositions of {@link Ops} primitives, each with a
 * hand-written backward next to its forward. Every one is checked in FusedTest against the
 * composed form and against finite differences.
 *
 * <p>Determinism: every parallel loop writes each output element from exactly one range, and
 * reductions across rows sum fixed-size blocks in a fixed order, so results do not depend on the
 * thread count. Exponentials and lane sums go through {@link Softmax#exp} and
 * {@link Vec#sumLanes}, which give the same bits before and after JIT compilation (the
 * Vector API's own EXP and reduceLanes(ADD) do not), so two runs of a program agree bit for bit.
 *
 * <p>Memory: attention keeps its probabilities (B*H*Tq*Tk floats) for the backward only when a
 * gradient is being recorded; under {@link Grad#noGrad()} (sampling, KV-cache decoding) it works
 * in per-thread scratch.
 */
public final class Fused {
    private Fused() {}

    /** Work (elements touched) per parallel chunk below which a loop stays on one thread. */
    private static final int GRAIN = 1 << 14;

    private static int grain(long perItem) { return (int) Math.max(1, GRAIN / Math.max(1, perItem)); }

    // ================================================================ softmax

    /** Softmax along an axis (negative axes count from the end), max-subtracted. */
    public static Tensor softmax(Tensor x, int axis) { return softmaxImpl(x, axis, false); }

    /** log(softmax(x)) along an axis, as x - logsumexp(x): finite where softmax underflows to 0. */
    public static Tensor logSoftmax(Tensor x, int axis) { return softmaxImpl(x, axis, true); }

    private static Tensor softmaxImpl(Tensor x, int axis, boolean log) {
        String op = log ? "logSoftmax" : "softmax";
        if (x.shape.length == 0)
            throw new IllegalArgumentException(op + ": needs a tensor of rank >= 1, got a scalar " + Shape.str(x.shape));
        int r = x.shape.length;
        int ax = Shape.axis(axis, r, op);
        int outer = Shape.prod(x.shape, 0, ax), n = x.shape[ax], inner = Shape.prod(x.shape, ax + 1, r);
        float[] xd = x.data;
        float[] y = Arena.floats(xd.length);
        if (xd.length > 0) {
            if (inner == 1) {
                Parallel.forRange(outer, grain(n), (lo, hi) -> {
                    for (int o = lo; o < hi; o++) {
                        if (log) Softmax.logSoftmaxRow(xd, o * n, y, o * n, n);
                        else Softmax.softmaxRow(xd, o * n, y, o * n, n);
                    }
                });
            } else {
                Parallel.forRange(outer, grain((long) n * inner), (lo, hi) -> {
                    float[] m = Arena.floats(inner), s = Arena.floats(inner);
                    for (int o = lo; o < hi; o++) Softmax.softmaxCols(xd, y, o * n * inner, n, inner, m, s, log);
                });
            }
        }
        return Grad.record(new Tensor(y, x.shape.clone()), log ? "log_softmax" : "softmax", (g, buf) -> {
            float[] gx = buf.of(x);
            if (gx == null || y.length == 0) return;
            if (inner == 1) {
                Parallel.forRange(outer, grain(n), (lo, hi) -> {
                    for (int o = lo; o < hi; o++) {
                        if (log) Softmax.logSoftmaxBackwardRow(y, o * n, g, o * n, gx, o * n, n);
                        else Softmax.softmaxBackwardRow(y, o * n, g, o * n, gx, o * n, n);
                    }
                });
            } else {
                Parallel.forRange(outer, grain((long) n * inner), (lo, hi) -> {
                    float[] d = Arena.floats(inner);
                    for (int o = lo; o < hi; o++) Softmax.softmaxColsBackward(y, g, gx, o * n * inner, n, inner, d, log);
                });
            }
        }, x);
    }

    // ================================================================ layer norm

    /** Rows per block of the parameter-gradient reduction (fixed, so sums do not depend on threads). */
    private static final int LN_BLOCK = 64;

    /**
     * LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * weight + bias, biased variance
     * as in PyTorch. weight and bias are (D) and may each be null (no scale / no shift).
     */
    public static Tensor layerNorm(Tensor x, Tensor weight, Tensor bias, float eps) {
        if (x.shape.length == 0)
            throw new IllegalArgumentException("layerNorm: x must have rank >= 1 (..., D), got a scalar");
        int d = x.shape[x.shape.length - 1];
        if (d == 0)
            throw new IllegalArgumentException("layerNorm: x is " + Shape.str(x.shape) + ": the last axis (D) is empty");
        checkParam("layerNorm", "weight", weight, d, x);
        checkParam("layerNorm", "bias", bias, d, x);
        if (!(eps >= 0f) || Float.isInfinite(eps))
            throw new IllegalArgumentException("layerNorm: eps must be a finite value >= 0, got " + eps);
        int rows = x.data.length / d;
        float[] xd = x.data, wd = weight == null ? null : weight.data, bd = bias == null ? null : bias.data;
        float[] y = Arena.floats(xd.length), mean = Arena.floats(rows), rstd = Arena.floats(rows);
        Parallel.forRange(rows, grain(3L * d), (lo, hi) -> LayerNormKernel.forward(xd, wd, bd, y, mean, rstd, d, eps, lo, hi));
        return Grad.record(new Tensor(y, x.shape.clone()), "layer_norm", (g, buf) -> {
            float[] gx = buf.of(x);
            float[] gw = weight == null ? null : buf.of(weight);
            float[] gb = bias == null ? null : buf.of(bias);
            if (gx != null)
                Parallel.forRange(rows, grain(4L * d), (lo, hi) -> LayerNormKernel.backwardInput(g, xd, wd, mean, rstd, gx, d, lo, hi));
            if (gw != null || gb != null) {
                int nb = (rows + LN_BLOCK - 1) / LN_BLOCK;
                float[] pw = gw == null ? null : Arena.floats(nb * d), pb = gb == null ? null : Arena.floats(nb * d);
                Parallel.forRange(nb, grain((long) LN_BLOCK * d), (lo, hi) -> {
                    for (int blk = lo; blk < hi; blk++)
                        LayerNormKernel.paramPartials(g, xd, mean, rstd, pw, pb, blk * d, d,
                                blk * LN_BLOCK, Math.min(rows, (blk + 1) * LN_BLOCK));
                });
                for (int blk = 0; blk < nb; blk++) {
                    if (gw != null) Vec.axpy(1f, pw, blk * d, gw, 0, d);
                    if (gb != null) Vec.axpy(1f, pb, blk * d, gb, 0, d);
                }
            }
        }, x, weight, bias);
    }

    private static void checkParam(String op, String name, Tensor p, int d, Tensor x) {
        if (p != null && (p.shape.length != 1 || p.shape[0] != d))
            throw new IllegalArgumentException(op + ": x is " + Shape.str(x.shape) + " but " + name + " is " + Shape.str(p.shape)
                    + ": expected (" + d + "), one value per element of the last axis");
    }

    // ================================================================ attention

    /**
     * Scaled dot-product attention: out = softmax(scale * q k^T, masked) v.
     *
     * <p>q is (B, H, Tq, Dh); k is (B, H, Tk, Dh); v is (B, H, Tk, Dv) (usually Dv = Dh); the
     * output is (B, H, Tq, Dv). With causal, query i sees key j only when j <= i + (Tk - Tq): the
     * usual lower triangle when Tq == Tk, and every cached key for a one-token decode step
     * against a KV cache. mask (optional) broadcasts to (B, H, Tq, Tk), e.g. (Tq, Tk) or
     * (B|1, H|1, Tq, Tk); 0 blocks a key, nonzero allows it. A query that may see no key
     * outputs zeros (not NaN) and passes no gradient. Gradients flow to q, k and v, not to mask.
     */
    public static Tensor attention(Tensor q, Tensor k, Tensor v, boolean causal, Tensor mask, float scale) {
        requireRank(q, 4, "attention", "q", "(B, H, Tq, Dh)");
        requireRank(k, 4, "attention", "k", "(B, H, Tk, Dh)");
        requireRank(v, 4, "attention", "v", "(B, H, Tk, Dh)");
        int nb = q.shape[0], nh = q.shape[1], tq = q.shape[2], dh = q.shape[3];
        int tk = k.shape[2], dv = v.shape[3];
        if (k.shape[0] != nb || k.shape[1] != nh)
            throw new IllegalArgumentException("attention: q is " + Shape.str(q.shape) + " but k is " + Shape.str(k.shape)
                    + ": batch and head dims (B, H) must match");
        if (k.shape[3] != dh)
            throw new IllegalArgumentException("attention: q is " + Shape.str(q.shape) + " but k is " + Shape.str(k.shape)
                    + ": head dims must match");
        if (v.shape[0] != nb || v.shape[1] != nh || v.shape[2] != tk)
            throw new IllegalArgumentException("attention: k is " + Shape.str(k.shape) + " but v is " + Shape.str(v.shape)
                    + ": v must be (B, H, Tk, Dv) with the B, H and Tk of k");
        if (dh == 0)
            throw new IllegalArgumentException("attention: q is " + Shape.str(q.shape) + ": head dim Dh must be >= 1");
        int[] full = {nb, nh, tq, tk};
        int[] mshape = null;
        float[] md = null;
        if (mask != null) {
            boolean ok = mask.shape.length >= 1 && mask.shape.length <= 4;
            for (int i = 0; ok && i < mask.shape.length; i++) {
                int md0 = mask.shape[mask.shape.length - 1 - i], fd = full[3 - i];
                ok = md0 == fd || md0 == 1;
            }
            if (!ok)
                throw new IllegalArgumentException("attention: mask is " + Shape.str(mask.shape) + " but scores are "
                        + Shape.str(full) + " (B, H, Tq, Tk): the mask must broadcast to them, e.g. (" + tq + ", " + tk
                        + ") or (B|1, H|1, " + tq + ", " + tk + ")");
            mshape = new int[]{1, 1, 1, 1}; // right-aligned to rank 4, as the Backend methods take it
            System.arraycopy(mask.shape, 0, mshape, 4 - mask.shape.length, mask.shape.length);
            md = mask.data;
        }
        final int[] msh = mshape;
        final float[] mdat = md;
        float[] out = Arena.floats(nb * nh * tq * dv);
        float[] qd = q.data, kd = k.data, vd = v.data;
        Backend be = Backend.active(); // the backward runs on the backend that saved the forward's state
        Attention.Layouts lay = Attention.Layouts.contiguous(nh, tq, tk, dh, dv);
        Object saved = be.attentionForward(qd, kd, vd, out, lay, nb, nh, tq, tk, dh, dv, causal, mdat, msh, scale,
                Grad.anyNeedsGrad(q, k, v));
        return Grad.record(new Tensor(out, new int[]{nb, nh, tq, dv}), "attention", (g, buf) ->
                be.attentionBackward(saved, g, qd, kd, vd, buf.of(q), buf.of(k), buf.of(v), lay, nb, nh, tq, tk, dh, dv,
                        causal, mdat, msh, scale), q, k, v);
    }

    /**
     * Causal or full self-attention straight from a fused qkv projection, with its gradient: qkv (B, T, 3 H Dh)
     * ([q heads | k heads | v heads] along the last axis) -> (B, T, H Dh), heads merged. q and k are first
     * multiplied by {@code qkScale} each (TARFlow's split scaling; 1: none) and the logits by {@code scale}.
     * The same bits, forward and backward, as splitting and permuting to (B, H, T, Dh), scaling q and k with
     * mulScalar, {@link #attention} and permuting back (a test checks it), without those five copies and
     * their gradients' copies: the backend reads and writes the heads where the projection put them
     * ({@link Attention.Layouts#packed}).
     */
    public static Tensor selfAttentionPacked(Tensor qkv, int heads, boolean causal, float qkScale, float scale) {
        requireRank(qkv, 3, "selfAttentionPacked", "qkv", "(B, T, 3 H Dh)");
        int nb = qkv.shape[0], t = qkv.shape[1], w = qkv.shape[2];
        if (heads < 1 || w % (3 * heads) != 0 || w == 0)
            throw new IllegalArgumentException("selfAttentionPacked: qkv is " + Shape.str(qkv.shape) + ": its last axis must be 3 x heads ("
                    + heads + ") x head dim");
        int dh = w / (3 * heads), d = heads * dh;
        float[] src = qkv.data;
        // (B, T, 3D) with the q and k columns scaled, v as it is: the operands attention reads (mulScalar's rounding)
        float[] sc = src;
        if (qkScale != 1f) {
            float[] scaled = Arena.floats(src.length);
            int rows = nb * t;
            Parallel.forRange(rows, Math.max(1, 4096 / w), (lo, hi) -> {
                for (int r = lo; r < hi; r++) {
                    Vec.scale(qkScale, src, scaled, r * w, r * w + 2 * d);
                    System.arraycopy(src, r * w + 2 * d, scaled, r * w + 2 * d, d);
                }
            });
            sc = scaled;
        }
        float[] op = sc;
        boolean grad = Grad.anyNeedsGrad(qkv);
        float[] out = Arena.floats(nb * t * d);
        Attention.Layouts lay = Attention.Layouts.packed(heads, t, dh);
        Backend be = Backend.active(); // the backward runs on the backend that saved the forward's state
        Object saved = be.attentionForward(op, op, op, out, lay, nb, heads, t, t, dh, dh, causal, null, null, scale, grad);
        return Grad.record(new Tensor(out, new int[]{nb, t, d}), "self_attention_packed", (g, buf) -> {
            float[] gx = buf.of(qkv);
            if (gx == null) return;
            // gradients with respect to the scaled operands, in qkv's layout; then through the scaling (mulScalar's
            // backward: each element once, s * g) into qkv's gradient
            float[] gs = qkScale == 1f ? gx : Arena.floats(gx.length);
            be.attentionBackward(saved, g, op, op, op, gs, gs, gs, lay, nb, heads, t, t, dh, dh, causal, null, null, scale);
            if (gs != gx) {
                int rows = nb * t;
                Parallel.forRange(rows, Math.max(1, 4096 / w), (lo, hi) -> {
                    for (int r = lo; r < hi; r++) {
                        Vec.axpy(qkScale, gs, gx, r * w, r * w + 2 * d);
                        Vec.axpy(1f, gs, gx, r * w + 2 * d, r * w + w);
                    }
                });
            }
        }, qkv);
    }

    private static void requireRank(Tensor t, int rank, String op, String name, String layout) {
        if (t == null) throw new IllegalArgumentException(op + ": " + name + " must not be null");
        if (t.shape.length != rank)
            throw new IllegalArgumentException(op + ": " + name + " must be a rank-" + rank + " tensor " + layout
                    + ", got shape " + Shape.str(t.shape));
    }

    // ================================================================ losses

    /**
     * Mean over the N rows of -log softmax(logits)[target]: logits (N, C), one target class in
     * [0, C) per row.
     */
    public static Tensor crossEntropy(Tensor logits, int[] targets) {
        requireRank(logits, 2, "crossEntropy", "logits", "(N, C)");
        int n = logits.shape[0], c = logits.shape[1];
        if (targets == null || targets.length != n)
            throw new IllegalArgumentException("crossEntropy: logits are " + Shape.str(logits.shape) + " but "
                    + (targets == null ? "targets is null" : targets.length + " targets were given") + ": expected one target per row (" + n + ")");
        if (n == 0) throw new IllegalArgumentException("crossEntropy: logits are " + Shape.str(logits.shape) + ": no rows to average over");
        if (c == 0) throw new IllegalArgumentException("crossEntropy: logits are " + Shape.str(logits.shape) + ": no classes");
        for (int i = 0; i < n; i++)
            if (targets[i] < 0 || targets[i] >= c)
                throw new IllegalArgumentException("crossEntropy: targets[" + i + "] = " + targets[i] + " is out of range for C = "
                        + c + " classes (logits " + Shape.str(logits.shape) + "); targets must be in [0, " + c + ")");
        int[] t = targets.clone();
        float[] x = logits.data;
        float[] lse = Arena.floats(n), rowLoss = Arena.floats(n);
        Parallel.forRange(n, grain(c), (lo, hi) -> {
            for (int i = lo; i < hi; i++) {
                lse[i] = Softmax.logSumExp(x, i * c, c);
                rowLoss[i] = lse[i] - x[i * c + t[i]];
            }
        });
        double sum = 0;
        for (float v : rowLoss) sum += v;
        Tensor out = new Tensor(new float[]{(float) (sum / n)}, new int[0]);
        return Grad.record(out, "cross_entropy", (g, buf) -> {
            float[] gx = buf.of(logits);
            if (gx == null) return;
            float s = g[0] / n;
            Parallel.forRange(n, grain(c), (lo, hi) -> {
                float[] e = Arena.floats(c);
                for (int i = lo; i < hi; i++) {
                    int o = i * c;
                    Softmax.expShift(x, o, e, 0, c, lse[i]); // softmax, since lse normalises
                    Vec.axpy(s, e, 0, gx, o, c);
                    gx[o + t[i]] -= s;
                }
            });
        }, logits);
    }

    /** Elements per block of the MSE sum (fixed, so the sum does not depend on threads). */
    private static final int MSE_BLOCK = 1 << 12;

    /** mean((a - b)^2) over all elements; a and b must have exactly the same shape. */
    public static Tensor mse(Tensor a, Tensor b) {
        if (a == null || b == null) throw new IllegalArgumentException("mse: operands must not be null");
        if (!a.sameShape(b))
            throw new IllegalArgumentException("mse: a is " + Shape.str(a.shape) + " but b is " + Shape.str(b.shape)
                    + ": shapes must match exactly (no broadcasting)");
        int n = a.data.length;
        if (n == 0) throw new IllegalArgumentException("mse: empty tensors " + Shape.str(a.shape) + ": nothing to average");
        float[] ad = a.data, bd = b.data;
        int nb = (n + MSE_BLOCK - 1) / MSE_BLOCK;
        double[] part = new double[nb];
        Parallel.forRange(nb, 4, (lo, hi) -> {
            for (int blk = lo; blk < hi; blk++) {
                int s = blk * MSE_BLOCK, e = Math.min(n, s + MSE_BLOCK);
                double acc = 0;
                for (int i = s; i < e; i++) {
                    float dlt = ad[i] - bd[i];
                    acc += dlt * dlt;
                }
                part[blk] = acc;
            }
        });
        double sum = 0;
        for (double v : part) sum += v;
        Tensor out = new Tensor(new float[]{(float) (sum / n)}, new int[0]);
        return Grad.record(out, "mse", (g, buf) -> {
            float[] ga = buf.of(a), gb = buf.of(b);
            float s = 2f * g[0] / n;
            Parallel.forRange(n, GRAIN, (lo, hi) -> {
                for (int i = lo; i < hi; i++) {
                    float dd = s * (ad[i] - bd[i]);
                    if (ga != null) ga[i] += dd;
                    if (gb != null) gb[i] -= dd;
                }
            });
        }, a, b);
    }

    // ================================================================ convolution and pooling

    /**
     * Upper bound on the floats of one im2col group (several images side by side in one GEMM).
     * Not final so that tests can shrink it to cover the multi-group path with small images.
     */
    static int colsBudget = 1 << 22;

    /**
     * 2-D cross-correlation (PyTorch's conv2d): x (N, C, H, W), w (O, C, kh, kw), bias (O) or
     * null; output (N, O, Ho, Wo) with Ho = (H + 2 padding - kh) / stride + 1. Implemented as
     * im2col over groups of images and one GEMM per group.
     */
    public static Tensor conv2d(Tensor x, Tensor w, Tensor bias, int stride, int padding) {
        requireRank(x, 4, "conv2d", "x", "(N, C, H, W)");
        requireRank(w, 4, "conv2d", "w", "(O, C, kh, kw)");
        int n = x.shape[0], c = x.shape[1], h = x.shape[2], wi = x.shape[3];
        int o = w.shape[0], kh = w.shape[2], kw = w.shape[3];
        if (w.shape[1] != c)
            throw new IllegalArgumentException("conv2d: x is " + Shape.str(x.shape) + " but w is " + Shape.str(w.shape)
                    + ": input channels must match (x has C=" + c + ", w expects " + w.shape[1] + ")");
        if (stride < 1) throw new IllegalArgumentException("conv2d: stride must be >= 1, got " + stride);
        if (padding < 0) throw new IllegalArgumentException("conv2d: padding must be >= 0, got " + padding);
        if (kh < 1 || kw < 1 || h + 2 * padding < kh || wi + 2 * padding < kw)
            throw new IllegalArgumentException("conv2d: kernel " + kh + "x" + kw + " (w " + Shape.str(w.shape)
                    + ") does not fit the padded input " + (h + 2 * padding) + "x" + (wi + 2 * padding) + " (x " + Shape.str(x.shape)
                    + ", padding " + padding + ")");
        if (bias != null && (bias.shape.length != 1 || bias.shape[0] != o))
            throw new IllegalArgumentException("conv2d: w is " + Shape.str(w.shape) + " but bias is " + Shape.str(bias.shape)
                    + ": expected (" + o + "), one value per output channel");
        int ho = (h + 2 * padding - kh) / stride + 1, wo = (wi + 2 * padding - kw) / stride + 1;
        int l = ho * wo, ckk = c * kh * kw;
        int grp = (int) Math.max(1, Math.min(n, colsBudget / Math.max(1L, (long) Math.max(ckk, o) * l)));
        float[] xd = x.data, wd = w.data, bd = bias == null ? null : bias.data;
        float[] out = Arena.floats(n * o * l);
        Backend be = Backend.active();
        int imgIn = c * h * wi, imgOut = o * l;
        if (n > 0) {
            float[] cols = Arena.floats(ckk * grp * l), y = Arena.floats(o * grp * l);
            for (int g0 = 0; g0 < n; g0 += grp) {
                int gn = Math.min(grp, n - g0), ld = gn * l, base = g0;
                Parallel.forRange(gn, 1, (lo, hi) -> {
                    for (int i = lo; i < hi; i++)
                        Im2col.im2col(xd, (base + i) * imgIn, c, h, wi, kh, kw, stride, padding, ho, wo, cols, i * l, ld);
                });
                be.gemm(false, false, o, ld, ckk, 1f, wd, 0, ckk, cols, 0, ld, 0f, y, 0, ld, GemmEpilogue.NONE);
                Parallel.forRange(gn * o, grain(l), (lo, hi) -> {
                    for (int io = lo; io < hi; io++) {
                        int i = io / o, oc = io % o;
                        int dst = (base + i) * imgOut + oc * l, src = oc * ld + i * l;
                        System.arraycopy(y, src, out, dst, l);
                        if (bd != null) { float bv = bd[oc]; for (int j = 0; j < l; j++) out[dst + j] += bv; }
                    }
                });
            }
        }
        return Grad.record(new Tensor(out, new int[]{n, o, ho, wo}), "conv2d", (g, buf) -> {
            float[] gx = buf.of(x), gw = buf.of(w), gb = bias == null ? null : buf.of(bias);
            if (gb != null) {
                Parallel.forRange(o, grain((long) n * l), (lo, hi) -> {
                    for (int oc = lo; oc < hi; oc++) {
                        float s = 0f;
                        for (int i = 0; i < n; i++) s += Vec.sum(g, i * imgOut + oc * l, l);
                        gb[oc] += s;
                    }
                });
            }
            if (gx == null && gw == null) return;
            float[] cols = Arena.floats(ckk * grp * l), gy = Arena.floats(o * grp * l);
            for (int g0 = 0; g0 < n; g0 += grp) {
                int gn = Math.min(grp, n - g0), ld = gn * l, base = g0;
                Parallel.forRange(gn * o, grain(l), (lo, hi) -> {
                    for (int io = lo; io < hi; io++) {
                        int i = io / o, oc = io % o;
                        System.arraycopy(g, (base + i) * imgOut + oc * l, gy, oc * ld + i * l, l);
                    }
                });
                if (gw != null) {
                    Parallel.forRange(gn, 1, (lo, hi) -> {
                        for (int i = lo; i < hi; i++)
                            Im2col.im2col(xd, (base + i) * imgIn, c, h, wi, kh, kw, stride, padding, ho, wo, cols, i * l, ld);
                    });
                    be.gemm(false, true, o, ckk, ld, 1f, gy, 0, ld, cols, 0, ld, 1f, gw, 0, ckk, GemmEpilogue.NONE);
                }
                if (gx != null) {
                    be.gemm(true, false, ckk, ld, o, 1f, wd, 0, ckk, gy, 0, ld, 0f, cols, 0, ld, GemmEpilogue.NONE);
                    Parallel.forRange(gn, 1, (lo, hi) -> {
                        for (int i = lo; i < hi; i++)
                            Im2col.col2im(cols, i * l, ld, c, h, wi, kh, kw, stride, padding, ho, wo, gx, (base + i) * imgIn);
                    });
                }
            }
        }, x, w, bias);
    }

    /** Average pooling over kernel x kernel windows, no padding: (N, C, H, W) -> (N, C, Ho, Wo). */
    public static Tensor avgPool2d(Tensor x, int kernel, int stride) {
        int[] d = poolDims("avgPool2d", x, kernel, stride);
        int planes = d[0], h = d[1], w = d[2], ho = d[3], wo = d[4];
        float[] xd = x.data, out = Arena.floats(planes * ho * wo);
        float inv = 1f / (kernel * kernel);
        Parallel.forRange(planes, grain((long) h * w), (lo, hi) -> {
            for (int pl = lo; pl < hi; pl++) {
                int xi = pl * h * w, oi = pl * ho * wo;
                for (int oh = 0; oh < ho; oh++)
                    for (int ow = 0; ow < wo; ow++) {
                        float s = 0f;
                        for (int i = 0; i < kernel; i++) {
                            int r = xi + (oh * stride + i) * w + ow * stride;
                            for (int j = 0; j < kernel; j++) s += xd[r + j];
                        }
                        out[oi + oh * wo + ow] = s * inv;
                    }
            }
        });
        return Grad.record(new Tensor(out, new int[]{x.shape[0], x.shape[1], ho, wo}), "avg_pool2d", (g, buf) -> {
            float[] gx = buf.of(x);
            if (gx == null) return;
            Parallel.forRange(planes, grain((long) h * w), (lo, hi) -> {
                for (int pl = lo; pl < hi; pl++) {
                    int xi = pl * h * w, oi = pl * ho * wo;
                    for (int oh = 0; oh < ho; oh++)
                        for (int ow = 0; ow < wo; ow++) {
                            float gv = g[oi + oh * wo + ow] * inv;
                            for (int i = 0; i < kernel; i++) {
                                int r = xi + (oh * stride + i) * w + ow * stride;
                                for (int j = 0; j < kernel; j++) gx[r + j] += gv;
                            }
                        }
                }
            });
        }, x);
    }

    /** Max pooling over kernel x kernel windows, no padding; the gradient goes to the first maximum. */
    public static Tensor maxPool2d(Tensor x, int kernel, int stride) {
        int[] d = poolDims("maxPool2d", x, kernel, stride);
        int planes = d[0], h = d[1], w = d[2], ho = d[3], wo = d[4];
        float[] xd = x.data, out = Arena.floats(planes * ho * wo);
        int[] arg = new int[out.length];
        Parallel.forRange(planes, grain((long) h * w), (lo, hi) -> {
            for (int pl = lo; pl < hi; pl++) {
                int xi = pl * h * w, oi = pl * ho * wo;
                for (int oh = 0; oh < ho; oh++)
                    for (int ow = 0; ow < wo; ow++) {
                        int best = xi + oh * stride * w + ow * stride;
                        float bv = xd[best];
                        for (int i = 0; i < kernel; i++) {
                            int r = xi + (oh * stride + i) * w + ow * stride;
                            for (int j = 0; j < kernel; j++) {
                                float v = xd[r + j];
                                if (v > bv || (Float.isNaN(v) && !Float.isNaN(bv))) { bv = v; best = r + j; }
                            }
                        }
                        out[oi + oh * wo + ow] = bv;
                        arg[oi + oh * wo + ow] = best;
                    }
            }
        });
        return Grad.record(new Tensor(out, new int[]{x.shape[0], x.shape[1], ho, wo}), "max_pool2d", (g, buf) -> {
            float[] gx = buf.of(x);
            if (gx == null) return;
            // windows of one plane only touch that plane: parallel over planes is race-free
            Parallel.forRange(planes, grain((long) ho * wo), (lo, hi) -> {
                for (int i = lo * ho * wo, e = hi * ho * wo; i < e; i++) gx[arg[i]] += g[i];
            });
        }, x);
    }

    /** Validates a pooling call; returns {planes, H, W, Ho, Wo}. */
    private static int[] poolDims(String op, Tensor x, int kernel, int stride) {
        requireRank(x, 4, op, "x", "(N, C, H, W)");
        if (kernel < 1) throw new IllegalArgumentException(op + ": kernel must be >= 1, got " + kernel);
        if (stride < 1) throw new IllegalArgumentException(op + ": stride must be >= 1, got " + stride);
        int h = x.shape[2], w = x.shape[3];
        if (h < kernel || w < kernel)
            throw new IllegalArgumentException(op + ": kernel " + kernel + " is larger than the input " + h + "x" + w
                    + " (x " + Shape.str(x.shape) + "); there is no padding");
        return new int[]{x.shape[0] * x.shape[1], h, w, (h - kernel) / stride + 1, (w - kernel) / stride + 1};
    }

    // ================================================================ patchify

    /**
     * Images to patch tokens: x (N, C, H, W) -> (N, T, C*p*p), T = (H/p)*(W/p), patches in
     * row-major order, each patch vector in torch.nn.functional.unfold order (channel slowest,
     * then the row inside the patch, then the column), as TARFlow does.
     */
    public static Tensor patchify(Tensor x, int p) {
        requireRank(x, 4, "patchify", "x", "(N, C, H, W)");
        int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        checkPatch("patchify", p, h, w, "x is " + Shape.str(x.shape));
        float[] out = Arena.floats(x.data.length);
        float[] xd = x.data;
        movePatches(xd, out, n, c, h, w, p, true, false);
        int t = (h / p) * (w / p);
        return Grad.record(new Tensor(out, new int[]{n, t, c * p * p}), "patchify", (g, buf) -> {
            float[] gx = buf.of(x);
            if (gx != null) movePatches(g, gx, n, c, h, w, p, false, true);
        }, x);
    }

    /** The exact inverse of {@link #patchify}: z (N, T, C*p*p) -> (N, C, H, W). */
    public static Tensor unpatchify(Tensor z, int c, int h, int w, int p) {
        requireRank(z, 3, "unpatchify", "z", "(N, T, C*p*p)");
        if (c < 1) throw new IllegalArgumentException("unpatchify: channels must be >= 1, got " + c);
        checkPatch("unpatchify", p, h, w, "target image is " + h + "x" + w);
        int n = z.shape[0], t = (h / p) * (w / p), dp = c * p * p;
        if (z.shape[1] != t || z.shape[2] != dp)
            throw new IllegalArgumentException("unpatchify: z is " + Shape.str(z.shape) + " but C=" + c + ", H=" + h + ", W=" + w
                    + ", p=" + p + " need (N, " + t + ", " + dp + ")");
        float[] out = Arena.floats(z.data.length);
        float[] zd = z.data;
        movePatches(zd, out, n, c, h, w, p, false, false);
        return Grad.record(new Tensor(out, new int[]{n, c, h, w}), "unpatchify", (g, buf) -> {
            float[] gz = buf.of(z);
            if (gz != null) movePatches(g, gz, n, c, h, w, p, true, true);
        }, z);
    }

    private static void checkPatch(String op, int p, int h, int w, String what) {
        if (p < 1) throw new IllegalArgumentException(op + ": patch size must be >= 1, got " + p);
        if (h < 1 || w < 1 || h % p != 0 || w % p != 0)
            throw new IllegalArgumentException(op + ": " + what + ": H=" + h + " and W=" + w
                    + " must be positive multiples of the patch size " + p);
    }

    /**
     * Moves values between image layout (N, C, H, W) and patch layout (N, T, C*p*p).
     * toPatches: src is the image; otherwise src is the patches. add: accumulate into dst.
     */
    private static void movePatches(float[] src, float[] dst, int n, int c, int h, int w, int p, boolean toPatches, boolean add) {
        int hp = h / p, wp = w / p, t = hp * wp, dp = c * p * p;
        Parallel.forRange(n * c, grain((long) h * w), (lo, hi) -> {
            for (int nc = lo; nc < hi; nc++) {
                int ni = nc / c, ch = nc % c;
                for (int pi = 0; pi < hp; pi++)
                    for (int r = 0; r < p; r++) {
                        int img = (nc * h + pi * p + r) * w;               // start of image row pi*p + r
                        int tok = (ni * t + pi * wp) * dp + ch * p * p + r * p; // token (pi, 0), element (ch, r, 0)
                        for (int pj = 0; pj < wp; pj++) {
                            int io = img + pj * p, to = tok + pj * dp;
                            if (toPatches) {
                                if (add) Vec.axpy(1f, src, io, dst, to, p); else System.arraycopy(src, io, dst, to, p);
                            } else {
                                if (add) Vec.axpy(1f, src, to, dst, io, p); else System.arraycopy(src, to, dst, io, p);
                            }
                        }
                    }
            }
        });
    }
}
