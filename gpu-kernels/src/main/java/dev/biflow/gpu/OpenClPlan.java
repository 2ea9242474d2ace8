// The OpenCL executor of an inference plan: the plan compiled into one resident program (weights up once; per run one put, its launches, one get).
package dev.biflow.gpu;

import dev.biflow.engine.plan.Plan;
import dev.biflow.engine.plan.PlanOp;
import dev.biflow.engine.plan.Region;

import java.util.List;

/**
 * Runs a {@link Plan} on an OpenCL device: every op becomes one launch of {@link ResidentKernel} over a device
 * arena laid out exactly as the plan's (the same offsets), on weights packed and uploaded once at build. A run
 * copies the inputs (arena regions the caller names) up in one put and the outputs down in one get. Results
 * match the CPU executor within float reordering (the device sums in another order; TARFlow's split q/k
 * scaling becomes one logit scale): the tolerances of the conformance suite.
 *
 * <p>What it takes: every region in the arena (no bound arrays); LayerNorm and attention operands contiguous (a
 * Linear's rows and a decode cache's keys may be strided); Add, AddTable, AddRow and SiLU in place (y = a); Modulate's
 * shift and scale with one row stride. A plan outside that is refused at build with the op named. A weight referenced
 * by many ops (an unrolled decode loop's) is packed once. Weights are a snapshot ({@link #refreshWeights}).
 */
public final class OpenClPlan implements AutoCloseable {
    private final ResidentStack stack;
    private final List<Region> inputs, outputs;

    private OpenClPlan(Plan plan, OpenClBackend be, List<Region> inputs, List<Region> outputs) {
        this.inputs = List.copyOf(inputs);
        this.outputs = List.copyOf(outputs);
        ResidentStack.Program p = ResidentStack.program(be);
        int arena = p.act(Math.max(1, plan.size()));
        if (arena != 0) throw new IllegalStateException("OpenClPlan: the device arena must start at 0");
        int in = 0, out = 0;
        for (Region r : this.inputs) in += floats(r, "input");
        for (Region r : this.outputs) out += floats(r, "output");
        p.input(Math.max(1, in)).output(Math.max(1, out));
        int io = 0;
        for (Region r : this.inputs) { p.copyIn(io, r.off(), r.rows() * r.cols()); io += r.rows() * r.cols(); }
        for (PlanOp op : plan.ops()) emit(p, op, plan.batch());
        io = 0;
        for (Region r : this.outputs) { p.copyOut(r.off(), io, r.rows() * r.cols()); io += r.rows() * r.cols(); }
        this.stack = p.build();
    }

    /** Compiles the plan for the backend's device; inputs and outputs are arena regions, copied in and out in this order. */
    public static OpenClPlan of(Plan plan, OpenClBackend be, List<Region> inputs, List<Region> outputs) {
        return new OpenClPlan(plan, be, inputs, outputs);
    }

    /** One run: in[i] holds input i's floats (row-major); returns each output's floats. */
    public float[][] run(float[]... in) {
        if (in.length != inputs.size()) throw new IllegalArgumentException("OpenClPlan.run: " + in.length + " inputs given, the plan has " + inputs.size());
        int n = 0;
        for (Region r : inputs) n += r.rows() * r.cols();
        float[] all = new float[Math.max(1, n)];
        int o = 0;
        for (int i = 0; i < in.length; i++) {
            int len = inputs.get(i).rows() * inputs.get(i).cols();
            if (in[i].length != len) throw new IllegalArgumentException("OpenClPlan.run: input " + i + " has " + in[i].length + " floats, its region " + len);
            System.arraycopy(in[i], 0, all, o, len);
            o += len;
        }
        float[] res = stack.run(all);
        float[][] outs = new float[outputs.size()][];
        o = 0;
        for (int i = 0; i < outs.length; i++) {
            int len = outputs.get(i).rows() * outputs.get(i).cols();
            outs[i] = java.util.Arrays.copyOfRange(res, o, o + len);
            o += len;
        }
        return outs;
    }

    /** Launches per run (the copies in and out included). */
    public int launchesPerRun() { return stack.launchesPerRun(); }

    public Transfers transfers() { return stack.transfers(); }

    /** Re-uploads the weights the plan references (1 put), e.g. after loading a checkpoint into the same model. */
    public void refreshWeights() { stack.refreshWeights(); }

    @Override
    public void close() { stack.close(); }

    private static void emit(ResidentStack.Program p, PlanOp op, int batch) {
        switch (op) {
            case PlanOp.Linear l -> {
                Region x = arena(l.x(), op), y = arena(l.y(), op); // rows may be strided (a decode step reads one token of every sample)
                int w = p.sharedWeight(l.weight()), b = l.bias() == null ? -1 : p.sharedWeight(l.bias());
                int res = -1, ldr = 0, gate = -1, ldg = 0, gRows = 1;
                if (l.epilogue() instanceof PlanOp.Epilogue.GatedAdd g) {
                    res = arena(g.residual(), op).off();
                    ldr = g.residual().ld();
                    if (g.gate() != null) {
                        gate = arena(g.gate(), op).off();
                        ldg = g.gate().ld();
                        gRows = y.rows() / g.gate().rows();
                    }
                }
                p.linear(w, b, x.cols(), y.cols(), x.off(), Math.max(x.ld(), x.cols()), y.off(), Math.max(y.ld(), y.cols()), x.rows(),
                        l.epilogue() instanceof PlanOp.Epilogue.Gelu, res, ldr, gate, ldg, gRows);
            }
            case PlanOp.LayerNorm n -> {
                Region x = contiguous(n.x(), op), y = contiguous(n.y(), op);
                p.layerNorm(n.weight(), n.bias(), n.eps(), x.off(), y.off(), x.rows(), x.cols());
            }
            case PlanOp.SelfAttention a -> {
                Region qkv = contiguous(a.qkv(), op), o = contiguous(a.out(), op);
                int heads = a.heads(), dh = qkv.cols() / (3 * heads);
                // q and k each scaled by qkScale, then the logits by scale: one logit scale on the device
                p.attention(qkv.off(), o.off(), a.batch(), heads, qkv.rows() / a.batch(), dh, a.causal(), a.scale() * a.qkScale() * a.qkScale());
            }
            case PlanOp.Modulate m -> {
                Region x = contiguous(m.x(), op), y = contiguous(m.y(), op), sh = arena(m.shift(), op), sc = arena(m.scale(), op);
                if (sh.ld() != sc.ld()) throw refused(op, "shift and scale need one row stride");
                p.modulate(x.off(), y.off(), sh.off(), sc.off(), sh.ld(), sh.rows(), x.rows() / sh.rows() * x.cols(), x.cols());
            }
            case PlanOp.Add a -> {
                Region x = contiguous(a.a(), op), b = contiguous(a.b(), op), y = contiguous(a.y(), op);
                if (y.off() == x.off()) p.add(b.off(), x.off(), x.rows() * x.cols());
                else if (y.off() == b.off()) p.add(x.off(), b.off(), x.rows() * x.cols());
                else throw refused(op, "the output must be one of the inputs (the device adds in place)");
            }
            case PlanOp.AddTable t -> {
                Region x = contiguous(t.a(), op), y = contiguous(t.y(), op);
                if (y.off() != x.off()) throw refused(op, "the table is added in place (y = a)");
                int rows = t.table().size(0);
                p.addTable(p.sharedWeight(t.table()), x.off(), x.rows() / rows, rows * x.cols());
            }
            case PlanOp.Gather g -> {
                Region ids = contiguous(g.ids(), op), y = contiguous(g.y(), op);
                p.gatherRows(p.sharedWeight(g.table()), ids.off(), y.off(), y.rows(), y.cols());
            }
            case PlanOp.Silu s -> {
                Region x = contiguous(s.x(), op), y = contiguous(s.y(), op);
                if (y.off() != x.off()) throw refused(op, "SiLU runs in place (y = x)");
                p.silu(x.off(), x.rows() * x.cols());
            }
            case PlanOp.AddRow a -> {
                Region x = contiguous(a.a(), op), y = contiguous(a.y(), op);
                if (y.off() != x.off()) throw refused(op, "the row is added in place (y = a)");
                p.addTable(p.sharedWeight(a.table()) + a.row() * x.cols(), x.off(), x.rows(), x.cols());
            }
            case PlanOp.DecodeAttention a -> {
                Region qkv = contiguous(a.qkv(), op), k = arena(a.keys(), op), v = contiguous(a.values(), op), o = contiguous(a.out(), op);
                int heads = a.heads(), dh = qkv.cols() / (3 * heads);
                p.decode(qkv.off(), k.off(), Math.max(k.ld(), k.cols()), v.off(), o.off(), qkv.rows(), heads, dh, k.cols(), a.step(), a.qkScale(), a.scale(),
                        a.scaleAt() == null ? -1 : arena(a.scaleAt(), op).off());
            }
            case PlanOp.CouplingStep c -> {
                Region pr = contiguous(c.params(), op), x = arena(c.x(), op);
                Region u = c.uncond() == null ? null : contiguous(c.uncond(), op);
                p.couple(pr.off(), u == null ? -1 : u.off(), u == null ? -1 : arena(c.gain(), op).off(), x.off(), Math.max(x.ld(), x.cols()), x.rows(),
                        x.cols(), c.bound().ordinal(), c.clip());
            }
        }
    }

    private static int floats(Region r, String what) {
        if (r.buf() != 0 || !r.contiguous()) throw new IllegalArgumentException("OpenClPlan: an " + what + " must be a contiguous arena region, got " + r);
        return r.rows() * r.cols();
    }

    private static Region arena(Region r, PlanOp op) {
        if (r.buf() != 0) throw refused(op, "region " + r + " is a bound array; the device plan reads the arena only");
        return r;
    }

    private static Region contiguous(Region r, PlanOp op) {
        arena(r, op);
        if (!r.contiguous()) throw refused(op, "region " + r + " must be contiguous");
        return r;
    }

    private static UnsupportedOperationException refused(PlanOp op, String why) {
        return new UnsupportedOperationException("OpenClPlan: " + op.getClass().getSimpleName() + ": " + why);
    }
}
