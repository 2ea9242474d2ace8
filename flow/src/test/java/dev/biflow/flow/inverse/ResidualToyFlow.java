// A frozen 2-D test flow without a closed-form inverse: residual blocks x + c tanh(A x + b) with Lip < 1 (i-ResNet style).
package dev.biflow.flow.inverse;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.nn.Init;
import dev.biflow.engine.nn.Module;

import java.util.ArrayList;
import java.util.List;

/**
 * x_{k+1} = x_k + 0.6 tanh(A_k x_k + b_k) on vectors (B, 2), one token of 2 values. Each A_k is
 * scaled to spectral norm 1.5 (so the residual branch has Lipschitz constant 0.9), so every block is a contraction-perturbed identity and invertible
 * (its inverse exists but only by fixed-point iteration): the kind of forward model BiFlow says needs
 * no analytical inverse. The trajectory is what the backward model aligns to.
 */
final class ResidualToyFlow extends Module implements FrozenFlow {
    final int blocks;
    final List<Tensor> a = new ArrayList<>(), b = new ArrayList<>();

    ResidualToyFlow(int blocks, long seed) {
        this.blocks = blocks;
        Rng r = new Rng(seed);
        for (int k = 0; k < blocks; k++) {
            Tensor ak = Init.normal(Tensor.zeros(2, 2), r, 0, 1);
            float[] m = ak.data();
            // spectral norm of a 2x2 matrix: sqrt of the largest eigenvalue of M^T M
            double p = m[0] * m[0] + m[2] * m[2], q = m[0] * m[1] + m[2] * m[3], s = m[1] * m[1] + m[3] * m[3];
            double top = Math.sqrt((p + s) / 2 + Math.sqrt((p - s) * (p - s) / 4 + q * q));
            for (int i = 0; i < 4; i++) m[i] *= (float) (1.5 / top); // Lip(0.6 tanh(A x + b)) <= 0.6 * 1.5 = 0.9 < 1
            a.add(registerParameter("a" + k, ak));
            b.add(registerParameter("b" + k, Init.normal(Tensor.zeros(2), r, 0, 0.5)));
        }
    }

    public int tokens() { return 1; }
    public int tokenDim() { return 2; }
    public int blocks() { return blocks; }
    public int numClasses() { return 0; }
    public int[] exampleShape() { return new int[]{2}; }
    public int[] imageGeometry() { return null; }
    public Tensor toTokens(Tensor x) { return Ops.reshape(x, x.size(0), 1, 2); }
    public Tensor fromTokens(Tensor t) { return Ops.reshape(t, t.size(0), 2); }

    public List<Tensor> trajectory(Tensor x, int[] y) {
        try (var ng = Grad.noGrad()) {
            List<Tensor> out = new ArrayList<>();
            Tensor h = x;
            out.add(toTokens(h));
            for (int k = 0; k < blocks; k++) {
                h = Ops.add(h, Ops.mulScalar(Ops.tanh(Ops.add(Ops.matmul(h, a.get(k), false, true), b.get(k))), 0.6f));
                out.add(toTokens(h));
            }
            return out;
        }
    }

    public Tensor priorVar() { return Tensor.ones(1, 2); }
    public Tensor exactInverse(Tensor eps, int[] y, float w) { throw new UnsupportedOperationException("no closed-form inverse"); }
    public Tensor scoreDenoise(Tensor x, int[] y, float sigma) { throw new UnsupportedOperationException("no density"); }
    public Module module() { return this; }
    public String describe() { return "{\"residual_toy_blocks\": " + blocks + "}"; }
}
