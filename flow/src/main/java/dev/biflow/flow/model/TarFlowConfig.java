// The shape of a TARFlow / iTARFlow model: ml-tarflow's constructor arguments plus norm control.
package dev.biflow.flow.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

/**
 * Everything needed to rebuild a TarFlow before loading its weights. Stored as JSON in a
 * checkpoint's safetensors metadata under {@code config}, with ml-tarflow's argument names
 * ({@code in_channels, img_size, patch_size, channels, num_blocks, layers_per_block,
 * num_classes}) so a PyTorch checkpoint carrying those loads here unchanged.
 *
 * @param headDim     attention head width; ml-tarflow's Model leaves it at 64 (width 128 = 2 heads)
 * @param normControl iTARFlow norm control of the output params (NONE = plain TARFlow)
 * @param clip        the bound c for HARD/SOFT norm control
 */
public record TarFlowConfig(int inChannels, int imgSize, int patchSize, int channels, int numBlocks,
                            int layersPerBlock, int numClasses, int headDim, NormControl normControl, float clip) {
    private static final ObjectMapper JSON = new ObjectMapper();

    public TarFlowConfig {
        if (inChannels < 1 || imgSize < 1 || patchSize < 1 || channels < 1 || numBlocks < 1 || layersPerBlock < 1 || numClasses < 0 || headDim < 1)
            throw new IllegalArgumentException("TarFlowConfig: sizes must be positive (num_classes >= 0): " + this);
        if (imgSize % patchSize != 0)
            throw new IllegalArgumentException("TarFlowConfig: img_size " + imgSize + " is not divisible by patch_size " + patchSize);
        if (channels % headDim != 0)
            throw new IllegalArgumentException("TarFlowConfig: channels " + channels + " is not divisible by head_dim " + headDim
                    + "; choose head_dim dividing the width (e.g. --head-dim 32 for 4 heads at width 128)");
        if (normControl == null) normControl = NormControl.NONE;
        if (normControl != NormControl.NONE && !(clip > 0))
            throw new IllegalArgumentException("TarFlowConfig: norm control " + normControl + " needs clip > 0, got " + clip);
    }

    /** Plain TARFlow (no norm control) with ml-tarflow's defaults for head_dim. */
    public static TarFlowConfig tarflow(int inChannels, int imgSize, int patchSize, int channels, int numBlocks,
                                        int layersPerBlock, int numClasses) {
        return new TarFlowConfig(inChannels, imgSize, patchSize, channels, numBlocks, layersPerBlock, numClasses,
                Math.min(64, channels), NormControl.NONE, 0f);
    }

    /** T: tokens per image. */
    public int tokens() { return (imgSize / patchSize) * (imgSize / patchSize); }

    /** C * p^2: values per token. */
    public int tokenDim() { return inChannels * patchSize * patchSize; }

    public int heads() { return channels / headDim; }

    /** Values per image. */
    public int dims() { return inChannels * imgSize * imgSize; }

    public boolean conditional() { return numClasses > 0; }

    /**
     * The values in a checkpoint of this model (parameters and the prior variance, as in
     * {@code TarFlow.stateDict()}), computed without building it, so a config can be checked against
     * a file and the heap first. A double: absurd configs give absurd (not overflowed) counts.
     */
    public double stateValues() {
        double d = channels, t = tokens(), td = tokenDim();
        double layer = 12 * d * d + 13 * d; // attention: norm 2d, qkv 3d^2+3d, proj d^2+d; mlp: norm 2d, fc 4d^2+4d, 4d^2+d
        double block = td * d + d + t * d + (double) numClasses * d + layersPerBlock * layer + d * 2 * td + 2 * td;
        return t * td + (double) numBlocks * block;
    }

    public TarFlowConfig withNormControl(NormControl nc, float c) {
        return new TarFlowConfig(inChannels, imgSize, patchSize, channels, numBlocks, layersPerBlock, numClasses, headDim, nc, c);
    }

    public String toJson() {
        ObjectNode o = JSON.createObjectNode();
        o.put("in_channels", inChannels).put("img_size", imgSize).put("patch_size", patchSize).put("channels", channels)
                .put("num_blocks", numBlocks).put("layers_per_block", layersPerBlock).put("num_classes", numClasses)
                .put("head_dim", headDim).put("norm_control", normControl.name().toLowerCase()).put("clip", clip);
        return o.toString();
    }

    /** Parses the JSON written by {@link #toJson} or ml-tarflow's arguments (head_dim defaults to 64, no norm control). */
    public static TarFlowConfig fromJson(String json) {
        JsonNode n;
        try {
            n = JSON.readTree(json);
        } catch (Exception e) {
            throw new IllegalArgumentException("model config is not valid JSON: " + e.getMessage());
        }
        if (n == null || !n.isObject()) throw new IllegalArgumentException("model config must be a JSON object, got: " + json);
        int channels = req(n, "channels");
        int headDim = n.has("head_dim") ? n.get("head_dim").asInt() : Math.min(64, channels);
        NormControl nc = n.has("norm_control") ? NormControl.parse(n.get("norm_control").asText()) : NormControl.NONE;
        float clip = n.has("clip") ? (float) n.get("clip").asDouble() : 0f;
        return new TarFlowConfig(req(n, "in_channels"), req(n, "img_size"), req(n, "patch_size"), channels,
                req(n, "num_blocks"), req(n, "layers_per_block"), n.has("num_classes") ? n.get("num_classes").asInt() : 0,
                headDim, nc, clip);
    }

    private static int req(JsonNode n, String key) {
        if (!n.has(key) || !n.get(key).canConvertToInt())
            throw new IllegalArgumentException("model config lacks integer '" + key + "'; a TARFlow config needs in_channels, img_size, "
                    + "patch_size, channels, num_blocks, layers_per_block (and num_classes)");
        return n.get(key).asInt();
    }
}
