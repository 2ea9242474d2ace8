// A forward pass of engine nn modules that stays on the OpenCL device: weights uploaded once, activations never leave, one put and one get per pass.
package dev.biflow.gpu;

import com.aparapi.Range;
import com.aparapi.device.OpenCLDevice;
import com.aparapi.exception.CompileFailedException;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.nn.Activation;
import dev.biflow.engine.nn.LayerNorm;
import dev.biflow.engine.nn.Linear;
import dev.biflow.engine.nn.MLP;
import dev.biflow.engine.nn.Module;
import dev.biflow.engine.nn.MultiHeadAttention;

import java.util.ArrayList;
import java.util.List;

/**
 * An inference pass (no autograd) over a fixed batch B and token count T, compiled from engine
 * modules into launches of one {@link ResidentKernel}, whose three arenas stay on the device:
 * <ul>
 *   <li>weights: every module's parameters packed into one array at {@link Builder#build()} and
 *       uploaded once (1 put, counted at build);</li>
 *   <li>activations: every intermediate of the pass, in fixed regions of one array, written and
 *       read only by the kernel (never copied either way);</li>
 *   <li>io: {@link #run} copies the input (B, T, Din) in with 1 put and the output (B, T, Dout)
 *       out with 1 get; that is all the traffic of a pass.</li>
 * </ul>
 * Launches per pass ({@link #launchesPerRun()}): COPY_IN + COPY_OUT, 1 per {@link Builder#linear}
 * or {@link Builder#layerNorm}, 5 per attention block (LayerNorm, qkv, attention, proj, residual
 * add; 4 without pre-norm) and 5 per MLP block (LayerNorm, fc1, GELU, fc2, residual add; 4
 * without pre-norm). Every launch and copy is counted in {@link #transfers()} and also in the
 * backend's {@link OpenClBackend#transfers()}, the same way the backend counts its own.
 *
 * <p>{@link #program} builds the same thing from ops placed by offset (for models that are not a
 * plain stack, e.g. BiFlow's adaLN-conditioned G: MODULATE, GATED_ADD, ADD_TABLE, SILU); the copy
 * counts are the same (1 put, 1 get per pass).
 *
 * <p>Weights are a snapshot: changes made to the modules' parameters after build are not seen
 * until {@link #refreshWeights()} re-packs and re-uploads them (1 put).
 *
 * <p>Same rules as the backend: no silent fallback (each launch checks that Aparapi ran OpenCL on
 * the backend's device, else {@link OpenClUnavailableException} FELL_BACK; a kernel that does not
 * build is KERNEL_FAILED at build), and calls are serialised on the backend (Aparapi kernels keep
 * their arguments in fields; one lock also keeps the two sets of counters consistent).
 *
 * <p>Maths as the engine modules under {@code Grad.noGrad()}: MultiHeadAttention with either
 * {@link MultiHeadAttention.Scaling} uses logits q.k / sqrt(headDim) (temperature 1, no mask, no
 * KV cache), MLP's activation must be exact GELU.
 */
public final class ResidentStack implements AutoCloseable {
    /** Items per work-group of the one-dimensional modes. */
    private static final int WG = 64;

    private final OpenClBackend backend;
    private final OpenCLDevice device;
    private final ResidentKernel kern = new ResidentKernel();
    private final Transfers transfers = new Transfers();
    private final int[] inShape, outShape; // (B, T, Din) and (B, T, Dout) for a layer stack; a Program's declared io shapes
    private final int inFloats, outFloats;
    private final List<Op> program;
    private final List<Tensor> params;   // the tensors packed into w, in order
    private final int[] paramOffsets;    // their offsets in w
    private boolean closed;

    /** Starts a stack for passes of batch x tokens rows on the backend's device. */
    public static Builder builder(OpenClBackend backend, int batch, int tokens) { return new Builder(backend, batch, tokens); }

    /**
     * Starts a free-form resident program: the caller reserves activation regions and packs
     * weights, then adds ops by offset ({@link Program}). What {@link ResidentStack} runs for a
     * model that is not a plain stack of layers (BiFlow's adaLN-conditioned G).
     */
    public static Program program(OpenClBackend backend) { return new Program(backend); }

    /** Launches of one {@link #run}: the program, its copies in and out included. */
    public int launchesPerRun() { return program.size(); }

    /** Copies and launches of this stack (build and runs); the backend's counters include them too. */
    public Transfers transfers() { return transfers; }

    /** (B, T, Din) of the input (a {@link Program}'s declared input shape). */
    public int[] inputShape() { return inShape.clone(); }

    /** (B, T, Dout) of the output (a {@link Program}'s declared output shape). */
    public int[] outputShape() { return outShape.clone(); }

    /** Floats in the weight arena (uploaded once) and in the activation arena (never copied). */
    public long weightFloats() { return kern.w.length; }

    public long activationFloats() { return kern.act.length; }

    /**
     * One forward pass: input (B, T, Din) row-major, B*T*Din floats; returns (B, T, Dout). One put
     * (io), {@link #launchesPerRun()} launches, one get (io). A {@link Program}'s input is copied
     * to io[0 ..) and its output read from io[0 ..), in its declared shapes.
     */
    public float[] run(float[] input) {
        int nIn = inFloats;
        if (input == null || input.length != nIn)
            throw new IllegalArgumentException("ResidentStack.run: input must be (B, T, Din) = " + Shape.str(inputShape()) + " = " + nIn
                    + " floats, got " + (input == null ? "null" : input.length + " floats"));
        synchronized (backend) {
            open();
            System.arraycopy(input, 0, kern.io, 0, nIn);
            put(kern.io);
            for (Op op : program) {
                op.load(kern);
                launch(op.range);
            }
            get(kern.io);
            float[] out = new float[outFloats];
            System.arraycopy(kern.io, 0, out, 0, out.length);
            return out;
        }
    }

    /** {@link #run} on a tensor of shape (B, T, Din); returns (B, T, Dout). */
    public Tensor forward(Tensor x) {
        if (!java.util.Arrays.equals(x.shape(), inShape))
            throw new IllegalArgumentException("ResidentStack: input must be (B, T, Din) = " + Shape.str(inputShape()) + ", got " + Shape.str(x.shape()));
        return Tensor.of(run(x.data()), outputShape());
    }

    /** Re-packs the modules' current parameters into the weight arena and uploads it (1 put, sent with the next launch). */
    public void refreshWeights() {
        synchronized (backend) {
            open();
            pack();
            put(kern.w);
        }
    }

    @Override
    public void close() {
        synchronized (backend) {
            if (closed) return;
            closed = true;
            kern.dispose();
        }
    }

    // ================================================================ building

    /** The arenas' sizes and the launches, as a Plan or a Program laid them out. */
    private ResidentStack(OpenClBackend backend, Emitter em, long actSize, int[] inShape, int[] outShape) {
        this.backend = backend;
        this.device = em.device;
        this.inShape = inShape.clone();
        this.outShape = outShape.clone();
        this.inFloats = Shape.numel(inShape);
        this.outFloats = Shape.numel(outShape);
        this.program = em.program;
        this.params = em.params;
        this.paramOffsets = em.paramOffsets.stream().mapToInt(Integer::intValue).toArray();
        long ioSize = Math.max(1, Math.max((long) inFloats, outFloats));
        long maxAlloc = backend.device().maxAllocBytes();
        check("weights", em.wNext, maxAlloc);
        check("activations", actSize, maxAlloc);
        check("io", ioSize, maxAlloc);
        kern.w = new float[(int) Math.max(1, em.wNext)];
        kern.act = new float[(int) Math.max(1, actSize)];
        kern.io = new float[(int) ioSize];
        kern.setExplicit(true);
        synchronized (backend) {
            try {
                kern.compile(device);
            } catch (CompileFailedException | RuntimeException e) {
                kern.dispose();
                throw new OpenClUnavailableException(OpenClUnavailableException.Reason.KERNEL_FAILED, "Aparapi could not build ResidentKernel for "
                        + backend.device().name().trim() + " (" + e.getMessage() + "); the stack will not fall back to Java", e);
            }
            pack();
            put(kern.w);
            // An empty launch: proves the kernel runs on the device and makes the weights' put happen here, not in the first pass.
            kern.mode = ResidentKernel.COPY_IN;
            kern.n = 0;
            launch(device.createRange(WG, WG));
        }
    }

    private static void check(String what, long floats, long maxAllocBytes) {
        if (floats > Integer.MAX_VALUE - 8 || (maxAllocBytes > 0 && 4 * floats > maxAllocBytes))
            throw new IllegalArgumentException("ResidentStack: the " + what + " arena needs " + floats + " floats (" + 4 * floats / 1048576
                    + " MiB), more than one array or device allocation holds (max " + maxAllocBytes / 1048576 + " MiB): use a smaller batch");
    }

    private void pack() {
        for (int i = 0; i < params.size(); i++) {
            float[] p = params.get(i).data();
            System.arraycopy(p, 0, kern.w, paramOffsets[i], p.length);
        }
    }

    /** Adds layers; each checks that its input width is the current width. */
    public static final class Builder {
        private final OpenClBackend backend;
        private final int batch, tokens;
        private final List<Module> layers = new ArrayList<>();
        private int dIn = -1, width = -1;

        private Builder(OpenClBackend backend, int batch, int tokens) {
            if (backend == null) throw new IllegalArgumentException("ResidentStack: backend is null");
            if (batch < 1 || tokens < 1) throw new IllegalArgumentException("ResidentStack: batch and tokens must be >= 1, got " + batch + ", " + tokens);
            this.backend = backend;
            this.batch = batch;
            this.tokens = tokens;
        }

        /** h = linear(h): (B, T, in) -> (B, T, out). */
        public Builder linear(Linear l) { return add(l, l.in, l.out); }

        /** h = norm(h). */
        public Builder layerNorm(LayerNorm n) { return add(n, n.dim, n.dim); }

        /** h = h + attn(h) (the module's pre-norm included); bidirectional or causal as the module is. */
        public Builder attentionBlock(MultiHeadAttention a) { return add(a, a.dim, a.dim); }

        /** h = h + mlp(h) (the module's pre-norm included); the MLP must map dim -> dim through exact GELU. */
        public Builder mlpBlock(MLP mlp) {
            if (!(mlp.main.get(1) instanceof Activation act) || act.kind != Activation.Kind.GELU)
                throw new UnsupportedOperationException("ResidentStack: only exact-GELU MLPs are supported, got " + mlp.main.get(1));
            if (mlp.fc2().out != mlp.fc1().in)
                throw new IllegalArgumentException("ResidentStack: an MLP block needs out == in for its residual, got "
                        + mlp.fc1().in + " -> " + mlp.fc2().out);
            return add(mlp, mlp.fc1().in, mlp.fc2().out);
        }

        private Builder add(Module m, int in, int out) {
            if (width >= 0 && in != width)
                throw new IllegalArgumentException("ResidentStack: " + m.getClass().getSimpleName() + " takes " + in + " features but the stack's width is " + width);
            if (dIn < 0) dIn = in;
            layers.add(m);
            width = out;
            return this;
        }

        /** Packs and uploads the weights (1 put), compiles the kernel and checks it runs on the device (1 empty launch). */
        public ResidentStack build() {
            if (layers.isEmpty()) throw new IllegalStateException("ResidentStack: no layers");
            Plan plan = new Plan(this);
            return new ResidentStack(backend, plan.e, plan.actSize, new int[]{batch, tokens, dIn}, new int[]{batch, tokens, width});
        }
    }

    /** One launch: the kernel's scalar fields and its range. */
    private static final class Op {
        int mode, n, m, k, src, dst, wOff, bOff, hasW, hasB, rows, d, slices, heads, t, dh, causal, per, vOff, v2Off, vStride;
        int ldx, ldy, accum, gel, qi, kOff, vlOff, ldk, scaleOff = -1, guided, clipMode;
        int rsOff, ldr, gated, gtOff, ldg, gRows = 1;
        float eps, scale, qkScale = 1f, clip;
        Range range;

        void load(ResidentKernel r) {
            r.mode = mode; r.n = n; r.m = m; r.k = k; r.src = src; r.dst = dst; r.wOff = wOff; r.bOff = bOff;
            r.hasW = hasW; r.hasB = hasB; r.rows = rows; r.d = d; r.slices = slices; r.heads = heads; r.t = t;
            r.dh = dh; r.causal = causal; r.eps = eps; r.scale = scale;
            r.per = per; r.vOff = vOff; r.v2Off = v2Off; r.vStride = vStride;
            r.ldx = ldx; r.ldy = ldy; r.accum = accum; r.gel = gel; r.qi = qi; r.kOff = kOff; r.vlOff = vlOff; r.ldk = ldk;
            r.scaleOff = scaleOff; r.qkScale = qkScale; r.guided = guided; r.clipMode = clipMode; r.clip = clip;
            r.rsOff = rsOff; r.ldr = ldr; r.gated = gated; r.gtOff = gtOff; r.ldg = ldg; r.gRows = gRows;
        }
    }

    /**
     * Lays out the arenas and turns the layers into launches. Activation regions, each rows = B*T
     * rows: two stream buffers S0, S1 (the residual stream h; Linear and a standalone LayerNorm
     * write the other one), N (pre-norm output), QKV (rows x 3D), O (attention output, heads
     * merged), P (the block output before the residual add), F (MLP hidden). Blocks reuse the same
     * regions layer after layer, so the arena is a few multiples of one layer's activations.
     */
    private static final class Plan {
        final Emitter e;
        final long actSize;

        Plan(Builder b) {
            e = new Emitter(b.backend.device().device());
            int rows = b.batch * b.tokens;
            int maxStream = b.dIn, maxBlock = 0, maxQkv = 0, maxHidden = 0;
            for (Module m : b.layers) {
                if (m instanceof Linear l) maxStream = Math.max(maxStream, l.out);
                if (m instanceof MultiHeadAttention a) { maxBlock = Math.max(maxBlock, a.dim); maxQkv = Math.max(maxQkv, 3 * a.dim); }
                if (m instanceof MLP p) { maxBlock = Math.max(maxBlock, p.fc1().in); maxHidden = Math.max(maxHidden, p.fc1().out); }
            }
            long r = rows;
            long s0 = 0, s1 = s0 + r * maxStream, nn = s1 + r * maxStream, qkv = nn + r * maxBlock, o = qkv + r * maxQkv,
                    p = o + r * maxBlock, f = p + r * maxBlock, end = f + r * maxHidden;
            actSize = Math.max(1, end);
            if (end > Integer.MAX_VALUE - 8) return; // the constructor reports the size

            int cur = (int) s0;
            e.elementwise(ResidentKernel.COPY_IN, 0, cur, rows * b.dIn);
            for (Module m : b.layers) {
                int other = cur == (int) s0 ? (int) s1 : (int) s0;
                if (m instanceof Linear l) {
                    e.linear(l, cur, other, rows);
                    cur = other;
                } else if (m instanceof LayerNorm ln) {
                    e.layerNorm(ln, cur, other, rows);
                    cur = other;
                } else if (m instanceof MultiHeadAttention a) {
                    int x = cur;
                    if (a.norm != null) { e.layerNorm(a.norm, cur, (int) nn, rows); x = (int) nn; }
                    e.linear(a.qkv, x, (int) qkv, rows);
                    e.attention((int) qkv, (int) o, b.batch, a.heads, b.tokens, a.headDim, a.causal, fusedScale(a.headDim));
                    e.linear(a.proj, (int) o, (int) p, rows);
                    e.elementwise(ResidentKernel.ADD, (int) p, cur, rows * a.dim);
                } else if (m instanceof MLP mlp) {
                    int x = cur;
                    if (mlp.norm != null) { e.layerNorm(mlp.norm, cur, (int) nn, rows); x = (int) nn; }
                    e.linear(mlp.fc1(), x, (int) f, rows);
                    e.elementwise(ResidentKernel.GELU, 0, (int) f, rows * mlp.fc1().out);
                    e.linear(mlp.fc2(), (int) f, (int) p, rows);
                    e.elementwise(ResidentKernel.ADD, (int) p, cur, rows * mlp.fc2().out);
                }
            }
            e.elementwise(ResidentKernel.COPY_OUT, cur, 0, rows * b.width);
        }
    }

    /** MultiHeadAttention's FUSED scale, headDim^-1/2 computed as it does; SPLIT_QK is the same maths up to float rounding. */
    static float fusedScale(int headDim) {
        double s = Math.pow(headDim, -0.25);
        return (float) (s * s);
    }

    /** Turns ops into launches (kernel fields + range) and packs parameters into the weight arena; shared by Plan and Program. */
    private static final class Emitter {
        final OpenCLDevice device;
        final List<Op> program = new ArrayList<>();
        final List<Tensor> params = new ArrayList<>();
        final List<Integer> paramOffsets = new ArrayList<>();
        long wNext;

        /** Module tensors already packed (by identity): an unrolled program (TarFlow's decode loop) uses each Linear once per step but packs it once. */
        final java.util.IdentityHashMap<Tensor, Integer> packed = new java.util.IdentityHashMap<>();

        Emitter(OpenCLDevice device) { this.device = device; }

        /** A module's parameter: packed on first use, its offset reused after. */
        int shared(Tensor t) {
            Integer off = packed.get(t);
            if (off == null) {
                off = param(t);
                packed.put(t, off);
            }
            return off;
        }

        /** Reserves room for a parameter in w; returns its offset. */
        int param(Tensor t) {
            if (wNext + t.numel() > Integer.MAX_VALUE - 8) throw new IllegalArgumentException("ResidentStack: weights do not fit one array");
            int off = (int) wNext;
            params.add(t);
            paramOffsets.add(off);
            wNext += t.numel();
            return off;
        }

        Op elementwise(int mode, int src, int dst, int n) {
            Op op = new Op();
            op.mode = mode; op.src = src; op.dst = dst; op.n = n;
            op.range = device.createRange(roundUp(Math.max(1, n), WG), WG);
            program.add(op);
            return op;
        }

        Op linear(Linear l, int src, int dst, int rows) {
            int w = shared(l.weight), bias = l.bias == null ? -1 : shared(l.bias);
            return linear(w, bias, l.in, l.out, src, dst, rows);
        }

        /** Y (rows, out) at act[dst] = X (rows, in) at act[src] W^T + b; W (out, in) at w[wOff], b at w[bOff] unless bOff < 0. */
        Op linear(int wOff, int bOff, int in, int out, int src, int dst, int rows) {
            Op op = new Op();
            op.mode = ResidentKernel.LINEAR; op.src = src; op.dst = dst; op.m = rows; op.k = in; op.n = out;
            op.ldx = in; op.ldy = out;
            op.wOff = wOff;
            op.hasB = bOff < 0 ? 0 : 1;
            op.bOff = Math.max(0, bOff);
            int ts = ResidentKernel.TS;
            op.range = device.createRange2D(roundUp(out, ts), roundUp(rows, ts), ts, ts);
            program.add(op);
            return op;
        }

        void layerNorm(LayerNorm ln, int src, int dst, int rows) {
            Op op = layerNorm(ln.eps, src, dst, rows, ln.dim);
            op.hasW = ln.weight == null ? 0 : 1;
            op.hasB = ln.bias == null ? 0 : 1;
            if (ln.weight != null) op.wOff = shared(ln.weight);
            if (ln.bias != null) op.bOff = shared(ln.bias);
        }

        /** LayerNorm without affine parameters over rows of d. */
        Op layerNorm(float eps, int src, int dst, int rows, int d) {
            Op op = new Op();
            op.mode = ResidentKernel.LAYERNORM; op.src = src; op.dst = dst; op.rows = rows; op.d = d; op.eps = eps;
            op.range = device.createRange(roundUp(rows, WG), WG);
            program.add(op);
            return op;
        }

        void attention(int src, int dst, int batch, int heads, int tokens, int headDim, boolean causal, float scale) {
            Op op = new Op();
            op.mode = ResidentKernel.ATTENTION; op.src = src; op.dst = dst;
            op.slices = batch * heads; op.heads = heads; op.t = tokens; op.dh = headDim;
            op.causal = causal ? 1 : 0;
            op.scale = scale;
            op.range = device.createRange(roundUp(op.slices * op.t, WG), WG);
            program.add(op);
        }

        /** A per-sample mode (MODULATE, GATED_ADD) over samples x per floats in rows of d. */
        void perSample(int mode, int src, int dst, int v, int v2, int stride, int samples, int per, int d) {
            Op op = elementwise(mode, src, dst, samples * per);
            op.vOff = v; op.v2Off = v2; op.vStride = stride; op.per = per; op.d = d;
        }
    }

    /**
     * A free-form resident program over the same kernel and arenas: reserve activation regions
     * ({@link #act}), pack weights ({@link #weight}, {@link #weights}), declare the io shapes, then
     * add ops; every offset is in floats into the arena named by the method. {@link ResidentStack#run}
     * then does 1 put (the input at io[0 ..)), one launch per op, 1 get (the output at io[0 ..)):
     * copy every input in before copying any output out (they share io). Ops are checked against
     * the regions reserved so far, so a wrong offset fails here, not as a wrong number on the device.
     * Weights are snapshots as in a layer stack ({@link ResidentStack#refreshWeights()}).
     */
    public static final class Program {
        private final OpenClBackend backend;
        private final Emitter e;
        private long actNext;
        private int[] inShape, outShape;

        private Program(OpenClBackend backend) {
            if (backend == null) throw new IllegalArgumentException("ResidentStack: backend is null");
            this.backend = backend;
            this.e = new Emitter(backend.device().device());
        }

        /** Reserves an activation region of n floats (written and read only by the kernel); returns its offset in act. */
        public int act(long n) {
            if (n < 0 || actNext + n > Integer.MAX_VALUE - 8)
                throw new IllegalArgumentException("ResidentStack.Program: activations of " + (actNext + n) + " floats do not fit one array: use a smaller batch");
            int off = (int) actNext;
            actNext += n;
            return off;
        }

        /** Packs a parameter into the weight arena (uploaded at build, re-read by refreshWeights); returns its offset in w. */
        public int weight(Tensor t) { return e.param(t); }

        /**
         * The same, packed once per tensor (by identity): a later call with the same tensor returns the first offset. What
         * a plan whose ops reference one weight many times (an unrolled decode loop) packs its weights with.
         */
        public int sharedWeight(Tensor t) { return e.shared(t); }

        /** Packs parameters back to back (e.g. several Linears' weights that one LINEAR launch reads as one stacked matrix); returns the first one's offset. */
        public int weights(List<Tensor> ts) {
            if (ts.isEmpty()) throw new IllegalArgumentException("ResidentStack.Program: no tensors to pack");
            int first = e.param(ts.get(0));
            for (int i = 1; i < ts.size(); i++) e.param(ts.get(i));
            return first;
        }

        /** The shape of run's input (row-major at io[0 ..)). */
        public Program input(int... shape) { inShape = shape.clone(); return this; }

        /** The shape of run's output (row-major at io[0 ..)). */
        public Program output(int... shape) { outShape = shape.clone(); return this; }

        /** act[dst ..+n) = io[ioOff ..+n). */
        public Program copyIn(int ioOff, int dst, int n) {
            io(ioOff, n, inShape, "input");
            act(dst, n);
            e.elementwise(ResidentKernel.COPY_IN, ioOff, dst, n);
            return this;
        }

        /** io[ioOff ..+n) = act[src ..+n). */
        public Program copyOut(int src, int ioOff, int n) {
            act(src, n);
            io(ioOff, n, outShape, "output");
            e.elementwise(ResidentKernel.COPY_OUT, src, ioOff, n);
            return this;
        }

        /** Y (rows, out) = X (rows, in) W^T + b with W (out, in) at w[wOff] and b (out) at w[bOff] (bOff < 0: no bias), both packed already. */
        public Program linear(int wOff, int bOff, int in, int out, int src, int dst, int rows) {
            if (wOff < 0 || wOff + (long) out * in > e.wNext || (bOff >= 0 && bOff + (long) out > e.wNext))
                throw new IllegalArgumentException("ResidentStack.Program: a (" + out + ", " + in + ") Linear at w[" + wOff + "] (bias at " + bOff
                        + ") runs past the " + e.wNext + " packed weight floats");
            act(src, (long) rows * in);
            act(dst, (long) rows * out);
            e.linear(wOff, bOff, in, out, src, dst, rows);
            return this;
        }

        /** LayerNorm without weight or bias over rows of d, act[src] -> act[dst] (must not overlap). */
        public Program layerNorm(float eps, int src, int dst, int rows, int d) {
            checkNorm(src, dst, rows, d);
            e.layerNorm(eps, src, dst, rows, d);
            return this;
        }

        /** LAYERNORM reads its row twice after writing nothing, then writes it: in and out must be disjoint (or other rows would be read half-normalised). */
        private void checkNorm(int src, int dst, int rows, int d) {
            long n = (long) rows * d;
            act(src, n);
            act(dst, n);
            if (src < dst + n && dst < src + n)
                throw new IllegalArgumentException("ResidentStack.Program: LayerNorm's input act[" + src + "] and output act[" + dst + "] overlap");
        }

        /**
         * DiT's modulate: for each of samples x (per floats in rows of d), y = x + x * scale[b] +
         * shift[b], x at act[src], y at act[dst] (may be src), shift[b] (d) at act[shift + b stride],
         * scale[b] at act[scale + b stride].
         */
        public Program modulate(int src, int dst, int shift, int scale, int stride, int samples, int per, int d) {
            perSample(src, dst, shift, scale, stride, samples, per, d);
            e.perSample(ResidentKernel.MODULATE, src, dst, shift, scale, stride, samples, per, d);
            return this;
        }

        /** h += gate[b] * y per sample: y at act[src], h at act[dst], gate[b] (d) at act[gate + b stride]. */
        public Program gatedAdd(int src, int dst, int gate, int stride, int samples, int per, int d) {
            perSample(src, dst, gate, gate, stride, samples, per, d);
            e.perSample(ResidentKernel.GATED_ADD, src, dst, gate, gate, stride, samples, per, d);
            return this;
        }

        /** act[dst + s per + i] += w[table + i] for every sample s and i &lt; per: a (T, D) table (already packed) added to each sample. */
        public Program addTable(int table, int dst, int samples, int per) {
            if (per < 1 || table < 0 || table + (long) per > e.wNext)
                throw new IllegalArgumentException("ResidentStack.Program: a table of " + per + " floats at w[" + table + "] runs past the packed weights");
            act(dst, (long) samples * per);
            Op op = e.elementwise(ResidentKernel.ADD_TABLE, 0, dst, samples * per);
            op.wOff = table; op.per = per;
            return this;
        }

        /** act[dst ..+n) += act[src ..+n). */
        public Program add(int src, int dst, int n) {
            act(src, n);
            act(dst, n);
            e.elementwise(ResidentKernel.ADD, src, dst, n);
            return this;
        }

        /** Exact GELU in place on act[dst ..+n). */
        public Program gelu(int dst, int n) {
            act(dst, n);
            e.elementwise(ResidentKernel.GELU, 0, dst, n);
            return this;
        }

        /** SiLU in place on act[dst ..+n). */
        public Program silu(int dst, int n) {
            act(dst, n);
            e.elementwise(ResidentKernel.SILU, 0, dst, n);
            return this;
        }

        /**
         * Y (rows, out) at act[dst] (rows ldy apart) = X (rows, in) at act[src] (rows ldx apart) W^T + b (W, b packed
         * already; bOff &lt; 0: no bias), then GELU when gelu, then Y = R + G * Y when res &gt;= 0: R (rows, out) at
         * act[res] (rows ldr apart), G one row per gRows rows at act[gate] (ldg apart; gate &lt; 0: none). One launch: an
         * inference plan's Linear op (a strided X: one token of every sample, TarFlow's decode step).
         */
        public Program linear(int wOff, int bOff, int in, int out, int src, int ldx, int dst, int ldy, int rows, boolean gelu,
                              int res, int ldr, int gate, int ldg, int gRows) {
            if (ldx < in || ldy < out)
                throw new IllegalArgumentException("ResidentStack.Program: row strides " + ldx + " (X) and " + ldy + " (Y) must be >= " + in + " and " + out);
            linear(wOff, bOff, in, out, src, dst, 1);
            Op op = e.program.get(e.program.size() - 1);
            act(src, (long) (rows - 1) * ldx + in);
            act(dst, (long) (rows - 1) * ldy + out);
            op.m = rows; op.ldx = ldx; op.ldy = ldy;
            int ts = ResidentKernel.TS;
            op.range = e.device.createRange2D(roundUp(out, ts), roundUp(rows, ts), ts, ts);
            op.gel = gelu ? 1 : 0;
            if (res >= 0) {
                act(res, (long) (rows - 1) * ldr + out);
                op.accum = 1; op.rsOff = res; op.ldr = ldr;
                if (gate >= 0) {
                    if (gRows < 1 || rows % gRows != 0)
                        throw new IllegalArgumentException("ResidentStack.Program: " + rows + " rows are not whole groups of " + gRows);
                    act(gate, (long) (rows / gRows - 1) * ldg + out);
                    op.gated = 1; op.gtOff = gate; op.ldg = ldg; op.gRows = gRows;
                }
            }
            return this;
        }

        /** LayerNorm over rows of d with weight and bias tensors (either may be null), act[src] -> act[dst] (must not overlap). */
        public Program layerNorm(Tensor weight, Tensor bias, float eps, int src, int dst, int rows, int d) {
            checkNorm(src, dst, rows, d);
            Op op = e.layerNorm(eps, src, dst, rows, d);
            op.hasW = weight == null ? 0 : 1;
            op.hasB = bias == null ? 0 : 1;
            if (weight != null) op.wOff = e.shared(weight);
            if (bias != null) op.bOff = e.shared(bias);
            return this;
        }

        /**
         * PlanOp.DecodeAttention, one launch, one item per (sample, head): the step's fused projection (samples, 3 heads
         * headDim) at act[qkv]; q and k multiplied by qkScale; k stored at column step of the transposed keys ((samples
         * heads headDim) rows of ldk &gt;= tokens floats at act[keys]), v at row step of the values ((samples heads
         * tokens) rows of headDim at act[values]); query step attends keys 0..step with the logit scale, or the float at
         * act[scaleAt] when scaleAt &gt;= 0 (set per run); heads merged into (samples, heads headDim) at act[out].
         */
        public Program decode(int qkv, int keys, int ldk, int values, int out, int samples, int heads, int headDim, int tokens, int step,
                              float qkScale, float scale, int scaleAt) {
            if (step < 0 || step >= tokens || ldk < tokens)
                throw new IllegalArgumentException("ResidentStack.Program: step " + step + " of " + tokens + " tokens (keys " + ldk + " apart)");
            long dm = (long) heads * headDim, sh = (long) samples * heads;
            act(qkv, samples * 3 * dm);
            act(keys, (sh * headDim - 1) * ldk + tokens);
            act(values, sh * tokens * headDim);
            act(out, samples * dm);
            if (scaleAt >= 0) act(scaleAt, 1);
            Op op = new Op();
            op.mode = ResidentKernel.DECODE; op.src = qkv; op.dst = out; op.kOff = keys; op.ldk = ldk; op.vlOff = values;
            op.slices = samples * heads; op.heads = heads; op.t = tokens; op.dh = headDim; op.qi = step;
            op.qkScale = qkScale; op.scale = scale; op.scaleOff = scaleAt;
            op.range = e.device.createRange(roundUp(op.slices, WG), WG);
            e.program.add(op);
            return this;
        }

        /**
         * PlanOp.CouplingStep, one launch: params (samples, 2 dim) at act[params] ([a | b] rows), bounded by bound
         * (PlanOp.Bound's ordinal: none, clamp, soft) with constant c; with guidance (uncond &gt;= 0) a = a + g (a - a_u)
         * from the unconditional params at act[uncond], g = act[gain]; then x = x exp(a) + b for x (samples, dim) at
         * act[x], rows ldx apart.
         */
        public Program couple(int params, int uncond, int gain, int x, int ldx, int samples, int dim, int bound, float c) {
            if (bound < ResidentKernel.CLIP_NONE || bound > ResidentKernel.CLIP_SOFT || (bound != ResidentKernel.CLIP_NONE && !(c > 0)))
                throw new IllegalArgumentException("ResidentStack.Program: bound " + bound + " with constant " + c + " (a bound needs c > 0)");
            if (ldx < dim) throw new IllegalArgumentException("ResidentStack.Program: x's rows " + ldx + " apart hold fewer than " + dim + " floats");
            act(params, (long) samples * 2 * dim);
            act(x, (long) (samples - 1) * ldx + dim);
            if (uncond >= 0) {
                act(uncond, (long) samples * 2 * dim);
                act(gain, 1);
            }
            Op op = e.elementwise(ResidentKernel.COUPLE_STEP, params, x, samples * dim);
            op.d = dim; op.ldy = ldx; op.guided = uncond >= 0 ? 1 : 0; op.v2Off = Math.max(0, uncond); op.vOff = Math.max(0, gain);
            op.clipMode = bound; op.clip = c;
            return this;
        }

        /** Row i &lt; rows of (rows, d) at act[dst] = row act[ids + i] (a float index) of a (V, d) table packed at w[table]. */
        public Program gatherRows(int table, int ids, int dst, int rows, int d) {
            act(ids, rows);
            act(dst, (long) rows * d);
            Op op = e.elementwise(ResidentKernel.GATHER_ROWS, ids, dst, rows * d);
            op.d = d; op.wOff = table;
            return this;
        }

        /**
         * softmax(scale q k^T) v per (sample, head), no mask: q, k, v read from the fused qkv
         * output (batch, tokens, 3 heads headDim) at act[qkv] in MultiHeadAttention's column
         * layout, heads merged into (batch, tokens, heads headDim) at act[dst].
         */
        public Program attention(int qkv, int dst, int batch, int heads, int tokens, int headDim, boolean causal, float scale) {
            long rows = (long) batch * tokens, dm = (long) heads * headDim;
            act(qkv, rows * 3 * dm);
            act(dst, rows * dm);
            e.attention(qkv, dst, batch, heads, tokens, headDim, causal, scale);
            return this;
        }

        /** The attention of a module (its FUSED scale, its causality; its pre-norm, qkv and proj are the caller's ops). */
        public Program attention(MultiHeadAttention a, int qkv, int dst, int batch, int tokens) {
            return attention(qkv, dst, batch, a.heads, tokens, a.headDim, a.causal, fusedScale(a.headDim));
        }

        /** Sizes the arenas, compiles the kernel, uploads the weights (1 put) and checks it runs on the device (1 empty launch). */
        public ResidentStack build() {
            if (inShape == null || outShape == null) throw new IllegalStateException("ResidentStack.Program: declare input(...) and output(...) shapes");
            if (e.program.isEmpty()) throw new IllegalStateException("ResidentStack.Program: no ops");
            return new ResidentStack(backend, e, actNext, inShape, outShape);
        }

        private void act(int off, long n) {
            if (off < 0 || n < 0 || off + n > actNext)
                throw new IllegalArgumentException("ResidentStack.Program: act[" + off + " .. " + (off + n) + ") is outside the " + actNext
                        + " activation floats reserved so far");
        }

        private void io(int off, long n, int[] shape, String what) {
            if (shape == null) throw new IllegalStateException("ResidentStack.Program: declare the " + what + " shape before copying it");
            long size = Shape.numel(shape);
            if (off < 0 || off + n > size)
                throw new IllegalArgumentException("ResidentStack.Program: io[" + off + " .. " + (off + n) + ") is outside the " + what + " "
                        + Shape.str(shape) + " (" + size + " floats)");
        }

        private void perSample(int src, int dst, int v, int v2, int stride, int samples, int per, int d) {
            if (d < 1 || per % d != 0 || samples < 1 || stride < 0)
                throw new IllegalArgumentException("ResidentStack.Program: per-sample op needs per (" + per + ") a multiple of d (" + d + ") and samples >= 1");
            act(src, (long) samples * per);
            act(dst, (long) samples * per);
            act(v, (long) (samples - 1) * stride + d);
            act(v2, (long) (samples - 1) * stride + d);
        }
    }

    // ================================================================ plumbing (as OpenClBackend's)

    private void launch(Range r) {
        kern.execute(r);
        transfers.launch();
        backend.transfers().launch();
        if (!kern.isRunningCL() || !(kern.getTargetDevice() instanceof OpenCLDevice))
            throw new OpenClUnavailableException(OpenClUnavailableException.Reason.FELL_BACK, "Aparapi ran ResidentKernel on "
                    + (kern.getTargetDevice() == null ? "its Java thread pool" : kern.getTargetDevice().getShortDescription())
                    + " instead of OpenCL device " + backend.device().name().trim() + " (translation or device failure: see Aparapi's "
                    + "warning above; kernels need -g and no lambdas or objects in run())");
    }

    private void put(float[] a) {
        kern.put(a);
        transfers.put(a.length);
        backend.transfers().put(a.length);
    }

    private void get(float[] a) {
        kern.get(a);
        transfers.get(a.length);
        backend.transfers().get(a.length);
    }

    private static int roundUp(int x, int m) { return (x + m - 1) / m * m; }

    private void open() {
        if (closed) throw new IllegalStateException("this ResidentStack is closed");
    }
}
