// Reverse-mode autograd: graph nodes, the grad-mode switch, and the backward sweep.
package dev.biflow.engine;

import java.util.ArrayList;
import java.util.Arrays;
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

        /**
         * Adds gOut (the closure's own output gradient, same length as t) to t's gradient. When t is an
         * intermediate tensor with no gradient yet, the sweep hands gOut over as t's gradient instead of
         * zero-filling a buffer and adding into it (residual adds and reshapes pass their gradient on
         * unchanged). The closure must not write into gOut, and must read it only before writing into
         * any other input's buffer.
         */
        default void add(Tensor t, float[] gOut) {
            float[] d = of(t);
            if (d != null) Ops.addInto(1f, gOut, d);
        }
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
    public static NoGradScope noGrad() {
        int[] d = DISABLED.get();
        d[0]++;
        return new NoGradScope(d);
    }

    /**
     * The handle {@link #noGrad()} returns. Its close() declares no checked exception, so a
     * try-with-resources needs no catch, and closing twice is harmless (a second decrement
     * would leave grad mode off for good on that thread).
     */
    public static final class NoGradScope implements AutoCloseable {
        private final int[] counter;
        private boolean closed;

        private NoGradScope(int[] counter) { this.counter = counter; }

        @Override
        public void close() {
            if (closed) return;
            closed = true;
            counter[0]--;
        }
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
     * grad_x log p(x) for score-based denoising. Inputs need not be marked requiresGrad (data x
     * usually is not); only the part of the graph between out and the inputs is differentiated.
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
        Map<Tensor, float[]> got = sweep(out, s, inputs);
        IdentityHashMap<float[], Boolean> handedOut = new IdentityHashMap<>();
        for (int i = 0; i < inputs.length; i++) {
            float[] g = got.get(inputs[i]);
            if (g == null) { res[i] = Tensor.zerosLike(inputs[i]); continue; }
            // the sweep's buffers are ours to give away; copy only when an input is listed twice
            if (handedOut.put(g, true) != null || g == s) g = g.clone();
            res[i] = new Tensor(g, inputs[i].shape());
        }
        return res;
    }

    private static final Tensor[] NO_INPUTS = new Tensor[0];

    /** Off only in a test that compares against plain accumulation. */
    static boolean HAND_OVER = true;

    /**
     * One reverse sweep. With targets == null, every tensor that needs a gradient gets one and
     * leaves accumulate into .grad. With targets, gradients go into the returned map only, and
     * only the part of the graph between root and the targets runs: a branch that reaches only
     * other leaves (the parameters, when the flow asks for grad_x log p) is skipped, which saves
     * the weight-gradient GEMMs of a whole backward pass.
     */
    private static Map<Tensor, float[]> sweep(Tensor root, float[] seed, Tensor[] targets) {
        List<Tensor> order = topo(root); // post-order: every tensor after the tensors it was made from
        IdentityHashMap<Tensor, float[]> grads = new IdentityHashMap<>();
        IdentityHashMap<Tensor, Boolean> ts = null, needed = null, runs = null;
        if (targets != null) {
            ts = new IdentityHashMap<>();
            for (Tensor t : targets) ts.put(t, true);
            needed = new IdentityHashMap<>(); // tensors whose gradient is wanted or leads to a target
            runs = new IdentityHashMap<>();   // tensors whose gradient rule has to run
            for (Tensor t : order) {
                boolean run = false;
                if (t.node != null)
                    for (Tensor in : t.node.inputs)
                        if (in != null && (ts.containsKey(in) || needed.containsKey(in))) { run = true; break; }
                if (run) runs.put(t, true);
                if (run || ts.containsKey(t)) needed.put(t, true);
            }
        }
        grads.put(root, seed.clone());
        final IdentityHashMap<Tensor, Boolean> tsF = ts, neededF = needed;
        final class SweepBuffers implements Buffers {
            /** The gradient of the node being run, and whether it has been handed to one of its inputs. */
            float[] current;
            boolean handedOver;

            @Override
            public float[] of(Tensor t) {
                if (tsF != null) {
                    // a target reached through a tensor that needs no gradient (data x in grad_x) still gets one
                    if (!neededF.containsKey(t) && !tsF.containsKey(t)) return null;
                    return grads.computeIfAbsent(t, k -> Arena.floats(k.data.length));
                }
                if (!t.needsGrad()) return null;
                if (t.node == null) {
                    // a leaf: accumulate straight into its .grad
                    if (t.grad == null) t.grad = t.freshGrad();
                    return t.grad;
                }
                return grads.computeIfAbsent(t, k -> Arena.floats(k.data.length));
            }

            @Override
            public void add(Tensor t, float[] gOut) {
                // hand over: the node's gradient is dropped after its closure runs, so an intermediate input without a
                // gradient yet can take the array itself; leaves keep their own .grad (it outlives the sweep), targets
                // of Grad.grad are copied out anyway, and the array goes to one input only
                boolean wanted = tsF == null ? t.needsGrad() : neededF.containsKey(t) || tsF.containsKey(t);
                if (HAND_OVER && gOut == current && !handedOver && wanted && t.node != null && gOut.length == t.data.length && !grads.containsKey(t)) {
                    grads.put(t, gOut);
                    handedOver = true;
                    return;
                }
                Buffers.super.add(t, gOut);
            }
        }
        SweepBuffers buffers = new SweepBuffers();
        for (int i = order.size() - 1; i >= 0; i--) {
            Tensor t = order.get(i);
            if (t.node == null) {
                if (t == root && ts == null) { // backward() on a leaf itself
                    if (t.grad == null) t.grad = t.freshGrad();
                    for (int j = 0; j < seed.length; j++) t.grad[j] += seed[j];
                }
                continue;
            }
            if (runs != null && !runs.containsKey(t)) continue;
            float[] g = grads.get(t);
            if (g == null) continue;
            buffers.current = g;
            buffers.handedOver = ts != null && ts.containsKey(t); // a target's gradient is returned: never handed on
            t.node.fn.apply(g, buffers);
            if (ts == null || !ts.containsKey(t)) grads.remove(t); // free as we go
        }
        return grads;
    }

    /** Post-order of the graph under root, iterative so deep graphs do not overflow the stack. */
    private static List<Tensor> topo(Tensor root) {
        List<Tensor> order = new ArrayList<>();
        IdentityHashMap<Tensor, Boolean> seen = new IdentityHashMap<>();
        ArrayList<Tensor> stack = new ArrayList<>();
        int[] next = new int[16]; // next input to visit for each stack entry (unboxed: graphs run to 1e5 nodes)
        stack.add(root);
        seen.put(root, true);
        while (!stack.isEmpty()) {
            int top = stack.size() - 1;
            Tensor t = stack.get(top);
            int k = next[top];
            Tensor[] in = t.node == null ? NO_INPUTS : t.node.inputs;
            if (k < in.length) {
                next[top] = k + 1;
                Tensor c = in[k];
                if (c != null && c.needsGrad() && !seen.containsKey(c)) {
                    seen.put(c, true);
                    stack.add(c);
                    if (top + 1 == next.length) next = Arrays.copyOf(next, next.length * 2);
                    next[top + 1] = 0;
                }
            } else {
                order.add(t);
                stack.remove(top);
            }
        }
        return order;
    }
}
