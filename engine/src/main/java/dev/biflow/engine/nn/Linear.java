// Fully connected layer y = x W^T + b, weight stored (out, in) as in PyTorch.
package dev.biflow.engine.nn;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.plan.Inference;
import dev.biflow.engine.plan.PlanBuilder;
import dev.biflow.engine.plan.PlanOp;
import dev.biflow.engine.plan.Region;

/**
 * {@code torch.nn.Linear}: parameters {@code weight} (out, in) and optional {@code bias} (out),
 * initialised U(-1/sqrt(in), 1/sqrt(in)) as PyTorch does. Forward maps (..., in) to (..., out)
 * with one GEMM over all leading dims (the weight is the shared 2-D operand of
 * {@link Ops#matmul}).
 */
public class Linear extends Module {
    public final int in, out;
    public final Tensor weight;
    /** Null when built without bias. */
    public final Tensor bias;

    public Linear(int in, int out, boolean bias, Rng rng) {
        if (in <= 0 || out <= 0) throw new IllegalArgumentException("Linear: sizes must be positive, got in=" + in + " out=" + out);
        this.in = in;
        this.out = out;
        this.weight = registerParameter("weight", Tensor.zeros(out, in));
        this.bias = bias ? registerParameter("bias", Tensor.zeros(out)) : null;
        Init.torchDefault(weight, this.bias, rng);
    }

    public Linear(int in, int out, boolean bias) { this(in, out, bias, Init.globalRng()); }

    public Linear(int in, int out) { this(in, out, true); }

    /** x (..., in) -> (..., out). */
    @Override
    public Tensor forward(Tensor x) {
        requireInput(x);
        int[] s = x.shape();
        Tensor y = Ops.linear(x.dim() == 2 ? x : Ops.reshape(x, -1, in), weight, bias); // (N, out)
        if (x.dim() == 2) return y;
        s[s.length - 1] = out;
        return Ops.reshape(y, s);
    }

    /** {@link #forward} for inference: in (N, in) -> out (N, out). */
    public void lower(PlanBuilder p, Region in, Region out) { lower(p, in, out, PlanOp.Epilogue.NONE); }

    /** The same, then the epilogue on each output tile (GELU, or a gated residual add: {@link #forwardAdd}). */
    public void lower(PlanBuilder p, Region in, Region out, PlanOp.Epilogue epilogue) {
        p.add(new PlanOp.Linear(weight, bias, in, out, epilogue));
    }

    /** residual + forward(x), residual shaped like the output: see {@link #forwardAdd(Tensor, Tensor, Tensor)}. */
    public Tensor forwardAdd(Tensor x, Tensor residual) { return forwardAdd(x, residual, null); }

    /**
     * residual + gate * forward(x), adaLN-Zero's gated residual: gate (B, 1, out) (or any (B, ..., out) with one
     * row per example) scales the output of example b, whose rows are the output's rows b*T .. b*T + T - 1; null:
     * no gate. With a gradient recorded {@code Ops.add(residual, Ops.mul(gate, forward(x)))}; without, the
     * lowering ({@link #lower}), the add formed on each output tile (the same bits).
     */
    public Tensor forwardAdd(Tensor x, Tensor residual, Tensor gate) {
        if (Grad.enabled()) return Ops.add(residual, gate == null ? forward(x) : Ops.mul(gate, forward(x)));
        requireInput(x);
        int[] s = x.shape();
        s[s.length - 1] = out;
        checkResidual("Linear(" + in + " -> " + out + ").forwardAdd", s, residual, gate);
        return Inference.run(s[0], s, (p, r, y) -> lower(p, r[0], y, new PlanOp.Epilogue.GatedAdd(r[1], gate == null ? null : r[2])),
                gate == null ? new Tensor[]{x, residual} : new Tensor[]{x, residual, gate});
    }

    /** The shapes a residual block's forwardAdd takes: residual like the output, gate one row per example (or null). */
    static void checkResidual(String who, int[] outShape, Tensor residual, Tensor gate) {
        int d = outShape[outShape.length - 1];
        if (!java.util.Arrays.equals(outShape, residual.shape()))
            throw new IllegalArgumentException(who + ": residual " + Shape.str(residual.shape()) + " must have the output's shape " + Shape.str(outShape));
        if (gate != null && (gate.dim() < 1 || gate.size(-1) != d || gate.dim() != outShape.length || gate.size(0) != outShape[0]
                || gate.numel() != outShape[0] * d))
            throw new IllegalArgumentException(who + ": gate " + Shape.str(gate.shape()) + " must be one row of " + d
                    + " per example, like (" + outShape[0] + ", 1, " + d + ") for output " + Shape.str(outShape));
    }

    private void requireInput(Tensor x) {
        if (x.dim() < 1 || x.size(-1) != in)
            throw new IllegalArgumentException("Linear(" + in + " -> " + out + "): input " + Shape.str(x.shape())
                    + " must end in " + in + " features");
    }

    @Override
    protected String extraRepr() { return "in=" + in + ", out=" + out + ", bias=" + (bias != null); }
}
