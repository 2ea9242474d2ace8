// Building, saving and loading the feature networks as safetensors files that carry their config.
package dev.biflow.flow.features;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.Safetensors;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A feature-network checkpoint is a safetensors file of the state dict with metadata
 * {@code kind = "features"}, {@code arch} (e.g. {@code fashion-convnet}), {@code config} (the
 * {@link FeatureNetConfig} JSON), {@code name} (the honest display name) and whatever the trainer
 * adds ({@code test_accuracy}, {@code steps}, {@code seed}, ...).
 *
 * <p>Conventional file names (what {@code biflow train-features} and the demo use):
 * {@link #LPIPS_FILE}, {@link #CONVNEXT_FILE}, {@link #EVAL_FILE}.
 */
public final class FeatureNets {
    private FeatureNets() {}

    public static final String KIND = "features";
    public static final String KIND_KEY = "kind";
    public static final String CONFIG_KEY = "config";
    public static final String ARCH_KEY = "arch";
    public static final String NAME_KEY = "name";

    /** The LPIPS-style network ({@link FashionConvNet}). */
    public static final String LPIPS_FILE = "features-convnet.safetensors";
    /** The second perceptual network ({@link FashionConvNeXt}). */
    public static final String CONVNEXT_FILE = "features-convnext.safetensors";
    /** The evaluation network ({@link FashionNetEval}). */
    public static final String EVAL_FILE = "fashionnet-eval.safetensors";

    /** The conventional file name of an architecture's checkpoint. */
    public static String fileName(FeatureNetConfig.Arch arch) {
        return switch (arch) {
            case CONVNET -> LPIPS_FILE;
            case CONVNEXT -> CONVNEXT_FILE;
            case EVAL -> EVAL_FILE;
        };
    }

    /**
     * The two perceptual distances from a folder holding the conventional files: the LPIPS-style
     * distance ({@link #LPIPS_FILE}) and the pooled-feature distance ({@link #CONVNEXT_FILE}), in
     * that order (the paper's "+LPIPS" and "+ConvNeXt" terms; MSE is {@link MseDistance}).
     */
    public static java.util.List<ImageDistance> perceptualDistances(Path dir) throws IOException {
        return java.util.List.of(LpipsDistance.load(dir.resolve(LPIPS_FILE)), PooledFeatureDistance.load(dir.resolve(CONVNEXT_FILE)));
    }

    /** A freshly initialised network for a config (weights drawn from rng). */
    public static FeatureNet build(FeatureNetConfig config, Rng rng) {
        return switch (config.arch()) {
            case CONVNET -> new FashionConvNet(config, rng);
            case CONVNEXT -> new FashionConvNeXt(config, rng);
            case EVAL -> new FashionNetEval(config, rng);
        };
    }

    /** Writes the network's weights, config and extra metadata (e.g. accuracy), atomically. */
    public static void save(FeatureNet net, Path path, Map<String, String> extra) throws IOException {
        Map<String, String> meta = new LinkedHashMap<>();
        if (extra != null) meta.putAll(extra);
        meta.put(KIND_KEY, KIND);
        meta.put(ARCH_KEY, net.config.arch().id);
        meta.put(CONFIG_KEY, net.config.toJson());
        meta.put(NAME_KEY, net.displayName());
        Path parent = path.toAbsolutePath().getParent();
        if (parent != null) Files.createDirectories(parent);
        Safetensors.write(path, net.stateDict(), meta);
    }

    /** A loaded network with the file's metadata (accuracy and training details when present). */
    public record Loaded(FeatureNet net, Map<String, String> metadata) {}

    /** Loads any feature network; it comes back in eval mode and frozen (no parameter needs a gradient). */
    public static FeatureNet load(Path path) throws IOException { return loadWithMetadata(path).net(); }

    /** Loads and checks the architecture (a clear error when, say, an eval network is given as a loss network). */
    public static FeatureNet load(Path path, FeatureNetConfig.Arch expected) throws IOException {
        FeatureNet net = load(path);
        if (net.config.arch() != expected)
            throw new IllegalArgumentException(path + " holds a " + net.config.arch().id + " network, but a " + expected.id
                    + " network is needed here; train one with `biflow train-features --arch " + expected.name().toLowerCase() + "`");
        return net;
    }

    public static Loaded loadWithMetadata(Path path) throws IOException {
        if (!Files.exists(path))
            throw new IOException("feature network " + path + " does not exist; train one with `biflow train-features` or check the path");
        Safetensors.Contents c = Safetensors.read(path);
        Map<String, String> meta = c.metadata();
        String kind = meta.get(KIND_KEY);
        if (!KIND.equals(kind))
            throw new IllegalArgumentException(path + " is " + (kind == null ? "a checkpoint without a 'kind'" : "a '" + kind + "' checkpoint")
                    + ", not a feature network (kind 'features')");
        String json = meta.get(CONFIG_KEY);
        if (json == null) throw new IllegalArgumentException(path + " has no 'config' metadata; it was not written by FeatureNets.save");
        FeatureNetConfig cfg = FeatureNetConfig.fromJson(json);
        FeatureNet net = build(cfg, new Rng(0));
        Map<String, Tensor> state = c.tensors();
        try {
            net.loadStateDict(state, true);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(path + " does not fit its own config " + cfg.toJson() + ": " + e.getMessage(), e);
        }
        dev.biflow.flow.model.Checkpoints.checkFinite(path, state);
        net.eval();
        net.requiresGrad(false);
        return new Loaded(net, Map.copyOf(meta));
    }
}
