// What a GEMM does to its result besides alpha op(A) op(B) + beta C: the bias, GELU and (gated) residual a Linear layer fuses.
package dev.biflow.engine.kernels;

/**
 * The epilogue of {@link Gemm#gemm} (and of {@code Backend.gemm}): one value instead of a GEMM method per fusion.
 * With T = alpha op(A) op(B) + (beta C + bias) (bias[biasOff .. biasOff + n) added to every row; no bias: 0),
 * <ul>
 * <li>{@link #NONE}: C = alpha op(A) op(B) + beta C;</li>
 * <li>{@link Bias}: C = T, a Linear layer (the bias is the GEMM's start value);</li>
 * <li>{@link Gelu}: C = gelu(T) with the exact (erf) GELU, a Linear layer and its activation;</li>
 * <li>{@link GatedAdd}: C = R + G * T, the (gated) residual add after a Linear layer (R an M x N matrix, rows
 *     ldr apart from rOff; G null, or M / gRows rows of N, ldg apart from gOff, row i / gRows scaling C's row i).</li>
 * </ul>
 * Which arrays a value names is checked here (nulls, gRows); whether they are long enough for M x N and apart
 * from C, by {@link #check} at the call, where M, N and C are known.
 */
public sealed interface GemmEpilogue {
    /** Nothing past the product: C = alpha op(A) op(B) + beta C. */
    record None() implements GemmEpilogue {
        @Override public float[] bias() { return null; }
        @Override public int biasOff() { return 0; }
    }

    /** C = alpha op(A) op(B) + (beta C + bias); bias is not null (no bias: {@link #NONE}). */
    record Bias(float[] bias, int biasOff) implements GemmEpilogue {
        public Bias {
            if (bias == null) throw new IllegalArgumentException("GemmEpilogue.Bias: bias is null (use GemmEpilogue.NONE)");
        }
    }

    /** C = gelu(alpha op(A) op(B) + (beta C + bias)), the exact (erf) GELU; bias may be null. */
    record Gelu(float[] bias, int biasOff) implements GemmEpilogue {}

    /**
     * C = R + G * (alpha op(A) op(B) + (beta C + bias)); bias and G may be null (then C = R + ...). gRows: the rows
     * of C per row of G (adaLN-Zero: the tokens per example); ignored without G. Neither R nor G may overlap C.
     */
    record GatedAdd(float[] bias, int biasOff, float[] r, int rOff, int ldr, float[] g, int gOff, int ldg, int gRows)
            implements GemmEpilogue {
        public GatedAdd {
            if (r == null) throw new IllegalArgumentException("GemmEpilogue.GatedAdd: the residual r is null (use bias or biasGelu)");
            if (g != null && gRows < 1)
                throw new IllegalArgumentException("GemmEpilogue.GatedAdd: gRows must be >= 1 (rows of C per gate row), got " + gRows);
        }
    }

    /** The bias, or null when there is none. */
    float[] bias();

    /** Where the bias starts in {@link #bias()}. */
    int biasOff();

    GemmEpilogue NONE = new None();

    /** bias[0 .. n) added to every row; a null bias gives {@link #NONE} (a Linear layer without one). */
    static GemmEpilogue bias(float[] bias) { return bias(bias, 0); }

    /** bias[biasOff .. biasOff + n) added to every row; a null bias gives {@link #NONE}. */
    static GemmEpilogue bias(float[] bias, int biasOff) { return bias == null ? NONE : new Bias(bias, biasOff); }

    /** gelu(product + bias[0 .. n)); bias may be null. */
    static GemmEpilogue biasGelu(float[] bias) { return new Gelu(bias, 0); }

    /** R + (product + bias[0 .. n)); bias may be null. */
    static GemmEpilogue biasAdd(float[] bias, float[] r, int rOff, int ldr) {
        return new GatedAdd(bias, 0, r, rOff, ldr, null, 0, 0, 1);
    }

    /** R + G * (product + bias[biasOff .. biasOff + n)); bias and G may be null. */
    static GemmEpilogue biasGatedAdd(float[] bias, int biasOff, float[] r, int rOff, int ldr, float[] g, int gOff, int ldg, int gRows) {
        return new GatedAdd(bias, biasOff, r, rOff, ldr, g, gOff, ldg, gRows);
    }

    /**
     * Checks this epilogue against an M x N result at c[cOff], rows ldc apart: the bias holds N floats, R (and G)
     * are long enough and neither overlaps C, M is whole groups of gRows. Throws IllegalArgumentException naming
     * what to fix. Every backend calls it, so a bad epilogue fails the same way on each.
     */
    default void check(int m, int n, float[] c, int cOff, int ldc) {
        float[] bias = bias();
        int biasOff = biasOff();
        if (bias != null && (biasOff < 0 || (long) biasOff + n > bias.length))
            throw new IllegalArgumentException("gemm: bias needs " + n + " floats from offset " + biasOff + ", has " + bias.length);
        if (!(this instanceof GatedAdd(_, _, var r, var rOff, var ldr, var g, var gOff, var ldg, var gRows))) return;
        if (Gemm.overlaps(r, rOff, ldr, m, c, cOff, ldc, n) || (g != null && Gemm.overlaps(g, gOff, ldg, m / gRows, c, cOff, ldc, n)))
            throw new IllegalArgumentException("gemm: the residual and the gate must not overlap the output (write C elsewhere)");
        Gemm.checkMatrix("r", "ldr", r, rOff, ldr, m, n);
        if (g != null) {
            if (m % gRows != 0)
                throw new IllegalArgumentException("gemm: " + m + " rows are not whole groups of gRows = " + gRows);
            Gemm.checkMatrix("g", "ldg", g, gOff, ldg, m / gRows, n);
        }
    }

    // A backend whose GEMM cannot apply an epilogue inside it (the OpenCL one) runs it as passes around a plain
    // GEMM: beta = startValue(...), the GEMM with that beta, then finish(...). Same bits as Gemm.gemm's fused tiles.

    /**
     * Forms the start value beta C + bias in C when there is a bias (C not read when beta == 0) and returns the
     * beta the plain GEMM must then use (1); without a bias returns beta and touches nothing.
     */
    default float startValue(int m, int n, float beta, float[] c, int cOff, int ldc) {
        if (bias() == null) return beta;
        Gemm.prefillBias(m, n, beta, c, cOff, ldc, bias(), biasOff());
        return 1f;
    }

    /** Applies the GELU or the (gated) residual add to the finished M x N result in C; nothing for the others. */
    default void finish(int m, int n, float[] c, int cOff, int ldc) {
        switch (this) {
            case Gelu _ -> { for (int i = 0; i < m; i++) dev.biflow.engine.kernels.Gelu.forward(c, c, cOff + i * ldc, cOff + i * ldc + n); }
            case GatedAdd(_, _, var r, var rOff, var ldr, var g, var gOff, var ldg, var gRows) ->
                    Gemm.gatedAdd(m, n, c, cOff, ldc, r, rOff, ldr, g, gOff, ldg, gRows);
            case None _, Bias _ -> { }
        }
    }
}
