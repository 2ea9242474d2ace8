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
        Map<String, String> meta = new LinkedHashMap<>();
        if (extra != null) meta.putAll(extra);
        meta.put(CONFIG_KEY, model.config.toJson());
        meta.put(KIND_KEY, "tarflow");
        Safetensors.write(path, model.stateDict(), meta);
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
        Safetensors.Contents c = Safetensors.read(path);
        String kind = c.metadata().get(KIND_KEY);
        if (kind != null && !kind.equals("tarflow"))
            throw new IllegalArgumentException(path + " holds a '" + kind + "' model, not a TARFlow forward model");
        TarFlowConfig cfg = config;
        if (cfg == null) {
            String json = c.metadata().get(CONFIG_KEY);
            if (json == null)
                throw new IllegalArgumentException(path + " has no 'config' metadata; pass the model's arguments "
                        + "(in_channels, img_size, patch_size, channels, num_blocks, layers_per_block, num_classes)");
            cfg = TarFlowConfig.fromJson(json);
        }
        TarFlow model = new TarFlow(cfg, new Rng(0));
        Map<String, Tensor> state = new LinkedHashMap<>(c.tensors());
        state.keySet().removeIf(k -> k.endsWith("attn_mask")); // a PyTorch buffer we rebuild from causality
        try {
            model.loadStateDict(state, true);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(path + " does not fit the model config " + cfg.toJson() + ": " + e.getMessage(), e);
        }
        return model;
    }
}
