// Example: the engine's tensors and reverse-mode autograd used directly, ending with logistic regression fitted by AdamW.
package dev.biflow.samples;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Ops;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.optim.AdamW;

import java.io.PrintStream;
import java.util.List;
import java.util.Locale;

/**
 * <b>What it shows.</b> The engine ({@code dev.biflow.engine}) without any model on top:
 * <ol>
 *   <li><b>tensors and ops</b>: {@link Tensor#of}, elementwise ops with broadcasting, matmul,
 *       reductions (methods on Tensor are shortcuts for the static {@link Ops});</li>
 *   <li><b>backward()</b>: mark leaves with {@code requiresGrad(true)}, compute a scalar, call
 *       {@code backward()}, read each leaf's {@code grad()}; checked against the closed form;</li>
 *   <li><b>gradients w.r.t. inputs</b>: {@link Grad#grad} returns d(out)/d(inputs) without
 *       touching any leaf's {@code .grad} (the flows use it for grad_x log p(x));</li>
 *   <li><b>a no-grad scope</b>: inside {@code try (var ng = Grad.noGrad())} ops record no graph
 *       (inference, sampling, evaluation);</li>
 *   <li><b>fitting</b>: logistic regression on two Gaussian blobs, parameters as plain tensors,
 *       optimised with {@link AdamW}. (Models built from {@code dev.biflow.engine.nn} modules work
 *       the same way: pass {@code module.parameters()} to the optimizer; see Toy2DFlow.)</li>
 * </ol>
 *
 * <p><b>How to run</b> (from the repository root; about a second):
 * <pre>
 *   samples/run.sh AutogradBasics
 * </pre>
 */
public final class AutogradBasics {
    private AutogradBasics() {}

    /**
     * Section 2: L = sum(w * x^2) for x, w of the same shape, both leaves with requiresGrad.
     * Returns {L, dL/dx, dL/dw} as computed by backward(); the closed form is dL/dx = 2 w x, dL/dw = x^2.
     */
    public static Tensor[] backwardExample(Tensor x, Tensor w) {
        x.requiresGrad(true);
        w.requiresGrad(true);
        Tensor loss = w.mul(x.square()).sum(); // a scalar (shape ()) that remembers how it was made
        loss.backward();                       // reverse sweep: every leaf that needs a gradient gets .grad
        return new Tensor[]{loss, x.grad(), w.grad()};
    }

    /**
     * Section 3: y = sum(tanh(x)); returns dy/dx via {@link Grad#grad}, closed form 1 - tanh(x)^2.
     * Grad.grad hands the gradient back instead of accumulating it into x.grad().
     */
    public static Tensor inputGradient(Tensor x) {
        x.requiresGrad(true); // so the ops record a graph from x
        Tensor y = x.tanh().sum();
        return Grad.grad(y, null, x)[0]; // null seed: y is a scalar, seed 1
    }

    /** The result of {@link #fitLogistic}. */
    public record Fit(Tensor weight, Tensor bias, double initialLoss, double finalLoss, double accuracy) {}

    /**
     * Section 5: logistic regression p(y = 1 | x) = sigmoid(x w^T + b) on n points from two
     * Gaussian blobs (class 0 around (-1, -1), class 1 around (1, 1), std 0.8), fitted by
     * minimising the mean binary cross-entropy with AdamW.
     */
    public static Fit fitLogistic(int n, int steps, long seed, PrintStream log) {
        Rng rng = new Rng(seed);
        float[] xs = new float[2 * n], ys = new float[n];
        for (int i = 0; i < n; i++) {
            int label = i % 2;
            float centre = label == 1 ? 1f : -1f;
            xs[2 * i] = centre + 0.8f * (float) rng.nextGaussian();
            xs[2 * i + 1] = centre + 0.8f * (float) rng.nextGaussian();
            ys[i] = label;
        }
        Tensor x = Tensor.of(xs, n, 2), y = Tensor.of(ys, n, 1);

        // Parameters are ordinary tensors marked as leaves that need gradients.
        Tensor weight = Tensor.zeros(1, 2).requiresGrad(true); // (out, in), as nn.Linear stores it
        Tensor bias = Tensor.zeros(1).requiresGrad(true);
        AdamW opt = new AdamW(List.of(weight, bias), 0.1, 0.9, 0.999, 1e-8, 0.0);

        double initial = Double.NaN, last = Double.NaN;
        for (int s = 0; s <= steps; s++) {
            Tensor logits = Ops.linear(x, weight, bias);  // (n, 1) = x w^T + b
            // BCE with logits: mean(softplus(z) - y z), softplus(z) = log(1 + exp(z))
            Tensor loss = logits.exp().add(1f).log().sub(y.mul(logits)).mean();
            if (s == 0) initial = loss.item();
            last = loss.item();
            if (log != null && s % Math.max(1, steps / 5) == 0)
                log.printf(Locale.ROOT, "  step %4d  loss %.4f%n", s, last);
            if (s == steps) break; // the last iteration only measures
            opt.zeroGrad();
            loss.backward();
            opt.step();
        }

        double correct = 0;
        try (var ng = Grad.noGrad()) { // evaluation: no graph needed
            float[] p = Ops.linear(x, weight, bias).sigmoid().data();
            for (int i = 0; i < n; i++) if ((p[i] > 0.5f) == (ys[i] == 1f)) correct++;
        }
        return new Fit(weight.detach(), bias.detach(), initial, last, correct / n);
    }

    public static void main(String[] args) {
        PrintStream out = System.out;

        out.println("== 1. tensors and ops");
        Tensor a = Tensor.of(new float[]{1, 2, 3, 4, 5, 6}, 2, 3);   // values, then the shape
        Tensor b = Tensor.of(new float[]{10, 20, 30}, 3);             // broadcasts along a's rows
        out.println("a = " + a);                                      // toString prints shape and values
        out.println("a + b (broadcast) = " + a.add(b));
        out.println("a @ a^T = " + a.matmul(a.transpose(0, 1)));
        out.println("sum over axis 1 = " + a.sum(1, false));
        out.println("mean = " + a.mean().item());                     // item(): the value of a 1-element tensor

        out.println("\n== 2. backward(): L = sum(w * x^2)");
        Tensor x = Tensor.of(new float[]{1, -2, 3}, 3), w = Tensor.of(new float[]{0.5f, 2, -1}, 3);
        Tensor[] r = backwardExample(x, w);
        out.println("L     = " + r[0].item());
        out.println("dL/dx = " + values(r[1]) + "   closed form 2 w x = " + values(w.mul(x).mul(2f)));
        out.println("dL/dw = " + values(r[2]) + "   closed form x^2   = " + values(x.square()));
        out.println("(gradients accumulate across backward() calls: clear them with zeroGrad() first)");

        out.println("\n== 3. Grad.grad: dy/dx of y = sum(tanh(x)), returned rather than accumulated");
        Tensor u = Tensor.of(new float[]{-1, 0, 0.5f, 2}, 4);
        Tensor du = inputGradient(u);
        out.println("dy/dx = " + values(du) + "   closed form 1 - tanh(x)^2 = " + values(Ops.rsub(1f, u.tanh().square())));
        out.println("u.grad() after Grad.grad: " + u.grad() + " (untouched)");

        out.println("\n== 4. no-grad scope");
        Tensor withGraph = w.mul(x);
        Tensor without;
        try (var ng = Grad.noGrad()) {
            without = w.mul(x);
        }
        out.println("w * x records a graph: " + withGraph.needsGrad() + "; inside Grad.noGrad(): " + without.needsGrad());

        out.println("\n== 5. logistic regression with AdamW (200 points, two blobs)");
        Fit fit = fitLogistic(200, 100, 42, out);
        out.printf(Locale.ROOT, "loss %.4f -> %.4f, training accuracy %.1f%%%n", fit.initialLoss(), fit.finalLoss(), 100 * fit.accuracy());
        out.println("weight = " + values(fit.weight()) + ", bias = " + values(fit.bias()));
    }

    /** A tensor's values on one line, e.g. [1.0000, -8.0000, -6.0000]. */
    static String values(Tensor t) {
        StringBuilder sb = new StringBuilder("[");
        float[] d = t.data();
        for (int i = 0; i < d.length; i++) sb.append(i == 0 ? "" : ", ").append(String.format(Locale.ROOT, "%.4f", d[i]));
        return sb.append(']').toString();
    }
}
