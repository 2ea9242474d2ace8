// Transformer feed-forward block as in ml-tarflow: [norm ->] main = Sequential(Linear, GELU, Linear).
package dev.biflow.engine.nn;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.plan.Inference;
import dev.biflow.engine.plan.PlanBuilder;
import dev.biflow.engine.plan.PlanOp;
import dev.biflow.engine.plan.Region;

/**
 * {@code main.0} Linear(dim -> hidden), {@code main.1} activation (exact GELU by default),
 * {@code main.2} Linear(hidden -> out). With {@code preNorm} a LayerNorm named {@code norm} is
 * applied first and registered before {@code main}, which gives ml-tarflow's MLP exactly
 * ({@code mlp.norm.weight}, {@code mlp.main.0.weight}, ...). The residual add is the caller's.
 */
public class MLP extends Module {
    /** Null without preNorm. */
    public final LayerNorm norm;
    public final Sequential main;

    public MLP(int dim, int hidden, int out, boolean preNorm, Activation.Kind act, Rng rng) {
        this.norm = preNorm ? registerModule("norm", new LayerNorm(dim)) : null;
        this.main = registerModule("main", new Sequential(
                new Linear(dim, hidden, true, rng), new Activation(act), new Linear(hidden, out, true, rng)));
    }

    /** dim -> hiddenMult*dim -> dim with exact GELU; preNorm as in ml-tarflow. */
    public MLP(int dim, int hiddenMult, boolean preNorm, Rng rng) {
        this(dim, dim * hiddenMult, dim, preNorm, Activation.Kind.GELU, rng);
    }

    /** dim -> 4*dim -> dim, exact GELU, no norm. */
    public MLP(int dim) { this(dim, 4, false, Init.globalRng()); }

    public Linear fc1() { return (Linear) main.get(0); }

    public Linear fc2() { return (Linear) main.get(2); }

    /** x (..., dim) -> (..., out). */
    @Override
    public Tensor forward(Tensor x) {
        if (inference()) return Inference.run(1, outShape(x), (p, in, y) -> lower(p, in[0], y), x);
        return main.forward(norm == null ? x : norm.forward(x));
    }

    /** {@link #forward} for inference: in (N, dim) -> out (N, out). */
    public void lower(PlanBuilder p, Region in, Region out) { lower(p, in, out, PlanOp.Epilogue.NONE); }

    /**
     * The same with fc2's epilogue (a gated residual add: {@link #forwardAdd}). The normalised input and the hidden
     * layer are plan temporaries; an exact GELU is applied on fc1's output tiles.
     */
    public void lower(PlanBuilder p, Region in, Region out, PlanOp.Epilogue epilogue) {
        int mark = p.mark();
        Region x = in;
        if (norm != null) norm.lower(p, in, x = p.alloc(in.rows(), in.cols()));
        Region h = p.alloc(in.rows(), fc1().out);
        Activation.Kind act = ((Activation) main.get(1)).kind;
        switch (act) {
            case GELU -> fc1().lower(p, x, h, PlanOp.Epilogue.GELU);
            case SILU -> {
                fc1().lower(p, x, h);
                p.add(new PlanOp.Silu(h, h));
            }
            default -> throw new UnsupportedOperationException("MLP.lower: activation " + act + " has no plan op (GELU and SILU have)");
        }
        fc2().lower(p, h, out, epilogue);
        p.release(mark);
    }

    /**
     * x + forward(x), the residual block of a transformer layer (needs out == dim). In a no-grad scope the
     * lowering, the add formed on fc2's output tiles: no third array and no pass over three; the same bits as
     * {@code Ops.add(x, forward(x))}, which it is when a gradient is recorded.
     */
    public Tensor forwardAdd(Tensor x) { return forwardAdd(x, x, null); }

    /**
     * residual + gate * forward(h) (gate (B, 1, out) or null), adaLN-Zero's gated residual, fused the same way;
     * the same bits as {@code Ops.add(residual, Ops.mul(gate, forward(h)))}, which it is when a gradient is recorded.
     */
    public Tensor forwardAdd(Tensor h, Tensor residual, Tensor gate) {
        if (!inference()) return Ops.add(residual, gate == null ? forward(h) : Ops.mul(gate, forward(h)));
        int[] s = outShape(h);
        Linear.checkResidual("MLP.forwardAdd", s, residual, gate);
        return Inference.run(s[0], s, (p, in, y) -> lower(p, in[0], y, new PlanOp.Epilogue.GatedAdd(in[1], gate == null ? null : in[2])),
                gate == null ? new Tensor[]{h, residual} : new Tensor[]{h, residual, gate});
    }

    /** No graph and an activation with a plan op: forward runs the lowering. */
    private boolean inference() {
        Activation.Kind k = ((Activation) main.get(1)).kind;
        return !Grad.enabled() && (k == Activation.Kind.GELU || k == Activation.Kind.SILU);
    }

    private int[] outShape(Tensor x) {
        if (x.dim() < 1 || x.size(-1) != fc1().in)
            throw new IllegalArgumentException("MLP(" + fc1().in + " -> " + fc2().out + "): input " + dev.biflow.engine.Shape.str(x.shape())
                    + " must end in " + fc1().in + " features");
        int[] s = x.shape();
        s[s.length - 1] = fc2().out;
        return s;
    }
}
