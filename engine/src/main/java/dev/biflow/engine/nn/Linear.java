// Fully connected layer y = x W^T + b, weight stored (out, in) as in PyTorch.
package dev.biflow.engine.nn;

import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;

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
    public Tensor forward(Tensor x) { return forwardInto(x, null); }

    /**
     * {@link #forward} written into {@code into} (x.numel() / in * out floats; null: a new array): for
     * inference temporaries held in {@link dev.biflow.engine.kernels.Scratch} arrays, see Ops.linear.
     */
    public Tensor forwardInto(Tensor x, float[] into) { return forwardInto(x, into, false); }

    /** gelu(forward(x)) for inference, into {@code into} (null: a new array), the activation fused into the GEMM (Ops.linearGelu). */
    public Tensor forwardGeluInto(Tensor x, float[] into) { return forwardInto(x, into, true); }

    /**
     * residual + forward(x), residual shaped like the output: in a no-grad scope the add is fused into the
     * GEMM (Ops.linearAdd, the same bits); otherwise the plain {@code Ops.add(residual, forward(x))}.
     */
    public Tensor forwardAdd(Tensor x, Tensor residual) { return forwardAdd(x, residual, null); }

    /**
     * residual + gate * forward(x), adaLN-Zero's gated residual: gate (B, 1, out) (or any (B, ..., out) with one
     * row per example) scales the output of example b, whose rows are the output's rows b*T .. b*T + T - 1; null:
     * no gate. In a no-grad scope fused into the GEMM (same bits); otherwise
     * {@code Ops.add(residual, Ops.mul(gate, forward(x)))}.
     */
    public Tensor forwardAdd(Tensor x, Tensor residual, Tensor gate) {
        if (dev.biflow.engine.Grad.enabled())
            return Ops.add(residual, gate == null ? forward(x) : Ops.mul(gate, forward(x)));
        requireInput(x);
        int[] s = x.shape();
        s[s.length - 1] = out;
        if (!java.util.Arrays.equals(s, residual.shape()))
            throw new IllegalArgumentException("Linear(" + in + " -> " + out + ").forwardAdd: residual " + Shape.str(residual.shape())
                    + " must have the output's shape " + Shape.str(s));
        Tensor g2 = null;
        if (gate != null) {
            if (gate.dim() < 1 || gate.size(-1) != out || gate.dim() != s.length || gate.size(0) != s[0] || gate.numel() != s[0] * out)
                throw new IllegalArgumentException("Linear(" + in + " -> " + out + ").forwardAdd: gate " + Shape.str(gate.shape())
                        + " must be one row of " + out + " per example, like (" + s[0] + ", 1, " + out + ") for output " + Shape.str(s));
            g2 = Ops.reshape(gate, s[0], out);
        }
        Tensor y = Ops.linearAdd(x.dim() == 2 ? x : Ops.reshape(x, -1, in), weight, bias,
                residual.dim() == 2 ? residual : Ops.reshape(residual, -1, out), g2); // (N, out)
        return x.dim() == 2 ? y : Ops.reshape(y, s);
    }

    private Tensor forwardInto(Tensor x, float[] into, boolean gelu) {
        requireInput(x);
        int[] s = x.shape();
        Tensor x2 = x.dim() == 2 ? x : Ops.reshape(x, -1, in);
        Tensor y = gelu ? Ops.linearGelu(x2, weight, bias, into) : Ops.linear(x2, weight, bias, into); // (N, out)
        if (x.dim() == 2) return y;
        s[s.length - 1] = out;
        return Ops.reshape(y, s);
    }

    private void requireInput(Tensor x) {
        if (x.dim() < 1 || x.size(-1) != in)
            throw new IllegalArgumentException("Linear(" + in + " -> " + out + "): input " + Shape.str(x.shape())
                    + " must end in " + in + " features");
    }

    @Override
    protected String extraRepr() { return "in=" + in + ", out=" + out + ", bias=" + (bias != null); }
}
