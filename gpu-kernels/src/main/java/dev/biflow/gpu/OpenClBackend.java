// The accelerator backend: Backend's kernels as Aparapi kernels on one OpenCL device, with explicit, counted copies.
package dev.biflow.gpu;

import com.aparapi.Kernel;
import com.aparapi.Range;
import com.aparapi.device.OpenCLDevice;
import com.aparapi.exception.CompileFailedException;
import dev.biflow.engine.Backend;
import dev.biflow.engine.kernels.Attention;
import dev.biflow.engine.kernels.GemmEpilogue;

/**
 * Runs {@link Backend}'s kernels on one OpenCL device: tiled GEMM (transposes), fused attention (causal /
 * bidirectional / masked, any scale or temperature) and its backward (dq, dk, dv from the saved per-row
 * log-sum-exp; Fused.attention and the packed self-attention route both here), and a KV-cache decode loop
 * ({@link #decoder}).
 *
 * <p>Copies: every kernel runs in Aparapi's explicit mode. Inputs are copied into per-kernel
 * staging arrays (sized up in powers of two, so device buffers are reused across calls of similar
 * size), uploaded with put, and results come back with get; each put/get is counted in
 * {@link #transfers()}. Nothing else crosses the bus. Within one call the data stays on the device
 * between passes (attention's scores never leave it; a decoder keeps its KV cache on the device for the whole loop).
 *
 * <p>No silent fallback: the constructor compiles every kernel for the device (the first build,
 * ~1 s each, is paid there, outside any timed region) and runs each once; every launch then checks
 * that Aparapi really ran OpenCL on this device and throws {@link OpenClUnavailableException} if it
 * fell back to its Java thread pool.
 *
 * <p>Thread safety: calls are serialised on this object (engine code may call gemm from several
 * threads; Aparapi kernels hold their arguments in fields).
 *
 * <p>Degenerate shapes (an empty C, k = 0 or alpha = 0, which only scale C) are done on the host:
 * they launch nothing.
 */
public final class OpenClBackend implements Backend, AutoCloseable {
    /** Items per work-group of the one-dimensional kernels. */
    private static final int WG = 64;

    private final Devices.Info info;
    private final OpenCLDevice device;
    private final Transfers transfers = new Transfers();
    private final GemmKernel gemm = new GemmKernel();
    private final AttentionKernel att = new AttentionKernel();
    private final AttentionBackwardKernel attBwd = new AttentionBackwardKernel();
    private boolean closed;

    /** A backend on the device a spec "opencl" or "opencl:N" names (see {@link Devices}). */
    public static OpenClBackend open(String spec) { return new OpenClBackend(Devices.select(spec)); }

    /** A backend on the given device; compiles and runs every kernel once (the warm-up). */
    public OpenClBackend(Devices.Info info) {
        this.info = info;
        this.device = info.device();
        for (Kernel k : kernels()) k.setExplicit(true);
        warmUp();
        transfers.reset();
    }

    @Override public String name() { return "opencl:" + info.index() + " (" + info.name().trim() + ")"; }

    /** The device this backend runs on. */
    public Devices.Info device() { return info; }

    /** Copies and launches so far. */
    public Transfers transfers() { return transfers; }

    // ================================================================ GEMM

    /**
     * The product on the device; an epilogue as passes on the host around it (the kernel fuses none): the bias as
     * the start value beta C + bias, uploaded as C with beta = 1, then GELU or the (gated) residual over the result
     * ({@link GemmEpilogue#startValue}, {@link GemmEpilogue#finish}).
     */
    @Override
    public synchronized void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                                  float[] a, int aOff, int lda, float[] b, int bOff, int ldb,
                                  float beta, float[] c, int cOff, int ldc, GemmEpilogue epi) {
        if (epi == null) throw new IllegalArgumentException("gemm: the epilogue is null (use GemmEpilogue.NONE)");
        if (m < 0 || n < 0 || k < 0) // before the start value is written into C
            throw new IllegalArgumentException("gemm: negative size (m " + m + ", n " + n + ", k " + k + ")");
        epi.check(m, n, c, cOff, ldc);
        float bt = epi.startValue(m, n, beta, c, cOff, ldc);
        gemmBatched(1, transA, transB, m, n, k, alpha, a, aOff, 0, lda, b, bOff, 0, ldb, bt, c, cOff, 0, ldc);
        epi.finish(m, n, c, cOff, ldc);
    }

    /** batch GEMMs (A_i at aOff + i strideA, likewise B and C) in one launch: the kernel's third range dimension. */
    private void gemmBatched(int batch, boolean transA, boolean transB, int m, int n, int k, float alpha,
                                          float[] a, int aOff, int strideA, int lda, float[] b, int bOff, int strideB, int ldb,
                                          float beta, float[] c, int cOff, int strideC, int ldc) {
        open();
        if (batch < 0 || m < 0 || n < 0 || k < 0)
            throw new IllegalArgumentException("gemm: negative size (batch " + batch + ", m " + m + ", n " + n + ", k " + k + ")");
        if (batch == 0 || m == 0 || n == 0) return;
        if (k == 0 || alpha == 0f) { // C = beta C: nothing to multiply
            for (int i = 0; i < batch; i++)
                Backend.CPU.gemm(transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff + i * strideC, ldc, GemmEpilogue.NONE);
            return;
        }
        int aRows = transA ? k : m, aCols = transA ? m : k, bRows = transB ? n : k, bCols = transB ? k : n;
        if (lda < aCols || ldb < bCols || ldc < n)
            throw new IllegalArgumentException("gemm: leading dimensions too small (lda " + lda + " < " + aCols + ", ldb "
                    + ldb + " < " + bCols + " or ldc " + ldc + " < " + n + ")");
        int extA = extent(batch, strideA, aRows, lda, aCols), extB = extent(batch, strideB, bRows, ldb, bCols);
        int extC = extent(batch, strideC, m, ldc, n);
        GemmKernel g = gemm;
        g.a = stage(g.a, a, aOff, extA);
        g.b = stage(g.b, b, bOff, extB);
        boolean readC = beta != 0f;
        g.c = readC ? stage(g.c, c, cOff, extC) : grow(g.c, extC);
        g.m = m; g.n = n; g.k = k; g.lda = lda; g.ldb = ldb; g.ldc = ldc;
        g.strideA = strideA; g.strideB = strideB; g.strideC = strideC;
        g.transA = transA ? 1 : 0; g.transB = transB ? 1 : 0; g.readC = readC ? 1 : 0;
        g.alpha = alpha; g.beta = beta;
        put(g, g.a); put(g, g.b);
        if (readC) put(g, g.c);
        int ts = GemmKernel.TS;
        launch(g, device.createRange3D(roundUp(n, ts), roundUp(m, ts), batch, ts, ts, 1));
        get(g, g.c);
        for (int i = 0; i < batch; i++)
            for (int r = 0; r < m; r++) {
                int o = i * strideC + r * ldc;
                System.arraycopy(g.c, o, c, cOff + o, n);
            }
    }

    private static int extent(int batch, int stride, int rows, int ld, int cols) {
        long e = (long) (batch - 1) * stride + (long) (rows - 1) * ld + cols;
        if (e > Integer.MAX_VALUE - 8) throw new IllegalArgumentException("gemm: operand of " + e + " floats does not fit one array");
        return (int) e;
    }

    // ================================================================ attention

    /**
     * {@link AttentionKernel}'s ATTEND on the device. With save it also downloads the per-row
     * log-sum-exp (B*H*Tq floats) and returns it in a {@link SavedAttention}, which is all the
     * backward needs besides its arguments (no Tq x Tk matrix is kept).
     */
    @Override
    public synchronized Object attentionForward(float[] q, float[] k, float[] v, float[] out, Attention.Layouts layouts,
                                                int batch, int heads, int tq, int tk, int dh, int dv, boolean causal,
                                                float[] mask, int[] maskShape, float scale, boolean save) {
        if (layouts.isContiguous(heads, tq, tk, dh, dv))
            return runAttention(q, k, v, out, batch, heads, tq, tk, dh, dv, causal, mask, maskShape, scale, save);
        // heads inside a packed projection: the kernel reads contiguous heads, so they are gathered on the host
        // (the copies the CPU kernels avoid; the device path uploads them anyway)
        int slices = batch * heads;
        float[] cq = gather(q, layouts.q(), batch, heads, tq, dh), ck = gather(k, layouts.k(), batch, heads, tk, dh),
                cv = gather(v, layouts.v(), batch, heads, tk, dv), co = new float[slices * tq * dv];
        SavedAttention sa = runAttention(cq, ck, cv, co, batch, heads, tq, tk, dh, dv, causal, mask, maskShape, scale, save);
        scatter(co, out, layouts.o(), batch, heads, tq, dv, false);
        return sa;
    }

    /** The (B, H, T, d) contiguous copy of heads in layout l. */
    private static float[] gather(float[] src, Attention.Layout l, int batch, int heads, int t, int d) {
        float[] c = new float[batch * heads * t * d];
        for (int b = 0, o = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
                for (int i = 0, so = l.of(b, h); i < t; i++, so += l.rowStride(), o += d) System.arraycopy(src, so, c, o, d);
        return c;
    }

    /** Contiguous (B, H, T, d) c written (or added, with add) into dst in layout l. */
    private static void scatter(float[] c, float[] dst, Attention.Layout l, int batch, int heads, int t, int d, boolean add) {
        for (int b = 0, o = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
                for (int i = 0, so = l.of(b, h); i < t; i++, so += l.rowStride(), o += d) {
                    if (add) for (int j = 0; j < d; j++) dst[so + j] += c[o + j];
                    else System.arraycopy(c, o, dst, so, d);
                }
    }

    /** What {@link #attentionForward} saves for {@link #attentionBackward}: the log-sum-exp of each query row. */
    record SavedAttention(OpenClBackend owner, float[] lse) {}

    private SavedAttention runAttention(float[] q, float[] k, float[] v, float[] out, int batch, int heads, int tq, int tk,
                                        int dh, int dv, boolean causal, float[] mask, int[] maskShape, float scale,
                                        boolean save) {
        open();
        int slices = batch * heads;
        SavedAttention saved = save ? new SavedAttention(this, new float[slices * tq]) : null;
        if (slices == 0 || tq == 0 || dv == 0) return saved;
        if (dh == 0) throw new IllegalArgumentException("attention: head dim Dh must be >= 1");
        AttentionKernel t = att;
        t.q = stage(t.q, q, 0, slices * tq * dh);
        t.k = stage(t.k, k, 0, Math.max(1, slices * tk * dh));
        t.v = stage(t.v, v, 0, Math.max(1, slices * tk * dv));
        t.out = grow(t.out, slices * tq * dv);
        if (save) t.lse = grow(t.lse, slices * tq);
        t.saveLse = save ? 1 : 0;
        t.hasMask = mask == null ? 0 : 1;
        if (mask != null) {
            int[] st = Attention.maskStrides(maskShape, new int[]{batch, heads, tq, tk});
            t.ms0 = st[0]; t.ms1 = st[1]; t.ms2 = st[2]; t.ms3 = st[3];
            t.mask = stage(t.mask, mask, 0, Math.max(1, mask.length));
        }
        t.mode = AttentionKernel.ATTEND; t.slices = slices; t.heads = heads; t.tq = tq; t.tk = tk; t.dh = dh; t.dv = dv;
        t.causal = causal ? 1 : 0; t.scale = scale;
        t.qStride = tq * dh; t.kStride = tk * dh; t.vStride = tk * dv; t.oStride = tq * dv;
        put(t, t.q); put(t, t.k); put(t, t.v);
        if (mask != null) put(t, t.mask);
        launch(t, device.createRange(roundUp(slices * tq, WG), WG));
        get(t, t.out);
        System.arraycopy(t.out, 0, out, 0, slices * tq * dv);
        if (save) {
            get(t, t.lse);
            System.arraycopy(t.lse, 0, saved.lse(), 0, slices * tq);
        }
        return saved;
    }

    /**
     * {@link AttentionBackwardKernel} on the device: uploads q, k, v, dout, the saved log-sum-exp
     * (and the mask), launches ROWS (delta, dq) then KEYS (dk, dv; only if wanted) on the same
     * buffers, downloads the wanted gradients and adds them into gq, gk, gv on the host.
     */
    @Override
    public synchronized void attentionBackward(Object saved, float[] dout, float[] q, float[] k, float[] v,
                                               float[] gq, float[] gk, float[] gv, Attention.Layouts layouts, int batch,
                                               int heads, int tq, int tk, int dh, int dv, boolean causal, float[] mask,
                                               int[] maskShape, float scale) {
        if (layouts.isContiguous(heads, tq, tk, dh, dv)) {
            runAttentionBackward(saved, dout, q, k, v, gq, gk, gv, batch, heads, tq, tk, dh, dv, causal, mask, maskShape, scale);
            return;
        }
        float[] cq = gather(q, layouts.q(), batch, heads, tq, dh), ck = gather(k, layouts.k(), batch, heads, tk, dh),
                cv = gather(v, layouts.v(), batch, heads, tk, dv), cd = gather(dout, layouts.o(), batch, heads, tq, dv);
        float[] dq = gq == null ? null : new float[cq.length], dk = gk == null ? null : new float[ck.length],
                dvv = gv == null ? null : new float[cv.length];
        runAttentionBackward(saved, cd, cq, ck, cv, dq, dk, dvv, batch, heads, tq, tk, dh, dv, causal, mask, maskShape, scale);
        if (dq != null) scatter(dq, gq, layouts.q(), batch, heads, tq, dh, true);
        if (dk != null) scatter(dk, gk, layouts.k(), batch, heads, tk, dh, true);
        if (dvv != null) scatter(dvv, gv, layouts.v(), batch, heads, tk, dv, true);
    }

    private void runAttentionBackward(Object saved, float[] dout, float[] q, float[] k, float[] v, float[] gq, float[] gk,
                                      float[] gv, int batch, int heads, int tq, int tk, int dh, int dv, boolean causal,
                                      float[] mask, int[] maskShape, float scale) {
        open();
        int slices = batch * heads;
        if (!(saved instanceof SavedAttention sa) || sa.owner() != this || sa.lse().length != slices * tq)
            throw new IllegalArgumentException("attentionBackward: saved is not from this backend's attentionForward of these sizes"
                    + " (the backward must run on the backend that ran the forward)");
        if (slices == 0 || tq == 0 || tk == 0 || dv == 0 || (gq == null && gk == null && gv == null)) return; // no gradient
        if (dh == 0) throw new IllegalArgumentException("attention: head dim Dh must be >= 1");
        AttentionBackwardKernel t = attBwd;
        int nq = slices * tq * dh, nk = slices * tk * dh, nv = slices * tk * dv;
        t.q = stage(t.q, q, 0, nq);
        t.k = stage(t.k, k, 0, nk);
        t.v = stage(t.v, v, 0, nv);
        t.dout = stage(t.dout, dout, 0, slices * tq * dv);
        t.lse = stage(t.lse, sa.lse(), 0, slices * tq);
        t.delta = grow(t.delta, slices * tq);
        t.dq = grow(t.dq, nq);
        t.dk = grow(t.dk, nk);
        t.dv = grow(t.dv, nv);
        t.hasMask = mask == null ? 0 : 1;
        if (mask != null) {
            int[] st = Attention.maskStrides(maskShape, new int[]{batch, heads, tq, tk});
            t.ms0 = st[0]; t.ms1 = st[1]; t.ms2 = st[2]; t.ms3 = st[3];
            t.mask = stage(t.mask, mask, 0, Math.max(1, mask.length));
        }
        t.slices = slices; t.heads = heads; t.tq = tq; t.tk = tk; t.dh = dh; t.dvd = dv;
        t.causal = causal ? 1 : 0; t.scale = scale;
        put(t, t.q); put(t, t.k); put(t, t.v); put(t, t.dout); put(t, t.lse);
        if (mask != null) put(t, t.mask);
        if (gq != null || gk != null) { // delta (for dk) and dq
            t.mode = AttentionBackwardKernel.ROWS;
            launch(t, device.createRange(roundUp(slices * tq, WG), WG));
        }
        if (gk != null || gv != null) {
            t.mode = AttentionBackwardKernel.KEYS;
            launch(t, device.createRange(roundUp(slices * tk, WG), WG));
        }
        if (gq != null) { get(t, t.dq); addInto(gq, t.dq, nq); }
        if (gk != null) { get(t, t.dk); addInto(gk, t.dk, nk); }
        if (gv != null) { get(t, t.dv); addInto(gv, t.dv, nv); }
    }

    private static void addInto(float[] acc, float[] d, int n) {
        for (int i = 0; i < n; i++) acc[i] += d[i];
    }

    /**
     * A KV-cache decode loop on the device: each {@link Decoder#step} appends one key and value row
     * per (batch, head) to caches that stay on the device and attends one query row to every
     * cached key. Per step it uploads q, k and v rows and downloads the output row, nothing else.
     */
    public synchronized Decoder decoder(int batch, int heads, int capacity, int dh, int dv) {
        open();
        return new Decoder(batch, heads, capacity, dh, dv);
    }

    /** See {@link #decoder}. Not thread-safe; one per sequence batch. */
    public final class Decoder implements AutoCloseable {
        private final AttentionKernel kk = new AttentionKernel();
        private final int slices, capacity, dh, dv;
        private int len;

        private Decoder(int batch, int heads, int capacity, int dh, int dv) {
            if (batch < 1 || heads < 1 || capacity < 1 || dh < 1 || dv < 1)
                throw new IllegalArgumentException("decoder: batch, heads, capacity, dh and dv must be >= 1");
            this.slices = batch * heads;
            this.capacity = capacity;
            this.dh = dh;
            this.dv = dv;
            kk.setExplicit(true);
            kk.k = new float[slices * capacity * dh];
            kk.v = new float[slices * capacity * dv];
            kk.q = new float[slices * dh];
            kk.kNew = new float[slices * dh];
            kk.vNew = new float[slices * dv];
            kk.out = new float[slices * dv];
            kk.heads = heads; kk.slices = slices; kk.dh = dh; kk.dv = dv; kk.tq = 1; kk.causal = 0; kk.hasMask = 0;
            kk.qStride = dh; kk.kStride = capacity * dh; kk.vStride = capacity * dv; kk.oStride = dv;
            synchronized (OpenClBackend.this) {
                compile(kk);
                put(kk, kk.k); put(kk, kk.v); // the caches' only upload
            }
        }

        /** Keys cached so far. */
        public int length() { return len; }

        /** Forgets the cached keys (the device buffers are kept). */
        public void reset() { len = 0; }

        /**
         * Appends kRow (B*H*Dh) and vRow (B*H*Dv) and writes softmax(scale q k^T) v over all cached
         * keys into out (B*H*Dv), for qRow (B*H*Dh).
         */
        public void step(float[] qRow, float[] kRow, float[] vRow, float scale, float[] out) {
            if (len >= capacity)
                throw new IllegalStateException("decoder: the KV cache is full (" + capacity + " keys); reset() or make a larger one");
            synchronized (OpenClBackend.this) {
                open();
                System.arraycopy(kRow, 0, kk.kNew, 0, slices * dh);
                System.arraycopy(vRow, 0, kk.vNew, 0, slices * dv);
                System.arraycopy(qRow, 0, kk.q, 0, slices * dh);
                put(kk, kk.kNew); put(kk, kk.vNew); put(kk, kk.q);
                kk.mode = AttentionKernel.APPEND; kk.pos = len;
                launch(kk, device.createRange(roundUp(slices * Math.max(dh, dv), WG), WG));
                len++;
                kk.mode = AttentionKernel.ATTEND; kk.tk = len; kk.scale = scale;
                launch(kk, device.createRange(roundUp(slices, WG), WG));
                get(kk, kk.out);
                System.arraycopy(kk.out, 0, out, 0, slices * dv);
            }
        }

        @Override public void close() { kk.dispose(); }
    }

    /**
     * Median seconds of one m x n x k GEMM launch with the operands already on the device (no
     * copies): the kernel's own speed, for {@link GpuBench}.
     */
    synchronized double gemmKernelSeconds(int m, int n, int k, int reps) {
        open();
        GemmKernel g = gemm;
        java.util.Random r = new java.util.Random(1);
        g.a = grow(g.a, m * k); g.b = grow(g.b, k * n); g.c = grow(g.c, m * n);
        for (int i = 0; i < m * k; i++) g.a[i] = r.nextFloat();
        for (int i = 0; i < k * n; i++) g.b[i] = r.nextFloat();
        g.m = m; g.n = n; g.k = k; g.lda = k; g.ldb = n; g.ldc = n; g.strideA = g.strideB = g.strideC = 0;
        g.transA = g.transB = g.readC = 0; g.alpha = 1f; g.beta = 0f;
        put(g, g.a); put(g, g.b);
        int ts = GemmKernel.TS;
        Range range = device.createRange3D(roundUp(n, ts), roundUp(m, ts), 1, ts, ts, 1);
        launch(g, range); // a launch after put waits for the copies
        double[] t = new double[reps];
        for (int i = 0; i < reps; i++) {
            long t0 = System.nanoTime();
            launch(g, range); // Aparapi's execute returns when the kernel has finished
            t[i] = (System.nanoTime() - t0) / 1e9;
        }
        java.util.Arrays.sort(t);
        return t[reps / 2];
    }

    // ================================================================ plumbing

    private void warmUp() {
        for (Kernel k : kernels()) compile(k);
        // One tiny run of every mode: proves the device executes them (not Aparapi's Java pool).
        float[] x = {1f, 2f, 3f, 4f}, y = new float[4];
        gemm(false, false, 2, 2, 2, 1f, x, 0, 2, x, 0, 2, 0f, y, 0, 2, GemmEpilogue.NONE);
        Attention.Layouts l = Attention.Layouts.contiguous(1, 2, 2, 2, 2);
        Object saved = attentionForward(x, x, x, y, l, 1, 1, 2, 2, 2, 2, true, null, null, 1f, true);
        attentionBackward(saved, x, x, x, x, new float[4], new float[4], new float[4], l, 1, 1, 2, 2, 2, 2, true, null, null, 1f);
    }

    private Kernel[] kernels() { return new Kernel[]{gemm, att, attBwd}; }

    private void compile(Kernel k) {
        try {
            k.compile(device);
        } catch (CompileFailedException | RuntimeException e) {
            throw new OpenClUnavailableException(OpenClUnavailableException.Reason.KERNEL_FAILED, "Aparapi could not build kernel " + k.getClass().getSimpleName() + " for "
                    + info.name().trim() + " (" + e.getMessage() + "); the backend will not fall back to Java", e);
        }
    }

    private void launch(Kernel k, Range r) {
        k.execute(r);
        transfers.launch();
        if (!k.isRunningCL() || !(k.getTargetDevice() instanceof OpenCLDevice))
            throw new OpenClUnavailableException(OpenClUnavailableException.Reason.FELL_BACK, "Aparapi ran " + k.getClass().getSimpleName() + " on "
                    + (k.getTargetDevice() == null ? "its Java thread pool" : k.getTargetDevice().getShortDescription())
                    + " instead of OpenCL device " + info.name().trim() + " (translation or device failure: see Aparapi's "
                    + "warning above; kernels need -g and no lambdas or objects in run())");
    }

    private void put(Kernel k, float[] a) { k.put(a); transfers.put(a.length); }

    private void get(Kernel k, float[] a) { k.get(a); transfers.get(a.length); }

    /** A staging array of at least n floats holding src[off, off+n). */
    private static float[] stage(float[] cur, float[] src, int off, int n) {
        float[] s = grow(cur, n);
        System.arraycopy(src, off, s, 0, n);
        return s;
    }

    /** cur if it holds n floats, else a new array of the next power of two (so device buffers are reused). */
    private static float[] grow(float[] cur, int n) {
        if (cur.length >= n) return cur;
        int cap = Integer.highestOneBit(Math.max(1, n - 1)) << 1;
        return new float[cap > 0 && cap >= n ? cap : n];
    }

    private static int roundUp(int x, int m) { return (x + m - 1) / m * m; }

    private void open() {
        if (closed) throw new IllegalStateException("this OpenClBackend is closed");
    }

    /** Frees the device buffers and kernels. If it is the active backend, make another active first. */
    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        for (Kernel k : kernels()) k.dispose();
    }
}
