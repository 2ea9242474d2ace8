// Tiled SGEMM kernel (local-memory tiles, transpose flags, batched) that Aparapi translates to OpenCL.
package dev.biflow.gpu;

import com.aparapi.Kernel;

/**
 * C_i = alpha op(A_i) op(B_i) + beta C_i, row-major, for every batch index i.
 *
 * <p>Work layout: a 2-D range (columns of C, rows of C) in TS x TS work-groups, third dimension
 * the batch. Each group walks K in steps of TS: its items load one TS x TS tile of op(A) and one
 * of op(B) into local memory (zeros past the edges, so no item branches inside the inner loop),
 * wait at a barrier, and accumulate TS products from local memory. Transposes only change the
 * load index, so every layout costs the same.
 *
 * <p>Aparapi rules this class follows (docs/ARCHITECTURE.md): primitive fields and arrays only, no objects,
 * lambdas or interfaces in run(), flags as ints, float literals only (a double would need FP64),
 * compiled with -g. Fields are set by {@link OpenClBackend} under its lock.
 */
final class GemmKernel extends Kernel {
    /** Tile edge: 16 x 16 = 256 items per group fits every OpenCL device's minimum work-group size. */
    static final int TS = 16;

    float[] a = new float[1], b = new float[1], c = new float[1];
    int m, n, k, lda, ldb, ldc, strideA, strideB, strideC, transA, transB, readC;
    float alpha, beta;

    @Local final float[] tileA = new float[TS * TS];
    @Local final float[] tileB = new float[TS * TS];

    @Override
    public void run() {
        int col = getGlobalId(0), row = getGlobalId(1), bat = getGlobalId(2);
        int lc = getLocalId(0), lr = getLocalId(1);
        int ao = bat * strideA, bo = bat * strideB;
        float acc = 0f;
        for (int t0 = 0; t0 < k; t0 += TS) {
            int ka = t0 + lc;
            float av = 0f;
            if (row < m && ka < k) {
                if (transA == 1) av = a[ao + ka * lda + row];
                else av = a[ao + row * lda + ka];
            }
            tileA[lr * TS + lc] = av;
            int kb = t0 + lr;
            float bv = 0f;
            if (kb < k && col < n) {
                if (transB == 1) bv = b[bo + col * ldb + kb];
                else bv = b[bo + kb * ldb + col];
            }
            tileB[lr * TS + lc] = bv;
            localBarrier();
            for (int p = 0; p < TS; p++) acc += tileA[lr * TS + p] * tileB[p * TS + lc];
            localBarrier();
        }
        if (row < m && col < n) {
            int ci = bat * strideC + row * ldc + col;
            if (readC == 1) c[ci] = alpha * acc + beta * c[ci];
            else c[ci] = alpha * acc;
        }
    }
}
