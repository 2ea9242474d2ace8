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
    private final int batch, tokens, dIn, dOut;
    private final List<Op> program;
    private final List<Tensor> params;   // the tensors packed into w, in order
    private final int[] paramOffsets;    // their offsets in w
    private boolean closed;

    /** Starts a stack for passes of batch x tokens rows on the backend's device. */
    public static Builder builder(OpenClBackend backend, int batch, int tokens) { return new Builder(backend, batch, tokens); }

    /** Launches of one {@link #run}: the program plus COPY_IN and COPY_OUT. */
    public int launchesPerRun() { return program.size(); }

    /** Copies and launches of this stack (build and runs); the backend's counters include them too. */
    public Transfers transfers() { return transfers; }

    /** (B, T, Din) of the input. */
    public int[] inputShape() { return new int[]{batch, tokens, dIn}; }

    /** (B, T, Dout) of the output. */
    public int[] outputShape() { return new int[]{batch, tokens, dOut}; }

    /** Floats in the weight arena (uploaded once) and in the activation arena (never copied). */
    public long weightFloats() { return kern.w.length; }

    public long activationFloats() { return kern.act.length; }

    /**
     * One forward pass: input (B, T, Din) row-major, B*T*Din floats; returns (B, T, Dout). One put
     * (io), {@link #launchesPerRun()} launches, one get (io).
     */
    public float[] run(float[] input) {
        int nIn = batch * tokens * dIn;
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
            float[] out = new float[batch * tokens * dOut];
            System.arraycopy(kern.io, 0, out, 0, out.length);
            return out;
        }
    }

    /** {@link #run} on a tensor of shape (B, T, Din); returns (B, T, Dout). */
    public Tensor forward(Tensor x) {
        if (x.dim() != 3 || x.size(0) != batch || x.size(1) != tokens || x.size(2) != dIn)
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

    private ResidentStack(Builder b) {
        this.backend = b.backend;
        this.device = backend.device().device();
        this.batch = b.batch;
        this.tokens = b.tokens;
        this.dIn = b.dIn;
        this.dOut = b.width;
        Plan plan = new Plan(b);
        this.program = plan.program;
        this.params = plan.params;
        this.paramOffsets = plan.paramOffsets.stream().mapToInt(Integer::intValue).toArray();
        long maxAlloc = backend.device().maxAllocBytes();
        check("weights", plan.wSize, maxAlloc);
        check("activations", plan.actSize, maxAlloc);
        check("io", plan.ioSize, maxAlloc);
        kern.w = new float[(int) Math.max(1, plan.wSize)];
        kern.act = new float[(int) plan.actSize];
        kern.io = new float[(int) plan.ioSize];
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
            return new ResidentStack(this);
        }
    }

    /** One launch: the kernel's scalar fields and its range. */
    private static final class Op {
        int mode, n, m, k, src, dst, wOff, bOff, hasW, hasB, rows, d, slices, heads, t, dh, causal;
        float eps, scale;
        Range range;

        void load(ResidentKernel r) {
            r.mode = mode; r.n = n; r.m = m; r.k = k; r.src = src; r.dst = dst; r.wOff = wOff; r.bOff = bOff;
            r.hasW = hasW; r.hasB = hasB; r.rows = rows; r.d = d; r.slices = slices; r.heads = heads; r.t = t;
            r.dh = dh; r.causal = causal; r.eps = eps; r.scale = scale;
        }
    }

    /**
     * Lays out the arenas and turns the layers into launches. Activation regions, each rows = B*T
     * rows: two stream buffers S0, S1 (the residual stream h; Linear and a standalone LayerNorm
     * write the other one), N (pre-norm output), QKV (rows x 3D), O (attention output, heads
     * merged), P (the block output before the residual add), F (MLP hidden). Blocks reuse the same
     * regions layer after layer, so the arena is a few multiples of one layer's activations.
     */
    private final class Plan {
        final List<Op> program = new ArrayList<>();
        final List<Tensor> params = new ArrayList<>();
        final List<Integer> paramOffsets = new ArrayList<>();
        final long wSize, actSize, ioSize;
        private long wNext;
        private final int rows;

        Plan(Builder b) {
            rows = b.batch * b.tokens;
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
            ioSize = r * Math.max(b.dIn, b.width);
            if (end > Integer.MAX_VALUE - 8) { wSize = 0; return; } // the constructor reports the size

            int cur = (int) s0;
            program.add(elementwise(ResidentKernel.COPY_IN, 0, cur, rows * b.dIn));
            for (Module m : b.layers) {
                int other = cur == (int) s0 ? (int) s1 : (int) s0;
                if (m instanceof Linear l) {
                    program.add(linear(l, cur, other));
                    cur = other;
                } else if (m instanceof LayerNorm ln) {
                    program.add(layerNorm(ln, cur, other));
                    cur = other;
                } else if (m instanceof MultiHeadAttention a) {
                    int x = cur;
                    if (a.norm != null) { program.add(layerNorm(a.norm, cur, (int) nn)); x = (int) nn; }
                    program.add(linear(a.qkv, x, (int) qkv));
                    program.add(attention(a, (int) qkv, (int) o));
                    program.add(linear(a.proj, (int) o, (int) p));
                    program.add(elementwise(ResidentKernel.ADD, (int) p, cur, rows * a.dim));
                } else if (m instanceof MLP mlp) {
                    int x = cur;
                    if (mlp.norm != null) { program.add(layerNorm(mlp.norm, cur, (int) nn)); x = (int) nn; }
                    program.add(linear(mlp.fc1(), x, (int) f));
                    program.add(elementwise(ResidentKernel.GELU, 0, (int) f, rows * mlp.fc1().out));
                    program.add(linear(mlp.fc2(), (int) f, (int) p));
                    program.add(elementwise(ResidentKernel.ADD, (int) p, cur, rows * mlp.fc2().out));
                }
            }
            program.add(elementwise(ResidentKernel.COPY_OUT, cur, 0, rows * b.width));
            wSize = wNext;
        }

        /** Reserves room for a parameter in w; returns its offset. */
        private int param(Tensor t) {
            if (wNext + t.numel() > Integer.MAX_VALUE - 8) throw new IllegalArgumentException("ResidentStack: weights do not fit one array");
            int off = (int) wNext;
            params.add(t);
            paramOffsets.add(off);
            wNext += t.numel();
            return off;
        }

        private Op elementwise(int mode, int src, int dst, int n) {
            Op op = new Op();
            op.mode = mode; op.src = src; op.dst = dst; op.n = n;
            op.range = device.createRange(roundUp(Math.max(1, n), WG), WG);
            return op;
        }

        private Op linear(Linear l, int src, int dst) {
            Op op = new Op();
            op.mode = ResidentKernel.LINEAR; op.src = src; op.dst = dst; op.m = rows; op.k = l.in; op.n = l.out;
            op.wOff = param(l.weight);
            op.hasB = l.bias == null ? 0 : 1;
            if (l.bias != null) op.bOff = param(l.bias);
            int ts = ResidentKernel.TS;
            op.range = device.createRange2D(roundUp(l.out, ts), roundUp(rows, ts), ts, ts);
            return op;
        }

        private Op layerNorm(LayerNorm ln, int src, int dst) {
            Op op = new Op();
            op.mode = ResidentKernel.LAYERNORM; op.src = src; op.dst = dst; op.rows = rows; op.d = ln.dim; op.eps = ln.eps;
            op.hasW = ln.weight == null ? 0 : 1;
            op.hasB = ln.bias == null ? 0 : 1;
            if (ln.weight != null) op.wOff = param(ln.weight);
            if (ln.bias != null) op.bOff = param(ln.bias);
            op.range = device.createRange(roundUp(rows, WG), WG);
            return op;
        }

        private Op attention(MultiHeadAttention a, int src, int dst) {
            Op op = new Op();
            op.mode = ResidentKernel.ATTENTION; op.src = src; op.dst = dst;
            op.slices = batch * a.heads; op.heads = a.heads; op.t = tokens; op.dh = a.headDim;
            op.causal = a.causal ? 1 : 0;
            double s = Math.pow(a.headDim, -0.25);
            op.scale = (float) (s * s); // MultiHeadAttention's FUSED scale; SPLIT_QK is the same maths up to float rounding
            op.range = device.createRange(roundUp(op.slices * op.t, WG), WG);
            return op;
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
