// The frozen forward model F as the backward model sees it: a token trajectory, a prior, an exact inverse and a score.
package dev.biflow.flow.inverse;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.nn.Module;
import dev.biflow.flow.model.TarFlow;

import java.util.ArrayList;
import java.util.List;

/**
 * What stage 2 of BiFlow needs from the forward flow F, whatever kind of flow it is. Data x has
 * shape (B, ...) ({@link #exampleShape()}); its tokens are (B, T, C p^2) in natural token order
 * (TARFlow's blocks alternate identity and flipped order, but its block outputs are already put
 * back in natural order, so everything here aligns token t with token t).
 *
 * <p>{@link #trajectory} runs F under {@link Grad#noGrad()}: no graph is recorded, so no
 * gradient can reach F and its parameters are never written.
 */
public interface FrozenFlow {
    /** T. */
    int tokens();

    /** C p^2. */
    int tokenDim();

    /** Number of blocks B (= stages of G). */
    int blocks();

    /** 0 for an unconditional flow. */
    int numClasses();

    /** The shape of one example, e.g. {C, H, W}; {T * C p^2} for vector data. */
    int[] exampleShape();

    /** For image flows {C, H, p}; null for vector data. */
    int[] imageGeometry();

    /** x (B, ...) -> tokens (B, T, C p^2). */
    Tensor toTokens(Tensor x);

    /** tokens (B, T, C p^2) -> x (B, ...). */
    Tensor fromTokens(Tensor tokens);

    /**
     * The forward trajectory x_0 .. x_B, each (B, T, C p^2) in natural token order: x_0 = tokens of
     * x, x_k = block k's output, x_B = z. Labels: -1 is F's unconditional (dropped-label) path; null
     * for an unconditional flow. Computed without a graph.
     */
    List<Tensor> trajectory(Tensor x, int[] y);

    /** The prior variance of z, (T, C p^2): noise is drawn as eps * sqrt(var). */
    Tensor priorVar();

    /** F's exact inverse from standard-normal noise (B, T, C p^2), with F's own guidance of scale w. */
    Tensor exactInverse(Tensor eps, int[] y, float w);

    /** Score-based denoising x + sigma^2 grad_x log p(x) (one backward pass through F). */
    Tensor scoreDenoise(Tensor x, int[] y, float sigma);

    /** F itself (to check that it stays untouched). */
    Module module();

    /** F's config, for messages and checkpoint metadata. */
    String describe();

    /**
     * Throws an IllegalArgumentException naming every difference when G's geometry does not
     * fit this flow's tokens, blocks or classes.
     */
    default void checkMatches(BackwardConfig g) {
        List<String> bad = new ArrayList<>();
        if (g.tokens() != tokens()) bad.add("tokens: G " + g.tokens() + ", F " + tokens());
        if (g.tokenDim() != tokenDim()) bad.add("token dim: G " + g.tokenDim() + ", F " + tokenDim());
        if (g.stages() != blocks()) bad.add("stages/blocks: G " + g.stages() + ", F " + blocks());
        if (g.numClasses() != numClasses()) bad.add("classes: G " + g.numClasses() + ", F " + numClasses());
        int[] geo = imageGeometry();
        if (geo == null && g.isImage()) bad.add("G was built for images, F works on vectors");
        if (geo != null && (g.imageChannels() != geo[0] || g.imageSize() != geo[1] || g.patchSize() != geo[2]))
            bad.add("images: G " + g.imageChannels() + "x" + g.imageSize() + " patch " + g.patchSize() + ", F " + geo[0] + "x" + geo[1] + " patch " + geo[2]);
        if (!bad.isEmpty())
            throw new IllegalArgumentException("the backward model does not fit the forward model (" + String.join("; ", bad)
                    + "); build G with BackwardConfig.forFlow(F's config). G: " + g.toJson() + " F: " + describe());
    }

    /** The adapter for a TARFlow / iTARFlow. */
    static FrozenFlow of(TarFlow f) {
        return new FrozenFlow() {
            @Override public int tokens() { return f.config.tokens(); }
            @Override public int tokenDim() { return f.config.tokenDim(); }
            @Override public int blocks() { return f.config.numBlocks(); }
            @Override public int numClasses() { return f.config.numClasses(); }
            @Override public int[] exampleShape() { return new int[]{f.config.inChannels(), f.config.imgSize(), f.config.imgSize()}; }
            @Override public int[] imageGeometry() { return new int[]{f.config.inChannels(), f.config.imgSize(), f.config.patchSize()}; }
            @Override public Tensor toTokens(Tensor x) { return f.patchify(x); }
            @Override public Tensor fromTokens(Tensor t) { return f.unpatchify(t); }

            @Override
            public List<Tensor> trajectory(Tensor x, int[] y) {
                try (var ng = Grad.noGrad()) {
                    TarFlow.Forward fw = f.forward(x, f.config.conditional() ? y : null);
                    List<Tensor> out = new ArrayList<>(fw.outputs().size() + 1);
                    out.add(f.patchify(x));
                    out.addAll(fw.outputs());
                    return out;
                }
            }

            @Override public Tensor priorVar() { return f.var; }

            @Override
            public Tensor exactInverse(Tensor eps, int[] y, float w) {
                return f.reverse(eps, f.config.conditional() ? y : null, new TarFlow.Guidance(w, false, 1f));
            }

            @Override
            public Tensor scoreDenoise(Tensor x, int[] y, float sigma) {
                return f.denoise(x, f.config.conditional() ? y : null, sigma);
            }

            @Override public Module module() { return f; }
            @Override public String describe() { return f.config.toJson(); }
        };
    }

    /** Checks x against the flow's example shape, naming both. */
    static void checkData(FrozenFlow f, Tensor x, String what) {
        int[] e = f.exampleShape();
        int[] s = x.shape();
        boolean ok = s.length == e.length + 1 && s[0] >= 1;
        for (int i = 0; ok && i < e.length; i++) ok = s[i + 1] == e[i];
        if (!ok)
            throw new IllegalArgumentException(what + " must have shape (B, " + Shape.str(e).replace("(", "").replace(")", "")
                    + "), got " + Shape.str(s));
    }
}
