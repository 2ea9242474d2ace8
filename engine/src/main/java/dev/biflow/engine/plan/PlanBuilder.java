// Builds a Plan: allocates arena regions (a stack: temporaries are released when a layer is lowered) and checks each op.
package dev.biflow.engine.plan;

import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;

import java.util.ArrayList;
import java.util.List;

/**
 * The receiver of {@code lower(PlanBuilder, in, out)}. Regions come from a stack over one arena: a layer
 * marks it ({@link #mark}), allocates its temporaries, adds its ops and releases them ({@link #release}),
 * so the arena holds the widest layer's temporaries once, not every layer's. Every op is checked when it is
 * added (shapes, regions inside what was allocated, outputs that must not overlap inputs), so a wrong
 * lowering fails while the plan is built, with the op named, not while it runs.
 */
public final class PlanBuilder {
    private final List<PlanOp> ops = new ArrayList<>();
    private final List<Integer> externals = new ArrayList<>();
    private final int batch;
    private int top, size;

    /** A plan for batches of exactly {@code batch} examples (a region of B T rows holds T tokens per example). */
    public PlanBuilder(int batch) {
        if (batch < 1) throw new IllegalArgumentException("PlanBuilder: batch must be >= 1, got " + batch);
        this.batch = batch;
    }

    /** The examples per run: a layer that needs the tokens per example (attention) divides its rows by it. */
    public int batch() { return batch; }

    /** rows x cols contiguous floats on top of the stack. */
    public Region alloc(int rows, int cols) {
        long n = (long) rows * cols;
        if (rows < 0 || cols < 0 || top + n > Integer.MAX_VALUE - 8)
            throw new IllegalArgumentException("PlanBuilder.alloc(" + rows + ", " + cols + "): the arena would exceed one array");
        Region r = Region.of(top, rows, cols);
        top += (int) n;
        size = Math.max(size, top);
        return r;
    }

    /**
     * rows x cols contiguous floats of an array bound when the plan runs (the next buf: 1, 2, ...), not of the
     * arena: a tensor the plan reads, or the array it writes its output into.
     */
    public Region external(int rows, int cols) {
        if (rows < 0 || cols < 0 || (long) rows * cols > Integer.MAX_VALUE - 8)
            throw new IllegalArgumentException("PlanBuilder.external(" + rows + ", " + cols + "): does not fit one array");
        externals.add(rows * cols);
        return new Region(externals.size(), 0, rows, cols, cols);
    }

    /** The stack's top, for {@link #release}. */
    public int mark() { return top; }

    /** Frees every region allocated since mark (their floats are reused by later regions). */
    public void release(int mark) {
        if (mark < 0 || mark > top) throw new IllegalArgumentException("PlanBuilder.release(" + mark + "): not a mark below the top " + top);
        top = mark;
    }

    /** Adds an op after checking it; returns this. */
    public PlanBuilder add(PlanOp op) {
        check(op);
        ops.add(op);
        return this;
    }

    public Plan build() { return new Plan(ops, size, batch, externals); }

    // ---------------------------------------------------------------- checks

    private void check(PlanOp op) {
        String what = op.getClass().getSimpleName();
        switch (op) {
            case PlanOp.Linear l -> {
                int[] w = l.weight().shape();
                inside(what, l.x(), l.y());
                if (w.length != 2 || w[1] != l.x().cols() || w[0] != l.y().cols() || l.x().rows() != l.y().rows())
                    fail(what, "weight " + Shape.str(w) + " must be (out, in) for x " + dims(l.x()) + " -> y " + dims(l.y()));
                if (l.bias() != null && l.bias().numel() != w[0]) fail(what, "bias " + Shape.str(l.bias().shape()) + " must have " + w[0] + " values");
                disjoint(what, l.x(), l.y());
                if (l.epilogue() instanceof PlanOp.Epilogue.GatedAdd g) {
                    inside(what, g.residual());
                    same(what, g.residual(), l.y());
                    disjoint(what, g.residual(), l.y());
                    if (g.gate() != null) {
                        inside(what, g.gate());
                        groups(what, g.gate(), l.y());
                        disjoint(what, g.gate(), l.y());
                    }
                }
            }
            case PlanOp.LayerNorm n -> {
                inside(what, n.x(), n.y());
                same(what, n.x(), n.y());
                if (n.weight() != null && n.weight().numel() != n.x().cols()) fail(what, "weight must have " + n.x().cols() + " values");
                if (n.bias() != null && n.bias().numel() != n.x().cols()) fail(what, "bias must have " + n.x().cols() + " values");
            }
            case PlanOp.SelfAttention a -> {
                inside(what, a.qkv(), a.out());
                int w = a.qkv().cols();
                if (a.heads() < 1 || w % (3 * a.heads()) != 0 || w == 0) fail(what, "qkv " + dims(a.qkv()) + " must end in 3 x heads (" + a.heads() + ") x head dim");
                if (a.batch() < 1 || a.qkv().rows() % a.batch() != 0) fail(what, "qkv's " + a.qkv().rows() + " rows must be batch (" + a.batch() + ") x tokens");
                if (!a.qkv().contiguous() || !a.out().contiguous()) fail(what, "qkv and out must be contiguous");
                if (a.qkScale() != 1f && a.qkv().buf() != 0) fail(what, "q and k are scaled in place: qkv must be an arena temporary, not a bound array");
                if (a.out().rows() != a.qkv().rows() || a.out().cols() != w / 3) fail(what, "out " + dims(a.out()) + " must be (" + a.qkv().rows() + ", " + w / 3 + ")");
                disjoint(what, a.qkv(), a.out());
            }
            case PlanOp.Modulate m -> {
                inside(what, m.x(), m.shift(), m.scale(), m.y());
                same(what, m.x(), m.y());
                groups(what, m.shift(), m.x());
                same(what, m.shift(), m.scale());
            }
            case PlanOp.Add a -> {
                inside(what, a.a(), a.b(), a.y());
                same(what, a.a(), a.b());
                same(what, a.a(), a.y());
            }
            case PlanOp.AddTable a -> {
                inside(what, a.a(), a.y());
                same(what, a.a(), a.y());
                int[] t = a.table().shape();
                if (t.length != 2 || t[1] != a.a().cols() || t[0] < 1 || a.a().rows() % t[0] != 0)
                    fail(what, "table " + Shape.str(t) + " must be (T, " + a.a().cols() + ") with T dividing the " + a.a().rows() + " rows");
            }
            case PlanOp.Gather g -> {
                inside(what, g.ids(), g.y());
                int[] t = g.table().shape();
                if (g.ids().cols() != 1 || g.ids().rows() != g.y().rows() || t.length != 2 || t[1] != g.y().cols())
                    fail(what, "ids " + dims(g.ids()) + " must be (N, 1) and table " + Shape.str(t) + " (V, " + g.y().cols() + ") for y " + dims(g.y()));
                disjoint(what, g.ids(), g.y());
            }
            case PlanOp.Silu s -> {
                inside(what, s.x(), s.y());
                same(what, s.x(), s.y());
            }
            case PlanOp.AddRow a -> {
                inside(what, a.a(), a.y());
                same(what, a.a(), a.y());
                int[] t = a.table().shape();
                if (t.length != 2 || t[1] != a.a().cols() || a.row() < 0 || a.row() >= t[0])
                    fail(what, "row " + a.row() + " of table " + Shape.str(t) + ": the table must be (T, " + a.a().cols() + ") and the row one of its T");
            }
            case PlanOp.DecodeAttention a -> {
                Region q = a.qkv(), k = a.keys(), v = a.values(), o = a.out();
                inside(what, q, k, v, o);
                int w = q.cols(), b = q.rows(), h = a.heads();
                if (h < 1 || w == 0 || w % (3 * h) != 0) fail(what, "qkv " + dims(q) + " must end in 3 x heads (" + h + ") x head dim");
                int d = w / 3, dh = d / h, t = k.cols();
                if (k.rows() != b * h * dh) fail(what, "keys " + dims(k) + " must be (batch x heads x head dim = " + b * h * dh + ", T)");
                if (v.rows() != b * h * t || v.cols() != dh || !v.contiguous())
                    fail(what, "values " + dims(v) + " must be contiguous (batch x heads x T = " + b * h * t + ", " + dh + ")");
                if (a.step() < 0 || a.step() >= t) fail(what, "step " + a.step() + " is not a token of the cache's " + t);
                if (o.rows() != b || o.cols() != d) fail(what, "out " + dims(o) + " must be (" + b + ", " + d + ")");
                if (a.qkScale() != 1f && q.buf() != 0) fail(what, "q and k are scaled in place: qkv must be an arena temporary, not a bound array");
                disjoint(what, q, k);
                disjoint(what, q, v);
                disjoint(what, q, o);
                disjoint(what, k, v);
                disjoint(what, k, o);
                disjoint(what, v, o);
                if (a.scaleAt() != null) {
                    inside(what, a.scaleAt());
                    if (a.scaleAt().rows() != 1 || a.scaleAt().cols() != 1) fail(what, "scaleAt " + dims(a.scaleAt()) + " must be one float (1, 1)");
                }
            }
            case PlanOp.CouplingStep c -> {
                Region pr = c.params(), x = c.x();
                inside(what, pr, x);
                if (pr.rows() != x.rows() || pr.cols() != 2 * x.cols()) fail(what, "params " + dims(pr) + " must be (" + x.rows() + ", 2 x " + x.cols() + ") for x " + dims(x));
                disjoint(what, pr, x);
                if ((c.uncond() == null) != (c.gain() == null)) fail(what, "guidance needs both the unconditional params and the gain (or neither)");
                if (c.uncond() != null) {
                    inside(what, c.uncond(), c.gain());
                    same(what, c.uncond(), pr);
                    disjoint(what, c.uncond(), x);
                    if (c.gain().rows() != 1 || c.gain().cols() != 1) fail(what, "gain " + dims(c.gain()) + " must be one float (1, 1)");
                    disjoint(what, c.gain(), x);
                }
                if (c.bound() == null) fail(what, "bound is null: pass Bound.NONE");
                if (c.bound() != PlanOp.Bound.NONE && !(c.clip() > 0)) fail(what, "the bound's constant must be > 0, got " + c.clip());
            }
        }
    }

    private void inside(String what, Region... rs) {
        for (Region r : rs) {
            if (r.buf() == 0 && r.end() > top) fail(what, "region " + r + " is outside the allocated arena (" + top + " floats): allocate it first");
            if (r.buf() > externals.size() || (r.buf() > 0 && r.end() > externals.get(r.buf() - 1)))
                fail(what, "region " + r + " is outside the bound arrays: make it with external()");
        }
    }

    private static void same(String what, Region a, Region b) {
        if (a.rows() != b.rows() || a.cols() != b.cols()) fail(what, dims(a) + " and " + dims(b) + " must have one shape");
    }

    private static void groups(String what, Region perGroup, Region rows) {
        if (perGroup.cols() != rows.cols() || perGroup.rows() < 1 || rows.rows() % perGroup.rows() != 0)
            fail(what, dims(perGroup) + " must be one row of " + rows.cols() + " per group of " + dims(rows) + "'s rows");
    }

    private static void disjoint(String what, Region a, Region b) {
        if (a.buf() == b.buf() && a.off() < b.end() && b.off() < a.end()) fail(what, "regions " + a + " and " + b + " overlap: an output must not overwrite an input");
    }

    private static String dims(Region r) { return "(" + r.rows() + ", " + r.cols() + ")"; }

    private static void fail(String what, String msg) {
        throw new IllegalArgumentException("plan op " + what + ": " + msg);
    }
}
