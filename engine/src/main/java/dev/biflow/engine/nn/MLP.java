// Transformer feed-forward block as in ml-tarflow: [norm ->] main = Sequential(Linear, GELU, Linear).
package dev.biflow.engine.nn;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;

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
        if (inference()) return inferencePass(x, null, null);
        return main.forward(norm == null ? x : norm.forward(x));
    }

    /**
     * x + forward(x), the residual block of a transformer layer (needs out == dim). In a no-grad scope the add is
     * fused into fc2's GEMM (Linear.forwardAdd): no third array and no pass over three; the same bits as
     * {@code Ops.add(x, forward(x))}, which it is when a gradient is recorded.
     */
    public Tensor forwardAdd(Tensor x) { return forwardAdd(x, x, null); }

    /**
     * residual + gate * forward(h) (gate (B, 1, out) or null), adaLN-Zero's gated residual, fused the same way;
     * the same bits as {@code Ops.add(residual, Ops.mul(gate, forward(h)))}, which it is when a gradient is recorded.
     */
    public Tensor forwardAdd(Tensor h, Tensor residual, Tensor gate) {
        if (inference()) return inferencePass(h, residual, gate);
        return dev.biflow.engine.Ops.add(residual, gate == null ? forward(h) : dev.biflow.engine.Ops.mul(gate, forward(h)));
    }

    private boolean inference() {
        return !dev.biflow.engine.Grad.enabled() && ((Activation) main.get(1)).kind == Activation.Kind.GELU;
    }

    /**
     * Inference: the normalised input and fc1's output live in reused scratch arrays and GELU is applied inside
     * the fc1 GEMM, so the widest tensor of a transformer layer is neither allocated (zeroed, cold) nor passed
     * over again; the same kernels on the same values, so the same bits as main.forward. residual: null, or
     * added (times gate, when not null) inside fc2's GEMM.
     */
    private Tensor inferencePass(Tensor x, Tensor residual, Tensor gate) {
        float[] n = norm == null ? null : dev.biflow.engine.kernels.Scratch.borrow(x.numel());
        float[] h = dev.biflow.engine.kernels.Scratch.borrow(x.numel() / x.size(-1) * fc1().out);
        try {
            Tensor in = norm == null ? x : norm.forwardInto(x, n);
            Tensor hidden = fc1().forwardGeluInto(in, h); // GELU on each output tile while it is in L1
            // a new array: the result escapes, the scratch does not
            return residual == null ? fc2().forward(hidden) : fc2().forwardAdd(hidden, residual, gate);
        } finally {
            dev.biflow.engine.kernels.Scratch.giveBack(n);
            dev.biflow.engine.kernels.Scratch.giveBack(h);
        }
    }
}
