// The base of every layer: named parameters, buffers and child modules, PyTorch-style state dicts, train/eval.
package dev.biflow.engine.nn;

import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Consumer;

/**
 * A module owns, in registration order, its parameters (leaf tensors with
 * {@code requiresGrad(true)}), its buffers (tensors without gradient that belong in a
 * checkpoint, such as TARFlow's {@code var}) and its child modules. Names compose with dots
 * exactly as PyTorch's {@code state_dict()} does ({@code blocks.0.attn_blocks.1.attention.qkv.weight}),
 * so a checkpoint written by PyTorch maps onto the same tree by name.
 *
 * <p>Order of {@link #stateDict()}: a module's own parameters, then its own persistent buffers,
 * then each child's entries in registration order (PyTorch's order). Subclasses register in
 * their constructor in the same order as the PyTorch class they mirror.
 *
 * <p>Modules do not share one forward signature; those with a single tensor input override
 * {@link #forward(Tensor)} so that they can sit in a {@link Sequential}.
 */
public abstract class Module {
    private final LinkedHashMap<String, Tensor> params = new LinkedHashMap<>();
    private final LinkedHashMap<String, Tensor> buffers = new LinkedHashMap<>();
    private final Set<String> nonPersistent = new LinkedHashSet<>();
    private final LinkedHashMap<String, Module> children = new LinkedHashMap<>();
    private boolean training = true;

    // ---------------------------------------------------------------- registration

    /** Registers t as a parameter named {@code name}, marks it requiresGrad(true), returns it. */
    protected final Tensor registerParameter(String name, Tensor t) {
        checkName(name);
        if (!t.isLeaf())
            throw new IllegalArgumentException(getClass().getSimpleName() + ": parameter '" + name
                    + "' must be a leaf tensor; pass a fresh tensor or detach() it first");
        t.requiresGrad(true);
        params.put(name, t);
        return t;
    }

    /** Registers a buffer that is saved in the state dict. */
    protected final Tensor registerBuffer(String name, Tensor t) { return registerBuffer(name, t, true); }

    /**
     * Registers a buffer; a non-persistent one (like ml-tarflow's {@code attn_mask}) is left out
     * of {@link #stateDict()} and not expected by {@link #loadStateDict}.
     */
    protected final Tensor registerBuffer(String name, Tensor t, boolean persistent) {
        checkName(name);
        buffers.put(name, t);
        if (!persistent) nonPersistent.add(name);
        return t;
    }

    /** Registers a child module under {@code name}; returns it. */
    protected final <M extends Module> M registerModule(String name, M m) {
        checkName(name);
        if (m == this) throw new IllegalArgumentException("a module cannot be its own child ('" + name + "')");
        children.put(name, m);
        return m;
    }

    private void checkName(String name) {
        if (name == null || name.isEmpty() || name.contains("."))
            throw new IllegalArgumentException(getClass().getSimpleName() + ": name '" + name
                    + "' is not allowed; names are non-empty and have no dots (dots join names in state dicts)");
        if (params.containsKey(name) || buffers.containsKey(name) || children.containsKey(name))
            throw new IllegalArgumentException(getClass().getSimpleName() + ": '" + name + "' is already registered");
    }

    // ---------------------------------------------------------------- forward

    /**
     * The single-input forward pass. Modules whose forward needs more than one tensor define
     * their own methods and leave this one throwing.
     */
    public Tensor forward(Tensor x) {
        throw new UnsupportedOperationException(getClass().getSimpleName()
                + " has no single-input forward(Tensor); call its own forward methods");
    }

    // ---------------------------------------------------------------- traversal

    /** This module's own parameters (not its children's), by local name. */
    public final Map<String, Tensor> localParameters() { return Collections.unmodifiableMap(params); }

    /** This module's own buffers, by local name. */
    public final Map<String, Tensor> localBuffers() { return Collections.unmodifiableMap(buffers); }

    /** Direct children, by local name, in registration order. */
    public final Map<String, Module> children() { return Collections.unmodifiableMap(children); }

    /** All parameters of the tree with dotted names, in state-dict order. */
    public final LinkedHashMap<String, Tensor> namedParameters() {
        LinkedHashMap<String, Tensor> out = new LinkedHashMap<>();
        collect("", out, true, false);
        return out;
    }

    /** All buffers of the tree (persistent or not) with dotted names. */
    public final LinkedHashMap<String, Tensor> namedBuffers() {
        LinkedHashMap<String, Tensor> out = new LinkedHashMap<>();
        collect("", out, false, true);
        return out;
    }

    /**
     * Parameters and persistent buffers with dotted names, in PyTorch's order. The tensors are
     * the live ones (not copies): copy them before saving if training continues meanwhile.
     */
    public final LinkedHashMap<String, Tensor> stateDict() {
        LinkedHashMap<String, Tensor> out = new LinkedHashMap<>();
        collectState("", out);
        return out;
    }

    private void collect(String prefix, Map<String, Tensor> out, boolean p, boolean b) {
        if (p) for (var e : params.entrySet()) out.put(prefix + e.getKey(), e.getValue());
        if (b) for (var e : buffers.entrySet()) out.put(prefix + e.getKey(), e.getValue());
        for (var e : children.entrySet()) e.getValue().collect(prefix + e.getKey() + ".", out, p, b);
    }

    private void collectState(String prefix, Map<String, Tensor> out) {
        for (var e : params.entrySet()) out.put(prefix + e.getKey(), e.getValue());
        for (var e : buffers.entrySet())
            if (!nonPersistent.contains(e.getKey())) out.put(prefix + e.getKey(), e.getValue());
        for (var e : children.entrySet()) e.getValue().collectState(prefix + e.getKey() + ".", out);
    }

    /** All parameters in state-dict order (what an optimizer takes). */
    public final List<Tensor> parameters() { return new ArrayList<>(namedParameters().values()); }

    /** This module and all its descendants with dotted names ("" for this one). */
    public final LinkedHashMap<String, Module> namedModules() {
        LinkedHashMap<String, Module> out = new LinkedHashMap<>();
        collectModules("", out);
        return out;
    }

    private void collectModules(String name, Map<String, Module> out) {
        out.put(name, this);
        for (var e : children.entrySet())
            e.getValue().collectModules(name.isEmpty() ? e.getKey() : name + "." + e.getKey(), out);
    }

    /** Calls fn on every module of the tree, children first (like PyTorch's apply). */
    public final void apply(Consumer<Module> fn) {
        for (Module c : children.values()) c.apply(fn);
        fn.accept(this);
    }

    /** Number of scalar parameters in the tree. */
    public final long parameterCount() {
        long n = 0;
        for (Tensor t : namedParameters().values()) n += t.numel();
        return n;
    }

    // ---------------------------------------------------------------- state dict loading

    /** What a non-strict load left out: keys the model has but the dict lacks, and the reverse. */
    public record LoadResult(List<String> missingKeys, List<String> unexpectedKeys) {}

    /**
     * Copies values from {@code state} into this tree's parameters and persistent buffers, in
     * place (tensors keep their identity, so optimizers holding them stay valid). Everything is
     * checked before anything is written: a shape mismatch is always an error naming the key,
     * the model's shape and the dict's shape; missing or unexpected keys are errors when
     * {@code strict}, and otherwise reported in the result.
     */
    public final LoadResult loadStateDict(Map<String, Tensor> state, boolean strict) {
        LinkedHashMap<String, Tensor> mine = stateDict();
        List<String> missing = new ArrayList<>(), unexpected = new ArrayList<>(), shapeErrors = new ArrayList<>();
        for (var e : mine.entrySet()) {
            Tensor src = state.get(e.getKey());
            if (src == null) { missing.add(e.getKey()); continue; }
            if (!src.sameShape(e.getValue()))
                shapeErrors.add("size mismatch for '" + e.getKey() + "': expected " + Shape.str(e.getValue().shape())
                        + " (this model), found " + Shape.str(src.shape()) + " (state dict)");
        }
        for (String k : state.keySet()) if (!mine.containsKey(k)) unexpected.add(k);
        StringBuilder err = new StringBuilder();
        for (String s : shapeErrors) err.append("\n  ").append(s);
        if (strict) {
            if (!missing.isEmpty()) err.append("\n  missing keys (in the model, not in the state dict): ").append(missing);
            if (!unexpected.isEmpty()) err.append("\n  unexpected keys (in the state dict, not in the model): ").append(unexpected);
        }
        if (!err.isEmpty())
            throw new IllegalArgumentException("loadStateDict into " + getClass().getSimpleName() + " failed:" + err
                    + (strict && shapeErrors.isEmpty() ? "\n  (pass strict=false to load the keys that match)" : ""));
        for (var e : mine.entrySet()) {
            Tensor src = state.get(e.getKey());
            if (src != null) System.arraycopy(src.data(), 0, e.getValue().data(), 0, src.numel());
        }
        return new LoadResult(List.copyOf(missing), List.copyOf(unexpected));
    }

    /** Strict load: every key must match in name and shape. */
    public final void loadStateDict(Map<String, Tensor> state) { loadStateDict(state, true); }

    // ---------------------------------------------------------------- modes and gradients

    /** Sets training mode on the whole tree; returns this. */
    public Module train(boolean on) {
        training = on;
        for (Module c : children.values()) c.train(on);
        return this;
    }

    public final Module train() { return train(true); }

    public final Module eval() { return train(false); }

    public final boolean isTraining() { return training; }

    /** Clears every parameter's gradient. */
    public final void zeroGrad() { for (Tensor t : namedParameters().values()) t.zeroGrad(); }

    /** Turns gradients on or off for every parameter (off freezes a model, as BiFlow stage 2 freezes F). */
    public final Module requiresGrad(boolean on) {
        for (Tensor t : namedParameters().values()) {
            t.requiresGrad(on);
            if (!on) t.zeroGrad();
        }
        return this;
    }

    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder();
        describe(sb, 0);
        return sb.toString();
    }

    /** One line for this module in {@link #toString()}; subclasses add their sizes. */
    protected String extraRepr() { return ""; }

    private void describe(StringBuilder sb, int indent) {
        sb.append(getClass().getSimpleName()).append('(').append(extraRepr());
        if (children.isEmpty()) { sb.append(')'); return; }
        sb.append('\n');
        for (var e : children.entrySet()) {
            sb.append("  ".repeat(indent + 1)).append('(').append(e.getKey()).append("): ");
            e.getValue().describe(sb, indent + 1);
            sb.append('\n');
        }
        sb.append("  ".repeat(indent)).append(')');
    }
}
