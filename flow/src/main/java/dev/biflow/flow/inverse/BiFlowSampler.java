// Sampling from a BiFlow pair (F, G): 1-NFE generation, two-pass CFG, score denoising, the exact-inverse baseline, noise-space inpainting.
package dev.biflow.flow.inverse;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;

/**
 * Turns standard-normal noise eps (B, T, C p^2) into data, the way the configured strategy says:
 * <ul>
 *   <li>a backward model G: x = G(eps * sqrt(var) | c, w) in one evaluation (two for two-pass CFG
 *       with w > 0), then, for denoising SCORE, F's score step x + sigma^2 grad log p(x);</li>
 *   <li>EXACT_INVERSE ({@link #exactInverse}): F's serial inverse with F's own guidance, then the
 *       score step when asked for (TARFlow's sampler).</li>
 * </ul>
 * The same eps and labels give directly comparable samples from both paths.
 */
public final class BiFlowSampler {
    public final FrozenFlow flow;
    /** Null for the exact inverse. */
    public final BiFlowModel model;
    public final BackwardConfig.Denoise denoise;
    public final float sigma;
    /** Null: G runs op by op on the active backend; else G's pass is this one (a resident device program). */
    private final Pass resident;

    /**
     * G's one network evaluation run somewhere other than op by op: a resident device program (module flow-opencl's
     * {@code ResidentBiFlow}, G's inference plan on an OpenCL device).
     */
    public interface Pass {
        /** The G it was built from. */
        BiFlowModel model();

        /** What {@code model().sample(eps, y, w)} returns. */
        Tensor sample(Tensor eps, int[] y, float w);
    }

    private BiFlowSampler(FrozenFlow flow, BiFlowModel model, BackwardConfig.Denoise denoise, float sigma) {
        this(flow, model, denoise, sigma, null);
    }

    private BiFlowSampler(FrozenFlow flow, BiFlowModel model, BackwardConfig.Denoise denoise, float sigma, Pass resident) {
        if (denoise == BackwardConfig.Denoise.SCORE && !(sigma > 0))
            throw new IllegalArgumentException("score denoising needs the training noise sigma > 0, got " + sigma);
        if (model == null && denoise == BackwardConfig.Denoise.LEARNED)
            throw new IllegalArgumentException("the exact inverse has no learned denoiser; use denoise none or score");
        this.flow = flow;
        this.model = model;
        this.denoise = denoise;
        this.sigma = sigma;
        this.resident = resident;
    }

    /**
     * The same sampler with G's pass run by a resident device program built from this sampler's G
     * (batches up to its batch size; denoising and everything after G are unchanged). The caller
     * owns and closes the program.
     */
    public BiFlowSampler withResident(Pass r) {
        if (model == null) throw new IllegalStateException("the exact inverse has no backward model G to run on a device");
        if (r.model() != model) throw new IllegalArgumentException("the resident program was built from another G than this sampler's");
        return new BiFlowSampler(flow, model, denoise, sigma, r);
    }

    /** A sampler over G (denoising as G was trained); sigma is the training noise (used by SCORE; may be NaN otherwise). */
    public static BiFlowSampler of(FrozenFlow flow, BiFlowModel g, float sigma) {
        flow.checkMatches(g.config);
        return new BiFlowSampler(flow, g, g.config.denoise(), sigma);
    }

    /** TARFlow's own sampler: exact inverse, optionally followed by score denoising with sigma. */
    public static BiFlowSampler exactInverse(FrozenFlow flow, BackwardConfig.Denoise denoise, float sigma) {
        return new BiFlowSampler(flow, null, denoise, sigma);
    }

    /** eps (B, T, C p^2) standard normal -> data; labels as {@link BiFlowModel#forward}; w the guidance scale. */
    public Tensor sample(Tensor eps, int[] y, float w) {
        checkNoise(eps);
        Tensor x;
        if (model == null) {
            if (!(w >= 0) || Float.isInfinite(w)) throw new IllegalArgumentException("guidance scale w must be finite and >= 0, got " + w);
            x = flow.exactInverse(eps, y, w);
        } else {
            x = resident != null ? resident.sample(eps, y, w) : model.sample(eps, y, w);
        }
        return finish(x, y);
    }

    /** The result of noise-space inpainting: the noise G was given and the image it made. */
    public record Inpainting(Tensor z, Tensor x) {}

    /**
     * Noise-space inpainting: z_known = F(x_partial) (F's output space, no training noise added),
     * z' = M * z_known + (1 - M) * eps * sqrt(var) with eps ~ N(0, I) from rng, then x = G(z').
     * known[t] marks token t (natural order) as known; the known tokens of z' are z_known's bits.
     */
    public Inpainting inpaint(Tensor partial, boolean[] known, int[] y, float w, Rng rng) {
        if (model == null) throw new IllegalArgumentException("noise-space inpainting needs a backward model G");
        FrozenFlow.checkData(flow, partial, "the partial image");
        if (known == null || known.length != flow.tokens())
            throw new IllegalArgumentException("the token mask must have one entry per token (" + flow.tokens() + "), got "
                    + (known == null ? "null" : known.length));
        int b = partial.size(0), t = flow.tokens(), d = flow.tokenDim();
        Tensor zKnown = flow.trajectory(partial, y).get(flow.blocks()); // (B, T, C p^2)
        float[] zk = zKnown.data(), var = model.priorVar.data();
        float[] zp = new float[zk.length];
        for (int s = 0; s < b; s++)
            for (int tok = 0; tok < t; tok++)
                for (int j = 0; j < d; j++) {
                    int o = (s * t + tok) * d + j;
                    float e = (float) rng.nextGaussian();
                    zp[o] = known[tok] ? zk[o] : e * (float) Math.sqrt(var[tok * d + j]);
                }
        Tensor z = Tensor.of(zp, b, t, d);
        return new Inpainting(z, finish(model.generate(z, y, w), y));
    }

    /**
     * The token mask of a pixel mask (H, W): a token is known when every pixel of its patch is
     * known. Images only.
     */
    public boolean[] tokenMask(boolean[][] pixelKnown) {
        int[] g = flow.imageGeometry();
        if (g == null) throw new IllegalArgumentException("pixel masks need an image flow");
        int h = g[1], p = g[2], wp = h / p;
        if (pixelKnown.length != h || pixelKnown[0].length != h)
            throw new IllegalArgumentException("pixel mask must be " + h + "x" + h + ", got " + pixelKnown.length + "x" + pixelKnown[0].length);
        boolean[] m = new boolean[wp * wp];
        for (int pi = 0; pi < wp; pi++)
            for (int pj = 0; pj < wp; pj++) {
                boolean all = true;
                for (int r = 0; r < p && all; r++)
                    for (int c = 0; c < p && all; c++) all = pixelKnown[pi * p + r][pj * p + c];
                m[pi * wp + pj] = all;
            }
        return m;
    }

    private Tensor finish(Tensor x, int[] y) {
        if (denoise != BackwardConfig.Denoise.SCORE) return x;
        return flow.scoreDenoise(x, y, sigma).detach();
    }

    private void checkNoise(Tensor eps) {
        if (eps.dim() != 3 || eps.size(0) < 1 || eps.size(1) != flow.tokens() || eps.size(2) != flow.tokenDim())
            throw new IllegalArgumentException("noise must have shape (B, " + flow.tokens() + ", " + flow.tokenDim() + "), got " + Shape.str(eps.shape()));
    }

    /** The number of network evaluations one {@link #sample} call costs (1, or 2 for two-pass CFG with w > 0). */
    public int evaluationsPerSample(float w) {
        if (model == null) throw new IllegalStateException("the exact inverse runs T-1 serial steps per block, not network evaluations of G");
        return model.config.cfg() == BackwardConfig.Cfg.TWO_PASS && w > 0 ? 2 : 1;
    }
}
