// The shape of a feature network (architecture, widths, depths), stored as JSON in its checkpoint.
package dev.biflow.flow.features;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.util.List;
import java.util.Locale;

/**
 * Everything needed to rebuild a {@link FeatureNet} before loading its weights. A network is a
 * sequence of stages separated by 2x downsampling; stage s has {@code widths[s]} channels and
 * {@code depths[s]} layers (conv layers or blocks, depending on the architecture).
 *
 * @param arch       which of the three architectures
 * @param inChannels image channels (1 for Fashion-MNIST)
 * @param imgSize    image side (28 for Fashion-MNIST); every stage must keep at least 1 pixel
 * @param numClasses classifier head outputs
 * @param widths     channels per stage
 * @param depths     layers per stage (same length as widths, each >= 1)
 * @param kernel     the spatial kernel of the ConvNeXt-style blocks (odd); ignored by the others
 * @param hidden     units of the hidden fully connected layer of the conv nets' classifier head
 *                   (flattened last map -> hidden -> ReLU -> classes), their penultimate features;
 *                   0 for the ConvNeXt-style net, whose head is global pooling + LayerNorm
 */
public record FeatureNetConfig(Arch arch, int inChannels, int imgSize, int numClasses,
                               List<Integer> widths, List<Integer> depths, int kernel, int hidden) {
    private static final ObjectMapper JSON = new ObjectMapper();

    /** The three architectures; {@link #id} is what checkpoints and configs call them. */
    public enum Arch {
        /** {@link FashionConvNet}: plain VGG-like conv net; the LPIPS-style distance's network. */
        CONVNET("fashion-convnet"),
        /** {@link FashionConvNeXt}: ConvNeXt-style blocks; the second (pooled-feature) distance's network. */
        CONVNEXT("fashion-convnext"),
        /** {@link FashionNetEval}: residual conv net for evaluation metrics only, never a loss. */
        EVAL("fashionnet-eval");

        public final String id;

        Arch(String id) { this.id = id; }

        /** Parses an id ("fashion-convnet") or a short name ("convnet", "convnext", "eval"). */
        public static Arch parse(String s) {
            String t = s.trim().toLowerCase(Locale.ROOT);
            for (Arch a : values()) if (a.id.equals(t) || a.name().toLowerCase(Locale.ROOT).equals(t)) return a;
            throw new IllegalArgumentException("unknown feature network '" + s + "'; choose one of convnet (LPIPS-style), "
                    + "convnext (second perceptual network) or eval (FashionNet-eval, metrics only)");
        }
    }

    public FeatureNetConfig {
        if (arch == null) throw new IllegalArgumentException("FeatureNetConfig: arch is required");
        widths = List.copyOf(widths);
        depths = List.copyOf(depths);
        if (inChannels < 1 || imgSize < 1 || numClasses < 2)
            throw new IllegalArgumentException("FeatureNetConfig: need in_channels >= 1, img_size >= 1, num_classes >= 2, got "
                    + inChannels + ", " + imgSize + ", " + numClasses);
        if (widths.isEmpty() || widths.size() != depths.size())
            throw new IllegalArgumentException("FeatureNetConfig: widths " + widths + " and depths " + depths
                    + " must be non-empty lists of the same length (one entry per stage)");
        for (int i = 0; i < widths.size(); i++)
            if (widths.get(i) < 1 || depths.get(i) < 1)
                throw new IllegalArgumentException("FeatureNetConfig: widths and depths must be >= 1, got " + widths + ", " + depths);
        if (kernel < 1 || kernel % 2 == 0)
            throw new IllegalArgumentException("FeatureNetConfig: kernel must be odd and >= 1, got " + kernel);
        if (arch == Arch.CONVNEXT ? hidden != 0 : hidden < 1)
            throw new IllegalArgumentException("FeatureNetConfig: hidden must be " + (arch == Arch.CONVNEXT ? "0 for " : ">= 1 for ")
                    + arch.id + ", got " + hidden);
        int side = imgSize;
        // the ConvNeXt stem and every architecture's stage transitions halve the side
        int halvings = widths.size() - 1 + (arch == Arch.CONVNET ? 0 : 1);
        for (int i = 0; i < halvings; i++) side /= 2;
        if (side < 1)
            throw new IllegalArgumentException("FeatureNetConfig: img_size " + imgSize + " is too small for " + widths.size()
                    + " stages of " + arch.id + " (each halves the side); use fewer stages");
    }

    /**
     * The LPIPS-style network: conv3x3 stages 32 @ 28x28, 64 @ 14x14, 128 @ 7x7 (ReLU after
     * each conv, max-pool between stages), head 6272 -> 128 -> 10.
     */
    public static FeatureNetConfig convnetDefault() {
        return new FeatureNetConfig(Arch.CONVNET, 1, 28, 10, List.of(32, 64, 128), List.of(1, 1, 1), 3, 128);
    }

    /**
     * The second perceptual network: 2x2 patchify stem to 14x14, ConvNeXt-style blocks with a
     * 5x5 spatial conv, one block each at 24 channels (14x14), 48 (7x7) and 96 (3x3).
     */
    public static FeatureNetConfig convnextDefault() {
        return new FeatureNetConfig(Arch.CONVNEXT, 1, 28, 10, List.of(24, 48, 96), List.of(1, 1, 1), 5, 0);
    }

    /** FashionNet-eval: stem 32 @ 28, residual stages 32 @ 14x14 and 64 @ 7x7, head 3136 -> 128 -> 10; 128-D penultimate features. */
    public static FeatureNetConfig evalDefault() {
        return new FeatureNetConfig(Arch.EVAL, 1, 28, 10, List.of(32, 64), List.of(1, 1), 3, 128);
    }

    /** The default config of an architecture (the ones the shipped checkpoints use). */
    public static FeatureNetConfig defaultFor(Arch arch) {
        return switch (arch) {
            case CONVNET -> convnetDefault();
            case CONVNEXT -> convnextDefault();
            case EVAL -> evalDefault();
        };
    }

    /** Number of stages. */
    public int stages() { return widths.size(); }

    /** Channels of the last stage. */
    public int lastWidth() { return widths.get(widths.size() - 1); }

    /** Dimension of the penultimate features: the hidden layer, or the pooled last stage for the ConvNeXt-style net. */
    public int featureDim() { return hidden > 0 ? hidden : lastWidth(); }

    public String toJson() {
        ObjectNode o = JSON.createObjectNode();
        o.put("arch", arch.id).put("in_channels", inChannels).put("img_size", imgSize).put("num_classes", numClasses);
        ArrayNode w = o.putArray("widths");
        widths.forEach(w::add);
        ArrayNode d = o.putArray("depths");
        depths.forEach(d::add);
        o.put("kernel", kernel).put("hidden", hidden);
        return o.toString();
    }

    /** Parses the JSON written by {@link #toJson}. */
    public static FeatureNetConfig fromJson(String json) {
        JsonNode n;
        try {
            n = JSON.readTree(json);
        } catch (Exception e) {
            throw new IllegalArgumentException("feature network config is not valid JSON: " + e.getMessage());
        }
        if (n == null || !n.isObject()) throw new IllegalArgumentException("feature network config must be a JSON object, got: " + json);
        if (!n.has("arch")) throw new IllegalArgumentException("feature network config lacks 'arch': " + json);
        return new FeatureNetConfig(Arch.parse(n.get("arch").asText()), req(n, "in_channels"), req(n, "img_size"),
                req(n, "num_classes"), ints(n, "widths"), ints(n, "depths"), n.has("kernel") ? n.get("kernel").asInt() : 3,
                n.has("hidden") ? n.get("hidden").asInt() : 0);
    }

    private static int req(JsonNode n, String key) {
        if (!n.has(key) || !n.get(key).canConvertToInt())
            throw new IllegalArgumentException("feature network config lacks integer '" + key + "'");
        return n.get(key).asInt();
    }

    private static List<Integer> ints(JsonNode n, String key) {
        JsonNode a = n.get(key);
        if (a == null || !a.isArray()) throw new IllegalArgumentException("feature network config lacks integer list '" + key + "'");
        java.util.ArrayList<Integer> out = new java.util.ArrayList<>();
        for (JsonNode v : a) {
            if (!v.canConvertToInt()) throw new IllegalArgumentException("feature network config: '" + key + "' holds a non-integer " + v);
            out.add(v.asInt());
        }
        return out;
    }
}
