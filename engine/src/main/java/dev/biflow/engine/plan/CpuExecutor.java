// Runs a Plan on the host: GEMMs with their epilogues and attention through the active Backend, the rest on the engine's kernels.
package dev.biflow.engine.plan;

import dev.biflow.engine.Arena;
import dev.biflow.engine.Backend;
import dev.biflow.engine.Ops;
import dev.biflow.engine.kernels.Attention;
import dev.biflow.engine.kernels.DecodeAttention;
import dev.biflow.engine.kernels.GemmEpilogue;
import dev.biflow.engine.kernels.LayerNormKernel;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.engine.kernels.Vec;

/**
 * The host executor of a {@link Plan}: each op calls the kernel the layer's {@code forward} calls for the same
 * arithmetic (a Linear's GEMM with its bias, GELU or gated residual formed on the output tile, the packed
 * self-attention, the LayerNorm row kernel, the broadcast elementwise row kernel), so a plan gives the bits of
 * the model's forward (the plan-versus-forward tests check it), without the autograd bookkeeping, the
 * intermediate tensors or the layout copies. Every temporary lives in the one arena array.
 */
public final class CpuExecutor {
    private CpuExecutor() {}

    /** Work (elements touched) per parallel chunk below which a loop stays on one thread. */
    private static final int GRAIN = 1 << 14;

    /**
     * Runs the plan over arena (at least plan.size() floats; the caller has written the inputs into their regions
     * and reads the outputs from theirs) and the bound arrays (buf 1, 2, ... in order, each at least the floats
     * the plan's {@link Plan#externals} says). Temporaries of the kernels come from {@link Arena#floats}: inside an
     * Arena scope a second run reuses the first one's.
     */
    public static void run(Plan plan, float[] arena, float[]... bound) {
        if (arena.length < plan.size())
            throw new IllegalArgumentException("CpuExecutor: the arena has " + arena.length + " floats, the plan needs " + plan.size());
        if (bound.length != plan.externals().size())
            throw new IllegalArgumentException("CpuExecutor: " + bound.length + " arrays bound, the plan has " + plan.externals().size());
        float[][] bufs = new float[bound.length + 1][];
        bufs[0] = arena;
        for (int i = 0; i < bound.length; i++) {
            if (bound[i].length < plan.externals().get(i))
                throw new IllegalArgumentException("CpuExecutor: bound array " + (i + 1) + " has " + bound[i].length + " floats, the plan needs "
                        + plan.externals().get(i));
            bufs[i + 1] = bound[i];
        }
        for (PlanOp op : plan.ops()) run(op, bufs);
    }

    private static void run(PlanOp op, float[][] bufs) {
        switch (op) {
            case PlanOp.Linear l -> linear(l, bufs);
            case PlanOp.LayerNorm n -> {
                Region x = n.x(), y = n.y();
                int d = x.cols();
                float[] w = n.weight() == null ? null : n.weight().data(), b = n.bias() == null ? null : n.bias().data();
                float[] mean = Arena.floats(x.rows()), rstd = Arena.floats(x.rows());
                float[] xa = bufs[x.buf()], ya = bufs[y.buf()];
                Parallel.forRange(x.rows(), grain(3L * d), (lo, hi) ->
                        LayerNormKernel.forward(xa, x.off(), x.ld(), w, b, ya, y.off(), y.ld(), mean, rstd, d, n.eps(), lo, hi));
            }
            case PlanOp.SelfAttention s -> attention(s, bufs);
            case PlanOp.Modulate m -> {
                Region x = m.x(), y = m.y(), sh = m.shift(), sc = m.scale();
                int d = x.cols(), group = x.rows() / sh.rows();
                float[] xa = bufs[x.buf()], ya = bufs[y.buf()], sha = bufs[sh.buf()], sca = bufs[sc.buf()];
                Parallel.forRange(x.rows(), grain(3L * d), (lo, hi) -> {
                    float[] t = Arena.floats(d); // x * scale, then x + that: the roundings of Ops.add(Ops.add(h, Ops.mul(h, scale)), shift)
                    for (int r = lo; r < hi; r++) {
                        int xo = x.row(r), g = r / group;
                        Vec.binaryRow(2, xa, xo, 1, sca, sc.row(g), 1, t, 0, d);
                        Vec.binaryRow(0, xa, xo, 1, t, 0, 1, t, 0, d);
                        Vec.binaryRow(0, t, 0, 1, sha, sh.row(g), 1, ya, y.row(r), d);
                    }
                });
            }
            case PlanOp.Add s -> {
                Region x = s.a(), b = s.b(), y = s.y();
                float[] xa = bufs[x.buf()], ba = bufs[b.buf()], ya = bufs[y.buf()];
                Parallel.forRange(x.rows(), grain(x.cols()), (lo, hi) -> {
                    for (int r = lo; r < hi; r++) Vec.binaryRow(0, xa, x.row(r), 1, ba, b.row(r), 1, ya, y.row(r), x.cols());
                });
            }
            case PlanOp.AddTable s -> {
                Region x = s.a(), y = s.y();
                float[] t = s.table().data();
                int rows = s.table().size(0), d = x.cols();
                float[] xa = bufs[x.buf()], ya = bufs[y.buf()];
                Parallel.forRange(x.rows(), grain(d), (lo, hi) -> {
                    for (int r = lo; r < hi; r++) Vec.binaryRow(0, xa, x.row(r), 1, t, (r % rows) * d, 1, ya, y.row(r), d);
                });
            }
            case PlanOp.Gather g -> {
                Region ids = g.ids(), y = g.y();
                float[] t = g.table().data();
                int v = g.table().size(0), d = y.cols();
                float[] ia = bufs[ids.buf()], ya = bufs[y.buf()];
                for (int i = 0; i < ids.rows(); i++) {
                    float f = ia[ids.row(i)];
                    int id = (int) f;
                    if (id != f || id < 0 || id >= v)
                        throw new IndexOutOfBoundsException("plan op Gather: id " + f + " in row " + i + " is not a row of the (" + v + ", " + d + ") table");
                    System.arraycopy(t, id * d, ya, y.row(i), d);
                }
            }
            case PlanOp.Silu s -> {
                Region x = s.x(), y = s.y();
                float[] xa = bufs[x.buf()], ya = bufs[y.buf()];
                for (int r = 0; r < x.rows(); r++)
                    for (int j = 0, xo = x.row(r), yo = y.row(r); j < x.cols(); j++) {
                        float v = xa[xo + j];
                        ya[yo + j] = v * Ops.sigmoid(v);
                    }
            }
            case PlanOp.AddRow s -> {
                Region x = s.a(), y = s.y();
                int d = x.cols(), t0 = s.row() * d;
                float[] t = s.table().data(), xa = bufs[x.buf()], ya = bufs[y.buf()];
                Parallel.forRange(x.rows(), grain(d), (lo, hi) -> {
                    for (int r = lo; r < hi; r++) Vec.binaryRow(0, xa, x.row(r), 1, t, t0, 1, ya, y.row(r), d);
                });
            }
            case PlanOp.DecodeAttention a -> decode(a, bufs);
            case PlanOp.CouplingStep c -> couple(c, bufs);
        }
    }

    /** The GEMM of a Linear op with its epilogue fused, on arena regions. */
    private static void linear(PlanOp.Linear l, float[][] bufs) {
        Backend be = Backend.active();
        Region x = l.x(), y = l.y();
        int n = x.rows(), in = x.cols(), out = y.cols();
        float[] w = l.weight().data(), bias = l.bias() == null ? null : l.bias().data();
        float[] xa = bufs[x.buf()], ya = bufs[y.buf()];
        int ldx = Math.max(1, x.ld()), ldw = Math.max(1, in), ldc = Math.max(1, y.ld());
        // the plan's epilogue over regions, as the GEMM's over this run's arrays
        GemmEpilogue epi = switch (l.epilogue()) {
            case PlanOp.Epilogue.GatedAdd(Region r, Region gate) -> GemmEpilogue.biasGatedAdd(bias, 0,
                    bufs[r.buf()], r.off(), Math.max(1, r.ld()), gate == null ? null : bufs[gate.buf()], gate == null ? 0 : gate.off(),
                    gate == null ? ldc : gate.ld(), gate == null ? 1 : n / gate.rows());
            case PlanOp.Epilogue.Gelu g -> GemmEpilogue.biasGelu(bias);
            case PlanOp.Epilogue.None none -> GemmEpilogue.bias(bias);
        };
        be.gemm(false, true, n, out, in, 1f, xa, x.off(), ldx, w, 0, ldw, 0f, ya, y.off(), ldc, epi);
    }

    /** The packed self-attention of nn.MultiHeadAttention's inference (and training) path, on arena regions. */
    private static void attention(PlanOp.SelfAttention s, float[][] bufs) {
        Region qkv = s.qkv(), o = s.out();
        float[] qa = bufs[qkv.buf()], oa = bufs[o.buf()];
        int w = qkv.cols(), heads = s.heads(), dh = w / (3 * heads), d = heads * dh, t = qkv.rows() / s.batch();
        if (s.qkScale() != 1f) {
            float q = s.qkScale();
            // TARFlow's split scaling, q and k each by qkScale, in place (mulScalar's rounding)
            Parallel.forRange(qkv.rows(), Math.max(1, 4096 / w), (lo, hi) -> {
                for (int r = lo; r < hi; r++) Vec.scale(q, qa, qa, qkv.row(r), qkv.row(r) + 2 * d);
            });
        }
        // no fill needed: self-attention without a mask gives every query a key, so every output row is written
        Backend.active().attentionForward(qa, qa, qa, oa, Attention.Layouts.packed(heads, t, dh).shifted(qkv.off(), o.off()),
                s.batch(), heads, t, t, dh, dh, s.causal(), null, null, s.scale(), false);
    }

    /**
     * KVCache.append then KVCache.attend for one token per example (MultiHeadAttention's cached path): the same scaling
     * of q and k (mulScalar's rounding), the same transposed key layout and the same decode kernel, so the same bits.
     */
    private static void decode(PlanOp.DecodeAttention a, float[][] bufs) {
        Region qkv = a.qkv(), ks = a.keys(), vs = a.values(), o = a.out();
        float[] qa = bufs[qkv.buf()], ka = bufs[ks.buf()], va = bufs[vs.buf()], oa = bufs[o.buf()];
        int b = qkv.rows(), heads = a.heads(), d = qkv.cols() / 3, dh = d / heads, t = ks.cols(), i = a.step();
        float scale = a.scaleAt() == null ? a.scale() : bufs[a.scaleAt().buf()][a.scaleAt().off()];
        for (int e = 0; e < b; e++) {
            int q0 = qkv.row(e);
            if (a.qkScale() != 1f) Vec.scale(a.qkScale(), qa, qa, q0, q0 + 2 * d);
            for (int h = 0; h < heads; h++) {
                int r = e * heads + h;
                for (int c = 0; c < dh; c++) ka[ks.row(r * dh + c) + i] = qa[q0 + d + h * dh + c]; // (B, H, Dh, T): key i in column i
                System.arraycopy(qa, q0 + 2 * d + h * dh, va, vs.row(r * t + i), dh);
            }
            java.util.Arrays.fill(oa, o.row(e), o.row(e) + d, 0f); // the kernel accumulates into out
        }
        Parallel.forRange(b * heads, 1, (lo, hi) -> {
            float[] p = new float[i + 1];
            for (int r = lo; r < hi; r++) {
                int e = r / heads, h = r % heads;
                DecodeAttention.row(qa, qkv.row(e) + h * dh, ka, ks.row(r * dh), ks.ld(), va, vs.row(r * t), dh, i + 1, scale, p, oa, o.row(e) + h * dh);
            }
        });
    }

    /** TarFlow.MetaBlock.solve's update of one token: bound, guide, x = x exp(a) + b, each rounding as it does. */
    private static void couple(PlanOp.CouplingStep c, float[][] bufs) {
        Region pr = c.params(), u = c.uncond(), x = c.x();
        int td = x.cols();
        float[] pa = bufs[pr.buf()], ua = u == null ? null : bufs[u.buf()], xa = bufs[x.buf()];
        float g = u == null ? 0f : bufs[c.gain().buf()][c.gain().off()];
        PlanOp.Bound bound = c.bound();
        float clip = c.clip();
        for (int e = 0; e < x.rows(); e++) {
            int po = pr.row(e), xo = x.row(e), uo = u == null ? 0 : u.row(e);
            for (int j = 0; j < td; j++) {
                float a = bound.apply(pa[po + j], clip), sh = bound.apply(pa[po + td + j], clip);
                if (u != null) {
                    float au = bound.apply(ua[uo + j], clip), bu = bound.apply(ua[uo + td + j], clip);
                    a = a + g * (a - au);
                    sh = sh + g * (sh - bu);
                }
                xa[xo + j] = xa[xo + j] * (float) Math.exp(a) + sh;
            }
        }
    }

    private static int grain(long perItem) { return (int) Math.max(1, GRAIN / Math.max(1, perItem)); }
}
