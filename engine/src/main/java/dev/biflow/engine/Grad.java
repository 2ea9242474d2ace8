// Reverse-mode autograd: graph nodes, the grad-mode switch, and the backward sweep.
package dev.biflow.engine;

import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;

/**
 * The autograd engine. Ops record a {@link Node} on their output: the inputs and a backward
 * closure that reads the output gradient and adds into the inputs' gradient buffers. A
 * backward sweep visits the graph in reverse topological order; intermediate gradients live
 * in a map for the sweep only, leaves accumulate into {@link Tensor#grad()}.
 */
public final class Grad {
    private Grad() {}

    /** The gradient rule of one recorded op. */
    @FunctionalInterface
    public interface Backward {
        /** Adds d(loss)/d(input) into {@code g.of(input)} for each input, given d(loss)/d(out) in gOut. */
        void apply(float[] gOut, Buffers g);
    }

    /** Gradient buffers handed to a backward closure. */
    public interface Buffers {
        /** The buffer to add the gradient of t into (zero-initialised on first use), or null if t needs none. */
        float[] of(Tensor t);
    }

    static final class Node {
        final String name;
        final Tensor[] inputs;
        final Backward fn;

        Node(String name, Tensor[] inputs, Backward fn) {
            this.name = name;
            this.inputs = inputs;
            this.fn = fn;
        }
    }

    private static final ThreadLocal<int[]> DISABLED = ThreadLocal.withInitial(() -> new int[1]);

    /** True when ops record the graph on this thread. */
    public static boolean enabled() { return DISABLED.get()[0] == 0; }

    /** A scope in which ops record nothing: {@code try (var ng = Grad.noGrad()) { ... }}. */
    public static AutoCloseable noGrad() {
        int[] d = DISABLED.get();
        d[0]++;
        return new Scope(d);
    }

    private record Scope(int[] counter) implements AutoCloseable {
        @Override
        public void close() { counter[0]--; }
    }

    /** True if ops on these inputs must record a node. */
    static boolean anyNeedsGrad(Tensor... inputs) {
        if (!enabled()) return false;
        for (Tensor t : inputs) if (t != null && t.needsGrad()) return true;
        return false;
    }

    /**
     * Records out as the result of op {@code name} on inputs with gradient rule fn, when grad mode
     * is on and some input needs a gradient. Returns out.
     */
    public static Tensor record(Tensor out, String name, Backward fn, Tensor... inputs) {
        if (anyNeedsGrad(inputs)) out.node = new Node(name, inputs, fn);
        return out;
    }

    /** The backward sweep into leaves' .grad fields. */
    static void backward(Tensor root, float[] seed) {
        if (!root.needsGrad())
            throw new IllegalStateException("backward: this tensor does not depend on any tensor with requiresGrad(true); "
                    + "mark parameters with requiresGrad(true) and compute outside Grad.noGrad()");
        sweep(root, seed, null);
    }

    /**
     * Gradients of a scalar (or seeded) output with respect to the given inputs, returned rather
     * than accumulated: leaves' .grad fields are left untouched. This is how the flow computes
     * grad_x log p(x) for score-based denoising.
     */
    public static Tensor[] grad(Tensor out, Tensor seed, Tensor... inputs) {
        float[] s;
        if (seed == null) {
            if (out.numel() != 1) throw new IllegalArgumentException("Grad.grad: output has shape " + Shape.str(out.shape) + "; give a seed");
            s = new float[]{1f};
        } else {
            if (!seed.sameShape(out)) throw new IllegalArgumentException("Grad.grad: seed shape " + Shape.str(seed.shape) + " != output shape " + Shape.str(out.shape));
            s = seed.data;
        }
        Tensor[] res = new Tensor[inputs.length];
        if (!out.needsGrad()) {
            for (int i = 0; i < inputs.length; i++) res[i] = Tensor.zerosLike(inputs[i]);
            return res;
        }
        Map<Tensor, float[]> got = sweep(out, s, inputs);
        for (int i = 0; i < inputs.length; i++) {
            float[] g = got.get(inputs[i]);
            res[i] = g == null ? Tensor.zerosLike(inputs[i]) : new Tensor(g.clone(), inputs[i].shape());
        }
        return res;
    }

    private static Map<Tensor, float[]> sweep(Tensor root, float[] seed, Tensor[] targets) {
        List<Tensor> order = topo(root);
        IdentityHashMap<Tensor, float[]> grads = new IdentityHashMap<>();
        IdentityHashMap<Tensor, Boolean> targetSet = null;
        if (targets != null) {
            targetSet = new IdentityHashMap<>();
            for (Tensor t : targets) targetSet.put(t, true);
        }
        grads.put(root, seed.clone());
        final IdentityHashMap<Tensor, Boolean> ts = targetSet;
        Buffers buffers = t -> {
            if (!t.needsGrad() && (ts == null || !ts.containsKey(t))) return null;
            if (ts == null && t.node == null) {
                // a leaf: accumulate straight into its .grad
                if (t.grad == null) t.grad = new float[t.data.length];
                return t.grad;
            }
            return grads.computeIfAbsent(t, k -> new float[k.data.length]);
        };
        for (int i = order.size() - 1; i >= 0; i--) {
            Tensor t = order.get(i);
            float[] g = t == root && ts == null && t.node == null ? null : grads.get(t);
            if (t.node == null) {
                if (t == root && ts == null) { // backward() on a leaf itself
                    if (t.grad == null) t.grad = new float[t.data.length];
                    for (int j = 0; j < seed.length; j++) t.grad[j] += seed[j];
                }
                continue;
            }
            if (g == null) continue;
            t.node.fn.apply(g, buffers);
            if (ts == null || !ts.containsKey(t)) grads.remove(t); // free as we go
        }
        return grads;
    }

    /** Reverse-postorder of the graph under root, iterative so deep graphs do not overflow the stack. */
    private static List<Tensor> topo(Tensor root) {
        List<Tensor> order = new ArrayList<>();
        IdentityHashMap<Tensor, Boolean> seen = new IdentityHashMap<>();
        ArrayList<Tensor> stack = new ArrayList<>();
        ArrayList<Integer> next = new ArrayList<>();
        stack.add(root);
        next.add(0);
        seen.put(root, true);
        while (!stack.isEmpty()) {
            int top = stack.size() - 1;
            Tensor t = stack.get(top);
            int k = next.get(top);
            Tensor[] in = t.node == null ? new Tensor[0] : t.node.inputs;
            if (k < in.length) {
                next.set(top, k + 1);
                Tensor c = in[k];
                if (c != null && c.needsGrad() && !seen.containsKey(c)) {
                    seen.put(c, true);
                    stack.add(c);
                    next.add(0);
                }
            } else {
                order.add(t);
                stack.remove(top);
                next.remove(top);
            }
        }
        return order;
    }
}
