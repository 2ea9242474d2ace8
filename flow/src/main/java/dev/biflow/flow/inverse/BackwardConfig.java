// The shape and objective of a BiFlow backward model G: its token geometry (copied from F), its size, and every ablation switch.
package dev.biflow.flow.inverse;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.biflow.flow.model.TarFlowConfig;

import java.util.Locale;

/**
 * Everything needed to rebuild a {@link BiFlowModel} before loading its weights, and the knobs of
 * its training objective that are part of what the model means (the training noise sigma and the
 * label dropout belong to the run and come from {@link dev.biflow.flow.train.TrainConfig}). Stored
 * as JSON (snake_case keys) in a checkpoint's safetensors metadata under {@code config}.
 *
 * <p><b>Geometry</b> (must equal the forward model's; {@link #forFlow} copies it): {@code tokens} T,
 * {@code tokenDim} C p^2, {@code stages} = F's number of blocks, {@code numClasses} (0 =
 * unconditional; G always has one more class embedding, the null class), and for image data
 * {@code imageChannels, imageSize, patchSize} (all 0 for vector data of T * C p^2 values, as the 2-D
 * toys use).
 *
 * <p><b>Size</b>: {@code width} D, {@code headDim} (heads = D / headDim), {@code layersPerStage}
 * transformer layers per stage, {@code denoiseLayers} layers of the extra final block, {@code head}
 * the projection heads phi_i.
 *
 * <p><b>Objective</b>: {@code strategy}, {@code denoise}, {@code alignNorm} (the backward half of
 * the paper's norm control), {@code cfg}; for training-time CFG the guidance scale w is drawn per
 * example: w = 0 with probability {@code wZeroProb}, otherwise from the density proportional to
 * 1/(1+w) on [0, wMax] (log-uniform in 1+w: it covers (0, 1) as well as the large scales, unlike
 * 1/w on [1, wMax]). Loss weights {@code reconWeight} (D(x, x')), {@code alignWeight} (each hidden
 * alignment / distillation term) and adaptive re-weighting L / sg((L + adaptiveEps)^adaptiveP) of
 * every term (adaptiveP = 0 turns it off).
 */
public record BackwardConfig(int tokens, int tokenDim, int stages, int numClasses,
                             int imageChannels, int imageSize, int patchSize,
                             int width, int headDim, int layersPerStage, int denoiseLayers, Head head,
                             Strategy strategy, Denoise denoise, AlignNorm alignNorm, Cfg cfg,
                             float wMax, float wZeroProb, float reconWeight, float alignWeight,
                             float adaptiveEps, float adaptiveP) {
    private static final ObjectMapper JSON = new ObjectMapper();

    /** How G learns to invert F (the paper's Table "backward model learning strategy"). */
    public enum Strategy {
        /** No G: sample with F's exact (serial, causal) inverse. */
        EXACT_INVERSE,
        /** Naive distillation: only D(x, G(F(x))) at the end. */
        NAIVE,
        /** Hidden distillation: each stage's output is projected to the input space (C p^2), supervised there, and re-embedded. */
        HIDDEN_DISTILLATION,
        /** Hidden alignment (BiFlow): D(norm(x_i), phi_i(norm(h_i))) through learnable projection heads. */
        HIDDEN_ALIGNMENT;

        public static Strategy parse(String s) {
            return switch (key(s)) {
                case "exactinverse", "exact", "inverse" -> EXACT_INVERSE;
                case "naive", "naivedistillation" -> NAIVE;
                case "hiddendistillation", "distillation", "distill" -> HIDDEN_DISTILLATION;
                case "hiddenalignment", "alignment", "align" -> HIDDEN_ALIGNMENT;
                default -> throw new IllegalArgumentException("unknown backward strategy '" + s
                        + "'; choose exact-inverse, naive, hidden-distillation or hidden-alignment");
            };
        }
    }

    /** How the training noise sigma is removed. */
    public enum Denoise {
        /** G targets the noisy x~ and nothing removes the noise. */
        NONE,
        /** G targets x~; sampling applies F's score-based denoising x + sigma^2 grad log p(x) (one backward pass through F). */
        SCORE,
        /** G's extra final block maps h_0 to the clean x (the target is the clean image). */
        LEARNED;

        public static Denoise parse(String s) {
            return switch (key(s)) {
                case "none", "off" -> NONE;
                case "score", "scorebased", "tweedie" -> SCORE;
                case "learned", "learn" -> LEARNED;
                default -> throw new IllegalArgumentException("unknown denoising '" + s + "'; choose none, score or learned");
            };
        }
    }

    /**
     * Normalisation of the states before hidden alignment ({@code norm} in
     * D(norm(x_i), phi_i(norm(h_i)))). The target side: TOKEN standardises each token vector x_i[b, t, :]
     * to zero mean and unit variance over its C p^2 features, (v - mean) / sqrt(var + 1e-6) (biased
     * variance: a LayerNorm without affine parameters); SAMPLE does the same over all T * C p^2
     * values of an example (it keeps each token's mean, the patch's brightness, which TOKEN
     * removes when C p^2 is small). The G side is always normalised per token over its D hidden
     * features (same formula, eps 1e-6) unless NONE. NONE aligns raw values: D(x_i, phi_i(h_i)).
     */
    public enum AlignNorm {
        NONE, TOKEN, SAMPLE;

        public static AlignNorm parse(String s) {
            return switch (key(s)) {
                case "none", "off", "false" -> NONE;
                case "token", "tokens", "on", "true" -> TOKEN;
                case "sample", "example", "image" -> SAMPLE;
                default -> throw new IllegalArgumentException("unknown alignment normalisation '" + s + "'; choose none, token or sample");
            };
        }
    }

    /** Classifier-free guidance. */
    public enum Cfg {
        /** No guidance (no label dropout, no null-class training); w must be 0. */
        NONE,
        /** Label dropout trains the null class; sampling with w > 0 evaluates G twice: (1+w) G(z|c) - w G(z|null). */
        TWO_PASS,
        /**
         * w is an input of G; one evaluation gives the guided output. Training combines whole-network
         * outputs: the conditional and null-class passes each keep their own chain of states (see {@link BiFlowModel}).
         */
        TRAINING_TIME,
        /**
         * w is an input of G; one evaluation gives the guided output. Training combines stage by stage, the
         * paper's h_{i+1} = (1+w) G_i(h_i|c) - w G_i(h_i): both classes of stage i read the same guided state
         * h_i (see {@link BiFlowModel#forwardStageGuided}). Same network and checkpoint layout as TRAINING_TIME.
         */
        TRAINING_TIME_STAGE;

        /** Whether w is an input of G (one evaluation gives the guided output). */
        public boolean guidanceInput() { return this == TRAINING_TIME || this == TRAINING_TIME_STAGE; }

        public static Cfg parse(String s) {
            return switch (key(s)) {
                case "none", "off" -> NONE;
                case "twopass", "two", "inference" -> TWO_PASS;
                case "trainingtime", "training", "onepass", "one" -> TRAINING_TIME;
                case "trainingtimestage", "perstage", "stage" -> TRAINING_TIME_STAGE;
                default -> throw new IllegalArgumentException("unknown CFG mode '" + s
                        + "'; choose none, two-pass, training-time or training-time-stage");
            };
        }
    }

    /** The projection heads phi_i of hidden alignment. */
    public enum Head {
        /** Linear(D -> C p^2). */
        LINEAR,
        /** Linear(D -> D), GELU, Linear(D -> C p^2). */
        MLP;

        public static Head parse(String s) {
            return switch (key(s)) {
                case "linear", "lin" -> LINEAR;
                case "mlp" -> MLP;
                default -> throw new IllegalArgumentException("unknown projection head '" + s + "'; choose linear or mlp");
            };
        }
    }

    private static String key(String s) {
        if (s == null) throw new IllegalArgumentException("missing value");
        return s.toLowerCase(Locale.ROOT).replaceAll("[^a-z0-9]", "");
    }

    public BackwardConfig {
        if (tokens < 1 || tokenDim < 1 || stages < 1 || numClasses < 0)
            throw new IllegalArgumentException("BackwardConfig: tokens, token_dim and stages must be positive and num_classes >= 0, got tokens="
                    + tokens + " token_dim=" + tokenDim + " stages=" + stages + " num_classes=" + numClasses);
        boolean image = imageChannels != 0 || imageSize != 0 || patchSize != 0;
        if (image) {
            if (imageChannels < 1 || imageSize < 1 || patchSize < 1 || imageSize % patchSize != 0)
                throw new IllegalArgumentException("BackwardConfig: image geometry " + imageChannels + "x" + imageSize + "x" + imageSize
                        + " with patch " + patchSize + " is invalid (all positive, size divisible by patch; all 0 for vector data)");
            int t = (imageSize / patchSize) * (imageSize / patchSize), d = imageChannels * patchSize * patchSize;
            if (t != tokens || d != tokenDim)
                throw new IllegalArgumentException("BackwardConfig: " + imageChannels + "x" + imageSize + "x" + imageSize + " images with patch "
                        + patchSize + " give " + t + " tokens of " + d + " values, but the config says " + tokens + " tokens of " + tokenDim);
        }
        if (width < 1 || headDim < 1 || width % headDim != 0)
            throw new IllegalArgumentException("BackwardConfig: width " + width + " must be a positive multiple of head_dim " + headDim);
        if (layersPerStage < 1 || denoiseLayers < 0)
            throw new IllegalArgumentException("BackwardConfig: layers_per_stage must be >= 1 and denoise_layers >= 0, got "
                    + layersPerStage + " and " + denoiseLayers);
        if (head == null) head = Head.LINEAR;
        if (strategy == null) strategy = Strategy.HIDDEN_ALIGNMENT;
        if (denoise == null) denoise = Denoise.LEARNED;
        if (alignNorm == null) alignNorm = AlignNorm.TOKEN;
        if (cfg == null) cfg = Cfg.NONE;
        if (cfg != Cfg.NONE && numClasses == 0)
            throw new IllegalArgumentException("BackwardConfig: CFG " + cfg + " needs a class-conditional model (num_classes > 0); use cfg none");
        if (cfg == Cfg.TRAINING_TIME_STAGE && strategy == Strategy.HIDDEN_DISTILLATION)
            throw new IllegalArgumentException("BackwardConfig: stage-wise training-time CFG guides G's hidden states; hidden distillation"
                    + " re-embeds input-space states between stages: use cfg training-time with it");
        if (!(wMax >= 0) || Float.isInfinite(wMax))
            throw new IllegalArgumentException("BackwardConfig: w_max must be finite and >= 0, got " + wMax);
        if (!(wZeroProb >= 0 && wZeroProb <= 1))
            throw new IllegalArgumentException("BackwardConfig: w_zero_prob must be in [0, 1], got " + wZeroProb);
        if (!(reconWeight >= 0) || !(alignWeight >= 0) || Float.isInfinite(reconWeight) || Float.isInfinite(alignWeight))
            throw new IllegalArgumentException("BackwardConfig: loss weights must be finite and >= 0, got recon " + reconWeight + ", align " + alignWeight);
        if (!(adaptiveEps > 0) || !(adaptiveP >= 0) || Float.isInfinite(adaptiveEps) || Float.isInfinite(adaptiveP))
            throw new IllegalArgumentException("BackwardConfig: adaptive re-weighting needs eps > 0 and p >= 0 (p = 0 is off), got eps "
                    + adaptiveEps + ", p " + adaptiveP);
    }

    /**
     * The defaults for inverting {@code f}: F's geometry, G as wide and as deep per stage as F's
     * blocks, one extra denoising stage, hidden alignment with linear heads, learned denoising,
     * per-token alignment normalisation, training-time CFG (w_max 4, w = 0 one time in ten) for a
     * class-conditional F, adaptive re-weighting eps 0.01, p 1.
     */
    public static BackwardConfig forFlow(TarFlowConfig f) {
        return new BackwardConfig(f.tokens(), f.tokenDim(), f.numBlocks(), f.numClasses(), f.inChannels(), f.imgSize(), f.patchSize(),
                f.channels(), f.headDim(), f.layersPerBlock(), f.layersPerBlock(), Head.LINEAR,
                Strategy.HIDDEN_ALIGNMENT, Denoise.LEARNED, AlignNorm.TOKEN, f.conditional() ? Cfg.TRAINING_TIME : Cfg.NONE,
                4f, 0.1f, 1f, 1f, 0.01f, 1f);
    }

    /**
     * Defaults for vector data (B, tokens * tokenDim) from a flow with {@code stages} layers: G of
     * width 64 (head_dim 32), 2 layers per stage and 2 denoising layers, hidden alignment with SAMPLE
     * normalisation (per-token standardisation of a 2-value token would erase it), no CFG.
     */
    public static BackwardConfig forVectors(int tokens, int tokenDim, int stages, int numClasses) {
        return new BackwardConfig(tokens, tokenDim, stages, numClasses, 0, 0, 0, 64, 32, 2, 2, Head.LINEAR,
                Strategy.HIDDEN_ALIGNMENT, Denoise.LEARNED, AlignNorm.SAMPLE, Cfg.NONE, 4f, 0.1f, 1f, 1f, 0.01f, 1f);
    }

    public boolean isImage() { return imageChannels > 0; }

    public boolean conditional() { return numClasses > 0; }

    public int heads() { return width / headDim; }

    /**
     * A lower bound of the values in a checkpoint of this model (every transformer layer's weights,
     * the embeddings and the output projection), computed without building it, so a config can be
     * checked against a file and the heap first.
     */
    public double minStateValues() {
        double d = width, t = tokens, td = tokenDim;
        double layer = 18 * d * d + 15 * d; // adaLN 6d^2+6d, qkv 3d^2+3d, proj d^2+d, mlp 8d^2+5d
        return ((double) stages * layersPerStage + denoiseLayers) * layer + t * d + (numClasses + 1.0) * d + 2 * td * d;
    }

    /** Index of the null class in G's class table. */
    public int nullClass() { return numClasses; }

    /** Values per example. */
    public int dims() { return tokens * tokenDim; }

    /** True when G exists at all (every strategy but EXACT_INVERSE). */
    public boolean hasModel() { return strategy != Strategy.EXACT_INVERSE; }

    // ---------------------------------------------------------------- withers

    public BackwardConfig withSize(int width, int headDim, int layersPerStage, int denoiseLayers) {
        return new BackwardConfig(tokens, tokenDim, stages, numClasses, imageChannels, imageSize, patchSize, width, headDim, layersPerStage,
                denoiseLayers, head, strategy, denoise, alignNorm, cfg, wMax, wZeroProb, reconWeight, alignWeight, adaptiveEps, adaptiveP);
    }

    public BackwardConfig withHead(Head h) {
        return new BackwardConfig(tokens, tokenDim, stages, numClasses, imageChannels, imageSize, patchSize, width, headDim, layersPerStage,
                denoiseLayers, h, strategy, denoise, alignNorm, cfg, wMax, wZeroProb, reconWeight, alignWeight, adaptiveEps, adaptiveP);
    }

    public BackwardConfig withStrategy(Strategy s) {
        return new BackwardConfig(tokens, tokenDim, stages, numClasses, imageChannels, imageSize, patchSize, width, headDim, layersPerStage,
                denoiseLayers, head, s, denoise, alignNorm, cfg, wMax, wZeroProb, reconWeight, alignWeight, adaptiveEps, adaptiveP);
    }

    public BackwardConfig withDenoise(Denoise d) {
        return new BackwardConfig(tokens, tokenDim, stages, numClasses, imageChannels, imageSize, patchSize, width, headDim, layersPerStage,
                denoiseLayers, head, strategy, d, alignNorm, cfg, wMax, wZeroProb, reconWeight, alignWeight, adaptiveEps, adaptiveP);
    }

    public BackwardConfig withAlignNorm(AlignNorm n) {
        return new BackwardConfig(tokens, tokenDim, stages, numClasses, imageChannels, imageSize, patchSize, width, headDim, layersPerStage,
                denoiseLayers, head, strategy, denoise, n, cfg, wMax, wZeroProb, reconWeight, alignWeight, adaptiveEps, adaptiveP);
    }

    public BackwardConfig withCfg(Cfg c, float wMax, float wZeroProb) {
        return new BackwardConfig(tokens, tokenDim, stages, numClasses, imageChannels, imageSize, patchSize, width, headDim, layersPerStage,
                denoiseLayers, head, strategy, denoise, alignNorm, c, wMax, wZeroProb, reconWeight, alignWeight, adaptiveEps, adaptiveP);
    }

    public BackwardConfig withCfg(Cfg c) { return withCfg(c, wMax, wZeroProb); }

    public BackwardConfig withWeights(float recon, float align) {
        return new BackwardConfig(tokens, tokenDim, stages, numClasses, imageChannels, imageSize, patchSize, width, headDim, layersPerStage,
                denoiseLayers, head, strategy, denoise, alignNorm, cfg, wMax, wZeroProb, recon, align, adaptiveEps, adaptiveP);
    }

    public BackwardConfig withAdaptive(float eps, float p) {
        return new BackwardConfig(tokens, tokenDim, stages, numClasses, imageChannels, imageSize, patchSize, width, headDim, layersPerStage,
                denoiseLayers, head, strategy, denoise, alignNorm, cfg, wMax, wZeroProb, reconWeight, alignWeight, eps, p);
    }

    // ---------------------------------------------------------------- JSON

    public String toJson() {
        ObjectNode o = JSON.createObjectNode();
        o.put("tokens", tokens).put("token_dim", tokenDim).put("stages", stages).put("num_classes", numClasses)
                .put("image_channels", imageChannels).put("image_size", imageSize).put("patch_size", patchSize)
                .put("width", width).put("head_dim", headDim).put("layers_per_stage", layersPerStage).put("denoise_layers", denoiseLayers)
                .put("head", lower(head)).put("strategy", lower(strategy)).put("denoise", lower(denoise))
                .put("align_norm", lower(alignNorm)).put("cfg", lower(cfg))
                .put("w_max", wMax).put("w_zero_prob", wZeroProb).put("recon_weight", reconWeight).put("align_weight", alignWeight)
                .put("adaptive_eps", adaptiveEps).put("adaptive_p", adaptiveP);
        return o.toString();
    }

    private static String lower(Enum<?> e) { return e.name().toLowerCase(Locale.ROOT).replace('_', '-'); }

    /** Parses {@link #toJson}'s output; every key is required, so a file from another tool fails with the missing key named. */
    public static BackwardConfig fromJson(String json) {
        JsonNode n;
        try {
            n = JSON.readTree(json);
        } catch (Exception e) {
            throw new IllegalArgumentException("backward model config is not valid JSON: " + e.getMessage());
        }
        if (n == null || !n.isObject()) throw new IllegalArgumentException("backward model config must be a JSON object, got: " + json);
        return new BackwardConfig(i(n, "tokens"), i(n, "token_dim"), i(n, "stages"), i(n, "num_classes"),
                i(n, "image_channels"), i(n, "image_size"), i(n, "patch_size"),
                i(n, "width"), i(n, "head_dim"), i(n, "layers_per_stage"), i(n, "denoise_layers"), Head.parse(s(n, "head")),
                Strategy.parse(s(n, "strategy")), Denoise.parse(s(n, "denoise")), AlignNorm.parse(s(n, "align_norm")), Cfg.parse(s(n, "cfg")),
                f(n, "w_max"), f(n, "w_zero_prob"), f(n, "recon_weight"), f(n, "align_weight"), f(n, "adaptive_eps"), f(n, "adaptive_p"));
    }

    private static JsonNode req(JsonNode n, String key) {
        JsonNode v = n.get(key);
        if (v == null || v.isNull()) throw new IllegalArgumentException("backward model config lacks '" + key + "'");
        return v;
    }

    private static int i(JsonNode n, String key) {
        JsonNode v = req(n, key);
        if (!v.canConvertToInt() || !v.isIntegralNumber()) throw new IllegalArgumentException("backward model config: '" + key + "' must be an integer, got " + v);
        return v.asInt();
    }

    private static float f(JsonNode n, String key) {
        JsonNode v = req(n, key);
        if (!v.isNumber()) throw new IllegalArgumentException("backward model config: '" + key + "' must be a number, got " + v);
        return (float) v.asDouble();
    }

    private static String s(JsonNode n, String key) { return req(n, key).asText(); }
}
