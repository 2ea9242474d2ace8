// Saving and loading flow models as safetensors files that carry their own config.
package dev.biflow.flow.model;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.Safetensors;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A model checkpoint is a safetensors file of the state dict (PyTorch names) with the model
 * config as JSON in the metadata key {@code config} and the model kind under {@code kind}.
 * Files written by PyTorch from ml-tarflow load here when they carry {@code config} (or when
 * the caller supplies one).
 */
public final class Checkpoints {
    private Checkpoints() {}

    public static final String CONFIG_KEY = "config";
    public static final String KIND_KEY = "kind";

    /** Writes the model's state dict, config and any extra metadata, atomically. */
    public static void save(TarFlow model, Path path, Map<String, String> extra) throws IOException {
        Safetensors.write(path, model.stateDict(), metadata(model, extra));
    }

    /** The bytes {@link #save} writes (extra metadata in its map's iteration order, then config and kind). */
    public static byte[] toBytes(TarFlow model, Map<String, String> extra) {
        return Safetensors.toBytes(model.stateDict(), metadata(model, extra));
    }

    private static Map<String, String> metadata(TarFlow model, Map<String, String> extra) {
        Map<String, String> meta = new LinkedHashMap<>();
        if (extra != null) meta.putAll(extra);
        meta.put(CONFIG_KEY, model.config.toJson());
        meta.put(KIND_KEY, "tarflow");
        return meta;
    }

    private static volatile boolean allowNonFinite;

    /**
     * Whether loaders accept weights with NaN or infinite values (default false: such a checkpoint
     * is refused). The CLI's {@code --allow-nonfinite} sets it, for debugging broken checkpoints.
     */
    public static void setAllowNonFinite(boolean allow) { allowNonFinite = allow; }

    public static boolean allowNonFinite() { return allowNonFinite; }

    /**
     * Refuses a loaded state dict with NaN/Inf values (unless {@link #setAllowNonFinite}): a
     * one-line error naming the file, the tensor and the count.
     */
    public static void checkFinite(Object path, Map<String, Tensor> state) {
        if (allowNonFinite) return;
        for (var e : state.entrySet()) {
            float[] d = e.getValue().data();
            int nan = 0, inf = 0, first = -1;
            for (int i = 0; i < d.length; i++) {
                if (Float.isNaN(d[i])) nan++;
                else if (Float.isInfinite(d[i])) inf++;
                else continue;
                if (first < 0) first = i;
            }
            if (first >= 0)
                throw new IllegalArgumentException(path + ": tensor '" + e.getKey() + "' has " + nan + " NaN and " + inf
                        + " infinite values (the first at index " + first + "); the weights are broken (a diverged run?): use an earlier"
                        + " checkpoint, or pass --allow-nonfinite to load it anyway for debugging");
        }
    }

    /**
     * Checks, before a model is built or a tensor decoded, that a config asking for {@code values}
     * weights fits the file (which must hold at least that many) and the heap (the model and the
     * loaded file, 8 bytes a value): a small file whose config asks for a huge model is a one-line
     * error, not an OutOfMemoryError.
     */
    public static void checkFits(Object path, Safetensors.Header h, String model, String configJson, double values) {
        long held = 0;
        for (Safetensors.TensorInfo t : h.tensors()) held += t.numel(); // each bounded by the file's bytes
        if (values > held)
            throw new IllegalArgumentException(path + ": its config " + configJson + " describes a " + model + " of "
                    + String.format(java.util.Locale.ROOT, "%.4g", values) + " weights, but the file holds only " + held
                    + "; the config or the file is wrong (damaged metadata, or weights of another model)");
        double bytes = values * 8;
        if (!dev.biflow.engine.io.MemoryBudget.fits((long) Math.min(bytes, Long.MAX_VALUE)))
            throw new IllegalArgumentException(path + ": " + dev.biflow.engine.io.MemoryBudget.tooLarge(
                    "the " + model + " of " + (long) values + " weights (model and loaded file)", (long) Math.min(bytes, Long.MAX_VALUE)));
    }

    /** Loads a TarFlow whose config is in the file's metadata. */
    public static TarFlow loadTarFlow(Path path) throws IOException {
        return loadTarFlow(path, null);
    }

    /**
     * Loads a TarFlow; {@code config} overrides the file's metadata (needed for PyTorch files
     * saved without it). Errors name the file and what is wrong with it.
     */
    public static TarFlow loadTarFlow(Path path, TarFlowConfig config) throws IOException {
        if (!Files.exists(path))
            throw new IOException("checkpoint " + path + " does not exist; train one with `biflow train-forward` or check the path");
        return loadTarFlow(path.toString(), Safetensors.readHeader(path), () -> Safetensors.read(path), config);
    }

    /** Loads a TarFlow from a checkpoint's bytes; {@code source} names it in errors (and for fuzzing). */
    public static TarFlow loadTarFlow(byte[] bytes, String source) throws IOException {
        return loadTarFlow(source, Safetensors.readHeader(bytes, source), () -> Safetensors.read(bytes, source), null);
    }

    private interface Reader { Safetensors.Contents read() throws IOException; }

    private static TarFlow loadTarFlow(String path, Safetensors.Header h, Reader contents, TarFlowConfig config) throws IOException {
        String kind = h.metadata().get(KIND_KEY);
        if (kind != null && !kind.equals("tarflow"))
            throw new IllegalArgumentException(path + " holds a '" + kind + "' model, not a TARFlow forward model");
        TarFlowConfig cfg = config;
        if (cfg == null) {
            String json = h.metadata().get(CONFIG_KEY);
            if (json == null)
                throw new IllegalArgumentException(path + " has no 'config' metadata; pass the model's arguments "
                        + "(in_channels, img_size, patch_size, channels, num_blocks, layers_per_block, num_classes)");
            try {
                cfg = TarFlowConfig.fromJson(json);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(path + ": " + e.getMessage(), e);
            }
        }
        checkFits(path, h, "TARFlow", cfg.toJson(), cfg.stateValues());
        Safetensors.Contents c = contents.read();
        TarFlow model = new TarFlow(cfg, new Rng(0));
        Map<String, Tensor> state = new LinkedHashMap<>(c.tensors());
        state.keySet().removeIf(k -> k.endsWith("attn_mask")); // a PyTorch buffer we rebuild from causality
        try {
            model.loadStateDict(state, true);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(path + " does not fit the model config " + cfg.toJson() + ": " + e.getMessage(), e);
        }
        checkFinite(path, state);
        return model;
    }
}
