// Parameter-free activation layers, so they can sit in a Sequential as torch.nn.GELU() does.
package dev.biflow.engine.nn;

import dev.biflow.engine.Ops;
import dev.biflow.engine.Tensor;

/** An elementwise activation as a module (no parameters; occupies an index in a {@link Sequential}). */
public final class Activation extends Module {
    /** The available functions. */
    public enum Kind { GELU, GELU_TANH, SILU, RELU, TANH, SIGMOID, IDENTITY }

    public final Kind kind;

    public Activation(Kind kind) { this.kind = kind; }

    /** Exact (erf) GELU, PyTorch's default. */
    public static Activation gelu() { return new Activation(Kind.GELU); }

    public static Activation geluTanh() { return new Activation(Kind.GELU_TANH); }

    public static Activation silu() { return new Activation(Kind.SILU); }

    public static Activation relu() { return new Activation(Kind.RELU); }

    public static Activation tanh() { return new Activation(Kind.TANH); }

    public static Activation identity() { return new Activation(Kind.IDENTITY); }

    /** Applies the function without building a module. */
    public static Tensor apply(Kind kind, Tensor x) {
        return switch (kind) {
            case GELU -> Ops.gelu(x);
            case GELU_TANH -> Ops.geluTanh(x);
            case SILU -> Ops.silu(x);
            case RELU -> Ops.relu(x);
            case TANH -> Ops.tanh(x);
            case SIGMOID -> Ops.sigmoid(x);
            case IDENTITY -> x;
        };
    }

    @Override
    public Tensor forward(Tensor x) { return apply(kind, x); }

    @Override
    protected String extraRepr() { return kind.name(); }
}
